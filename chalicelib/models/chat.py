"""The operator chat's table (SPEC §12): ``chat`` (pk, sk), TTL on ``expires_at``.

* ``identity`` / ``{platform}:{team}:{user}``: a chat identity and the principal it acts as;
* ``channels`` / ``allowed``: the channel allow-list (empty or absent: every channel may run commands);
* ``pending#{id}`` / ``-``: a command waiting for its confirmation click (TTL; also checked on read,
  since DynamoDB deletes expired items only eventually), claimed once by a conditional write;
* ``reply#{hash of the response URL}`` / ``-``: how many posts a response URL has had (Slack
  allows 5 within 30 minutes; TTL at the end of that window).
"""

from __future__ import annotations

from pynamodb.attributes import ListAttribute, NumberAttribute, UnicodeAttribute
from pynamodb.models import Model

from .base import JSONText, meta


class ChatIdentityRecord(Model):
    Meta = meta("chat")

    pk = UnicodeAttribute(hash_key=True)  # "identity"
    sk = UnicodeAttribute(range_key=True)  # identity id "{platform}:{team}:{user}"
    platform = UnicodeAttribute()
    team_id = UnicodeAttribute()
    user_id = UnicodeAttribute()
    principal_id = UnicodeAttribute()
    name = UnicodeAttribute(default="")
    created_at = NumberAttribute()


class ChatChannelsRecord(Model):
    Meta = meta("chat")

    pk = UnicodeAttribute(hash_key=True)  # "channels"
    sk = UnicodeAttribute(range_key=True)  # "allowed"
    channels = ListAttribute[str](of=UnicodeAttribute, default=list)
    updated_at = NumberAttribute()


class PendingActionRecord(Model):
    Meta = meta("chat")

    pk = UnicodeAttribute(hash_key=True)  # "pending#{id}"
    sk = UnicodeAttribute(range_key=True)  # "-"
    #: pending -> claimed (a click is running it) -> done; claimed -> pending when the clicker was refused
    state = UnicodeAttribute()
    asked_by = UnicodeAttribute()  # the identity ref that typed the command
    where = UnicodeAttribute()  # the channel ref
    command = UnicodeAttribute()  # the words typed (secret-free: commands never carry secrets)
    #: the route to run: method, template, params, query, body
    call = JSONText()
    blast = UnicodeAttribute()  # "creates 500 devices"
    claimed_by = UnicodeAttribute(null=True)
    claim_id = UnicodeAttribute(null=True)
    outcome = UnicodeAttribute(null=True)
    created_at = NumberAttribute()
    expires_at = NumberAttribute()


class ReplyBudgetRecord(Model):
    Meta = meta("chat")

    pk = UnicodeAttribute(hash_key=True)  # "reply#{sha256(url)}"
    sk = UnicodeAttribute(range_key=True)  # "-"
    used = NumberAttribute(default=0)
    first_at = NumberAttribute()
    expires_at = NumberAttribute()
