"""The README's curl walkthrough, run for real against the local stack.

Every ```sh block of the "Driving it with curl" section runs, in order, in one bash
with `set -e`, from a directory holding the stack's `.fleetbox/local.json` — exactly as
a newcomer would paste them.  Commands using `curl -sf` fail the script on any HTTP error.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def walkthrough_blocks() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Driving it with curl", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


def test_the_readme_has_a_walkthrough():
    blocks = walkthrough_blocks()
    assert len(blocks) >= 5
    assert all("curl" in b or "local.json" in b for b in blocks)


def test_every_readme_curl_example_works(local_stack_process):
    script = (
        "set -euo pipefail\n" + "\n".join(walkthrough_blocks()) + ('\necho "PID=$PID CPID=$CPID PARTNER=$PARTNER"\n')
    )
    # run where local.json is, with the repo's interpreter and packages, as `make run` users do
    env = dict(os.environ, PY=sys.executable, PYTHONPATH=str(REPO_ROOT))
    done = subprocess.run(
        ["bash", "-c", script], cwd=local_stack_process.home, capture_output=True, text=True, timeout=180, env=env
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    out = done.stdout
    # the documented refusals really happen, with the documented codes
    assert '"code":"InvalidParameterValue.ModelDefineInvalid"' in out
    assert '"code":"UnauthorizedOperation"' in out
    # the Tencent Cloud SDK snippet: the partner's pair lists and reads, and is refused a delete
    assert "SDK described lamp-0001" in out and "SDK refused: UnauthorizedOperation.PermissionDenied" in out
    # and the partner's key sees exactly the one product
    pid = re.search(r"PID=(\w{10})", out).group(1)
    assert f'"product_id":"{pid}"' in out
    assert "lamp-0001" in out
    # the simulated MQTT devices reported, and their values are served
    assert '"device_name":"sim00000"' in out or "sim00000" in out
    assert '"brightness"' in out
    # the video walkthrough: Invoke finished a still, a refusal named its code, the callback was POSTed
    assert '"Completed":true' in out and '"DetectedClassifications\\": [\\"person\\"]' in out
    assert '"code":"InvalidParameterValue.StartInvalid"' in out and '"field":"StartTime"' in out
    assert out.count('"MsgType":"ai_analytics_result"') >= 2
    # alerts in chat: the fence alarm reached the Feishu bot as a signed interactive card
    card = next(line for line in out.splitlines() if '"msg_type":"interactive"' in line)
    assert "truck1 entered fence depot" in card and '"sign":' in card and '"timestamp":' in card


def slack_blocks() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Run it from Slack", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


def test_the_readme_slack_session_runs(local_stack_process):
    """The "Run it from Slack" blocks, signed by the stand-in with the secret the stack was given."""
    from tests.e2e.stack import SLACK_SIGNING_SECRET

    blocks = slack_blocks()
    assert len(blocks) >= 5
    env = dict(
        os.environ, PY=sys.executable, PYTHONPATH=str(REPO_ROOT), FLEETBOX_SLACK_SIGNING_SECRET=SLACK_SIGNING_SECRET
    )
    done = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + "\n".join(blocks)],
        cwd=local_stack_process.home, capture_output=True, text=True, timeout=180, env=env,
    )  # fmt: skip
    assert done.returncode == 0, f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    out = done.stdout
    assert "You are not set up to run Fleetbox commands" in out  # before the mapping
    assert 'Sent {"power_switch": 1}' in out and "usage: /fleet device show" in out
    assert "does not allow ModifyDevice" in out and "does not allow CreateBatchProduction" in out
    assert "creates 3 devices" in out and re.search(r"Download \(link valid until", out)
    assert "the click was already handled" in out
    assert '"result":"Success"' in out and '"result":"UnauthorizedOperation"' in out
