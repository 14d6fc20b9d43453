"""Load a run's Numba kernels from the on-disk cache before their first call.

Every kernel is compiled with ``cache=True``, so a new process finds its machine code in
the Numba cache, but it loads each kernel lazily, at the kernel's first call: ~0.5 s on
the first 4k exposure of a fresh ``promptcal calibrate`` (about 30 kernels, plus the
one-off set-up of Numba's code generator), all of it on the latency path.

This module moves that work off the path. After a run, :func:`record_used_kernels`
writes a small manifest next to the Numba cache: which kernels ran, with which
signatures. A new process calls :func:`start_kernel_preload` before reading its
pixels; a background thread then loads exactly those signatures while the main thread
reads FITS files (I/O and page faults), and about half of the loading (LLVM linking)
runs without the GIL. Numba's compiler lock makes this safe: a kernel the main thread
needs first either is already loaded or waits for the one being loaded.

A missing, stale or unreadable manifest preloads nothing; the kernels then load at
their first call, as without this module. The cache index is read through Numba's
cache objects (``Dispatcher._cache``), internal API checked by the tests on every
Numba version the project installs.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import pkgutil
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: File name of the manifest, in the Numba cache directory.
MANIFEST_NAME = "promptcal-kernels.json"


def kernel_dispatchers() -> dict[str, Any]:
    """Every promptcal kernel: ``"module.function" -> Numba dispatcher``."""
    from numba.core.registry import CPUDispatcher

    from promptcal import kernels

    out: dict[str, Any] = {}
    for info in pkgutil.iter_modules(kernels.__path__):
        module = importlib.import_module(f"{kernels.__name__}.{info.name}")
        for name, obj in vars(module).items():
            if isinstance(obj, CPUDispatcher) and obj.py_func.__module__ == module.__name__:
                out[f"{info.name}.{name}"] = obj
    return out


def manifest_path() -> Path:
    """Where the manifest lives: ``NUMBA_CACHE_DIR`` if set, else the kernels'
    ``__pycache__`` (where Numba caches without it)."""
    root = os.environ.get("NUMBA_CACHE_DIR")
    if root:
        return Path(root) / MANIFEST_NAME
    from promptcal import kernels

    return Path(kernels.__path__[0]) / "__pycache__" / MANIFEST_NAME


def called_by_kernels(dispatchers: dict[str, Any]) -> set[str]:
    """Names of the kernels that another kernel calls.

    Their code is linked into the caller's, so loading the caller loads them; a process
    that compiled its kernels (a cold Numba cache) still gives them signatures of their
    own, which are not worth preloading.
    """
    by_id = {id(d): name for name, d in dispatchers.items()}
    called: set[str] = set()
    for name, dispatcher in dispatchers.items():
        names = dispatcher.py_func.__code__.co_names
        scope = dispatcher.py_func.__globals__
        targets = [scope.get(n) for n in names]  # kernels call kernels by imported name
        called.update(by_id[id(t)] for t in targets if id(t) in by_id and by_id[id(t)] != name)
    return called


def used_kernels(
    dispatchers: dict[str, Any] | None = None, callees: set[str] | None = None
) -> dict[str, list[str]]:
    """Kernels with at least one compiled signature in this process, and those
    signatures (as Numba prints them), without those other kernels call
    (:func:`called_by_kernels`; both computed unless given)."""
    dispatchers = kernel_dispatchers() if dispatchers is None else dispatchers
    callees = called_by_kernels(dispatchers) if callees is None else callees
    return {
        name: sorted(str(sig) for sig in dispatcher.signatures)
        for name, dispatcher in dispatchers.items()
        if dispatcher.signatures and name not in callees
    }


def _read_manifest(path: Path) -> dict[str, list[str]]:
    """The manifest's kernels if it was written under this Numba version, else {}."""
    import numba

    try:
        document = json.loads(path.read_text())
        if document.get("numba") != numba.__version__:
            return {}
        return {str(k): [str(s) for s in v] for k, v in document["kernels"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.debug("no usable kernel manifest at %s (%s)", path, exc)
        return {}


def record_used_kernels(path: Path | None = None) -> bool:
    """Add :func:`used_kernels` to the manifest (atomically; only when it grows).

    The manifest is the union over the runs that recorded into it, so a path taken
    only now and then (the blind astrometric solver, two snaps) stays preloaded.

    Returns
    -------
    bool
        True if the manifest was (re)written; False if unchanged or not writable.
    """
    import numba

    path = manifest_path() if path is None else Path(path)
    known = _read_manifest(path)
    dispatchers = kernel_dispatchers()
    callees = called_by_kernels(dispatchers)
    kernels = {k: set(v) for k, v in known.items()}
    for name, signatures in used_kernels(dispatchers, callees).items():
        kernels.setdefault(name, set()).update(signatures)
    # Callees are left out of what an older run recorded too.
    merged = {k: sorted(v) for k, v in sorted(kernels.items()) if k not in callees}
    if merged == known:
        return False
    document = {"numba": numba.__version__, "kernels": merged}
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps(document, indent=1, sort_keys=True))
        os.replace(partial, path)
    except OSError as exc:
        log.debug("kernel manifest %s not written: %s", path, exc)
        with contextlib.suppress(OSError):  # e.g. the directory itself is missing
            partial.unlink(missing_ok=True)
        return False
    return True


def preload_kernels(path: Path | None = None) -> int:
    """Load the manifest's kernel signatures from the Numba cache now.

    Returns
    -------
    int
        Signatures loaded (0 without a usable manifest or cache entries).
    """
    from numba.core.registry import cpu_target

    wanted = _read_manifest(manifest_path() if path is None else Path(path))
    if not wanted:
        return 0
    dispatchers = kernel_dispatchers()
    codegen = cpu_target.target_context.codegen()
    loaded = 0
    for name, signatures in wanted.items():
        dispatcher = dispatchers.get(name)
        if dispatcher is None:
            continue
        cache = dispatcher._cache
        for key in cache._cache_file._load_index():
            signature = key[0]
            # The index may hold entries of an older version of the source: only keys
            # Numba itself would look up now are loaded.
            if str(signature) in signatures and cache._index_key(signature, codegen) == key:
                dispatcher.compile(signature)
                loaded += 1
    return loaded


def start_kernel_preload(
    path: Path | None = None, *, imports: Sequence[str] = ()
) -> threading.Thread:
    """:func:`preload_kernels`, then import the modules ``imports``, in a daemon thread
    (started); join it to wait.

    Parameters
    ----------
    path : pathlib.Path, optional
        The manifest (default :func:`manifest_path`).
    imports : sequence of str
        Modules the caller imports lazily and will need soon (e.g.
        ``promptcal.pipeline.DEFERRED_IMPORTS``); imported after the kernels, which
        are needed first.
    """

    def preload() -> None:
        try:
            count = preload_kernels(path)
            for module in imports:
                importlib.import_module(module)
        except Exception:  # an optimisation only: all of it still loads at first use
            log.warning("preload failed; kernels and modules load at first use", exc_info=True)
            return
        log.debug("preloaded %d kernel signatures and %d modules", count, len(imports))

    thread = threading.Thread(target=preload, name="kernel-preload", daemon=True)
    thread.start()
    return thread
