"""Unit tests for chalicelib.services.thing_model (SPEC §1, §4, §6.4, §10)."""

from __future__ import annotations

import copy
import json
import math
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.core import errors
from chalicelib.services import thing_model as tm

CODE = "InvalidParameterValue.ModelDefineInvalid"


# --------------------------------------------------------------------------- helpers


def prop(define: dict | None = None, ident: str = "p", **fields) -> dict:
    item = {"id": ident, "name": "Prop", "define": define if define is not None else {"type": "bool"}}
    item.update(fields)
    return item


def param(ident: str, define: dict, **fields) -> dict:
    item = {"id": ident, "name": ident[:20], "define": define}
    item.update(fields)
    return item


def event(ident: str = "e", params: list | None = None, **fields) -> dict:
    item = {"id": ident, "name": "Event", "type": "info", "params": params or []}
    item.update(fields)
    return item


def action(
    ident: str = "a",
    input: list | None = None,  # noqa: A002 - the model's own field name
    output: list | None = None,
    **fields,
) -> dict:
    item = {"id": ident, "name": "Action", "input": input or [], "output": output or []}
    item.update(fields)
    return item


def model(properties=(), events=(), actions=()) -> dict:
    return {
        "version": "1.0",
        "profile": {"ProductId": "ABCDEFGHIJ", "CategoryId": "1"},
        "properties": list(properties),
        "events": list(events),
        "actions": list(actions),
    }


def INT(lo="0", hi="100", **extra) -> dict:
    return {"type": "int", "min": lo, "max": hi, **extra}


def FLOAT(lo="0", hi="100", **extra) -> dict:
    return {"type": "float", "min": lo, "max": hi, **extra}


def rejects(doc, field: str, fragment: str = "") -> errors.FleetboxError:
    """Assert validate_model refuses ``doc`` at ``field``; return the error for more checks."""
    with pytest.raises(errors.FleetboxError) as caught:
        tm.validate_model(doc)
    err = caught.value
    assert err.code == CODE
    assert err.status == 400
    assert err.field == field, err.message
    assert err.message.startswith(field), err.message
    assert fragment in err.message, err.message
    return err


def rejects_define(define, fragment: str = "", field_suffix: str = "") -> errors.FleetboxError:
    """The define placed in properties[0]; the error path is properties[0].define<suffix>."""
    return rejects(model([prop(define)]), "properties[0].define" + field_suffix, fragment)


def compiled(properties=(), events=(), actions=()) -> tm.CompiledModel:
    return tm.compile_model(tm.validate_model(model(properties, events, actions)))


def check_one(define: dict, value, **kw):
    """(accepted value or None, problem or None) for a property with ``define``."""
    accepted, problems = compiled([prop(define)]).check_properties({"p": value}, **kw)
    assert len(problems) <= 1
    return accepted.get("p"), (problems[0] if problems else None)


# =========================================================================== document shape


class TestDocument:
    def test_spec_example_is_valid_and_normalized(self):
        # Given the example model of SPEC §4
        doc = {
            "version": "1.0",
            "profile": {"ProductId": "ABCDEFGHIJ", "CategoryId": "1"},
            "properties": [
                {
                    "id": "brightness",
                    "name": "brightness",
                    "desc": "",
                    "required": False,
                    "mode": "rw",
                    "define": {"type": "int", "min": "0", "max": "100", "start": "1", "step": "1", "unit": "%"},
                }
            ],
            "events": [
                {
                    "id": "low_voltage",
                    "name": "LowVoltage",
                    "type": "alert",
                    "required": False,
                    "params": [
                        {
                            "id": "voltage",
                            "name": "Voltage",
                            "define": {"type": "float", "min": "0.0", "max": "24.0", "step": "1", "unit": "V"},
                        }
                    ],
                }
            ],
            "actions": [
                {
                    "id": "unlock",
                    "name": "Unlock",
                    "required": False,
                    "input": [
                        {"id": "order_id", "name": "Order", "define": {"type": "string", "min": "0", "max": "2048"}}
                    ],
                    "output": [{"id": "code", "name": "Code", "define": {"type": "int", "min": "0", "max": "100"}}],
                }
            ],
        }
        original = copy.deepcopy(doc)
        pristine = copy.deepcopy(doc)
        # When it is validated
        result = tm.validate_model(doc)
        # Then it is returned as a copy, unchanged except for the filled-in desc defaults
        original["events"][0]["desc"] = ""
        original["actions"][0]["desc"] = ""
        assert result == original
        # and the input is not modified
        assert doc == pristine

    def test_defaults_are_filled(self):
        result = tm.validate_model(
            {"properties": [{"id": "x", "name": "X", "define": {"type": "timestamp"}}], "custom": {"kept": True}}
        )
        assert result["version"] == "1.0"
        assert result["profile"] == {}
        assert result["events"] == [] and result["actions"] == []
        assert result["properties"][0]["mode"] == "rw"
        assert result["properties"][0]["desc"] == ""
        assert result["properties"][0]["required"] is False
        assert result["custom"] == {"kept": True}

    def test_null_lists_become_empty(self):
        result = tm.validate_model({"properties": None, "events": None, "actions": None})
        assert (result["properties"], result["events"], result["actions"]) == ([], [], [])

    def test_action_lists_filled(self):
        result = tm.validate_model({"actions": [{"id": "go", "name": "Go"}]})
        assert result["actions"][0]["input"] == [] and result["actions"][0]["output"] == []

    def test_product_id_is_set_when_given(self):
        result = tm.validate_model(model(), product_id="ZZZZZZZZZZ")
        assert result["profile"]["ProductId"] == "ZZZZZZZZZZ"
        assert tm.validate_model({}, "ABCDEFGHIJ")["profile"] == {"ProductId": "ABCDEFGHIJ"}

    def test_user_product_id_is_kept_without_override(self):
        assert tm.validate_model(model())["profile"]["ProductId"] == "ABCDEFGHIJ"

    def test_integer_category_id_is_stored_as_string(self):
        assert tm.validate_model({"profile": {"CategoryId": 7}})["profile"]["CategoryId"] == "7"

    @pytest.mark.parametrize("doc", [None, [], "x", 3, True])
    def test_doc_must_be_an_object(self, doc):
        with pytest.raises(errors.FleetboxError) as caught:
            tm.validate_model(doc)
        assert caught.value.code == CODE
        assert caught.value.field == "model"

    @pytest.mark.parametrize("version", [1.0, "", "x" * 17, []])
    def test_version(self, version):
        rejects({"version": version}, "version")

    def test_profile_must_be_object(self):
        rejects({"profile": "x"}, "profile", "must be an object")

    def test_profile_product_id_must_be_string(self):
        rejects({"profile": {"ProductId": 5}}, "profile.ProductId")

    @pytest.mark.parametrize("category", [True, {}, "x" * 65])
    def test_profile_category(self, category):
        rejects({"profile": {"CategoryId": category}}, "profile.CategoryId")

    @pytest.mark.parametrize("section", ["properties", "events", "actions"])
    def test_sections_must_be_lists(self, section):
        rejects({section: {}}, section, "must be a list")

    @pytest.mark.parametrize("section", ["properties", "events", "actions"])
    @pytest.mark.parametrize("item", [1, "x", [], None])
    def test_elements_must_be_objects(self, section, item):
        rejects({section: [item]}, f"{section}[0]")

    def test_property_count_limit(self):
        items = [prop(ident=f"p{i}") for i in range(200)]
        tm.validate_model({"properties": items})
        rejects({"properties": items + [prop(ident="p200")]}, "properties", "at most 200")

    def test_event_count_limit(self):
        items = [event(f"e{i}") for i in range(51)]
        rejects({"events": items}, "events", "at most 50")

    def test_action_count_limit(self):
        items = [action(f"a{i}") for i in range(51)]
        rejects({"actions": items}, "actions", "at most 50")

    def test_deep_nesting_is_a_400_not_a_crash(self):
        deep: dict = {}
        node = deep
        for _ in range(5000):
            node["x"] = {}
            node = node["x"]
        with pytest.raises(errors.FleetboxError) as caught:
            tm.validate_model({"extra": deep})
        assert caught.value.field == "model"

    def test_first_error_wins_in_document_order(self):
        # Given two faults, the later one in a later section
        doc = model([prop({"type": "int", "min": "5", "max": "1"})], [event("1bad")])
        # Then the property's fault is reported
        rejects(doc, "properties[0].define.max", "is below min")


# =========================================================================== identifiers, names, common fields


class TestCommonFields:
    @pytest.mark.parametrize("ident", ["1abc", "", "a-b", "a b", "é", "a" * 33, "x\n", 5, True, None])
    def test_bad_identifiers(self, ident):
        item = prop()
        item["id"] = ident
        rejects(model([item]), "properties[0].id")

    @pytest.mark.parametrize("ident", ["_", "a", "A_1", "_x9", "a" * 32])
    def test_good_identifiers(self, ident):
        tm.validate_model(model([prop(ident=ident)]))

    def test_identifier_starting_with_digit(self):
        rejects(model([prop(ident="9lives")]), "properties[0].id", "not a valid identifier")

    def test_duplicate_property_ids(self):
        err = rejects(model([prop(ident="a"), prop(ident="a")]), "properties[1].id", "already used")
        assert "properties[0]" in err.message

    def test_ids_unique_across_properties_events_actions(self):
        rejects(model([prop(ident="x")], [event("x")]), "events[0].id", "already used by properties[0]")
        rejects(model([prop(ident="x")], [], [action("x")]), "actions[0].id", "already used")
        rejects(model([], [event("x")], [action("x")]), "actions[0].id", "already used by events[0]")

    def test_ids_are_case_sensitive(self):
        tm.validate_model(model([prop(ident="a"), prop(ident="A")]))

    def test_name_required(self):
        item = prop()
        del item["name"]
        rejects(model([item]), "properties[0].name", "is required")

    @pytest.mark.parametrize("name", ["", "   ", 5])
    def test_name_non_empty_string(self, name):
        rejects(model([prop(name=name)]), "properties[0].name")

    def test_name_of_20_chars_ok_21_refused(self):
        tm.validate_model(model([prop(name="n" * 20)]))
        rejects(model([prop(name="n" * 21)]), "properties[0].name", "at most 20")

    def test_name_counts_characters_not_bytes(self):
        tm.validate_model(model([prop(name="亮度" * 10)]))

    def test_desc_of_80_ok_81_refused(self):
        tm.validate_model(model([prop(desc="d" * 80)]))
        rejects(model([prop(desc="d" * 81)]), "properties[0].desc", "at most 80")

    def test_desc_must_be_string(self):
        rejects(model([prop(desc=1)]), "properties[0].desc")

    @pytest.mark.parametrize("value", ["true", 1, 0])
    def test_required_must_be_bool(self, value):
        rejects(model([prop(required=value)]), "properties[0].required")

    def test_mode(self):
        assert tm.validate_model(model([prop(mode="r")]))["properties"][0]["mode"] == "r"
        rejects(model([prop(mode="w")]), "properties[0].mode", "rw, r")

    def test_event_type(self):
        for kind in ("info", "alert", "fault"):
            tm.validate_model(model([], [event(type=kind)]))
        rejects(model([], [event(type="warning")]), "events[0].type", "info, alert, fault")
        item = event()
        del item["type"]
        rejects(model([], [item]), "events[0].type", "is required")

    def test_event_params_must_be_a_list(self):
        rejects(model([], [event(params={"a": 1})]), "events[0].params", "must be a list")

    def test_event_param_path(self):
        doc = model([], [event(params=[param("a", INT()), param("b", INT("9", "1"))])])
        rejects(doc, "events[0].params[1].define.max", "is below min")

    def test_action_input_output_paths(self):
        rejects(model([], [], [action(input=[param("1x", INT())])]), "actions[0].input[0].id")
        rejects(model([], [], [action(output=[{"id": "o"}])]), "actions[0].output[0].name", "is required")
        rejects(model([], [], [action(input=[5])]), "actions[0].input[0]", "must be an object")

    def test_param_ids_unique_within_list(self):
        rejects(
            model([], [event(params=[param("v", INT()), param("v", INT())])]), "events[0].params[1].id", "already used"
        )
        rejects(
            model([], [], [action(input=[param("v", INT()), param("v", INT())])]),
            "actions[0].input[1].id",
            "already used",
        )

    def test_param_ids_may_repeat_across_lists_and_features(self):
        # input and output of one action, and params of two events, are separate namespaces
        tm.validate_model(
            model(
                [prop(ident="v")],
                [event("e1", [param("v", INT())]), event("e2", [param("v", INT())])],
                [action("a1", [param("v", INT())], [param("v", INT())])],
            )
        )

    def test_param_count_limit(self):
        params = [param(f"v{i}", INT()) for i in range(21)]
        rejects(model([], [event(params=params)]), "events[0].params", "at most 20")
        rejects(model([], [], [action(output=params)]), "actions[0].output", "at most 20")

    def test_param_name_and_desc_limits(self):
        rejects(model([], [event(params=[param("v", INT(), name="n" * 21)])]), "events[0].params[0].name")
        rejects(model([], [event(params=[param("v", INT(), desc="d" * 81)])]), "events[0].params[0].desc")


# =========================================================================== defines


class TestDefineType:
    def test_define_required(self):
        item = prop()
        del item["define"]
        rejects(model([item]), "properties[0].define", "is required")

    def test_define_must_be_object(self):
        rejects_define("int", "must be an object")

    def test_type_required(self):
        rejects_define({"min": 1}, "is required", ".type")

    @pytest.mark.parametrize("kind", ["double", "INT", "", 3, None])
    def test_unknown_type(self, kind):
        define = {"type": kind} if kind is not None else {}
        rejects_define(define, "", ".type")

    def test_unknown_type_message(self):
        rejects_define({"type": "double"}, "'double' is not a known type", ".type")

    @pytest.mark.parametrize("kind", ["bool", "timestamp"])
    def test_types_without_required_fields(self, kind):
        tm.validate_model(model([prop({"type": kind})]))


class TestNumericDefine:
    @pytest.mark.parametrize("kind", ["int", "float"])
    def test_min_max_required(self, kind):
        rejects_define({"type": kind, "max": "1"}, "is required", ".min")
        rejects_define({"type": kind, "min": "1"}, "is required", ".max")

    def test_int_min_above_max(self):
        err = rejects(
            model([prop(INT("0")), prop(ident="q"), prop(INT("10", "5"), ident="r")]), "properties[2].define.max"
        )
        assert err.message == "properties[2].define.max is below min"

    def test_float_min_above_max(self):
        rejects_define(FLOAT("1.5", "1.25"), "is below min", ".max")

    def test_equal_min_max_allowed(self):
        tm.validate_model(model([prop(INT("5", "5", step="3"))]))

    @pytest.mark.parametrize("field", ["min", "max", "step", "start"])
    @pytest.mark.parametrize("bad", ["abc", "1.5", 1.5, True, [], {}, "", " 1", "1e2", "NaN", "١٢"])
    def test_int_fields_must_be_integers(self, field, bad):
        define = INT("0", "100", step="1", start="0")
        define[field] = bad
        rejects_define(define, "", f".{field}")

    @pytest.mark.parametrize("good", [0, "0", "+0", 0.0, "0.0", Decimal("0")])
    def test_int_fields_accept_integral_numbers_and_strings(self, good):
        tm.validate_model(model([prop(INT(good, "10"))]))

    def test_int_bounds_within_64_bits(self):
        tm.validate_model(model([prop(INT(str(-(2**63)), str(2**63 - 1)))]))
        rejects_define(INT("0", str(2**63)), "64-bit", ".max")

    @pytest.mark.parametrize("field", ["min", "max", "step", "start"])
    @pytest.mark.parametrize(
        "bad", ["abc", True, "nan", "inf", float("nan"), float("inf"), "1e999", 10**400, "1_0", []]
    )
    def test_float_fields_must_be_finite_numbers(self, field, bad):
        define = FLOAT("0", "100", step="1", start="0")
        define[field] = bad
        rejects_define(define, "", f".{field}")

    @pytest.mark.parametrize("good", ["-1.5", -1.5, "-1", "-.5", "-1e0", "-1.", -1])
    def test_float_fields_accept_numbers_and_strings(self, good):
        tm.validate_model(model([prop(FLOAT(good, "10"))]))

    @pytest.mark.parametrize("kind", ["int", "float"])
    @pytest.mark.parametrize("step", ["0", "-1"])
    def test_step_must_be_positive(self, kind, step):
        rejects_define({"type": kind, "min": "0", "max": "10", "step": step}, "greater than 0", ".step")

    def test_step_at_most_range(self):
        tm.validate_model(model([prop(INT("0", "10", step="10"))]))
        rejects_define(INT("0", "10", step="11"), "larger than max - min", ".step")
        rejects_define(FLOAT("0", "0.5", step="0.6"), "larger than max - min", ".step")

    @pytest.mark.parametrize("start", ["-1", "101"])
    def test_start_within_bounds(self, start):
        rejects_define(INT("0", "100", start=start), "outside [min, max]", ".start")

    def test_start_on_bounds_ok(self):
        tm.validate_model(model([prop(INT("0", "100", start="0")), prop(INT("0", "100", start="100"), ident="q")]))

    def test_unit(self):
        tm.validate_model(model([prop(INT(unit="u" * 12))]))
        rejects_define(INT(unit="u" * 13), "at most 12", ".unit")
        rejects_define(INT(unit=5), "", ".unit")


class TestStringDefine:
    def test_defaults(self):
        tm.validate_model(model([prop({"type": "string"})]))

    def test_max_2048_ok_2049_refused(self):
        tm.validate_model(model([prop({"type": "string", "min": "0", "max": "2048"})]))
        rejects_define({"type": "string", "min": "0", "max": "2049"}, "0 to 2048", ".max")

    @pytest.mark.parametrize("bad", ["-1", "x", 1.5, True])
    def test_min_must_be_length(self, bad):
        rejects_define({"type": "string", "min": bad, "max": "10"}, "", ".min")

    def test_min_above_max(self):
        rejects_define({"type": "string", "min": "10", "max": "5"}, "is below min", ".max")


class TestMappingDefines:
    def test_bool_mapping_exact_keys(self):
        tm.validate_model(model([prop({"type": "bool", "mapping": {"0": "off", "1": "on"}})]))
        rejects_define({"type": "bool", "mapping": {"0": "off"}}, "exactly", ".mapping")
        rejects_define({"type": "bool", "mapping": {"0": "off", "1": "on", "2": "x"}}, "exactly", ".mapping")
        rejects_define({"type": "bool", "mapping": {"false": "off", "true": "on"}}, "exactly", ".mapping")

    def test_enum_label_of_13_chars(self):
        rejects_define({"type": "enum", "mapping": {"0": "ok", "3": "l" * 13}}, "at most 12", ".mapping.3")

    def test_enum_label_of_12_chars_ok(self):
        tm.validate_model(model([prop({"type": "enum", "mapping": {"0": "l" * 12}})]))

    def test_event_param_enum_label_path(self):
        doc = model([], [event(params=[param("a", INT()), param("b", {"type": "enum", "mapping": {"3": "x" * 13}})])])
        rejects(doc, "events[0].params[1].define.mapping.3", "label")

    @pytest.mark.parametrize("key", ["a", "1.5", "01", " 1", "", "-0", "99999999999999999999"])
    def test_enum_keys_integers(self, key):
        rejects_define({"type": "enum", "mapping": {key: "x"}}, "integer", f".mapping.{key}")

    def test_enum_negative_keys_ok(self):
        tm.validate_model(model([prop({"type": "enum", "mapping": {"-3": "neg", "0": "zero"}})]))

    @pytest.mark.parametrize("label", ["", "  ", 5, None])
    def test_labels_non_empty_strings(self, label):
        rejects_define({"type": "enum", "mapping": {"1": label}}, "label", ".mapping.1")

    @pytest.mark.parametrize("kind", ["enum", "stringenum"])
    def test_mapping_required_non_empty_object(self, kind):
        rejects_define({"type": kind}, "is required", ".mapping")
        rejects_define({"type": kind, "mapping": {}}, "at least one", ".mapping")
        rejects_define({"type": kind, "mapping": ["a"]}, "must be an object", ".mapping")

    def test_mapping_at_most_100_entries(self):
        tm.validate_model(model([prop({"type": "enum", "mapping": {str(i): "x" for i in range(100)}})]))
        rejects_define({"type": "enum", "mapping": {str(i): "x" for i in range(101)}}, "at most 100", ".mapping")

    def test_stringenum_keys(self):
        tm.validate_model(model([prop({"type": "stringenum", "mapping": {"k" * 32: "x"}})]))
        rejects_define({"type": "stringenum", "mapping": {"": "x"}}, "1 to 32", ".mapping.")
        rejects_define({"type": "stringenum", "mapping": {"k" * 33: "x"}}, "1 to 32", ".mapping." + "k" * 33)

    def test_stringenum_label_limit(self):
        rejects_define({"type": "stringenum", "mapping": {"a": "l" * 13}}, "at most 12", ".mapping.a")

    def test_bool_label_limit(self):
        rejects_define({"type": "bool", "mapping": {"0": "off", "1": "l" * 13}}, "at most 12", ".mapping.1")


def member(ident: str, data_type: dict, **fields) -> dict:
    return {"id": ident, "name": ident[:20], "dataType": data_type, **fields}


class TestStructDefine:
    def test_valid_struct(self):
        tm.validate_model(
            model(
                [
                    prop(
                        {
                            "type": "struct",
                            "specs": [member(t, {"type": t}) for t in ("bool", "timestamp")]
                            + [
                                member("i", INT()),
                                member("f", FLOAT()),
                                member("s", {"type": "string"}),
                                member("e", {"type": "enum", "mapping": {"1": "a"}}),
                                member("se", {"type": "stringenum", "mapping": {"a": "a"}}),
                            ],
                        }
                    )
                ]
            )
        )

    def test_specs_required_non_empty_list(self):
        rejects_define({"type": "struct"}, "is required", ".specs")
        rejects_define({"type": "struct", "specs": []}, "must not be empty", ".specs")
        rejects_define({"type": "struct", "specs": {}}, "must be a list", ".specs")

    def test_at_most_20_members(self):
        specs = [member(f"m{i}", INT()) for i in range(21)]
        rejects_define({"type": "struct", "specs": specs}, "at most 20", ".specs")

    def test_struct_inside_struct_refused(self):
        inner = {"type": "struct", "specs": [member("x", INT())]}
        rejects_define(
            {"type": "struct", "specs": [member("a", INT()), member("b", inner)]},
            "one level deep",
            ".specs[1].dataType.type",
        )

    def test_array_inside_struct_refused(self):
        inner = {"type": "array", "arrayInfo": INT()}
        rejects_define({"type": "struct", "specs": [member("b", inner)]}, "not allowed", ".specs[0].dataType.type")

    def test_struct_in_action_input_path(self):
        inner = {"type": "struct", "specs": [member("x", INT())]}
        doc = model(
            [], [], [action(input=[param("s", {"type": "struct", "specs": [member("a", INT()), member("b", inner)]})])]
        )
        rejects(doc, "actions[0].input[0].define.specs[1].dataType.type", "one level deep")

    def test_member_ids_unique_and_valid(self):
        rejects_define(
            {"type": "struct", "specs": [member("a", INT()), member("a", INT())]}, "already used", ".specs[1].id"
        )
        rejects_define({"type": "struct", "specs": [member("1a", INT())]}, "identifier", ".specs[0].id")

    def test_member_ids_need_not_differ_from_feature_ids(self):
        tm.validate_model(model([prop(ident="a"), prop({"type": "struct", "specs": [member("a", INT())]}, ident="s")]))

    def test_member_needs_name_and_datatype(self):
        rejects_define({"type": "struct", "specs": [{"id": "a", "dataType": INT()}]}, "is required", ".specs[0].name")
        rejects_define({"type": "struct", "specs": [{"id": "a", "name": "A"}]}, "is required", ".specs[0].dataType")
        rejects_define({"type": "struct", "specs": ["a"]}, "must be an object", ".specs[0]")

    def test_member_define_rules_apply(self):
        rejects_define(
            {"type": "struct", "specs": [member("a", INT("5", "1"))]}, "is below min", ".specs[0].dataType.max"
        )


class TestArrayDefine:
    def test_array_of_scalars(self):
        for info in (INT(), FLOAT(), {"type": "string", "max": "10"}):
            tm.validate_model(model([prop({"type": "array", "arrayInfo": info, "maxItems": 10})]))

    def test_array_of_struct(self):
        define = {
            "type": "array",
            "arrayInfo": {
                "type": "struct",
                "specs": [member("Mac", {"type": "string"}), member("Rssi", INT("-120", "0"))],
            },
        }
        tm.validate_model(model([prop(define)]))

    def test_array_of_struct_member_rules(self):
        define = {
            "type": "array",
            "arrayInfo": {"type": "struct", "specs": [member("a", {"type": "struct", "specs": [member("x", INT())]})]},
        }
        rejects_define(define, "one level deep", ".arrayInfo.specs[0].dataType.type")
        rejects_define({"type": "array", "arrayInfo": {"type": "struct"}}, "is required", ".arrayInfo.specs")

    def test_array_info_required(self):
        rejects_define({"type": "array"}, "is required", ".arrayInfo")
        rejects_define({"type": "array", "arrayInfo": "int"}, "must be an object", ".arrayInfo")

    @pytest.mark.parametrize("kind", ["bool", "enum", "stringenum", "timestamp", "array"])
    def test_array_element_types(self, kind):
        rejects_define({"type": "array", "arrayInfo": {"type": kind}}, "not allowed", ".arrayInfo.type")

    def test_array_element_define_rules(self):
        rejects_define({"type": "array", "arrayInfo": INT("3", "1")}, "is below min", ".arrayInfo.max")
        rejects_define({"type": "array", "arrayInfo": {"type": "nope"}}, "not a known type", ".arrayInfo.type")

    @pytest.mark.parametrize("bad", [0, 1025, "x", True, 1.5])
    def test_max_items(self, bad):
        rejects_define({"type": "array", "arrayInfo": INT(), "maxItems": bad}, "1 to 1024", ".maxItems")

    def test_max_items_bounds_ok(self):
        for good in (1, 1024, "8"):
            tm.validate_model(model([prop({"type": "array", "arrayInfo": INT(), "maxItems": good})]))


# =========================================================================== value checks


class TestPropertyValues:
    def test_message_shapes_from_the_brief(self):
        cm = compiled(
            [
                prop(INT("0", "100"), "brightness"),
                prop({"type": "enum", "mapping": {"0": "R", "1": "G", "2": "B"}}, "color"),
                prop({"type": "bool"}, "power_switch", mode="r"),
            ]
        )
        accepted, problems = cm.check_properties(
            {"brightness": 120, "color": "x", "nope": 1, "power_switch": 1}, writable_only=True
        )
        assert accepted == {}
        assert [(p.key, p.code, p.message) for p in problems] == [
            ("brightness", "400", "brightness: 120 above max 100"),
            ("color", "400", "color: 'x' is not one of 0, 1, 2"),
            ("nope", "404", "nope: not defined"),
            ("power_switch", "403", "power_switch: read-only"),
        ]

    def test_unknown_key_does_not_spoil_others(self):
        cm = compiled([prop(INT(), "a")])
        accepted, problems = cm.check_properties({"a": "5", "b": 1})
        assert accepted == {"a": 5}
        assert problems == [tm.Problem("b", tm.PROBLEM_NOT_DEFINED, "b: not defined")]

    def test_read_only_accepted_from_device(self):
        cm = compiled([prop(INT(), "a", mode="r")])
        assert cm.check_properties({"a": 1}) == ({"a": 1}, [])
        assert cm.check_properties({"a": 1}, writable_only=True)[1][0].code == tm.PROBLEM_READ_ONLY

    @pytest.mark.parametrize("params", ["x", [], 5])
    def test_params_must_be_object(self, params):
        accepted, problems = compiled([prop()]).check_properties(params)
        assert accepted == {} and problems[0].code == tm.PROBLEM_INVALID

    def test_empty_and_none_params(self):
        cm = compiled([prop()])
        assert cm.check_properties({}) == ({}, [])
        assert cm.check_properties(None) == ({}, [])

    # --- bool
    @pytest.mark.parametrize(
        "value,expected",
        [(0, 0), (1, 1), (True, 1), (False, 0), ("0", 0), ("1", 1), ("true", 1), ("false", 0), (1.0, 1)],
    )
    def test_bool_accepts(self, value, expected):
        got, problem = check_one({"type": "bool"}, value)
        assert problem is None and got == expected and type(got) is int

    @pytest.mark.parametrize("value", [2, -1, "yes", "True", None, [], 0.5, float("nan")])
    def test_bool_rejects(self, value):
        got, problem = check_one({"type": "bool"}, value)
        assert got is None and problem.code == "400" and "is not a bool" in problem.message

    # --- int
    @pytest.mark.parametrize(
        "value,expected",
        [(5, 5), ("12", 12), ("-3", -3), (7.0, 7), ("+8", 8), ("9.0", 9), (0, 0), (100, 100), (-10, -10)],
    )
    def test_int_accepts(self, value, expected):
        got, problem = check_one(INT("-10", "100"), value)
        assert problem is None and got == expected and type(got) is int

    @pytest.mark.parametrize(
        "value", [True, False, 1.5, "1.5", "abc", "", None, [], {}, float("nan"), float("inf"), "1e2", "٣"]
    )
    def test_int_rejects_wrong_types(self, value):
        got, problem = check_one(INT("-10", "100"), value)
        assert got is None and "is not an integer" in problem.message

    def test_int_bool_rejected_even_in_range(self):
        # True == 1 in Python: a JSON boolean must still not pass as a number
        _, problem = check_one(INT("0", "1"), True)
        assert problem.message == "p: true is not an integer"

    def test_int_range_messages(self):
        assert check_one(INT("0", "100"), 101)[1].message == "p: 101 above max 100"
        assert check_one(INT("0", "100"), -1)[1].message == "p: -1 below min 0"
        assert check_one(INT("0", "100"), "101")[1].message == "p: 101 above max 100"

    def test_huge_numbers_do_not_crash(self):
        _, problem = check_one(INT("0", "100"), 10**5000)
        assert "above max" in problem.message
        _, problem = check_one(INT("0", "100"), "9" * 5000)
        assert "is not an integer" in problem.message
        _, problem = check_one(FLOAT("0", "100"), 10**5000)
        assert "finite" in problem.message

    # --- float
    @pytest.mark.parametrize(
        "value,expected", [(1.5, 1.5), ("2.25", 2.25), (3, 3.0), ("1e1", 10.0), (-1, -1.0), (".5", 0.5)]
    )
    def test_float_accepts(self, value, expected):
        got, problem = check_one(FLOAT("-1", "10"), value)
        assert problem is None and got == expected and type(got) is float

    @pytest.mark.parametrize(
        "value", [True, "abc", None, float("nan"), float("inf"), float("-inf"), "NaN", "Infinity", [], "1_0"]
    )
    def test_float_rejects(self, value):
        got, problem = check_one(FLOAT("-1", "10"), value)
        assert got is None and "is not a finite number" in problem.message

    def test_float_range(self):
        assert check_one(FLOAT("0.0", "24.0"), 24.5)[1].message == "p: 24.5 above max 24.0"
        assert check_one(FLOAT("0.0", "24.0"), -0.1)[1].message == "p: -0.1 below min 0.0"
        assert check_one(FLOAT("0.0", "24.0"), 24)[0] == 24.0

    # --- string
    def test_string(self):
        define = {"type": "string", "min": "2", "max": "4"}
        assert check_one(define, "abc") == ("abc", None)
        assert check_one(define, "a")[1].message == "p: length 1 below min 2"
        assert check_one(define, "abcde")[1].message == "p: length 5 above max 4"
        assert check_one(define, 123)[1].message == "p: 123 is not a string"
        assert check_one({"type": "string"}, "x" * 2048)[1] is None
        assert check_one({"type": "string"}, "x" * 2049)[1] is not None

    # --- enum
    def test_enum(self):
        define = {"type": "enum", "mapping": {"0": "a", "1": "b", "-2": "c"}}
        assert check_one(define, 1) == (1, None)
        assert check_one(define, "1") == (1, None)
        assert check_one(define, -2) == (-2, None)
        assert check_one(define, 1.0) == (1, None)
        assert check_one(define, 5)[1].message == "p: 5 is not one of -2, 0, 1"
        assert check_one(define, True)[1].message == "p: true is not one of -2, 0, 1"
        assert check_one(define, "b")[1] is not None

    def test_enum_long_choice_list_is_clipped(self):
        define = {"type": "enum", "mapping": {str(i): "x" for i in range(50)}}
        message = check_one(define, 99)[1].message
        assert message.endswith("…") and len(message) < 80

    # --- stringenum
    def test_stringenum(self):
        define = {"type": "stringenum", "mapping": {"low": "Low", "high": "High"}}
        assert check_one(define, "low") == ("low", None)
        assert check_one(define, "mid")[1].message == "p: 'mid' is not one of 'low', 'high'"
        assert check_one(define, 1)[1] is not None

    # --- timestamp
    @pytest.mark.parametrize(
        "value,expected",
        [(0, 0), (1_700_000_000, 1_700_000_000), (1_700_000_000_123, 1_700_000_000_123), ("1700000000", 1700000000)],
    )
    def test_timestamp_accepts(self, value, expected):
        assert check_one({"type": "timestamp"}, value) == (expected, None)

    @pytest.mark.parametrize("value", [-1, True, 1.5, "x", None, 10**16])
    def test_timestamp_rejects(self, value):
        assert check_one({"type": "timestamp"}, value)[1] is not None

    # --- struct
    def test_struct_members(self):
        define = {"type": "struct", "specs": [member("lat", FLOAT("-90", "90")), member("on", {"type": "bool"})]}
        assert check_one(define, {"lat": "1.5", "on": True}) == ({"lat": 1.5, "on": 1}, None)
        assert check_one(define, {"lat": 1.5}) == ({"lat": 1.5}, None)  # missing members allowed
        assert check_one(define, {})[0] == {}
        assert check_one(define, {"lat": 91})[1].message == "p.lat: 91.0 above max 90.0"
        assert check_one(define, {"lat": 1, "zz": 1})[1].message == "p.zz: not defined"
        assert check_one(define, [1])[1].message == "p: a list is not an object"

    # --- array
    def test_array_values(self):
        define = {"type": "array", "arrayInfo": INT("0", "9"), "maxItems": 3}
        assert check_one(define, [1, "2", 3]) == ([1, 2, 3], None)
        assert check_one(define, []) == ([], None)
        assert check_one(define, [1, 2, 3, 4])[1].message == "p: 4 items above maxItems 3"
        assert check_one(define, [1, 10])[1].message == "p[1]: 10 above max 9"
        assert check_one(define, {"a": 1})[1].message == "p: an object is not a list"

    def test_array_default_max_items_is_512(self):
        define = {"type": "array", "arrayInfo": INT("0", "9")}
        assert check_one(define, [1] * 512)[1] is None
        assert "above maxItems 512" in check_one(define, [1] * 513)[1].message

    def test_array_of_struct_values(self):
        define = {
            "type": "array",
            "arrayInfo": {
                "type": "struct",
                "specs": [member("Mac", {"type": "string", "max": "17"}), member("Rssi", INT("-120", "0"))],
            },
        }
        value = [{"Mac": "aa:bb:cc:dd:ee:ff", "Rssi": -40}, {"Mac": "x", "Rssi": "-50"}]
        assert check_one(define, value) == ([value[0], {"Mac": "x", "Rssi": -50}], None)
        _, problem = check_one(define, [value[0], {"Rssi": True}])
        assert problem.message == "p[1].Rssi: true is not an integer"

    def test_accepted_values_are_copies(self):
        define = {"type": "struct", "specs": [member("a", INT())]}
        original = {"a": 1}
        got, _ = check_one(define, original)
        assert got == original and got is not original


class TestEventsAndActions:
    def setup_method(self):
        self.cm = compiled(
            [prop(INT(), "x")],
            [event("low_voltage", [param("voltage", FLOAT("0", "24"))], type="alert"), event("ping")],
            [action("unlock", [param("order_id", {"type": "string", "max": "8"})], [param("code", INT("0", "100"))])],
        )

    def test_event_ok(self):
        assert self.cm.check_event("low_voltage", {"voltage": "3.5"}) == ({"voltage": 3.5}, [])
        assert self.cm.check_event("ping", {}) == ({}, [])
        assert self.cm.check_event("ping", None) == ({}, [])

    def test_unknown_event_is_404(self):
        assert self.cm.check_event("nope", {"a": 1}) == ({}, [tm.Problem("nope", "404", "nope not defined")])
        # a property id is not an event
        assert self.cm.check_event("x", {})[1][0].code == "404"
        assert self.cm.check_event(None, {})[1][0].code == "404"
        assert self.cm.check_event(["x"], {})[1][0].code == "404"

    def test_event_param_problems(self):
        accepted, problems = self.cm.check_event("low_voltage", {"voltage": 30, "extra": 1})
        assert accepted == {}
        assert [(p.key, p.code) for p in problems] == [("voltage", "400"), ("extra", "404")]
        assert problems[0].message == "voltage: 30.0 above max 24.0"

    def test_event_type_lookup(self):
        assert self.cm.event_type("low_voltage") == "alert"
        assert self.cm.event_type("ping") == "info"
        assert self.cm.event_type("nope") is None

    def test_action_input_and_output(self):
        assert self.cm.check_action_input("unlock", {"order_id": "A1"}) == ({"order_id": "A1"}, [])
        assert (
            self.cm.check_action_input("unlock", {"order_id": "A" * 9})[1][0].message
            == "order_id: length 9 above max 8"
        )
        assert self.cm.check_action_input("unlock", {"code": 1})[1][0].code == "404"
        assert self.cm.check_action_output("unlock", {"code": "7"}) == ({"code": 7}, [])
        assert self.cm.check_action_output("unlock", {"code": 101})[1][0].message == "code: 101 above max 100"

    def test_unknown_action_is_404(self):
        assert self.cm.check_action_input("lock", {}) == ({}, [tm.Problem("lock", "404", "lock not defined")])
        assert self.cm.check_action_output("lock", {})[1][0].code == "404"

    def test_ids(self):
        assert self.cm.property_ids == {"x"}
        assert self.cm.event_ids == {"low_voltage", "ping"}
        assert self.cm.action_ids == {"unlock"}


class TestCompileFromStorage:
    def test_decimals_from_dynamodb_compile_and_export(self):
        # Given a model as DynamoDB returns it (numbers as Decimal)
        doc = tm.validate_model(
            model(
                [
                    prop({"type": "int", "min": Decimal("0"), "max": Decimal("10")}),
                    prop({"type": "float", "min": Decimal("0.5"), "max": Decimal("2")}, ident="f"),
                ]
            )
        )
        cm = tm.compile_model(doc)
        assert cm.check_properties({"p": 10, "f": 1}) == ({"p": 10, "f": 1.0}, [])
        # When it is exported, it serializes as plain JSON
        exported = tm.export_model(doc)
        assert exported["properties"][0]["define"]["max"] == 10
        assert exported["properties"][1]["define"]["min"] == 0.5
        json.dumps(exported)

    def test_export_is_a_deep_copy(self):
        doc = tm.validate_model(model([prop()]))
        exported = tm.export_model(doc)
        assert exported == doc
        exported["properties"][0]["define"]["type"] = "int"
        assert doc["properties"][0]["define"]["type"] == "bool"


# =========================================================================== standard features


class TestStandardFeatures:
    SECTIONS = {"property": "properties", "event": "events", "action": "actions"}

    def place(self, entry: dict) -> dict:
        element = {k: v for k, v in entry.items() if k != "kind"}
        return {self.SECTIONS[entry["kind"]]: [element]}

    def test_required_features_present(self):
        ids = {f["id"] for f in tm.standard_features()}
        assert {
            "GPS_Info",
            "GPS_ExtInfo",
            "Cell_Info",
            "Wifi_Info",
            "power_switch",
            "brightness",
            "color",
            "color_temp",
            "name",
        } <= ids

    @pytest.mark.parametrize("entry", tm.STANDARD_FEATURES, ids=lambda e: e["id"])
    def test_each_entry_validates(self, entry):
        assert entry["kind"] in self.SECTIONS
        tm.validate_model(self.place(copy.deepcopy(entry)), "ABCDEFGHIJ")

    def test_all_together_validate(self):
        doc: dict = {"properties": [], "events": [], "actions": []}
        for entry in tm.standard_features():
            doc[self.SECTIONS[entry.pop("kind")]].append(entry)
        cm = tm.compile_model(tm.validate_model(doc))
        accepted, problems = cm.check_properties(
            {
                "GPS_Info": {"latitude": 22.54, "longitude": 113.93},
                "GPS_ExtInfo": {
                    "latitude": "22.5",
                    "longitude": 113,
                    "altitude": 10.5,
                    "gps_speed": 3,
                    "direction": 90,
                    "location_state": 1,
                    "satellites": 9,
                    "gps_time": 1_700_000_000,
                    "collect_time": 1_700_000_000_000,
                },
                "Cell_Info": {
                    "mcc": 460,
                    "mnc": 0,
                    "lac": 4301,
                    "cid": 20986,
                    "rss": -80,
                    "networktype": 5,
                    "collect_time": 1_700_000_000,
                },
                "Wifi_Info": [{"Mac": "aa:bb:cc:dd:ee:ff", "Rssi": -60}],
                "power_switch": True,
                "brightness": 50,
                "color": 2,
                "color_temp": 4000,
                "name": "lamp",
            }
        )
        assert problems == []
        assert accepted["power_switch"] == 1

    def test_gps_bounds(self):
        cm = tm.compile_model(tm.validate_model(self.place(tm.standard_feature("GPS_Info"))))
        _, problems = cm.check_properties({"GPS_Info": {"latitude": 90.5, "longitude": 0}})
        assert problems[0].message == "GPS_Info.latitude: 90.5 above max 90.0"
        _, problems = cm.check_properties({"GPS_Info": {"latitude": 0, "longitude": -180.5}})
        assert problems[0].message == "GPS_Info.longitude: -180.5 below min -180.0"

    def test_common_feature_bounds(self):
        by_id = {f["id"]: f for f in tm.standard_features()}
        assert by_id["power_switch"]["define"]["type"] == "bool"
        assert (
            by_id["brightness"]["define"]["min"],
            by_id["brightness"]["define"]["max"],
            by_id["brightness"]["define"]["unit"],
        ) == ("0", "100", "%")
        assert by_id["color"]["define"]["type"] == "enum"
        assert (by_id["color_temp"]["define"]["min"], by_id["color_temp"]["define"]["max"]) == ("2700", "6500")
        assert by_id["name"]["define"] == {"type": "string", "min": "0", "max": "64"}
        assert by_id["Wifi_Info"]["define"]["arrayInfo"]["type"] == "struct"

    def test_copies_are_independent(self):
        first = tm.standard_features()
        first[0]["define"]["specs"].clear()
        assert tm.standard_features()[0]["define"]["specs"]
        assert tm.standard_feature("nope") is None


# =========================================================================== properties (hypothesis)

_int_values = st.one_of(
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.integers(min_value=-(10**6), max_value=10**6).map(str),
    st.text(max_size=12),
    st.none(),
)


@settings(max_examples=300, deadline=None)
@given(
    low=st.integers(min_value=-(10**12), max_value=10**12),
    span=st.integers(min_value=0, max_value=10**12),
    as_strings=st.booleans(),
    values=st.lists(_int_values, max_size=10),
)
def test_accepted_int_values_lie_within_bounds(low, span, as_strings, values):
    high = low + span
    define = {"type": "int", "min": str(low) if as_strings else low, "max": str(high) if as_strings else high}
    cm = tm.compile_model(tm.validate_model({"properties": [prop(define)]}))
    for value in values:
        accepted, problems = cm.check_properties({"p": value})
        if "p" in accepted:
            got = accepted["p"]
            assert type(got) is int
            assert low <= got <= high
            assert not isinstance(value, bool)
        else:
            assert len(problems) == 1 and problems[0].code == "400"


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
        max_leaves=20,
    )
)
def test_validate_model_never_crashes(doc):
    # Any JSON-ish input either validates or raises the one model error
    try:
        tm.validate_model({"properties": [doc]} if not isinstance(doc, dict) else doc)
    except errors.FleetboxError as err:
        assert err.code == CODE and err.field


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["lat", "on", "arr", "e", "s", "t", "zz"]),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
            lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3),
            max_leaves=10,
        ),
    )
)
def test_value_checks_never_crash(params):
    cm = compiled(
        [
            prop({"type": "struct", "specs": [member("x", FLOAT("-1", "1")), member("y", {"type": "bool"})]}, "lat"),
            prop({"type": "bool"}, "on"),
            prop({"type": "array", "arrayInfo": {"type": "struct", "specs": [member("m", INT())]}}, "arr"),
            prop({"type": "enum", "mapping": {"1": "a"}}, "e"),
            prop({"type": "string", "max": "3"}, "s"),
            prop({"type": "timestamp"}, "t"),
        ]
    )
    accepted, problems = cm.check_properties(params)
    assert set(accepted).isdisjoint(p.key for p in problems)
    assert len(accepted) + len(problems) == len(params)
    for value in accepted.values():
        json.dumps(value, allow_nan=False)
    assert all(not (isinstance(v, float) and math.isnan(v)) for v in accepted.values())
