"""What the benchmarks share: free ports, a local stack in a subprocess, its DynamoDB call count."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_stack(home: Path, **env_overrides: str) -> tuple[subprocess.Popen, dict]:
    """``python -m infra.local`` in ``home`` counting its AWS calls; returns once it is ready."""
    env = dict(
        os.environ,
        FLEETBOX_HOME=str(home),
        FLEETBOX_HTTP_PORT=str(free_port()),
        FLEETBOX_MQTT_PORT=str(free_port()),
        FLEETBOX_COUNT_AWS_CALLS="1",
        **env_overrides,
    )
    for name in ("AWS_ENDPOINT_URL", "FLEETBOX_STATE_DIR", "FLEETBOX_STAGE"):
        env.pop(name, None)
    log = open(home / "stack.log", "wb")  # noqa: SIM115 - the child writes it for its whole life
    proc = subprocess.Popen(
        [sys.executable, "-m", "infra.local"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    info_path = home / ".fleetbox" / "local.json"
    deadline = time.time() + 90
    while not info_path.exists():
        if proc.poll() is not None or time.time() > deadline:
            raise SystemExit(f"the local stack did not start; see {home / 'stack.log'}")
        time.sleep(0.2)
    return proc, json.loads(info_path.read_text())


def _aws_calls(home: Path) -> dict:
    try:
        return json.loads((home / ".fleetbox" / "aws_calls.json").read_text())
    except (OSError, ValueError):
        return {}


def dynamodb_calls(home: Path) -> dict[str, int]:
    """DynamoDB requests the stack has made so far, by operation."""
    return dict(_aws_calls(home).get("dynamodb", {}))


def dynamodb_units(home: Path) -> dict[str, float]:
    """DynamoDB capacity units the stack has consumed so far, by operation (reads and writes)."""
    return dict(_aws_calls(home).get("dynamodb_capacity", {}))


def dynamodb_units_by_table(home: Path) -> dict[str, dict[str, float]]:
    """DynamoDB capacity units consumed so far, by table (without the stage prefix) and operation."""
    tables = _aws_calls(home).get("dynamodb_capacity_by_table", {})
    return {name.rsplit("-", 1)[-1]: dict(ops) for name, ops in tables.items()}
