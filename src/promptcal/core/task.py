"""A small Task framework with the LSST Task API.

``Task`` owns a frozen :class:`~promptcal.core.config.Config`, a metadata mapping, and
named subtasks. :meth:`Task.timer` and :func:`time_method` record start/end wall
time, CPU time and peak RSS into the metadata, as ``lsst.utils.timer`` does.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import logging
import resource
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

from promptcal.core.config import Config


class Struct:
    """A simple attribute container, like ``lsst.pipe.base.Struct``."""

    def __init__(self, **kwargs: Any) -> None:
        self.__dict__.update(kwargs)

    def getDict(self) -> dict[str, Any]:
        """Return the attributes as a dict (shallow copy)."""
        return dict(self.__dict__)

    def __repr__(self) -> str:
        return f"Struct({', '.join(sorted(self.__dict__))})"


class TaskMetadata(dict):
    """Metadata of one task: item name -> value (scalars or lists)."""

    def add(self, name: str, value: Any) -> None:
        """Append ``value`` to the list stored under ``name``."""
        self.setdefault(name, [])
        if not isinstance(self[name], list):
            self[name] = [self[name]]
        self[name].append(value)


def _peak_rss_bytes() -> int:
    """Peak resident set size of this process [bytes] (Linux reports KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _record(metadata: TaskMetadata, prefix: str) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    metadata[f"{prefix}Utc"] = _dt.datetime.now(_dt.UTC).isoformat()
    metadata[f"{prefix}WallTime"] = time.perf_counter()
    metadata[f"{prefix}CpuTime"] = time.process_time()
    metadata[f"{prefix}UserTime"] = usage.ru_utime
    metadata[f"{prefix}SystemTime"] = usage.ru_stime
    metadata[f"{prefix}MaxResidentSetSize"] = _peak_rss_bytes()


class Task:
    """Base class of all tasks.

    Parameters
    ----------
    config : Config, optional
        The task configuration; ``ConfigClass()`` when omitted.
    name : str, optional
        Task name; ``_DefaultName`` when omitted.
    parent_task : Task, optional
        The parent, for subtasks (then ``name`` is required).
    """

    ConfigClass: ClassVar[type[Config]] = Config
    _DefaultName: ClassVar[str] = "task"
    canMultiprocess: ClassVar[bool] = True

    def __init__(
        self,
        config: Config | None = None,
        *,
        name: str | None = None,
        parent_task: Task | None = None,
        **_: Any,
    ) -> None:
        self.config = config if config is not None else self.ConfigClass()
        self._name = name or self._DefaultName
        self._parent_task = parent_task
        if parent_task is None:
            self._full_name = self._name
            self._task_dict: dict[str, weakref.ReferenceType[Task]] = {}
        else:
            self._full_name = f"{parent_task._full_name}.{self._name}"
            self._task_dict = parent_task._task_dict
        self._task_dict[self._full_name] = weakref.ref(self)
        self.metadata = TaskMetadata()
        self.log = logging.getLogger(f"promptcal.{self._full_name}")

    # --- LSST Task API -------------------------------------------------------
    def getName(self) -> str:
        """Return the task name."""
        return self._name

    def getFullName(self) -> str:
        """Return the hierarchical name, ``parent.child``."""
        return self._full_name

    def getTaskDict(self) -> dict[str, weakref.ReferenceType[Task]]:
        """Return a shallow copy of ``full name -> weakref(task)`` for the whole tree."""
        return dict(self._task_dict)

    def getFullMetadata(self) -> dict[str, TaskMetadata]:
        """Metadata of this task and all subtasks, keyed by full name with ``.`` → ``:``."""
        full: dict[str, TaskMetadata] = {}
        for full_name, ref in self._task_dict.items():
            task = ref()
            if task is not None and full_name.startswith(self._full_name):
                full[full_name.replace(".", ":")] = task.metadata
        return full

    def emptyMetadata(self) -> None:
        """Clear the metadata of this task and of all subtasks."""
        for full_name, ref in self._task_dict.items():
            task = ref()
            if task is not None and full_name.startswith(self._full_name):
                task.metadata.clear()

    @classmethod
    def makeField(cls, doc: str) -> Any:
        """Return a pydantic field holding this task's config, documented by ``doc``."""
        from pydantic import Field

        return Field(default_factory=cls.ConfigClass, description=doc)

    def makeSubtask(self, name: str, **kwargs: Any) -> None:
        """Create ``self.<name>`` from the ``name`` field of this task's config.

        The subtask class is the one registered in ``self._subtask_classes[name]``.
        """
        task_class = self._subtask_classes()[name]
        sub_config = getattr(self.config, name)
        setattr(self, name, task_class(config=sub_config, name=name, parent_task=self, **kwargs))

    def _subtask_classes(self) -> dict[str, type[Task]]:
        """Map config field name -> Task class, for :meth:`makeSubtask`."""
        return {}

    @contextlib.contextmanager
    def timer(self, name: str, logLevel: int = logging.DEBUG) -> Iterator[None]:
        """Record ``<name>Start*`` / ``<name>End*`` timing items around a block."""
        _record(self.metadata, f"{name}Start")
        try:
            yield
        finally:
            _record(self.metadata, f"{name}End")
            elapsed = self.metadata[f"{name}EndWallTime"] - self.metadata[f"{name}StartWallTime"]
            # Start/End items keep the last call (as LSST); the total covers every call.
            self.metadata[f"{name}TotalWallTime"] = (
                self.metadata.get(f"{name}TotalWallTime", 0.0) + elapsed
            )
            self.log.log(logLevel, "%s took %.3f s", name, elapsed)

    def stage_durations(self) -> dict[str, float]:
        """Total wall-clock time [s] of each timed block (all calls) in this task tree."""
        out: dict[str, float] = {}
        for task_name, md in self.getFullMetadata().items():
            for key, total in md.items():
                if key.endswith("TotalWallTime"):
                    name = key[: -len("TotalWallTime")]
                    short = task_name.split(":")[-1]
                    label = name if short == self._name else f"{short}.{name}"
                    out[label] = float(total)
        return out


def time_method(fn: Callable) -> Callable:
    """Decorate a Task method so that each call is recorded by :meth:`Task.timer`."""

    @functools.wraps(fn)
    def wrapper(self: Task, *args: Any, **kwargs: Any) -> Any:
        with self.timer(fn.__name__):
            return fn(self, *args, **kwargs)

    return wrapper
