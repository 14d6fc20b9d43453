"""``promptcal serve --cpus``: parsing, and every thread of the process pinned."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from promptcal.commands.serve import _parse_cpus, pin_to_cpus
from promptcal.core.errors import InvalidInputError

pytestmark = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux-only"
)


@pytest.mark.parametrize(("text", "cpus"), [("0", {0}), ("3,1", {1, 3}), ("2,2", {2})])
def test_cpu_lists_parse(text, cpus):
    assert _parse_cpus(text) == frozenset(cpus)


@pytest.mark.parametrize("text", ["", "a", "1,b", "-1", "0,"])
def test_bad_cpu_lists_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError, match="list of CPUs"):
        _parse_cpus(text)


def test_a_cpu_outside_the_allowed_set_is_an_error():
    before = os.sched_getaffinity(0)
    with pytest.raises(InvalidInputError, match="may only use CPUs"):
        pin_to_cpus(frozenset({max(before) + 1}))
    assert os.sched_getaffinity(0) == before  # nothing was changed


def test_pinning_covers_running_and_later_threads():
    """In a child process (the test process keeps its CPUs): a thread started before
    the pinning and one started after both run on the chosen CPU only."""
    cpu = min(os.sched_getaffinity(0))
    code = f"""
import os, threading
from promptcal.commands.serve import pin_to_cpus
seen = {{}}
ready, go = threading.Event(), threading.Event()
def early():
    ready.set(); go.wait(); seen["early"] = os.sched_getaffinity(0)
thread = threading.Thread(target=early); thread.start(); ready.wait()
pin_to_cpus(frozenset({{{cpu}}}))
go.set(); thread.join()
late = threading.Thread(target=lambda: seen.__setitem__("late", os.sched_getaffinity(0)))
late.start(); late.join()
seen["main"] = os.sched_getaffinity(0)
print(sorted((k, sorted(v)) for k, v in seen.items()))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == str([("early", [cpu]), ("late", [cpu]), ("main", [cpu])])
