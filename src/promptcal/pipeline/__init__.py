"""CalibrateImageTask and its steps, one module (or subpackage) per step of LSST's
``CalibrateImageTask`` (``docs/architecture.md`` maps each step to its module).

``from promptcal.pipeline.task import CalibrateImageTask, CalibrateImageConfig`` is the
public entry point; both are imported on first use so that importing one step does not
import them all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from promptcal.pipeline.config import CalibrateImageConfig
    from promptcal.pipeline.task import CalibrateImageTask

__all__ = ["DEFERRED_IMPORTS", "CalibrateImageConfig", "CalibrateImageTask"]

#: Modules the steps import at their first use instead of at import time (~0.25 s of a
#: new process): ``promptcal calibrate`` and a worker's warm-up import them in a
#: background thread (:func:`promptcal.core.kernel_cache.start_kernel_preload`) while
#: the first pixels are read and the first stages run in Numba code without the GIL.
DEFERRED_IMPORTS = ("scipy.spatial", "scipy.interpolate", "scipy.special")


def __getattr__(name: str) -> Any:
    if name == "CalibrateImageTask":
        from promptcal.pipeline.task import CalibrateImageTask

        return CalibrateImageTask
    if name == "CalibrateImageConfig":
        from promptcal.pipeline.config import CalibrateImageConfig

        return CalibrateImageConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
