"""Create the stage's tables, queues and bucket from ``infra/aws/resources.yaml``.

The CloudFormation template is the single description of Fleetbox's AWS resources: the
local stack (moto server) and the integration tests (``mock_aws``) create exactly what
CloudFormation would, so a table defined there is the same table everywhere.

Only the resource kinds the app needs on one machine are created (DynamoDB tables, SQS
queues, S3 buckets); every other kind in the template is skipped. boto3 clients use the
default endpoint resolution, so the same code works under ``mock_aws`` (endpoint unset)
and against a moto server (``AWS_ENDPOINT_URL``).
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import yaml
from botocore.exceptions import ClientError

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TEMPLATE = REPO_ROOT / "infra" / "aws" / "resources.yaml"

TABLE = "AWS::DynamoDB::Table"
QUEUE = "AWS::SQS::Queue"
BUCKET = "AWS::S3::Bucket"
SUPPORTED = (TABLE, QUEUE, BUCKET)


class TemplateError(ValueError):
    """The template uses something the local bootstrap cannot resolve."""


# ------------------------------------------------------------------ loading


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader that turns CloudFormation short tags into their long form."""


def _long_form(fn_name: str) -> Callable[[yaml.Loader, yaml.Node], dict]:
    def construct(loader: yaml.Loader, node: yaml.Node) -> dict:
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
            if fn_name == "Fn::GetAtt":
                # !GetAtt Resource.Attribute  ->  ["Resource", "Attribute"]
                resource, _, attribute = str(value).partition(".")
                value = [resource, attribute]
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {fn_name: value}

    return construct


_SHORT_TAGS = {
    "Ref": "Ref",
    "Condition": "Condition",
    **{
        name: f"Fn::{name}"
        for name in (
            "Sub",
            "GetAtt",
            "Join",
            "Select",
            "Split",
            "If",
            "Equals",
            "Not",
            "And",
            "Or",
            "FindInMap",
            "Base64",
            "Cidr",
            "GetAZs",
            "ImportValue",
            "Transform",
            "Length",
            "ToJsonString",
        )
    },
}
for _tag, _fn in _SHORT_TAGS.items():
    _CfnLoader.add_constructor(f"!{_tag}", _long_form(_fn))


#: parsed templates by (path, mtime, size): the integration suite bootstraps moto for every test
_PARSED: dict[tuple[str, int, int], dict] = {}


def load_template(path: str | Path = DEFAULT_TEMPLATE) -> dict:
    """Load a CloudFormation YAML template; short tags (``!Sub``…) become long-form dicts.
    A file is parsed once per process (a fresh copy each call)."""
    stat = Path(path).stat()
    key = (str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _PARSED:
        with open(path, encoding="utf-8") as fh:
            template = yaml.load(fh, Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass
        if not isinstance(template, dict) or not isinstance(template.get("Resources"), dict):
            raise TemplateError(f"{path}: not a CloudFormation template (no Resources)")
        _PARSED[key] = template
    return copy.deepcopy(_PARSED[key])


# ---------------------------------------------------------------- resolving

_SUB_VAR = re.compile(r"\$\{([^}]*)\}")


class _Resolver:
    """Evaluates intrinsic functions; creates referenced resources on first use."""

    def __init__(self, template: dict, params: dict[str, str], physical: Callable[[str, str | None], str]) -> None:
        self.template = template
        self.params = params
        self.physical = physical  # (logical id, attribute or None for Ref) -> value
        self.conditions = template.get("Conditions") or {}

    def __call__(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Condition":
                return self.condition(arg)
            if key.startswith("Fn::"):
                return self.function(key, arg)
        return {k: self(v) for k, v in value.items()}

    def ref(self, name: str) -> str:
        if name in self.params:
            return self.params[name]
        if name in self.template["Resources"]:
            return self.physical(name, None)
        raise TemplateError(f"!Ref {name}: no such parameter or resource")

    def condition(self, name: str) -> bool:
        if name not in self.conditions:
            raise TemplateError(f"condition {name} is not defined")
        return bool(self(self.conditions[name]))

    def function(self, fn: str, arg: Any) -> Any:
        if fn == "Fn::Sub":
            return self.sub(arg)
        if fn == "Fn::GetAtt":
            resource, attribute = arg if isinstance(arg, list) else str(arg).split(".", 1)
            return self.physical(self(resource), self(attribute))
        if fn == "Fn::Join":
            delimiter, items = arg
            return self(delimiter).join(str(i) for i in self(items))
        if fn == "Fn::Select":
            index, items = arg
            return self(items)[int(self(index))]
        if fn == "Fn::Split":
            delimiter, text = arg
            return self(text).split(self(delimiter))
        if fn == "Fn::If":
            name, when_true, when_false = arg
            return self(when_true) if self.condition(name) else self(when_false)
        if fn == "Fn::Equals":
            left, right = self(arg)
            return str(left) == str(right)
        if fn == "Fn::Not":
            return not self(arg[0])
        if fn == "Fn::And":
            return all(self(a) for a in arg)
        if fn == "Fn::Or":
            return any(self(a) for a in arg)
        if fn == "Fn::FindInMap":
            mapping, top, second = self(arg)
            return self.template["Mappings"][mapping][top][second]
        if fn == "Fn::Base64":
            return base64.b64encode(str(self(arg)).encode()).decode()
        if fn == "Fn::ToJsonString":
            return json.dumps(self(arg), separators=(",", ":"))
        raise TemplateError(f"{fn} is not supported by the local bootstrap")

    def sub(self, arg: Any) -> str:
        if isinstance(arg, list):
            text, variables = arg[0], {k: self(v) for k, v in (arg[1] or {}).items()}
        else:
            text, variables = arg, {}

        def replace(match: re.Match) -> str:
            name = match.group(1)
            if name.startswith("!"):  # ${!Literal} is the escape for a literal ${Literal}
                return "${" + name[1:] + "}"
            if name in variables:
                return str(variables[name])
            if name in self.params:
                return self.params[name]
            if "." in name:
                resource, attribute = name.split(".", 1)
                return str(self.physical(resource, attribute))
            return str(self.ref(name))

        return _SUB_VAR.sub(replace, text)


# ---------------------------------------------------------------- creating


def _error_code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


_SESSIONS: dict[str, boto3.session.Session] = {}


def _session(region: str) -> boto3.session.Session:
    """One botocore session per region and process: it loads each service model once."""
    if region not in _SESSIONS:
        _SESSIONS[region] = boto3.session.Session(region_name=region)
    return _SESSIONS[region]


class _Bootstrapper:
    def __init__(self, template: dict, stage: str, account_id: str, region: str) -> None:
        self.template = template
        self.region = region
        self.account_id = account_id
        params = {name: str(spec.get("Default", "")) for name, spec in (template.get("Parameters") or {}).items()}
        params.update(
            {
                "Stage": stage,
                "AWS::AccountId": account_id,
                "AWS::Region": region,
                "AWS::Partition": "aws",
                "AWS::URLSuffix": "amazonaws.com",
                "AWS::StackName": f"fleetbox-{stage}",
                "AWS::NoValue": "",
            }
        )
        self.resolve = _Resolver(template, params, self.attribute)
        session = _session(region)
        self.dynamodb = session.client("dynamodb")
        self.sqs = session.client("sqs")
        self.s3 = session.client("s3")
        self.created: dict[str, dict[str, str]] = {}  # logical id -> attributes ("Ref", "Arn", …)
        self._in_progress: set[str] = set()
        self.tables: list[str] = []
        self.queues: dict[str, str] = {}
        self.buckets: dict[str, str] = {}

    # -- attributes of (possibly not yet created) resources

    def attribute(self, logical: str, attribute: str | None) -> str:
        attrs = self.ensure(logical)
        key = attribute or "Ref"
        if key not in attrs:
            raise TemplateError(f"{logical}.{attribute}: attribute not available locally")
        return attrs[key]

    def ensure(self, logical: str) -> dict[str, str]:
        if logical in self.created:
            return self.created[logical]
        resource = self.template["Resources"].get(logical)
        if resource is None:
            raise TemplateError(f"reference to unknown resource {logical}")
        kind = resource.get("Type")
        if kind not in SUPPORTED:
            raise TemplateError(f"{logical} ({kind}) is referenced but not created locally")
        if logical in self._in_progress:
            raise TemplateError(f"circular reference through {logical}")
        self._in_progress.add(logical)
        try:
            props = resource.get("Properties") or {}
            if kind == TABLE:
                attrs = self.create_table(logical, props)
            elif kind == QUEUE:
                attrs = self.create_queue(logical, props)
            else:
                attrs = self.create_bucket(logical, props)
        finally:
            self._in_progress.discard(logical)
        self.created[logical] = attrs
        return attrs

    def _name(self, props: dict, key: str, logical: str) -> str:
        if key not in props:
            raise TemplateError(f"{logical}: {key} is required locally (generated names are not)")
        return str(self.resolve(props[key]))

    # -- DynamoDB

    def create_table(self, logical: str, props: dict) -> dict[str, str]:
        name = self._name(props, "TableName", logical)
        billing = self.resolve(props.get("BillingMode", "PAY_PER_REQUEST"))
        request: dict[str, Any] = {
            "TableName": name,
            "KeySchema": self.resolve(props["KeySchema"]),
            "AttributeDefinitions": self.resolve(props["AttributeDefinitions"]),
            "BillingMode": billing,
        }
        if billing == "PROVISIONED":
            request["ProvisionedThroughput"] = _throughput(self.resolve(props.get("ProvisionedThroughput")))
        gsis = [_index(self.resolve(i), billing) for i in props.get("GlobalSecondaryIndexes") or []]
        if gsis:
            request["GlobalSecondaryIndexes"] = gsis
        lsis = [_index(self.resolve(i), None) for i in props.get("LocalSecondaryIndexes") or []]
        if lsis:
            request["LocalSecondaryIndexes"] = lsis
        stream = self.resolve(props.get("StreamSpecification"))
        if stream and stream.get("StreamViewType"):
            request["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": stream["StreamViewType"]}
        try:
            description = self.dynamodb.create_table(**request)["TableDescription"]
            log.info("created table %s", name)
        except ClientError as exc:
            if _error_code(exc) != "ResourceInUseException":
                raise
            description = self.dynamodb.describe_table(TableName=name)["Table"]
            self._add_missing_indexes(name, description, request)
        self._ensure_ttl(name, self.resolve(props.get("TimeToLiveSpecification")))
        self.tables.append(name)
        attrs = {"Ref": name, "Arn": description["TableArn"]}
        if description.get("LatestStreamArn"):
            attrs["StreamArn"] = description["LatestStreamArn"]
        return attrs

    def _add_missing_indexes(self, name: str, description: dict, request: dict) -> None:
        """An existing (persisted) table gains the GSIs added to the template since."""
        if description.get("KeySchema") != request["KeySchema"]:
            log.warning(
                "table %s exists with a different key schema than the template; delete the local state to recreate it",
                name,
            )
        existing = {i["IndexName"] for i in description.get("GlobalSecondaryIndexes") or []}
        for index in request.get("GlobalSecondaryIndexes", []):
            if index["IndexName"] in existing:
                continue
            self.dynamodb.update_table(
                TableName=name,
                AttributeDefinitions=request["AttributeDefinitions"],
                GlobalSecondaryIndexUpdates=[{"Create": index}],
            )
            log.info("added index %s to existing table %s", index["IndexName"], name)

    def _ensure_ttl(self, name: str, spec: dict | None) -> None:
        if not spec or not _truthy(spec.get("Enabled")):
            return
        current = self.dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        if (
            current.get("TimeToLiveStatus") in ("ENABLED", "ENABLING")
            and current.get("AttributeName") == spec["AttributeName"]
        ):
            return
        self.dynamodb.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={"AttributeName": spec["AttributeName"], "Enabled": True},
        )

    # -- SQS

    _QUEUE_ATTRIBUTES = (
        "VisibilityTimeout",
        "MessageRetentionPeriod",
        "DelaySeconds",
        "MaximumMessageSize",
        "ReceiveMessageWaitTimeSeconds",
        "FifoQueue",
        "ContentBasedDeduplication",
        "DeduplicationScope",
        "FifoThroughputLimit",
    )

    def create_queue(self, logical: str, props: dict) -> dict[str, str]:
        name = self._name(props, "QueueName", logical)
        attributes = {key: _attr_text(self.resolve(props[key])) for key in self._QUEUE_ATTRIBUTES if key in props}
        for key in ("RedrivePolicy", "RedriveAllowPolicy"):
            if key in props:
                policy = self.resolve(props[key])  # resolves the dead-letter queue (creating it first)
                attributes[key] = policy if isinstance(policy, str) else json.dumps(policy)
        try:
            url = self.sqs.get_queue_url(QueueName=name)["QueueUrl"]
        except ClientError as exc:
            if _error_code(exc) not in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
                raise
            url = self.sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
            log.info("created queue %s", name)
        else:
            # An existing queue (persisted state) takes the template's current attributes.
            current = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
            changed = {k: v for k, v in attributes.items() if k != "FifoQueue" and current.get(k) != v}
            if changed:
                self.sqs.set_queue_attributes(QueueUrl=url, Attributes=changed)
                log.info("updated queue %s: %s", name, ", ".join(sorted(changed)))
        arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.queues[logical] = url
        return {"Ref": url, "Arn": arn, "QueueName": name, "QueueUrl": url}

    # -- S3

    def create_bucket(self, logical: str, props: dict) -> dict[str, str]:
        name = self._name(props, "BucketName", logical)
        request: dict[str, Any] = {"Bucket": name}
        if self.region != "us-east-1":
            request["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            self.s3.head_bucket(Bucket=name)
        except ClientError as exc:
            if _error_code(exc) not in ("404", "NoSuchBucket", "NotFound"):
                raise
            self.s3.create_bucket(**request)
            log.info("created bucket %s", name)
        self.buckets[logical] = name
        return {
            "Ref": name,
            "Arn": f"arn:aws:s3:::{name}",
            "DomainName": f"{name}.s3.amazonaws.com",
            "RegionalDomainName": f"{name}.s3.{self.region}.amazonaws.com",
        }


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def _attr_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _throughput(spec: dict | None) -> dict[str, int]:
    spec = spec or {}
    return {
        "ReadCapacityUnits": int(spec.get("ReadCapacityUnits", 5)),
        "WriteCapacityUnits": int(spec.get("WriteCapacityUnits", 5)),
    }


def _index(spec: dict, billing: str | None) -> dict[str, Any]:
    index: dict[str, Any] = {
        "IndexName": spec["IndexName"],
        "KeySchema": spec["KeySchema"],
        "Projection": spec.get("Projection") or {"ProjectionType": "ALL"},
    }
    if billing == "PROVISIONED":
        index["ProvisionedThroughput"] = _throughput(spec.get("ProvisionedThroughput"))
    return index


def bootstrap(
    stage: str,
    *,
    account_id: str = "123456789012",
    region: str = "us-east-1",
    template_path: str | Path = DEFAULT_TEMPLATE,
) -> dict:
    """Create (idempotently) every table, queue and bucket of the template for ``stage``.

    Returns ``{"tables": [names], "queues": {logical id: url}, "bucket": name,
    "buckets": {logical id: name}}``; ``bucket`` is the template's only bucket (or the
    first one, by logical id, when there are several; None when there is none).
    """
    template = load_template(template_path)
    worker = _Bootstrapper(template, stage, account_id, region)
    skipped = []
    for logical, resource in template["Resources"].items():
        if resource.get("Type") in SUPPORTED:
            worker.ensure(logical)
        else:
            skipped.append(f"{logical} ({resource.get('Type')})")
    if skipped:
        log.debug("not created locally: %s", ", ".join(skipped))
    buckets = worker.buckets
    return {
        "tables": worker.tables,
        "queues": worker.queues,
        "bucket": buckets[sorted(buckets)[0]] if buckets else None,
        "buckets": buckets,
    }
