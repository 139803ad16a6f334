"""Servers the local stack runs as child processes (moto, DynamoDB Local): start, readiness, stop.

Each child is started with ``PR_SET_PDEATHSIG=SIGTERM`` (Linux) so the kernel stops it even
when the stack is SIGKILLed, and in its own session so a terminal Ctrl-C reaches only the
stack, which then stops its workers before the servers they talk to.  A subclass says how to
spawn its process (:meth:`ChildServer.command`) and how to tell it is ready
(:meth:`ChildServer.ready`); start-up retries on another free port when the process exits
early (a free port can be taken between probe and bind).
"""

from __future__ import annotations

import abc
import ctypes
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
#: environment a child never needs: a developer's real AWS credentials stay out of it
_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def die_with_parent(parent_pid: int) -> Callable[[], None]:
    """preexec_fn: ask the kernel to SIGTERM this child when the parent thread dies.

    The signal follows the *thread* that forked, so servers must be started from the main
    thread (LocalStack does). No-op where prctl does not exist (macOS): there only the stack's
    own signal handlers stop the child.
    """

    def preexec() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            return
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


class ChildServer(abc.ABC):
    """One server process on ``host:port`` (``port=None``: any free port)."""

    #: for log lines and errors, e.g. "moto server"
    name = "server"
    #: the setting that fixes the port, named in the error when it is taken
    port_setting = ""

    def __init__(self, host: str = "127.0.0.1", *, port: int | None = None, log_path: Path | None = None) -> None:
        self.host = host
        self.fixed_port = port
        self.log_path = log_path
        self.port: int | None = None
        self.process: subprocess.Popen | None = None

    # -- what a subclass says

    @abc.abstractmethod
    def command(self) -> list[str]:
        """The child's command line (its port is ``self.port``)."""

    def environment(self) -> Mapping[str, str]:
        return {k: v for k, v in os.environ.items() if k not in _CREDENTIALS}

    def workdir(self) -> Path | None:
        return None

    @abc.abstractmethod
    def ready(self) -> bool:
        """One quick readiness probe (raise or return False while not ready)."""

    # -- lifecycle

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self, timeout: float = 30.0) -> None:
        if self.log_path is not None:
            self.log_path.write_bytes(b"")  # this run's log only
        if self.fixed_port and not bindable(self.host, self.fixed_port):
            # checked first: the readiness probe would otherwise talk to whoever holds the port
            raise RuntimeError(f"port {self.fixed_port} ({self.port_setting}) is in use")
        for attempt in range(1 if self.fixed_port else 3):
            self.port = self.fixed_port or free_port(self.host)
            self._spawn()
            if self._wait_ready(timeout):
                log.info("%s ready on %s (pid %s)", self.name, self.endpoint, self.pid)
                return
            code = self.process.poll() if self.process else None
            self.stop()
            if code is None:
                break  # alive but not answering: retrying will not help
            log.warning("%s exited with %s on port %s (attempt %d)", self.name, code, self.port, attempt + 1)
        raise RuntimeError(f"{self.name} did not start; see {self.log_path or 'its output'}")

    def _spawn(self) -> None:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                self.command(),
                env=dict(self.environment()),
                cwd=str(self.workdir()) if self.workdir() else None,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent(os.getpid()),  # noqa: PLW1509 - no threads yet
                start_new_session=True,
            )
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        self.spawned()

    def spawned(self) -> None:  # noqa: B027 - an optional hook
        """Called right after the process started (e.g. to note its pid)."""

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            try:
                if self.ready():
                    return True
            except (ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.1)
        return False

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            self.stopped()
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s (pid %s) ignored SIGTERM; killing it", self.name, process.pid)
            process.kill()
            process.wait(timeout)
        self.stopped()

    def stopped(self) -> None:  # noqa: B027 - an optional hook
        """Called once the process is gone (e.g. to forget its pid)."""
