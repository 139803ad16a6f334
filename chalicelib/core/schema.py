"""Request/response models: one declaration validates requests and renders OpenAPI.

A deliberately small schema kit (no pydantic: every Lambda pays its import on
cold start).  Each field knows how to validate a JSON value — raising a
:class:`~chalicelib.core.errors.FleetboxError` whose ``field`` is the JSON path
at fault and whose code is the field's own stable code — and how to describe
itself as JSON Schema for ``/openapi.json``.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from . import errors

MISSING = object()
_MISSING = MISSING


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


class Field:
    """Base field.  ``code`` is the :class:`~chalicelib.core.errors.ErrorCode` raised when the value
    is wrong (``InvalidParameterValue.InvalidParameter`` when the field names none)."""

    json_type: str | None = None

    def __init__(
        self,
        *,
        required: bool = False,
        default: Any = _MISSING,
        nullable: bool = False,
        description: str = "",
        code: errors.ErrorCode | None = None,
        example: Any = _MISSING,
        read_only: bool = False,
    ):
        if code is not None and not isinstance(code, errors.ErrorCode):
            raise TypeError(f"a field's code is an errors.ErrorCode, not {code!r}")
        self.required = required
        self.default = default
        self.nullable = nullable
        self.description = description
        self.code = code
        self.example = example
        self.read_only = read_only

    # -- validation ---------------------------------------------------------
    def fail(self, path: str, rule: str) -> errors.FleetboxError:
        return (self.code or errors.INVALID_PARAMETER)(f"{path or 'body'} {rule}", path or None)

    def validate(self, value: Any, path: str) -> Any:
        if value is None:
            if self.nullable:
                return None
            raise self.fail(path, "must not be null")
        return self.check(value, path)

    def check(self, value: Any, path: str) -> Any:  # pragma: no cover - overridden
        return value

    # -- schema ---------------------------------------------------------------
    def schema(self) -> dict[str, Any]:
        s = self.type_schema()
        if self.description:
            s["description"] = self.description
        if self.nullable:
            s["nullable"] = True
        if self.default is not _MISSING and not callable(self.default):
            s["default"] = self.default
        if self.example is not _MISSING:
            s["example"] = self.example
        if self.read_only:
            s["readOnly"] = True
        return s

    def type_schema(self) -> dict[str, Any]:
        return {"type": self.json_type} if self.json_type else {}


class String(Field):
    json_type = "string"

    def __init__(
        self,
        *,
        min_len: int = 0,
        max_len: int | None = None,
        pattern: str | None = None,
        rule: str | None = None,
        check: Callable[[str], bool] | None = None,
        schema_pattern: bool = True,
        **kw: Any,
    ):
        super().__init__(**kw)
        self.min_len = min_len
        self.max_len = max_len
        self.pattern = re.compile(pattern) if pattern else None
        self.rule = rule
        self.predicate = check
        self.schema_pattern = schema_pattern

    def _rule_text(self) -> str:
        if self.rule:
            return self.rule
        if self.max_len is not None:
            return f"must be {self.min_len}-{self.max_len} characters"
        return f"must be at least {self.min_len} characters"

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, str):
            raise self.fail(path, "must be a string")
        # one spelling per text: "café" typed precomposed (NFC) or decomposed (NFD) is the same
        # name, checked, stored and compared the same way
        if not value.isascii():
            value = unicodedata.normalize("NFC", value)
        if len(value) < self.min_len or (self.max_len is not None and len(value) > self.max_len):
            raise self.fail(path, self._rule_text())
        if self.pattern is not None and not self.pattern.fullmatch(value):
            raise self.fail(path, self._rule_text())
        if self.predicate is not None and not self.predicate(value):
            raise self.fail(path, self._rule_text())
        return value

    def type_schema(self) -> dict[str, Any]:
        s: dict[str, Any] = {"type": "string"}
        if self.min_len:
            s["minLength"] = self.min_len
        if self.max_len is not None:
            s["maxLength"] = self.max_len
        if self.pattern is not None and self.schema_pattern:
            s["pattern"] = "^(?:" + self.pattern.pattern + ")$"
        return s


class Enum(Field):
    json_type = "string"

    def __init__(self, choices: Iterable[str], **kw: Any):
        super().__init__(**kw)
        self.choices = tuple(choices)

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, str) or value not in self.choices:
            raise self.fail(path, "must be one of " + ", ".join(self.choices))
        return value

    def type_schema(self) -> dict[str, Any]:
        return {"type": "string", "enum": list(self.choices)}


class IntEnum(Field):
    json_type = "integer"

    def __init__(self, choices: Iterable[int], **kw: Any):
        super().__init__(**kw)
        self.choices = tuple(choices)

    def check(self, value: Any, path: str) -> Any:
        if isinstance(value, bool) or not isinstance(value, int) or value not in self.choices:
            raise self.fail(path, "must be one of " + ", ".join(map(str, self.choices)))
        return value

    def type_schema(self) -> dict[str, Any]:
        return {"type": "integer", "enum": list(self.choices)}


class Integer(Field):
    json_type = "integer"

    def __init__(self, *, minimum: int | None = None, maximum: int | None = None, **kw: Any):
        super().__init__(**kw)
        self.minimum = minimum
        self.maximum = maximum

    def check(self, value: Any, path: str) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer() and math.isfinite(value):
                value = int(value)
            else:
                raise self.fail(path, "must be an integer")
        if self.minimum is not None and value < self.minimum:
            raise self.fail(path, f"must be >= {self.minimum}")
        if self.maximum is not None and value > self.maximum:
            raise self.fail(path, f"must be <= {self.maximum}")
        return value

    def type_schema(self) -> dict[str, Any]:
        s: dict[str, Any] = {"type": "integer"}
        if self.minimum is not None:
            s["minimum"] = self.minimum
        if self.maximum is not None:
            s["maximum"] = self.maximum
        return s


class Number(Integer):
    json_type = "number"

    def check(self, value: Any, path: str) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail(path, "must be a number")
        if self.minimum is not None and value < self.minimum:
            raise self.fail(path, f"must be >= {self.minimum}")
        if self.maximum is not None and value > self.maximum:
            raise self.fail(path, f"must be <= {self.maximum}")
        return value

    def type_schema(self) -> dict[str, Any]:
        s = super().type_schema()
        s["type"] = "number"
        return s


class Boolean(Field):
    json_type = "boolean"

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, bool):
            raise self.fail(path, "must be true or false")
        return value


class Array(Field):
    json_type = "array"

    def __init__(
        self, items: Field, *, min_items: int = 0, max_items: int | None = None, unique: bool = False, **kw: Any
    ):
        super().__init__(**kw)
        self.items = items
        self.min_items = min_items
        self.max_items = max_items
        self.unique = unique

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, list):
            raise self.fail(path, "must be a list")
        if len(value) < self.min_items:
            raise self.fail(path, f"must hold at least {self.min_items} item(s)")
        if self.max_items is not None and len(value) > self.max_items:
            raise self.fail(path, f"must hold at most {self.max_items} items")
        out = [self.items.validate(v, _join(path, i)) for i, v in enumerate(value)]
        if self.unique:
            seen: set[str] = set()
            for i, v in enumerate(out):
                key = repr(v)
                if key in seen:
                    raise self.fail(_join(path, i), "is a duplicate")
                seen.add(key)
        return out

    def type_schema(self) -> dict[str, Any]:
        s: dict[str, Any] = {"type": "array", "items": self.items.schema()}
        if self.min_items:
            s["minItems"] = self.min_items
        if self.max_items is not None:
            s["maxItems"] = self.max_items
        return s


class Map(Field):
    """A JSON object with free keys and typed values (tags, labels)."""

    json_type = "object"

    def __init__(self, values: Field, *, keys: String | None = None, max_items: int | None = None, **kw: Any):
        super().__init__(**kw)
        self.values = values
        self.keys = keys
        self.max_items = max_items

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise self.fail(path, "must be an object")
        if self.max_items is not None and len(value) > self.max_items:
            raise self.fail(path, f"must hold at most {self.max_items} entries")
        out = {}
        for k, v in value.items():
            if self.keys is not None:
                self.keys.validate(k, _join(path, k))
            out[k] = self.values.validate(v, _join(path, k))
        return out

    def type_schema(self) -> dict[str, Any]:
        s: dict[str, Any] = {"type": "object", "additionalProperties": self.values.schema()}
        if self.max_items is not None:
            s["maxProperties"] = self.max_items
        return s


class Json(Field):
    """Any JSON value (checked later by a domain validator, e.g. the thing model)."""

    def __init__(self, *, object_only: bool = False, **kw: Any):
        super().__init__(**kw)
        self.object_only = object_only

    def check(self, value: Any, path: str) -> Any:
        if self.object_only and not isinstance(value, dict):
            raise self.fail(path, "must be an object")
        return value

    def type_schema(self) -> dict[str, Any]:
        return {"type": "object"} if self.object_only else {}


class Model(Field):
    """A named JSON object with declared fields; unknown fields are refused (typos surface)."""

    json_type = "object"

    def __init__(self, name: str, fields: Mapping[str, Field], *, allow_extra: bool = False, **kw: Any):
        super().__init__(**kw)
        self.name = name
        self.fields = dict(fields)
        self.allow_extra = allow_extra

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            if not path:
                raise errors.INVALID_BODY("the request body must be a JSON object", "body")
            raise self.fail(path, "must be a JSON object")
        if not self.allow_extra:
            for key in value:
                if key not in self.fields:
                    raise errors.UNKNOWN_PARAMETER(f"{_join(path, key)} is not a known field", _join(path, key))
        out: dict[str, Any] = {}
        for name, fld in self.fields.items():
            if fld.read_only:
                continue
            if name in value:
                out[name] = fld.validate(value[name], _join(path, name))
            elif fld.required:
                raise errors.missing(_join(path, name))
            elif fld.default is not _MISSING:
                out[name] = fld.default() if callable(fld.default) else fld.default
        if self.allow_extra:
            for key, v in value.items():
                out.setdefault(key, v)
        return out

    def type_schema(self) -> dict[str, Any]:
        return {"$ref": f"#/components/schemas/{self.name}"}

    def definition(self) -> dict[str, Any]:
        props = {name: f.schema() for name, f in self.fields.items()}
        s: dict[str, Any] = {"type": "object", "properties": props}
        req = [n for n, f in self.fields.items() if f.required]
        if req:
            s["required"] = req
        if not self.allow_extra:
            s["additionalProperties"] = False
        return s

    def schema(self) -> dict[str, Any]:
        # a $ref may not carry siblings in OpenAPI 3.0: wrap when it must be nullable
        ref = self.type_schema()
        if self.nullable:
            return {"allOf": [ref], "nullable": True}
        return ref


def collect_models(field: Field | None, found: dict[str, Model]) -> None:
    """Walk a field tree and gather every named model (for components/schemas)."""
    if field is None:
        return
    if isinstance(field, Model):
        if field.name in found:
            return
        found[field.name] = field
        for f in field.fields.values():
            collect_models(f, found)
    elif isinstance(field, Array):
        collect_models(field.items, found)
    elif isinstance(field, Map):
        collect_models(field.values, found)


def page_of(item: Model) -> Model:
    """The list envelope of SPEC §16: {"items":[…],"total":n,"next":token|null}."""
    return Model(
        f"{item.name}Page",
        {
            "items": Array(item, required=True),
            "total": Integer(nullable=True, required=True, description="total matching items when cheap to know"),
            "next": String(nullable=True, required=True, description="opaque token for the next page"),
        },
    )
