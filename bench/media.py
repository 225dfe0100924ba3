"""Image fitting and video transcoding, on a generated corpus.

Images: the library's `fit_image` against a naive loop (quality 85, then 80,
75, ... down to 5, at full size) on photographic-like pictures (gradients
under noise) of 12 MP and 1 MP, in RGB, RGBA and palette modes and with EXIF
rotations. Video: `transcode_video` on a 1080x1920 clip with motion, noise
and sound, as seconds of work per second of input.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import markdown_table, median

NAIVE_START, NAIVE_STEP, NAIVE_FLOOR = 85, 5, 5


@dataclass(frozen=True)
class Picture:
    """One corpus image: how to make it."""

    name: str
    width: int
    height: int
    mode: str  # RGB, RGBA or P
    noise: float  # sigma of the Gaussian noise, in 8-bit levels
    orientation: int = 1  # EXIF orientation tag; 6 and 8 are quarter turns
    seed: int = 0


FULL_CORPUS = (
    Picture("12mp-rgb-grainy.jpg", 4000, 3000, "RGB", 40, seed=1),
    Picture("12mp-rgb-smooth-exif6.jpg", 4000, 3000, "RGB", 8, orientation=6, seed=2),
    Picture("12mp-rgba.png", 4000, 3000, "RGBA", 24, seed=3),
    Picture("1mp-rgb-exif8.jpg", 1224, 816, "RGB", 24, orientation=8, seed=4),
    Picture("1mp-rgb-grainy.jpg", 1224, 816, "RGB", 48, seed=5),
    Picture("1mp-rgba.png", 1224, 816, "RGBA", 16, seed=6),
    Picture("1mp-p.png", 1224, 816, "P", 16, seed=7),
)
QUICK_CORPUS = (
    Picture("1mp-rgb-exif6.jpg", 1224, 816, "RGB", 24, orientation=6, seed=4),
)


def make_picture(picture: Picture) -> bytes:
    """Gradients under noise: smooth areas and fine grain, like a photograph."""
    from PIL import Image, ImageChops, ImageFilter

    width, height = picture.width, picture.height
    size = (width, height)
    horizontal = Image.linear_gradient("L").rotate(90).resize(size)
    vertical = Image.linear_gradient("L").resize(size)
    radial = Image.radial_gradient("L").resize(size)
    # Seeded per picture: effect_noise draws from the C library's rand().
    noise = [
        Image.effect_noise(size, picture.noise + channel * 2).filter(
            ImageFilter.GaussianBlur(0.6)
        )
        for channel in range(3)
    ]
    channels = [
        ImageChops.add(ImageChops.multiply(horizontal, radial), noise[0], 1.0, -128),
        ImageChops.add(vertical, noise[1], 1.0, -128),
        ImageChops.add(ImageChops.screen(radial, horizontal), noise[2], 1.0, -128),
    ]
    image = Image.merge("RGB", channels)

    if picture.orientation in (6, 8):
        # Stored sideways, as a camera held upright writes it.
        image = image.transpose(Image.Transpose.ROTATE_90)
    buffer = io.BytesIO()
    if picture.mode == "RGBA":
        alpha = ImageChops.invert(radial)
        image.putalpha(alpha)
        image.save(buffer, "PNG", compress_level=1)
    elif picture.mode == "P":
        image.quantize(256).save(buffer, "PNG", compress_level=1)
    else:
        exif = Image.Exif()
        exif[0x0112] = picture.orientation
        image.save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


def naive_fit(data: bytes, target_kb: int) -> dict[str, Any]:
    """Quality 85, then 5 lower each time, until it fits or reaches 5."""
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as source:
        source.load()
        image = ImageOps.exif_transpose(source).convert("RGB")
    encodes = 0
    quality = NAIVE_START
    while True:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality)
        encodes += 1
        size = buffer.tell()
        if size <= target_kb * 1024 or quality - NAIVE_STEP < NAIVE_FLOOR:
            return {
                "encodes": encodes,
                "quality": quality,
                "bytes": size,
                "fits": size <= target_kb * 1024,
                "width": image.width,
                "height": image.height,
            }
        quality -= NAIVE_STEP


def product_fit(data: bytes, target_kb: int) -> dict[str, Any]:
    """The library's `fit_image`."""
    from housekeeper.errors import MediaRejectedError
    from housekeeper.media.images import fit_image

    try:
        fitted = fit_image(data, target_kb=target_kb)
    except MediaRejectedError as exc:
        return {"encodes": None, "fits": False, "error": exc.message}
    return {
        "encodes": fitted.encodes,
        "quality": fitted.quality,
        "bytes": fitted.size_bytes,
        "fits": fitted.size_bytes <= target_kb * 1024,
        "width": fitted.width,
        "height": fitted.height,
    }


def _images(
    corpus: tuple[Picture, ...], runs: int, target_kb: int, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    cases = []
    for picture in corpus:
        data = make_picture(picture)
        case: dict[str, Any] = {
            "image": picture.name,
            "pixels": f"{picture.width}x{picture.height}",
            "mode": picture.mode,
            "orientation": picture.orientation,
            "source_bytes": len(data),
        }
        for label, fit in (("product", product_fit), ("naive", naive_fit)):
            times = []
            outcome: dict[str, Any] = {}
            for _ in range(runs):
                started = time.perf_counter()
                outcome = fit(data, target_kb)
                times.append(time.perf_counter() - started)
            case[label] = {**outcome, "ms": median(times) * 1000}
        cases.append(case)
        log(
            f"  {picture.name}: product {case['product']['encodes']} encodes "
            f"{case['product']['ms']:.0f} ms, naive {case['naive']['encodes']} "
            f"encodes {case['naive']['ms']:.0f} ms"
        )
    return cases


def make_clip(path: Path, seconds: float, ffmpeg: str) -> None:
    """A 1080x1920 H.264 clip at 30 fps with motion, grain and a tone."""
    subprocess.run(
        [
            ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", f"testsrc2=size=1080x1920:rate=30:duration={seconds}",
            "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
            "-vf", "noise=alls=12:allf=t",
            "-c:v", "libx264", "-preset", "ultrafast", "-crf", "18",
            "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k",
            "-shortest", str(path),
        ],
        check=True,
    )  # fmt: skip


def _video(
    work_dir: Path, seconds: float, runs: int, target_mb: float
) -> dict[str, Any]:
    from housekeeper.media.videos import ffmpeg_path, transcode_video

    ffmpeg = ffmpeg_path()
    source = work_dir / "clip-1080x1920.mp4"
    make_clip(source, seconds, ffmpeg)
    times, results = [], []
    for attempt in range(runs):
        target = work_dir / f"out-{attempt}.mp4"
        started = time.perf_counter()
        result = transcode_video(source, target, target_mb=target_mb)
        times.append(time.perf_counter() - started)
        results.append(result)
    last = results[-1]
    return {
        "source": "1080x1920, 30 fps, H.264 + AAC",
        "source_bytes": source.stat().st_size,
        "input_s": last.duration_s,
        "wall_s": median(times),
        "s_per_input_s": median(times) / last.duration_s,
        "output": f"{last.width}x{last.height}",
        "output_bytes": last.size_bytes,
        "target_bytes": int(target_mb * 1024 * 1024),
        "met_target": last.met_target,
        "attempts": last.attempts,
        "bitrate_kbps": round(last.bitrate_kbps),
    }


def run(work_dir: Path, plan: str, log: Callable[[str], None]) -> dict[str, Any]:
    """The image corpus and the clip; `plan` is `quick` or `full`."""
    try:
        from housekeeper.media import images, videos  # noqa: F401
    except ImportError as exc:
        log(f"  media library not available: {exc}")
        return {"available": False, "reason": str(exc)}

    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True)
    quick = plan == "quick"
    target_kb, target_mb = 300, 1.5
    try:
        results: dict[str, Any] = {
            "available": True,
            "image_target_kb": target_kb,
            "image_runs": 1 if quick else 3,
            "images": _images(
                QUICK_CORPUS if quick else FULL_CORPUS,
                1 if quick else 3,
                target_kb,
                log,
            ),
        }
        clip_s, video_runs = (1.0, 1) if quick else (10.0, 2)
        results["video_runs"] = video_runs
        results["video"] = _video(work_dir, clip_s, video_runs, target_mb)
        log(
            f"  video: {results['video']['s_per_input_s']:.2f} s per second of "
            f"input, {results['video']['output_bytes'] / 2**20:.2f} MiB"
        )
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return results


def _kb(value: int | None) -> str:
    return "-" if value is None else f"{value / 1024:,.0f}"


def tables(results: dict[str, Any]) -> list[tuple[str, str]]:
    """The image table (both approaches side by side) and the video table."""
    if not results.get("available"):
        return [("Media", f"not measured: {results.get('reason')}")]
    target_kb = results["image_target_kb"]
    rows = []
    for case in results["images"]:
        product, naive = case["product"], case["naive"]
        rows.append(
            [
                case["image"],
                case["mode"],
                _kb(case["source_bytes"]),
                product["encodes"] if product["encodes"] is not None else "-",
                f"{product['ms']:,.0f}",
                _kb(product.get("bytes")),
                f"{product.get('quality', '-')} @ "
                f"{product.get('width', '-')}x{product.get('height', '-')}",
                "yes" if product["fits"] else "NO",
                naive["encodes"],
                f"{naive['ms']:,.0f}",
                _kb(naive.get("bytes")),
                naive["quality"],
                "yes" if naive["fits"] else "no",
            ]
        )
    image_title = (
        f"Image fitting to {target_kb} KB: fit_image against a naive loop "
        f"(quality {NAIVE_START}, step {NAIVE_STEP}, full size; median of "
        f"{results['image_runs']} runs)"
    )
    image_table = markdown_table(
        [
            "image",
            "mode",
            "source KB",
            "encodes",
            "ms",
            "KB",
            "quality @ size",
            "fits",
            "naive encodes",
            "naive ms",
            "naive KB",
            "naive quality",
            "naive fits",
        ],
        rows,
    )
    video = results["video"]
    video_table = markdown_table(
        [
            "clip",
            "input s",
            "transcode s",
            "s per s of input",
            "output",
            "MiB (target)",
            "met",
            "attempts",
        ],
        [
            [
                video["source"],
                f"{video['input_s']:.1f}",
                f"{video['wall_s']:.1f}",
                f"{video['s_per_input_s']:.2f}",
                f"{video['output']}, {video['bitrate_kbps']} kb/s",
                f"{video['output_bytes'] / 2**20:.2f} "
                f"({video['target_bytes'] / 2**20:.2f})",
                "yes" if video["met_target"] else "NO",
                video["attempts"],
            ]
        ],
    )
    video_title = (
        f"Video: transcode_video to {video['target_bytes'] / 2**20:.1f} MiB "
        f"(median of {results['video_runs']} runs)"
    )
    return [(image_title, image_table), (video_title, video_table)]


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every image at or under target, at most 8 encodes each."""
    if not results.get("available"):
        return [
            {
                "name": "images: every image at or under target, <= 8 encodes",
                "target": "all",
                "measured": "not measured",
                "met": None,
                "note": results.get("reason", ""),
            }
        ]
    images = results["images"]
    fits = sum(1 for case in images if case["product"]["fits"])
    most = max(case["product"]["encodes"] or 99 for case in images)
    slowest = max(case["product"]["ms"] for case in images)
    return [
        {
            "name": "images: every image at or under target",
            "target": f"{len(images)} of {len(images)}",
            "measured": f"{fits} of {len(images)}",
            "met": fits == len(images),
            "note": "",
        },
        {
            "name": "images: encodes per image",
            "target": "<= 8",
            "measured": f"at most {most} (slowest image {slowest:,.0f} ms)",
            "met": most <= 8,
            "note": "",
        },
    ]
