"""OTA tables (SPEC §8): firmware/resources, tasks, and one job per task and device.

The OTA services write these with low-level requests (conditional updates and transactions
that move a job and its task's counters together); the models name the tables, keys and
indexes in one place and read items back.

* ``firmware`` — pk ``firmware_id``; ``kind`` = "firmware" | "resource"; GSI ``kind-index``
  (kind, created_at) lists them newest first.
* ``ota_tasks`` — pk ``task_id``; GSIs ``kind-index`` (kind, created_at), ``firmware-index``
  (firmware_id, created_at) and the sparse ``live-index`` (live = "1" while the task runs).
* ``ota_jobs`` — pk ``task_id``, sk ``device_name``; GSIs ``task-state-index`` (task_id,
  ``state_key`` = "{state}#{dn}"), ``firmware-state-index`` (firmware_id, "{state}#{task}#{dn}"),
  the sparse ``device-active-index`` (``active_device`` = "{pid}/{dn}" while unfinished) and the
  sparse ``due-index`` (task_id, ``due_at`` while pushed or upgrading).
"""

from __future__ import annotations

from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.models import Model

from .base import meta

FIRMWARE_KIND, RESOURCE_KIND = "firmware", "resource"


class FirmwareRecord(Model):
    Meta = meta("firmware")

    firmware_id = UnicodeAttribute(hash_key=True)
    kind = UnicodeAttribute()
    created_at = NumberAttribute()


class OtaTaskRecord(Model):
    Meta = meta("ota_tasks")

    task_id = UnicodeAttribute(hash_key=True)
    kind = UnicodeAttribute()
    created_at = NumberAttribute()


class OtaJobRecord(Model):
    Meta = meta("ota_jobs")

    task_id = UnicodeAttribute(hash_key=True)
    device_name = UnicodeAttribute(range_key=True)
    state_key = UnicodeAttribute()
