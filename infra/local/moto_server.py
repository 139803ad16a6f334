"""moto server as a child process of the local stack.

The child is started with ``PR_SET_PDEATHSIG=SIGTERM`` (Linux) so the kernel stops it even
when the stack is SIGKILLed, and in its own session so a terminal Ctrl-C reaches only the
stack, which then stops its workers before the server they talk to.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    """preexec_fn: ask the kernel to SIGTERM this child when the parent thread dies.

    The signal follows the *thread* that forked, so the server must be started from the
    main thread (LocalStack does). No-op where prctl does not exist (macOS): there only the
    stack's own signal handlers stop the child.
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


class MotoServer:
    """One ``python -m moto.server`` child; optionally with moto's request recorder."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        port: int | None = None,
        recording_path: Path | None = None,
        log_path: Path | None = None,
        secret_key: str,
    ) -> None:
        self.host = host
        #: the key every request must be signed with (infra/local/moto_auth.py)
        self.secret_key = secret_key
        self.fixed_port = port  # None: any free port
        self.recording_path = recording_path
        self.log_path = log_path
        self.port: int | None = None
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self, timeout: float = 30.0) -> None:
        if self.log_path is not None:
            self.log_path.write_bytes(b"")  # this run's log only
        if self.fixed_port and not _bindable(self.host, self.fixed_port):
            # checked first: the readiness probe would otherwise talk to whoever holds the port
            raise RuntimeError(f"port {self.fixed_port} (FLEETBOX_MOTO_PORT) is in use")
        for attempt in range(1 if self.fixed_port else 3):  # a free port can be taken between probe and bind
            self.port = self.fixed_port or free_port(self.host)
            self._spawn()
            if self._wait_ready(timeout):
                log.info("moto server ready on %s (pid %s)", self.endpoint, self.pid)
                return
            code = self.process.poll() if self.process else None
            self.stop()
            if code is None:
                break  # alive but not answering: retrying will not help
            log.warning("moto server exited with %s on port %s (attempt %d)", code, self.port, attempt + 1)
        raise RuntimeError(f"moto server did not start; see {self.log_path or 'its output'}")

    def _spawn(self) -> None:
        # moto needs no AWS credentials; a developer's real ones stay out of its process
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
        }
        # Recording is switched on explicitly (start_recording) once replay is done, so
        # neither readiness probes nor a replay end up in the recording.
        env.pop("MOTO_ENABLE_RECORDING", None)
        env["FLEETBOX_MOTO_SECRET"] = self.secret_key
        if self.recording_path is not None:
            env["MOTO_RECORDER_FILEPATH"] = str(self.recording_path)
        else:
            env.pop("MOTO_RECORDER_FILEPATH", None)
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "infra.local.moto_fast", "-H", self.host, "-p", str(self.port)],
                env=env,
                cwd=str(Path(__file__).resolve().parents[2]),  # infra.local.moto_fast is importable
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent(os.getpid()),  # noqa: PLW1509 - no threads yet
                start_new_session=True,
            )
        finally:
            if out is not subprocess.DEVNULL:
                out.close()

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            try:
                # Cheap, never recorded (recorder paths are excluded), harmless.
                self._moto_api("stop-recording", timeout=1)
                return True
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(0.1)
        return False

    def _moto_api(self, action: str, *, timeout: float) -> bytes:
        from infra.local.moto_auth import TOKEN_HEADER

        url = f"{self.endpoint}/moto-api/recorder/{action}"  # our own child's http:// endpoint
        request = urllib.request.Request(url, data=b"", method="POST", headers={TOKEN_HEADER: self.secret_key})  # noqa: S310
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.read()

    # -- recorder

    def replay_recording(self, timeout: float = 600.0) -> None:
        """Replay the recording file into this (empty) server; nothing is recorded meanwhile."""
        self._moto_api("replay-recording", timeout=timeout)

    def start_recording(self) -> None:
        self._moto_api("start-recording", timeout=10)

    # -- lifecycle

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("moto server (pid %s) ignored SIGTERM; killing it", process.pid)
            process.kill()
            process.wait(timeout)
