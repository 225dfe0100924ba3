"""Fit one image into a size budget as a JPEG, with the highest quality that fits.

The decoder only sees formats a CDN serves (JPEG, PNG, GIF, WebP, AVIF), and
only after the header's pixel count has been checked, so a small file that
claims a huge canvas is refused before anything is allocated for it. The
output is a baseline-compatible progressive JPEG on a white background with the
EXIF orientation applied; EXIF, XMP and comments are dropped (they can carry a
location), an RGB ICC profile is kept because colours depend on it.

The size search: the quality ceiling first (most small images fit at once),
then the floor; between them, probes guided by interpolating log(size) over
quality, falling back to bisection whenever a guess makes little progress.
Only when the floor does not fit is the image downscaled, by the area ratio the
floor's size suggests, and searched again. Every encode counts towards
`max_encodes`, and only a measured encode at or under the target is returned.
"""

from __future__ import annotations

import io
import logging
import math
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from housekeeper.errors import MediaRejectedError

logger = logging.getLogger(__name__)

# 50 MP: four times a 12 MP phone photo, far above anything a CDN serves, and
# about 150 MB once decoded to RGB.
MAX_IMAGE_PIXELS = 50_000_000
MIN_QUALITY = 40
MAX_QUALITY = 92
MAX_ENCODES = 8
JPEG_CONTENT_TYPE = "image/jpeg"

DECODABLE_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "AVIF")
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})

# Below this many bits per pixel at the quality ceiling only flat artwork
# goes; an image whose pixel count needs less than that to fit is probed at
# the floor first, which saves a full-size encode that would not fit anyway.
_CEILING_BITS_PER_PIXEL = 1.0
# Typical growth of log(size) per quality step, used until two sizes of the
# same image are known.
_LOG_SIZE_PER_QUALITY = 0.022
# Downscaled images compress a little worse per pixel than the area ratio
# predicts; aim under the target so the floor fits at the first try. Once the
# size-area curve is measured the aim can be closer.
_AREA_MARGIN = 0.85
_FITTED_MARGIN = 0.92
_LAST_CHANCE_MARGIN = 0.5
_MIN_EXPONENT = 0.5
_MAX_EXPONENT = 3.0
# A downscaled floor encode under this share of the target is retried larger.
_ROOMY_SHARE = 0.6
# The floor did not fit at full size, so a retry never goes back to it.
_MAX_SCALE = 0.98


@dataclass(frozen=True)
class FittedImage:
    """A JPEG at or under the target, with the quality and size it was made at."""

    data: bytes
    width: int
    height: int
    quality: int
    encodes: int
    source_width: int
    source_height: int
    content_type: str = JPEG_CONTENT_TYPE

    @property
    def size_bytes(self) -> int:
        """Length of `data`."""
        return len(self.data)

    @property
    def downscaled(self) -> bool:
        """Whether the pixels were reduced to fit (never for orientation alone)."""
        return self.width * self.height < self.source_width * self.source_height


def fit_image(
    data: bytes,
    *,
    target_kb: int,
    min_quality: int = MIN_QUALITY,
    max_quality: int = MAX_QUALITY,
    max_encodes: int = MAX_ENCODES,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> FittedImage:
    """Re-encode an image as a JPEG of at most `target_kb` KiB, as good as fits.

    Raises `MediaRejectedError` for bytes that are no supported image, images
    over `max_pixels` (decompression bombs, checked from the header before any
    pixel is decoded), and the rare image that cannot fit within `max_encodes`.
    """
    if target_kb <= 0:
        raise ValueError("target_kb must be positive")
    if not 1 <= min_quality <= max_quality <= 95:
        raise ValueError("qualities must satisfy 1 <= min_quality <= max_quality <= 95")
    if max_encodes < 2:
        raise ValueError("max_encodes must be at least 2")

    image, icc_profile = _decode(data, max_pixels)
    fitter = _Fitter(
        image,
        icc_profile,
        target_bytes=target_kb * 1024,
        min_quality=min_quality,
        max_quality=max_quality,
        max_encodes=max_encodes,
    )
    fitted = fitter.run()
    logger.debug(
        "fitted %dx%d image to %dx%d at quality %d: %d bytes, %d encodes",
        image.width,
        image.height,
        fitted.width,
        fitted.height,
        fitted.quality,
        len(fitted.data),
        fitted.encodes,
    )
    return fitted


def _decode(data: bytes, max_pixels: int) -> tuple[Image.Image, bytes | None]:
    # A warning filter is process state; this one only turns bomb warnings
    # into errors, so a thread that restores it out of order leaves the
    # stricter behaviour in place, never a laxer one.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=DECODABLE_FORMATS) as source:
                width, height = source.size
                if width <= 0 or height <= 0:
                    raise MediaRejectedError("image has an empty canvas")
                if width * height > max_pixels:
                    raise _bomb(width, height, max_pixels)
                if getattr(source, "n_frames", 1) > 1:
                    source.seek(0)
                source.load()
                icc_profile = source.info.get("icc_profile")
                oriented = ImageOps.exif_transpose(source)
            rgb = _flatten(oriented)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise MediaRejectedError(
                f"image refused as a decompression bomb: {exc}",
                details={"reason": "decompression_bomb"},
            ) from exc
        except UnidentifiedImageError as exc:
            raise MediaRejectedError(
                "not a supported image (JPEG, PNG, GIF, WebP or AVIF)",
                details={"reason": "unsupported_format"},
            ) from exc
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise MediaRejectedError(
                f"image could not be decoded: {exc}", details={"reason": "corrupt"}
            ) from exc

    if not isinstance(icc_profile, bytes) or icc_profile[16:20] != b"RGB ":
        # A CMYK or grey profile would mislabel the RGB output.
        icc_profile = None
    return rgb, icc_profile


def _bomb(width: int, height: int, max_pixels: int) -> MediaRejectedError:
    return MediaRejectedError(
        f"image refused as a decompression bomb: {width}x{height} is "
        f"{width * height} pixels, over the limit of {max_pixels}",
        details={"reason": "decompression_bomb", "width": width, "height": height},
    )


def _flatten(image: Image.Image) -> Image.Image:
    """Any mode to RGB, transparent areas composited on white."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        # Pillow's direct conversion clips 16-bit values at 255 instead of
        # scaling them, which turns almost every such image white.
        if mode != "I" or _highest(image) > 255:
            image = image.point(lambda value: value * (1 / 257))
        return image.convert("L").convert("RGB")
    if mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if mode == "RGB":
        return image
    return image.convert("RGB")


def _highest(image: Image.Image) -> float:
    extrema = image.getextrema()
    high = extrema[1]
    return float(high) if isinstance(high, int | float) else 255.0


class _Fitter:
    """The quality search, with its encode budget, over one decoded image."""

    def __init__(
        self,
        image: Image.Image,
        icc_profile: bytes | None,
        *,
        target_bytes: int,
        min_quality: int,
        max_quality: int,
        max_encodes: int,
    ) -> None:
        self.source = image
        self.icc_profile = icc_profile
        self.target_bytes = target_bytes
        self.min_quality = min_quality
        self.max_quality = max_quality
        self.max_encodes = max_encodes
        self.encodes = 0

    def run(self) -> FittedImage:
        image = self.source
        sizes: dict[int, int] = {}

        likely_too_big = (
            image.width * image.height * _CEILING_BITS_PER_PIXEL / 8 > self.target_bytes
        )
        if not likely_too_big or self.min_quality == self.max_quality:
            data = self._encode(image, self.max_quality)
            if len(data) <= self.target_bytes:
                return self._result(image, self.max_quality, data)
            sizes[self.max_quality] = len(data)
            if self.min_quality == self.max_quality:
                return self._downscale(len(data))

        data = self._encode(image, self.min_quality)
        if len(data) <= self.target_bytes:
            sizes[self.min_quality] = len(data)
            return self._refine(image, sizes, data)
        return self._downscale(len(data))

    def _downscale(self, floor_size: int) -> FittedImage:
        width, height = self.source.size
        full_area = width * height
        # (area, size at the floor quality) of every encode so far.
        measured = [(full_area, floor_size)]
        # A fitting encode with much room to spare gets one larger retry; this
        # keeps it meanwhile.
        roomy: tuple[Image.Image, bytes] | None = None

        while self.encodes < self.max_encodes:
            last_chance = roomy is None and self.encodes == self.max_encodes - 1
            scale = self._scale_for(measured, full_area, last_chance)
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            image = self.source.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)

            data = self._encode(image, self.min_quality)
            measured.append((size[0] * size[1], len(data)))
            if len(data) <= self.target_bytes:
                spare = len(data) < self.target_bytes * _ROOMY_SHARE
                budget_left = self.max_encodes - self.encodes
                if roomy is None and spare and budget_left >= 3:
                    roomy = (image, data)
                    continue
                return self._refine(image, {self.min_quality: len(data)}, data)
            if roomy is not None:
                break

        if roomy is not None:
            kept, kept_data = roomy
            return self._refine(kept, {self.min_quality: len(kept_data)}, kept_data)
        raise MediaRejectedError(
            f"image cannot fit {self.target_bytes} bytes within "
            f"{self.max_encodes} encodes",
            details={"reason": "cannot_fit"},
        )

    def _scale_for(
        self, measured: list[tuple[int, int]], full_area: int, last_chance: bool
    ) -> float:
        """Linear scale whose floor encode should land just under the target.

        First by the area ratio; once two sizes are known, by the power law
        through them (size ~ area^k), since downscaling also averages noise
        away and the size falls faster than the area.
        """
        area, size = measured[-1]
        exponent = 1.0
        margin = _AREA_MARGIN
        if len(measured) >= 2:
            (area_a, size_a), (area_b, size_b) = measured[-2:]
            if area_a != area_b and size_a != size_b:
                exponent = math.log(size_a / size_b) / math.log(area_a / area_b)
                exponent = min(_MAX_EXPONENT, max(_MIN_EXPONENT, exponent))
                margin = _FITTED_MARGIN
        if last_chance:
            margin = _LAST_CHANCE_MARGIN
        wanted = area * (margin * self.target_bytes / size) ** (1 / exponent)
        return min(_MAX_SCALE, math.sqrt(wanted / full_area))

    def _refine(
        self, image: Image.Image, sizes: dict[int, int], best_data: bytes
    ) -> FittedImage:
        """Search (floor, ceiling] for the highest quality that fits."""
        target = self.target_bytes
        low = max(q for q, size in sizes.items() if size <= target)
        failing = [q for q, size in sizes.items() if size > target]
        high = min(failing) if failing else self.max_quality + 1
        best_quality = low
        last_fitted: bool | None = None
        same_side = 0

        while high - low > 1 and self.encodes < self.max_encodes:
            if same_side >= 3:
                # Three guesses in a row landed on one side: the size curve
                # is not as smooth as assumed here, so bisect.
                guess = (low + high) // 2
            else:
                guess = self._guess(sizes, low, high)
            quality = min(high - 1, max(low + 1, guess))

            data = self._encode(image, quality)
            sizes[quality] = len(data)
            fitted = len(data) <= target
            same_side = same_side + 1 if fitted == last_fitted else 1
            last_fitted = fitted
            if fitted:
                low, best_quality, best_data = quality, quality, data
            else:
                high = quality
        return self._result(image, best_quality, best_data)

    def _guess(self, sizes: dict[int, int], low: int, high: int) -> int:
        target = math.log(self.target_bytes)
        low_log = math.log(sizes[low])
        if high in sizes:
            high_log = math.log(sizes[high])
            slope = (high_log - low_log) / (high - low)
        else:
            slope = _LOG_SIZE_PER_QUALITY
        if slope <= 0:
            return (low + high) // 2
        return low + math.floor((target - low_log) / slope)

    def _encode(self, image: Image.Image, quality: int) -> bytes:
        self.encodes += 1
        buffer = io.BytesIO()
        image.save(
            buffer,
            "JPEG",
            quality=quality,
            optimize=True,
            progressive=True,
            subsampling="4:2:0",
            icc_profile=self.icc_profile,
        )
        return buffer.getvalue()

    def _result(self, image: Image.Image, quality: int, data: bytes) -> FittedImage:
        return FittedImage(
            data=data,
            width=image.width,
            height=image.height,
            quality=quality,
            encodes=self.encodes,
            source_width=self.source.width,
            source_height=self.source.height,
        )
