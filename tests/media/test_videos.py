"""transcode_video() and probe_video() with the imageio-ffmpeg binary."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from devstack import media_fixtures as mf
from housekeeper.errors import MediaRejectedError, MediaTranscodeError
from housekeeper.media.videos import (
    mp4_top_level_boxes,
    output_size,
    probe_video,
    transcode_video,
)


@pytest.fixture(scope="module")
def portrait_video_only(tmp_path_factory: pytest.TempPathFactory, ffmpeg: str) -> Path:
    """The named case: 3 s, 1080x1920, H.264, no audio track."""
    path = tmp_path_factory.mktemp("videos") / "portrait.mp4"
    return mf.make_video(path, width=1080, height=1920, duration_s=3, ffmpeg=ffmpeg)


@pytest.fixture(scope="module")
def small_with_audio(tmp_path_factory: pytest.TempPathFactory, ffmpeg: str) -> Path:
    path = tmp_path_factory.mktemp("videos") / "small.mp4"
    return mf.make_video(
        path, width=320, height=240, duration_s=1, audio=True, ffmpeg=ffmpeg
    )


def test_3s_1080x1920_video_without_audio_becomes_valid_video_only_mp4(
    portrait_video_only: Path, tmp_path: Path, ffmpeg: str
) -> None:
    source = probe_video(portrait_video_only, ffmpeg=ffmpeg)
    assert (source.width, source.height, source.has_audio) == (1080, 1920, False)
    assert mp4_top_level_boxes(portrait_video_only).index("mdat") < (
        mp4_top_level_boxes(portrait_video_only).index("moov")
    )

    result = transcode_video(
        portrait_video_only, tmp_path / "out.mp4", target_mb=1.5, ffmpeg=ffmpeg
    )

    assert result.path == tmp_path / "out.mp4"
    assert (result.width, result.height) == (720, 1280)
    assert result.has_audio is False
    assert result.met_target is True
    assert result.size_bytes == result.path.stat().st_size <= 1.5 * 1024 * 1024
    assert result.duration_s == pytest.approx(3.0, abs=0.1)
    assert result.content_type == "video/mp4"
    output = probe_video(result.path, ffmpeg=ffmpeg)
    assert (output.codec, output.pixel_format) == ("h264", "yuv420p")
    assert (output.width, output.height, output.has_audio) == (720, 1280, False)
    boxes = mp4_top_level_boxes(result.path)
    assert boxes[0] == "ftyp"
    assert boxes.index("moov") < boxes.index("mdat")


def test_audio_is_kept_as_aac(
    small_with_audio: Path, tmp_path: Path, ffmpeg: str
) -> None:
    result = transcode_video(
        small_with_audio, tmp_path / "out.mp4", target_mb=1.5, ffmpeg=ffmpeg, threads=1
    )

    assert result.has_audio is True
    assert (result.width, result.height) == (320, 240)
    stderr = subprocess.run(
        [ffmpeg, "-hide_banner", "-i", str(result.path)],
        capture_output=True,
        text=True,
        check=False,
    ).stderr
    assert "Audio: aac" in stderr
    assert "Video: h264" in stderr


def test_odd_sized_webm_is_made_even_and_never_upscaled(
    tmp_path: Path, ffmpeg: str
) -> None:
    source = mf.make_video(
        tmp_path / "odd.webm",
        width=321,
        height=241,
        duration_s=0.5,
        codec="libvpx",
        ffmpeg=ffmpeg,
    )

    result = transcode_video(source, tmp_path / "out.mp4", target_mb=1.5, ffmpeg=ffmpeg)

    assert (result.width, result.height) == (320, 240)


def test_rotated_video_is_sized_as_displayed(tmp_path: Path, ffmpeg: str) -> None:
    stored = mf.make_video(
        tmp_path / "stored.mp4", width=640, height=360, duration_s=0.5, ffmpeg=ffmpeg
    )
    rotated = tmp_path / "rotated.mp4"
    subprocess.run(
        [ffmpeg, "-loglevel", "error", "-y", "-display_rotation", "90"]
        + ["-i", str(stored), "-c", "copy", str(rotated)],
        check=True,
        capture_output=True,
    )
    assert probe_video(rotated, ffmpeg=ffmpeg).rotation in (90, 270)

    result = transcode_video(
        rotated, tmp_path / "out.mp4", target_mb=1.5, ffmpeg=ffmpeg
    )

    assert (result.width, result.height) == (360, 640)


def test_a_target_under_the_bitrate_floor_is_reported_as_missed(
    small_with_audio: Path, tmp_path: Path, ffmpeg: str
) -> None:
    result = transcode_video(
        small_with_audio, tmp_path / "out.mp4", target_mb=0.005, ffmpeg=ffmpeg
    )

    assert result.met_target is False
    assert result.video_kbps_cap == 300
    assert result.attempts == 1
    assert result.size_bytes > 0.005 * 1024 * 1024
    assert result.path.exists()


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((1080, 1920), (720, 1280)),
        ((1920, 1080), (1280, 720)),
        ((1280, 720), (1280, 720)),
        ((1081, 1921), (720, 1280)),
        ((321, 241), (320, 240)),
        ((100, 50), (100, 50)),
        ((3, 3), (2, 2)),
        ((3840, 2160), (1280, 720)),
    ],
)
def test_output_size_is_even_capped_and_never_upscaled(
    size: tuple[int, int], expected: tuple[int, int]
) -> None:
    assert output_size(*size, 720) == expected


def test_missing_ffmpeg_is_a_transcode_error_with_the_reason(
    small_with_audio: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "no-ffmpeg"

    with pytest.raises(MediaTranscodeError) as caught:
        transcode_video(
            small_with_audio, tmp_path / "out.mp4", target_mb=1, ffmpeg=missing
        )

    assert str(caught.value) == f"ffmpeg is not available: no file at {missing}"
    assert caught.value.code == "media_transcode_failed"


def test_ffmpeg_that_fails_is_a_transcode_error(
    small_with_audio: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "ffmpeg"
    broken.write_text("#!/bin/sh\necho 'libx264 exploded' >&2\nexit 1\n")
    broken.chmod(0o755)

    with pytest.raises(MediaTranscodeError) as caught:
        transcode_video(
            small_with_audio, tmp_path / "out.mp4", target_mb=1, ffmpeg=broken
        )

    assert str(caught.value) == "ffmpeg could not read small.mp4: libx264 exploded"


def test_encode_failure_names_the_exit_code_and_leaves_no_file(
    small_with_audio: Path, tmp_path: Path, ffmpeg: str
) -> None:
    target = tmp_path / "missing-folder" / "out.mp4"

    with pytest.raises(MediaTranscodeError) as caught:
        transcode_video(small_with_audio, target, target_mb=1, ffmpeg=ffmpeg)

    assert str(caught.value).startswith("ffmpeg failed with exit code")
    assert not target.exists()


def test_timeout_stops_ffmpeg_and_removes_the_output(
    portrait_video_only: Path, tmp_path: Path, ffmpeg: str
) -> None:
    target = tmp_path / "out.mp4"

    with pytest.raises(MediaTranscodeError) as caught:
        transcode_video(
            portrait_video_only, target, target_mb=1, ffmpeg=ffmpeg, timeout_s=0.05
        )

    assert str(caught.value) == "ffmpeg timed out after 0.05 s"
    assert not target.exists()


def test_bytes_that_are_no_video_are_rejected(tmp_path: Path, ffmpeg: str) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x01garbage" * 100)

    with pytest.raises(MediaRejectedError, match="not a readable video"):
        transcode_video(junk, tmp_path / "out.mp4", target_mb=1, ffmpeg=ffmpeg)


def test_an_audio_only_file_is_rejected(tmp_path: Path, ffmpeg: str) -> None:
    audio = tmp_path / "tone.m4a"
    subprocess.run(
        [ffmpeg, "-loglevel", "error", "-y", "-f", "lavfi", "-i", "sine=duration=0.2"]
        + ["-c:a", "aac", str(audio)],
        check=True,
        capture_output=True,
    )

    with pytest.raises(MediaRejectedError) as caught:
        transcode_video(audio, tmp_path / "out.mp4", target_mb=1, ffmpeg=ffmpeg)

    assert str(caught.value) == "the file has no video stream"


def test_a_webm_that_announces_no_duration_is_measured_by_decoding(
    tmp_path: Path, ffmpeg: str
) -> None:
    # Written to a pipe, the WebM muxer cannot go back to record the duration,
    # as with browser recordings.
    streamed = subprocess.run(
        [ffmpeg, "-loglevel", "error", "-f", "lavfi"]
        + ["-i", "testsrc2=size=160x120:rate=30:duration=1"]
        + ["-c:v", "libvpx", "-deadline", "realtime", "-f", "webm", "pipe:1"],
        check=True,
        capture_output=True,
    ).stdout
    source = tmp_path / "live.webm"
    source.write_bytes(streamed)

    probe = probe_video(source, ffmpeg=ffmpeg)
    result = transcode_video(source, tmp_path / "out.mp4", target_mb=1, ffmpeg=ffmpeg)

    assert probe.duration_s == pytest.approx(1.0, abs=0.05)
    assert (probe.codec, probe.width, probe.height) == ("vp8", 160, 120)
    assert result.duration_s == pytest.approx(1.0, abs=0.1)
