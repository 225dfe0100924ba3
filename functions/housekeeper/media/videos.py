"""Transcode one video into a small, streamable H.264/AAC MP4 with ffmpeg.

ffmpeg comes from the `imageio-ffmpeg` wheel, so every runtime that installed
the requirements has it; that wheel has no ffprobe, so the source and the output
are probed by parsing `ffmpeg -i`. The output is yuv420p (what every browser
and phone decodes), `+faststart` (the index before the data, so playback starts
before the download ends), at most `max_short_side` pixels on its shorter side,
with even dimensions, never upscaled, and with audio only when the source has
some.

Size: x264 runs in constant-quality mode capped by a VBV maximum rate that the
duration allows within `target_mb`; easy footage comes out smaller than the
cap. The cap never goes under `floor_kbps`: when even the floor cannot fit, the
result says so (`met_target` false) with the size reached.
"""

from __future__ import annotations

import logging
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from housekeeper.errors import MediaRejectedError, MediaTranscodeError

logger = logging.getLogger(__name__)

MAX_SHORT_SIDE = 720
FLOOR_KBPS = 300
CEILING_KBPS = 2500
AUDIO_KBPS = 64
MAX_FPS = 30
PRESET = "veryfast"
CRF = 23
TIMEOUT_S = 300.0
MP4_CONTENT_TYPE = "video/mp4"

# Container overhead (moov index, box headers) and the VBV buffer's slack.
_SIZE_MARGIN = 0.94
_MAX_ATTEMPTS = 3
_PROBE_TIMEOUT_S = 30.0
_STDERR_TAIL = 600

_DURATION = re.compile(r"Duration: (\d+):(\d{2}):(\d{2}(?:\.\d+)?)")
_STREAM = re.compile(r"^\s*Stream #\d+:\d+\S*: (Video|Audio): (.*)$")
_SIZE = re.compile(r", (\d+)x(\d+)[\s,\[]")
_FPS = re.compile(r", (\d+(?:\.\d+)?) fps")
_ROTATION = re.compile(r"rotation of (-?\d+(?:\.\d+)?) degrees", re.IGNORECASE)
_TIME = re.compile(r"time=(\d+):(\d{2}):(\d{2}(?:\.\d+)?)")


@dataclass(frozen=True)
class VideoProbe:
    """What `ffmpeg -i` says of a file; width and height as displayed (rotated)."""

    duration_s: float | None
    width: int
    height: int
    fps: float | None
    codec: str
    pixel_format: str | None
    has_audio: bool
    rotation: int


@dataclass(frozen=True)
class VideoResult:
    """The transcoded file and what it became.

    `bitrate_kbps` is the measured average of the whole file (video and audio);
    `met_target` is false when the bitrate floor could not fit `target_mb`, in
    which case `size_bytes` is the size reached.
    """

    path: Path
    size_bytes: int
    width: int
    height: int
    duration_s: float
    has_audio: bool
    bitrate_kbps: float
    met_target: bool
    attempts: int = 1
    video_kbps_cap: int = 0
    content_type: str = MP4_CONTENT_TYPE


def ffmpeg_path(ffmpeg: str | Path | None = None) -> str:
    """The ffmpeg to run: the given one, else the `imageio-ffmpeg` wheel's binary."""
    if ffmpeg is not None:
        path = Path(ffmpeg)
        if not path.is_file():
            raise MediaTranscodeError(f"ffmpeg is not available: no file at {path}")
        return str(path)
    try:
        import imageio_ffmpeg

        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError) as exc:
        raise MediaTranscodeError(
            f"ffmpeg is not available: the imageio-ffmpeg wheel gave none ({exc})"
        ) from exc


def probe_video(path: Path, *, ffmpeg: str | Path | None = None) -> VideoProbe:
    """Duration, displayed size, frame rate, codec and audio presence of a file."""
    exe = ffmpeg_path(ffmpeg)
    stderr = _run(
        [exe, "-hide_banner", "-nostdin", "-i", str(path)],
        timeout_s=_PROBE_TIMEOUT_S,
        check=False,
    )
    probe = _parse_probe(stderr)
    if probe is None:
        reason = _tail(stderr) or "no output"
        if "Input #0" in stderr:
            raise MediaRejectedError("the file has no video stream")
        if "Invalid data found" in stderr:
            raise MediaRejectedError(f"not a readable video: {reason}")
        raise MediaTranscodeError(f"ffmpeg could not read {path.name}: {reason}")
    if probe.duration_s is None:
        probe = _with_decoded_duration(probe, path, exe)
    return probe


def transcode_video(
    src: Path,
    dst: Path,
    *,
    target_mb: float,
    max_short_side: int = MAX_SHORT_SIDE,
    ffmpeg: str | Path | None = None,
    floor_kbps: int = FLOOR_KBPS,
    ceiling_kbps: int = CEILING_KBPS,
    audio_kbps: int = AUDIO_KBPS,
    max_fps: float = MAX_FPS,
    preset: str = PRESET,
    timeout_s: float = TIMEOUT_S,
    threads: int | None = None,
) -> VideoResult:
    """Transcode `src` into an MP4 at `dst` that aims at `target_mb` MiB.

    `threads` caps ffmpeg's threads (default: all cores), for callers that
    run several transcodes at once. Raises `MediaRejectedError` when `src` is
    no readable video and
    `MediaTranscodeError` when ffmpeg is missing, fails, times out or writes an
    invalid file (which is then removed).
    """
    if target_mb <= 0 or max_short_side < 2 or floor_kbps <= 0:
        raise ValueError("target_mb, max_short_side and floor_kbps must be positive")
    exe = ffmpeg_path(ffmpeg)
    source = probe_video(src, ffmpeg=exe)
    duration_s = max(source.duration_s or 0.0, 0.04)
    width, height = output_size(source.width, source.height, max_short_side)

    target_bytes = int(target_mb * 1024 * 1024)
    audio = audio_kbps if source.has_audio else 0
    budget_kbps = target_bytes * 8 * _SIZE_MARGIN / duration_s / 1000
    video_kbps = int(min(ceiling_kbps, max(floor_kbps, budget_kbps - audio)))

    attempts = 0
    while True:
        attempts += 1
        command = _transcode_command(
            exe,
            src,
            dst,
            source,
            width,
            height,
            video_kbps,
            audio_kbps,
            max_fps,
            preset,
        )
        if threads is not None:
            command[-1:-1] = ["-threads", str(threads)]
        try:
            _run(command, timeout_s=timeout_s, check=True)
        except BaseException:
            dst.unlink(missing_ok=True)
            raise
        size = dst.stat().st_size
        if (
            size <= target_bytes
            or video_kbps <= floor_kbps
            or attempts >= _MAX_ATTEMPTS
        ):
            break
        # The cap overshot (VBV slack, a short clip's fixed overhead): scale it
        # by how far the size missed, never under the floor.
        video_kbps = max(floor_kbps, int(video_kbps * target_bytes / size * 0.95))

    result = _verify(exe, dst, source, size, target_bytes, attempts, video_kbps)
    logger.debug(
        "transcoded %dx%d %.1f s video to %dx%d, %d bytes (%.0f kb/s, target %s)",
        source.width,
        source.height,
        duration_s,
        result.width,
        result.height,
        result.size_bytes,
        result.bitrate_kbps,
        "met" if result.met_target else "missed",
    )
    return result


def output_size(width: int, height: int, max_short_side: int) -> tuple[int, int]:
    """Even dimensions with the shorter side at most `max_short_side`, never larger."""
    short = min(width, height)
    factor = min(1.0, max_short_side / short) if short > 0 else 1.0

    def even(value: float, limit: int) -> int:
        return max(2, min(limit - limit % 2, round(value / 2) * 2))

    return even(width * factor, width), even(height * factor, height)


def mp4_top_level_boxes(path: Path) -> list[str]:
    """The types of an MP4 file's top-level boxes, in file order."""
    boxes: list[str] = []
    with path.open("rb") as handle:
        offset = 0
        end = path.stat().st_size
        while offset + 8 <= end:
            handle.seek(offset)
            header = handle.read(16)
            size = int.from_bytes(header[:4], "big")
            kind = header[4:8].decode("latin-1")
            if size == 1 and len(header) == 16:
                size = int.from_bytes(header[8:16], "big")
            elif size == 0:
                size = end - offset
            if size < 8:
                break
            boxes.append(kind)
            offset += size
    return boxes


def _transcode_command(
    exe: str,
    src: Path,
    dst: Path,
    source: VideoProbe,
    width: int,
    height: int,
    video_kbps: int,
    audio_kbps: int,
    max_fps: float,
    preset: str,
) -> list[str]:
    filters = [f"scale={width}:{height}:flags=lanczos", "setsar=1"]
    if source.fps is not None and source.fps > max_fps + 0.5:
        filters.append(f"fps={max_fps:g}")
    command = [
        exe,
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-y",
        "-i",
        str(src),
        "-map",
        "0:v:0",
        "-vf",
        ",".join(filters),
        "-c:v",
        "libx264",
        "-preset",
        preset,
        "-profile:v",
        "high",
        "-pix_fmt",
        "yuv420p",
        "-crf",
        str(CRF),
        "-maxrate",
        f"{video_kbps}k",
        # A one-second buffer keeps the average close to the cap.
        "-bufsize",
        f"{video_kbps}k",
    ]
    if source.has_audio:
        command += [
            "-map",
            "0:a:0",
            "-c:a",
            "aac",
            "-b:a",
            f"{audio_kbps}k",
            "-ac",
            "2",
        ]
    else:
        command.append("-an")
    command += [
        "-sn",
        "-dn",
        "-map_metadata",
        "-1",
        "-map_chapters",
        "-1",
        "-movflags",
        "+faststart",
        "-f",
        "mp4",
        str(dst),
    ]
    return command


def _verify(
    exe: str,
    dst: Path,
    source: VideoProbe,
    size: int,
    target_bytes: int,
    attempts: int,
    video_kbps: int,
) -> VideoResult:
    try:
        output = probe_video(dst, ffmpeg=exe)
        boxes = mp4_top_level_boxes(dst)
    except (MediaRejectedError, MediaTranscodeError, OSError) as exc:
        dst.unlink(missing_ok=True)
        raise MediaTranscodeError(f"ffmpeg wrote an unreadable file: {exc}") from exc
    if (
        "moov" not in boxes
        or "mdat" not in boxes
        or boxes.index("moov") > boxes.index("mdat")
    ):
        dst.unlink(missing_ok=True)
        raise MediaTranscodeError(
            f"ffmpeg output is not faststart (top-level boxes {boxes})"
        )
    if output.codec != "h264" or output.has_audio != source.has_audio:
        dst.unlink(missing_ok=True)
        raise MediaTranscodeError(
            f"ffmpeg output has codec {output.codec} and audio {output.has_audio}, "
            f"expected h264 and audio {source.has_audio}"
        )
    duration_s = output.duration_s or source.duration_s or 0.0
    bitrate_kbps = size * 8 / duration_s / 1000 if duration_s > 0 else 0.0
    return VideoResult(
        path=dst,
        size_bytes=size,
        width=output.width,
        height=output.height,
        duration_s=duration_s,
        has_audio=output.has_audio,
        bitrate_kbps=round(bitrate_kbps, 1),
        met_target=size <= target_bytes,
        attempts=attempts,
        video_kbps_cap=video_kbps,
    )


def _parse_probe(stderr: str) -> VideoProbe | None:
    # Only the first input's section: an output section (none here) or a
    # second input would describe other streams.
    duration_s: float | None = None
    video: tuple[str, list[str]] | None = None
    has_audio = False
    current_is_video = False
    for line in stderr.splitlines():
        duration = _DURATION.search(line)
        if duration and duration_s is None:
            hours, minutes, seconds = duration.groups()
            duration_s = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
            continue
        stream = _STREAM.match(line)
        if stream:
            kind, description = stream.groups()
            current_is_video = kind == "Video" and video is None
            if current_is_video:
                video = (description, [])
            elif kind == "Audio":
                has_audio = True
            continue
        if current_is_video and video is not None and line.startswith("    "):
            video[1].append(line)
        elif line.startswith(("Output #", "Input #1")):
            break
    if video is None:
        return None

    description, extra = video
    size = _SIZE.search(description + " ")
    if size is None:
        return None
    width, height = int(size.group(1)), int(size.group(2))
    fps_match = _FPS.search(description)
    rotation = 0
    for line in extra:
        found = _ROTATION.search(line)
        if found:
            rotation = round(float(found.group(1))) % 360
    if rotation in (90, 270):
        width, height = height, width
    fields = description.split(", ")
    pixel_format = fields[1].split("(")[0].strip() if len(fields) > 1 else None
    return VideoProbe(
        duration_s=duration_s,
        width=width,
        height=height,
        fps=float(fps_match.group(1)) if fps_match else None,
        codec=description.split(" ", 1)[0].rstrip(","),
        pixel_format=pixel_format,
        has_audio=has_audio,
        rotation=rotation,
    )


def _with_decoded_duration(probe: VideoProbe, path: Path, exe: str) -> VideoProbe:
    # Some WebM files (browser recordings) announce no duration; decoding the
    # video stream once is the only way to learn it.
    stderr = _run(
        [
            exe,
            "-hide_banner",
            "-nostdin",
            "-i",
            str(path),
            "-map",
            "0:v:0",
            "-f",
            "null",
            "-",
        ],
        timeout_s=TIMEOUT_S,
        check=True,
    )
    times = _TIME.findall(stderr)
    if not times:
        raise MediaRejectedError("video has no readable duration")
    hours, minutes, seconds = times[-1]
    duration_s = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    return VideoProbe(
        duration_s=duration_s,
        width=probe.width,
        height=probe.height,
        fps=probe.fps,
        codec=probe.codec,
        pixel_format=probe.pixel_format,
        has_audio=probe.has_audio,
        rotation=probe.rotation,
    )


def _run(command: list[str], *, timeout_s: float, check: bool) -> str:
    try:
        completed = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    except FileNotFoundError as exc:
        raise MediaTranscodeError(f"ffmpeg is not available: {exc}") from exc
    except PermissionError as exc:
        raise MediaTranscodeError(f"ffmpeg cannot be run: {exc}") from exc
    except subprocess.TimeoutExpired as exc:
        raise MediaTranscodeError(f"ffmpeg timed out after {timeout_s:g} s") from exc
    stderr = completed.stderr.decode("utf-8", "replace")
    if check and completed.returncode != 0:
        raise MediaTranscodeError(
            f"ffmpeg failed with exit code {completed.returncode}: "
            f"{_tail(stderr) or 'no message'}"
        )
    return stderr


def _tail(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    useful = [line for line in lines if "At least one output file" not in line]
    return " / ".join(useful[-3:])[-_STDERR_TAIL:]
