"""Uplink benchmark: ≥ 1,000 simulated MQTT devices through the real local stack.

Prints, from one run on one machine:
  * reply latency p50/p95 at the offered rate (default 1,000 devices × 0.03/s = 30 reports/s):
    from the device's publish to its ``report_reply`` (broker → bridge → uplink handler →
    DynamoDB → reply through the broker);
  * DynamoDB requests **and capacity units** per report in that window — counted inside the stack
    process (botocore's one request choke point, ``FLEETBOX_COUNT_AWS_CALLS=1``; DynamoDB's own
    ``ConsumedCapacity``, table plus indexes, transactions doubled as AWS bills them), the
    difference over the window divided by the reports processed in it;
  * processed reports/s saturated: the same fleet then offered ``--saturate`` reports per device
    per second, counted by replies received;
  * the baseline: the same broker code (``LocalBroker.bare()``: no authorizer, no bridge) carrying
    the same fleet's publish → subscribe traffic (each device subscribed to its own report topic),
    measured in the same run, and the ratio between the two.

    .venv/bin/python bench/uplink.py [--devices 1000] [--rate 0.03] [--saturate 0.4] [--seconds 30] [--gps]

``--gps``: every report also carries ``GPS_Info`` (a parked fleet, ~10 m of jitter) and every device
is bound to a fence 5 km away (a circle, and a polygon with a hole): the location stage and the
fence engine run on every report and cross nothing — the requests per report must not change.

DynamoDB is DynamoDB Local (SQLite on disk) on this same 2-core machine, beside the broker, the
handlers and the simulator: the absolute rates are this machine's; the units per report carry over
to AWS.
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

from bench._stack import dynamodb_calls, dynamodb_units, dynamodb_units_by_table, start_stack
from chalicelib.services.thing_model import standard_feature
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
HOME = (60.0, 10.0)


def far_fences(api: Api, pid: str, names: list[str]) -> None:
    """A space with a circle and a holed polygon 5 km from HOME, every device bound to both."""
    sid = api.call("POST", "/v1/spaces", json={"name": "bench", "products": [pid]})["space_id"]
    devices = [{"product_id": pid, "device_name": n} for n in names]
    lat, lon = HOME[0] + 0.045, HOME[1]
    ring = [[lon - 0.01, lat - 0.005], [lon + 0.01, lat - 0.005], [lon + 0.01, lat + 0.005], [lon - 0.01, lat + 0.005]]
    hole = [
        [lon - 0.002, lat - 0.001],
        [lon + 0.002, lat - 0.001],
        [lon + 0.002, lat + 0.001],
        [lon - 0.002, lat + 0.001],
    ]
    fences = [
        {"name": "circle", "type": "circle", "circle": {"lat": lat, "lon": lon, "radius": 300}},
        {
            "name": "yard",
            "type": "polygon",
            "polygon": {"type": "Polygon", "coordinates": [ring + ring[:1], hole + hole[:1]]},
        },
    ]
    for fence in fences:
        api.call("POST", f"/v1/spaces/{sid}/fences", json={**fence, "devices": devices})


def measure(sim: Simulator, seconds: float, counter: str, settle: float = 5.0) -> tuple[float, int]:
    """Run ``seconds`` after ``settle`` seconds of warm-up; return (per second, count)."""
    time.sleep(settle)  # warm-up: connections settle, queues fill
    start_count, t0 = sim.stats()[counter], time.monotonic()
    time.sleep(seconds)
    count, elapsed = sim.stats()[counter] - start_count, time.monotonic() - t0
    return count / elapsed, count


def delta(after: dict, before: dict) -> dict:
    return {op: n - before.get(op, 0) for op, n in after.items() if n - before.get(op, 0)}


WRITES = ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems")


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
    parser.add_argument(
        "--saturate",
        type=float,
        default=0.4,
        help="reports per device per second offered for the saturated figure (more than the stack carries)",
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="measured window per run")
    parser.add_argument("--window", type=float, default=1.0, help="uplink batching window (AWS: 1 s)")
    parser.add_argument("--gps", action="store_true", help="reports carry GPS_Info; far fences bound to every device")
    parser.add_argument(
        "--settle",
        type=float,
        default=45.0,
        help="seconds between the last connect and the measured window: the connects' presence "
        "writes are drained and every device has sent its first report (which notes its topic "
        "form on its record, once), so the window counts the steady report path",
    )
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="fleetbox-bench-"))
    # re-authorising 1,000 sessions every minute would add its reads to the count
    # the bridge gathers batches for 1 s, as the AWS event source does (infra/aws/resources.yaml:
    # MaximumBatchingWindowInSeconds): the analytics counters are paid per batch, not per report
    proc, info = start_stack(
        home,
        FLEETBOX_DEVICE_QUOTA=str(args.devices + 100),
        FLEETBOX_MQTT_REAUTH_S="3600",
        FLEETBOX_UPLINK_WINDOW_S=str(args.window),
    )
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
        gps_info = {k: v for k, v in (standard_feature("GPS_Info") or {}).items() if k != "kind"}
        model = {**MODEL, "properties": MODEL["properties"] + ([gps_info] if args.gps else [])}
        api.call("PUT", f"/v1/products/{pid}/thing-model", json=model)
        t0 = time.monotonic()
        creds = load_devices(api, pid, args.devices, create=True, prefix="bench")
        print(f"created {len(creds)} devices in {time.monotonic() - t0:.1f} s")
        if args.gps:
            far_fences(api, pid, [c.device_name for c in creds])

        # --- the baseline: the same broker code, bare, the same fleet, offered more than it carries
        bare = LocalBroker.bare("127.0.0.1", 0)
        bare.start()
        sim = Simulator(creds, "127.0.0.1", bare.port, model=MODEL, rate=args.bare_rate, echo=True)
        if not sim.start(timeout=180):
            raise SystemExit(f"bare broker: not every device connected: {sim.stats()}")
        base_rate, base_count = measure(sim, args.seconds, "echoes_received")
        sim.stop()
        bare.stop()

        # --- the stack: authorizer, ACL, bridge, uplink handler, DynamoDB, replies
        sim = Simulator(
            creds,
            info["mqtt_host"],
            info["mqtt_port"],
            model=MODEL,
            rate=args.rate,
            params=1,
            gps=HOME if args.gps else None,
        )
        t0 = time.monotonic()
        if not sim.start(timeout=300):
            raise SystemExit(f"stack: not every device connected: {sim.stats()}")
        connect_s = time.monotonic() - t0
        time.sleep(args.settle)
        # the counters and the replies are read at the same moments (the stack rewrites its counter
        # file every 0.1 s), so requests and units are divided by the replies of the same span
        replies0 = sim.stats()["report_replies"]
        calls0, units0, tables0 = dynamodb_calls(home), dynamodb_units(home), dynamodb_units_by_table(home)
        sim.reset_latencies()
        rate, _ = measure(sim, args.seconds, "report_replies", settle=0)
        latency = sim.stats().get("reply_latency_ms")
        count = sim.stats()["report_replies"] - replies0
        by_op = delta(dynamodb_calls(home), calls0)
        units = delta(dynamodb_units(home), units0)
        tables = {
            table: sum(u for op, u in delta(ops, tables0.get(table, {})).items() if op in WRITES)
            for table, ops in dynamodb_units_by_table(home).items()
        }
        calls, write_units = sum(by_op.values()), sum(u for op, u in units.items() if op in WRITES)
        read_units = sum(u for op, u in units.items() if op not in WRITES)

        sim.rate = args.saturate  # each device picks the new rate up at its next report
        sat_rate, sat_count = measure(sim, args.seconds, "report_replies", settle=15)
        stats = sim.stats()
        sim.stop()

        offered = args.devices * args.rate
        print(
            f"\nuplink benchmark: {args.devices} devices, one-property reports"
            f"{' + GPS_Info (2 far fences bound to every device)' if args.gps else ''}, {args.seconds:.0f} s windows, "
            f"uplink batches gathered for {args.window:g} s"
        )
        print(f"  stack: connected {args.devices} devices in {connect_s:.1f} s (authorizer + presence per device)")
        print(
            f"  at {offered:.0f} reports/s offered: {rate:.1f}/s processed ({count} replies); "
            f"reply latency p50 {latency and latency['p50']} ms, p95 {latency and latency['p95']} ms"
        )
        print(
            f"  DynamoDB requests per report:                            {calls / max(count, 1):8.2f}   "
            f"({', '.join(f'{op} {n}' for op, n in sorted(by_op.items()))})"
        )
        print(
            f"  DynamoDB write units per report:                         {write_units / max(count, 1):8.2f}   "
            f"({', '.join(f'{op} {u:g}' for op, u in sorted(units.items()) if op in WRITES)})"
        )
        print(
            "    by table: "
            + ", ".join(f"{t} {u / max(count, 1):.2f}" for t, u in sorted(tables.items(), key=lambda x: -x[1]) if u)
        )
        batch_share = tables.get("counters", 0.0)
        print(
            f"    the report's own writes (everything but the batch's counters):  "
            f"{(write_units - batch_share) / max(count, 1):.2f};  the counters, one update per product per "
            f"batch, amortised: {batch_share / max(count, 1):.2f}"
        )
        print(f"  DynamoDB read units per report:                          {read_units / max(count, 1):8.2f}")
        print(
            f"  processed reports/s saturated ({args.devices * args.saturate:.0f}/s offered):       "
            f"{sat_rate:8.1f}   ({sat_count} in the window; report errors {stats['report_errors']})"
        )
        print(
            f"  baseline, same broker bare, publish→subscribe msgs/s:    {base_rate:8.1f}   ({base_count} in the window)"
        )
        print(f"  ratio saturated stack/bare:                              {sat_rate / max(base_rate, 1e-9):8.3f}")
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
