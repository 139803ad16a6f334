"""``python -m infra.local`` (what ``make run`` execs): run the embedded local stack.

Settings (environment): FLEETBOX_HOST (127.0.0.1), FLEETBOX_HTTP_PORT (8000),
FLEETBOX_MQTT_PORT (1883), FLEETBOX_HOME (the repo root; where .fleetbox/local.json goes),
FLEETBOX_STATE_DIR (unset = in memory; `make run` sets .fleetbox/state), FLEETBOX_ADMIN_API_KEY (unset = generated),
FLEETBOX_SCHEDULE_SPEEDUP (1; divides rate() schedule intervals), FLEETBOX_MOTO_PORT and
FLEETBOX_DYNAMODB_PORT (unset = free ports; the endpoints are s3_endpoint and
dynamodb_endpoint in local.json).

SIGINT and SIGTERM stop everything (workers, HTTP, moto, DynamoDB Local) and exit 0.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading

from infra.local.stack import LocalStack, StackError, configure_logging

log = logging.getLogger("infra.local.main")


class _Interrupted(BaseException):
    """Raised by the signal handler when a signal arrives during start-up."""


def main() -> int:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    configure_logging()
    stop = threading.Event()
    phase = {"starting": True}

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()
        if phase["starting"]:
            phase["starting"] = False  # a second signal during the clean-up does not interrupt it
            raise _Interrupted(signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    stack: LocalStack | None = None
    code = 0
    try:
        stack = LocalStack.from_env()
        stack.start()
        phase["starting"] = False
        print(stack.banner(), flush=True)
        while not stop.wait(1.0):
            if not stack.healthy():
                log.error("%s; stopping", stack.unhealthy_reason())
                code = 1
                break
    except _Interrupted:
        pass
    except StackError as exc:
        log.error("%s", exc)
        code = 1
    except Exception:
        log.exception("the local stack failed to start")
        code = 1
    finally:
        phase["starting"] = False
        if stack is not None:
            log.info("stopping…")
            stack.stop()
            log.info("stopped")
    return code


if __name__ == "__main__":
    sys.exit(main())
