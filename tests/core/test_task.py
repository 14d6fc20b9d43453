"""The Task / Config / Struct framework against the LSST Task API (spec seed-api.txt)."""

from __future__ import annotations

import weakref

import numpy as np
import pydantic
import pytest
from pydantic import Field

from promptcal.core.config import Config, parse_set_option
from promptcal.core.errors import InvalidInputError
from promptcal.core.task import Struct, Task, time_method
from promptcal.pipeline.task import CalibrateImageTask

TIMER_ITEMS = ("WallTime", "CpuTime", "MaxResidentSetSize")


class LeafConfig(Config):
    depth: int = Field(3, ge=0, description="A depth [px].")


class LeafTask(Task):
    ConfigClass = LeafConfig
    _DefaultName = "leaf"


class MiddleConfig(Config):
    scale: float = Field(1.5, gt=0, description="A scale [1].")
    leaf: LeafConfig = LeafTask.makeField("the leaf subtask")


class MiddleTask(Task):
    ConfigClass = MiddleConfig
    _DefaultName = "middle"

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        self.makeSubtask("leaf")

    def _subtask_classes(self):
        return {"leaf": LeafTask}

    @time_method
    def work(self, n: int) -> int:
        return sum(range(n))


class TopConfig(Config):
    do_thing: bool = Field(True, description="Whether to do the thing.")
    sub: MiddleConfig = MiddleTask.makeField("the middle subtask")


class TopTask(Task):
    ConfigClass = TopConfig
    _DefaultName = "top"

    def __init__(self, config=None, **kwargs):
        super().__init__(config, **kwargs)
        self.makeSubtask("sub")

    def _subtask_classes(self):
        return {"sub": MiddleTask}


@pytest.fixture
def top():
    return TopTask()


def test_names(top):
    assert top.getName() == "top"
    assert top.getFullName() == "top"
    assert isinstance(top.sub, MiddleTask)
    assert top.sub.getName() == "sub"
    assert top.sub.getFullName() == "top.sub"
    assert top.sub.leaf.getName() == "leaf"
    assert top.sub.leaf.getFullName() == "top.sub.leaf"
    assert TopTask(name="other").getFullName() == "other"


def test_subtask_gets_its_config_section():
    config = TopConfig().with_overrides({"sub.scale": 4.0, "sub.leaf.depth": 7})
    task = TopTask(config)
    assert task.sub.config is config.sub
    assert task.sub.config.scale == 4.0
    assert task.sub.leaf.config.depth == 7


def test_make_field_documents_and_defaults():
    field = TopConfig.model_fields["sub"]
    assert field.description == "the middle subtask"
    assert TopConfig().sub == MiddleConfig()
    assert TopConfig().sub.leaf.depth == 3


def test_task_dict(top):
    tasks = top.getTaskDict()
    assert set(tasks) == {"top", "top.sub", "top.sub.leaf"}
    assert all(isinstance(ref, weakref.ReferenceType) for ref in tasks.values())
    assert tasks["top.sub"]() is top.sub
    assert tasks["top.sub.leaf"]() is top.sub.leaf
    # A shallow copy: changing it does not change the task.
    tasks.clear()
    assert len(top.getTaskDict()) == 3


def test_full_metadata_keys_use_colons(top):
    top.metadata["a"] = 1
    top.sub.work(10)
    top.sub.leaf.metadata["b"] = 2
    full = top.getFullMetadata()
    assert set(full) == {"top", "top:sub", "top:sub:leaf"}
    assert full["top"]["a"] == 1
    assert full["top:sub:leaf"]["b"] == 2
    assert "workStartWallTime" in full["top:sub"]
    # A subtask's view covers itself and its own subtasks only.
    assert set(top.sub.getFullMetadata()) == {"top:sub", "top:sub:leaf"}


def test_timer_records_and_accumulates(top):
    with top.timer("stage"):
        sum(range(20000))
    md = top.metadata
    for item in TIMER_ITEMS:
        assert md[f"stageEnd{item}"] >= md[f"stageStart{item}"]
    first = md["stageEndWallTime"] - md["stageStartWallTime"]
    first_end = md["stageEndWallTime"]
    assert md["stageTotalWallTime"] == pytest.approx(first)
    assert md["stageEndMaxResidentSetSize"] > 0
    with open("/proc/self/status") as status:
        rss_kib = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    # Peak RSS is in bytes and at least the current RSS.
    assert md["stageEndMaxResidentSetSize"] >= rss_kib * 1024 * 0.9

    with top.timer("stage"):
        sum(range(20000))
    second = md["stageEndWallTime"] - md["stageStartWallTime"]
    assert md["stageStartWallTime"] >= first_end  # Start/End now describe the second call
    assert md["stageTotalWallTime"] == pytest.approx(first + second)
    assert md["stageTotalWallTime"] > second


def test_timer_records_even_on_error(top):
    with pytest.raises(ValueError), top.timer("failing"):
        raise ValueError("boom")
    assert "failingEndWallTime" in top.metadata


def test_time_method_records(top):
    assert top.sub.work(100) == 4950
    md = top.sub.metadata
    assert md["workEndCpuTime"] >= md["workStartCpuTime"]
    assert md["workTotalWallTime"] == pytest.approx(md["workEndWallTime"] - md["workStartWallTime"])
    # The parent's stage table names a subtask's stage by the subtask's short name.
    assert top.stage_durations()["sub.work"] == md["workTotalWallTime"]


def test_empty_metadata_clears_all_tasks(top):
    top.metadata["x"] = 1
    top.sub.work(5)
    top.sub.leaf.metadata["y"] = 2
    top.emptyMetadata()
    assert all(len(md) == 0 for md in top.getFullMetadata().values())


def test_can_multiprocess():
    assert Task.canMultiprocess is True
    assert CalibrateImageTask.canMultiprocess is True
    assert CalibrateImageTask().getName() == "calibrateImage"


def test_config_is_frozen():
    config = TopConfig()
    with pytest.raises(pydantic.ValidationError):
        config.do_thing = False
    with pytest.raises(pydantic.ValidationError):
        config.sub.scale = 2.0
    assert config.do_thing is True and config.sub.scale == 1.5


def test_config_rejects_unknown_and_invalid_fields():
    with pytest.raises(pydantic.ValidationError):
        TopConfig(no_such_field=1)
    with pytest.raises(pydantic.ValidationError):
        MiddleConfig(scale=-1.0)


def test_with_overrides():
    config = TopConfig()
    new = config.with_overrides({"sub.leaf.depth": 1, "do_thing": False})
    assert new.sub.leaf.depth == 1 and new.do_thing is False
    assert config.sub.leaf.depth == 3 and config.do_thing is True  # original untouched
    assert isinstance(new, TopConfig)
    for bad in ({"sub.nope": 1}, {"nope.depth": 1}, {"do_thing.x": 1}, {"missing": 1}):
        with pytest.raises(InvalidInputError):
            config.with_overrides(bad)
    # Values are validated as well as keys.
    with pytest.raises(InvalidInputError):
        config.with_overrides({"sub.leaf.depth": -1})
    with pytest.raises(InvalidInputError):
        config.with_overrides({"sub.scale": "not a number"})


def test_config_hash():
    a = TopConfig()
    assert a.config_hash() == TopConfig().config_hash()
    assert a.config_hash() != a.with_overrides({"sub.leaf.depth": 4}).config_hash()
    assert a.config_hash() != a.with_overrides({"do_thing": False}).config_hash()
    assert a.with_overrides({"sub.scale": 1.5}).config_hash() == a.config_hash()


def test_parse_set_option():
    assert parse_set_option("sub.scale=2.5") == ("sub.scale", 2.5)
    assert parse_set_option("band=r") == ("band", "r")
    with pytest.raises(InvalidInputError):
        parse_set_option("no-equals-sign")


def test_struct_get_dict():
    struct = Struct(a=1, b=[2])
    assert struct.a == 1 and struct.b == [2]
    d = struct.getDict()
    assert d == {"a": 1, "b": [2]}
    d["c"] = 3
    assert not hasattr(struct, "c")  # a copy
    assert d["b"] is struct.b  # shallow
    struct.c = 4
    assert struct.getDict()["c"] == 4


def test_id_generator_handles_rubin_visit_numbers():
    from promptcal.core.ids import COUNTER_BITS, IdGenerator, compact_visit

    rubin = IdGenerator(visit=2026022400123, detector=188)
    other_day = IdGenerator(visit=2026022500123, detector=188)
    ids = rubin.source_ids(3)
    assert ids.dtype == np.int64 and np.all(ids > 0) and np.all(ids > 1e9)
    assert np.all(ids >> COUNTER_BITS == rubin.packed)
    assert rubin.packed != other_day.packed
    assert compact_visit(2026022400123) == compact_visit(2026022400000) + 123
    assert compact_visit(1234) == 1234
    with pytest.raises(InvalidInputError):
        IdGenerator(visit=1999123100001, detector=0)
