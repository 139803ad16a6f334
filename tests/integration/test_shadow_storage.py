"""The uplink's storage layout (issue 12): a small shadow beside the device record, one content-log
row per message holding its reply and (for a report) its history values — and everything stored
in the layout before it still read, nothing lost.

Over moto with the Chalice test client; the "legacy" data is written the way the previous code
wrote it (values on the device record, a history row per property, separate up/down log rows).
"""

from __future__ import annotations

import json

from chalicelib.core import clock
from chalicelib.models.devices import DeviceRecord, ShadowRecord
from chalicelib.models.telemetry import DeviceLogRecord, HistoryRecord
from chalicelib.services import analytics, device_logs
from tests.integration.helpers import connect, logs, make_device, props, report, run, up


def legacy_device(pid: str, dn: str, *, brightness: int, at: int, desired: int | None = None) -> None:
    """A device as the layout before the shadow stored it: values on the record, no shadow."""
    rec = DeviceRecord.get(pid, dn)
    rec.update(
        actions=[
            DeviceRecord.reported.set({"brightness": {"value": brightness, "time": at}}),
            DeviceRecord.desired.set(
                {"power_switch": {"value": desired, "time": at, "token": "clientToken-old"}}
                if desired is not None
                else {}
            ),
            DeviceRecord.dollar.set(False),
            DeviceRecord.region_label.set("Europe"),
        ]
    )
    ShadowRecord(pid, dn).delete()
    HistoryRecord(
        key=f"{pid}/{dn}/p/brightness", ts=f"{at:013d}#legacy00", value=brightness, expires_at=clock.now_s() + 86400
    ).save()
    for offset, direction in ((0, "up"), (5, "down")):
        device_logs.entry(
            pid, dn, "content", direction=direction, topic=f"legacy/{direction}", payload="{}", ts_ms=at + offset
        ).save()


def history(api, pid: str, dn: str, prop: str, limit: int = 100) -> list[dict]:
    """Every page of a property's history, following ``next``."""
    out, token = [], None
    while True:
        url = f"/v1/products/{pid}/devices/{dn}/properties/{prop}/history?limit={limit}"
        r = api.get(url + (f"&next={token}" if token else ""))
        assert r.status_code == 200, r.body
        out += r.json["items"]
        token = r.json.get("next")
        if not token:
            return out


def all_logs(api, pid: str, dn: str, limit: int) -> list[dict]:
    out, token = [], None
    while True:
        url = f"/v1/products/{pid}/devices/{dn}/logs?kind=content&limit={limit}"
        r = api.get(url + (f"&next={token}" if token else ""))
        assert r.status_code == 200, r.body
        assert len(r.json["items"]) <= limit
        out += r.json["items"]
        token = r.json.get("next")
        if not token:
            return out


def test_a_device_stored_before_the_shadow_keeps_everything(api, lamp, recorder):
    # Given a device whose values, history and log were stored in the previous layout
    then = clock.now_ms() - 60_000
    legacy_device(lamp, "dev1", brightness=7, at=then, desired=1)
    # Then its values read as before, without any write
    before = props(api, lamp, "dev1")
    assert {p["id"]: p["value"] for p in before["properties"]} == {"brightness": 7}
    assert [d["id"] for d in before["desired"]] == ["power_switch"]
    # When it reports a new value
    run(report(lamp, "dev1", {"brightness": 9}))
    # Then the shadow holds the legacy values it did not overwrite, and the new one
    shadow = ShadowRecord.get(lamp, "dev1")
    assert shadow.region_label == "Europe" and shadow.dollar is False
    assert shadow.desired.as_dict()["power_switch"]["value"] == 1
    after = props(api, lamp, "dev1")
    assert {p["id"]: p["value"] for p in after["properties"]} == {"brightness": 9}
    # And the history merges the legacy row and the new report, newest first
    assert [h["value"] for h in history(api, lamp, "dev1", "brightness")] == [9, 7]
    # And the log shows the legacy rows and the new request with its reply
    entries = logs(api, lamp, "dev1", "content")
    assert [(e["direction"], e["topic"].split("/")[0]) for e in entries] == [
        ("down", "thing"),
        ("up", "thing"),
        ("down", "legacy"),
        ("up", "legacy"),
    ]


def test_get_status_of_a_legacy_device_answers_its_stored_values(api, lamp, recorder):
    legacy_device(lamp, "dev1", brightness=3, at=clock.now_ms() - 1000, desired=1)
    run(up(lamp, "dev1", "thing/up/property", {"method": "get_status", "clientToken": "gs"}))
    reply = recorder.last(f"thing/down/property/{lamp}/dev1")
    assert reply["data"] == {"reported": {"brightness": 3}, "control": {"power_switch": 1}}


def test_history_and_log_pages_never_skip_or_repeat(api, lamp, recorder):
    # Given legacy rows and new rows interleaved in time, and a report stamped an hour back
    now = clock.now_ms()
    legacy_device(lamp, "dev1", brightness=1, at=now - 600_000)
    run(
        *[report(lamp, "dev1", {"brightness": 10 + i}, token=f"t{i}", ts_ms=now - 300_000 + i * 1000) for i in range(5)]
    )
    late = up(
        lamp,
        "dev1",
        "thing/up/property",
        {
            "method": "report",
            "clientToken": "late",
            "timestamp": (now - 3_600_000) // 1000,
            "params": {"brightness": 5},
        },
    )
    run(late)
    # Then the history, read in pages of 2, is every value once, newest first by report time
    assert [h["value"] for h in history(api, lamp, "dev1", "brightness", limit=2)] == [14, 13, 12, 11, 10, 1, 5]
    # And the content log, read in pages of 3 (pages end inside a request/reply row), is complete
    whole = all_logs(api, lamp, "dev1", limit=100)
    paged = all_logs(api, lamp, "dev1", limit=3)
    assert paged == whole
    assert sum(e["direction"] == "up" for e in whole) == 7  # 5 reports, the late one, the legacy one


def test_a_report_far_from_its_arrival_time_gets_a_history_row(api, lamp, recorder):
    old = (clock.now_ms() - 86_400_000) // 1000
    run(
        up(
            lamp,
            "dev1",
            "thing/up/property",
            {"method": "report", "clientToken": "x", "timestamp": old, "params": {"brightness": 2}},
        )
    )
    rows = list(HistoryRecord.query(f"{lamp}/dev1/p/brightness"))
    assert [r.value for r in rows] == [2]
    # and its log row, at arrival time, carries no values (the history row has them)
    content = list(DeviceLogRecord.query(f"{lamp}/dev1/content"))
    assert len(content) == 1 and content[0].props is None


def test_a_deleted_and_recreated_device_starts_with_an_empty_shadow(api, lamp, recorder):
    run(report(lamp, "dev1", {"brightness": 50}))
    assert api.delete(f"/v1/products/{lamp}/devices/dev1").status_code in (200, 204)
    assert ShadowRecord.count(lamp, ShadowRecord.device_name == "dev1") == 0
    make_device(api, lamp, "dev1")
    assert props(api, lamp, "dev1")["properties"] == []


def test_disabling_reaches_the_shadow_and_drops_reports(api, lamp, recorder):
    run(report(lamp, "dev1", {"brightness": 1}))
    r = api.patch(f"/v1/products/{lamp}/devices/dev1", {"enabled": False})
    assert r.status_code == 200, r.body
    assert ShadowRecord.get(lamp, "dev1").enabled is False
    run(report(lamp, "dev1", {"brightness": 2}))
    assert {p["id"]: p["value"] for p in props(api, lamp, "dev1")["properties"]} == {"brightness": 1}
    assert "Dev_Pub_Unauthorized" in [d["code"] for d in logs(api, lamp, "dev1", "diagnostic")]


def test_a_batch_created_device_gets_its_shadow_on_its_first_report(api, lamp, recorder):
    ShadowRecord(lamp, "dev1").delete()  # as insert_many leaves a device: no shadow
    run(report(lamp, "dev1", {"brightness": 4}))
    shadow = ShadowRecord.get(lamp, "dev1")
    assert shadow.generation == DeviceRecord.get(lamp, "dev1").created_at
    assert json.loads(json.dumps(shadow.reported.as_dict()))["brightness"]["value"] == 4


def test_a_device_counts_active_once_a_day_across_connects_and_reports(api, lamp, recorder):
    make_device(api, lamp, "dev2")
    connect(lamp, "dev1")
    run(report(lamp, "dev1", {"brightness": 4}), report(lamp, "dev2", {"brightness": 4}))
    connect(lamp, "dev1", session="s-2")
    run(report(lamp, "dev2", {"brightness": 5}), report(lamp, "dev1", {"brightness": 5}))
    r = api.get(f"/v1/stats/overview?product_id={lamp}")
    assert r.status_code == 200, r.body
    assert r.json["daily"][-1]["active"] == 2


def test_a_legacy_record_active_today_is_not_counted_again(api, lamp, recorder):
    # the previous layout kept the activity day on the record (and counted the day then)
    DeviceRecord.get(lamp, "dev1").update(actions=[DeviceRecord.active_day.set(analytics.day_of(None))])
    ShadowRecord(lamp, "dev1").delete()
    connect(lamp, "dev1")
    run(report(lamp, "dev1", {"brightness": 4}))
    r = api.get(f"/v1/stats/overview?product_id={lamp}")
    assert r.json["daily"][-1]["active"] == 0
