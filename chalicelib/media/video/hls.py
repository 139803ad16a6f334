"""HLS media playlists (RFC 8216), read and rewritten so the decoder only ever opens local files.

A playlist names its segments by URI; handed to FFmpeg as is, it would make the decoder fetch
whatever those URIs say (another host, an internal address, a file outside the media root).  So
the service layer reads the playlist with :func:`parse`, checks and fetches every segment
itself, and gives the decoder the playlist :func:`local_playlist` writes, whose segments are
the local copies.  Tags that make a player fetch more (encryption keys, init sections, variant
streams) are refused with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urljoin

from .frames import MediaError

MAX_PLAYLIST_BYTES = 1024 * 1024
MAX_SEGMENTS = 5000
#: tags whose URIs the decoder would fetch, or that make this a playlist of playlists
_MASTER = "the playlist is a master playlist: give the URL of one of its media playlists"
_REFUSED = {
    "#EXT-X-STREAM-INF": _MASTER,
    "#EXT-X-MEDIA": _MASTER,
    "#EXT-X-I-FRAME-STREAM-INF": _MASTER,
    "#EXT-X-MAP": "fragmented-MP4 init sections (EXT-X-MAP) are not supported; use MPEG-TS segments",
    "#EXT-X-SESSION-KEY": "encrypted segments are not supported",
}


@dataclass(frozen=True)
class Segment:
    uri: str
    duration_s: float


def parse(text: str, base: str) -> list[Segment]:
    """The segments of a media playlist, their URIs resolved against ``base`` (the playlist's
    own URL or path).  Raises :class:`MediaError` for anything this reader will not follow."""
    lines = [line.strip() for line in text.splitlines()]
    if not lines or lines[0].lstrip("\ufeff") != "#EXTM3U":
        raise MediaError("the playlist does not start with #EXTM3U")
    segments: list[Segment] = []
    duration: float | None = None
    for line in lines[1:]:
        if not line:
            continue
        tag = line.split(":", 1)[0]
        if tag in _REFUSED:
            raise MediaError(_REFUSED[tag])
        if tag == "#EXT-X-KEY":
            method = line.partition("METHOD=")[2].split(",", 1)[0].strip()
            if method != "NONE":
                raise MediaError("encrypted segments (EXT-X-KEY) are not supported")
            continue
        if tag == "#EXTINF":
            try:
                duration = float(line.split(":", 1)[1].split(",", 1)[0])
            except (IndexError, ValueError):
                raise MediaError(f"the playlist has a malformed #EXTINF line: {line[:60]}") from None
            continue
        if line.startswith("#"):
            continue  # other tags (version, target duration, sequence, end list …) need no fetching
        if duration is None:
            raise MediaError("a playlist segment has no #EXTINF duration before it")
        segments.append(Segment(urljoin(base, line), duration))
        duration = None
        if len(segments) > MAX_SEGMENTS:
            raise MediaError(f"the playlist has more than {MAX_SEGMENTS} segments")
    if not segments:
        raise MediaError("the playlist names no segment")
    return segments


def total_s(segments: Sequence[Segment]) -> float:
    return sum(s.duration_s for s in segments)


def local_playlist(segments: Sequence[Segment], paths: Sequence[str]) -> str:
    """A VOD playlist of the local copies ``paths`` (one per segment, same order)."""
    target = max(1, int(max(s.duration_s for s in segments) + 0.999))
    out = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{target}", "#EXT-X-PLAYLIST-TYPE:VOD"]
    for seg, path in zip(segments, paths, strict=True):
        out += [f"#EXTINF:{seg.duration_s:.6f},", path]
    out.append("#EXT-X-ENDLIST")
    return "\n".join(out) + "\n"
