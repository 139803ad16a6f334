"""Lists decide per item, and secrets are write-only (issue 10: SPEC §2).

Given one account with two products A and B — devices, rules, streams, dead letters, delivery
logs, firmware, OTA tasks, batches, end-user bindings, video tasks and video callbacks in each —
and three callers: the root, a partner whose policy allows exactly ``product/A`` and
``product/A/*``, and an application whose products are [A]:

* every list route (found from the live route table, so a new one cannot be forgotten) shows the
  partner and the application nothing of product B, and what the partner cannot read through an
  item route it cannot see in a list either;
* walking every route as every caller, no response — success or error — carries a secret
  (``whsec_…`` signing secrets, webhook tokens, product and device secrets, API keys) except the
  routes that require a secret-reading action, asked explicitly with ``include_secret=true`` by
  a caller allowed that action; the application never gets one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from chalicelib.handlers.api import ROUTES, RouteSpec
from tests.helpers import MEDIA_SAMPLES, gps_property
from tests.integration.helpers import PRODUCT, Api, FakeQueue, ok
from tests.receiver import Receiver

TOKENS = {"ra": "tokenRuleA", "rb": "tokenRuleB", "rall": "tokenRuleAll", "sa": "tokenStreamA", "sb": "tokenStreamB"}
HOOK = "http://127.0.0.1:9/hook"
GPS_MODEL = {"version": "1.0", "properties": [gps_property()], "events": [], "actions": []}
WHSEC = re.compile(r"whsec_[A-Za-z0-9+/=]{8,}")


# ------------------------------------------------------------------ the world


@pytest.fixture()
def inline_jobs(monkeypatch: pytest.MonkeyPatch, aws: None) -> Callable[[], None]:
    """Job steps queued in memory and run to the end by the returned ``drain``."""
    from chalicelib.core.config import reload_settings
    from chalicelib.services import files

    monkeypatch.setenv("FLEETBOX_BUCKET", "fleetbox-test-files-123456789012")
    monkeypatch.setenv("FLEETBOX_ALLOW_LOOPBACK", "true")
    monkeypatch.setenv("FLEETBOX_MEDIA_ROOT", str(MEDIA_SAMPLES))
    reload_settings()
    files.forget()
    yield FakeQueue(honour_delays=False).install(monkeypatch).drain
    monkeypatch.undo()
    reload_settings()
    files.forget()


def _key_for(api: Api, policy: dict[str, Any], name: str) -> str:
    p = ok(api.post("/v1/principals", {"name": name, "policy": policy}), 201)
    return ok(api.post("/v1/keys", {"principal_id": p["principal_id"], "name": name}), 201)["api_key"]


@pytest.fixture()
def world(api: Api, inline_jobs: Callable[[], None], recorder: Any) -> dict[str, Any]:
    from chalicelib.core import clock
    from chalicelib.forwarders import engine
    from chalicelib.models.rules import DeliveryRecord
    from chalicelib.services import batches as batch_rules

    w: dict[str, Any] = {"secrets": set()}
    for tag in ("A", "B"):
        pid = ok(api.post("/v1/products", {**PRODUCT, "name": f"Product {tag}"}), 201)["product_id"]
        reg = ok(api.put(f"/v1/products/{pid}/dynamic-registration", {"register_type": 1}))
        w["secrets"].add(reg["product_secret"])
        ok(api.put(f"/v1/products/{pid}/thing-model", GPS_MODEL))
        ok(api.post(f"/v1/products/{pid}/publish"))
        dev = ok(api.post(f"/v1/products/{pid}/devices", {"device_name": f"dev{tag}"}), 201)
        w["secrets"].add(dev["secret"])
        w[tag] = {"pid": pid, "dn": f"dev{tag}", "secret": dev["secret"], "product_secret": reg["product_secret"]}
    a, b = w["A"]["pid"], w["B"]["pid"]

    # rules: one per product, one over every product (an account-level resource)
    for name, filt in (
        ("ra", f"thing/up/property/{a}/+"),
        ("rb", f"thing/up/property/{b}/+"),
        ("rall", "thing/up/property/+/+"),
    ):
        rule = ok(
            api.post(
                "/v1/rules",
                {
                    "name": name,
                    "sql": f"SELECT * FROM '{filt}'",
                    "actions": [{"type": "http", "url": HOOK, "token": TOKENS[name]}],
                },
            ),
            201,
        )
        w["secrets"] |= {TOKENS[name], rule["actions"][0]["secret"]}
    for name, tag in (("sa", "A"), ("sb", "B")):
        stream = ok(
            api.post(
                "/v1/streams",
                {
                    "name": name,
                    "product_id": w[tag]["pid"],
                    "outputs": [
                        {"type": "custom_push", "url": HOOK, "token": TOKENS[name], "title": "t", "content": "c"}
                    ],
                },
            ),
            201,
        )
        w[tag]["stream"] = stream["id"]
        w["secrets"] |= {TOKENS[name], stream["outputs"][0]["secret"]}

    # dead letters and delivery logs of each rule (what the delivery engine writes)
    from chalicelib.services import rules

    rules.forget()
    for name in ("ra", "rb", "rall"):
        live = rules.lookup(name)
        tag = "B" if name == "rb" else "A"
        job = {
            "k": "rule",
            "id": engine.new_webhook_id(),
            "r": name,
            "a": 0,
            "own": live.resource,
            "msg": {"pid": w[tag]["pid"], "dn": w[tag]["dn"], "topic": "t", "ts": clock.now_ms()},
        }
        engine.dead_letter(job, target_id=f"rule/{name}/0", reason="HTTP 500", attempts=4)
        DeliveryRecord(
            target=f"rule/{name}/0",
            ts=f"{clock.now_ms():013d}#aaaaaa",
            webhook_id=job["id"],
            attempt=1,
            ok=False,
            status=500,
            latency_ms=3,
            error="HTTP 500",
        ).save()

    # a space per product, a fence bound to its device, the device inside it: an alarm and a position
    from tests.integration.helpers import report, run

    for tag in ("A", "B"):
        pid, dn = w[tag]["pid"], w[tag]["dn"]
        sid = ok(api.post("/v1/spaces", {"name": f"space {tag}", "products": [pid]}), 201)["space_id"]
        fence = {"name": "c", "type": "circle", "circle": {"lat": 1.0, "lon": 1.0, "radius": 100}}
        bound = [{"product_id": pid, "device_name": dn}]
        w[tag]["fence"] = ok(api.post(f"/v1/spaces/{sid}/fences", {**fence, "devices": bound}), 201)["fence_id"]
        run(report(pid, dn, {"GPS_Info": {"latitude": 1.0, "longitude": 1.0}}, ts_ms=clock.now_ms() - 1000))
        w[tag]["space"] = sid
    assert len(ok(api.get(f"/v1/alarms?product_id={b}&start=0"))["items"]) == 1
    district = {"type": "Feature", "properties": {"level": "city", "name": "C"}}
    district["geometry"] = {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}
    ok(api.post("/v1/districts", {"type": "FeatureCollection", "features": [district]}), 201)

    # firmware and an OTA task per product
    for tag in ("A", "B"):
        fw = ok(
            api.post(
                "/v1/firmware",
                {"product_id": w[tag]["pid"], "name": "fw", "version": "2.0", "file_name": "fw.bin", "file_size": 4},
            ),
            201,
        )
        assert requests.put(fw["upload_url"], data=b"\x00fw\x01", timeout=10).status_code == 200
        ok(api.post(f"/v1/firmware/{fw['id']}/complete"))
        task = ok(
            api.post("/v1/ota-tasks", {"firmware_id": fw["id"], "method": "by_version", "source_versions": ["1.0"]}),
            202,
        )
        res = ok(
            api.post(
                "/v1/resources", {"product_id": w[tag]["pid"], "name": "res", "file_name": "r.bin", "file_size": 2}
            ),
            201,
        )
        assert requests.put(res["upload_url"], data=b"rs", timeout=10).status_code == 200
        ok(api.post(f"/v1/resources/{res['id']}/complete"))
        rtask = ok(api.post("/v1/resource-tasks", {"resource_id": res["id"], "device_name": w[tag]["dn"]}), 202)
        w[tag].update(firmware=fw["id"], task=task["id"], resource=res["id"], resource_task=rtask["id"])
        batch = ok(
            api.post(
                "/v1/batches",
                {"product_id": w[tag]["pid"], "burn_method": "per_device_secret", "generation": "auto", "quantity": 2},
            ),
            202,
        )
        w[tag]["batch"] = batch["id"]
    inline_jobs()
    for tag in ("A", "B"):
        done = ok(api.get(f"/v1/batches/{w[tag]['batch']}?include_secret=true"))
        assert done["status"] == "done", done
        csv_text = requests.get(done["csv_url"], timeout=10)
        w["secrets"] |= {row.split(",")[3] for row in csv_text.text.splitlines()[1:]}
        w[tag]["csv_url"] = done["csv_url"]
        # an end user binds both products' devices
        code = batch_rules.device_code(w[tag]["pid"], w[tag]["dn"], w[tag]["secret"])
        ok(api.post("/v1/bindings", {"code": code, "user_id": "u1"}), 201)

    # a video summary task per product, and each product's result callback (its token is a secret)
    receiver = Receiver(token="tokenVideo").start()
    try:
        for tag in ("A", "B"):
            pid = w[tag]["pid"]
            ok(api.patch(f"/v1/products/{pid}", {"ai_video_enabled": True}))
            cb = ok(api.put(f"/v1/products/{pid}/video-callback", {"url": receiver.url, "token": "tokenVideo"}))
            w["secrets"] |= {cb["token"], cb["secret"]}
            now = clock.now_s()
            task = {
                "ProductId": pid,
                "DeviceName": w[tag]["dn"],
                "ServiceType": "VideoToText",
                "StartTime": now - 60,
                "EndTime": now,
                "VideoURLs": ["no-object-coffee.png"],
                "Config": '{"IsImage":true}',
            }
            w[tag]["video_task"] = ok(api.post("/v1/video-tasks", task), 202)["TaskId"]
        inline_jobs()
    finally:
        receiver.stop()

    # chat alerts: a Feishu channel (its signing secret is write-only) and a subscription per
    # product, plus one of every product (an account-level resource)
    feishu = ok(
        api.post(
            "/v1/chat/bots",
            {"platform": "feishu", "name": "ops", "webhook_url": HOOK, "secret": "feishuSecretXYZ1"},
        ),
        201,
    )
    w["secrets"].add("feishuSecretXYZ1")
    w["feishu_channel"] = feishu["id"]
    for tag in ("A", "B"):
        sub = {"channel": f"slack:T0000AAAA:C000{tag}{tag}{tag}{tag}", "kind": "alarms", "product_id": w[tag]["pid"]}
        w[tag]["chat_sub"] = ok(api.post("/v1/chat/subscriptions", sub), 201)["id"]
    ok(api.post("/v1/chat/subscriptions", {"channel": f"feishu:{feishu['id']}", "kind": "ota"}), 201)

    # the callers
    w["partner_key"] = _key_for(
        api,
        {
            "version": "2.0",
            "statement": [
                {"effect": "allow", "action": ["iotexplorer:*"], "resource": [f"product/{a}", f"product/{a}/*"]}
            ],
        },
        "partner",
    )
    app = ok(api.post("/v1/applications", {"name": "Lamp app", "products": [a]}), 201)
    w["application"] = app["application_id"]
    w["app_key"] = app["keys"][0]["api_key"]
    w["root_key"] = api.key
    w["root_pair"] = ok(api.post("/v1/cloud-keys", {"name": "root sdk"}), 201)
    w["secrets"] |= {w["partner_key"], w["app_key"], w["root_key"], w["root_pair"]["secret_key"]}
    w["secrets"] |= {k["api_key"] for k in app["keys"]}
    w["secrets"].discard("")
    return w


# ------------------------------------------------------------------ 1. lists


def _list_routes() -> set[tuple[str, str]]:
    """Every list route: a page of items (``page_of``) or a route the kit marks as a list."""
    return {
        (r.method, r.path)
        for r in ROUTES
        if r.path.startswith("/v1/")
        and r.method == "GET"
        and (r.listing or (r.response is not None and getattr(r.response, "name", "").endswith("Page")))
    }


def _items(resp: Any) -> list[dict[str, Any]]:
    assert resp.status_code == 200, resp.body
    return resp.json["items"]


def _forbidden_or_empty(resp: Any) -> bool:
    return resp.status_code == 403 or (resp.status_code == 200 and resp.json["items"] == [])


def test_no_list_shows_a_scoped_caller_anything_outside_its_scope(api, world):
    a, b = world["A"], world["B"]
    checked: set[tuple[str, str]] = set()

    def check(path: str, run: Callable[[Api, str], None]) -> None:
        checked.add(("GET", path))
        for who in ("partner", "app"):
            run(api.as_key(world[f"{who}_key"]), who)

    def products(c: Api, who: str) -> None:
        assert {p["product_id"] for p in _items(c.get("/v1/products"))} == {a["pid"]}

    def devices(c: Api, who: str) -> None:
        mine = _items(c.get(f"/v1/products/{a['pid']}/devices"))
        assert {d["product_id"] for d in mine} == {a["pid"]}
        assert len(mine) == len(_items(api.get(f"/v1/products/{a['pid']}/devices")))
        assert c.get(f"/v1/products/{b['pid']}/devices").status_code == 403

    def batches(c: Api, who: str) -> None:
        assert {x["product_id"] for x in _items(c.get(f"/v1/products/{a['pid']}/batches"))} == {a["pid"]}
        assert c.get(f"/v1/products/{b['pid']}/batches").status_code == 403

    def firmware(c: Api, who: str) -> None:
        assert {f["product_id"] for f in _items(c.get("/v1/firmware"))} == {a["pid"]}
        assert c.get(f"/v1/firmware?product_id={b['pid']}").status_code == 403

    def tasks(c: Api, who: str) -> None:
        assert {t["product_id"] for t in _items(c.get("/v1/ota-tasks"))} == {a["pid"]}

    def per_item(path: str, ids: tuple[str, str]) -> Callable[[Api, str], None]:
        def run(c: Api, who: str) -> None:
            mine, theirs = (path.replace("{x}", ids[0]), path.replace("{x}", ids[1]))
            assert c.get(theirs).status_code == 403, theirs
            assert c.get(mine).status_code in (200, 403)  # the application may not read OTA details

        return run

    def rules_(c: Api, who: str) -> None:
        names = {r["name"] for r in _items(c.get("/v1/rules"))}
        # the partner reads its product's rule; an application never reads rules (their targets)
        assert names == ({"ra"} if who == "partner" else set()), names

    def streams_(c: Api, who: str) -> None:
        ids = {s["id"] for s in _items(c.get("/v1/streams"))}
        assert ids == ({a["stream"]} if who == "partner" else set()), ids

    def letters(c: Api, who: str) -> None:
        rules_seen = {x["rule"] for x in _items(c.get("/v1/dead-letters"))}
        assert rules_seen == ({"ra"} if who == "partner" else set()), rules_seen

    def deliveries(c: Api, who: str) -> None:
        assert c.get("/v1/deliveries?target=rule/rb/0").status_code == 403
        assert c.get("/v1/deliveries?target=rule/rall/0").status_code == 403
        mine = c.get("/v1/deliveries?target=rule/ra/0")
        assert (mine.status_code, len(mine.json.get("items", []))) == ((200, 1) if who == "partner" else (403, 0))

    def bound(c: Api, who: str) -> None:
        assert {x["product_id"] for x in _items(c.get("/v1/users/u1/devices"))} == {a["pid"]}

    def keys(c: Api, who: str) -> None:
        own = _items(c.get("/v1/keys"))
        assert own and all("api_key" not in k for k in own)
        assert c.get("/v1/keys?principal_id=root").status_code == 403

    def cloud_keys(c: Api, who: str) -> None:
        own = _items(c.get("/v1/cloud-keys"))
        assert world["root_pair"]["secret_id"] not in {k["secret_id"] for k in own}
        assert all("secret_key" not in k for k in own)
        assert c.get("/v1/cloud-keys?principal_id=root").status_code == 403

    def audit(c: Api, who: str) -> None:
        assert c.get("/v1/audit").status_code == 403  # the account's log is not a product's

    def device_histories(c: Api, who: str) -> None:
        for suffix in ("/properties/brightness/history", "/events", "/logs?kind=content", "/subdevices"):
            assert c.get(f"/v1/products/{b['pid']}/devices/{b['dn']}{suffix}").status_code == 403
            assert c.get(f"/v1/products/{a['pid']}/devices/{a['dn']}{suffix}").status_code in (200, 400, 404, 409)

    def stats(c: Api, who: str) -> None:
        for path in ("/v1/stats/overview", "/v1/stats/messages", "/v1/stats/distribution"):
            assert c.get(f"{path}?product_id={b['pid']}").status_code == 403
            mine = c.get(path)
            assert mine.status_code == 200 and mine.json == ok(api.get(f"{path}?product_id={a['pid']}")), path

    def video_tasks(c: Api, who: str) -> None:
        assert {t["TaskId"] for t in _items(c.get("/v1/video-tasks"))} == {a["video_task"]}
        assert {t["TaskId"] for t in _items(c.get(f"/v1/video-tasks?product_id={a['pid']}"))} == {a["video_task"]}
        assert c.get(f"/v1/video-tasks?product_id={b['pid']}").status_code == 403
        assert c.get(f"/v1/video-tasks/{b['video_task']}").status_code == 403

    def spaces(c: Api, who: str) -> None:
        # spaces are account resources (space/{id}): a product-scoped caller lists none
        assert _items(c.get("/v1/spaces")) == []
        for tag in ("A", "B"):
            resp = c.get(f"/v1/spaces/{world[tag]['space']}/fences")
            assert resp.status_code == 403 or resp.json["items"] == [], resp.body

    def alarms(c: Api, who: str) -> None:
        assert _forbidden_or_empty(c.get(f"/v1/alarms?product_id={b['pid']}&start=0"))
        mine = c.get(f"/v1/alarms?product_id={a['pid']}&start=0")
        assert mine.status_code == 403 or {x["device_name"] for x in mine.json["items"]} == {a["dn"]}

    def positions(c: Api, who: str) -> None:
        got = c.get(f"/v1/positions?product_ids={a['pid']},{b['pid']}")
        assert got.status_code == 403 or {x["product_id"] for x in got.json["items"]} == {a["pid"]}
        traj = c.get(f"/v1/trajectories?devices={b['pid']}/{b['dn']}")
        assert traj.status_code == 403

    def districts(c: Api, who: str) -> None:
        assert _forbidden_or_empty(c.get("/v1/districts"))

    # a chat identity is its principal's resource: mapped to root, no product-scoped caller sees it
    root_user = {"platform": "slack", "team_id": "T0LIST001", "user_id": "U0ROOT001", "principal_id": "root"}
    ok(api.post("/v1/chat/identities", root_user), 201)

    def chat_identities(c: Api, who: str) -> None:
        assert [i["user_id"] for i in _items(api.get("/v1/chat/identities"))] == ["U0ROOT001"]
        assert _forbidden_or_empty(c.get("/v1/chat/identities"))
        assert c.get("/v1/chat/identities/slack:T0LIST001:U0ROOT001").status_code == 403

    def chat_subscriptions(c: Api, who: str) -> None:
        resp = c.get("/v1/chat/subscriptions")
        assert resp.status_code == 403 or {x["id"] for x in resp.json["items"]} <= {a["chat_sub"]}, resp.body
        if who == "partner":
            assert {x["id"] for x in _items(resp)} == {a["chat_sub"]}
        assert c.delete(f"/v1/chat/subscriptions/{b['chat_sub']}").status_code == 403

    def chat_bots(c: Api, who: str) -> None:
        assert _forbidden_or_empty(c.get("/v1/chat/bots"))

    check("/v1/chat/subscriptions", chat_subscriptions)
    check("/v1/chat/bots", chat_bots)
    check("/v1/spaces", spaces)
    check("/v1/spaces/{space_id}/fences", spaces)
    check("/v1/alarms", alarms)
    check("/v1/positions", positions)
    check("/v1/trajectories", positions)
    check("/v1/districts", districts)
    check("/v1/chat/identities", chat_identities)
    check("/v1/products", products)
    check("/v1/video-tasks", video_tasks)
    check("/v1/products/{product_id}/devices", devices)
    check("/v1/products/{product_id}/batches", batches)
    check("/v1/firmware", firmware)
    check("/v1/ota-tasks", tasks)
    check("/v1/firmware/{firmware_id}/devices", per_item("/v1/firmware/{x}/devices", (a["firmware"], b["firmware"])))
    check("/v1/ota-tasks/{task_id}/devices", per_item("/v1/ota-tasks/{x}/devices", (a["task"], b["task"])))
    check(
        "/v1/resource-tasks/{task_id}/devices",
        per_item("/v1/resource-tasks/{x}/devices", (a["resource_task"], b["resource_task"])),
    )
    check("/v1/rules", rules_)
    check("/v1/streams", streams_)
    check("/v1/dead-letters", letters)
    check("/v1/deliveries", deliveries)
    check("/v1/users/{user_id}/devices", bound)
    check("/v1/keys", keys)
    check("/v1/cloud-keys", cloud_keys)
    check("/v1/audit", audit)
    for suffix in ("/properties/{property_id}/history", "/events", "/logs", "/subdevices"):
        checked.add(("GET", "/v1/products/{product_id}/devices/{device_name}" + suffix))
    check("/v1/products/{product_id}/devices/{device_name}/events", device_histories)
    check("/v1/stats/overview", stats)
    checked |= {("GET", "/v1/stats/messages"), ("GET", "/v1/stats/distribution")}
    checked.add(("GET", "/v1/ota-device-list-template"))  # a static CSV template: it holds no items
    # every list route of the live table was checked: a new one needs its own check here
    assert _list_routes() <= checked, sorted(_list_routes() - checked)


def test_a_list_never_shows_what_the_item_route_refuses(api, world):
    # Given a partner allowed to list rules and streams of product A but denied reading rule ra
    a = world["A"]
    key = _key_for(
        api,
        {
            "version": "2.0",
            "statement": [
                {
                    "effect": "allow",
                    "action": ["iotexplorer:*"],
                    "resource": [f"product/{a['pid']}", f"product/{a['pid']}/*"],
                },
                {
                    "effect": "deny",
                    "action": ["iotexplorer:DescribeTopicRule", "iotexplorer:DescribeDevice"],
                    "resource": [f"product/{a['pid']}/rule/ra", f"product/{a['pid']}/device/{a['dn']}"],
                },
            ],
        },
        "narrow",
    )
    narrow = api.as_key(key)
    # Then the item route refuses it, and so does the list
    assert narrow.get("/v1/rules/ra").status_code == 403
    assert _items(narrow.get("/v1/rules")) == []
    assert narrow.get(f"/v1/products/{a['pid']}/devices/{a['dn']}").status_code == 403
    listed = narrow.get(f"/v1/products/{a['pid']}/devices")
    names = [d["device_name"] for d in _items(listed)]
    assert a["dn"] not in names and names and listed.json["total"] in (None, len(names))  # nor its count
    assert _items(narrow.get("/v1/users/u1/devices")) == []


# ------------------------------------------------------------------ 2. secrets


def _fill(path: str, world: dict[str, Any], tag: str) -> str:
    w = world[tag]
    values = {
        "product_id": w["pid"],
        "device_name": w["dn"],
        "property_id": "brightness",
        "action_id": "blink",
        "client_token": "clientToken-0",
        "batch_id": w["batch"],
        "binding_id": "x",
        "user_id": "u1",
        "firmware_id": w["firmware"],
        "task_id": w["task"],
        "resource_id": w["resource"],
        "name": "ra" if tag == "A" else "rb",
        "stream_id": w["stream"],
        "principal_id": "root",
        "key_id": "aaaaaaaaaaaaaaaa",
        "secret_id": world["root_pair"]["secret_id"],  # root's pair: no scoped caller may revoke it
        "application_id": world["application"],
        "letter_id": "0",
        "space_id": w["space"],
        "fence_id": w["fence"],
        "identity_id": "slack:T0LIST001:U0ROOT001",
        "id": w["chat_sub"],
        "bot_id": world["feishu_channel"],
    }
    if path.startswith("/v1/video-tasks/"):
        values["task_id"] = w["video_task"]
    return re.sub(r"{(\w+)}", lambda m: values[m.group(1)], path)


def _leaks(text: str, secrets: set[str]) -> list[str]:
    found = [s for s in secrets if s and s in text]
    found += WHSEC.findall(text)
    return found


#: routes that may answer a secret: (method, path) -> the secret-reading action they require
SECRET_ROUTES = {
    ("GET", "/v1/products/{product_id}/devices/{device_name}"): "DescribeDeviceSecret",
    ("GET", "/v1/products/{product_id}/dynamic-registration"): "DescribeProductSecret",
    ("GET", "/v1/rules/{name}"): "DescribeTopicRuleSecret",
    ("GET", "/v1/streams/{stream_id}"): "DescribeDataStreamSecret",
    ("GET", "/v1/batches/{batch_id}"): "DescribeDeviceSecret",
    ("GET", "/v1/products/{product_id}/video-callback"): "DescribeCloudStorageAIServiceCallbackSecret",
}


def _raw(api: Api, key: str, method: str, path: str) -> Any:
    """The response as sent (PNG, CSV or JSON), its body as text."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    resp = getattr(api.client.http, method.lower())(path, headers=headers, body=None if method == "GET" else "{}")
    resp.text = resp.body.decode("utf-8", errors="replace") if isinstance(resp.body, bytes) else str(resp.body or "")
    return resp


def _walk(api: Api, world: dict[str, Any], specs: list[RouteSpec], who: str) -> Iterator[tuple[RouteSpec, str, Any]]:
    key = world[f"{who}_key"]
    for spec in specs:
        for tag in ("A", "B"):
            path = _fill(spec.path, world, tag)
            yield spec, path, _raw(api, key, spec.method, path)
            if "include_secret" in spec.query:
                yield spec, path + "?include_secret=true", _raw(api, key, spec.method, path + "?include_secret=true")


def test_no_response_carries_a_secret_unless_a_secret_action_asked_for_it(api, world):
    secrets = set(world["secrets"])
    gets = [r for r in ROUTES if r.method == "GET" and not r.public]
    for who in ("root", "partner", "app"):
        for spec, path, resp in _walk(api, world, gets, who):
            leaked = _leaks(resp.text, secrets)
            allowed = (spec.method, spec.path) in SECRET_ROUTES and "include_secret=true" in path and who != "app"
            if leaked and allowed:
                assert resp.status_code == 200, (path, who)
                continue
            assert not leaked, (who, path, resp.status_code, leaked)
            # following any link in the answer never hands out a secret either (batch CSVs)
            for url in re.findall(r'"(https?://[^"]+(?:X-Amz-Signature|/files/)[^"]*)"', resp.text):
                assert allowed or not _leaks(requests.get(url, timeout=10).text, secrets), (who, path, url)
    # and every include_secret route refuses the application outright, whatever its products
    app = api.as_key(world["app_key"])
    for (_method, route), _ in SECRET_ROUTES.items():
        resp = app.get(_fill(route, world, "A") + "?include_secret=true")
        assert resp.status_code in (403, 200) and not _leaks(str(resp.body), secrets), route
        if route != "/v1/products/{product_id}/devices/{device_name}" or resp.status_code != 200:
            assert resp.status_code == 403, (route, resp.body)


def test_mutating_routes_do_not_echo_stored_secrets(api, world):
    secrets = set(world["secrets"])
    a = world["A"]
    # the root's edits answer without the secrets they keep
    root = api
    edits = [
        ("PUT", "/v1/rules/ra", {"description": "edited"}),
        ("PUT", "/v1/rules/ra", {"actions": [{"type": "http", "url": HOOK, "token_set": True, "secret_set": True}]}),
        ("POST", "/v1/rules/ra/disable", None),
        ("PUT", f"/v1/streams/{a['stream']}", {"name": "renamed"}),
        ("POST", f"/v1/streams/{a['stream']}/disable", None),
        ("PATCH", f"/v1/products/{a['pid']}/devices/{a['dn']}", {"tags": {"room": "k"}}),
        ("PUT", f"/v1/products/{a['pid']}/dynamic-registration", {"register_type": 2}),
        ("POST", "/v1/rules/ra/debug", {"topic": f"thing/up/property/{a['pid']}/{a['dn']}", "payload": {"x": 1}}),
        (
            "POST",
            "/v1/rules",
            {
                "name": "bad",
                "sql": "SELECT * FROM 'x'",
                "actions": [{"type": "http", "url": "ftp://nope", "token": TOKENS["ra"]}],
            },
        ),
    ]
    for method, path, body in edits:
        resp = root.call(method, path, body=body)
        assert resp.status_code < 500 and not _leaks(str(resp.body), secrets), (method, path, resp.body)
    # the kept token and secret still sign: the rule's stored action is unchanged
    full = ok(root.get("/v1/rules/ra?include_secret=true"))
    assert full["actions"][0]["token"] == TOKENS["ra"] and full["actions"][0]["secret"].startswith("whsec_")
    assert full["actions"][0]["secret"] in secrets
    # and every non-GET route, called by each scoped caller with an empty body (mostly refused or
    # invalid; a partner may delete its own product's rule), echoes none
    others = [r for r in ROUTES if r.method != "GET" and not r.public and r.path.startswith("/v1/")]
    for who in ("partner", "app"):
        for spec, path, resp in _walk(api, world, others, who):
            assert not _leaks(resp.text, secrets), (who, spec.method, path, resp.text[:300])
