"""Thing models: validation of the definition, and value checks on the hot path.

A product's thing model (SPEC §4) lists **properties**, **events** and **actions**.
This module does three jobs, with nothing but the standard library:

* :func:`validate_model` checks a whole model document (an import, an edit, a
  standard feature being added) and returns a normalized copy, or raises the
  first problem as ``InvalidParameterValue.ModelDefineInvalid`` with the path of
  the offending element (``properties[2].define.max``) as ``field``.
* :func:`compile_model` turns a validated model into a :class:`CompiledModel`
  whose ``check_*`` methods validate device reports, cloud controls, events and
  action parameters.  Every ``define`` is parsed once, at compile time, into a
  closure; checking a value never looks at the define again.
* :data:`STANDARD_FEATURES` / :func:`standard_features` is the catalogue of
  predefined definitions (the positioning attributes of SPEC §10 and a few
  common ones).

Limits and decisions (SPEC is silent on these, so they are chosen here):

=========================================  ===================================
per model                                  ≤ 200 properties, ≤ 50 events,
                                           ≤ 50 actions
per event ``params`` / action ``input`` /  ≤ 20 parameters
``output``
identifier                                 ``^[A-Za-z_][A-Za-z0-9_]{0,31}$``,
                                           unique (case-sensitive) across the
                                           properties, events and actions of a
                                           product; parameter ids unique within
                                           their list; struct member ids unique
                                           within their struct
feature / parameter / member ``name``      required, 1–20 characters
``desc``                                   optional, ≤ 80 characters
``int``/``float`` define                   ``min`` and ``max`` required;
                                           ``step``/``start``/``unit`` optional;
                                           numbers may be strings; int bounds
                                           fit in a signed 64-bit integer
``string`` define                          ``min``/``max`` lengths 0..2048
                                           (default 0 and 2048)
mapping labels (bool/enum/stringenum)      1–12 characters; 1–100 entries
``stringenum`` keys                        1–32 characters
``struct``                                 1–20 members of scalar types only
                                           (one level deep)
``array``                                  ``arrayInfo`` element of type int,
                                           float, string or struct;
                                           ``maxItems`` 1..1024, default 512
=========================================  ===================================

Unknown keys anywhere in the document are kept untouched (an export from
another platform may carry fields this one does not know), but every field this
module knows is enforced.

Value rules (used by the compiled checks): numbers may arrive as numeric
strings (Tencent SDKs sometimes send ``"12"``) and are normalized; a JSON
boolean is never accepted where a number is expected (Python's ``bool`` is an
``int``); NaN and infinities are refused; ``bool`` values normalize to ``0``/``1``;
``float`` values normalize to ``float``; ``timestamp`` is a non-negative integer
(seconds or milliseconds) no later than the year 9999 in milliseconds; the
``step`` of a numeric define is a presentation hint and is not enforced on
values (as on Tencent's platform).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

from chalicelib.core import errors

__all__ = [
    "CompiledModel",
    "Problem",
    "PROBLEM_INVALID",
    "PROBLEM_READ_ONLY",
    "PROBLEM_NOT_DEFINED",
    "STANDARD_FEATURES",
    "compile_model",
    "export_model",
    "standard_feature",
    "standard_features",
    "validate_model",
]

# --------------------------------------------------------------------------- limits

MAX_PROPERTIES = 200
MAX_EVENTS = 50
MAX_ACTIONS = 50
MAX_PARAMS = 20
MAX_NAME = 20
MAX_DESC = 80
MAX_UNIT = 12
MAX_LABEL = 12
MAX_STRINGENUM_KEY = 32
MAX_MAPPING_ENTRIES = 100
MAX_STRING_LENGTH = 2048
MAX_STRUCT_MEMBERS = 20
MAX_ARRAY_ITEMS = 1024
DEFAULT_ARRAY_ITEMS = 512
MAX_VERSION = 16
MAX_CATEGORY_ID = 64
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
#: 9999-12-31T23:59:59.999Z in milliseconds: the largest plausible timestamp
MAX_TIMESTAMP = 253_402_300_799_999

SCALAR_TYPES = ("bool", "int", "float", "string", "enum", "stringenum", "timestamp")
ALL_TYPES = SCALAR_TYPES + ("struct", "array")
ARRAY_ELEMENT_TYPES = ("int", "float", "string", "struct")
PROPERTY_MODES = ("rw", "r")
EVENT_TYPES = ("info", "alert", "fault")

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")
# Digits are spelled [0-9] on purpose: \d would also accept other scripts'
# digits, which int()/float() happily convert.
_INT_TEXT = re.compile(r"[+-]?[0-9]+(?:\.0*)?")
_FLOAT_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_ENUM_KEY = re.compile(r"0|-?[1-9][0-9]{0,18}")
#: longest numeric string we parse (keeps int() far from its digit limit)
_MAX_NUMBER_TEXT = 64


# --------------------------------------------------------------------------- number parsing
# Shared by the define validator and the value checks, so that "a number" means
# the same thing in a model and in a device report.


T = TypeVar("T")


def _known(value: T | None) -> T:
    """A number of a define that was validated before (compiling checks only validated models)."""
    if value is None:
        raise ValueError("a validated thing-model define lost a number")
    return value


def _parse_int(value: Any) -> int | None:
    """``value`` as an int, or None: ints, integral floats, integer strings; never bools."""
    kind = type(value)
    if kind is int:
        return value
    if kind is float:
        return int(value) if value.is_integer() else None  # False for NaN/inf
    if kind is str:
        if len(value) <= _MAX_NUMBER_TEXT and _INT_TEXT.fullmatch(value):
            return int(value.split(".", 1)[0])
        return None
    if kind is Decimal:  # a model read back from DynamoDB
        if value.is_finite() and abs(value) < Decimal(10) ** 40 and value == value.to_integral_value():
            return int(value)
        return None
    return None


def _parse_float(value: Any) -> float | None:
    """``value`` as a finite float, or None: numbers and numeric strings; never bools."""
    kind = type(value)
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is int:
        try:
            return float(value)
        except OverflowError:
            return None
    if kind is str:
        if len(value) <= _MAX_NUMBER_TEXT and _FLOAT_TEXT.fullmatch(value):
            result = float(value)
            return result if math.isfinite(result) else None
        return None
    if kind is Decimal:
        if not value.is_finite():
            return None
        result = float(value)
        return result if math.isfinite(result) else None
    return None


def _show(value: Any) -> str:
    """A short, JSON-flavoured rendering of a bad value for a message."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(_clip(value))
    if isinstance(value, int):
        # repr() of a huge int is slow, and refused beyond 4300 digits
        return repr(value) if value.bit_length() <= 128 else "a very large integer"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, Decimal):
        return _clip(str(value))
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


# =========================================================================== validation


def _fail(path: str, rule: str) -> errors.FleetboxError:
    """The one error shape: the message starts with the path, ``field`` is the path."""
    return errors.MODEL_DEFINE_INVALID(f"{path} {rule}", field=path)


def validate_model(doc: Any, product_id: str | None = None) -> dict:
    """Validate a whole thing-model document and return a normalized copy.

    ``doc`` is the JSON of SPEC §4.  The copy keeps every field the user gave,
    fills ``version`` (``"1.0"``), ``profile``, ``properties``/``events``/
    ``actions`` (``[]``), ``desc`` (``""``), ``required`` (``False``) and property
    ``mode`` (``"rw"``) when absent, and sets ``profile.ProductId`` to
    ``product_id`` when one is given.  Numbers inside defines are kept in the
    form the user wrote them (Tencent exports use strings).

    Raises :class:`~chalicelib.core.errors.FleetboxError` with code
    ``InvalidParameterValue.ModelDefineInvalid`` for the first problem found,
    in document order; ``field`` is its path, e.g. ``properties[2].define.max``
    (``model`` for the document itself).
    """
    if not isinstance(doc, dict):
        raise _fail("model", "must be a JSON object")
    try:
        model = copy.deepcopy(doc)
        _validate_root(model, product_id)
    except RecursionError:
        # Pathologically nested input must be a 400, never a stack trace.
        raise _fail("model", "is nested too deeply") from None
    return model


def _validate_root(model: dict, product_id: str | None) -> None:
    version = model.get("version")
    if version is None:
        model["version"] = "1.0"
    elif not isinstance(version, str) or not 1 <= len(version) <= MAX_VERSION:
        raise _fail("version", f"must be a string of 1 to {MAX_VERSION} characters")

    profile = model.get("profile")
    if profile is None:
        profile = model["profile"] = {}
    elif not isinstance(profile, dict):
        raise _fail("profile", "must be an object")
    if product_id is not None:
        profile["ProductId"] = product_id
    elif "ProductId" in profile and not isinstance(profile["ProductId"], str):
        raise _fail("profile.ProductId", "must be a string")
    category = profile.get("CategoryId")
    if category is not None:
        if type(category) is int:  # Tencent writes "1"; accept 1 and store it the same way
            profile["CategoryId"] = category = str(category)
        if not isinstance(category, str) or len(category) > MAX_CATEGORY_ID:
            raise _fail("profile.CategoryId", f"must be a string of at most {MAX_CATEGORY_ID} characters")

    # id -> path of the element that first used it, across the whole product
    used: dict[str, str] = {}
    for section, limit, check in (
        ("properties", MAX_PROPERTIES, _validate_property),
        ("events", MAX_EVENTS, _validate_event),
        ("actions", MAX_ACTIONS, _validate_action),
    ):
        items = _list(model, section, section, limit)
        for index, item in enumerate(items):
            check(_object(item, f"{section}[{index}]"), f"{section}[{index}]", used)


def _list(owner: dict, key: str, path: str, limit: int, *, required: bool = False, non_empty: bool = False) -> list:
    """``owner[key]`` as a list (``[]`` filled in when absent and optional)."""
    items = owner.get(key)
    if items is None:
        if required:
            raise _fail(path, "is required")
        items = owner[key] = []
    if not isinstance(items, list):
        raise _fail(path, "must be a list")
    if non_empty and not items:
        raise _fail(path, "must not be empty")
    if len(items) > limit:
        raise _fail(path, f"has {len(items)} entries; at most {limit} are allowed")
    return items


def _object(item: Any, path: str) -> dict:
    if item is None:
        raise _fail(path, "is required")
    if not isinstance(item, dict):
        raise _fail(path, "must be an object")
    return item


def _validate_identifier(item: dict, path: str, used: dict[str, str]) -> str:
    ident = item.get("id")
    where = f"{path}.id"
    if ident is None:
        raise _fail(where, "is required")
    if not isinstance(ident, str) or not _IDENTIFIER.fullmatch(ident):
        shown = _show(ident)
        raise _fail(
            where,
            f"{shown} is not a valid identifier: it must start with a letter or _, "
            "continue with letters, digits or _, and be at most 32 characters",
        )
    if ident in used:
        raise _fail(where, f"'{ident}' is already used by {used[ident]}")
    used[ident] = path
    return ident


def _validate_common(item: dict, path: str, used: dict[str, str], *, fill: bool) -> None:
    """id, name, desc and required: the fields every element shares, in that order."""
    _validate_identifier(item, path, used)
    name = item.get("name")
    if name is None:
        raise _fail(f"{path}.name", "is required")
    if not isinstance(name, str) or not name.strip():
        raise _fail(f"{path}.name", "must be a non-empty string")
    if len(name) > MAX_NAME:
        raise _fail(f"{path}.name", f"is {len(name)} characters; at most {MAX_NAME} are allowed")
    desc = item.get("desc")
    if desc is None:
        if fill:
            item["desc"] = ""
    elif not isinstance(desc, str):
        raise _fail(f"{path}.desc", "must be a string")
    elif len(desc) > MAX_DESC:
        raise _fail(f"{path}.desc", f"is {len(desc)} characters; at most {MAX_DESC} are allowed")
    required = item.get("required")
    if required is None:
        if fill:
            item["required"] = False
    elif not isinstance(required, bool):
        raise _fail(f"{path}.required", "must be true or false")


def _validate_property(item: dict, path: str, used: dict[str, str]) -> None:
    _validate_common(item, path, used, fill=True)
    mode = item.get("mode")
    if mode is None:
        item["mode"] = "rw"
    elif mode not in PROPERTY_MODES:
        raise _fail(f"{path}.mode", f"{_show(mode)} must be one of rw, r")
    _validate_define(item.get("define"), f"{path}.define", ALL_TYPES, "")


def _validate_event(item: dict, path: str, used: dict[str, str]) -> None:
    _validate_common(item, path, used, fill=True)
    kind = item.get("type")
    if kind is None:
        raise _fail(f"{path}.type", "is required")
    if kind not in EVENT_TYPES:
        raise _fail(f"{path}.type", f"{_show(kind)} must be one of info, alert, fault")
    _validate_params(item, "params", path)


def _validate_action(item: dict, path: str, used: dict[str, str]) -> None:
    _validate_common(item, path, used, fill=True)
    _validate_params(item, "input", path)
    _validate_params(item, "output", path)


def _validate_params(item: dict, key: str, owner_path: str) -> None:
    list_path = f"{owner_path}.{key}"
    params = _list(item, key, list_path, MAX_PARAMS)
    local: dict[str, str] = {}  # parameter ids are unique within their own list only
    for index, param in enumerate(params):
        path = f"{list_path}[{index}]"
        param = _object(param, path)
        _validate_common(param, path, local, fill=False)
        _validate_define(param.get("define"), f"{path}.define", ALL_TYPES, "")


def _validate_define(define: Any, path: str, allowed: tuple[str, ...], refusal: str) -> None:
    """One ``define`` (or struct member ``dataType``, or array ``arrayInfo``).

    ``allowed`` lists the types acceptable at this place; ``refusal`` explains
    why a known type outside it is refused (e.g. struct inside struct).
    """
    define = _object(define, path)
    kind = define.get("type")
    if kind is None:
        raise _fail(f"{path}.type", "is required")
    if not isinstance(kind, str) or kind not in ALL_TYPES:
        raise _fail(f"{path}.type", f"{_show(kind)} is not a known type (one of {', '.join(ALL_TYPES)})")
    if kind not in allowed:
        raise _fail(f"{path}.type", f"'{kind}' is not allowed here: {refusal}")
    _DEFINE_VALIDATORS[kind](define, path)


def _number_field(define: dict, key: str, path: str, *, integer: bool, required: bool) -> int | float | None:
    value = define.get(key)
    where = f"{path}.{key}"
    if value is None:
        if required:
            raise _fail(where, "is required")
        return None
    if isinstance(value, bool):
        raise _fail(where, "must be a number, not a boolean")
    if integer:
        number = _parse_int(value)
        if number is None:
            raise _fail(where, f"{_show(value)} must be an integer (a number or a numeric string)")
        if not INT64_MIN <= number <= INT64_MAX:
            raise _fail(where, "is outside the 64-bit integer range")
        return number
    real = _parse_float(value)
    if real is None:
        raise _fail(where, f"{_show(value)} must be a finite number (a number or a numeric string)")
    return real


def _validate_numeric(define: dict, path: str, integer: bool) -> None:
    low = _known(_number_field(define, "min", path, integer=integer, required=True))
    high = _known(_number_field(define, "max", path, integer=integer, required=True))
    step = _number_field(define, "step", path, integer=integer, required=False)
    start = _number_field(define, "start", path, integer=integer, required=False)
    if high < low:
        raise _fail(f"{path}.max", "is below min")
    if step is not None:
        if step <= 0:
            raise _fail(f"{path}.step", "must be greater than 0")
        if high > low and step > high - low:
            raise _fail(f"{path}.step", "is larger than max - min")
    if start is not None and not low <= start <= high:
        raise _fail(f"{path}.start", "is outside [min, max]")
    unit = define.get("unit")
    if unit is not None and (not isinstance(unit, str) or len(unit) > MAX_UNIT):
        raise _fail(f"{path}.unit", f"must be a string of at most {MAX_UNIT} characters")


def _validate_string(define: dict, path: str) -> None:
    bounds = []
    for key in ("min", "max"):
        value = define.get(key)
        if value is None:
            bounds.append(0 if key == "min" else MAX_STRING_LENGTH)
            continue
        number = None if isinstance(value, bool) else _parse_int(value)
        if number is None or not 0 <= number <= MAX_STRING_LENGTH:
            raise _fail(f"{path}.{key}", f"must be an integer length from 0 to {MAX_STRING_LENGTH}")
        bounds.append(number)
    if bounds[1] < bounds[0]:
        raise _fail(f"{path}.max", "is below min")


def _validate_mapping(define: dict, path: str, kind: str) -> None:
    mapping = define.get("mapping")
    where = f"{path}.mapping"
    if mapping is None:
        if kind == "bool":  # a switch needs no labels
            return
        raise _fail(where, "is required")
    if not isinstance(mapping, dict):
        raise _fail(where, "must be an object of value -> label")
    if not mapping:
        raise _fail(where, "must have at least one entry")
    if len(mapping) > MAX_MAPPING_ENTRIES:
        raise _fail(where, f"has {len(mapping)} entries; at most {MAX_MAPPING_ENTRIES} are allowed")
    if kind == "bool" and set(mapping) != {"0", "1"}:
        raise _fail(where, 'must have exactly the keys "0" and "1"')
    for key, label in mapping.items():
        entry = f"{where}.{_clip(str(key))}"
        if not isinstance(key, str):  # only reachable from Python callers; JSON keys are strings
            raise _fail(entry, "key must be a string")
        if kind == "enum" and not (_ENUM_KEY.fullmatch(key) and INT64_MIN <= int(key) <= INT64_MAX):
            raise _fail(entry, 'key must be a 64-bit integer written plainly (e.g. "0", "-3", "12")')
        if kind == "stringenum" and not 1 <= len(key) <= MAX_STRINGENUM_KEY:
            raise _fail(entry, f"key must be 1 to {MAX_STRINGENUM_KEY} characters")
        if not isinstance(label, str) or not label.strip():
            raise _fail(entry, "label must be a non-empty string")
        if len(label) > MAX_LABEL:
            raise _fail(entry, f"label is {len(label)} characters; at most {MAX_LABEL} are allowed")


def _validate_struct(define: dict, path: str) -> None:
    specs = _list(define, "specs", f"{path}.specs", MAX_STRUCT_MEMBERS, required=True, non_empty=True)
    members: dict[str, str] = {}
    for index, member in enumerate(specs):
        member_path = f"{path}.specs[{index}]"
        member = _object(member, member_path)
        _validate_common(member, member_path, members, fill=False)
        _validate_define(
            member.get("dataType"),
            f"{member_path}.dataType",
            SCALAR_TYPES,
            "struct members must be of a scalar type (structs are one level deep)",
        )


def _validate_array(define: dict, path: str) -> None:
    info = define.get("arrayInfo")
    where = f"{path}.arrayInfo"
    if info is None:
        raise _fail(where, "is required")
    _validate_define(
        info, where, ARRAY_ELEMENT_TYPES, f"array elements must be one of {', '.join(ARRAY_ELEMENT_TYPES)}"
    )
    max_items = define.get("maxItems")
    if max_items is not None:
        number = None if isinstance(max_items, bool) else _parse_int(max_items)
        if number is None or not 1 <= number <= MAX_ARRAY_ITEMS:
            raise _fail(f"{path}.maxItems", f"must be an integer from 1 to {MAX_ARRAY_ITEMS}")


def _no_fields(define: dict, path: str) -> None:
    """timestamp: nothing to check beyond its type."""


_DEFINE_VALIDATORS: dict[str, Callable[[dict, str], None]] = {
    "bool": lambda d, p: _validate_mapping(d, p, "bool"),
    "int": lambda d, p: _validate_numeric(d, p, True),
    "float": lambda d, p: _validate_numeric(d, p, False),
    "string": _validate_string,
    "enum": lambda d, p: _validate_mapping(d, p, "enum"),
    "stringenum": lambda d, p: _validate_mapping(d, p, "stringenum"),
    "timestamp": _no_fields,
    "struct": _validate_struct,
    "array": _validate_array,
}


# =========================================================================== value checks

#: Problem codes, in the spirit of the reply codes of §6.4
PROBLEM_INVALID = "400"
PROBLEM_READ_ONLY = "403"
PROBLEM_NOT_DEFINED = "404"


@dataclass(frozen=True, slots=True)
class Problem:
    """Why one key of a report / control / event / action was not accepted."""

    key: str
    code: str
    message: str


class _Bad(Exception):
    """Raised by a value checker; ``where`` is the path inside the value (``.lat``, ``[2].Rssi``)."""

    __slots__ = ("reason", "where")

    def __init__(self, reason: str, where: str = ""):
        self.reason = reason
        self.where = where


Checker = Callable[[Any], Any]


def _compile_bool(define: dict) -> Checker:
    # Dict lookups keyed by value and type: True == 1 == 1.0 hash alike, so the
    # type check comes first to keep "1.5"-style surprises out.
    texts = {"0": 0, "1": 1, "true": 1, "false": 0}

    def check(value: Any) -> int:
        kind = type(value)
        if kind is bool:
            return 1 if value else 0
        if kind is int or kind is float:
            if value == 0 or value == 1:
                return int(value)
        elif kind is str:
            result = texts.get(value)
            if result is not None:
                return result
        raise _Bad(f"{_show(value)} is not a bool (0/1, true/false)")

    return check


def _compile_int(define: dict) -> Checker:
    low = _known(_parse_int(define["min"]))
    high = _known(_parse_int(define["max"]))

    def check(value: Any) -> int:
        number = value if type(value) is int else _parse_int(value)
        if number is None:
            raise _Bad(f"{_show(value)} is not an integer")
        if number < low:
            raise _Bad(f"{_show(number)} below min {low}")
        if number > high:
            raise _Bad(f"{_show(number)} above max {high}")
        return number

    return check


def _compile_float(define: dict) -> Checker:
    low = _known(_parse_float(define["min"]))
    high = _known(_parse_float(define["max"]))

    def check(value: Any) -> float:
        number = _parse_float(value)
        if number is None:
            raise _Bad(f"{_show(value)} is not a finite number")
        if number < low:
            raise _Bad(f"{number!r} below min {low!r}")
        if number > high:
            raise _Bad(f"{number!r} above max {high!r}")
        return number

    return check


def _compile_string(define: dict) -> Checker:
    low = _known(_parse_int(define["min"])) if define.get("min") is not None else 0
    high = _known(_parse_int(define["max"])) if define.get("max") is not None else MAX_STRING_LENGTH

    def check(value: Any) -> str:
        if type(value) is not str:
            raise _Bad(f"{_show(value)} is not a string")
        length = len(value)
        if length < low:
            raise _Bad(f"length {length} below min {low}")
        if length > high:
            raise _Bad(f"length {length} above max {high}")
        return value

    return check


def _one_of(keys: Iterable[Any]) -> str:
    shown = [repr(k) if isinstance(k, str) else str(k) for k in keys]
    if len(shown) > 10:  # a 100-entry enum would drown the message
        shown = shown[:10] + ["…"]
    return ", ".join(shown)


def _compile_enum(define: dict) -> Checker:
    keys = frozenset(int(k) for k in define["mapping"])
    choices = _one_of(sorted(keys))

    def check(value: Any) -> int:
        number = value if type(value) is int else _parse_int(value)
        if number is None or number not in keys:
            raise _Bad(f"{_show(value)} is not one of {choices}")
        return number

    return check


def _compile_stringenum(define: dict) -> Checker:
    keys = frozenset(define["mapping"])
    choices = _one_of(define["mapping"])

    def check(value: Any) -> str:
        if type(value) is not str or value not in keys:
            raise _Bad(f"{_show(value)} is not one of {choices}")
        return value

    return check


def _compile_timestamp(define: dict) -> Checker:
    def check(value: Any) -> int:
        number = value if type(value) is int else _parse_int(value)
        if number is None:
            raise _Bad(f"{_show(value)} is not a timestamp (Unix seconds or milliseconds)")
        if number < 0:
            raise _Bad(f"{_show(number)} below min 0")
        if number > MAX_TIMESTAMP:
            raise _Bad(f"{_show(number)} above max {MAX_TIMESTAMP}")
        return number

    return check


def _compile_struct(define: dict) -> Checker:
    members: dict[str, Checker] = {member["id"]: _compile_define(member["dataType"]) for member in define["specs"]}

    def check(value: Any) -> dict:
        if type(value) is not dict:
            raise _Bad(f"{_show(value)} is not an object")
        result = {}
        for key, item in value.items():
            member = members.get(key)
            if member is None:
                raise _Bad("not defined", f".{_clip(str(key))}")
            try:
                result[key] = member(item)
            except _Bad as bad:
                bad.where = f".{key}{bad.where}"
                raise
        return result  # missing members are allowed: devices report what they have

    return check


def _compile_array(define: dict) -> Checker:
    element = _compile_define(define["arrayInfo"])
    limit = define.get("maxItems")
    limit = DEFAULT_ARRAY_ITEMS if limit is None else _known(_parse_int(limit))

    def check(value: Any) -> list:
        if type(value) is not list:
            raise _Bad(f"{_show(value)} is not a list")
        if len(value) > limit:
            raise _Bad(f"{len(value)} items above maxItems {limit}")
        result = []
        for index, item in enumerate(value):
            try:
                result.append(element(item))
            except _Bad as bad:
                bad.where = f"[{index}]{bad.where}"
                raise
        return result

    return check


_COMPILERS: dict[str, Callable[[dict], Checker]] = {
    "bool": _compile_bool,
    "int": _compile_int,
    "float": _compile_float,
    "string": _compile_string,
    "enum": _compile_enum,
    "stringenum": _compile_stringenum,
    "timestamp": _compile_timestamp,
    "struct": _compile_struct,
    "array": _compile_array,
}


def _compile_define(define: dict) -> Checker:
    return _COMPILERS[define["type"]](define)


def _compile_params(params: list) -> dict[str, Checker]:
    return {param["id"]: _compile_define(param["define"]) for param in params or ()}


def _check_values(
    checkers: dict[str, Checker], params: Any, read_only: frozenset[str] = frozenset()
) -> tuple[dict, list[Problem]]:
    """Check every key of ``params``; bad keys become problems, good ones are kept."""
    if params is None:
        return {}, []
    if type(params) is not dict:
        return {}, [Problem("params", PROBLEM_INVALID, f"params: {_show(params)} is not an object")]
    accepted: dict[str, Any] = {}
    problems: list[Problem] = []
    for key, value in params.items():
        check = checkers.get(key)
        if check is None:
            problems.append(Problem(str(key), PROBLEM_NOT_DEFINED, f"{_clip(str(key))}: not defined"))
            continue
        if key in read_only:
            problems.append(Problem(key, PROBLEM_READ_ONLY, f"{key}: read-only"))
            continue
        try:
            accepted[key] = check(value)
        except _Bad as bad:
            problems.append(Problem(key, PROBLEM_INVALID, f"{key}{bad.where}: {bad.reason}"))
    return accepted, problems


def _not_defined(ident: Any) -> tuple[dict, list[Problem]]:
    shown = _clip(ident) if isinstance(ident, str) else _show(ident)
    return {}, [Problem(shown, PROBLEM_NOT_DEFINED, f"{shown} not defined")]


class CompiledModel:
    """A validated thing model turned into ready-to-run value checks.

    Build it with :func:`compile_model` once per model version and reuse it:
    each ``check_*`` call only runs precomputed closures.  Every check returns
    ``(accepted, problems)``: the normalized values that passed, and a
    :class:`Problem` for each key that did not (one bad key never spoils the
    others).
    """

    __slots__ = ("_properties", "_read_only", "_events", "_actions")

    def __init__(
        self,
        properties: dict[str, Checker],
        read_only: frozenset[str],
        events: dict[str, tuple[str, dict[str, Checker]]],
        actions: dict[str, tuple[dict[str, Checker], dict[str, Checker]]],
    ):
        self._properties = properties
        self._read_only = read_only
        self._events = events
        self._actions = actions

    @property
    def property_ids(self) -> frozenset[str]:
        return frozenset(self._properties)

    @property
    def event_ids(self) -> frozenset[str]:
        return frozenset(self._events)

    @property
    def action_ids(self) -> frozenset[str]:
        return frozenset(self._actions)

    def event_type(self, event_id: str) -> str | None:
        """The model's ``type`` (info/alert/fault) of an event, or None if it is not defined."""
        entry = self._events.get(event_id) if isinstance(event_id, str) else None
        return entry[0] if entry else None

    def check_properties(self, params: Any, *, writable_only: bool = False) -> tuple[dict, list[Problem]]:
        """Check property values: a device ``report`` or, with ``writable_only``, a cloud ``control``.

        With ``writable_only`` a read-only (``mode: r``) property is refused
        with code ``"403"`` ("power_switch: read-only").
        """
        read_only = self._read_only if writable_only else frozenset()
        return _check_values(self._properties, params, read_only)

    def check_event(self, event_id: str, params: Any) -> tuple[dict, list[Problem]]:
        """Check an event's params; an unknown event is one problem with code ``"404"``."""
        entry = self._events.get(event_id) if isinstance(event_id, str) else None
        if entry is None:
            return _not_defined(event_id)
        return _check_values(entry[1], params)

    def check_action_input(self, action_id: str, params: Any) -> tuple[dict, list[Problem]]:
        """Check the input params of an action call (cloud → device)."""
        entry = self._actions.get(action_id) if isinstance(action_id, str) else None
        if entry is None:
            return _not_defined(action_id)
        return _check_values(entry[0], params)

    def check_action_output(self, action_id: str, params: Any) -> tuple[dict, list[Problem]]:
        """Check the ``response`` of an ``action_reply`` (device → cloud)."""
        entry = self._actions.get(action_id) if isinstance(action_id, str) else None
        if entry is None:
            return _not_defined(action_id)
        return _check_values(entry[1], params)


def compile_model(doc: dict) -> CompiledModel:
    """Compile a model that already passed :func:`validate_model` into a :class:`CompiledModel`.

    The input is trusted to be valid: compile what ``validate_model`` returned
    (or stored), not raw user input.
    """
    properties = {p["id"]: _compile_define(p["define"]) for p in doc.get("properties") or ()}
    read_only = frozenset(p["id"] for p in doc.get("properties") or () if p.get("mode") == "r")
    events = {e["id"]: (e.get("type"), _compile_params(e.get("params"))) for e in doc.get("events") or ()}
    actions = {
        a["id"]: (_compile_params(a.get("input")), _compile_params(a.get("output"))) for a in doc.get("actions") or ()
    }
    return CompiledModel(properties, read_only, events, actions)


# =========================================================================== export


def _plain(value: Any) -> Any:
    """Deep copy with DynamoDB's Decimals turned back into JSON numbers."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def export_model(doc: dict) -> dict:
    """A deep copy of a stored model, ready for ``json.dumps`` (Decimals become numbers)."""
    return _plain(doc)


# =========================================================================== standard features


def _float(low: str, high: str, step: str, unit: str) -> dict:
    return {"type": "float", "min": low, "max": high, "start": "0", "step": step, "unit": unit}


def _int(low: str, high: str, unit: str = "", start: str | None = None) -> dict:
    return {
        "type": "int",
        "min": low,
        "max": high,
        "start": start if start is not None else low,
        "step": "1",
        "unit": unit,
    }


def _member(ident: str, name: str, data_type: dict) -> dict:
    return {"id": ident, "name": name, "dataType": data_type}


_LATITUDE = _member("latitude", "Latitude", _float("-90", "90", "0.000001", "°"))
_LONGITUDE = _member("longitude", "Longitude", _float("-180", "180", "0.000001", "°"))
_COLLECT_TIME = _member("collect_time", "Collect time", {"type": "timestamp"})

#: The catalogue of standard features (SPEC §4, §10).  Each entry is a model
#: element plus ``kind`` (property | event | action) telling where it goes.
#: Use :func:`standard_features` to get copies you may modify.
STANDARD_FEATURES: list[dict] = [
    {
        "kind": "property",
        "id": "GPS_Info",
        "name": "GPS position",
        "desc": "Latitude and longitude (WGS-84) reported by the device",
        "mode": "r",
        "required": False,
        "define": {"type": "struct", "specs": [_LATITUDE, _LONGITUDE]},
    },
    {
        "kind": "property",
        "id": "GPS_ExtInfo",
        "name": "GPS extended info",
        "desc": "GPS fix with altitude, speed, direction, fix state and satellites",
        "mode": "r",
        "required": False,
        "define": {
            "type": "struct",
            "specs": [
                _LATITUDE,
                _LONGITUDE,
                _member("altitude", "Altitude", _float("-10000", "100000", "0.1", "m")),
                _member("gps_speed", "Speed", _float("0", "2000", "0.1", "km/h")),
                _member("direction", "Direction", _float("0", "360", "0.1", "°")),
                _member(
                    "location_state", "Fix state", {"type": "enum", "mapping": {"0": "not located", "1": "located"}}
                ),
                _member("satellites", "Satellites", _int("0", "255")),
                _member("gps_time", "GPS time", {"type": "timestamp"}),
                _COLLECT_TIME,
            ],
        },
    },
    {
        "kind": "property",
        "id": "Cell_Info",
        "name": "Cell info",
        "desc": "Serving cell for base-station positioning",
        "mode": "r",
        "required": False,
        "define": {
            "type": "struct",
            "specs": [
                _member("mcc", "MCC", _int("0", "999")),
                _member("mnc", "MNC", _int("0", "999")),
                # LAC/TAC: 16 bits in 2G-4G, 24 bits in 5G
                _member("lac", "LAC", _int("0", "16777215")),
                # cell id: 28 bits in LTE, 36 bits in NR
                _member("cid", "Cell ID", _int("0", "68719476735")),
                _member("rss", "Signal strength", _int("-150", "0", "dBm", start="-150")),
                _member(
                    "networktype",
                    "Network type",
                    {
                        "type": "enum",
                        "mapping": {
                            "1": "GSM",
                            "2": "CDMA",
                            "3": "WCDMA",
                            "4": "TD-SCDMA",
                            "5": "LTE",
                            "6": "NB-IoT",
                            "7": "NR",
                        },
                    },
                ),
                _COLLECT_TIME,
            ],
        },
    },
    {
        "kind": "property",
        "id": "Wifi_Info",
        "name": "Wi-Fi info",
        "desc": "Access points seen by the device for Wi-Fi positioning",
        "mode": "r",
        "required": False,
        "define": {
            "type": "array",
            "maxItems": 32,
            "arrayInfo": {
                "type": "struct",
                "specs": [
                    _member("Mac", "MAC address", {"type": "string", "min": "0", "max": "17"}),
                    _member("Rssi", "Signal strength", _int("-120", "0", "dBm", start="-120")),
                ],
            },
        },
    },
    {
        "kind": "property",
        "id": "power_switch",
        "name": "Power switch",
        "desc": "Turns the device on or off",
        "mode": "rw",
        "required": False,
        "define": {"type": "bool", "mapping": {"0": "off", "1": "on"}},
    },
    {
        "kind": "property",
        "id": "brightness",
        "name": "Brightness",
        "desc": "Light brightness",
        "mode": "rw",
        "required": False,
        "define": _int("0", "100", "%"),
    },
    {
        "kind": "property",
        "id": "color",
        "name": "Color",
        "desc": "Light colour",
        "mode": "rw",
        "required": False,
        "define": {"type": "enum", "mapping": {"0": "Red", "1": "Green", "2": "Blue"}},
    },
    {
        "kind": "property",
        "id": "color_temp",
        "name": "Color temperature",
        "desc": "Colour temperature of white light",
        "mode": "rw",
        "required": False,
        "define": _int("2700", "6500", "K"),
    },
    {
        "kind": "property",
        "id": "name",
        "name": "Name",
        "desc": "A name the user gives the device",
        "mode": "rw",
        "required": False,
        "define": {"type": "string", "min": "0", "max": "64"},
    },
    {
        "kind": "event",
        "id": "low_voltage",
        "name": "Low voltage",
        "desc": "Supply voltage fell below its threshold",
        "type": "alert",
        "required": False,
        "params": [{"id": "voltage", "name": "Voltage", "define": _float("0", "24", "0.1", "V")}],
    },
]


def standard_features() -> list[dict]:
    """Deep copies of the whole catalogue (callers may modify them freely)."""
    return copy.deepcopy(STANDARD_FEATURES)


def standard_feature(feature_id: str) -> dict | None:
    """A deep copy of one catalogue entry by id, or None."""
    for entry in STANDARD_FEATURES:
        if entry["id"] == feature_id:
            return copy.deepcopy(entry)
    return None
