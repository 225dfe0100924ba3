"""Generated media for the tests, the media demo and the benchmarks.

Everything here is synthetic and deterministic for a given seed: photo-like
images (gradients, shapes, noise), images in awkward modes, an EXIF-rotated JPEG,
a PNG whose header claims a huge size, and short H.264 clips made with the
ffmpeg binary of the `imageio-ffmpeg` wheel.
"""

from __future__ import annotations

import io
import random
import struct
import subprocess
import zlib
from pathlib import Path

from PIL import Image, ImageDraw

WHITE = (255, 255, 255)
EXIF_ORIENTATION_TAG = 0x0112


def photo(
    width: int, height: int, *, noise: float = 0.15, seed: int = 0
) -> Image.Image:
    """A photo-like RGB image: colour gradients, hard-edged shapes and noise.

    `noise` (0..1) is the weight of uniform per-pixel noise; 0.15 looks like a
    grainy phone photo and is hard to compress, 0 is a smooth illustration.
    """
    rng = random.Random(seed)
    horizontal = Image.linear_gradient("L").rotate(90).resize((width, height))
    vertical = Image.linear_gradient("L").resize((width, height))
    radial = Image.radial_gradient("L").resize((width, height))
    image = Image.merge("RGB", (horizontal, radial, vertical))

    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        x1 = min(width, x0 + rng.randrange(width // 8 + 1, width // 3 + 2))
        y1 = min(height, y0 + rng.randrange(height // 8 + 1, height // 3 + 2))
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        else:
            draw.rectangle((x0, y0, x1, y1), fill=colour)

    if noise > 0:
        grain = Image.frombytes(
            "RGB", (width, height), rng.randbytes(width * height * 3)
        )
        image = Image.blend(image, grain, noise)
    return image


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    """The image saved in `fmt` (`JPEG`, `PNG`, `WEBP`, `GIF`, ...) as bytes."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def photo_jpeg(
    width: int, height: int, *, noise: float = 0.15, quality: int = 95, seed: int = 0
) -> bytes:
    """A `photo` as a high-quality JPEG, like a camera or CDN original."""
    return encode(photo(width, height, noise=noise, seed=seed), "JPEG", quality=quality)


def rgba_png(size: int = 64, corner: int = 16) -> bytes:
    """An opaque red RGBA square whose top-left `corner` x `corner` is transparent."""
    image = Image.new("RGBA", (size, size), (200, 30, 30, 255))
    image.paste((0, 0, 0, 0), (0, 0, corner, corner))
    return encode(image, "PNG")


def la_png(size: int = 32) -> bytes:
    """A grey LA image, transparent on its left half."""
    image = Image.new("LA", (size, size), (90, 255))
    image.paste((0, 0), (0, 0, size // 2, size))
    return encode(image, "PNG")


def palette_png(size: int = 32) -> bytes:
    """A P-mode PNG whose palette index 0 is transparent (left half) via tRNS."""
    image = Image.new("P", (size, size), 1)
    image.putpalette([0, 0, 0, 20, 120, 220] + [0, 0, 0] * 254)
    image.paste(0, (0, 0, size // 2, size))
    return encode(image, "PNG", transparency=0)


def cmyk_jpeg(size: int = 32) -> bytes:
    """A CMYK JPEG filled with pure cyan."""
    return encode(Image.new("CMYK", (size, size), (255, 0, 0, 0)), "JPEG", quality=95)


def sixteen_bit_png(size: int = 32, value: int = 32768) -> bytes:
    """A 16-bit greyscale PNG at `value` (of 65535): mid-grey, not white."""
    return encode(Image.new("I;16", (size, size), value), "PNG")


def bilevel_png(size: int = 32) -> bytes:
    """A 1-bit PNG: black left half, white right half."""
    image = Image.new("1", (size, size), 1)
    image.paste(0, (0, 0, size // 2, size))
    return encode(image, "PNG")


def exif_rotated_jpeg(
    width: int = 60, height: int = 100, orientation: int = 6
) -> bytes:
    """A JPEG that shows a red top and a blue bottom only once EXIF is applied.

    The displayed image is `width` x `height`; the stored pixels are rotated so
    that a decoder ignoring the orientation tag sees them sideways.
    """
    displayed = Image.new("RGB", (width, height), (0, 0, 255))
    displayed.paste((255, 0, 0), (0, 0, width, height // 2))
    undo = {
        3: Image.Transpose.ROTATE_180,
        6: Image.Transpose.ROTATE_90,
        8: Image.Transpose.ROTATE_270,
    }
    stored = displayed.transpose(undo[orientation])
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = orientation
    return encode(stored, "JPEG", quality=95, exif=exif.tobytes())


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims `width` x `height` RGB pixels.

    Its image data holds almost nothing, so only a decoder that trusts the
    header before allocating would try to build the full canvas.
    """

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def ffmpeg_exe() -> str:
    """The ffmpeg binary shipped in the `imageio-ffmpeg` wheel."""
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


def make_video(
    path: Path,
    *,
    width: int,
    height: int,
    duration_s: float,
    fps: int = 30,
    audio: bool = False,
    codec: str = "libx264",
    ffmpeg: str | None = None,
) -> Path:
    """Write a test-pattern clip (`testsrc2`, plus a 440 Hz tone with `audio`).

    `codec` is `libx264` (MP4/MOV) or `libvpx` (WebM); the file name decides
    the container. The output is not faststart, like many phone uploads.
    """
    command = [
        ffmpeg or ffmpeg_exe(),
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={width}x{height}:rate={fps}:duration={duration_s}",
    ]
    if audio:
        command += [
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=440:sample_rate=44100:duration={duration_s}",
        ]
    if codec == "libx264":
        command += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    else:
        command += ["-c:v", codec, "-deadline", "realtime", "-b:v", "500k"]
    if audio:
        audio_codec = "aac" if codec == "libx264" else "libvorbis"
        command += ["-c:a", audio_codec, "-shortest"]
    command.append(str(path))
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    return path
