"""Local state that survives a restart (``FLEETBOX_STATE_DIR``; ``make run`` uses ``.fleetbox/state``).

Tables live in DynamoDB Local's own files (``dynamodb/``, see ``infra/local/dynamodb_local.py``):
nothing to replay, and a ``kill -9`` loses nothing that was answered.  The other services run
on moto, kept by its request recorder: every request the server receives is appended to
``moto-recording.jsonl``; on the next start that file is replayed into the fresh server
(``/moto-api/recorder/replay-recording``) before anything else talks to it. S3 replays
deterministically (the app chooses the keys), so objects come back exactly.

A state directory written before the tables moved to DynamoDB Local holds its tables in the
recording: the first start moves those requests out (``dynamodb-migration.jsonl``) and
:func:`replay_dynamodb` re-issues them to DynamoDB Local, so nothing stored is lost.

One stack at a time: :meth:`StateDir.lock` holds an exclusive lock on ``lock`` for the stack's
life (the kernel releases it when the process dies, however it dies).

Two things do not replay faithfully, and are handled here:

* **reads** are recorded too (every GetItem, every 1-second SQS long poll), so the file would
  grow without bound and replay would re-run a day of polling. Before each start the file is
  compacted to the requests that change durable state.
* **SQS message traffic** cannot be replayed: receipt handles are random, so a recorded
  DeleteMessage would not match the replayed message and every job ever sent would come back.
  Message operations are therefore dropped from the recording; instead the messages still
  waiting in the queues are saved at a clean shutdown (``sqs-pending.json``) and re-sent at the
  next start. Messages in flight or delayed at that moment, and everything queued when the
  stack is killed with SIGKILL, are not carried over.

Known gap: S3 multipart uploads do not replay (upload ids are random); single-request PUTs,
including presigned-URL uploads, do.
"""

from __future__ import annotations

import base64
import fcntl
import json
import logging
import os
import re
import secrets
import string
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: operations (by name prefix) that only read; they are dropped from the recording
READ_PREFIXES = ("Get", "Describe", "List", "Query", "Scan", "BatchGet", "TransactGet", "Receive", "Head")
#: the SQS operations kept: queue management; message traffic goes through the snapshot
SQS_KEPT = {
    "CreateQueue",
    "DeleteQueue",
    "SetQueueAttributes",
    "TagQueue",
    "UntagQueue",
    "AddPermission",
    "RemovePermission",
}

_CREDENTIAL_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/[^/]+/([^/]+)/aws4_request")
_AMZ_CREDENTIAL = re.compile(
    r"X-Amz-Credential=[^&]*?(?:%2F|/)\d{8}(?:%2F|/)[^&%/]+(?:%2F|/)([^&%/]+)(?:%2F|/)aws4_request"
)
_QUERY_ACTION = re.compile(r"(?:^|[?&])Action=([A-Za-z]+)")


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` via a temp file + rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _header(headers: dict[str, str], name: str) -> str:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return ""


def _service(entry: dict) -> str:
    headers = entry.get("headers") or {}
    match = _CREDENTIAL_SCOPE.search(_header(headers, "Authorization")) or _AMZ_CREDENTIAL.search(
        entry.get("url") or ""
    )
    return match.group(1) if match else ""


def _operation(entry: dict) -> str:
    target = _header(entry.get("headers") or {}, "X-Amz-Target")
    if target:
        return target.rpartition(".")[2]
    match = _QUERY_ACTION.search((entry.get("url") or "").partition("?")[2])
    if match:
        return match.group(1)
    body = entry.get("body")
    if isinstance(body, str) and not entry.get("body_encoded"):
        match = _QUERY_ACTION.search(body)
        if match:
            return match.group(1)
    return ""


def changes_state(entry: dict) -> bool:
    """Whether replaying this recorded request is needed to rebuild the state."""
    url = entry.get("url") or ""
    if "/moto-api/" in url:
        return False
    operation = _operation(entry)
    service = _service(entry)
    if service == "sqs" or _header(entry.get("headers") or {}, "X-Amz-Target").startswith("AmazonSQS."):
        return operation in SQS_KEPT
    if operation:
        return not operation.startswith(READ_PREFIXES)
    # REST APIs (S3): reads are GET/HEAD
    return (entry.get("method") or "GET").upper() not in ("GET", "HEAD", "OPTIONS")


def _entries(text: str) -> Iterator[dict | None]:
    """Recorded entries; None for an unreadable fragment.

    moto appends the JSON and its newline in two writes, so two concurrent large requests can
    end up on one line ("{…}{…}"); raw_decode separates them.
    """
    decoder = json.JSONDecoder()
    for line in text.splitlines():
        position = 0
        while True:
            while position < len(line) and line[position].isspace():
                position += 1
            if position >= len(line):
                break
            try:
                entry, position = decoder.raw_decode(line, position)
            except json.JSONDecodeError:
                yield None
                break
            yield entry if isinstance(entry, dict) else None


class StateDir:
    """The files of a persistent local stack: the moto recording, queued jobs, the admin key."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser().resolve()
        self.recording = self.path / "moto-recording.jsonl"
        self.pending_messages = self.path / "sqs-pending.json"
        self.admin_key_file = self.path / "admin_api_key"
        #: the key moto's requests are signed with: recorded requests replay only under it
        self.moto_secret_file = self.path / "moto_secret_key"
        #: the access key id of the stack's credentials: DynamoDB Local's database is named by it
        self.access_key_file = self.path / "access_key_id"
        #: the master key sealed secrets are wrapped with locally (chalicelib/services/sealing.py)
        self.seal_key_file = self.path / "seal_key"
        self.dynamodb_dir = self.path / "dynamodb"
        self.dynamodb_tmp = self.path / "dynamodb-tmp"
        self.dynamodb_pid = self.path / "dynamodb.pid"
        #: the table requests of a recording made before the tables moved to DynamoDB Local
        self.dynamodb_migration = self.path / "dynamodb-migration.jsonl"
        self.lock_file = self.path / "lock"
        self._lock_fd: int | None = None

    def prepare(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        os.chmod(self.path, 0o700)  # the recording holds credentials' hashes and device secrets
        self.recording.touch(mode=0o600, exist_ok=True)

    def lock(self) -> bool:
        """Hold this directory for this process; False when another live process holds it."""
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd
        return True

    def unlock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # closing releases the lock

    # -- recording

    def compact_recording(self) -> tuple[int, int]:
        """Keep only state-changing requests; returns (kept, dropped). Call while moto is down.

        Table requests (an old recording's) move to :attr:`dynamodb_migration`, in order."""
        kept: list[str] = []
        tables: list[str] = []
        dropped = unreadable = 0
        for entry in _entries(self.recording.read_text(encoding="utf-8")):
            if entry is None:
                unreadable += 1
                continue
            if not changes_state(entry):
                dropped += 1
                continue
            if _service(entry) == "dynamodb":
                tables.append(json.dumps(entry))
                continue
            headers = entry.get("headers") or {}
            # requests (the replayer) does not do 100-continue; the header would stall it
            for key in [k for k in headers if k.lower() == "expect"]:
                del headers[key]
            kept.append(json.dumps(entry))
        if unreadable:
            log.warning("state: skipped %d unreadable fragment(s) of %s", unreadable, self.recording)
        if tables:
            # written (and synced) before the recording loses them
            with open(self.dynamodb_migration, "a", encoding="utf-8") as fh:
                fh.write("".join(line + "\n" for line in tables))
                fh.flush()
                os.fsync(fh.fileno())
        if dropped or unreadable or tables:
            write_atomic(self.recording, "".join(line + "\n" for line in kept).encode())
        return len(kept), dropped + unreadable

    def has_recording(self) -> bool:
        return self.recording.exists() and self.recording.stat().st_size > 0

    # -- SQS messages

    def save_pending_messages(self, sqs: Any, queue_urls: dict[str, str], limit: int = 100_000) -> int:
        """Save the visible messages of each queue (by queue name). Returns how many."""
        saved: dict[str, list[dict]] = {}
        count = 0
        for url in queue_urls.values():
            name = url.rstrip("/").rpartition("/")[2]
            messages: list[dict] = []
            seen: set[str] = set()
            while count < limit:
                response = sqs.receive_message(
                    QueueUrl=url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=0,
                    VisibilityTimeout=60,
                    MessageAttributeNames=["All"],
                    MessageSystemAttributeNames=["All"],
                )
                batch = [m for m in response.get("Messages", []) if m["MessageId"] not in seen]
                if not batch:
                    break
                for message in batch:
                    seen.add(message["MessageId"])
                    messages.append(_saved_message(message))
                count += len(batch)
            if messages:
                saved[name] = messages
        if saved:
            write_atomic(self.pending_messages, json.dumps(saved).encode())
        else:
            self.pending_messages.unlink(missing_ok=True)
        return count

    def restore_pending_messages(self, sqs: Any, queue_urls: dict[str, str]) -> int:
        """Re-send the messages saved at the last clean shutdown, then forget them."""
        if not self.pending_messages.exists():
            return 0
        saved = json.loads(self.pending_messages.read_text(encoding="utf-8"))
        by_name = {url.rstrip("/").rpartition("/")[2]: url for url in queue_urls.values()}
        count = 0
        for name, messages in saved.items():
            url = by_name.get(name)
            if url is None:
                log.warning(
                    "state: %d saved message(s) for queue %s dropped: the queue no longer exists", len(messages), name
                )
                continue
            for start in range(0, len(messages), 10):
                entries = [dict(_sendable(m), Id=str(i)) for i, m in enumerate(messages[start : start + 10])]
                result = sqs.send_message_batch(QueueUrl=url, Entries=entries)
                for failure in result.get("Failed", []):
                    log.warning("state: could not restore a message to %s: %s", name, failure.get("Message"))
                count += len(result.get("Successful", []))
        self.pending_messages.unlink()
        return count

    # -- admin key

    def load_admin_key(self) -> str | None:
        try:
            return self.admin_key_file.read_text(encoding="utf-8").strip() or None
        except FileNotFoundError:
            return None

    def save_admin_key(self, key: str) -> None:
        write_atomic(self.admin_key_file, key.encode())

    def moto_secret(self) -> str:
        """This state's moto key: made once, kept (recorded requests are signed with it)."""
        return self._kept(self.moto_secret_file, lambda: secrets.token_urlsafe(30))

    def seal_key(self) -> str:
        """This state's seal key (base64, 32 bytes): made once, kept — the stored cloud-API
        SecretKeys open only under it."""
        return self._kept(self.seal_key_file, lambda: base64.b64encode(secrets.token_bytes(32)).decode())

    def access_key_id(self) -> str:
        """This state's access key id: made once, kept (DynamoDB Local's database is named by it)."""
        return self._kept(self.access_key_file, new_access_key_id)

    @staticmethod
    def _kept(path: Path, make: Any) -> str:
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError:
            value = ""
        if not value:
            value = make()
            write_atomic(path, value.encode())
        return value

    # -- tables of an old recording

    def pending_table_migration(self) -> list[dict]:
        if not self.dynamodb_migration.exists():
            return []
        return [e for e in _entries(self.dynamodb_migration.read_text(encoding="utf-8")) if e is not None]

    def migration_done(self) -> None:
        self.dynamodb_migration.unlink(missing_ok=True)


def new_access_key_id() -> str:
    """An access key id DynamoDB Local accepts (letters and digits only), unguessable."""
    alphabet = string.ascii_uppercase + string.digits
    return "FBL" + "".join(secrets.choice(alphabet) for _ in range(24))


def replay_dynamodb(client: Any, entries: list[dict]) -> int:
    """Re-issue recorded DynamoDB requests (JSON protocol: the body is the request's parameters)
    through ``client``, in order; returns how many.  A request refused now (e.g. a table that
    exists already) is logged and skipped, as it was answered once before."""
    from botocore import xform_name
    from botocore.exceptions import ClientError

    done = 0
    for entry in entries:
        operation = _operation(entry)
        body = entry.get("body") or "{}"
        if entry.get("body_encoded"):
            body = base64.b64decode(body).decode("utf-8")
        try:
            getattr(client, xform_name(operation))(**json.loads(body))
            done += 1
        except ClientError as exc:
            log.warning("state: recorded %s not replayed: %s", operation, exc)
    return done


def _saved_message(message: dict) -> dict:
    attributes = {}
    for name, value in (message.get("MessageAttributes") or {}).items():
        attribute = {"DataType": value["DataType"]}
        if "StringValue" in value:
            attribute["StringValue"] = value["StringValue"]
        if "BinaryValue" in value:
            attribute["BinaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
        attributes[name] = attribute
    system = message.get("Attributes") or {}
    saved = {"body": message["Body"], "message_attributes": attributes}
    for key in ("MessageGroupId", "MessageDeduplicationId"):
        if key in system:
            saved[key] = system[key]
    return saved


def _sendable(saved: dict) -> dict:
    entry: dict[str, Any] = {"MessageBody": saved["body"]}
    attributes = {}
    for name, value in saved.get("message_attributes", {}).items():
        attribute = dict(value)
        if "BinaryValue" in attribute:
            attribute["BinaryValue"] = base64.b64decode(attribute["BinaryValue"])
        attributes[name] = attribute
    if attributes:
        entry["MessageAttributes"] = attributes
    for key in ("MessageGroupId", "MessageDeduplicationId"):
        if key in saved:
            entry[key] = saved[key]
    return entry
