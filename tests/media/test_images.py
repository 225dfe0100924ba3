"""fit_image(): orientation, flattening, bomb refusal and the size search."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

import pytest
from PIL import Image, ImageCms

from devstack import media_fixtures as mf
from housekeeper.errors import MediaRejectedError
from housekeeper.media.images import MAX_ENCODES, fit_image


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def assert_close(pixel: object, expected: tuple[int, ...], tolerance: int = 6) -> None:
    assert isinstance(pixel, tuple)
    assert all(abs(a - b) <= tolerance for a, b in zip(pixel, expected, strict=True)), (
        f"{pixel} is not within {tolerance} of {expected}"
    )


def encode_like_fit(image: Image.Image, quality: int) -> int:
    return len(
        mf.encode(
            image,
            "JPEG",
            quality=quality,
            optimize=True,
            progressive=True,
            subsampling="4:2:0",
        )
    )


# --- the named cases ---------------------------------------------------------


def test_rgba_png_64x64_transparent_corner_becomes_white_jpeg_under_target() -> None:
    fitted = fit_image(mf.rgba_png(size=64, corner=16), target_kb=300)

    assert fitted.content_type == "image/jpeg"
    assert (fitted.width, fitted.height) == (64, 64)
    assert fitted.size_bytes <= 300 * 1024
    assert (fitted.quality, fitted.encodes) == (92, 1)
    image = decode(fitted.data)
    assert (image.format, image.mode) == ("JPEG", "RGB")
    assert_close(image.getpixel((2, 2)), (255, 255, 255))
    assert_close(image.getpixel((48, 48)), (200, 30, 30), tolerance=12)


def test_png_header_claiming_20000x20000_is_refused_as_a_bomb_quickly() -> None:
    data = mf.png_claiming(20_000, 20_000)
    started = time.monotonic()

    with pytest.raises(MediaRejectedError) as caught:
        fit_image(data, target_kb=300)

    assert time.monotonic() - started < 1
    assert len(data) < 200
    assert caught.value.code == "media_rejected"
    assert caught.value.details["reason"] == "decompression_bomb"
    assert str(caught.value).startswith("image refused as a decompression bomb")


def test_bomb_refusal_allocates_no_canvas() -> None:
    # A child process gives a clean peak-memory figure: the canvas alone would
    # be 1.2 GB of RGB.
    script = textwrap.dedent(
        """
        import resource
        from devstack.media_fixtures import png_claiming
        from housekeeper.errors import MediaRejectedError
        from housekeeper.media.images import fit_image
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            fit_image(png_claiming(20000, 20000), target_kb=300)
        except MediaRejectedError:
            pass
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(after - before)
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    grown_kib = int(completed.stdout.strip())
    assert grown_kib < 20 * 1024


def test_header_over_our_limit_but_under_pillows_is_refused_by_our_check() -> None:
    with pytest.raises(MediaRejectedError) as caught:
        fit_image(mf.png_claiming(8000, 8000), target_kb=300)

    assert str(caught.value) == (
        "image refused as a decompression bomb: 8000x8000 is 64000000 pixels, "
        "over the limit of 50000000"
    )
    assert caught.value.details == {
        "reason": "decompression_bomb",
        "width": 8000,
        "height": 8000,
    }


def test_header_in_pillows_warning_band_is_refused() -> None:
    # 100 MP: over Pillow's warning threshold, under its error threshold.
    with pytest.raises(MediaRejectedError, match="decompression bomb"):
        fit_image(
            mf.png_claiming(10_000, 10_000), target_kb=300, max_pixels=200_000_000
        )


def test_max_pixels_applies_to_real_images() -> None:
    with pytest.raises(
        MediaRejectedError, match="10000 pixels, over the limit of 5000"
    ):
        fit_image(mf.photo_jpeg(100, 100), target_kb=300, max_pixels=5000)


# --- orientation and modes ---------------------------------------------------


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied(orientation: int) -> None:
    fitted = fit_image(mf.exif_rotated_jpeg(60, 100, orientation), target_kb=300)

    assert (fitted.width, fitted.height) == (60, 100)
    image = decode(fitted.data)
    assert_close(image.getpixel((30, 10)), (255, 0, 0), tolerance=20)
    assert_close(image.getpixel((30, 90)), (0, 0, 255), tolerance=20)
    assert not fitted.downscaled


@pytest.mark.parametrize(
    ("data", "left", "right"),
    [
        (mf.la_png(32), (255, 255, 255), (90, 90, 90)),
        (mf.palette_png(32), (255, 255, 255), (20, 120, 220)),
        (mf.bilevel_png(32), (0, 0, 0), (255, 255, 255)),
        (mf.sixteen_bit_png(32, 32768), (128, 128, 128), (128, 128, 128)),
        (mf.cmyk_jpeg(32), (0, 255, 255), (0, 255, 255)),
        (
            mf.encode(Image.new("RGBA", (32, 32), (0, 0, 0, 0)), "WEBP", lossless=True),
            (255, 255, 255),
            (255, 255, 255),
        ),
        (
            mf.encode(Image.open(io.BytesIO(mf.palette_png(32))), "GIF"),
            (255, 255, 255),
            (20, 120, 220),
        ),
    ],
    ids=["LA", "P-tRNS", "1", "I;16", "CMYK", "WebP-RGBA", "GIF-transparent"],
)
def test_every_mode_is_flattened_to_rgb_on_white(
    data: bytes, left: tuple[int, int, int], right: tuple[int, int, int]
) -> None:
    fitted = fit_image(data, target_kb=300)

    image = decode(fitted.data)
    assert image.mode == "RGB"
    assert_close(image.getpixel((4, 16)), left, tolerance=10)
    assert_close(image.getpixel((28, 16)), right, tolerance=10)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "AVIF"])
def test_every_format_a_cdn_serves_is_decoded(fmt: str) -> None:
    source = mf.encode(mf.photo(120, 90, noise=0.05).convert("RGB"), fmt)

    fitted = fit_image(source, target_kb=300)

    assert (fitted.width, fitted.height) == (120, 90)
    assert decode(fitted.data).format == "JPEG"


def test_animated_gif_keeps_its_first_frame() -> None:
    frames = [
        Image.new("RGB", (16, 16), colour) for colour in ((255, 0, 0), (0, 255, 0))
    ]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100)

    image = decode(fit_image(buffer.getvalue(), target_kb=300).data)

    assert_close(image.getpixel((8, 8)), (255, 0, 0), tolerance=12)


def test_exif_and_location_are_dropped() -> None:
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif[0x8825] = {1: "N", 2: (52.0, 22.0, 0.0)}  # GPS IFD
    source = mf.encode(mf.photo(80, 60), "JPEG", quality=95, exif=exif.tobytes())
    assert decode(source).getexif()

    image = decode(fit_image(source, target_kb=300).data)

    assert "exif" not in image.info
    assert not image.getexif()


def test_an_rgb_icc_profile_is_kept() -> None:
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    source = mf.encode(mf.photo(80, 60), "PNG", icc_profile=profile)

    image = decode(fit_image(source, target_kb=300).data)

    assert image.info["icc_profile"] == profile


def test_output_is_a_progressive_jpeg() -> None:
    image = decode(fit_image(mf.photo_jpeg(200, 150), target_kb=300).data)

    assert image.format == "JPEG"
    assert image.info.get("progressive") == 1


# --- refusals ----------------------------------------------------------------


def test_a_format_a_cdn_does_not_serve_is_refused() -> None:
    with pytest.raises(MediaRejectedError) as caught:
        fit_image(mf.encode(mf.photo(16, 16), "BMP"), target_kb=300)

    assert str(caught.value) == "not a supported image (JPEG, PNG, GIF, WebP or AVIF)"
    assert caught.value.details == {"reason": "unsupported_format"}


def test_a_truncated_jpeg_is_refused() -> None:
    data = mf.photo_jpeg(200, 150)

    with pytest.raises(MediaRejectedError) as caught:
        fit_image(data[: len(data) // 2], target_kb=300)

    assert caught.value.details == {"reason": "corrupt"}
    assert str(caught.value).startswith("image could not be decoded:")


# --- the size search ---------------------------------------------------------


# Built on use, so that collecting the tests stays fast.
CORPUS: dict[str, tuple[Callable[[], bytes], int]] = {
    "smooth-1mp": (lambda: mf.photo_jpeg(1155, 866, noise=0.0), 300),
    "grainy-1mp": (lambda: mf.photo_jpeg(1155, 866, noise=0.15), 300),
    "very-noisy-1mp": (lambda: mf.photo_jpeg(1155, 866, noise=0.4), 300),
    "instagram-portrait": (lambda: mf.photo_jpeg(1080, 1350, noise=0.08), 100),
    "grainy-2mp-tight": (lambda: mf.photo_jpeg(1600, 1200, noise=0.2), 40),
    "tiny-target": (lambda: mf.photo_jpeg(800, 800, noise=0.3), 10),
    "panorama": (lambda: mf.photo_jpeg(3000, 400, noise=0.1), 60),
    "png-screenshot": (lambda: mf.encode(mf.photo(600, 1000, noise=0.02), "PNG"), 60),
}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_every_output_is_at_or_under_target_within_eight_encodes(name: str) -> None:
    make, target_kb = CORPUS[name]
    data = make()

    fitted = fit_image(data, target_kb=target_kb)

    assert fitted.size_bytes <= target_kb * 1024
    assert 1 <= fitted.encodes <= MAX_ENCODES
    assert 40 <= fitted.quality <= 92
    image = decode(fitted.data)
    assert image.size == (fitted.width, fitted.height)
    source_ratio = fitted.source_width / fitted.source_height
    assert abs(fitted.width / fitted.height - source_ratio) < 0.02


def test_an_image_that_fits_at_the_ceiling_takes_one_encode() -> None:
    fitted = fit_image(mf.photo_jpeg(320, 320, noise=0.1), target_kb=300)

    assert (fitted.quality, fitted.encodes, fitted.downscaled) == (92, 1, False)


def test_the_quality_found_is_the_highest_that_fits() -> None:
    data = mf.photo_jpeg(600, 600, noise=0.15)
    target = 80 * 1024

    fitted = fit_image(data, target_kb=80)

    image = decode(data).convert("RGB")
    fitting = [q for q in range(40, 93) if encode_like_fit(image, q) <= target]
    assert not fitted.downscaled
    assert fitted.quality == max(fitting)


def test_downscaling_happens_only_when_the_floor_cannot_fit() -> None:
    noisy = mf.photo_jpeg(1600, 1200, noise=0.3)
    floor_size = encode_like_fit(decode(noisy).convert("RGB"), 40)

    above = fit_image(noisy, target_kb=floor_size // 1024 + 1)
    below = fit_image(noisy, target_kb=floor_size // 1024 - 20)

    assert (above.width, above.height, above.downscaled) == (1600, 1200, False)
    assert below.downscaled
    assert below.width < 1600
    assert below.size_bytes <= (floor_size // 1024 - 20) * 1024


def test_bad_arguments_are_programming_errors() -> None:
    data = mf.rgba_png()
    with pytest.raises(ValueError, match="target_kb"):
        fit_image(data, target_kb=0)
    with pytest.raises(ValueError, match="qualities"):
        fit_image(data, target_kb=10, min_quality=90, max_quality=50)
    with pytest.raises(ValueError, match="max_encodes"):
        fit_image(data, target_kb=10, max_encodes=1)
