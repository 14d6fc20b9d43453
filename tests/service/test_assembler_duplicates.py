"""Late duplicates vs. re-sends (issue 15): only a byte-identical copy of a snap of an
exposure that was handed out is skipped; a corrected re-send, or a replay of an exposure
that went to dead-letter, is processed (it used to be skipped and committed: lost)."""

from __future__ import annotations

import json
from pathlib import Path

from worker_helpers import Visit, image_ready

from promptcal.service.assembler import ReceivedSnap, SnapAssembler
from promptcal.service.messages import encode


def _received(message, offset: int) -> ReceivedSnap:
    return ReceivedSnap(message, ("ir", 0, offset), b"7", encode(message))


def test_only_byte_identical_copies_are_duplicates():
    assembler = SnapAssembler(10.0)
    original = image_ready(Visit(5, 150.0, 2.0), 7, 0, Path("/raw/v5.fits"))
    done = assembler.add(_received(original, 1))
    assert done is not None
    # The producer retried: the same bytes again.
    assert assembler.already_handled(_received(original, 2))
    # A corrected re-send: same (instrument, visit, detector), new file, new bytes.
    corrected = original.model_copy(update={"uri": "file:///raw/v5-fixed.fits"})
    assert not assembler.already_handled(_received(corrected, 3))
    # The same message re-sent later (new produced_at) is a new request too.
    resent = original.model_copy(update={"produced_at": original.produced_at + 60})
    assert not assembler.already_handled(_received(resent, 4))


def test_a_dead_lettered_exposure_is_forgotten_so_its_replay_is_processed():
    assembler = SnapAssembler(10.0)
    message = image_ready(Visit(6, 150.0, 2.0), 7, 0, Path("/raw/missing.fits"))
    first = _received(message, 1)
    pending = assembler.add(first)
    assert assembler.already_handled(_received(message, 2))
    assembler.forget(pending.key)  # the worker dead-lettered it
    replay = _received(message, 3)  # the dead letter re-published: identical bytes
    assert not assembler.already_handled(replay)
    assert assembler.add(replay) is not None  # calibrated this time


def test_a_two_snap_exposure_remembers_both_snaps():
    assembler = SnapAssembler(10.0)
    visit = Visit(8, 150.0, 2.0, n_snaps=2)
    snaps = [image_ready(visit, 1, i, Path(f"/raw/s{i}.fits")) for i in range(2)]
    assert assembler.add(_received(snaps[0], 1)) is None
    assert assembler.add(_received(snaps[1], 2)) is not None
    assert all(assembler.already_handled(_received(s, 9)) for s in snaps)
    # The bytes are what counts, not the decoded fields: re-serialised differently = new.
    reordered = ReceivedSnap(snaps[0], ("ir", 0, 10), b"1", json.dumps(
        json.loads(encode(snaps[0])), sort_keys=True).encode())  # fmt: skip
    assert not assembler.already_handled(reordered)
