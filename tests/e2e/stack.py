"""The real local stack (``python -m infra.local``) as a subprocess, for the e2e tests.

Each stack gets free ports and its own FLEETBOX_HOME (so .fleetbox/local.json never touches a
developer's running stack); its stdout and stderr go to ``stack.log`` in that home.  The
fixtures that start them are in ``tests/e2e/conftest.py``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers import wait_until
from tests.slack_signer import SECRET as SLACK_SIGNING_SECRET

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 10


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid …" — comm may contain spaces and parentheses
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            children.append(int(entry.name))
    return children


def process_gone(pid: int) -> bool:
    """True when ``pid`` no longer exists (or is only a zombie waiting to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


@dataclass
class StackProcess:
    """One running ``python -m infra.local``."""

    process: subprocess.Popen
    home: Path
    log_path: Path
    info: dict = field(default_factory=dict)

    @property
    def info_path(self) -> Path:
        return self.home / ".fleetbox" / "local.json"

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def children(self) -> list[int]:
        return child_pids(self.process.pid)

    def terminate(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM the stack; returns its exit code; fails if it takes longer than ``timeout``."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"the local stack did not exit within {timeout} s of SIGTERM\n{self.log_text()[-4000:]}"
            ) from None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


def start_stack(home: Path, **env_overrides: str) -> StackProcess:
    """Start ``python -m infra.local`` in ``home``; returns once local.json is written.

    The ports are picked free just before the start; another process on this machine can take
    one in between (a stack restarting on a state dir takes several seconds to get to its
    listeners), so a start that lost its port that way is retried on new ports."""
    for attempt in range(3):
        try:
            return _start_stack(home, **env_overrides)
        except PortTaken:
            if attempt == 2 or "FLEETBOX_HTTP_PORT" in env_overrides or "FLEETBOX_MQTT_PORT" in env_overrides:
                raise
    raise AssertionError("unreachable")


class PortTaken(AssertionError):
    """The stack could not listen: its port was taken after we picked it."""


def _start_stack(home: Path, **env_overrides: str) -> StackProcess:
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    for name in ("AWS_ENDPOINT_URL", "FLEETBOX_STATE_DIR", "FLEETBOX_ADMIN_API_KEY", "FLEETBOX_HOST"):
        env.pop(name, None)
    env.update(
        {
            "FLEETBOX_HOME": str(home),
            "FLEETBOX_HTTP_PORT": str(free_port()),
            "FLEETBOX_MQTT_PORT": str(free_port()),
            "PYTHONUNBUFFERED": "1",
            # the session's stack serves many test modules and the README walkthrough: the unit and
            # integration suites' 50-device quota (tests/conftest.py) is far too small for all of them
            "FLEETBOX_DEVICE_QUOTA": "100000",
            # the chat endpoints verify Slack's signature: the tests sign with this secret
            "FLEETBOX_SLACK_SIGNING_SECRET": SLACK_SIGNING_SECRET,
        }
    )
    env.update(env_overrides)
    log_path = home / "stack.log"
    info_path = home / ".fleetbox" / "local.json"
    # a stack killed with SIGKILL leaves its local.json behind: wait for a new one, not that one
    stale = info_path.read_bytes() if info_path.exists() else None
    log_start = log_path.stat().st_size if log_path.exists() else 0
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "infra.local"],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    stack = StackProcess(process=process, home=home, log_path=log_path)

    def written() -> bytes | None:
        if process.poll() is not None:
            if "Address already in use" in stack.log_text()[log_start:]:
                raise PortTaken(stack.log_text()[-2000:])
            raise AssertionError(
                f"the local stack exited with {process.returncode} during start-up\n{stack.log_text()[-4000:]}"
            )
        current = stack.info_path.read_bytes() if stack.info_path.exists() else None
        return current if current is not None and current != stale else None

    current = wait_until(written, START_TIMEOUT_S, 0.1)
    if current is None:
        stack.kill()
        raise AssertionError(f"no {stack.info_path} after {START_TIMEOUT_S} s\n{stack.log_text()[-4000:]}")
    stack.info = json.loads(current.decode("utf-8"))
    return stack
