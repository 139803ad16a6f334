"""schemathesis against /openapi.json on the real local stack (property-based API run).

Checks: no 5xx, every status code documented, every response body valid against its
schema, and the documented content type.  Negative-data checks are not used: the API
refuses more than the JSON Schema can express (e.g. the name rules), which is fine.

The operations are fuzzed in three groups by path, as three single-worker processes side by
side: schemathesis' own worker threads can crash CPython 3.11's AST constructor
("SystemError: AST constructor recursion depth mismatch") while every case passed, and the run
waits on the stack far more than it computes.  A group whose run reports only such an error of
the fuzzer itself (no failed check) is run once more; a failed check fails the test at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
#: disjoint path groups, together every operation
GROUPS = {
    "products": ["--include-path-regex", r"^/v1/products"],
    "ota-and-production": ["--include-path-regex", r"^/v1/(firmware|ota|resource|batches|bindings|users)"],
    "rest": ["--exclude-path-regex", r"^/v1/(products|firmware|ota|resource|batches|bindings|users)"],
}


def _command(api: str, key: str, group: list[str]) -> list[str]:
    cli = Path(sys.executable).with_name("schemathesis")
    return [
        str(cli),
        "run",
        f"{api}/openapi.json",
        "--url",
        api,
        "-H",
        f"Authorization: Bearer {key}",
        "--checks",
        CHECKS,
        "--max-examples",
        os.environ.get("FLEETBOX_FUZZ_EXAMPLES", "30"),
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--workers",
        "1",
        *group,
        "--seed",
        "20261122",
        "--request-timeout",
        "20",
        "--no-color",
    ]


def _fuzzer_crash_only(code: int, out: str) -> bool:
    """The run failed, but only on an error inside schemathesis/hypothesis, not a product finding."""
    return code != 0 and "Runtime Error" in out and "Failures:" not in out and "❌" not in out


def test_schemathesis_finds_no_5xx_and_no_schema_violation(stack_factory, tmp_path: Path):
    # a stack of its own: the fuzzer deletes what it finds, the admin key included
    local_stack = stack_factory(home=tmp_path / "fuzz-home").info
    env = dict(os.environ, SCHEMATHESIS_HOOKS="", NO_COLOR="1")
    results: dict[str, tuple[int, str]] = {}
    pending = dict(GROUPS)
    for _attempt in range(2):
        running = {
            name: subprocess.Popen(
                _command(local_stack["api_url"], local_stack["admin_api_key"], group),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
                cwd=tmp_path,
            )
            for name, group in pending.items()
        }
        for name, proc in running.items():
            out, _ = proc.communicate(timeout=900)
            results[name] = (proc.returncode, out)
        pending = {name: GROUPS[name] for name, (code, out) in results.items() if _fuzzer_crash_only(code, out)}
        if not pending:
            break
    for name, (code, out) in results.items():
        assert code == 0, f"group {name}:\n{out[-8000:]}"
        assert "passed" in out and "generated" in out, f"group {name}:\n{out[-8000:]}"
