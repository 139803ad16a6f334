"""Video summary tasks (SPEC §11): one item per task.

pk ``task_id``.  GSIs: ``product-index`` (product_id, created_at) lists a product's tasks newest
first (device, service type and status are filters), ``account-index`` (account, created_at)
lists all of them, and the sparse ``running-index`` (``running`` = "1" while status 4) is what
the sweep reads to fail tasks stuck beyond their deadline.
"""

from __future__ import annotations

from pynamodb.attributes import NumberAttribute, UnicodeAttribute
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

from .base import JSONText, meta

ACCOUNT = "main"


class TasksByProduct(GlobalSecondaryIndex["VideoTaskRecord"]):
    class Meta:
        index_name = "product-index"
        projection = AllProjection()

    product_id = UnicodeAttribute(hash_key=True)
    created_at = NumberAttribute(range_key=True)


class TasksByAccount(GlobalSecondaryIndex["VideoTaskRecord"]):
    class Meta:
        index_name = "account-index"
        projection = AllProjection()

    account = UnicodeAttribute(hash_key=True)
    created_at = NumberAttribute(range_key=True)


class RunningTasks(GlobalSecondaryIndex["VideoTaskRecord"]):
    class Meta:
        index_name = "running-index"
        projection = AllProjection()

    running = UnicodeAttribute(hash_key=True)
    created_at = NumberAttribute(range_key=True)


class VideoTaskRecord(Model):
    Meta = meta("video_tasks")

    task_id = UnicodeAttribute(hash_key=True)
    account = UnicodeAttribute(default=ACCOUNT)
    product_id = UnicodeAttribute()
    device_name = UnicodeAttribute()
    service_type = UnicodeAttribute()
    channel_id = NumberAttribute(default=0)
    custom_id = UnicodeAttribute(default="")
    start_time = NumberAttribute()
    end_time = NumberAttribute()
    video_urls = JSONText(default=list)
    #: the Config JSON string as sent, and what it parsed to
    config = UnicodeAttribute(default="")
    views = NumberAttribute(default=1)
    selected = JSONText(default=list)
    is_image = NumberAttribute(default=0)
    night = NumberAttribute(default=0)
    #: 4 running → 1 failed | 2 succeeded, empty | 3 succeeded with a result
    status = NumberAttribute()
    result = UnicodeAttribute(default="")
    classes = JSONText(default=list)
    reason = UnicodeAttribute(null=True)
    files = JSONText(default=list)
    created_at = NumberAttribute()
    updated_at = NumberAttribute()
    created_by = UnicodeAttribute(null=True)
    analyser = UnicodeAttribute(default="local")
    #: "1" while running (running-index); worker attempts so far and the last attempt's error
    running = UnicodeAttribute(null=True)
    attempts = NumberAttribute(default=0)
    last_error = UnicodeAttribute(null=True)
    #: the analysis checkpoint: the samples so far (``media.video.pack`` rows) and the video time
    #: the next part starts at
    timeline = JSONText(default=list)
    progress_s = NumberAttribute(default=0)
    #: a video analysed by Rekognition Video: its job id once started, and the next result page's
    #: token while the results are read over several steps
    video_job = UnicodeAttribute(null=True)
    video_token = UnicodeAttribute(null=True)
    #: "1" from the final write until the callback is queued and the event emitted
    notify = UnicodeAttribute(null=True)

    by_product = TasksByProduct()
    by_account = TasksByAccount()
    by_running = RunningTasks()
