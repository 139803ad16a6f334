"""Cold-start import cost of the Lambda entry module, against `import boto3`.

Every Lambda function in the bundle imports `app` before its first event, so the time to
import it is paid on every cold start of every route and worker. Each figure is the median of
fresh interpreter processes; the three commands run interleaved (app, boto3, floor, app, ...)
so machine noise hits them alike. `python -c pass` is the interpreter floor, subtracted to
give net import costs. Then `-X importtime` lists the modules that cost the most, so a
regression can be traced to the import that caused it.

Run: .venv/bin/python bench/cold_start.py [rounds]   (make bench runs it too)
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 9
COMMANDS = {
    "app": "import app",
    "boto3": "import boto3",
    "floor": "pass",
}


def lambda_like_env() -> dict[str, str]:
    """The prod stage's environment, with AWS made unreachable: importing must not call AWS,
    and if it does the import fails fast here instead of timing a network round trip."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FLEETBOX_"))}
    env.update(
        FLEETBOX_STAGE="prod",
        FLEETBOX_BUCKET="fleetbox-prod-files-000000000000",
        POWERTOOLS_SERVICE_NAME="fleetbox",
        POWERTOOLS_METRICS_NAMESPACE="Fleetbox",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_ENDPOINT_URL="http://127.0.0.1:9",  # discard port: nothing listens
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


def run_once(code: str, env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"`python -c {code!r}` failed:\n{proc.stderr[-3000:]}")
    return elapsed * 1000


def top_imports(env: dict[str, str], count: int = 10) -> list[tuple[int, int, str]]:
    """(cumulative µs, self µs, module) of the costliest imports under `import app`."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import app"], cwd=REPO, env=env, capture_output=True, text=True
    )
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        own, cumulative, module = line[len("import time:") :].split("|", 2)
        rows.append((int(cumulative), int(own), module.rstrip()))
    return sorted(rows, reverse=True)[:count]


def main() -> int:
    if ROUNDS < 7:
        sys.exit("use at least 7 rounds")
    env = lambda_like_env()
    for code in COMMANDS.values():  # warm-up: bytecode caches and the page cache
        run_once(code, env)
    samples: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(ROUNDS):
        for name, code in COMMANDS.items():
            samples[name].append(run_once(code, env))

    median = {name: statistics.median(values) for name, values in samples.items()}
    floor = median["floor"]
    net = {name: median[name] - floor for name in ("app", "boto3")}
    print(f"cold start: median of {ROUNDS} fresh processes each, interleaved (Python {sys.version.split()[0]})")
    print(f"  {'command':<26}{'median':>10}{'min':>10}{'max':>10}{'net':>10}")
    for name, code in COMMANDS.items():
        values = samples[name]
        net_text = f"{net[name]:8.1f}ms" if name in net else ""
        print(
            f"  {'python -c ' + repr(code):<26}{median[name]:8.1f}ms"
            f"{min(values):8.1f}ms{max(values):8.1f}ms{net_text:>10}"
        )
    ratio = net["app"] / net["boto3"] if net["boto3"] > 0 else float("nan")
    print(f"  ratio app/boto3 (net of the floor): {ratio:.2f}x   (gross: {median['app'] / median['boto3']:.2f}x)")

    print("\ntop 10 imports by cumulative time under `import app` (-X importtime, one run):")
    print(f"  {'cumulative':>12}{'self':>10}  module")
    for cumulative, own, module in top_imports(env):
        print(f"  {cumulative / 1000:10.1f}ms{own / 1000:8.1f}ms  {module}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
