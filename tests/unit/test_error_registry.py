"""The error registry: every code declared once in chalicelib/core/errors.py and raised by name."""

from __future__ import annotations

import ast
import pathlib
import re

import pytest

from chalicelib.core import errors, schema

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCANNED = ("chalicelib", "infra")

#: the only codes whose HTTP status is not their family's
STATUS_EXCEPTIONS = {
    "FailedOperation.ActionTimeout": 504,  # a sync action the device did not answer in time
    "LimitExceeded.RequestRate": 429,  # throttling, like RequestLimitExceeded
}

#: the only codes the cloud-API endpoint spells differently
CLOUD_EXCEPTIONS = {"UnauthorizedOperation": "UnauthorizedOperation.PermissionDenied"}


def declared() -> dict[str, errors.ErrorCode]:
    return {name: value for name, value in vars(errors).items() if isinstance(value, errors.ErrorCode)}


# ---------------------------------------------------------------- (a) statuses


def test_every_status_is_the_family_rule_or_a_listed_exception() -> None:
    for code, spec in errors.REGISTRY.items():
        family = code.split(".", 1)[0]
        assert family in errors._FAMILY_STATUS, f"{code}: unknown family {family}"
        expected = STATUS_EXCEPTIONS.get(code, errors._FAMILY_STATUS[family])
        assert spec.status == expected, f"{code}: status {spec.status}, the rule gives {expected}"
    assert set(STATUS_EXCEPTIONS) <= set(errors.REGISTRY)


@pytest.mark.parametrize(
    "code,status",
    [
        ("InvalidParameterValue.DeviceNameInvalid", 400),
        ("MissingParameter", 400),
        ("UnknownParameter", 400),
        ("UnsupportedMediaType", 415),
        ("AuthFailure.InvalidCredential", 401),
        ("UnauthorizedOperation", 403),
        ("ResourceNotFound.DeviceNotExist", 404),
        ("ResourceNotFound.Route", 404),
        ("MethodNotAllowed", 405),
        ("ResourceInUse.DeviceAlreadyExists", 409),
        ("UnsupportedOperation.ProductReleased", 409),
        ("FailedOperation.DeviceOffline", 409),
        ("LimitExceeded.DeviceExceedLimit", 409),
        ("RequestTooLarge.FileTooLarge", 413),
        ("FailedOperation.ActionTimeout", 504),
        ("InternalError", 500),
    ],
)
def test_statuses_on_the_wire(code: str, status: int) -> None:
    assert errors.FleetboxError(code, "m").status == status
    assert errors.REGISTRY[code]("m").status == status


def test_cloud_codes_equal_the_code_but_for_the_listed_exceptions() -> None:
    for code, spec in errors.REGISTRY.items():
        assert spec.cloud == CLOUD_EXCEPTIONS.get(code, code)
        assert spec("m").cloud_api_code == spec.cloud
    assert errors.forbidden("iotexplorer:CreateDevice", "*").cloud_api_code == "UnauthorizedOperation.PermissionDenied"


def test_an_explicit_status_still_wins() -> None:
    err = errors.FleetboxError(errors.INVALID_REQUEST, "m", None, status=414)
    assert (err.status, err.code) == (414, "InvalidParameterValue.InvalidRequest")


# ---------------------------------------------------------------- (b) unknown codes


def test_an_unregistered_code_is_refused() -> None:
    with pytest.raises(ValueError, match="Nope.Unknown"):
        errors.FleetboxError("Nope.Unknown", "x")
    # a look-alike ErrorCode that was never declared is refused too
    with pytest.raises(ValueError, match="InvalidParameterValue.Made"):
        errors.FleetboxError(errors.ErrorCode("InvalidParameterValue.Made", 400, "InvalidParameterValue.Made"), "x")


def test_a_registered_code_builds_the_same_error_by_name_or_by_string() -> None:
    by_name = errors.DEVICE_NAME_INVALID("device_name is bad", "device_name", details={"k": 1})
    by_string = errors.FleetboxError(
        "InvalidParameterValue.DeviceNameInvalid", "device_name is bad", "device_name", details={"k": 1}
    )
    assert (
        by_name.body("r")
        == by_string.body("r")
        == {
            "error": {
                "code": "InvalidParameterValue.DeviceNameInvalid",
                "message": "device_name is bad",
                "field": "device_name",
                "details": {"k": 1},
            },
            "request_id": "r",
        }
    )
    assert by_name.status == by_string.status == 400


def test_declaring_a_code_twice_is_refused() -> None:
    before = dict(errors.REGISTRY)
    with pytest.raises(ValueError, match="declared twice"):
        errors._declare("InvalidParameterValue.DeviceNameInvalid")
    assert errors.REGISTRY == before


def test_a_schema_field_takes_an_error_code_not_a_string() -> None:
    with pytest.raises(TypeError):
        schema.String(code="DeviceNameInvalid")  # type: ignore[arg-type]
    with pytest.raises(errors.FleetboxError) as caught:
        schema.String(max_len=2, code=errors.DEVICE_NAME_INVALID).validate("abc", "device_name")
    assert (caught.value.code, caught.value.field) == ("InvalidParameterValue.DeviceNameInvalid", "device_name")
    with pytest.raises(errors.FleetboxError) as caught:
        schema.Integer().validate("x", "n")
    assert caught.value.code == "InvalidParameterValue.InvalidParameter"


def test_registration_refusals_name_registered_codes() -> None:
    for kind, (code, legacy, message) in errors.REGISTRATION.items():
        assert errors.REGISTRY[code.code] is code, kind
        assert isinstance(legacy, int) and message


# ---------------------------------------------------------------- (c) raised by name


def _field_classes() -> set[str]:
    found, todo = set(), [schema.Field]
    while todo:
        cls = todo.pop()
        found.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return found


FIELD_CLASSES = _field_classes()
SPELLED_CODE_HELPERS = {"invalid", "not_found", "conflict"}


def _is_text(node: ast.AST | None) -> bool:
    return isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, str))


def _callee(node: ast.Call) -> tuple[str | None, str | None]:
    """(owner, name) of ``owner.name(...)`` or (None, name) of ``name(...)``."""
    f = node.func
    if isinstance(f, ast.Attribute):
        return (f.value.id if isinstance(f.value, ast.Name) else None), f.attr
    if isinstance(f, ast.Name):
        return None, f.id
    return None, None


def spelled_codes(source: str, filename: str = "<src>") -> list[str]:
    """Every place ``source`` spells an error code as text instead of naming a registry constant."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        owner, name = _callee(node)
        first = node.args[0] if node.args else None
        where = f"{filename}:{node.lineno}"
        if name == "FleetboxError":
            code = first if first is not None else next((k.value for k in node.keywords if k.arg == "code"), None)
            if _is_text(code):
                found.append(f"{where}: FleetboxError({ast.unparse(code)}, …)")
        if owner == "errors" and name in SPELLED_CODE_HELPERS and _is_text(first):
            found.append(f"{where}: errors.{name}({ast.unparse(first)}, …)")
        if name in FIELD_CLASSES:
            for kw in node.keywords:
                if kw.arg == "code" and _is_text(kw.value):
                    found.append(f"{where}: {name}(code={ast.unparse(kw.value)})")
    return found


def sources() -> list[pathlib.Path]:
    return sorted(p for top in SCANNED for p in (ROOT / top).rglob("*.py"))


def test_the_scan_sees_every_spelling() -> None:
    sample = """
raise errors.FleetboxError("InvalidParameterValue.X", "m")
raise FleetboxError(f"ResourceNotFound.{what}", "m")
raise errors.FleetboxError(code="InternalError", message="m")
raise errors.invalid("DeviceNameInvalid", "m", "f")
raise errors.not_found("DeviceNotExist", "m")
raise errors.conflict("ResourceInUse.TopicExists", "m")
NAME = String(max_len=3, code="NameInvalid")
LIST = s.Array(String(), code=f"{x}Invalid")
raise errors.DEVICE_NAME_INVALID("m", "f")
raise errors.FleetboxError(errors.ROUTE_NOT_FOUND, "m", None, status=404)
NAME = String(max_len=3, code=errors.DEVICE_NAME_INVALID)
log.write(pid, dn, "presence", code="connected")
"""
    assert len(spelled_codes(sample)) == 8


def test_every_error_is_raised_by_name() -> None:
    found = [hit for path in sources() for hit in spelled_codes(path.read_text(), str(path.relative_to(ROOT)))]
    assert not found, "spell these codes as chalicelib.core.errors constants:\n" + "\n".join(found)


def test_no_dotted_code_is_spelled_outside_the_registry() -> None:
    dotted = {code for code in errors.REGISTRY if "." in code}
    found = []
    for path in sources():
        if path == ROOT / "chalicelib" / "core" / "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in dotted:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not found, "compare with errors.<NAME>.code instead:\n" + "\n".join(found)


# ---------------------------------------------------------------- (d) one name per code


def test_each_code_is_declared_once_under_one_upper_snake_name() -> None:
    constants = declared()
    codes = [spec.code for spec in constants.values()]
    assert len(codes) == len(set(codes)), sorted(c for c in codes if codes.count(c) > 1)
    assert {spec.code for spec in constants.values()} == set(errors.REGISTRY)
    for name, spec in constants.items():
        assert re.fullmatch(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)*", name), name
        assert errors.REGISTRY[spec.code] is spec, name


def test_error_codes_are_frozen() -> None:
    with pytest.raises(AttributeError):
        errors.DEVICE_NAME_INVALID.status = 500  # type: ignore[misc]
