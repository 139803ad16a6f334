"""Device topics (SPEC §6.1, §6.6): parsing, replies on the device's own form, builders."""

from __future__ import annotations

import pytest

from chalicelib.protocol import topics

P, D = "ABCDEFGHIJ", "lamp_01"


@pytest.mark.parametrize(
    "family,direction",
    [
        ("thing/up/property", "up"),
        ("thing/down/property", "down"),
        ("thing/up/event", "up"),
        ("thing/down/event", "down"),
        ("thing/up/action", "up"),
        ("thing/down/action", "down"),
        ("ota/report", "up"),
        ("ota/update", "down"),
        ("resource/up/service", "up"),
        ("resource/down/service", "down"),
        ("sys/operation", "up"),
        ("sys/operation/result", "down"),
        ("gateway/operation", "up"),
        ("gateway/operation/result", "down"),
        ("broadcast/rxd", "down"),
    ],
)
@pytest.mark.parametrize("dollar", [False, True])
def test_every_standard_topic_parses_in_both_forms(family, direction, dollar):
    # Given a standard topic, bare or $-prefixed
    text = ("$" if dollar else "") + f"{family}/{P}/{D}"
    # When it is parsed
    t = topics.parse(text)
    # Then every field is known and the form is remembered
    assert t == topics.Topic(family, direction, P, D, None, dollar)
    assert str(t) == text
    assert t.canonical == f"{family}/{P}/{D}"
    assert t.device == f"{P}/{D}" and t.client_id == P + D


def test_custom_topics_parse_with_their_name():
    t = topics.parse(f"{P}/{D}/data/room_1")
    assert t == topics.Topic("custom", None, P, D, "data/room_1", False)
    assert topics.parse(f"{P}/{D}/control").name == "control"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "thing",
        "thing/up/property",
        f"thing/up/property/{P}",
        f"thing/up/property/{P}/{D}/extra",
        f"thing/up/property/abcdefghij/{D}",  # product ids are upper-case
        f"thing/up/property/ABCDEFGHI/{D}",  # 9 characters
        f"thing/up/property/{P}/bad name",  # a space is not a device-name character
        f"thing/up/property/{P}/" + "d" * 49,  # 49 characters
        f"thing/sideways/property/{P}/{D}",
        f"${P}/{D}/data",  # custom topics never carry $
        f"{P}/{D}/data/+",  # a filter, not a topic
        f"{P}/{D}/#",
        f"{P}/{D}/",
        f"{P}/{D}",
        "$aws/events/presence/connected/x",
        f"{P}/{D}/" + "a" * 65,
    ],
)
def test_anything_else_is_not_a_device_topic(text):
    assert topics.parse(text) is None


def test_normalize_strips_one_dollar():
    assert topics.normalize("$thing/up/property/P/D") == ("thing/up/property/P/D", True)
    assert topics.normalize("thing/up/property/P/D") == ("thing/up/property/P/D", False)


@pytest.mark.parametrize(
    "up,down",
    [
        ("thing/up/property", "thing/down/property"),
        ("thing/up/event", "thing/down/event"),
        ("thing/up/action", "thing/down/action"),
        ("ota/report", "ota/update"),
        ("resource/up/service", "resource/down/service"),
        ("sys/operation", "sys/operation/result"),
        ("gateway/operation", "gateway/operation/result"),
    ],
)
@pytest.mark.parametrize("dollar", ["", "$"])
def test_the_cloud_answers_on_the_form_the_device_used(up, down, dollar):
    assert topics.reply_topic(f"{dollar}{up}/{P}/{D}") == f"{dollar}{down}/{P}/{D}"


@pytest.mark.parametrize("text", [f"thing/down/property/{P}/{D}", f"{P}/{D}/data", "garbage"])
def test_nothing_answers_downlinks_custom_topics_or_garbage(text):
    with pytest.raises(ValueError):
        topics.reply_topic(text)


def test_builders_take_full_and_short_family_names():
    assert topics.down("thing/down/property", P, D) == f"thing/down/property/{P}/{D}"
    assert topics.down("property", P, D, dollar=True) == f"$thing/down/property/{P}/{D}"
    assert topics.down("ota", P, D, dollar=True) == f"$ota/update/{P}/{D}"
    assert topics.down("sys", P, D) == f"sys/operation/result/{P}/{D}"
    assert topics.down("gateway", P, D) == f"gateway/operation/result/{P}/{D}"
    assert topics.down("broadcast", P, D) == f"broadcast/rxd/{P}/{D}"
    assert topics.up("property", P, D, dollar=True) == f"$thing/up/property/{P}/{D}"
    assert topics.up("ota", P, D) == f"ota/report/{P}/{D}"
    assert topics.custom(P, D, "data") == f"{P}/{D}/data"
    with pytest.raises(ValueError):
        topics.down("thing/up/property", P, D)  # an uplink family
    with pytest.raises(ValueError):
        topics.up("broadcast", P, D)


def test_device_topics_are_the_devices_own_in_both_forms():
    # Given a custom product's declared topics
    declared = [
        {"name": "control", "permission": "sub"},
        {"name": "data", "permission": "pubsub"},
        {"name": "event", "permission": "pub"},
        {"name": "zone/+", "permission": "pub"},
    ]
    # When the device's topics are listed
    dt = topics.device_topics(P, D, declared)
    # Then it publishes to its uplinks and subscribes to its downlinks, both forms
    assert f"thing/up/property/{P}/{D}" in dt.publish and f"$thing/up/property/{P}/{D}" in dt.publish
    assert f"$ota/report/{P}/{D}" in dt.publish and f"sys/operation/{P}/{D}" in dt.publish
    assert f"$thing/down/property/{P}/{D}" in dt.subscribe and f"$ota/update/{P}/{D}" in dt.subscribe
    assert f"broadcast/rxd/{P}/{D}" in dt.subscribe
    assert not any("/down/" in t or "update" in t or "result" in t for t in dt.publish)
    # and custom topics per permission, never in the $ form
    assert f"{P}/{D}/data" in dt.publish and f"{P}/{D}/data" in dt.subscribe
    assert f"{P}/{D}/event" in dt.publish and f"{P}/{D}/event" not in dt.subscribe
    assert f"{P}/{D}/control" in dt.subscribe and f"{P}/{D}/control" not in dt.publish
    assert f"{P}/{D}/zone/+" in dt.publish
    assert not any(t.startswith(f"${P}") for t in dt.publish + dt.subscribe)
    # and only bare forms when asked (what an IoT Core policy can name)
    assert not any(t.startswith("$") for t in topics.device_topics(P, D, declared, dollar_forms=False).publish)


@pytest.mark.parametrize(
    "pattern,topic,ok",
    [
        ("data", "data", True),
        ("data/+", "data/room1", True),
        ("data/+", "data", False),  # + is exactly one level
        ("data/+", "data/a/b", False),  # never several
        ("data/+", "data/", False),  # never an empty level
        ("data/+", "data/+", True),  # the declared filter itself
        ("data/+", "data/#", False),
        ("+/x", "a/x", True),
        ("+/x", "a/y", False),
        ("P/D/data/+", "P/D/data/z", True),
        ("data/+", "datax/1", False),
    ],
)
def test_custom_topic_plus_is_one_whole_level(pattern, topic, ok):
    assert topics.custom_topic_matches(pattern, topic) is ok


def test_custom_permission_is_the_first_matching_declaration():
    declared = [{"name": "data/+", "permission": "pub"}, {"name": "data/x", "permission": "sub"}]
    assert topics.custom_permission(declared, "data/x") == "pub"
    assert topics.custom_permission(declared, "other") is None
    assert topics.custom_permission(None, "data/x") is None


def test_client_id_splits_after_ten_characters():
    assert topics.split_client_id(P + D) == (P, D)
    assert topics.split_client_id(P + "a:b-c_d") == (P, "a:b-c_d")
    for bad in ("", P, "abcdefghij" + D, P + "bad name", P + "x" * 49, None):
        with pytest.raises(ValueError):
            topics.split_client_id(bad)
