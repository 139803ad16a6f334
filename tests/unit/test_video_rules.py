"""Video summary tasks, the pure parts (SPEC §11): the Config grammar, the time window, URL kinds,
the cloud analyser's label mapping, interval merging and the summary template, HLS playlists."""

from __future__ import annotations

from pathlib import Path

import pytest

from chalicelib.core import errors
from chalicelib.core.config import VIDEO_ANALYSERS, ConfigError, Settings, reload_settings
from chalicelib.media import video as media
from chalicelib.media.video import cloud, hls
from chalicelib.media.video.frames import MediaError
from chalicelib.media.video.timeline import Layout, Sample, Timeline, clock_text, keep_runs, merge, summary
from chalicelib.services import video

# ---------------------------------------------------------------- the analyser setting


def test_the_analyser_setting_names_a_backend_and_defaults_by_stage() -> None:
    assert set(VIDEO_ANALYSERS) == set(media.BACKENDS)
    assert Settings.from_env({"FLEETBOX_STAGE": "local"}).video_analyser == "local"
    assert Settings.from_env({"FLEETBOX_STAGE": "prod"}).video_analyser == "cloud"
    assert Settings.from_env({"FLEETBOX_VIDEO_ANALYSER": "cloud"}).video_analyser == "cloud"


def test_an_unknown_analyser_is_a_configuration_error_naming_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"FLEETBOX_VIDEO_ANALYSER='rekognition' .*local, cloud"):
        Settings.from_env({"FLEETBOX_VIDEO_ANALYSER": "rekognition"})


# ---------------------------------------------------------------- Config grammar


@pytest.mark.parametrize(
    "text,views,selected",
    [
        ("Single", 1, (0,)),
        ("Vertical", 2, (0, 1)),
        ("Vertical,Num=3", 3, (0, 1, 2)),
        ("Vertical,Num=2,Index=1", 2, (1,)),
        ("Vertical,Num=3,Index=2;0", 3, (0, 2)),
    ],
)
def test_layouts_the_grammar_accepts(text: str, views: int, selected: tuple[int, ...]) -> None:
    assert video.parse_layout(text) == Layout(views, selected)


@pytest.mark.parametrize(
    "text",
    [
        "single",
        "Horizontal",
        "Vertical,Num=4",
        "Vertical,Num=1",
        "Vertical,Num=2,Index=2",
        "Vertical,Num=3,Index=1;1",
        "Vertical,Num=2,Index=",
        "Vertical,Index=0",
        "Vertical,Num=2,Index=0;",
        " Vertical",
        7,
    ],
)
def test_layouts_the_grammar_refuses_name_the_field(text: object) -> None:
    with pytest.raises(errors.FleetboxError) as caught:
        video.parse_layout(text)
    assert caught.value.code == errors.MULTI_CAMERA_LAYOUT_INVALID.code
    assert caught.value.field == "Config.MultiCameraLayout"


def test_the_bands_of_stacked_views_split_the_frame_height() -> None:
    assert Layout(2, (1,)).bands(432) == [(216, 432)]
    assert Layout(3, (0, 2)).bands(300) == [(0, 100), (200, 300)]


def test_config_reads_its_three_fields_and_defaults() -> None:
    assert video.parse_config(None) == (Layout(), False, False)
    assert video.parse_config('{"IsImage":true,"IsNightVision":true,"MultiCameraLayout":"Vertical"}') == (
        Layout(2, (0, 1)),
        True,
        True,
    )


@pytest.mark.parametrize(
    "text,field",
    [
        ("not json", "Config"),
        ("[1]", "Config"),
        ('{"IsImage":"yes"}', "Config.IsImage"),
        ('{"IsNightVision":1}', "Config.IsNightVision"),
        ('{"Layout":"Single"}', "Config.Layout"),
    ],
)
def test_config_refusals_name_the_field(text: str, field: str) -> None:
    with pytest.raises(errors.FleetboxError) as caught:
        video.parse_config(text)
    assert (caught.value.code, caught.value.field) == (errors.CONFIG_INVALID.code, field)


# ---------------------------------------------------------------- time window

NOW = 1_800_000_000


def test_the_time_window_edges_are_accepted() -> None:
    video.check_window(NOW - 30 * 86400, NOW + 3600, NOW)
    video.check_window(NOW, NOW, NOW)


@pytest.mark.parametrize(
    "start,end,code,field",
    [
        (NOW - 30 * 86400 - 1, NOW, errors.START_INVALID, "StartTime"),
        (NOW, NOW + 3601, errors.END_INVALID, "EndTime"),
        (NOW, NOW - 1, errors.TIME_RANGE_INVALID, "EndTime"),
    ],
)
def test_the_time_window_refusals(start: int, end: int, code: errors.ErrorCode, field: str) -> None:
    with pytest.raises(errors.FleetboxError) as caught:
        video.check_window(start, end, NOW)
    assert (caught.value.code, caught.value.field) == (code.code, field)


# ---------------------------------------------------------------- URL kinds and the media root


@pytest.mark.parametrize(
    "url,kind",
    [
        ("https://cdn.example.com/live/index.m3u8?token=abc", "hls"),
        ("http://example.com/a/clip.MP4", "video"),
        ("http://example.com/a/clip.avi", "video"),
        ("people-walking.mp4", "video"),
        ("file:///media/cam%201.mov", "video"),
        ("https://example.com/snap.jpeg", "image"),
        ("https://example.com/snap.webp", "image"),
        ("https://example.com/page.html", None),
        ("https://example.com/clip.mp4.exe", None),
        ("https://example.com/", None),
    ],
)
def test_url_kinds_come_from_the_path_extension(url: str, kind: str | None) -> None:
    assert video.url_kind(url) == kind


@pytest.fixture()
def media_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    root = tmp_path / "media"
    (root / "cams").mkdir(parents=True)
    (root / "cams" / "a.mp4").write_bytes(b"x")
    (tmp_path / "secret.mp4").write_bytes(b"x")
    (root / "escape.mp4").symlink_to(tmp_path / "secret.mp4")
    monkeypatch.setenv("FLEETBOX_MEDIA_ROOT", str(root))
    reload_settings()
    yield root
    monkeypatch.delenv("FLEETBOX_MEDIA_ROOT")
    reload_settings()


def test_local_paths_inside_the_media_root_resolve(media_root: Path) -> None:
    assert video.local_path("cams/a.mp4", "f") == media_root / "cams" / "a.mp4"
    assert video.local_path(f"file://{media_root}/cams/a.mp4", "f") == media_root / "cams" / "a.mp4"


@pytest.mark.parametrize(
    "url", ["../secret.mp4", "cams/../../secret.mp4", "escape.mp4", "/etc/passwd.mp4", "file:///etc/x.mp4", "b.mp4"]
)
def test_local_paths_outside_the_root_or_missing_are_refused(media_root: Path, url: str) -> None:
    with pytest.raises(errors.FleetboxError) as caught:
        video.local_path(url, "VideoURLs[0]")
    assert (caught.value.code, caught.value.field) == (errors.VIDEO_URLS_INVALID.code, "VideoURLs[0]")


def test_without_a_media_root_only_http_urls_are_accepted() -> None:
    with pytest.raises(errors.FleetboxError) as caught:
        video.local_path("people-walking.mp4", "VideoURLs[0]")
    assert "no media root" in caught.value.message


# ---------------------------------------------------------------- the cloud analyser's labels


def test_rekognition_labels_map_to_spec_classes_through_names_and_parents() -> None:
    labels = [
        {"Name": "Sedan", "Confidence": 91.0, "Parents": [{"Name": "Car"}, {"Name": "Vehicle"}]},
        {"Name": "Man", "Confidence": 99.0, "Parents": [{"Name": "Person"}]},
        {"Name": "License Plate", "Confidence": 88.0, "Parents": []},
        {"Name": "Kitten", "Confidence": 75.0},
        {"Name": "Dog", "Confidence": 40.0},  # under the confidence floor
        {"Name": "Plastic Bag", "Confidence": 80.0},
        {"Name": "Table", "Confidence": 99.0, "Parents": [{"Name": "Furniture"}]},
    ]
    assert cloud.classes_of(labels, 70.0) == {"vehicle", "person", "license plate", "cat", "plastic-bags", "package"}


def test_fire_smoke_and_parcels_map_too() -> None:
    labels = [{"Name": n, "Confidence": 90.0} for n in ("Flame", "Smoke", "Cardboard", "Envelope", "Paper Bag")]
    assert cloud.classes_of(labels, 70.0) == {"fire", "smoke", "package", "file-bags", "paper-bags"}


# ---------------------------------------------------------------- intervals and the summary


def test_runs_shorter_than_two_samples_are_dropped() -> None:
    assert keep_runs([True, False, True, True, False, True], 2) == [False, False, True, True, False, False]


def test_positive_samples_merge_into_intervals() -> None:
    times = [0, 1, 2, 3, 4, 5, 6]
    assert merge(times, [False, True, True, False, True, True, True]) == [(1, 2), (4, 6)]
    assert merge(times, [False] * 7) == []


@pytest.mark.parametrize("seconds,text", [(0, "0:00"), (7.4, "0:07"), (70, "1:10"), (3725, "1:02:05")])
def test_clock_text(seconds: float, text: str) -> None:
    assert clock_text(seconds) == text


def test_the_summary_template_lists_classes_then_unexplained_motion() -> None:
    text = summary({"person": [(7, 19), (23, 44)]}, [(70, 70)], is_image=False)
    assert (
        text
        == "A person is visible from 0:07 to 0:19 and from 0:23 to 0:44; motion without a recognised object at 1:10."
    )
    assert summary({"vehicle": [(5, 9)], "person": [(1, 1)]}, [], False) == (
        "A person is visible at 0:01; a vehicle is visible from 0:05 to 0:09."
    )
    assert summary({}, [(3, 8)], False) == "Motion without a recognised object from 0:03 to 0:08."
    assert summary({}, [], False) == ""
    assert summary({"person": [(0, 0)], "cat": [(0, 0)]}, [], True) == "The image shows a person and a cat."


def test_motion_next_to_a_class_is_explained_by_it() -> None:
    samples = [
        Sample(t, frozenset({"person"}) if 3 <= t <= 5 else frozenset(), motion=t in (2, 4, 6, 9)) for t in range(11)
    ]
    timeline = Timeline(samples)
    assert timeline.intervals(["person", "cat"]) == {"person": [(3, 5)]}
    assert timeline.unexplained_motion(["person"]) == [(9, 9)]


def test_an_image_counts_a_single_sample() -> None:
    timeline = Timeline([Sample(0.0, frozenset({"person"}))], is_image=True)
    assert timeline.intervals(["person"]) == {"person": [(0.0, 0.0)]}
    assert Timeline([Sample(0.0, frozenset({"person"}))]).intervals(["person"]) == {}


# ---------------------------------------------------------------- HLS playlists

PLAYLIST = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:6\n#EXTINF:6.0,\nseg000.ts\n#EXTINF:4.5,\nsub/seg001.ts\n#EXT-X-ENDLIST\n"


def test_a_media_playlist_resolves_its_segments_against_its_own_url() -> None:
    segs = hls.parse(PLAYLIST, "https://cdn.example.com/cam/index.m3u8")
    assert [s.uri for s in segs] == [
        "https://cdn.example.com/cam/seg000.ts",
        "https://cdn.example.com/cam/sub/seg001.ts",
    ]
    assert hls.total_s(segs) == 10.5
    local = hls.local_playlist(segs, ["/tmp/a.ts", "/tmp/b.ts"])
    assert [s.uri for s in hls.parse(local, "/tmp/local.m3u8")] == ["/tmp/a.ts", "/tmp/b.ts"]


@pytest.mark.parametrize(
    "text,why",
    [
        ("seg.ts\n", "#EXTM3U"),
        ("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nlow.m3u8\n", "master playlist"),
        ('#EXTM3U\n#EXT-X-KEY:METHOD=AES-128,URI="http://10.0.0.1/key"\n#EXTINF:1,\na.ts\n', "encrypted"),
        ('#EXTM3U\n#EXT-X-MAP:URI="init.mp4"\n#EXTINF:1,\na.m4s\n', "EXT-X-MAP"),
        ("#EXTM3U\na.ts\n", "#EXTINF"),
        ("#EXTM3U\n#EXT-X-ENDLIST\n", "no segment"),
    ],
)
def test_playlists_that_would_fetch_more_are_refused_with_the_reason(text: str, why: str) -> None:
    with pytest.raises(MediaError, match=why):
        hls.parse(text, "https://cdn.example.com/index.m3u8")


# ---------------------------------------------------------------- checkpoints of a long analysis


def test_samples_survive_the_checkpoint_round_trip() -> None:
    from chalicelib.media.video import pack, unpack

    samples = [Sample(0.0, frozenset(), False), Sample(1.0, frozenset({"person", "vehicle"}), True)]
    assert unpack(pack(samples)) == samples
    assert pack(samples)[1] == [1.0, ["person", "vehicle"], 1]


def test_a_resumed_playlist_starts_one_segment_before_the_checkpoint() -> None:
    segments = [hls.Segment(f"s{i}.ts", 6.0) for i in range(4)]
    assert video._from(segments, 0.0) == (segments, 0.0)
    assert video._from(segments, 5.0) == (segments, 0.0)
    assert video._from(segments, 6.0) == (segments, 0.0)  # s1 needed, s0 for the motion reference
    assert video._from(segments, 13.0) == (segments[1:], 6.0)
    assert video._from(segments, 23.0) == (segments[2:], 12.0)
