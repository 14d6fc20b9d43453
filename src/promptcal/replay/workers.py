"""A few ``promptcal serve`` subprocesses on one machine, for replays, scripts and tests.

:class:`ServeFleet` starts N workers in one consumer group (each its own HTTP port and
log file, optionally pinned to a CPU each: one worker per core), waits until every one
answers ``/readyz`` and the group is stable, and on exit stops them with SIGTERM (they
finish the exposure in hand and commit) and kills what did not stop in time. The
workers run single-threaded (``*_NUM_THREADS=1``), as deployed one per core.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

#: One thread per worker for every numerical library.
SINGLE_THREAD_ENV = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
}
#: Fast group joins on a single machine (production keeps librdkafka's defaults).
FAST_GROUP_OPTIONS = ("session.timeout.ms=6000", "heartbeat.interval.ms=500")


class ServeFleet:
    """``workers`` ``promptcal serve`` processes sharing ``group``.

    Parameters
    ----------
    workers : int
        How many processes.
    bootstrap, group, prefix : str
        Broker, consumer group and topic prefix.
    refcat, output, camera : path
        The workers' ``--refcat``, ``--output`` (shared product root) and ``--camera``.
    logs : path
        Directory of the ``worker-<i>.log`` files.
    config : path, optional
        Calibration config JSON (``--config``).
    pin : bool
        Pin worker i to the i-th CPU of this process's affinity (``serve --cpus``).
    extra : sequence of str
        More ``serve`` arguments.
    """

    def __init__(
        self,
        workers: int,
        *,
        bootstrap: str,
        group: str,
        prefix: str,
        refcat: Path,
        output: Path,
        camera: Path,
        logs: Path,
        config: Path | None = None,
        pin: bool = True,
        extra: Sequence[str] = (),
    ) -> None:
        self.bootstrap, self.group = bootstrap, group
        self.commands: list[list[str]] = []
        self.ports: list[int] = []
        self.log_paths = [Path(logs) / f"worker-{i}.log" for i in range(workers)]
        self.processes: list[subprocess.Popen] = []
        cpus = sorted(os.sched_getaffinity(0)) if pin else []
        from promptcal.stream.broker import free_port

        for i in range(workers):
            port = free_port()
            command = [
                sys.executable, "-m", "promptcal.commands.cli", "serve", "--bootstrap", bootstrap,
                "--group", group, "--prefix", prefix, "--refcat", str(refcat),
                "--output", str(output), "--camera", str(camera),
                "--http-host", "127.0.0.1", "--http-port", str(port), "--snap-wait", "30",
                "--statistics-interval-ms", "0",
                # At full replay speed an exposure's snaps may overtake its next-visit.
                "--next-visit-wait", "10",
            ]  # fmt: skip
            for option in FAST_GROUP_OPTIONS:
                command += ["--consumer-option", option]
            if config is not None:
                command += ["--config", str(config)]
            if cpus:
                command += ["--cpus", str(cpus[i % len(cpus)])]
            self.commands.append([*command, *extra])
            self.ports.append(port)

    def __enter__(self) -> ServeFleet:
        env = {**os.environ, **SINGLE_THREAD_ENV}
        try:
            for command, log in zip(self.commands, self.log_paths, strict=True):
                log.parent.mkdir(parents=True, exist_ok=True)
                with open(log, "w") as stream:
                    self.processes.append(
                        subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT, env=env)
                    )
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def wait_ready(self, timeout: float = 300.0) -> float:
        """Wait for every ``/readyz`` and a stable group; returns the wait [s].

        Raises
        ------
        RuntimeError
            A worker exited or was not ready in time (its log is named).
        """
        start = time.monotonic()
        for process, port, log in zip(self.processes, self.ports, self.log_paths, strict=True):
            while not _ready(port):
                if process.poll() is not None:
                    raise RuntimeError(f"worker exited with {process.returncode}; log: {log}")
                if time.monotonic() - start > timeout:
                    raise RuntimeError(f"worker not ready after {timeout:.0f} s; log: {log}")
                time.sleep(0.1)
        self._wait_stable(min(15.0, timeout))
        return time.monotonic() - start

    def _wait_stable(self, timeout: float) -> None:
        """Best effort: the group's state is Stable (every member joined and assigned)."""
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                state = admin.describe_consumer_groups([self.group], request_timeout=5)
                if "STABLE" in str(state[self.group].result(timeout=5).state):
                    return
            except Exception:  # a broker that cannot describe groups: just go on
                return
            time.sleep(0.2)

    def stop(self, grace: float = 40.0) -> list[int | None]:
        """SIGTERM every worker, wait up to ``grace`` [s], kill the rest; exit codes."""
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + grace
        for process in self.processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return [p.returncode for p in self.processes]


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False
