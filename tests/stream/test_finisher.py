"""The worker's finisher thread: order, waiting, and failures."""

from __future__ import annotations

import threading

import pytest

from promptcal.core.errors import TransientError
from promptcal.stream.finisher import Finisher


def test_positions_come_back_in_order_once_finished():
    release = threading.Event()
    done: list[int] = []

    def finish(item: int) -> None:
        release.wait(10)
        done.append(item)

    finisher = Finisher(finish)
    finisher.submit(1, [("image-ready", 0, 10)])
    finisher.submit(2, [("image-ready", 0, 11), ("image-ready", 0, 12)])
    assert list(finisher.finished(wait=False)) == []  # nothing finished yet
    release.set()
    assert list(finisher.finished(wait=True)) == [
        [("image-ready", 0, 10)],
        [("image-ready", 0, 11), ("image-ready", 0, 12)],
    ]
    assert done == [1, 2]  # one thread: submission order
    assert list(finisher.finished(wait=True)) == []  # handed back once
    finisher.shutdown()


def test_a_failure_is_raised_and_its_positions_are_withheld():
    def finish(item: int) -> None:
        if item == 2:
            raise TransientError("broker did not acknowledge")

    finisher = Finisher(finish)
    for item in (1, 2, 3):
        finisher.submit(item, [("image-ready", 0, item)])
    finished = finisher.finished(wait=True)
    assert next(finished) == [("image-ready", 0, 1)]
    with pytest.raises(TransientError, match="acknowledge"):
        next(finished)
    finisher.shutdown()
