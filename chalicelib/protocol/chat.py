"""The operator chat's platform seam (SPEC §12): everything that differs between Slack, Feishu/Lark,
WeCom or Telegram sits behind :class:`ChatAdapter`; commands, permissions, confirmations, alerts and
the audit are written once against the neutral types here.

- Inbound (platforms that send commands to us, e.g. Slack): :meth:`ChatAdapter.verify` checks the
  request's signature on the raw body, :meth:`ChatAdapter.parse_command` and
  :meth:`ChatAdapter.parse_click` turn a verified request into a :class:`Command` or a :class:`Click`.
- Outbound (every platform): :meth:`ChatAdapter.render` turns a neutral :class:`Message` into the
  platform's payload (Slack: Block Kit with a plain-text fallback); sending the payload is I/O and
  lives in the forwarders layer.

An adapter that only sends (a Feishu custom bot receives no commands) says so with
``inbound = False``; nothing routes requests to it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Where:
    """A conversation: a platform's workspace (team) and channel."""

    platform: str
    team: str
    channel: str

    @property
    def ref(self) -> str:
        """Stable text form, e.g. ``slack:T0123:C0456`` (subscriptions, audit ``channel``)."""
        return f"{self.platform}:{self.team}:{self.channel}"


@dataclass(frozen=True)
class Who:
    """A chat identity: one user of one workspace (mapped to a principal through the API)."""

    platform: str
    team: str
    user: str
    user_name: str = ""

    @property
    def ref(self) -> str:
        return f"{self.platform}:{self.team}:{self.user}"


@dataclass(frozen=True)
class Command:
    """A slash command as received: ``/fleet device show P/d1`` → ``text`` = ``device show P/d1``."""

    who: Who
    where: Where
    command: str
    text: str
    #: where later answers go (Slack: 5 posts within 30 minutes)
    response_url: str | None = None
    trigger_id: str | None = None


@dataclass(frozen=True)
class Click:
    """A button press on a message the product sent."""

    who: Who
    where: Where
    action_id: str
    value: str
    response_url: str | None = None
    #: the platform's id of this delivery, when it gives one (retries carry the same)
    delivery_id: str | None = None


@dataclass(frozen=True)
class Confirm:
    """The platform's own "are you sure?" dialog on a button (Slack ``confirm`` object)."""

    title: str
    text: str
    ok: str = "Confirm"
    deny: str = "Cancel"


@dataclass(frozen=True)
class Button:
    action_id: str
    label: str
    value: str
    style: str | None = None  # "primary" | "danger" | None
    confirm: Confirm | None = None
    #: a link button (opens ``url``) instead of an action
    url: str | None = None


@dataclass(frozen=True)
class Image:
    url: str
    alt: str


@dataclass
class Message:
    """A platform-neutral message.  ``text`` is the plain-text fallback and the first line; every
    adapter must render all of it (sections, fields, buttons, image) or degrade to text."""

    text: str
    sections: list[str] = field(default_factory=list)
    #: short label → value pairs (rendered as a two-column list where the platform has one)
    fields: list[tuple[str, str]] = field(default_factory=list)
    buttons: list[Button] = field(default_factory=list)
    image: Image | None = None
    #: visible to the whole channel (Slack ``in_channel``); default: only the caller sees it
    in_channel: bool = False
    #: replace the message a click came from (the outcome of a confirmation)
    replace_original: bool = False


class ChatAdapter(ABC):
    """One chat platform.  Implementations are pure: no network, no storage."""

    #: the platform's name in :class:`Where`/:class:`Who` refs ("slack", "feishu")
    platform: str
    #: whether the platform sends us commands (verify/parse_* are meaningful)
    inbound: bool = True

    @abstractmethod
    def verify(self, headers: Mapping[str, str], raw_body: bytes, now: float) -> None:
        """Raise :class:`chalicelib.core.errors.FleetboxError` unless the request is signed by the
        platform within its replay window (constant-time comparison)."""

    @abstractmethod
    def parse_command(self, headers: Mapping[str, str], raw_body: bytes) -> Command:
        """A verified command request → :class:`Command`; malformed → a FleetboxError with the field."""

    @abstractmethod
    def parse_click(self, headers: Mapping[str, str], raw_body: bytes) -> Click:
        """A verified interaction request → :class:`Click`; malformed → a FleetboxError."""

    @abstractmethod
    def render(self, message: Message) -> dict[str, Any]:
        """The platform's JSON payload for ``message`` (for a reply, a response URL or a channel post)."""
