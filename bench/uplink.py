"""Uplink benchmark: ≥ 1,000 simulated MQTT devices through the real local stack.

Prints, from one run on one machine:
  * processed reports per second end to end — a report counts when its ``report_reply`` came
    back to the device (broker → bridge → uplink handler → DynamoDB → reply through the broker);
  * DynamoDB requests per report — counted inside the stack process (botocore's one request
    choke point, ``FLEETBOX_COUNT_AWS_CALLS=1``), the difference over the measured window
    divided by the reports processed in it;
  * the baseline: the same broker code (``LocalBroker.bare()``: no authorizer, no bridge) carrying
    the same fleet's publish → subscribe traffic (each device subscribed to its own report topic),
    measured in the same run, and the ratio between the two.

    .venv/bin/python bench/uplink.py [--devices 1000] [--rate 0.03] [--seconds 30] [--settle 60]

The stack's DynamoDB is moto, a Python server on this same 2-core machine: the absolute rate says
more about moto than about DynamoDB; the requests-per-report figure carries over to AWS.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._stack import dynamodb_calls, start_stack
from infra.local.broker import LocalBroker
from infra.local.simulate import Api, Simulator, load_devices

MODEL = {
    "version": "1.0",
    "properties": [
        {
            "id": "power_switch",
            "name": "Power",
            "mode": "rw",
            "define": {"type": "bool", "mapping": {"0": "off", "1": "on"}},
        },
        {
            "id": "brightness",
            "name": "Brightness",
            "mode": "rw",
            "define": {"type": "int", "min": "0", "max": "100", "step": "1"},
        },
        {
            "id": "temperature",
            "name": "Temp",
            "mode": "r",
            "define": {"type": "float", "min": "-40", "max": "85", "step": "0.1"},
        },
    ],
    "events": [],
    "actions": [],
}


def measure(
    sim: Simulator, seconds: float, counter: str, before_window=None, settle: float = 5.0
) -> tuple[float, int, float]:
    """Run ``seconds`` after ``settle`` seconds of warm-up; return (per second, count, elapsed)."""
    time.sleep(settle)  # warm-up: connections settle, queues fill
    start_count, t0 = sim.stats()[counter], time.monotonic()
    if before_window:
        before_window()
    time.sleep(seconds)
    count, elapsed = sim.stats()[counter] - start_count, time.monotonic() - t0
    return count / elapsed, count, elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=0.03, help="reports per device per second offered")
    parser.add_argument(
        "--bare-rate",
        type=float,
        default=5.0,
        help="reports per device per second offered to the bare broker (its capacity, not ours)",
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="measured window per run")
    parser.add_argument(
        "--settle",
        type=float,
        default=60.0,
        help="seconds between the last connect and the measured window, so the 1,000 "
        "connects' presence writes are drained and only the report path is counted",
    )
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="fleetbox-bench-"))
    # re-authorising 1,000 sessions every minute would add its reads to the count
    proc, info = start_stack(home, FLEETBOX_DEVICE_QUOTA=str(args.devices + 100), FLEETBOX_MQTT_REAUTH_S="3600")
    try:
        api = Api(info["api_url"], info["admin_api_key"])
        pid = api.call(
            "POST",
            "/v1/products",
            json={
                "name": f"Bench {int(time.time())}",
                "category": "custom",
                "device_type": "device",
                "comm_method": "wifi",
                "auth_type": "key",
                "data_protocol": "thing_model",
            },
        )["product_id"]
        api.call("PUT", f"/v1/products/{pid}/thing-model", json=MODEL)
        t0 = time.monotonic()
        creds = load_devices(api, pid, args.devices, create=True, prefix="bench")
        print(f"created {len(creds)} devices in {time.monotonic() - t0:.1f} s")

        # --- the baseline: the same broker code, bare, the same fleet, offered more than it carries
        bare = LocalBroker.bare("127.0.0.1", 0)
        bare.start()
        sim = Simulator(creds, "127.0.0.1", bare.port, model=MODEL, rate=args.bare_rate, echo=True)
        if not sim.start(timeout=180):
            raise SystemExit(f"bare broker: not every device connected: {sim.stats()}")
        base_rate, base_count, _ = measure(sim, args.seconds, "echoes_received")
        sim.stop()
        bare.stop()

        # --- the stack: authorizer, ACL, bridge, uplink handler, DynamoDB, replies
        sim = Simulator(creds, info["mqtt_host"], info["mqtt_port"], model=MODEL, rate=args.rate)
        t0 = time.monotonic()
        if not sim.start(timeout=300):
            raise SystemExit(f"stack: not every device connected: {sim.stats()}")
        connect_s = time.monotonic() - t0
        window: dict[str, dict[str, int]] = {}
        rate, count, _ = measure(
            sim,
            args.seconds,
            "report_replies",
            settle=args.settle,
            before_window=lambda: window.setdefault("calls", dynamodb_calls(home)),
        )
        time.sleep(1.0)  # let the counter file catch up with the last replies
        after = dynamodb_calls(home)
        by_op = {op: n - window["calls"].get(op, 0) for op, n in after.items() if n - window["calls"].get(op, 0)}
        calls = sum(by_op.values())
        stats = sim.stats()
        sim.stop()

        offered = args.devices * args.rate
        print(
            f"\nuplink benchmark: {args.devices} devices, {args.rate}/s each ({offered:.0f} reports/s offered), "
            f"{args.seconds:.0f} s windows"
        )
        print(f"  stack: connected {args.devices} devices in {connect_s:.1f} s (authorizer + presence per device)")
        print(
            f"  processed reports/s end to end (report_reply received): {rate:8.1f}   ({count} in the window; "
            f"report errors {stats['report_errors']}; reply latency {stats.get('reply_latency_ms')})"
        )
        print(
            f"  DynamoDB requests per processed report:                  {calls / max(count, 1):8.2f}   "
            f"({calls} requests in the window: {', '.join(f'{op} {n}' for op, n in sorted(by_op.items()))})"
        )
        print(
            f"  baseline, same broker bare, publish→subscribe msgs/s:    {base_rate:8.1f}   ({base_count} in the window)"
        )
        print(f"  ratio stack/bare:                                        {rate / max(base_rate, 1e-9):8.3f}")
        print(
            f"  (bare broker offered {args.devices * args.bare_rate:.0f} msgs/s; on 2 shared cores the simulator "
            "itself may be its limit, so the ratio is an upper bound on the stack's share)"
        )
        return 0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    raise SystemExit(main())
