"""The rule engine's SQL (SPEC §9.1): a parser with positions in every error and a compiler
that turns a rule into one Python function, once, when the rule is saved.

    SELECT <fields> FROM '<topic filter>' [WHERE <condition>]

* fields: ``*``, JSON keys with nested paths (``room1.temperature``), ``AS`` aliases, function
  calls, constants and arithmetic; at most 300 characters of SQL.
* topic filter: ``+`` = one level, ``#`` = any number of trailing levels (last level only).  A
  filter that starts with ``/`` is relative to the product: ``'/+/data'`` = ``'+/+/data'`` (level
  1 is the ProductId of custom topics ``{pid}/{dn}/{name}``).
* condition: ``= <> != < <= > >= AND OR ()``, ``+ - * / %``, string and number literals, nested
  keys.  Sub-selects, JSON arrays and other SQL (JOIN, GROUP BY, IN, LIKE, CASE…) are refused
  with a message naming the position.
* functions: see :data:`FUNCTIONS`.

Semantics, chosen to never raise on a device's data:

* a key absent from the payload (or a payload that is not a JSON object) is *undefined*: a
  selected undefined field is left out of the output, and any comparison with it is false;
* comparisons between a number and a numeric string compare numbers; other mixed types are
  unequal (``<>`` true, ordering false);
* arithmetic on non-numbers, or a division by zero, is undefined;
* a selected key is named by its alias, else its last path segment, else the function name,
  else ``_<n>`` (its 1-based position in the select list);
* ``*`` merges the whole JSON object; for a payload that is not JSON, ``SELECT *`` (alone)
  yields the raw bytes — the only way to forward binary payloads.

:func:`compile_rule` emits the Python source of one function ``rule(p, m)`` (``p`` the parsed
payload or undefined, ``m`` a :class:`Message`) and ``exec``\\ s it: literals are emitted with
``repr`` and keys as string constants, so no text of the rule ever becomes code.  Evaluating a
message is one call of that function, not a walk of the syntax tree.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MAX_SQL = 300


class SqlError(Exception):
    """A rule the engine refuses: ``position`` is the 1-based character of the fault."""

    def __init__(self, message: str, position: int):
        super().__init__(f"{message} (at character {position})")
        self.message = message
        self.position = position


class _Undefined:
    __slots__ = ()

    def __repr__(self) -> str:
        return "undefined"

    def __bool__(self) -> bool:
        return False


UNDEFINED = _Undefined()


class Binary(bytes):
    """The output of ``SELECT *`` on a payload that is not JSON: the raw bytes."""


# ===================================================================== tokens

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<num>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
  | (?P<str>'(?:[^']|'')*')
  | (?P<dstr>"(?:[^"]|"")*")
  | (?P<name>[A-Za-z_$][A-Za-z0-9_$\-]*)
  | (?P<op><>|!=|<=|>=|[=<>+\-*/%(),.])
  | (?P<bad>.)
""",
    re.VERBOSE | re.DOTALL,
)

KEYWORDS = {"SELECT", "FROM", "WHERE", "AS", "AND", "OR"}
#: SQL the engine knows but refuses, with the reason users see
REFUSED = {
    "JOIN": "JOIN is not supported",
    "GROUP": "GROUP BY is not supported",
    "ORDER": "ORDER BY is not supported",
    "LIMIT": "LIMIT is not supported",
    "HAVING": "HAVING is not supported",
    "UNION": "UNION is not supported",
    "IN": "IN is not supported: use OR",
    "LIKE": "LIKE is not supported",
    "BETWEEN": "BETWEEN is not supported: use >= AND <=",
    "CASE": "CASE is not supported",
    "NOT": "NOT is not supported: use <> or the opposite comparison",
    "IS": "IS is not supported",
    "DISTINCT": "DISTINCT is not supported",
}


@dataclass(frozen=True)
class Tok:
    kind: str  # num, str, name, kw, op, eof
    text: str
    pos: int  # 1-based
    value: Any = None


def tokenize(sql: str) -> list[Tok]:
    toks: list[Tok] = []
    for m in _TOKEN.finditer(sql):
        kind = m.lastgroup
        text = m.group()
        pos = m.start() + 1
        if kind == "ws":
            continue
        if kind == "bad":
            if text == "[" or text == "]":
                raise SqlError("JSON arrays are not supported", pos)
            if text in "'\"":
                raise SqlError("unterminated string literal", pos)
            raise SqlError(f"unexpected character {text!r}", pos)
        if kind == "num":
            value: Any = float(text) if any(c in text for c in ".eE") else int(text)
            toks.append(Tok("num", text, pos, value))
        elif kind == "str":
            toks.append(Tok("str", text, pos, text[1:-1].replace("''", "'")))
        elif kind == "dstr":
            raise SqlError("strings are single-quoted ('text'); double quotes are not supported", pos)
        elif kind == "name":
            up = text.upper()
            if up in KEYWORDS:
                toks.append(Tok("kw", up, pos))
            elif up in REFUSED:
                raise SqlError(REFUSED[up], pos)
            else:
                toks.append(Tok("name", text, pos))
        else:
            toks.append(Tok("op", text, pos))
    toks.append(Tok("eof", "", len(sql) + 1))
    return toks


# ===================================================================== syntax tree


@dataclass(frozen=True)
class Node:
    pos: int


@dataclass(frozen=True)
class Const(Node):
    value: Any


@dataclass(frozen=True)
class Path(Node):
    keys: tuple[str, ...]


@dataclass(frozen=True)
class Call(Node):
    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class BinOp(Node):
    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Neg(Node):
    operand: Node


@dataclass(frozen=True)
class Star(Node):
    pass


@dataclass(frozen=True)
class Item:
    expr: Node
    alias: str | None
    name: str


@dataclass(frozen=True)
class Query:
    items: tuple[Item, ...]
    topic_filter: str
    where: Node | None
    filter_pos: int


#: name -> (min args, max args)
FUNCTIONS: dict[str, tuple[int, int]] = {
    "productid": (0, 0),
    "devicename": (0, 0),
    "timestamp": (0, 0),
    "topic": (0, 1),
    "payloadlen": (0, 0),
    "bin_to_dec": (1, 1),
    "to_hex": (1, 1),
    "randint": (2, 2),
    "upper": (1, 1),
    "lower": (1, 1),
    "crypto": (2, 2),
    "concat": (2, 2),
    "requestid": (0, 0),
    "newuuid": (0, 0),
    "replace": (3, 3),
    "substring": (3, 3),
}
#: display names (the spelling of SPEC §9.1)
FUNCTION_NAMES = {
    "productid": "productId",
    "devicename": "deviceName",
    "payloadlen": "payloadLen",
    "requestid": "requestId",
}
CRYPTO = ("MD5", "SHA1", "SHA256", "SHA384", "SHA512")
_CMP = ("=", "<>", "!=", "<", "<=", ">", ">=")


class _Parser:
    def __init__(self, sql: str):
        self.sql = sql
        self.toks = tokenize(sql)
        self.i = 0

    @property
    def tok(self) -> Tok:
        return self.toks[self.i]

    def take(self) -> Tok:
        t = self.toks[self.i]
        self.i += 1
        return t

    def at(self, kind: str, text: str | None = None) -> bool:
        t = self.tok
        return t.kind == kind and (text is None or t.text == text)

    def expect(self, kind: str, text: str, what: str) -> Tok:
        if not self.at(kind, text):
            raise SqlError(f"expected {what}, found {self._desc(self.tok)}", self.tok.pos)
        return self.take()

    @staticmethod
    def _desc(t: Tok) -> str:
        return "the end of the SQL" if t.kind == "eof" else repr(t.text)

    # -- statement
    def query(self) -> Query:
        self.expect("kw", "SELECT", "SELECT")
        items = [self.item(1)]
        while self.at("op", ","):
            self.take()
            items.append(self.item(len(items) + 1))
        self.expect("kw", "FROM", "FROM or ','")
        t = self.tok
        if t.kind != "str":
            if self.at("op", "("):
                raise SqlError("sub-selects are not supported", t.pos)
            raise SqlError(f"FROM takes a quoted topic filter such as '/+/data', found {self._desc(t)}", t.pos)
        self.take()
        check_filter(t.value, t.pos)
        where = None
        if self.at("kw", "WHERE"):
            self.take()
            where = self.expr()
        if not self.at("eof"):
            raise SqlError(f"unexpected {self._desc(self.tok)} after the statement", self.tok.pos)
        return Query(tuple(items), t.value, where, t.pos)

    def item(self, index: int) -> Item:
        t = self.tok
        if t.kind == "op" and t.text == "*":
            nxt = self.toks[self.i + 1]
            if (nxt.kind == "op" and nxt.text == ",") or (nxt.kind == "kw" and nxt.text == "FROM") or nxt.kind == "eof":
                self.take()
                return Item(Star(t.pos), None, "*")
        expr = self.expr()
        alias = None
        if self.at("kw", "AS"):
            self.take()
            a = self.tok
            if a.kind != "name":
                raise SqlError(f"AS needs a name, found {self._desc(a)}", a.pos)
            self.take()
            alias = a.text
        elif self.tok.kind == "name":  # an alias without AS
            alias = self.take().text
        if alias is not None:
            name = alias
        elif isinstance(expr, Path):
            name = expr.keys[-1]
        elif isinstance(expr, Call):
            name = FUNCTION_NAMES.get(expr.name, expr.name)
        else:
            name = f"_{index}"
        return Item(expr, alias, name)

    # -- expressions (precedence climbing: OR < AND < comparison < + - < * / % < unary)
    def expr(self) -> Node:
        left = self.conj()
        while self.at("kw", "OR"):
            t = self.take()
            left = BinOp(t.pos, "OR", left, self.conj())
        return left

    def conj(self) -> Node:
        left = self.comparison()
        while self.at("kw", "AND"):
            t = self.take()
            left = BinOp(t.pos, "AND", left, self.comparison())
        return left

    def comparison(self) -> Node:
        left = self.additive()
        if self.tok.kind == "op" and self.tok.text in _CMP:
            t = self.take()
            left = BinOp(t.pos, "<>" if t.text == "!=" else t.text, left, self.additive())
            if self.tok.kind == "op" and self.tok.text in _CMP:
                raise SqlError("comparisons cannot be chained: join them with AND", self.tok.pos)
        return left

    def additive(self) -> Node:
        left = self.term()
        while self.tok.kind == "op" and self.tok.text in "+-":
            t = self.take()
            left = BinOp(t.pos, t.text, left, self.term())
        return left

    def term(self) -> Node:
        left = self.unary()
        while self.tok.kind == "op" and self.tok.text in ("*", "/", "%"):
            t = self.take()
            left = BinOp(t.pos, t.text, left, self.unary())
        return left

    def unary(self) -> Node:
        if self.at("op", "-"):
            t = self.take()
            operand = self.unary()
            if isinstance(operand, Const) and isinstance(operand.value, (int, float)):
                return Const(t.pos, -operand.value)
            return Neg(t.pos, operand)
        if self.at("op", "+"):
            self.take()
            return self.unary()
        return self.primary()

    def primary(self) -> Node:
        t = self.tok
        if t.kind in ("num", "str"):
            self.take()
            return Const(t.pos, t.value)
        if t.kind == "op" and t.text == "(":
            self.take()
            if self.at("kw", "SELECT"):
                raise SqlError("sub-selects are not supported", self.tok.pos)
            inner = self.expr()
            self.expect("op", ")", "')'")
            return inner
        if t.kind == "name":
            self.take()
            if self.at("op", "("):
                return self.call(t)
            keys = [t.text]
            while self.at("op", "."):
                self.take()
                k = self.tok
                if k.kind not in ("name", "num") or (k.kind == "num" and not k.text.isdigit()):
                    raise SqlError(f"expected a key after '.', found {self._desc(k)}", k.pos)
                self.take()
                keys.append(k.text)
            return Path(t.pos, tuple(keys))
        if t.kind == "kw" and t.text == "SELECT":
            raise SqlError("sub-selects are not supported", t.pos)
        raise SqlError(f"expected a value, a key or a function, found {self._desc(t)}", t.pos)

    def call(self, name_tok: Tok) -> Node:
        low = name_tok.text.lower()
        if low not in FUNCTIONS:
            raise SqlError(f"unknown function {name_tok.text}()", name_tok.pos)
        self.take()  # (
        args: list[Node] = []
        if not self.at("op", ")"):
            if self.at("kw", "SELECT"):
                raise SqlError("sub-selects are not supported", self.tok.pos)
            args.append(self.expr())
            while self.at("op", ","):
                self.take()
                args.append(self.expr())
        self.expect("op", ")", "')' or ','")
        lo, hi = FUNCTIONS[low]
        shown = FUNCTION_NAMES.get(low, low)
        if not lo <= len(args) <= hi:
            want = str(lo) if lo == hi else f"{lo} to {hi}"
            raise SqlError(f"{shown}() takes {want} argument(s), got {len(args)}", name_tok.pos)
        if low == "crypto":
            alg = args[1]
            if not isinstance(alg, Const) or not isinstance(alg.value, str) or alg.value.upper() not in CRYPTO:
                raise SqlError("crypto() algorithm must be one of " + ", ".join(f"'{a}'" for a in CRYPTO), alg.pos)
        if low == "topic" and args:
            n = args[0]
            if not isinstance(n, Const) or not isinstance(n.value, int) or n.value < 1:
                raise SqlError("topic(n) takes a level number from 1", n.pos)
        return Call(name_tok.pos, low, tuple(args))


def check_filter(text: str, pos: int) -> None:
    if not text or len(text) > 128:
        raise SqlError("the topic filter must be 1-128 characters", pos)
    levels = text.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise SqlError("'#' must be a whole level and the last one", pos + 1 + text.index("#"))
        if "+" in level and level != "+":
            raise SqlError("'+' must be a whole level", pos + 1 + text.index("+"))


def parse(sql: str) -> Query:
    if not isinstance(sql, str) or not sql.strip():
        raise SqlError("the SQL is empty", 1)
    if len(sql) > MAX_SQL:
        raise SqlError(f"the SQL is longer than {MAX_SQL} characters", MAX_SQL + 1)
    return _Parser(sql).query()


# ===================================================================== run-time helpers


@dataclass(slots=True)
class Message:
    """What a rule sees of one message (besides its parsed payload)."""

    product_id: str
    device_name: str
    topic: str
    payload: bytes
    timestamp_ms: int
    qos: int = 0
    request_id: str = ""
    levels: list[str] = field(default_factory=list)


def _num(x: Any) -> Any:
    t = type(x)
    if t is int or t is float:
        return x
    if t is str:
        try:
            return float(x) if any(c in x for c in ".eEnN") else int(x)
        except ValueError:
            return UNDEFINED
    if t is bool:
        return UNDEFINED
    return UNDEFINED


def _pair(a: Any, b: Any) -> tuple[Any, Any] | None:
    """Comparable operands, or None (undefined / incomparable)."""
    if a is UNDEFINED or b is UNDEFINED or a is None or b is None:
        return None
    ta, tb = type(a), type(b)
    if ta is tb and ta in (int, float, str):
        return a, b
    if ta in (int, float) and tb in (int, float):
        return a, b
    if (ta in (int, float) and tb is str) or (ta is str and tb in (int, float)):
        na, nb = _num(a), _num(b)
        if na is UNDEFINED or nb is UNDEFINED:
            return None
        return na, nb
    if ta is bool and tb is bool:
        return a, b
    return None


def _eq(a: Any, b: Any) -> bool:
    p = _pair(a, b)
    if p is None:
        return a is not UNDEFINED and b is not UNDEFINED and a == b and type(a) is type(b)
    return p[0] == p[1]


def _ne(a: Any, b: Any) -> bool:
    if a is UNDEFINED or b is UNDEFINED:
        return False
    return not _eq(a, b)


def _lt(a: Any, b: Any) -> bool:
    p = _pair(a, b)
    return p is not None and type(p[0]) is not bool and p[0] < p[1]


def _le(a: Any, b: Any) -> bool:
    p = _pair(a, b)
    return p is not None and type(p[0]) is not bool and p[0] <= p[1]


def _gt(a: Any, b: Any) -> bool:
    p = _pair(a, b)
    return p is not None and type(p[0]) is not bool and p[0] > p[1]


def _ge(a: Any, b: Any) -> bool:
    p = _pair(a, b)
    return p is not None and type(p[0]) is not bool and p[0] >= p[1]


def _arith(op: str) -> Callable[[Any, Any], Any]:
    def run(a: Any, b: Any) -> Any:
        a, b = _num(a), _num(b)
        if a is UNDEFINED or b is UNDEFINED:
            return UNDEFINED
        try:
            if op == "+":
                r = a + b
            elif op == "-":
                r = a - b
            elif op == "*":
                r = a * b
            elif op == "/":
                r = a / b
                if isinstance(r, float) and r.is_integer() and isinstance(a, int) and isinstance(b, int):
                    r = int(r)
            else:
                r = a % b
        except (ZeroDivisionError, OverflowError):
            return UNDEFINED
        if isinstance(r, float) and (r != r or r in (float("inf"), float("-inf"))):
            return UNDEFINED
        return r

    return run


def _neg(a: Any) -> Any:
    a = _num(a)
    return UNDEFINED if a is UNDEFINED else -a


def _truth(x: Any) -> bool:
    return x is True or (x is not UNDEFINED and x is not None and x is not False and type(x) is not dict and bool(x))


def _get(p: Any, keys: tuple[str, ...]) -> Any:
    for k in keys:
        if type(p) is dict:
            p = p.get(k, UNDEFINED)
            if p is UNDEFINED:
                return p
        else:
            return UNDEFINED
    return p


def _get1(p: Any, k: str) -> Any:
    return p.get(k, UNDEFINED) if type(p) is dict else UNDEFINED


def _get2(p: Any, k1: str, k2: str) -> Any:
    if type(p) is dict:
        p = p.get(k1)
        if type(p) is dict:
            return p.get(k2, UNDEFINED)
    return UNDEFINED


def _s(x: Any) -> Any:
    """A value as text for the string functions (undefined stays undefined)."""
    if x is UNDEFINED:
        return x
    if isinstance(x, str):
        return x
    if x is None:
        return "null"
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, (dict, list)):
        return json.dumps(x, separators=(",", ":"), ensure_ascii=False)
    return str(x)


def f_topic(m: Message, n: Any = None) -> Any:
    if n is None:
        return m.topic
    levels = m.levels or m.topic.split("/")
    return levels[n - 1] if 0 < n <= len(levels) else UNDEFINED


def f_bin_to_dec(x: Any) -> Any:
    s = _s(x)
    if s is UNDEFINED or not s or any(c not in "01" for c in s):
        return UNDEFINED
    return int(s, 2)


def f_to_hex(x: Any) -> Any:
    if x is UNDEFINED:
        return x
    if isinstance(x, int) and not isinstance(x, bool):
        return format(x, "x") if x >= 0 else "-" + format(-x, "x")
    return _s(x).encode("utf-8").hex()


def f_randint(a: Any, b: Any) -> Any:
    a, b = _num(a), _num(b)
    if a is UNDEFINED or b is UNDEFINED:
        return UNDEFINED
    lo, hi = int(a), int(b)
    if lo > hi:
        lo, hi = hi, lo
    return random.randint(lo, hi)


def f_upper(x: Any) -> Any:
    s = _s(x)
    return s if s is UNDEFINED else s.upper()


def f_lower(x: Any) -> Any:
    s = _s(x)
    return s if s is UNDEFINED else s.lower()


def f_crypto(x: Any, alg: str) -> Any:
    s = _s(x)
    if s is UNDEFINED:
        return s
    return hashlib.new(alg.lower(), s.encode("utf-8")).hexdigest()


def f_concat(a: Any, b: Any) -> Any:
    a, b = _s(a), _s(b)
    if a is UNDEFINED or b is UNDEFINED:
        return UNDEFINED
    return a + b


def f_replace(src: Any, sub: Any, rep: Any) -> Any:
    src, sub, rep = _s(src), _s(sub), _s(rep)
    if UNDEFINED in (src, sub, rep) or sub == "":
        return src if sub == "" else UNDEFINED
    return src.replace(sub, rep)


def f_substring(src: Any, start: Any, end: Any) -> Any:
    """Characters ``start`` (0-based, inclusive) to ``end`` (exclusive), clamped to the string."""
    src, start, end = _s(src), _num(start), _num(end)
    if src is UNDEFINED or start is UNDEFINED or end is UNDEFINED:
        return UNDEFINED
    start, end = max(0, int(start)), max(0, int(end))
    return src[start:end]


def f_request_id(m: Message) -> str:
    if not m.request_id:
        m.request_id = uuid.uuid4().hex
    return m.request_id


def f_newuuid() -> str:
    return str(uuid.uuid4())


_RUNTIME: dict[str, Any] = {
    "_U": UNDEFINED,
    "_eq": _eq,
    "_ne": _ne,
    "_lt": _lt,
    "_le": _le,
    "_gt": _gt,
    "_ge": _ge,
    "_add": _arith("+"),
    "_sub": _arith("-"),
    "_mul": _arith("*"),
    "_div": _arith("/"),
    "_mod": _arith("%"),
    "_neg": _neg,
    "_t": _truth,
    "_get": _get,
    "_get1": _get1,
    "_get2": _get2,
    "_topic": f_topic,
    "_bin_to_dec": f_bin_to_dec,
    "_to_hex": f_to_hex,
    "_randint": f_randint,
    "_upper": f_upper,
    "_lower": f_lower,
    "_crypto": f_crypto,
    "_concat": f_concat,
    "_replace": f_replace,
    "_substring": f_substring,
    "_request_id": f_request_id,
    "_newuuid": f_newuuid,
    "_Binary": Binary,
    "_dict": dict,
}
_CMP_FN = {"=": "_eq", "<>": "_ne", "<": "_lt", "<=": "_le", ">": "_gt", ">=": "_ge"}
_ARITH_FN = {"+": "_add", "-": "_sub", "*": "_mul", "/": "_div", "%": "_mod"}


# ===================================================================== compiler


def _emit(node: Node) -> str:
    if isinstance(node, Const):
        return repr(node.value)
    if isinstance(node, Path):
        if len(node.keys) == 1:
            return f"_get1(p, {node.keys[0]!r})"
        if len(node.keys) == 2:
            return f"_get2(p, {node.keys[0]!r}, {node.keys[1]!r})"
        return f"_get(p, {node.keys!r})"
    if isinstance(node, Neg):
        return f"_neg({_emit(node.operand)})"
    if isinstance(node, BinOp):
        if node.op == "AND":
            return f"(_t({_emit(node.left)}) and _t({_emit(node.right)}))"
        if node.op == "OR":
            return f"(_t({_emit(node.left)}) or _t({_emit(node.right)}))"
        fn = _CMP_FN.get(node.op) or _ARITH_FN[node.op]
        return f"{fn}({_emit(node.left)}, {_emit(node.right)})"
    if isinstance(node, Call):
        a = [_emit(x) for x in node.args]
        n = node.name
        if n == "productid":
            return "m.product_id"
        if n == "devicename":
            return "m.device_name"
        if n == "timestamp":
            return "m.timestamp_ms"
        if n == "payloadlen":
            return "len(m.payload)"
        if n == "topic":
            return "m.topic" if not a else f"_topic(m, {a[0]})"
        if n == "requestid":
            return "_request_id(m)"
        if n == "newuuid":
            return "_newuuid()"
        if n == "crypto":
            return f"_crypto({a[0]}, {node.args[1].value.upper()!r})"  # type: ignore[attr-defined]
        return f"_{n}({', '.join(a)})"
    raise SqlError("this expression cannot be evaluated", node.pos)  # pragma: no cover - parser guards


@dataclass
class CompiledRule:
    sql: str
    query: Query
    source: str
    fn: Callable[[Any, Message], Any]
    filter_levels: tuple[str, ...]
    uses_payload: bool

    @property
    def topic_filter(self) -> str:
        return self.query.topic_filter

    def matches(self, levels: list[str]) -> bool:
        return match_levels(self.filter_levels, levels)

    def evaluate(self, payload: Any, msg: Message) -> Any:
        """The output (a dict, or :class:`Binary`) when the message matches the WHERE clause, else None.
        ``payload`` is the parsed JSON payload, or :data:`UNDEFINED` when it is not JSON."""
        return self.fn(payload, msg)


def filter_levels(topic_filter: str) -> tuple[str, ...]:
    levels = topic_filter.split("/")
    if topic_filter.startswith("/"):
        levels[0] = "+"
    return tuple(levels)


def match_levels(filt: tuple[str, ...], levels: list[str]) -> bool:
    n = len(filt)
    for i, f in enumerate(filt):
        if f == "#":
            return len(levels) >= i
        if i >= len(levels):
            return False
        if f != "+" and f != levels[i]:
            return False
    return len(levels) == n


def _uses_payload(node: Node | None) -> bool:
    if node is None:
        return False
    if isinstance(node, (Path, Star)):
        return True
    if isinstance(node, BinOp):
        return _uses_payload(node.left) or _uses_payload(node.right)
    if isinstance(node, Neg):
        return _uses_payload(node.operand)
    if isinstance(node, Call):
        return any(_uses_payload(a) for a in node.args)
    return False


def compile_rule(sql: str) -> CompiledRule:
    """Parse and compile ``sql``; raises :class:`SqlError` with the position of the first fault."""
    q = parse(sql)
    lines = ["def rule(p, m):"]
    if q.where is not None:
        lines.append(f"    if not _t({_emit(q.where)}):")
        lines.append("        return None")
    only_star = len(q.items) == 1 and isinstance(q.items[0].expr, Star)
    if only_star:
        lines.append("    if type(p) is _dict:")
        lines.append("        return _dict(p)")
        lines.append("    if p is _U:")
        lines.append("        return _Binary(m.payload)")
        lines.append("    return {'value': p}")
    else:
        lines.append("    o = {}")
        seen: dict[str, int] = {}
        for item in q.items:
            if isinstance(item.expr, Star):
                lines.append("    if type(p) is _dict:")
                lines.append("        o.update(p)")
                continue
            if item.name in seen and item.alias is not None:
                raise SqlError(f"the output key {item.name!r} is selected twice", item.expr.pos)
            seen[item.name] = 1
            lines.append(f"    v = {_emit(item.expr)}")
            lines.append("    if v is not _U:")
            lines.append(f"        o[{item.name!r}] = v")
        lines.append("    return o")
    source = "\n".join(lines) + "\n"
    scope: dict[str, Any] = dict(_RUNTIME)
    exec(compile(source, "<rule>", "exec"), scope)  # noqa: S102 - generated from the syntax tree only
    uses = any(_uses_payload(i.expr) for i in q.items) or _uses_payload(q.where)
    return CompiledRule(sql, q, source, scope["rule"], filter_levels(q.topic_filter), uses)


def parse_payload(payload: bytes) -> Any:
    """The JSON value of a payload, or :data:`UNDEFINED` when it is not JSON."""
    try:
        return json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return UNDEFINED


def run(
    sql_or_rule: str | CompiledRule,
    topic: str,
    payload: bytes,
    *,
    product_id: str = "",
    device_name: str = "",
    timestamp_ms: int = 0,
    qos: int = 0,
) -> Any:
    """Evaluate once (the debug endpoint and tests): the output, or None when it does not match."""
    rule = compile_rule(sql_or_rule) if isinstance(sql_or_rule, str) else sql_or_rule
    levels = topic.split("/")
    msg = Message(product_id, device_name, topic, payload, timestamp_ms, qos, levels=levels)
    if not rule.matches(levels):
        return None
    return rule.evaluate(parse_payload(payload), msg)
