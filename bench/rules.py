"""Rule engine benchmark: evaluator throughput and webhook delivery throughput, each beside a
baseline measured in the same run.

1. Evaluator: a rule with three selected fields (one of them a function) and a two-clause
   condition, compiled once, run on a pre-parsed payload — the per-message work the uplink hook
   does (message context, topic-filter match, WHERE, SELECT).  Baseline: ``json.loads`` of the
   same payload (the parse every message pays anyway).  Goal: evaluation costs no more than the
   parse (ratio ≥ 1).
2. Webhooks: signed deliveries per second to a receiver on loopback (another process), through
   the engine's primitive (``webhook.attempt``: SSRF check, SHA1 + Standard Webhooks signatures,
   pooled keep-alive connections, bounded timeouts) — sequentially and with the worker's 10-way
   concurrency.  Baseline: a naive sender opening one connection per request (``requests.post``).

    .venv/bin/python bench/rules.py [--messages 200000] [--deliveries 2000] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("FLEETBOX_ALLOW_LOOPBACK", "true")
os.environ.setdefault("FLEETBOX_LOG_LEVEL", "ERROR")

from chalicelib.services import rules_sql

SQL = (
    "SELECT room1.temperature AS temp, room1.humidity AS hum, upper(house) AS house FROM '/+/data' "
    "WHERE topic(2) = 'device00' AND room1.temperature > 30"
)
PAYLOAD = json.dumps(
    {
        "room1": {"temperature": 31.5, "humidity": 40, "co2": 612},
        "room2": {"temperature": 22.0},
        "house": "h1",
        "ts": 1700000000123,
    }
).encode()
TOPIC = "ABCDEFGHIJ/device00/data"

RECEIVER = r"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # answer at once, as any production HTTP server does
    def log_message(self, *a): pass
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
s = ThreadingHTTPServer(("127.0.0.1", 0), H); s.daemon_threads = True
print(s.server_address[1], flush=True); s.serve_forever()
"""


def median_rate(fn, n: int, runs: int) -> float:
    rates = []
    for _ in range(runs):
        started = time.perf_counter()
        fn(n)
        rates.append(n / (time.perf_counter() - started))
    return statistics.median(rates)


def bench_evaluator(n: int, runs: int) -> None:
    rule = rules_sql.compile_rule(SQL)
    parsed = json.loads(PAYLOAD)
    assert rules_sql.run(rule, TOPIC, PAYLOAD, device_name="device00") == {"temp": 31.5, "hum": 40, "house": "H1"}
    Message = rules_sql.Message

    def evaluate(count: int) -> None:
        for _ in range(count):
            levels = TOPIC.split("/")
            if rule.matches(levels):
                rule.evaluate(parsed, Message("ABCDEFGHIJ", "device00", TOPIC, PAYLOAD, 0, 0, levels=levels))

    def parse(count: int) -> None:
        loads = json.loads
        for _ in range(count):
            loads(PAYLOAD)

    ev = median_rate(evaluate, n, runs)
    js = median_rate(parse, n, runs)
    print(f"evaluator  rule: {SQL}")
    print(f"evaluator  payload: {len(PAYLOAD)} bytes, {n} messages x {runs} runs (medians)")
    print(f"evaluator  rule evaluation:        {ev:12,.0f} msg/s  ({1e6 / ev:.2f} us/msg)")
    print(f"baseline   json.loads of payload:  {js:12,.0f} msg/s  ({1e6 / js:.2f} us/msg)")
    print(
        f"ratio      evaluation / json.loads throughput: {ev / js:.2f}x "
        f"({'meets' if ev >= js else 'misses'} the goal: evaluation costs no more than parsing)"
    )


def bench_webhooks(n: int, runs: int) -> None:
    import requests

    from chalicelib.forwarders import webhook

    proc = subprocess.Popen([sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        url = f"http://127.0.0.1:{port}/hook"
        target = webhook.Target(url=url, token="tok123", secret=webhook.new_secret())
        body = {
            "devicename": "device00",
            "productid": "ABCDEFGHIJ",
            "payload": {"temp": 31.5},
            "seq": 1,
            "timestamp": 1700000000,
            "timemills": 1700000000123,
            "topic": TOPIC,
        }

        def engine(count: int) -> None:
            for i in range(count):
                assert webhook.attempt(target, body, f"msg_{i}").ok

        def engine_concurrent(count: int) -> None:
            with ThreadPoolExecutor(10) as pool:
                assert all(o.ok for o in pool.map(lambda i: webhook.attempt(target, body, f"msg_{i}"), range(count)))

        def naive(count: int) -> None:
            data = json.dumps(body).encode()
            for i in range(count):
                headers = webhook.signed_headers(target, data, f"msg_{i}")
                resp = requests.post(url, data=data, headers=headers, timeout=10)
                assert resp.status_code == 200

        engine(50)
        naive(50)
        e = median_rate(engine, n, runs)
        c = median_rate(engine_concurrent, n, runs)
        b = median_rate(naive, n, runs)
        print(f"webhooks   {n} signed deliveries x {runs} runs to a loopback receiver process (medians)")
        print(f"webhooks   engine (pooled keep-alive), sequential:   {e:10,.0f} deliveries/s")
        print(f"webhooks   engine (pooled keep-alive), 10 workers:   {c:10,.0f} deliveries/s")
        print(f"baseline   naive one connection per request:        {b:10,.0f} deliveries/s")
        print(f"ratio      engine sequential / naive: {e / b:.2f}x; engine 10 workers / naive: {c / b:.2f}x")
    finally:
        proc.terminate()
        proc.wait(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--deliveries", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    bench_evaluator(args.messages, args.runs)
    bench_webhooks(args.deliveries, args.runs)


if __name__ == "__main__":
    main()
