"""The embedded local stack: DynamoDB Local, moto server, the resources, chalice local, the worker loop.

:class:`LocalStack` is what ``python -m infra.local`` runs; tests can drive it in-process
too (``start()`` / ``stop()``), though the e2e tests start the real command.

Start-up order matters and is the point of this module:

1. the storage: DynamoDB Local (child process; the tables, on disk in ``FLEETBOX_STATE_DIR``
   or in memory) and moto server (child process; S3, SQS, SNS, Kinesis, IoT data) — with a
   state directory, locked for this stack, moto's recording is replayed into it before
   anything else talks to it, then recording starts;
2. the AWS environment (``AWS_ENDPOINT_URL_DYNAMODB`` → DynamoDB Local, ``AWS_ENDPOINT_URL`` →
   moto, the stack's own credentials) is set *before* the app is imported, so every boto3
   client and PynamoDB model the app builds targets them;
3. tables, queues and bucket from ``infra/aws/resources.yaml``; then ``FLEETBOX_BUCKET``;
4. the app, loaded through chalice's own config loader for stage ``local`` so the stage's
   environment variables reach ``os.environ`` first; the root principal and admin key;
5. the worker loop, the HTTP server, the other services (the MQTT broker slot);
6. ``.fleetbox/local.json``, written only once the HTTP server accepts connections.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3

from infra.local.bootstrap import REPO_ROOT, bootstrap
from infra.local.dynamodb_local import DynamoDBLocal, DynamoDBLocalMissing
from infra.local.moto_server import MotoServer
from infra.local.persistence import StateDir, new_access_key_id, replay_dynamodb, write_atomic
from infra.local.web import ServerThread, create_server
from infra.local.worker import WorkerLoop

log = logging.getLogger(__name__)

STAGE = "local"
ACCOUNT_ID = "123456789012"
REGION = "us-east-1"

#: environment that could steer boto3 away from moto or leak real credentials into it
_AWS_ENV_TO_CLEAR = (
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
)


class StackError(RuntimeError):
    """The local stack cannot start (the message says why and what to do)."""


@dataclass
class Service:
    """Something the stack runs besides HTTP and the workers (the MQTT broker, later)."""

    name: str
    stop: Callable[[], None]
    banner: str = ""


@dataclass
class StackSettings:
    project_dir: Path = REPO_ROOT
    home: Path = REPO_ROOT
    host: str = "127.0.0.1"
    http_port: int = 8000
    mqtt_port: int = 1883
    moto_port: int | None = None
    dynamodb_port: int | None = None
    state_dir: Path | None = None
    admin_api_key: str | None = None
    schedule_speedup: float = 1.0
    #: seconds between re-authorisations of each MQTT connection (a disabled device is cut off)
    mqtt_reauth_s: float = 60.0
    #: how long the uplink bridge lets a batch gather (AWS: MaximumBatchingWindowInSeconds 1 in
    #: infra/aws/resources.yaml; locally 30 ms so a lone message is answered at once —
    #: bench/uplink.py sets 1 s to measure AWS's batch shape)
    uplink_window_s: float = 0.03

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StackSettings:
        def path(name: str) -> Path | None:
            value = env.get(name, "").strip()
            return Path(value).expanduser().resolve() if value else None

        try:
            return cls(
                home=path("FLEETBOX_HOME") or REPO_ROOT,
                host=env.get("FLEETBOX_HOST", "").strip() or "127.0.0.1",
                http_port=int(env.get("FLEETBOX_HTTP_PORT") or 8000),
                mqtt_port=int(env.get("FLEETBOX_MQTT_PORT") or 1883),
                moto_port=int(env["FLEETBOX_MOTO_PORT"]) if env.get("FLEETBOX_MOTO_PORT") else None,
                dynamodb_port=int(env["FLEETBOX_DYNAMODB_PORT"]) if env.get("FLEETBOX_DYNAMODB_PORT") else None,
                state_dir=path("FLEETBOX_STATE_DIR"),
                admin_api_key=env.get("FLEETBOX_ADMIN_API_KEY", "").strip() or None,
                schedule_speedup=float(env.get("FLEETBOX_SCHEDULE_SPEEDUP") or 1.0),
                mqtt_reauth_s=float(env.get("FLEETBOX_MQTT_REAUTH_S") or 60.0),
                uplink_window_s=float(env.get("FLEETBOX_UPLINK_WINDOW_S") or 0.03),
            )
        except ValueError as exc:
            raise StackError(f"bad local stack setting: {exc}") from exc


def _connect_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def _accepts_connections(url: str) -> bool:
    parsed = urlparse(url)
    if not parsed.hostname or not parsed.port:
        return False
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=0.5):
            return True
    except OSError:
        return False


class LocalStack:
    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.info_path = settings.home / ".fleetbox" / "local.json"
        self.state = StateDir(settings.state_dir) if settings.state_dir else None
        self.moto: MotoServer | None = None
        self.dynamodb: DynamoDBLocal | None = None
        #: the stack's credentials (random, or kept in the state dir): moto refuses requests not
        #: signed with the secret key, DynamoDB Local keeps its tables under the access key id
        self.aws_access_key_id = ""
        self.aws_secret_key = ""
        self.resources: dict[str, Any] = {}
        self.app: Any = None
        self.chalice_config: Any = None
        self.admin_api_key: str | None = None
        self.workers: WorkerLoop | None = None
        self.http: ServerThread | None = None
        #: started services, stopped in reverse order (see start_broker)
        self.services: list[Service] = []
        self.mqtt_listening = False
        self.broker: Any = None
        self.info: dict[str, Any] | None = None
        self._owns_info_file = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> LocalStack:
        return cls(StackSettings.from_env(env))

    # ------------------------------------------------------------ start

    def start(self) -> dict[str, Any]:
        """Start everything; returns what local.json holds. On failure, stop() what started."""
        self._claim_info_file()
        try:
            self._start_storage()
            self._set_aws_environment()
            self._create_resources()
            self._load_app()
            self._seed()
            self._start_workers()
            self._resume_batches()
            self._start_http()
            self.start_broker()
            return self._publish_info()
        except BaseException:
            self.stop()
            raise

    def _claim_info_file(self) -> None:
        if self.info_path.exists():
            try:
                stale = json.loads(self.info_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                stale = {}
            if _accepts_connections(str(stale.get("api_url", ""))):
                raise StackError(
                    f"another local stack is running at {stale['api_url']} "
                    f"({self.info_path}); stop it or set FLEETBOX_HOME"
                )
            self.info_path.unlink(missing_ok=True)
        self.info_path.parent.mkdir(parents=True, exist_ok=True)
        self._owns_info_file = True

    def _start_storage(self) -> None:
        recording = None
        if self.state is not None:
            self.state.prepare()
            if not self.state.lock():
                raise StackError(f"another local stack is using {self.state.path}; stop it or set FLEETBOX_STATE_DIR")
            kept, dropped = self.state.compact_recording()
            log.info("state: %s (%d recorded change(s); %d read(s) compacted away)", self.state.path, kept, dropped)
            recording = self.state.recording
            self.aws_access_key_id, self.aws_secret_key = self.state.access_key_id(), self.state.moto_secret()
        else:
            self.aws_access_key_id, self.aws_secret_key = new_access_key_id(), secrets.token_urlsafe(30)
        self._start_dynamodb()
        self._start_moto(recording)

    def _start_dynamodb(self) -> None:
        home = self.info_path.parent
        try:
            self.dynamodb = DynamoDBLocal(
                "127.0.0.1",
                port=self.settings.dynamodb_port,
                data_dir=self.state.dynamodb_dir if self.state else None,
                tmp_dir=self.state.dynamodb_tmp if self.state else home / "dynamodb-tmp",
                pid_file=self.state.dynamodb_pid if self.state else None,
                log_path=home / "dynamodb.log",
                access_key_id=self.aws_access_key_id,
                secret_key=self.aws_secret_key,
                region=REGION,
            )
            self.dynamodb.start()
        except (DynamoDBLocalMissing, RuntimeError) as exc:
            raise StackError(str(exc)) from exc
        if self.state is not None:
            self._migrate_tables()

    def _migrate_tables(self) -> None:
        """Tables an older stack kept in moto's recording move into DynamoDB Local, once."""
        assert self.state is not None and self.dynamodb is not None
        entries = self.state.pending_table_migration()
        if not entries:
            return
        client = self.dynamodb.client()
        # a migration file still here means the last one did not finish: start it over
        for name in client.list_tables().get("TableNames", []):
            client.delete_table(TableName=name)
        log.info("state: moving %d recorded table request(s) into DynamoDB Local…", len(entries))
        done = replay_dynamodb(client, entries)
        self.state.migration_done()
        log.info("state: %d table request(s) moved; the tables now live in %s", done, self.state.dynamodb_dir)

    def _start_moto(self, recording: Path | None) -> None:
        self.moto = MotoServer(
            "127.0.0.1",
            port=self.settings.moto_port,
            recording_path=recording,
            log_path=self.info_path.parent / "moto.log",
            secret_key=self.aws_secret_key,
        )
        try:
            self.moto.start()
        except RuntimeError as exc:
            raise StackError(str(exc)) from exc
        if self.state is not None:
            if self.state.has_recording():
                log.info("state: replaying the recording into moto…")
                self.moto.replay_recording()
            self.moto.start_recording()

    def _set_aws_environment(self) -> None:
        assert self.moto is not None and self.dynamodb is not None
        for name in [n for n in os.environ if n.startswith("AWS_ENDPOINT_URL_")] + list(_AWS_ENV_TO_CLEAR):
            os.environ.pop(name, None)
        os.environ.update(
            {
                "AWS_ENDPOINT_URL": self.moto.endpoint,
                "AWS_ENDPOINT_URL_DYNAMODB": self.dynamodb.endpoint,
                "AWS_REGION": REGION,
                "AWS_DEFAULT_REGION": REGION,
                # the stack's own credentials always: real ones must never be sent to (or recorded by) moto
                "AWS_ACCESS_KEY_ID": self.aws_access_key_id,
                "AWS_SECRET_ACCESS_KEY": self.aws_secret_key,
                # and no profile settings (sso, credential_process, s3 addressing, retries) either
                "AWS_CONFIG_FILE": os.devnull,
                "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                "FLEETBOX_STAGE": STAGE,
            }
        )
        # outgoing webhooks may target loopback receivers locally, unless the user says otherwise
        os.environ.setdefault("FLEETBOX_ALLOW_LOOPBACK", "true")
        # root-level download links for devices (chalicelib/services/files.py, infra/local/downloads.py)
        os.environ.setdefault(
            "FLEETBOX_DOWNLOAD_BASE_URL", f"http://{_connect_host(self.settings.host)}:{self.settings.http_port}"
        )
        os.environ.setdefault("FLEETBOX_DOWNLOAD_KEY", secrets.token_hex(32))
        # the master key of sealed secrets (cloud-API SecretKeys): kept with the state, so pairs
        # issued before a restart still verify; in memory a stack's pairs die with it anyway
        os.environ.setdefault(
            "FLEETBOX_SEAL_KEY",
            self.state.seal_key() if self.state is not None else base64.b64encode(secrets.token_bytes(32)).decode(),
        )
        # video tasks may name local files inside this folder (README "Video summaries")
        samples = self.settings.project_dir.parent / "shared" / "media-samples"
        if samples.is_dir():
            os.environ.setdefault("FLEETBOX_MEDIA_ROOT", str(samples))
        # the stack prints one readable line per request; the app's structured INFO lines are
        # for CloudWatch, so locally only its warnings and errors show (override to see more)
        os.environ.setdefault("FLEETBOX_LOG_LEVEL", "WARNING")

    def _create_resources(self) -> None:
        self.resources = bootstrap(
            STAGE,
            account_id=ACCOUNT_ID,
            region=REGION,
            template_path=self.settings.project_dir / "infra" / "aws" / "resources.yaml",
        )
        if self.resources.get("bucket"):
            os.environ["FLEETBOX_BUCKET"] = self.resources["bucket"]
        if self.state is not None:
            restored = self.state.restore_pending_messages(self._sqs(), self.resources["queues"])
            if restored:
                log.info("state: re-queued %d message(s) saved at the last shutdown", restored)

    def _sqs(self) -> Any:
        return boto3.session.Session(region_name=REGION).client("sqs")

    def _load_app(self) -> None:
        from chalice.cli.factory import CLIFactory
        from chalice.deploy.validate import validate_routes

        project_dir = str(self.settings.project_dir)
        # environ=os.environ: the stage's environment_variables are written into os.environ
        # when chalice imports app.py, as in Lambda (ARCHITECTURE §5).
        factory = CLIFactory(project_dir, environ=os.environ)
        self.chalice_config = factory.create_config_obj(chalice_stage_name=STAGE)
        self.app = self.chalice_config.chalice_app
        validate_routes(self.app.routes)
        try:
            from chalicelib.core.config import reload_settings
        except ImportError:
            return
        reload_settings()  # in case anything read the settings before the env was complete

    def _seed(self) -> None:
        try:
            from chalicelib.services import access
        except ImportError as exc:
            raise StackError("cannot seed the admin key: chalicelib.services.access is missing") from exc
        requested = self.settings.admin_api_key or (self.state.load_admin_key() if self.state else None)
        self.admin_api_key = access.seed_root(requested)
        if self.state is not None and not self.settings.admin_api_key:
            # one admin key per state dir, instead of a new one on every start
            self.state.save_admin_key(self.admin_api_key)

    def _start_workers(self) -> None:
        self.workers = WorkerLoop(
            self.app,
            stage=STAGE,
            region=REGION,
            account_id=ACCOUNT_ID,
            speedup=self.settings.schedule_speedup,
            chalice_config=self.chalice_config,
        )
        self.workers.start()

    def _resume_batches(self) -> None:
        """Batches that were running when the stack last stopped (or was killed) go on now, not
        after the resume sweep's minute; each is logged."""
        from chalicelib.services import production

        try:
            resumed = production.resume_stalled(stale_s=0)
        except Exception:
            log.exception("could not resume running batches; the minute sweep will")
            return
        if resumed:
            log.info("resumed %d batch job(s) that were running when the stack stopped", resumed)

    def _start_http(self) -> None:
        try:
            server = create_server(self.app, self.chalice_config, self.settings.host, self.settings.http_port)
        except OSError as exc:
            raise StackError(
                f"cannot listen on {self.settings.host}:{self.settings.http_port} ({exc.strerror}); "
                f"set FLEETBOX_HTTP_PORT to another port"
            ) from exc
        self.http = ServerThread(server)
        self.http.start()
        self.http.wait_accepting()

    def start_broker(self) -> None:
        """The embedded MQTT broker (infra/local/broker.py) and its uplink bridge, in this process.

        Its authentication calls the app's ``mqtt_authorizer``, connects and disconnects call
        ``presence``, uplinks reach the ``uplink`` Kinesis handler through the bridge, and it is
        installed as the device publisher port, so the HTTP routes, the workers and the broker
        share one process.  :meth:`stop` stops it (sessions closed, port released).
        """
        from chalicelib.protocol import publisher
        from infra.local.broker import BrokerPublisher, BrokerStartError, LocalBroker

        if os.environ.get("FLEETBOX_COUNT_AWS_CALLS"):
            # benchmarks read DynamoDB requests per report from this file (bench/uplink.py)
            from infra.local import awscalls

            awscalls.install(self.info_path.parent / "aws_calls.json")

        broker = LocalBroker.for_app(
            self.app,
            self.settings.host,
            self.settings.mqtt_port,
            region=REGION,
            account_id=ACCOUNT_ID,
            stage=STAGE,
            reauth_s=self.settings.mqtt_reauth_s,
            max_wait_s=self.settings.uplink_window_s,
        )
        try:
            broker.start()
        except BrokerStartError as exc:
            raise StackError(f"{exc}; set FLEETBOX_MQTT_PORT to another port") from exc

        def stop() -> None:
            publisher.use(None)
            broker.stop()

        publisher.use(BrokerPublisher(broker))
        self.broker = broker
        self.services.append(Service("MQTT", stop))
        self.mqtt_listening = True

    def _publish_info(self) -> dict[str, Any]:
        assert self.moto is not None
        info = {
            "api_url": f"http://{_connect_host(self.settings.host)}:{self.settings.http_port}",
            "mqtt_host": _connect_host(self.settings.host),
            "mqtt_port": self.settings.mqtt_port,
            "admin_api_key": self.admin_api_key,
            "s3_endpoint": self.moto.endpoint,
            "dynamodb_endpoint": self.dynamodb.endpoint if self.dynamodb else None,
            # moto (S3, SQS, …) answers only requests signed with these (infra/local/moto_auth.py);
            # DynamoDB Local keeps the tables under this access key id
            "aws_access_key_id": self.aws_access_key_id,
            "aws_secret_access_key": self.aws_secret_key,
        }
        # 0600: it holds the admin key
        write_atomic(self.info_path, (json.dumps(info, indent=2) + "\n").encode(), mode=0o600)
        self.info = info
        return info

    # ------------------------------------------------------------ running

    def healthy(self) -> bool:
        return all(child is not None and child.alive() for child in (self.moto, self.dynamodb))

    def unhealthy_reason(self) -> str:
        for child, log_name in ((self.dynamodb, "dynamodb.log"), (self.moto, "moto.log")):
            if child is None or not child.alive():
                return f"{child.name if child else 'a storage server'} exited unexpectedly (see {self.info_path.parent / log_name})"
        return ""

    def banner(self) -> str:
        assert self.info is not None
        mqtt = (
            f"mqtt://{self.info['mqtt_host']}:{self.info['mqtt_port']}"
            if self.mqtt_listening
            else f"arrives with the connectivity issue (will listen on "
            f"{self.info['mqtt_host']}:{self.info['mqtt_port']})"
        )
        state = (
            f"kept in {self.state.path}"
            if self.state
            else "in memory (set FLEETBOX_STATE_DIR to keep it across restarts)"
        )
        lines = [
            "",
            "Fleetbox local stack is ready",
            f"  API           {self.info['api_url']}   (OpenAPI: {self.info['api_url']}/openapi.json)",
            f"  MQTT broker   {mqtt}",
            f"  Admin key     Authorization: Bearer {self.info['admin_api_key']}",
            f"  DynamoDB      {self.info['dynamodb_endpoint']}   (DynamoDB Local)",
            f"  S3 endpoint   {self.info['s3_endpoint']}   (moto; also SQS, SNS, Kinesis, IoT data)",
            f"  Data          {state}",
            *[f"  {s.name:<13} {s.banner}" for s in self.services if s.banner],
            f"  Details       {self.info_path}",
            "Ctrl-C to stop.",
            "",
        ]
        return "\n".join(lines)

    # ------------------------------------------------------------ stop

    def stop(self) -> None:
        """Stop everything that started, newest first. Safe to call more than once."""
        self.info = None
        if self._owns_info_file:
            self._quietly("remove local.json", lambda: self.info_path.unlink(missing_ok=True))
        if self.http is not None:
            self._quietly("stop the HTTP server", self.http.stop)
            self.http = None
        while self.services:
            service = self.services.pop()
            self._quietly(f"stop {service.name}", service.stop)
        workers, self.workers = self.workers, None
        if workers is not None:
            self._quietly("stop the workers", workers.stop)
        if self.state is not None and self.moto is not None and self.moto.alive() and self.resources:

            def save() -> None:
                assert self.state is not None
                if workers is not None:
                    workers.release_failed_messages()
                saved = self.state.save_pending_messages(self._sqs(), self.resources["queues"])
                if saved:
                    log.info("state: saved %d queued message(s) for the next start", saved)

            self._quietly("save queued messages", save)
        if self.moto is not None:
            self._quietly("stop moto", self.moto.stop)
        if self.dynamodb is not None:
            self._quietly("stop DynamoDB Local", self.dynamodb.stop)
        if self.state is not None:
            self.state.unlock()

    @staticmethod
    def _quietly(what: str, action: Callable[[], Any]) -> None:
        try:
            action()
        except Exception:
            log.exception("could not %s", what)


def configure_logging(stream: Any = None) -> None:
    """Plain, short log lines for the stack's own loggers (the app logs its own way)."""

    class _Formatter(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            record.component = record.name.rsplit(".", 1)[-1]
            return super().format(record)

    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_Formatter("%(asctime)s %(levelname)-7s %(component)-11s %(message)s", "%H:%M:%S"))
    root = logging.getLogger("infra.local")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False
    for noisy in ("botocore", "boto3", "urllib3", "pynamodb"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
