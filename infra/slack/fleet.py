"""Talk to a Fleetbox stack the way Slack does, from a terminal: ``python -m infra.slack.fleet``.

Posts a ``/fleet`` command (or a button click) as a form signed with the app's signing secret
(``X-Slack-Signature: v0=`` hex HMAC-SHA256 of ``v0:{timestamp}:{body}``, the secret from
``FLEETBOX_SLACK_SIGNING_SECRET``) to the stack in ``.fleetbox/local.json`` (or ``--api``), and
prints the answer as Slack would show it (its plain-text fallback) with the buttons' values.
With ``--follow SECONDS`` it also listens on a loopback port given as the ``response_url`` and
prints what Fleetbox posts there later (progress, download links), stopping early once a post
matches ``--until``.

    python -m infra.slack.fleet say "device show ABCDEFGHIJ/lamp01"
    python -m infra.slack.fleet say "batch create ABCDEFGHIJ 3" --button fleet.confirm   # prints its value
    python -m infra.slack.fleet click <value> --follow 60 --until Download
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import html
import json
import os
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode


def _api(given: str | None) -> str:
    if given:
        return given.rstrip("/")
    info = json.loads((Path(os.environ.get("FLEETBOX_HOME", ".")) / ".fleetbox" / "local.json").read_text())
    return str(info["api_url"]).rstrip("/")


def sign(secret: str, body: bytes, ts: int) -> dict[str, str]:
    mac = hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": str(ts),
        "X-Slack-Signature": f"v0={mac}",
    }


def shown(message: dict[str, Any]) -> str:
    """The message as a person reads it: its fallback text, then its buttons."""
    lines = [html.unescape(str(message.get("text", "")))]
    for block in message.get("blocks", []):
        for el in block.get("elements", []) if block.get("type") == "actions" else []:
            confirm = el.get("confirm", {}).get("text", {}).get("text")
            lines.append(
                f"[{el['text']['text']}] {el['action_id']}={el.get('value')}"
                + (f" (asks: {html.unescape(confirm)})" if confirm else "")
            )
    return "\n".join(line for line in lines if line)


class _Hooks:
    """A loopback stand-in for Slack's response_url: collects what Fleetbox posts."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.arrived = threading.Condition()
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with hooks.arrived:
                    hooks.posts.append(json.loads(raw or b"{}"))
                    hooks.arrived.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/response"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m infra.slack.fleet", description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("say", "click", "cancel"))
    ap.add_argument("text", help="the words after /fleet, or the button value to click")
    ap.add_argument("--api", help="the stack's base URL (default: .fleetbox/local.json's api_url)")
    ap.add_argument("--team", default=os.environ.get("SLACK_TEAM", "T0FLEET01"))
    ap.add_argument("--channel", default=os.environ.get("SLACK_CHANNEL", "C0OPS0001"))
    ap.add_argument("--user", default=os.environ.get("SLACK_USER", "U0ADMIN01"))
    ap.add_argument("--name", default="", help="the user's display name (Slack sends one)")
    ap.add_argument("--button", help="print only the value of this button (for scripts)")
    ap.add_argument("--follow", type=float, default=0, help="listen this many seconds for response_url posts")
    ap.add_argument("--until", help="stop following once a post's text matches this regex")
    ap.add_argument("--json", action="store_true", help="print the raw Block Kit JSON")
    args = ap.parse_args(argv)
    secret = os.environ.get("FLEETBOX_SLACK_SIGNING_SECRET")
    if not secret:
        print("set FLEETBOX_SLACK_SIGNING_SECRET (the one the stack was started with)", file=sys.stderr)
        return 2
    hooks = _Hooks()
    if args.what == "say":
        path = "/chat/slack/commands"
        body = urlencode({"team_id": args.team, "channel_id": args.channel, "user_id": args.user,
                          "user_name": args.name, "command": "/fleet", "text": args.text,
                          "response_url": hooks.url}).encode()  # fmt: skip
    else:
        path = "/chat/slack/interactions"
        payload = {
            "type": "block_actions", "team": {"id": args.team}, "user": {"id": args.user, "username": args.name},
            "channel": {"id": args.channel}, "response_url": hooks.url,
            "actions": [{"action_id": f"fleet.{'confirm' if args.what == 'click' else 'cancel'}", "value": args.text}],
        }  # fmt: skip
        body = urlencode({"payload": json.dumps(payload)}).encode()
    import requests

    api = _api(args.api)
    if not api.startswith(("http://", "https://")):
        print(f"not an http(s) API URL: {api}", file=sys.stderr)
        return 2
    resp = requests.post(api + path, data=body, headers=sign(secret, body, int(time.time())), timeout=30)
    if resp.status_code != 200:
        print(f"HTTP {resp.status_code}: {resp.text}", file=sys.stderr)
        return 1
    answer = resp.json() if resp.content else {}
    if not args.button:
        action = f"/fleet {args.text}" if args.what == "say" else f"[{args.what}] clicked"
        print(f"» {args.user}: {action}")
    if args.button:
        value = re.search(rf"{re.escape(args.button)}=(\S+)", shown(answer))
        print(value.group(1) if value else "")
        return 0 if value else 1
    if args.what == "say":
        print(json.dumps(answer, indent=1) if args.json else shown(answer))
    # Slack shows a click's outcome only through the response_url (it ignores the HTTP body)
    follow = args.follow or (5.0 if args.what != "say" else 0.0)
    deadline = time.monotonic() + follow
    seen = 0
    with hooks.arrived:
        while time.monotonic() < deadline:
            hooks.arrived.wait(timeout=max(0.0, deadline - time.monotonic()))
            for post in hooks.posts[seen:]:
                if args.what == "say":
                    print("-- later, via response_url:")
                print(json.dumps(post, indent=1) if args.json else shown(post))
                if (args.until and re.search(args.until, shown(post))) or (args.what != "say" and not args.until):
                    deadline = 0
            seen = len(hooks.posts)
    if args.what != "say" and not hooks.posts:
        print(f"(nothing posted within {follow:g} s: the click was already handled)")
    hooks.server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
