"""schemathesis against /openapi.json on the real local stack (property-based API run).

Checks: no 5xx, every status code documented, every response body valid against its
schema, and the documented content type.  Negative-data checks are not used: the API
refuses more than the JSON Schema can express (e.g. SPEC §1 name rules), which is fine.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def test_schemathesis_finds_no_5xx_and_no_schema_violation(stack_factory, tmp_path: Path):
    # a stack of its own: the fuzzer deletes what it finds, the admin key included
    local_stack = stack_factory(home=tmp_path / "fuzz-home").info
    api = local_stack["api_url"]
    cli = Path(sys.executable).with_name("schemathesis")
    env = dict(os.environ, SCHEMATHESIS_HOOKS="", NO_COLOR="1")
    done = subprocess.run(
        [str(cli), "run", f"{api}/openapi.json", "--url", api,
         "-H", f"Authorization: Bearer {local_stack['admin_api_key']}",
         "--checks", CHECKS, "--max-examples", os.environ.get("FLEETBOX_FUZZ_EXAMPLES", "30"),
         "--phases", "examples,coverage,fuzzing,stateful", "--workers", "2",
         "--seed", "20261122", "--request-timeout", "20", "--no-color"],
        capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    report = done.stdout[-8000:] + done.stderr[-4000:]
    assert done.returncode == 0, report
    assert "No issues found" in done.stdout or "passed" in done.stdout, report
