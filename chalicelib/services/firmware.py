"""Firmware and distributable resources (SPEC §8.1, §8.6): upload, register, list, edit, delete.

Two steps, so no file ever passes through a Lambda: ``create`` validates everything that can be
known before the bytes exist (name, version, type, file name and extension, the **declared**
size, custom information, the account's 100-firmware limit, version uniqueness per product and
type), reserves the version and the slot in one transaction, and answers a presigned ``PUT``;
``complete`` then measures the stored object itself (``HeadObject`` size, streamed MD5) and
refuses it when the real size breaks the limit.  Resources (face libraries, audio, images) use
the same records with ``kind = "resource"`` and the account's 1 GB budget instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from ..core import clock, errors, ids
from ..core.config import settings
from ..models import dynamo
from ..models.ota import FIRMWARE_KIND, RESOURCE_KIND
from . import files
from .products import get_product

#: SPEC §8.1
FIRMWARE_EXTENSIONS = (".bin", ".dav", ".tar", ".gz", ".zip", ".gzip", ".apk", ".xz", ".pack")
NAME_RE = re.compile(r"[^\W_]|\d")  # first character: a letter of any script or a digit
NAME_CHARS_RE = re.compile(r"[\w\-()]+")
VERSION_RE = re.compile(r"[A-Za-z0-9._\-]{1,32}")
FW_TYPE_RE = re.compile(r"[A-Za-z0-9_\-]{1,32}")  # "mcu" or a module name
FILE_NAME_RE = re.compile(r"[A-Za-z0-9._()\-]{1,128}")
CUSTOM_INFO_MAX = 1536
DESCRIPTION_MAX = 100
MAX_THUMBNAILS = 6
THUMBNAIL_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp")

COUNTER_PK = "quota"
FIRMWARE_COUNT_SK = "firmware"
RESOURCE_BYTES_SK = "resource-bytes"
VERSION_PK = "firmware-version"


def _table() -> str:
    return settings().table("firmware")


def _counters() -> str:
    return settings().table("counters")


def name_ok(name: str) -> bool:
    return (
        isinstance(name, str)
        and 1 <= len(name) <= 32
        and NAME_RE.match(name[0]) is not None
        and NAME_CHARS_RE.fullmatch(name) is not None
    )


def custom_info_text(value: Any) -> str:
    """The custom information as sent to devices (``user_defined``): a JSON string ≤ 1536 bytes."""
    if value is None:
        return ""
    if isinstance(value, str):
        if value == "":
            return ""
        try:
            json.loads(value)
        except ValueError:
            raise errors.CUSTOM_INFO_INVALID(
                'custom_info must be a JSON string (e.g. \'{"k":"v"}\')', "custom_info"
            ) from None
        text = value
    elif isinstance(value, (dict, list)):
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    else:
        raise errors.CUSTOM_INFO_INVALID("custom_info must be a JSON string", "custom_info")
    size = len(text.encode("utf-8"))
    if size > CUSTOM_INFO_MAX:
        raise errors.CUSTOM_INFO_TOO_LONG(
            f"custom_info is {size} bytes serialised (UTF-8); at most {CUSTOM_INFO_MAX}", "custom_info"
        )
    return text


def _too_large(size: int, field: str) -> errors.FleetboxError:
    limit = settings().firmware_max_bytes
    return errors.FILE_TOO_LARGE(
        f"{field} is {size} bytes; files may be at most {limit} bytes ({limit // (1024 * 1024)} MB)", field
    )


def _check_file(file_name: str, file_size: int, extensions: tuple[str, ...] | None) -> None:
    if not FILE_NAME_RE.fullmatch(file_name or ""):
        raise errors.FILE_NAME_INVALID("file_name must be 1-128 characters of A-Z a-z 0-9 . _ ( ) -", "file_name")
    if extensions is not None and not file_name.lower().endswith(extensions):
        raise errors.FILE_TYPE_INVALID(f"file_name must end in one of {' '.join(extensions)}", "file_name")
    if file_size > settings().firmware_max_bytes:
        raise _too_large(file_size, "file_size")


def view(item: dict[str, Any], *, with_upload: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        k: item[k] for k in ("product_id", "name", "file_name", "status", "created_at", "updated_at") if k in item
    }
    out["id"] = item["firmware_id"]
    out["description"] = item.get("description", "")
    out["file_size"] = item.get("size") if item.get("size") is not None else item.get("file_size")
    out["md5"] = item.get("md5")
    if item.get("kind") == FIRMWARE_KIND:
        out.update(version=item["version"], fw_type=item["fw_type"], custom_info=item.get("custom_info", ""))
    else:
        out["thumbnails"] = len(item.get("thumbnails") or [])
    if item.get("created_by"):
        out["created_by"] = item["created_by"]
    return out


def get_item(firmware_id: str, kind: str = FIRMWARE_KIND) -> dict[str, Any]:
    if kind == FIRMWARE_KIND:
        what, absent = "firmware", errors.FIRMWARE_NOT_EXIST
    else:
        what, absent = "resource", errors.RESOURCE_NOT_EXIST
    if not isinstance(firmware_id, str) or not re.fullmatch(r"[a-z0-9]{4,40}", firmware_id):
        raise absent(f"{what} {firmware_id} does not exist", "id")
    out = dynamo.client().get_item(TableName=_table(), Key={"firmware_id": {"S": firmware_id}}, ConsistentRead=True)
    item = dynamo.item(out["Item"]) if out.get("Item") else None
    if item is None or item.get("kind") != kind:
        raise absent(f"{what} {firmware_id} does not exist", "id")
    return item


# ------------------------------------------------------------------ firmware


def create(body: dict[str, Any], created_by: str | None) -> dict[str, Any]:
    """Validate, reserve the version and a slot, answer the presigned upload URL."""
    pid = body["product_id"]
    if not name_ok(body["name"]):
        raise errors.FIRMWARE_NAME_INVALID(
            "name must be 1-32 characters, start with a letter or digit, and hold only letters, digits, _ - ( )", "name"
        )
    if not VERSION_RE.fullmatch(body["version"]):
        raise errors.FIRMWARE_VERSION_INVALID("version must be 1-32 characters of A-Z a-z 0-9 . _ -", "version")
    fw_type = body.get("fw_type") or "mcu"
    if not FW_TYPE_RE.fullmatch(fw_type):
        raise errors.FIRMWARE_TYPE_INVALID("fw_type must be mcu or a module name (1-32 of A-Z a-z 0-9 _ -)", "fw_type")
    _check_file(body["file_name"], body["file_size"], FIRMWARE_EXTENSIONS)
    custom = custom_info_text(body.get("custom_info"))
    description = body.get("description") or ""
    get_product(pid)
    now = clock.now_s()
    fid = ids.short_id("fw")
    key = f"firmware-{fid}-{body['file_name']}"  # no "/": see files.download_url
    item = {
        "firmware_id": fid,
        "kind": FIRMWARE_KIND,
        "product_id": pid,
        "name": body["name"],
        "version": body["version"],
        "fw_type": fw_type,
        "file_name": body["file_name"],
        "file_size": body["file_size"],
        "custom_info": custom,
        "description": description,
        "status": "uploading",
        "key": key,
        "created_at": now,
        "updated_at": now,
        "created_by": created_by,
    }
    version_sk = f"{pid}#{fw_type}#{body['version']}"
    try:
        dynamo.client().transact_write_items(
            TransactItems=[
                {
                    "Put": {
                        "TableName": _table(),
                        "Item": dynamo.av_item(item),
                        "ConditionExpression": "attribute_not_exists(firmware_id)",
                    }
                },
                {
                    "Put": {
                        "TableName": _counters(),
                        "Item": {"pk": {"S": VERSION_PK}, "sk": {"S": version_sk}, "owner": {"S": fid}},
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
                {
                    "Update": {
                        "TableName": _counters(),
                        "Key": {"pk": {"S": COUNTER_PK}, "sk": {"S": FIRMWARE_COUNT_SK}},
                        "UpdateExpression": "ADD #c :one",
                        "ConditionExpression": "attribute_not_exists(#c) OR #c < :limit",
                        "ExpressionAttributeNames": {"#c": "count"},
                        "ExpressionAttributeValues": {
                            ":one": {"N": "1"},
                            ":limit": {"N": str(settings().firmware_limit)},
                        },
                    }
                },
            ]
        )
    except ClientError as exc:
        reasons = [r.get("Code") for r in exc.response.get("CancellationReasons") or []]
        if len(reasons) == 3 and reasons[1] == "ConditionalCheckFailed":
            raise errors.FIRMWARE_VERSION_EXISTS(
                f"version {body['version']} of {fw_type} already exists for product {pid}", "version"
            ) from None
        if len(reasons) == 3 and reasons[2] == "ConditionalCheckFailed":
            raise errors.FIRMWARE_EXCEED_LIMIT(
                f"the account already has {settings().firmware_limit} firmware (the limit); delete one first",
                "product_id",
            ) from None
        raise
    out = view(item)
    out["upload_url"] = files.upload_url(key)
    out["upload_method"] = "PUT"
    return out


def complete(firmware_id: str, kind: str = FIRMWARE_KIND) -> dict[str, Any]:
    """Measure the uploaded object (size, MD5) and make the firmware usable; idempotent."""
    item = get_item(firmware_id, kind)
    if item["status"] == "ready":
        return view(item)
    size = files.head(item["key"])
    if size is None:
        raise errors.FILE_NOT_UPLOADED("the file has not been uploaded yet: PUT it to upload_url first", "id")
    if size > settings().firmware_max_bytes:
        files.delete(item["key"])
        raise _too_large(size, "file")
    md5, measured = files.md5_of(item["key"])
    names = {"#st": "status", "#sz": "size", "#md5": "md5", "#u": "updated_at"}
    values = {
        ":ready": {"S": "ready"},
        ":sz": {"N": str(measured)},
        ":md5": {"S": md5},
        ":u": {"N": str(clock.now_s())},
        ":up": {"S": "uploading"},
    }
    update: dict[str, Any] = {
        "Update": {
            "TableName": _table(),
            "Key": {"firmware_id": {"S": firmware_id}},
            "UpdateExpression": "SET #st = :ready, #sz = :sz, #md5 = :md5, #u = :u",
            "ConditionExpression": "#st = :up",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
    }
    items = [update]
    if kind == RESOURCE_KIND:
        budget = settings().resource_account_bytes
        items.append(
            {
                "Update": {
                    "TableName": _counters(),
                    "Key": {"pk": {"S": COUNTER_PK}, "sk": {"S": RESOURCE_BYTES_SK}},
                    "UpdateExpression": "ADD #c :n",
                    "ConditionExpression": "attribute_not_exists(#c) OR #c <= :room",
                    "ExpressionAttributeNames": {"#c": "count"},
                    "ExpressionAttributeValues": {":n": {"N": str(measured)}, ":room": {"N": str(budget - measured)}},
                }
            }
        )
    try:
        dynamo.client().transact_write_items(TransactItems=items)
    except ClientError as exc:
        reasons = [r.get("Code") for r in exc.response.get("CancellationReasons") or []]
        if len(reasons) == 2 and reasons[1] == "ConditionalCheckFailed":
            raise errors.RESOURCE_STORAGE_EXCEED_LIMIT(
                f"resources may use at most {settings().resource_account_bytes} bytes per account", "file"
            ) from None
        if reasons and reasons[0] == "ConditionalCheckFailed":
            return view(get_item(firmware_id, kind))  # completed concurrently
        raise
    item.update(status="ready", size=measured, md5=md5)
    return view(item)


def list_items(
    kind: str,
    *,
    product_id: str | None,
    q: str | None,
    limit: int,
    start: dict[str, Any] | None,
    visible: Callable[[dict[str, Any]], bool] = lambda item: True,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Newest first; only the items ``visible`` passes count towards the page."""
    request: dict[str, Any] = {
        "TableName": _table(),
        "IndexName": "kind-index",
        "KeyConditionExpression": "#k = :k",
        "ExpressionAttributeNames": {"#k": "kind"},
        "ExpressionAttributeValues": {":k": {"S": kind}},
        "ScanIndexForward": False,
    }
    filters = []
    if product_id:
        filters.append("#p = :p")
        request["ExpressionAttributeNames"]["#p"] = "product_id"
        request["ExpressionAttributeValues"][":p"] = {"S": product_id}
    if q:
        filters.append("contains(#n, :q)")
        request["ExpressionAttributeNames"]["#n"] = "name"
        request["ExpressionAttributeValues"][":q"] = {"S": q}
    if filters:
        request["FilterExpression"] = " AND ".join(filters)
    items: list[dict[str, Any]] = []
    key = start
    while len(items) < limit:
        if key:
            request["ExclusiveStartKey"] = key
        request["Limit"] = max(limit - len(items), 25)
        out = dynamo.client().query(**request)
        for raw in out.get("Items", []):
            if len(items) < limit:
                item = view(dynamo.item(raw))
                if not visible(item):
                    continue
                items.append(item)
                key = {k: raw[k] for k in ("firmware_id", "kind", "created_at")}
        if len(items) >= limit:
            break
        key = out.get("LastEvaluatedKey")
        if not key:
            break
    return items, key if len(items) >= limit else None


def modify(firmware_id: str, fields: dict[str, Any], kind: str = FIRMWARE_KIND) -> dict[str, Any]:
    item = get_item(firmware_id, kind)
    if "name" in fields and not name_ok(fields["name"]):
        raise errors.FIRMWARE_NAME_INVALID(
            "name must be 1-32 characters, start with a letter or digit, and hold only letters, digits, _ - ( )", "name"
        )
    sets, names, values = ["#u = :u"], {"#u": "updated_at"}, {":u": {"N": str(clock.now_s())}}
    for name in ("name", "description"):
        if name in fields:
            sets.append(f"#{name} = :{name}")
            names[f"#{name}"] = name
            values[f":{name}"] = {"S": fields[name]}
            item[name] = fields[name]
    dynamo.client().update_item(
        TableName=_table(),
        Key={"firmware_id": {"S": firmware_id}},
        UpdateExpression="SET " + ", ".join(sets),
        ConditionExpression="attribute_exists(firmware_id)",
        ExpressionAttributeNames=names,
        ExpressionAttributeValues=values,
    )
    return view(item)


def running_tasks_of(firmware_id: str) -> list[str]:
    """Tasks of this firmware (or resource) that are being created or running (a key query on the
    OTA tasks' firmware index): a file in use cannot be deleted."""
    out = dynamo.client().query(
        TableName=settings().table("ota_tasks"),
        IndexName="firmware-index",
        KeyConditionExpression="#f = :f",
        FilterExpression="#s IN (:a, :b)",
        ExpressionAttributeNames={"#f": "firmware_id", "#s": "status"},
        ExpressionAttributeValues={":f": {"S": firmware_id}, ":a": {"S": "creating"}, ":b": {"S": "created"}},
    )
    return [i["task_id"]["S"] for i in out.get("Items", [])]


def delete(firmware_id: str, kind: str = FIRMWARE_KIND) -> None:
    item = get_item(firmware_id, kind)
    running = running_tasks_of(firmware_id)
    if running:
        raise errors.TASK_RUNNING(
            f"task {running[0]} is running with this {kind}; cancel it or wait for it to end", "id"
        )
    items: list[dict[str, Any]] = [
        {
            "Delete": {
                "TableName": _table(),
                "Key": {"firmware_id": {"S": firmware_id}},
                "ConditionExpression": "attribute_exists(firmware_id)",
            }
        }
    ]
    if kind == FIRMWARE_KIND:
        items.append(
            {
                "Delete": {
                    "TableName": _counters(),
                    "Key": {
                        "pk": {"S": VERSION_PK},
                        "sk": {"S": f"{item['product_id']}#{item['fw_type']}#{item['version']}"},
                    },
                }
            }
        )
        items.append(
            {
                "Update": {
                    "TableName": _counters(),
                    "Key": {"pk": {"S": COUNTER_PK}, "sk": {"S": FIRMWARE_COUNT_SK}},
                    "UpdateExpression": "ADD #c :m",
                    "ExpressionAttributeNames": {"#c": "count"},
                    "ExpressionAttributeValues": {":m": {"N": "-1"}},
                }
            }
        )
    elif item.get("status") == "ready":
        items.append(
            {
                "Update": {
                    "TableName": _counters(),
                    "Key": {"pk": {"S": COUNTER_PK}, "sk": {"S": RESOURCE_BYTES_SK}},
                    "UpdateExpression": "ADD #c :m",
                    "ExpressionAttributeNames": {"#c": "count"},
                    "ExpressionAttributeValues": {":m": {"N": str(-int(item.get("size") or 0))}},
                }
            }
        )
    try:
        dynamo.client().transact_write_items(TransactItems=items)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "TransactionCanceledException":
            return  # deleted concurrently
        raise
    for key in [item["key"], *(item.get("thumbnails") or [])]:
        try:
            files.delete(key)
        except ClientError:
            pass  # the record is gone; an orphan object is only storage


# ------------------------------------------------------------------ resources (SPEC §8.6)


def create_resource(body: dict[str, Any], created_by: str | None) -> dict[str, Any]:
    pid = body["product_id"]
    if not name_ok(body["name"]):
        raise errors.RESOURCE_NAME_INVALID(
            "name must be 1-32 characters, start with a letter or digit, and hold only letters, digits, _ - ( )", "name"
        )
    _check_file(body["file_name"], body["file_size"], None)
    thumbs = body.get("thumbnails") or []
    for i, thumb in enumerate(thumbs):
        if not FILE_NAME_RE.fullmatch(thumb) or not thumb.lower().endswith(THUMBNAIL_EXTENSIONS):
            raise errors.THUMBNAIL_INVALID(
                f"thumbnails[{i}] must be an image file name ({' '.join(THUMBNAIL_EXTENSIONS)})", f"thumbnails[{i}]"
            )
    get_product(pid)
    now = clock.now_s()
    rid = ids.short_id("rs")
    key = f"resource-{rid}-{body['file_name']}"
    thumb_keys = [f"resource-{rid}-thumb{i}-{t}" for i, t in enumerate(thumbs)]
    item = {
        "firmware_id": rid,
        "kind": RESOURCE_KIND,
        "product_id": pid,
        "name": body["name"],
        "file_name": body["file_name"],
        "file_size": body["file_size"],
        "description": body.get("description") or "",
        "status": "uploading",
        "key": key,
        "thumbnails": thumb_keys or None,
        "created_at": now,
        "updated_at": now,
        "created_by": created_by,
    }
    dynamo.client().put_item(
        TableName=_table(), Item=dynamo.av_item(item), ConditionExpression="attribute_not_exists(firmware_id)"
    )
    out = view(item)
    out["upload_url"] = files.upload_url(key)
    out["upload_method"] = "PUT"
    out["thumbnail_upload_urls"] = [files.upload_url(k) for k in thumb_keys]
    return out
