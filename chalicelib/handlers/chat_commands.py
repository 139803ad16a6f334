"""The ``/fleet`` command set (SPEC §12): one grammar, one table of commands, small renderers.

A command line is split with :mod:`shlex` and matched against :data:`COMMANDS`, each entry a
declarative :class:`Spec` (its words, typed arguments and flags, usage, examples).  Every
command calls the product through :class:`Run.call`, i.e. ``api.invoke`` as the chat user's
principal, so the policy engine decides it exactly as it decides the HTTP route.  Commands that
destroy or cost something answer an :class:`Ask` (a confirmation with its blast radius) instead
of running; slow ones are marked ``slow`` and run on the jobs queue.

Renderers show a whitelist of fields: nothing a route returns reaches a chat message unless it
is named here, so a secret can never slip through a new response field.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core import clock, errors
from ..core.auth import Principal
from ..protocol.chat import Image, Message, Where, Who
from ..services import chat
from . import api

DEVICE_REF = re.compile(r"([A-Z0-9]{10})/([A-Za-z0-9_:-]{1,48})")
PRODUCT_ID = re.compile(r"[A-Z0-9]{10}")
DURATION = re.compile(r"(\d{1,6})([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: the flag every command takes: answer in the channel instead of only to the caller
PUBLIC_FLAG = "--public"
LIST_LIMIT = 20


class UsageError(Exception):
    """The words do not fit the command: answered with the reason and the usage line."""

    def __init__(self, reason: str, spec: Spec | None = None):
        super().__init__(reason)
        self.reason = reason
        self.spec = spec


# ------------------------------------------------------------------ grammar


@dataclass(frozen=True)
class Arg:
    name: str
    #: device (<pid>/<dn>) | pid | word | int | kv (key=value) | url
    kind: str
    optional: bool = False
    #: takes every remaining word (at least one unless optional)
    many: bool = False
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Spec:
    words: tuple[str, ...]
    summary: str
    run: Callable[[Run, Parsed], Reply | Ask]
    args: tuple[Arg, ...] = ()
    #: --name -> kind (duration | word | list | int)
    flags: Mapping[str, str] = field(default_factory=dict)
    examples: tuple[str, ...] = ()
    #: runs on the jobs queue; the command is acknowledged at once and answered via response_url
    slow: bool = False

    @property
    def usage(self) -> str:
        parts = ["/fleet", *self.words]
        for a in self.args:
            shown = "|".join(a.choices) if a.choices else f"<{a.name}>"
            shown = f"{shown}…" if a.many else shown
            parts.append(f"[{shown}]" if a.optional else shown)
        parts += [f"[--{name} <{kind}>]" for name, kind in self.flags.items()]
        return " ".join(parts)


@dataclass
class Parsed:
    spec: Spec
    args: dict[str, Any]
    flags: dict[str, Any]
    public: bool
    text: str


def _convert(kind: str, word: str, name: str) -> Any:
    if kind == "device":
        m = DEVICE_REF.fullmatch(word)
        if not m:
            raise UsageError(f"{name} must be <ProductId>/<DeviceName>, got {word[:60]!r}")
        return m.group(1), m.group(2)
    if kind == "pid":
        if not PRODUCT_ID.fullmatch(word):
            raise UsageError(f"{name} must be a ProductId (10 upper-case letters and digits), got {word[:60]!r}")
        return word
    if kind == "int":
        if not word.isdigit() or len(word) > 9:
            raise UsageError(f"{name} must be a whole number, got {word[:60]!r}")
        return int(word)
    if kind == "kv":
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise UsageError(f"{name} must be key=value, got {word[:60]!r}")
        try:
            return key, json.loads(value)  # numbers, booleans, objects…
        except ValueError:
            return key, value  # …else the text as is
    if kind == "duration":
        m = DURATION.fullmatch(word)
        if not m:
            raise UsageError(f"--{name} must be a duration like 30m, 2h or 7d, got {word[:60]!r}")
        return int(m.group(1)) * _UNIT_S[m.group(2)]
    if kind == "list":
        return [w for w in word.split(",") if w]
    return word


def split(text: str) -> tuple[list[str], bool]:
    """The words of a command line and whether ``--public`` was given."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"the command line does not parse: {exc}") from None
    public = PUBLIC_FLAG in words
    return [w for w in words if w != PUBLIC_FLAG], public


def find(words: list[str]) -> tuple[Spec | None, int]:
    """The command the words name (the longest matching word sequence) and how many words it took."""
    best: tuple[Spec | None, int] = (None, 0)
    for spec in COMMANDS:
        n = len(spec.words)
        if [w.lower() for w in words[:n]] == list(spec.words) and n > best[1]:
            best = (spec, n)
    return best


def parse(text: str) -> Parsed:
    words, public = split(text)
    if not words:
        words = ["help"]
    spec, used = find(words)
    if spec is None:
        topic = words[0].lower()
        if any(s.words[0] == topic for s in COMMANDS):
            raise UsageError(f"{topic} takes a subcommand: try /fleet help {topic}")
        raise UsageError(f"there is no command {words[0][:40]!r}: try /fleet help")
    rest = words[used:]
    flags: dict[str, Any] = {}
    positional: list[str] = []
    i = 0
    while i < len(rest):
        word = rest[i]
        if word.startswith("--") and len(word) > 2:
            name, eq, value = word[2:].partition("=")
            if name not in spec.flags:
                raise UsageError(f"--{name} is not a flag of this command", spec)
            if not eq:
                i += 1
                if i >= len(rest):
                    raise UsageError(f"--{name} needs a value", spec)
                value = rest[i]
            try:
                flags[name] = _convert(spec.flags[name], value, name)
            except UsageError as exc:
                raise UsageError(exc.reason, spec) from None
        else:
            positional.append(word)
        i += 1
    args: dict[str, Any] = {}
    for arg in spec.args:
        if arg.many:
            taken, positional = positional, []
            if not taken and not arg.optional:
                raise UsageError(f"{arg.name} is missing", spec)
            values = [_arg(arg, w, spec) for w in taken]
            args[arg.name] = values
            continue
        if not positional:
            if arg.optional:
                continue
            raise UsageError(f"{arg.name} is missing", spec)
        args[arg.name] = _arg(arg, positional.pop(0), spec)
    if positional:
        raise UsageError(f"unexpected {' '.join(positional)[:60]!r}", spec)
    return Parsed(spec, args, flags, public, text)


def _arg(arg: Arg, word: str, spec: Spec) -> Any:
    if arg.choices and word.lower() not in arg.choices:
        raise UsageError(f"{arg.name} must be one of {', '.join(arg.choices)}", spec)
    try:
        return _convert(arg.kind, word.lower() if arg.choices else word, arg.name)
    except UsageError as exc:
        raise UsageError(exc.reason, spec) from None


# ------------------------------------------------------------------ running


@dataclass
class Run:
    """One command's caller: the chat user, the channel, and the principal it acts as."""

    who: Who
    where: Where
    principal: Principal
    request_id: str

    def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        query: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> Any:
        """The route's JSON answer, exactly as HTTP would decide it for this principal (raises the
        route's FleetboxError)."""
        return api.invoke(
            method,
            path,
            self.principal,
            params=params,
            query=query,
            body=body,
            channel=self.where.ref,
            request_id=self.request_id,
        ).body


@dataclass
class Reply:
    message: Message
    #: a job that keeps answering through the response URL: ("batch"|"video", id)
    follow: tuple[str, str] | None = None


@dataclass
class Ask:
    """A confirmation: the calls run (as the clicking user) once confirmed."""

    title: str
    blast: str
    calls: list[dict[str, Any]]
    #: how the outcome is rendered: "batch" (then followed) or "plain"
    then: str = "plain"


def call_spec(
    method: str,
    path: str,
    params: Mapping[str, str] | None = None,
    body: Mapping[str, Any] | None = None,
    label: str = "",
) -> dict[str, Any]:
    return {"method": method, "path": path, "params": dict(params or {}), "body": body, "label": label}


# ------------------------------------------------------------------ renderers


def _when(ts: Any) -> str:
    if not isinstance(ts, int | float) or ts <= 0:
        return "—"
    return clock.iso(ts / 1000 if ts > 10**11 else ts)


def _pick(item: Mapping[str, Any], names: tuple[str, ...]) -> list[tuple[str, str]]:
    out = []
    for name in names:
        value = item.get(name)
        if value is None or value == "" or value == []:
            continue
        if name.endswith("_at") or name == "time":
            value = _when(value)
        elif isinstance(value, list | dict):
            value = json.dumps(value, ensure_ascii=False)[:300]
        out.append((name, str(value)))
    return out


PRODUCT_FIELDS = ("product_id", "name", "status", "device_type", "comm_method", "auth_type", "category", "created_at")
DEVICE_FIELDS = (
    "product_id",
    "device_name",
    "status",
    "enabled",
    "online",
    "firmware_version",
    "tags",
    "activated_at",
    "last_online_at",
    "created_at",
)
BATCH_FIELDS = ("id", "product_id", "status", "progress", "quantity", "success_count", "failure_count", "qr_code")
OTA_FIELDS = ("id", "product_id", "firmware_id", "status", "method", "progress", "counts", "created_at")


def _lines(items: list[Mapping[str, Any]], line: Callable[[Mapping[str, Any]], str], empty: str) -> list[str]:
    return ["\n".join(line(i) for i in items)] if items else [empty]


# ------------------------------------------------------------------ commands


def cmd_help(run: Run, p: Parsed) -> Reply:
    topic = p.args.get("topic")
    specs = [s for s in COMMANDS if topic is None or s.words[0] == topic]
    if not specs:
        return Reply(Message(f"No help for {topic!r}: /fleet help lists every command."))
    if topic is None:
        lines = [f"{s.usage} — {s.summary}" for s in specs]
        return Reply(
            Message(
                "Fleetbox commands (/fleet help <topic> for examples; add --public to answer in the channel)",
                sections=["\n".join(lines)],
            )
        )
    sections = []
    for s in specs:
        sections.append("\n".join([s.usage, f"  {s.summary}", *(f"  e.g. {e}" for e in s.examples)]))
    return Reply(Message(f"/fleet {topic}", sections=sections))


def cmd_whoami(run: Run, p: Parsed) -> Reply:
    return Reply(
        Message(
            "You are mapped to a Fleetbox principal; every command runs with its policy.",
            fields=[
                ("chat user", run.who.ref),
                ("principal", run.principal.principal_id),
                ("channel", run.where.ref),
            ],
        )
    )


def cmd_product_list(run: Run, p: Parsed) -> Reply:
    page = run.call("GET", "/v1/products", query={"limit": LIST_LIMIT})
    items = page["items"]
    return Reply(
        Message(
            f"{len(items)} product(s)" + (" (first page)" if page.get("next") else ""),
            sections=_lines(items, lambda i: f"{i['product_id']}  {i['name']}  ({i.get('status')})", "No products."),
        )
    )


def cmd_product_show(run: Run, p: Parsed) -> Reply:
    item = run.call("GET", "/v1/products/{product_id}", params={"product_id": p.args["product_id"]})
    return Reply(Message(f"Product {item['product_id']}", fields=_pick(item, PRODUCT_FIELDS)))


def _dev(ref: tuple[str, str]) -> dict[str, str]:
    return {"product_id": ref[0], "device_name": ref[1]}


def cmd_device_show(run: Run, p: Parsed) -> Reply:
    # never include_secret: a chat message is no place for a PSK, whatever the caller may read
    item = run.call("GET", "/v1/products/{product_id}/devices/{device_name}", params=_dev(p.args["device"]))
    return Reply(Message(f"Device {item['product_id']}/{item['device_name']}", fields=_pick(item, DEVICE_FIELDS)))


def cmd_device_find(run: Run, p: Parsed) -> Reply:
    query: dict[str, Any] = {"limit": LIST_LIMIT}
    if p.args.get("query"):
        query["q"] = p.args["query"]
    if p.flags.get("status"):
        query["status"] = p.flags["status"]
    page = run.call(
        "GET", "/v1/products/{product_id}/devices", params={"product_id": p.args["product_id"]}, query=query
    )
    items = page["items"]
    total = page.get("total")
    head = f"{len(items)} device(s)" + (f" of {total}" if isinstance(total, int) and total > len(items) else "")
    return Reply(
        Message(
            head,
            sections=_lines(
                items,
                lambda d: (
                    f"{d['device_name']}  {d.get('status', '')}"
                    + ("" if d.get("enabled", True) else "  (disabled)")
                    + (f"  fw {d['firmware_version']}" if d.get("firmware_version") else "")
                ),
                "No device matches.",
            ),
        )
    )


def cmd_device_enable(run: Run, p: Parsed) -> Reply:
    item = run.call(
        "PATCH",
        "/v1/products/{product_id}/devices/{device_name}",
        params=_dev(p.args["device"]),
        body={"enabled": True},
    )
    return Reply(Message(f"Enabled {item['product_id']}/{item['device_name']}."))


def _many_devices(p: Parsed, method: str, body: dict[str, Any] | None, verb: str, title: str) -> Ask:
    refs: list[tuple[str, str]] = list(dict.fromkeys(p.args["devices"]))
    calls = [
        call_spec(method, "/v1/products/{product_id}/devices/{device_name}", _dev(r), body, f"{r[0]}/{r[1]}")
        for r in refs
    ]
    shown = ", ".join(f"{r[0]}/{r[1]}" for r in refs[:5]) + (" …" if len(refs) > 5 else "")
    return Ask(title, f"{verb} {len(refs)} device{'s' if len(refs) != 1 else ''}: {shown}", calls)


def cmd_device_disable(run: Run, p: Parsed) -> Ask:
    return _many_devices(p, "PATCH", {"enabled": False}, "disables", "Disable devices?")


def cmd_device_delete(run: Run, p: Parsed) -> Ask:
    return _many_devices(p, "DELETE", None, "deletes", "Delete devices?")


def cmd_device_control(run: Run, p: Parsed) -> Reply:
    params = dict(p.args["values"])
    answer = run.call(
        "POST", "/v1/products/{product_id}/devices/{device_name}/control", params=_dev(p.args["device"]),
        body={"params": params},
    )  # fmt: skip
    ref = "/".join(p.args["device"])
    fields = _pick(answer if isinstance(answer, dict) else {}, ("client_token", "status", "delivery", "code"))
    return Reply(Message(f"Sent {json.dumps(params, ensure_ascii=False)[:300]} to {ref}.", fields=fields))


def cmd_batch_create(run: Run, p: Parsed) -> Ask:
    n, pid = p.args["quantity"], p.args["product_id"]
    qr = p.args.get("qr") == "qr"
    body = {"product_id": pid, "burn_method": "per_device_secret", "generation": "auto", "quantity": n, "qr_code": qr}
    return Ask(
        "Create devices?",
        f"creates {n} device{'s' if n != 1 else ''} in product {pid}" + (" with QR codes" if qr else ""),
        [call_spec("POST", "/v1/batches", body=body, label=f"batch of {n}")],
        then="batch",
    )


def batch_message(run: Run, batch_id: str) -> tuple[Message, bool]:
    """The batch's progress, or (done) its download link — only for a caller allowed to read the
    secrets the outputs hold, and only to that caller (never in the channel).  (message, finished)"""
    try:
        item = run.call("GET", "/v1/batches/{batch_id}", params={"batch_id": batch_id}, query={"include_secret": True})
    except errors.FleetboxError as err:
        if err.status != 403:
            raise
        item = run.call("GET", "/v1/batches/{batch_id}", params={"batch_id": batch_id})
    finished = item.get("status") in ("done", "failed")
    fields = _pick(item, BATCH_FIELDS)
    if not finished:
        return Message(f"Batch {batch_id}: {item.get('progress', 0)}% ({item.get('status')})", fields=fields), False
    text = f"Batch {batch_id} {item['status']}: {item.get('success_count', 0)} created"
    if item.get("failure_count"):
        text += f", {item['failure_count']} failed ({item.get('last_failure_reason') or 'see the batch'})"
    sections = []
    if item.get("download_url"):
        sections.append(f"Download (link valid until {_when(item.get('download_expires_at'))}): {item['download_url']}")
    elif item.get("outputs_hold_secrets"):
        sections.append(
            "The outputs hold device secrets: the link is given only to a principal allowed "
            f"iotexplorer:DescribeDeviceSecret (GET /v1/batches/{batch_id}?include_secret=true)."
        )
    return Message(text, sections=sections, fields=fields), True


def cmd_batch_status(run: Run, p: Parsed) -> Reply:
    message, finished = batch_message(run, p.args["batch_id"])
    return Reply(message, follow=None if finished else ("batch", p.args["batch_id"]))


def cmd_ota_tasks(run: Run, p: Parsed) -> Reply:
    query: dict[str, Any] = {"limit": LIST_LIMIT}
    if p.args.get("product_id"):
        query["product_id"] = p.args["product_id"]
    page = run.call("GET", "/v1/ota-tasks", query=query)
    return Reply(
        Message(
            f"{len(page['items'])} OTA task(s)",
            sections=_lines(
                page["items"],
                lambda t: f"{t.get('id')}  {t.get('product_id')}  {t.get('status')}  fw {t.get('firmware_id')}",
                "No OTA tasks.",
            ),
        )
    )


def cmd_ota_status(run: Run, p: Parsed) -> Reply:
    item = run.call("GET", "/v1/ota-tasks/{task_id}", params={"task_id": p.args["task_id"]})
    return Reply(Message(f"OTA task {p.args['task_id']}", fields=_pick(item, OTA_FIELDS)))


def cmd_ota_start(run: Run, p: Parsed) -> Ask:
    fw = run.call("GET", "/v1/firmware/{firmware_id}", params={"firmware_id": p.args["firmware_id"]})
    devices, versions = p.flags.get("devices"), p.flags.get("from")
    if bool(devices) == bool(versions):
        raise UsageError("give exactly one of --devices d1,d2 or --from v1,v2", p.spec)
    body: dict[str, Any] = {"firmware_id": p.args["firmware_id"], "mode": "static", "confirm": "silent"}
    target = f"{fw.get('name', '')} {fw.get('version', '')}".strip()
    if devices:
        body.update(method="by_device", device_names=devices)
        blast = (
            f"upgrades {len(devices)} device{'s' if len(devices) != 1 else ''} of {fw.get('product_id')} to {target}"
        )
    else:
        body.update(method="by_version", source_versions=versions)
        blast = f"upgrades every device of {fw.get('product_id')} on {', '.join(versions)} to {target}"
    return Ask("Start the OTA upgrade?", blast, [call_spec("POST", "/v1/ota-tasks", body=body, label="OTA task")])


def _ota_device(verb: str) -> Callable[[Run, Parsed], Reply]:
    def run_(run: Run, p: Parsed) -> Reply:
        params = {"task_id": p.args["task_id"], "device_name": p.args["device_name"]}
        run.call("POST", f"/v1/ota-tasks/{{task_id}}/devices/{{device_name}}/{verb}", params=params)
        return Reply(Message(f"OTA {verb}: {p.args['device_name']} in task {p.args['task_id']}."))

    return run_


def cmd_rule_list(run: Run, p: Parsed) -> Reply:
    page = run.call("GET", "/v1/rules", query={"limit": LIST_LIMIT})
    return Reply(
        Message(
            f"{len(page['items'])} rule(s)",
            sections=_lines(
                page["items"],
                lambda r: (
                    f"{r.get('name')}  {'enabled' if r.get('enabled') else 'disabled'}  {str(r.get('sql', ''))[:80]}"
                ),
                "No rules.",
            ),
        )
    )


def cmd_rule_enable(run: Run, p: Parsed) -> Reply:
    run.call("POST", "/v1/rules/{name}/enable", params={"name": p.args["name"]})
    return Reply(Message(f"Rule {p.args['name']} enabled."))


def cmd_rule_disable(run: Run, p: Parsed) -> Ask:
    name = p.args["name"]
    return Ask(
        "Disable the rule?",
        f"stops rule {name} forwarding messages",
        [call_spec("POST", "/v1/rules/{name}/disable", {"name": name}, label=f"rule {name}")],
    )


def cmd_rule_test(run: Run, p: Parsed) -> Reply:
    payload = p.args["payload"]
    try:
        value: Any = json.loads(payload)
    except ValueError:
        value = payload
    answer = run.call(
        "POST", "/v1/rules/{name}/debug", params={"name": p.args["name"]},
        body={"topic": p.args["topic"], "payload": value},
    )  # fmt: skip
    matched = answer.get("matched") if isinstance(answer, dict) else None
    text = json.dumps(answer, ensure_ascii=False, default=str)[:1500]
    return Reply(Message(f"Rule {p.args['name']}: {'matched' if matched else 'no match'}", sections=[text]))


def _since_ms(p: Parsed, default_s: int) -> int:
    return int((clock.now() - p.flags.get("since", default_s)) * 1000)


def cmd_fence_alarms(run: Run, p: Parsed) -> Reply:
    """Alarms are listed per product: of --product, else of every product the caller may see."""
    start = _since_ms(p, 86400)
    pids = [p.flags["product"]] if p.flags.get("product") else [
        i["product_id"] for i in run.call("GET", "/v1/products", query={"limit": LIST_LIMIT})["items"]
    ]  # fmt: skip
    items: list[dict[str, Any]] = []
    for pid in pids:
        try:
            items += run.call("GET", "/v1/alarms", query={"product_id": pid, "start": start, "limit": 100})["items"]
        except errors.FleetboxError as err:
            if err.status != 403 or p.flags.get("product"):
                raise  # a product the caller sees but may not read alarms of is skipped
    items.sort(key=lambda a: a.get("time", 0), reverse=True)
    space = p.args.get("space_id")
    if space:
        items = [a for a in items if a.get("space_id") == space]
    return Reply(
        Message(
            f"{len(items)} fence alarm(s)" + (f" in {space}" if space else ""),
            sections=_lines(
                items[:LIST_LIMIT],
                lambda a: (
                    f"{_when(a.get('time'))}  {a.get('product_id')}/{a.get('device_name')}  "
                    f"{a.get('type')}  fence {a.get('fence_id')}"
                ),
                "No alarms.",
            ),
        )
    )


def cmd_track(run: Run, p: Parsed) -> Reply:
    pid, dn = p.args["device"]
    start = _since_ms(p, 86400)
    traj = run.call("GET", "/v1/trajectories", query={"devices": f"{pid}/{dn}", "start": start})
    points: list[Mapping[str, Any]] = []
    for item in traj.get("devices", []) if isinstance(traj, dict) else []:
        points += item.get("points") or []
    sections = []
    if points:
        first, last = points[0], points[-1]
        sections.append(
            f"from {first.get('lat')},{first.get('lon')} at {_when(first.get('time'))} "
            f"to {last.get('lat')},{last.get('lon')} at {_when(last.get('time'))}"
        )
    image = None
    space = p.flags.get("space")
    if space:
        picture = api.invoke(
            "GET", "/v1/spaces/{space_id}/map.png", run.principal, params={"space_id": space},
            query={"device": f"{pid}/{dn}", "start": start}, channel=run.where.ref, request_id=run.request_id,
        ).body  # fmt: skip
        data = picture if isinstance(picture, bytes) else bytes(picture)
        image = Image(chat.store_picture(data), f"trajectory of {pid}/{dn} on space {space}")
    elif points:
        sections.append("Add --space <space_id> for the map picture.")
    return Reply(Message(f"{pid}/{dn}: {len(points)} position(s)", sections=sections, image=image))


def cmd_video_summarize(run: Run, p: Parsed) -> Reply:
    pid, dn = p.args["device"]
    now = clock.now_s()
    task = run.call(
        "POST", "/v1/video-tasks",
        body={"ProductId": pid, "DeviceName": dn, "ServiceType": "VideoToText", "StartTime": now - 3600,
              "EndTime": now, "VideoURLs": [p.args["url"]]},
    )  # fmt: skip
    task_id = task["TaskId"]
    return Reply(
        Message(f"Summarising the video as task {task_id}; the summary follows here."), follow=("video", task_id)
    )


def video_message(run: Run, task_id: str) -> tuple[Message, bool]:
    item = run.call("GET", "/v1/video-tasks/{task_id}", params={"task_id": task_id})
    status = item.get("Status")
    if status == 4:
        return Message(f"Video task {task_id} is still running."), False
    if status == 1:
        return Message(f"Video task {task_id} failed: {item.get('Reason') or 'no reason given'}"), True
    if status == 2:
        return Message(f"Video task {task_id} done: nothing of interest was detected."), True
    try:
        summary = json.loads(item.get("Result") or "{}").get("Summary") or "(empty result)"
    except (ValueError, AttributeError):
        summary = "(unreadable result)"
    return Message(f"Video task {task_id} done.", sections=[str(summary)[:2500]]), True


def cmd_stats(run: Run, p: Parsed) -> Reply:
    query = {"product_id": p.args["product_id"]} if p.args.get("product_id") else {}
    item = run.call("GET", "/v1/stats/overview", query=query)
    shown = {k: v for k, v in item.items() if isinstance(v, int | float | str)} if isinstance(item, dict) else {}
    return Reply(
        Message(
            "Fleet statistics" + (f" for {p.args['product_id']}" if query else ""),
            fields=[(k, str(v)) for k, v in shown.items()][:20],
        )
    )


ALERT_KINDS = ("alarms", "ota", "batch", "rules", "video")


def cmd_subscribe(run: Run, p: Parsed) -> Reply:
    body: dict[str, Any] = {"channel": run.where.ref, "kind": p.args["kind"]}
    if p.flags.get("product"):
        body["product_id"] = p.flags["product"]
    made = run.call("POST", "/v1/chat/subscriptions", body=body)
    scope = f"product {made.get('product_id')}" if made.get("product_id") else "every product"
    return Reply(
        Message(f"This channel now receives {p.args['kind']} alerts of {scope} (subscription {made.get('id')}).")
    )


def cmd_unsubscribe(run: Run, p: Parsed) -> Reply:
    query: dict[str, Any] = {"channel": run.where.ref, "limit": 100}
    if p.flags.get("product"):
        query["product_id"] = p.flags["product"]
    items = run.call("GET", "/v1/chat/subscriptions", query=query)["items"]
    mine = [i for i in items if i.get("kind") == p.args["kind"]]
    for item in mine:
        run.call("DELETE", "/v1/chat/subscriptions/{id}", params={"id": item["id"]})
    if not mine:
        return Reply(Message(f"This channel had no {p.args['kind']} subscription you may see."))
    return Reply(Message(f"Unsubscribed this channel from {p.args['kind']} alerts ({len(mine)} subscription(s))."))


def _a(name: str, kind: str, **kw: Any) -> Arg:
    return Arg(name, kind, **kw)


TOPICS = (
    "help", "whoami", "product", "device", "batch", "ota", "rule", "fence", "track", "video", "stats", "subscribe",
    "unsubscribe",
)  # fmt: skip

#: every command: the one table (order = the order of /fleet help)
COMMANDS: tuple[Spec, ...] = (
    Spec(("help",), "list the commands, or one topic's with examples", cmd_help,
         (_a("topic", "word", optional=True, choices=TOPICS),), examples=("/fleet help device",)),
    Spec(("whoami",), "the principal your chat user acts as", cmd_whoami),
    Spec(("product", "list"), "the products you may see", cmd_product_list),
    Spec(("product", "show"), "one product", cmd_product_show, (_a("product_id", "pid"),),
         examples=("/fleet product show ABCDEFGHIJ",)),
    Spec(("device", "show"), "one device (never its secret)", cmd_device_show, (_a("device", "device"),),
         examples=("/fleet device show ABCDEFGHIJ/lamp01",)),
    Spec(("device", "find"), "devices of a product, by name fragment and status", cmd_device_find,
         (_a("product_id", "pid"), _a("query", "word", optional=True)), {"status": "word"},
         examples=("/fleet device find ABCDEFGHIJ lamp", "/fleet device find ABCDEFGHIJ --status online")),
    Spec(("device", "enable"), "enable a device", cmd_device_enable, (_a("device", "device"),)),
    Spec(("device", "disable"), "disable devices (asks to confirm)", cmd_device_disable,
         (_a("devices", "device", many=True),), examples=("/fleet device disable ABCDEFGHIJ/lamp01 ABCDEFGHIJ/lamp02",)),
    Spec(("device", "delete"), "delete devices (asks to confirm)", cmd_device_delete,
         (_a("devices", "device", many=True),)),
    Spec(("device", "control"), "set properties (values parsed as JSON where they parse)", cmd_device_control,
         (_a("device", "device"), _a("values", "kv", many=True)),
         examples=('/fleet device control ABCDEFGHIJ/lamp01 power_switch=1 color="warm white"',)),
    Spec(("batch", "create"), "mass-produce devices (asks to confirm)", cmd_batch_create,
         (_a("product_id", "pid"), _a("quantity", "int"), _a("qr", "word", optional=True, choices=("qr",))),
         examples=("/fleet batch create ABCDEFGHIJ 500 qr",)),
    Spec(("batch", "status"), "a batch's progress, then its download link", cmd_batch_status,
         (_a("batch_id", "word"),)),
    Spec(("ota", "tasks"), "OTA tasks (of one product)", cmd_ota_tasks, (_a("product_id", "pid", optional=True),)),
    Spec(("ota", "status"), "one OTA task", cmd_ota_status, (_a("task_id", "word"),)),
    Spec(("ota", "start"), "start an OTA upgrade (asks to confirm)", cmd_ota_start, (_a("firmware_id", "word"),),
         {"devices": "list", "from": "list"},
         examples=("/fleet ota start fw123 --devices lamp01,lamp02", "/fleet ota start fw123 --from 1.0.0,1.0.1")),
    Spec(("ota", "cancel"), "cancel one device's upgrade", _ota_device("cancel"),
         (_a("task_id", "word"), _a("device_name", "word"))),
    Spec(("ota", "retry"), "retry one device's upgrade", _ota_device("retry"),
         (_a("task_id", "word"), _a("device_name", "word"))),
    Spec(("rule", "list"), "the rules you may see", cmd_rule_list),
    Spec(("rule", "enable"), "enable a rule", cmd_rule_enable, (_a("name", "word"),)),
    Spec(("rule", "disable"), "disable a rule (asks to confirm)", cmd_rule_disable, (_a("name", "word"),)),
    Spec(("rule", "test"), "run a rule on a sample message", cmd_rule_test,
         (_a("name", "word"), _a("topic", "word"), _a("payload", "word")),
         examples=("/fleet rule test hot ABCDEFGHIJ/lamp01/data '{\"temp\": 40}'",)),
    Spec(("fence", "alarms"), "fence alarms (of one space) since a while ago (default 1d)", cmd_fence_alarms,
         (_a("space_id", "word", optional=True),), {"since": "duration", "product": "word"},
         examples=("/fleet fence alarms sp_0123456789 --since 2h",)),
    Spec(("track",), "a device's trajectory; with --space its map picture", cmd_track, (_a("device", "device"),),
         {"since": "duration", "space": "word"}, examples=("/fleet track ABCDEFGHIJ/truck7 --since 6h --space sp_0123456789",),
         slow=True),
    Spec(("video", "summarize"), "summarise a camera's video (the summary follows)", cmd_video_summarize,
         (_a("device", "device"), _a("url", "word")),
         examples=("/fleet video summarize ABCDEFGHIJ/cam1 https://example.com/clip.mp4",)),
    Spec(("stats",), "device statistics (of one product)", cmd_stats, (_a("product_id", "pid", optional=True),)),
    Spec(("subscribe",), "this channel receives these alerts (of every product you may see, or --product)",
         cmd_subscribe, (_a("kind", "word", choices=ALERT_KINDS),), {"product": "word"},
         examples=("/fleet subscribe alarms", "/fleet subscribe ota --product ABCDEFGHIJ")),
    Spec(("unsubscribe",), "stop these alerts in this channel", cmd_unsubscribe,
         (_a("kind", "word", choices=ALERT_KINDS),), {"product": "word"}, examples=("/fleet unsubscribe alarms",)),
)  # fmt: skip
