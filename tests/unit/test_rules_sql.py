"""The rule SQL (SPEC §9.1): the SPEC's examples as a table, and properties (hypothesis) of the
parser, the compiled evaluator and topic-filter matching against independent reference code."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from chalicelib.forwarders.base import Delivery, MissingField
from chalicelib.services import rules_sql as rs


def run(sql: str, payload: Any, topic: str = "PID1/device00/data", **kw: Any) -> Any:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return rs.run(
        sql,
        topic,
        raw,
        product_id=kw.pop("pid", "PID1"),
        device_name=kw.pop("dn", "device00"),
        timestamp_ms=kw.pop("ts", 1_700_000_000_123),
        **kw,
    )


SPEC_SQL = (
    "SELECT room1.temperature AS temp, room1.humidity AS hum FROM '/+/data' "
    "WHERE topic(2) = 'device00' AND room1.temperature > 30"
)
ROOM = {"room1": {"temperature": 31, "humidity": 55}, "house": "h1"}

# (sql, topic, payload, expected output or None for "no match")
TABLE = [
    (SPEC_SQL, "PID1/device00/data", ROOM, {"temp": 31, "hum": 55}),
    (SPEC_SQL, "PID1/device00/data", {"room1": {"temperature": 30, "humidity": 55}}, None),
    (SPEC_SQL, "PID1/device01/data", ROOM, None),
    (SPEC_SQL, "PID1/device00/event", ROOM, None),
    (SPEC_SQL, "PID1/device00/data", {"room1": {"humidity": 55}}, None),  # undefined → false
    (
        SPEC_SQL,
        "PID1/device00/data",
        {"room1": {"temperature": "31.5", "humidity": 1}},  # numeric string
        {"temp": "31.5", "hum": 1},
    ),
    ("SELECT * FROM '+/+/data'", "P/D/data", {"a": 1}, {"a": 1}),
    ("SELECT * FROM '#'", "a/b/c/d", {"a": 1}, {"a": 1}),
    ("SELECT * FROM 'P/#'", "P", {"a": 1}, {"a": 1}),
    ("SELECT a FROM 'P/+'", "P/x/y", {"a": 1}, None),
    ("SELECT a.b.c AS v FROM '#'", "t", {"a": {"b": {"c": [1, 2]}}}, {"v": [1, 2]}),
    ("SELECT a.b FROM '#'", "t", {"a": {"b": None}}, {"b": None}),
    (
        "SELECT productId() AS p, deviceName() AS d, topic() AS t, topic(3) AS t3, topic(9) AS t9, "
        "payloadLen() AS n FROM '#'",
        "PID1/device00/data",
        {"x": 1},
        {"p": "PID1", "d": "device00", "t": "PID1/device00/data", "t3": "data", "n": 8},
    ),
    ("SELECT timestamp() FROM '#'", "t", {}, {"timestamp": 1_700_000_000_123}),
    (
        "SELECT bin_to_dec('1010') AS a, bin_to_dec('12') AS b, to_hex(255) AS c, to_hex('AB') AS d FROM '#'",
        "t",
        {},
        {"a": 10, "c": "ff", "d": "4142"},
    ),
    (
        "SELECT upper(s) AS u, lower(s) AS l, concat(s, n) AS c, replace(s, 'b', 'X') AS r, "
        "substring(s, 1, 3) AS sub FROM '#'",
        "t",
        {"s": "aBbc", "n": 7},
        {"u": "ABBC", "l": "abbc", "c": "aBbc7", "r": "aBXc", "sub": "Bb"},
    ),
    (
        "SELECT crypto(s, 'MD5') AS m, crypto(s, 'sha256') AS h FROM '#'",
        "t",
        {"s": "abc"},
        {"m": hashlib.md5(b"abc").hexdigest(), "h": hashlib.sha256(b"abc").hexdigest()},
    ),
    (
        "SELECT a + b * 2 AS x, (a + b) * 2 AS y, a / b AS q, a % b AS m, -a AS neg, a - -b AS z FROM '#'",
        "t",
        {"a": 7, "b": 2},
        {"x": 11, "y": 18, "q": 3.5, "m": 1, "neg": -7, "z": 9},
    ),
    ("SELECT a / b AS q FROM '#'", "t", {"a": 1, "b": 0}, {}),  # division by zero: undefined
    ("SELECT 'const' AS c, 42 AS n, 1.5 FROM '#'", "t", {}, {"c": "const", "n": 42, "_3": 1.5}),
    ("SELECT a FROM '#' WHERE a = 1 OR a = 2", "t", {"a": 2}, {"a": 2}),
    ("SELECT a FROM '#' WHERE (a = 1 OR a = 2) AND b <> 'x'", "t", {"a": 1, "b": "x"}, None),
    ("SELECT a FROM '#' WHERE a != 3 AND a >= 1 AND a <= 1 AND a < 2", "t", {"a": 1}, {"a": 1}),
    ("SELECT a FROM '#' WHERE s = 'it''s'", "t", {"a": 1, "s": "it's"}, {"a": 1}),
    ("SELECT a FROM '#' WHERE a > 'abc'", "t", {"a": 5}, None),  # incomparable → false
    ("SELECT * FROM '+/+/data'", "P/D/data", b"\x00\xff", b"\x00\xff"),  # binary only with *
    ("SELECT a FROM '+/+/data'", "P/D/data", b"\x00\xff", {}),
    ("SELECT house FROM '/+/data'", "PID1/device00/data", ROOM, {"house": "h1"}),
    ("select a as b from '#' where a=1", "t", {"a": 1}, {"b": 1}),  # keywords any case
]


@pytest.mark.parametrize("sql,topic,payload,expected", TABLE)
def test_spec_examples(sql: str, topic: str, payload: Any, expected: Any) -> None:
    assert run(sql, payload, topic) == expected


def test_republish_topic_substitution_of_the_spec_example() -> None:
    out = run("SELECT house, room1.temperature AS temp FROM '/+/data' WHERE room1.temperature > 30", ROOM)
    d = Delivery(
        job={"msg": {"pid": "PID1", "dn": "device00"}, "out": {"j": out}},
        action={"type": "republish", "topic": "house_monitor/${house}/app"},
        rule="r",
        webhook_id="w",
        target_id="t",
    )
    assert d.substitute(d.action["topic"]) == "house_monitor/h1/app"
    assert d.substitute("${deviceName}/${temp}") == "device00/31"
    with pytest.raises(MissingField):
        d.substitute("house_monitor/${nothere}/app")


def test_randint_newuuid_requestid() -> None:
    out = run("SELECT randint(1, 3) AS r, newuuid() AS u, requestId() AS q1, requestId() AS q2 FROM '#'", {})
    assert 1 <= out["r"] <= 3 and re.fullmatch(r"[0-9a-f-]{36}", out["u"]) and out["q1"] == out["q2"]


ERRORS = [
    ("", 1, "empty"),
    ("SELECT a FROM x", 15, "quoted topic filter"),
    ("SELECT a, FROM 'x'", 11, "expected a value"),
    ("SELECT a FROM 'x' WHERE", 24, "end of the SQL"),
    ("SELECT (SELECT a FROM 'y') FROM 'x'", 9, "sub-selects"),
    ("SELECT a FROM (SELECT b FROM 'x')", 15, "sub-selects"),
    ("SELECT a[0] FROM 'x'", 9, "JSON arrays"),
    ("SELECT a FROM 'x' WHERE a IN (1)", 27, "IN is not supported"),
    ("SELECT a FROM 'x' WHERE a LIKE 'b%'", 27, "LIKE is not supported"),
    ("SELECT a FROM 'x' JOIN y", 19, "JOIN"),
    ("SELECT a FROM 'x' GROUP BY a", 19, "GROUP BY"),
    ("SELECT nope(a) FROM 'x'", 8, "unknown function"),
    ("SELECT upper(a, b) FROM 'x'", 8, "takes 1 argument"),
    ("SELECT crypto(a, 'CRC') FROM 'x'", 18, "crypto() algorithm"),
    ("SELECT topic(0) FROM 'x'", 14, "level number"),
    ("SELECT a FROM 'x/#/y'", 18, "'#' must be a whole level"),
    ("SELECT a FROM 'x/a+'", 19, "'+' must be a whole level"),
    ("SELECT a FROM 'x' WHERE a = 1 = 2", 31, "chained"),
    ("SELECT a FROM 'x' WHERE (a = 1", 31, "expected ')'"),
    ("SELECT \"a\" FROM 'x'", 8, "single-quoted"),
    ("SELECT a FROM 'x", 15, "unterminated"),
    ("SELECT a FROM 'x' WHERE a ~ 1", 27, "unexpected character"),
    ("SELECT a AS 1 FROM 'x'", 13, "AS needs a name"),
    ("SELECT a FROM 'x' extra", 19, "after the statement"),
    ("SELECT a AS x, b AS x FROM 'y'", 16, "selected twice"),
    ("SELECT " + "a," * 150 + "b FROM 'x'", 301, "longer than 300"),
]


@pytest.mark.parametrize("sql,position,text", ERRORS)
def test_refused_sql_names_the_position(sql: str, position: int, text: str) -> None:
    with pytest.raises(rs.SqlError) as info:
        rs.compile_rule(sql)
    assert info.value.position == position, str(info.value)
    assert text in info.value.message


# ------------------------------------------------------------------ properties


@hsettings(max_examples=400, deadline=None)
@given(st.text(max_size=120))
def test_any_text_compiles_or_is_refused_with_a_position(text: str) -> None:
    try:
        rule = rs.compile_rule(text)
    except rs.SqlError as exc:
        assert 1 <= exc.position <= max(len(text), rs.MAX_SQL) + 1
    else:  # whatever compiled runs on any payload without raising
        for payload in (rs.UNDEFINED, {"a": {"b": 1}}, [1], "s"):
            out = rule.evaluate(payload, rs.Message("p", "d", "t/x", b"\x00", 0, levels=["t", "x"]))
            assert out is None or isinstance(out, (dict, bytes))


KEYS = ["a", "b", "c"]
ints = st.integers(min_value=-1000, max_value=1000)


def _arith() -> st.SearchStrategy:
    leaf = st.one_of(ints.map(lambda n: ("n", n)), st.sampled_from(KEYS).map(lambda k: ("k", k)))
    return st.recursive(leaf, lambda sub: st.tuples(st.sampled_from(["+", "-", "*"]), sub, sub), max_leaves=8)


def _cond() -> st.SearchStrategy:
    cmp = st.tuples(st.sampled_from(["=", "<>", "<", "<=", ">", ">="]), _arith(), _arith())
    return st.recursive(cmp, lambda sub: st.tuples(st.sampled_from(["AND", "OR"]), sub, sub), max_leaves=4)


def sql_of(e: Any) -> str:
    if e[0] == "n":
        return str(e[1]) if e[1] >= 0 else f"({e[1]})"
    if e[0] == "k":
        return f"v.{e[1]}"
    return f"({sql_of(e[1])} {e[0]} {sql_of(e[2])})"


def ref(e: Any, env: dict[str, int]) -> Any:
    """Reference semantics, written independently of the compiler: plain Python on ints."""
    op = e[0]
    if op == "n":
        return e[1]
    if op == "k":
        return env[e[1]]
    a, b = ref(e[1], env), ref(e[2], env)
    return {
        "+": lambda: a + b,
        "-": lambda: a - b,
        "*": lambda: a * b,
        "=": lambda: a == b,
        "<>": lambda: a != b,
        "<": lambda: a < b,
        "<=": lambda: a <= b,
        ">": lambda: a > b,
        ">=": lambda: a >= b,
        "AND": lambda: a and b,
        "OR": lambda: a or b,
    }[op]()


@hsettings(max_examples=300, deadline=None)
@given(_arith(), _cond(), st.fixed_dictionaries({k: ints for k in KEYS}))
def test_compiled_evaluator_agrees_with_reference_semantics(expr: Any, cond: Any, env: dict[str, int]) -> None:
    sql = f"SELECT {sql_of(expr)} AS r FROM '+/+/data' WHERE {sql_of(cond)}"
    if len(sql) > rs.MAX_SQL:
        return
    out = run(sql, {"v": env})
    if ref(cond, env):
        assert out == {"r": ref(expr, env)}
    else:
        assert out is None


@hsettings(max_examples=200, deadline=None)
@given(ints, ints, ints)
def test_precedence_without_parentheses(a: int, b: int, c: int) -> None:
    out = run(
        "SELECT a + b * c AS x, a - b - c AS y, a * b % 7 AS z FROM '#' WHERE a < b OR b < c AND c < a",
        {"a": a, "b": b, "c": c},
    )
    if a < b or (b < c and c < a):
        assert out == {"x": a + b * c, "y": a - b - c, "z": (a * b) % 7}
    else:
        assert out is None


level = st.sampled_from(["a", "b", "c", "data"])


def ref_match(filt: str, topic: str) -> bool:
    levels = filt.split("/")
    if filt.startswith("/"):
        levels[0] = "+"
    pattern = "/".join("[^/]*" if x == "+" else ".*" if x == "#" else re.escape(x) for x in levels)
    if levels[-1] == "#":
        pattern = pattern[:-3].rstrip("/") + "(/.*)?" if len(levels) > 1 else ".*"
    return re.fullmatch(pattern, topic) is not None


@hsettings(max_examples=400, deadline=None)
@given(
    st.lists(st.one_of(level, st.just("+")), min_size=1, max_size=4),
    st.booleans(),
    st.booleans(),
    st.lists(level, min_size=1, max_size=5),
)
def test_topic_filter_matching_agrees_with_a_regex(
    parts: list[str], hash_tail: bool, relative: bool, topic_levels: list[str]
) -> None:
    filt = "/".join(parts + (["#"] if hash_tail else []))
    if relative:
        filt = "/" + filt.split("/", 1)[1] if "/" in filt else filt
    topic = "/".join(topic_levels)
    rule = rs.compile_rule(f"SELECT * FROM '{filt}'")
    assert rule.matches(topic.split("/")) == ref_match(filt, topic), (filt, topic)


@hsettings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.one_of(st.none(), st.booleans(), ints, st.text(max_size=5)),
        lambda sub: st.dictionaries(st.sampled_from(KEYS), sub, max_size=3),
        max_leaves=6,
    )
)
def test_nested_keys_never_raise_and_select_what_is_there(doc: Any) -> None:
    out = run(
        "SELECT a.b.c AS x, a.b AS y, c FROM '#' WHERE a.b.c = a.b.c OR c = c",
        {"v": 0, **(doc if isinstance(doc, dict) else {"a": doc})},
    )
    assert out is None or isinstance(out, dict)
