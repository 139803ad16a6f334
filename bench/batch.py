"""Batch benchmark: a 10,000-device batch with QR codes through the real local stack.

Prints, from one run on one machine:
  * wall time end to end: POST /v1/batches → GET shows ``done`` (every chunk, the final CSV and
    ZIP on S3), and what the ZIP holds;
  * DynamoDB write requests the stack issued for it — counted inside the stack process
    (``FLEETBOX_COUNT_AWS_CALLS=1``, botocore's one request choke point), by operation;
  * QR time per code: the batch's renderer (fixed mask, own 1-bit PNG writer) against
    ``qrcode.make`` defaults (8-mask search, PIL image), medians over the same contents;
  * peak memory of the worker: the stack process's VmHWM (it runs the jobs worker, the HTTP
    server and the MQTT broker; moto is a separate process) and its RSS before the batch;
  * the baseline, measured in the same run: the same devices created one conditional PutItem
    at a time (PynamoDB ``save(condition=attribute_not_exists)``, the same record shape) into a
    second product of the same stack, and the ratios.

    .venv/bin/python bench/batch.py [--devices 10000] [--no-qr] [--chunk 500]

The stack's DynamoDB and S3 are moto, Python servers on this same 2-core machine: wall times say
more about moto than about AWS; the request counts carry over.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._stack import dynamodb_calls, start_stack

WRITE_OPS = ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems")
PRODUCT = {
    "category": "custom",
    "device_type": "device",
    "comm_method": "wifi",
    "auth_type": "key",
    "data_protocol": "thing_model",
}


def memory_kb(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            out[key] = int(value.split()[0])
    return out


def qr_times(contents: list[str]) -> tuple[float, float]:
    """Median ms per code: the batch renderer, and qrcode.make defaults, on the same contents."""
    import qrcode

    from chalicelib.media import qr

    ours, base = [], []
    for content in contents:
        t0 = time.perf_counter()
        qr.png(content)
        ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        buf = io.BytesIO()
        qrcode.make(content).save(buf, format="PNG")
        base.append(time.perf_counter() - t0)
    return statistics.median(ours) * 1000, statistics.median(base) * 1000


def baseline(info: dict, pid: str, names: list[str]) -> float:
    """Create the same devices one conditional PutItem each (what a naive loop does); seconds."""
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": info["s3_endpoint"],
            "AWS_ACCESS_KEY_ID": info["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": info["aws_secret_access_key"],
            "AWS_REGION": "us-east-1",
            "FLEETBOX_STAGE": "local",
        }
    )
    os.environ.pop("FLEETBOX_RESOURCE_PREFIX", None)
    from chalicelib.core.config import reload_settings

    reload_settings()
    from chalicelib.models.devices import DeviceRecord
    from chalicelib.models.products import ProductRecord
    from chalicelib.services import devices

    product = ProductRecord.get(pid)
    t0 = time.monotonic()
    for name in names:
        rec = devices.new_record(product, name, None, "bench", "bench")
        rec.save(condition=DeviceRecord.device_name.does_not_exist())
    return time.monotonic() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--chunk", type=int, default=500)
    parser.add_argument("--no-qr", action="store_true")
    parser.add_argument("--qr-sample", type=int, default=200, help="codes timed for the per-code QR figures")
    args = parser.parse_args()
    qr_code = not args.no_qr

    home = Path(tempfile.mkdtemp(prefix="fleetbox-bench-"))
    proc, info = start_stack(
        home, FLEETBOX_DEVICE_QUOTA=str(2 * args.devices + 100), FLEETBOX_BATCH_CHUNK_SIZE=str(args.chunk)
    )
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {info['admin_api_key']}"
    base = info["api_url"]

    def call(method: str, path: str, **kw: object) -> dict:
        resp = session.request(method, base + path, timeout=60, **kw)
        if resp.status_code >= 300:
            raise SystemExit(f"{method} {path}: {resp.status_code} {resp.text[:300]}")
        return resp.json()

    try:
        products = []
        for label in ("Batch", "Baseline"):
            pid = call("POST", "/v1/products", json={**PRODUCT, "name": f"{label} {int(time.time())}"})["product_id"]
            call("POST", f"/v1/products/{pid}/publish")
            products.append(pid)
        time.sleep(1.0)
        calls0, mem0 = dynamodb_calls(home), memory_kb(proc.pid)

        # --- the batch, end to end
        t0 = time.monotonic()
        job = call(
            "POST",
            "/v1/batches",
            json={
                "product_id": products[0],
                "burn_method": "per_device_secret",
                "generation": "auto",
                "quantity": args.devices,
                "qr_code": qr_code,
            },
        )
        while True:
            job = call("GET", f"/v1/batches/{job['id']}?include_secret=true")
            if job["status"] in ("done", "failed"):
                break
            time.sleep(0.5)
        wall = time.monotonic() - t0
        time.sleep(1.0)  # the counter file is rewritten ten times a second
        calls1, mem1 = dynamodb_calls(home), memory_kb(proc.pid)
        by_op = {op: calls1.get(op, 0) - calls0.get(op, 0) for op in WRITE_OPS if calls1.get(op, 0) - calls0.get(op, 0)}
        writes = sum(by_op.values())
        reads = sum(n - calls0.get(op, 0) for op, n in calls1.items() if op not in WRITE_OPS)
        archive = requests.get(job["download_url"], timeout=120).content
        rows = requests.get(job["csv_url"], timeout=120).content.decode().splitlines()[1:]
        names = [r.split(",")[1].lstrip("'") for r in rows]
        contents = []
        if qr_code:
            with zipfile.ZipFile(io.BytesIO(archive)) as zf:
                pngs = sum(1 for n in zf.namelist() if n.endswith(".png"))
            contents = [
                json.dumps({"ProductId": products[0], "DeviceName": n, "Signature": "0" * 64}, separators=(",", ":"))
                for n in names[: args.qr_sample]
            ]
        qr_ms, qr_base_ms = qr_times(contents) if contents else (0.0, 0.0)

        # --- the baseline: the same devices, one conditional PutItem at a time
        base_s = baseline(info, products[1], names)

        print(
            f"\nbatch benchmark: {args.devices} devices, QR codes {'on' if qr_code else 'off'}, chunks of {args.chunk}"
        )
        print(
            f"  status {job['status']}: {job['success_count']} created, {job['failure_count']} failed; "
            f"CSV rows {len(rows)}" + (f"; ZIP {len(archive) / 1e6:.1f} MB, {pngs} PNGs" if qr_code else "")
        )
        print(
            f"  wall time end to end (POST → done, outputs on S3):  {wall:8.1f} s   "
            f"({args.devices / wall:.0f} devices/s)"
        )
        print(
            f"  DynamoDB write requests:                            {writes:8d}   "
            f"({', '.join(f'{op} {n}' for op, n in sorted(by_op.items()))}; plus {reads} reads)"
        )
        if qr_code:
            print(
                f"  QR time per code (median of {len(contents)}):               {qr_ms:8.2f} ms "
                f"(qrcode.make defaults: {qr_base_ms:.2f} ms; ratio {qr_base_ms / max(qr_ms, 1e-9):.1f}x)"
            )
        print(
            f"  worker peak memory (stack process VmHWM):           {mem1['VmHWM'] / 1024:8.1f} MB "
            f"(RSS before the batch {mem0['VmRSS'] / 1024:.1f} MB)"
        )
        print(
            f"  baseline, one conditional PutItem per device:       {base_s:8.1f} s   "
            f"({args.devices} write requests, devices only: no QR, no outputs)"
        )
        print(f"  ratio baseline/batch wall time:                     {base_s / wall:8.2f}")
        print(f"  ratio write requests baseline/batch:                {args.devices / max(writes, 1):8.1f}")
        return 0 if job["status"] == "done" and len(rows) == args.devices else 1
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    raise SystemExit(main())
