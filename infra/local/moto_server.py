"""moto server as a child process of the local stack (see ``infra/local/child.py``)."""

from __future__ import annotations

import sys
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from infra.local.child import ChildServer


class MotoServer(ChildServer):
    """One ``python -m moto.server`` child; optionally with moto's request recorder."""

    name = "moto server"
    port_setting = "FLEETBOX_MOTO_PORT"

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        port: int | None = None,
        recording_path: Path | None = None,
        log_path: Path | None = None,
        secret_key: str,
    ) -> None:
        super().__init__(host, port=port, log_path=log_path)
        #: the key every request must be signed with (infra/local/moto_auth.py)
        self.secret_key = secret_key
        self.recording_path = recording_path

    def command(self) -> list[str]:
        return [sys.executable, "-m", "infra.local.moto_fast", "-H", self.host, "-p", str(self.port)]

    def workdir(self) -> Path:
        return Path(__file__).resolve().parents[2]  # infra.local.moto_fast is importable

    def environment(self) -> Mapping[str, str]:
        env = dict(super().environment())
        # Recording is switched on explicitly (start_recording) once replay is done, so
        # neither readiness probes nor a replay end up in the recording.
        env.pop("MOTO_ENABLE_RECORDING", None)
        env["FLEETBOX_MOTO_SECRET"] = self.secret_key
        if self.recording_path is not None:
            env["MOTO_RECORDER_FILEPATH"] = str(self.recording_path)
        else:
            env.pop("MOTO_RECORDER_FILEPATH", None)
        return env

    def ready(self) -> bool:
        # cheap, never recorded (recorder paths are excluded), harmless
        self._moto_api("stop-recording", timeout=1)
        return True

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
