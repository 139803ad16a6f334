"""The AWS bundle: `make package` yields a template CloudFormation accepts and a Lambda zip
whose compiled dependencies load on the Lambda python3.11 runtime.

`chalice package` resolves wheels for the Lambda runtime (glibc 2.26 for Python 3.11). When a
dependency has no such wheel it builds the sdist on *this* machine, or drops the package, and
says nothing: the bundle then fails at import on Lambda. So this test opens the zip and checks
every compiled file the way the Lambda loader would see it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "build" / "package"
# chalice writes YAML whenever the merge template is YAML (infra/aws/resources.yaml)
TEMPLATE = OUT / "sam.yaml"
BUNDLE = OUT / "deployment.zip"
RESOURCES = REPO / "infra" / "aws" / "resources.yaml"
POLICIES = REPO / ".chalice"
#: the only actions that take no resource-level scoping in IAM
UNSCOPED_ACTIONS = {
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "iot:DescribeEndpoint",
    # the cloud video analyser: DetectLabels on image bytes and Rekognition Video's label jobs
    # have no resource type in IAM (the video it reads is an S3 object, allowed by S3FilesObjects)
    "rekognition:DetectLabels",
    "rekognition:StartLabelDetection",
    "rekognition:GetLabelDetection",
}
#: AWS-owned resources a stage may use: the cloud video analyser's Bedrock foundation model
AWS_OWNED_ARNS = ("arn:aws:bedrock:*::foundation-model/",)

#: glibc of the Lambda python3.11 runtime (Amazon Linux 2)
LAMBDA_GLIBC = (2, 26)
#: Lambda rejects functions above 250 MiB unzipped, and `chalice deploy` uploads the zip in
#: the API call, which Lambda caps at 50 MiB zipped (CloudFormation goes through S3).
MAX_UNZIPPED = 250 * 2**20
MAX_DIRECT_UPLOAD = 50 * 2**20
#: libraries a manylinux wheel may expect from the system (the manylinux2014 policy, minus
#: the X11/GL ones Lambda does not have); everything else must be vendored in the zip
SYSTEM_LIBS = {
    "libc.so.6",
    "libm.so.6",
    "libdl.so.2",
    "librt.so.1",
    "libpthread.so.0",
    "libutil.so.1",
    "libresolv.so.2",
    "libnsl.so.1",
    "libgcc_s.so.1",
    "libstdc++.so.6",
    "ld-linux-x86-64.so.2",
    # not in the policy, but numpy's and Pillow's manylinux wheels link it unvendored: the
    # runtime's own CPython `zlib` module needs it, so every Lambda image has it
    "libz.so.1",
}
#: the compiled packages the app imports, with one extension module each
REQUIRED_BINARIES = {
    "numpy": "numpy/_core/_multiarray_umath.cpython-311-x86_64-linux-gnu.so",
    "pillow": "PIL/_imaging.cpython-311-x86_64-linux-gnu.so",
    "shapely": "shapely/lib.cpython-311-x86_64-linux-gnu.so",
    "cryptography": "cryptography/hazmat/bindings/_rust.abi3.so",
}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def package() -> Path:
    """Run the real `make package` once for the module."""
    env = dict(os.environ, FLEETBOX_STAGE="prod")
    # chalice only uses the region to pick the IAM service principal's domain
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    env.pop("AWS_ENDPOINT_URL", None)
    # `-o .venv/.installed`: package with the venv as it is; `make test` has already
    # brought it up to date, and a test must not reinstall the shared venv.
    proc = subprocess.run(
        ["make", "--no-print-directory", "-o", ".venv/.installed", "package"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=840,
    )
    assert proc.returncode == 0, f"make package failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert TEMPLATE.is_file() and BUNDLE.is_file(), sorted(p.name for p in OUT.iterdir())
    return OUT


@pytest.fixture(scope="module")
def template(package: Path) -> dict:
    # chalice serialises with yaml.safe_dump: long-form intrinsics, no tags
    return yaml.safe_load(TEMPLATE.read_text())


@pytest.fixture(scope="module")
def bundle(package: Path) -> Iterator[zipfile.ZipFile]:
    with zipfile.ZipFile(BUNDLE) as zf:
        yield zf


def _load_cfn_yaml(path: Path) -> dict:
    """Load a hand-written template, turning `!Ref x` into `{"Ref": "x"}` and so on."""

    class Loader(yaml.SafeLoader):
        pass

    def intrinsic(loader, suffix, node):
        name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
            if suffix == "GetAtt":
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {name: value}

    Loader.add_multi_constructor("!", intrinsic)
    return yaml.load(path.read_text(), Loader=Loader)


def _functions(template: dict) -> dict[str, dict]:
    return {
        name: res
        for name, res in template["Resources"].items()
        if res["Type"] in ("AWS::Serverless::Function", "AWS::Lambda::Function")
    }


def _effective_properties(template: dict, resource: dict) -> dict:
    """A function's properties after SAM applies Globals (maps merge, the function wins)."""
    props = resource.get("Properties", {})
    if resource["Type"] != "AWS::Serverless::Function":
        return props
    glob = template.get("Globals", {}).get("Function", {})
    merged = {**glob, **props}
    variables = {
        **glob.get("Environment", {}).get("Variables", {}),
        **props.get("Environment", {}).get("Variables", {}),
    }
    merged["Environment"] = {"Variables": variables}
    return merged


def _references(value, logical_id: str) -> bool:
    """Whether `value` holds a Ref / GetAtt / ${...} to `logical_id` (a CloudFormation edge)."""
    if isinstance(value, dict):
        if value.get("Ref") == logical_id:
            return True
        getatt = value.get("Fn::GetAtt")
        if getatt and (getatt[0] if isinstance(getatt, list) else getatt.split(".")[0]) == logical_id:
            return True
        sub = value.get("Fn::Sub")
        text = sub[0] if isinstance(sub, list) else sub
        if isinstance(text, str) and re.search(r"\$\{" + re.escape(logical_id) + r"(\.[^}]*)?\}", text):
            return True
        return any(_references(v, logical_id) for v in value.values())
    if isinstance(value, list):
        return any(_references(v, logical_id) for v in value)
    return False


def _resolve_name(value, params: dict[str, str]) -> str | None:
    """The physical name of `fleetbox-${Stage}-x`-style names, with parameter defaults."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("Fn::Sub"), str):
        return re.sub(r"\$\{([^}]+)\}", lambda m: params.get(m.group(1), m.group(0)), value["Fn::Sub"])
    return None


# --------------------------------------------------------------------------- the template


def test_template_passes_cfn_lint_including_informational_rules(package):
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    cmd = [str(cfn_lint) if cfn_lint.exists() else shutil.which("cfn-lint")]
    # `--include-checks I` also runs the informational rules (deletion policies on stateful
    # resources, IAM statement actions matching their resources); no rule is ignored.
    proc = subprocess.run(
        [*cmd, "--include-checks", "I", "--", str(TEMPLATE)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_template_contains_every_resource_of_resources_yaml(template):
    declared = _load_cfn_yaml(RESOURCES)["Resources"]
    kinds = {res["Type"] for res in declared.values()}
    assert {"AWS::DynamoDB::Table", "AWS::SQS::Queue", "AWS::S3::Bucket"} <= kinds
    for name, res in declared.items():
        assert name in template["Resources"], f"{name} missing from the packaged template"
        assert template["Resources"][name]["Type"] == res["Type"]
        if res["Type"] == "AWS::Serverless::Function":
            # an override of a function chalice generates (e.g. the uplink event source):
            # every property it sets must survive the merge
            assert _deep_subset(res["Properties"], template["Resources"][name]["Properties"]), name
        else:
            assert template["Resources"][name]["Properties"] == res["Properties"], name


def _deep_subset(part, whole) -> bool:
    if isinstance(part, dict):
        return isinstance(whole, dict) and all(k in whole and _deep_subset(v, whole[k]) for k, v in part.items())
    return part == whole


def test_every_function_knows_the_files_bucket_and_its_stage(template):
    functions = _functions(template)
    assert functions, "the packaged template has no Lambda function"
    for name, res in functions.items():
        variables = _effective_properties(template, res).get("Environment", {}).get("Variables", {})
        assert variables.get("FLEETBOX_BUCKET") == {"Ref": "FilesBucket"}, name
        assert variables.get("FLEETBOX_STAGE") == "prod", name


def test_sqs_event_sources_point_at_declared_queues_created_first(template):
    """An event source on a queue the stack does not declare, or created before its queue,
    fails the deployment; a queue whose visibility timeout is below the function timeout is
    rejected by Lambda."""
    params = {k: str(v.get("Default", "")) for k, v in template.get("Parameters", {}).items()}
    queues = {}
    for name, res in template["Resources"].items():
        if res["Type"] == "AWS::SQS::Queue":
            queues[_resolve_name(res["Properties"].get("QueueName"), params)] = (name, res)
    for fname, res in _functions(template).items():
        props = _effective_properties(template, res)
        for event in props.get("Events", {}).values():
            if event.get("Type") != "SQS":
                continue
            queue_ref = event["Properties"]["Queue"]
            arn = _resolve_name(queue_ref, params)
            queue_id = next(
                (qid for qname, (qid, _) in queues.items() if arn and arn.endswith(f":{qname}")),
                None,
            )
            if queue_id is None:  # an explicit !GetAtt Queue.Arn
                queue_id = next((qid for _, (qid, _) in queues.items() if _references(queue_ref, qid)), None)
            assert queue_id, f"{fname} consumes {arn or queue_ref}, which the template does not declare"
            depends = res.get("DependsOn", [])
            depends = [depends] if isinstance(depends, str) else depends
            assert queue_id in depends or _references(props, queue_id), (
                f"nothing orders {queue_id} before {fname}'s event source mapping"
            )
            visibility = template["Resources"][queue_id]["Properties"].get("VisibilityTimeout", 30)
            assert visibility >= props.get("Timeout", 3), (queue_id, visibility, fname)


def test_every_function_role_carries_exactly_the_prod_policy_file(template):
    policy = json.loads((POLICIES / "policy-prod.json").read_text())
    for fname, res in _functions(template).items():
        role = res["Properties"]["Role"]["Fn::GetAtt"][0]
        documents = [p["PolicyDocument"] for p in template["Resources"][role]["Properties"]["Policies"]]
        assert documents == [policy], f"{fname}'s role {role} is not policy-prod.json"


@pytest.mark.parametrize("stage", ["prod", "dev"])
def test_stage_policy_reaches_only_its_own_stage(stage):
    text = (POLICIES / f"policy-{stage}.json").read_text()
    other = "dev" if stage == "prod" else "prod"
    # one policy, two stages: dev is prod with the prefix swapped, so they cannot drift
    assert text.replace(f"fleetbox-{stage}", f"fleetbox-{other}") == (POLICIES / f"policy-{other}.json").read_text()
    for statement in json.loads(text)["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        assert statement["Effect"] == "Allow" and not any("*" in a for a in actions), statement
        for arn in resources:
            if arn == "*":
                assert set(actions) <= UNSCOPED_ACTIONS, statement
            elif arn.startswith("arn:aws:kms:"):
                # KMS keys have generated ids: the stage's key is named by its alias in a condition
                aliases = statement.get("Condition", {}).get("ForAnyValue:StringEquals", {})
                assert aliases.get("kms:ResourceAliases") == f"alias/fleetbox-{stage}-seal", statement
            elif not arn.startswith(("arn:aws:iot:", *AWS_OWNED_ARNS)):  # device topics are named by devices
                assert f":fleetbox-{stage}" in arn or f"/fleetbox-{stage}" in arn, arn


# --------------------------------------------------------------------------- the bundle


def _wheel_tags(bundle: zipfile.ZipFile) -> dict[str, list[str]]:
    tags = {}
    for name in bundle.namelist():
        m = re.fullmatch(r"([^/]+)-[^/-]+\.dist-info/WHEEL", name)
        if m:
            text = bundle.read(name).decode()
            tags[m.group(1).lower().replace("_", "-")] = re.findall(r"^Tag: (\S+)$", text, re.M)
    return tags


def _runs_on_lambda(tag: str) -> bool:
    interpreter, abi, platform = tag.split("-")
    if platform == "any":
        return True
    m = re.fullmatch(r"manylinux_(\d+)_(\d+)_x86_64", platform)
    legacy = {"manylinux1_x86_64": (2, 5), "manylinux2010_x86_64": (2, 12), "manylinux2014_x86_64": (2, 17)}
    glibc = (int(m.group(1)), int(m.group(2))) if m else legacy.get(platform)
    if glibc is None or glibc > LAMBDA_GLIBC:
        return False
    if abi == "abi3":
        return interpreter.startswith("cp3") and int(interpreter[3:]) <= 11
    return interpreter == "cp311" and abi == "cp311"


def test_compiled_dependencies_come_from_lambda_compatible_manylinux_wheels(bundle):
    tags = _wheel_tags(bundle)
    names = set(bundle.namelist())
    for dist, module in REQUIRED_BINARIES.items():
        assert dist in tags, f"{dist} is missing from the bundle (no Lambda-compatible wheel?)"
        assert module in names, f"{module} is missing from the bundle"
        assert any(t.split("-")[2].startswith("manylinux") for t in tags[dist]), (
            f"{dist} {tags[dist]}: chalice found no wheel for glibc <= 2.26 and compiled the "
            f"sdist on this machine; pin a version that ships manylinux2014 x86_64 wheels"
        )
    # a `linux_x86_64` tag means chalice compiled the sdist on this machine: it links this
    # machine's glibc and shared libraries and fails to import on Lambda
    wrong = {d: t for d, t in tags.items() if not any(_runs_on_lambda(x) for x in t)}
    assert not wrong, f"wheels that do not run on Lambda python3.11 x86_64: {wrong}"


def _elf_info(data: bytes) -> tuple[int, list[str], set[str]]:
    """(machine, DT_NEEDED libraries, required symbol versions) of a 64-bit little-endian ELF."""
    assert data[:4] == b"\x7fELF", "not an ELF file"
    assert data[4] == 2 and data[5] == 1, "not a 64-bit little-endian ELF"
    machine = struct.unpack_from("<H", data, 18)[0]
    (shoff,) = struct.unpack_from("<Q", data, 40)
    shentsize, shnum = struct.unpack_from("<HH", data, 58)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]

    def string(table_index: int, offset: int) -> str:
        start = sections[table_index][4] + offset
        return data[start : data.index(b"\0", start)].decode()

    needed, versions = [], set()
    for _name, kind, _flags, _addr, offset, size, link, info, _align, _entsize in sections:
        if kind == 6:  # SHT_DYNAMIC
            for pos in range(offset, offset + size, 16):
                tag, value = struct.unpack_from("<qQ", data, pos)
                if tag == 0:
                    break
                if tag == 1:  # DT_NEEDED
                    needed.append(string(link, value))
        elif kind == 0x6FFFFFFE:  # SHT_GNU_verneed
            pos = offset
            for _ in range(info):
                _ver, count, _file, aux, nxt = struct.unpack_from("<HHIII", data, pos)
                apos = pos + aux
                for _ in range(count):
                    _hash, _fl, _other, name, anext = struct.unpack_from("<IHHII", data, apos)
                    versions.add(string(link, name))
                    apos += anext
                pos += nxt
    return machine, needed, versions


def test_every_shared_object_loads_on_lambda_python311_x86_64(bundle):
    shared = [n for n in bundle.namelist() if re.search(r"\.so(\.[\d.]+)?$", n)]
    assert shared
    vendored = {n.rsplit("/", 1)[-1] for n in shared}
    problems = []
    for name in shared:
        machine, needed, versions = _elf_info(bundle.read(name))
        if machine != 62:  # EM_X86_64
            problems.append(f"{name}: machine {machine}, not x86_64")
        tag = re.search(r"\.cpython-(\d+)-([^.]+)\.so$", name)
        if tag and tag.groups() != ("311", "x86_64-linux-gnu"):
            problems.append(f"{name}: built for {tag.groups()}, not CPython 3.11 x86_64")
        glibc = max(
            (tuple(map(int, v[6:].split("."))) for v in versions if re.fullmatch(r"GLIBC_\d+(\.\d+)+", v)), default=(0,)
        )
        if glibc > LAMBDA_GLIBC:
            problems.append(f"{name}: needs glibc {'.'.join(map(str, glibc))}")
        missing = [lib for lib in needed if lib not in SYSTEM_LIBS and lib not in vendored]
        if missing:
            problems.append(f"{name}: links {missing}, neither on Lambda nor in the bundle")
    assert not problems, "\n".join(problems)


def test_bundle_holds_the_app_and_fits_lambda_limits(bundle):
    names = set(bundle.namelist())
    assert "app.py" in names
    assert any(n.startswith("chalicelib/") for n in names)
    # the runtime's own boto3/botocore are used, not a second copy (infra/aws/trim_bundle.py)
    assert not any(n.startswith(("botocore/", "boto3/")) for n in names)
    assert any(n.startswith("slack_sdk/") for n in names)  # the chat's request verifier and clients
    unzipped = sum(info.file_size for info in bundle.infolist())
    assert unzipped < MAX_UNZIPPED, f"{unzipped / 2**20:.1f} MiB unzipped"
    assert BUNDLE.stat().st_size < MAX_DIRECT_UPLOAD, (
        f"{BUNDLE.stat().st_size / 2**20:.1f} MiB zipped: `chalice deploy` can no longer upload it"
    )
