"""The one place images are opened: every caller gets RGB, upright, bounded in size, or a DataError.

Real datasets hold CMYK JPEGs, palette PNGs with transparency, 16-bit scans, phone photos that
rely on EXIF rotation, truncated downloads and the odd HTML page saved as `.jpg`. Handling them
once here means the model, the feature store and `captune data check` all see the same pixels.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from captune.errors import DataError

DEFAULT_MAX_PIXELS = 89_478_485
"""Pillow's own default bomb limit (about 0.25 GiB of RGB); enforced by us so it cannot be switched off
by another library changing `Image.MAX_IMAGE_PIXELS`."""

WHITE = (255, 255, 255)

# warnings.catch_warnings swaps process-global state; the lock keeps our threads from interleaving it.
# Only the header parse runs under it, never the decode.
_OPEN_LOCK = threading.Lock()

_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, MemoryError)


def _fail(label: str, what: str, fix: str) -> DataError:
    return DataError(f"{label}: {what}; {fix}")


def _open_header(fp: BinaryIO, label: str, max_pixels: int | None) -> Image.Image:
    """Parse the header only, turning Pillow's bomb warning/error and unknown formats into DataError."""
    with _OPEN_LOCK, warnings.catch_warnings():
        # Our own limit below decides; Pillow's warning would otherwise be printed once and forgotten.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(fp)
        except Image.DecompressionBombError as exc:
            raise _fail(label, f"decompression-bomb guard tripped ({exc})",
                        "downscale the image or remove it") from None
        except UnidentifiedImageError:
            raise _fail(label, "not an image Pillow can read", "re-download, convert or remove the file") from None
        except _DECODE_ERRORS as exc:
            raise _fail(label, f"corrupt image header ({exc})", "re-download or remove the file") from None
    width, height = image.size
    if width <= 0 or height <= 0:
        raise _fail(label, f"image has no pixels ({width}x{height})", "re-download or remove the file")
    if max_pixels is not None and width * height > max_pixels:
        raise _fail(
            label,
            f"{width}x{height} = {width * height:,} pixels exceeds the limit of {max_pixels:,} "
            "(decompression-bomb guard)",
            "downscale the image or raise max_pixels",
        )
    return image


def _sixteen_bit_to_rgb(image: Image.Image) -> Image.Image:
    """16/32-bit integer and float grayscale to 8-bit RGB.

    `I;16*` and 16-bit PNGs read as `I` use the full 0..65535 range; `I` data that already fits
    0..255 is kept as is; anything else (negative values, floats) is stretched min..max.
    """
    values = np.asarray(image, dtype=np.float64)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if image.mode.startswith("I;16") or (image.mode == "I" and low >= 0 and 255 < high <= 65535):
        scaled = values / 257.0
    elif image.mode == "I" and low >= 0 and high <= 255:
        scaled = values
    else:
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    gray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")


def _on_white(image: Image.Image) -> Image.Image:
    """Composite a transparent image on white: captioners were trained on photos, not on black holes."""
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (*WHITE, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to RGB, with transparency composited on white and high bit depths scaled."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return _on_white(image)
    if mode == "P":
        has_alpha = "transparency" in image.info or (image.palette is not None and image.palette.mode == "RGBA")
        return _on_white(image) if has_alpha else image.convert("RGB")
    if mode.startswith("I") or mode == "F":
        return _sixteen_bit_to_rgb(image)
    if mode in ("1", "L", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        return image.convert("RGB")
    try:
        return image.convert("RGB")
    except ValueError as exc:
        raise DataError(f"image mode {mode!r} cannot be converted to RGB ({exc}); convert the file") from None


def _decode(image: Image.Image, label: str, draft_size: tuple[int, int] | None) -> Image.Image:
    if draft_size is not None and image.format == "JPEG":
        # Decode a 4000 px JPEG at 1/2..1/8 scale when a much smaller target is wanted: ~10x faster.
        image.draft(None, (max(1, int(draft_size[0])), max(1, int(draft_size[1]))))
    try:
        image.load()
    except Image.DecompressionBombError as exc:
        raise _fail(label, f"decompression-bomb guard tripped ({exc})", "downscale the image or remove it") from None
    except _DECODE_ERRORS as exc:
        raise _fail(label, f"truncated or corrupt image data ({exc})", "re-download or remove the file") from None
    try:
        upright = ImageOps.exif_transpose(image)
    except _DECODE_ERRORS:
        upright = image  # unreadable EXIF: the pixels are still good, only the orientation hint is lost
    if upright is None:  # pragma: no cover - only with in_place=True
        upright = image
    try:
        rgb = to_rgb(upright)
    except DataError as exc:
        raise DataError(f"{label}: {exc}") from None
    except _DECODE_ERRORS as exc:
        raise _fail(label, f"cannot convert to RGB ({exc})", "convert the file to RGB") from None
    if rgb is image:
        # Detach from the file (animated images keep it open for later frames).
        rgb = image.copy() if getattr(image, "n_frames", 1) > 1 else image
    return rgb


def open_image(
    path: str | os.PathLike[str],
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    draft_size: tuple[int, int] | None = None,
) -> Image.Image:
    """Open an image as upright RGB (first frame of animations), or raise DataError naming the file.

    `draft_size` (width, height) lets JPEGs decode at a reduced scale that still covers the size;
    callers that will resize to e.g. 224 px pass it to avoid decoding 12-megapixel photos in full.
    """
    label = os.fspath(path)
    file_path = Path(path)
    try:
        size = file_path.stat().st_size
    except FileNotFoundError:
        raise _fail(label, "image file not found", "check the path or the image root") from None
    except OSError as exc:
        raise _fail(label, f"cannot stat ({exc.strerror or exc})", "check the file's permissions") from None
    if file_path.is_dir():
        raise _fail(label, "is a directory, not an image", "fix the entry")
    if size == 0:
        raise _fail(label, "empty file (0 bytes)", "re-download or remove it")
    try:
        handle = open(file_path, "rb")  # noqa: SIM115 - closed below, after the lazy decode
    except OSError as exc:
        raise _fail(label, f"cannot open ({exc.strerror or exc})", "check the file's permissions") from None
    with handle:
        image = _open_header(handle, label, max_pixels)
        try:
            return _decode(image, label, draft_size)
        finally:
            if getattr(image, "n_frames", 1) > 1:
                image.close()


@dataclass(frozen=True)
class ImageProbe:
    """What `captune data check` learns about one file from a single read: size, content hash, errors."""

    path: Path
    width: int | None
    height: int | None
    format: str | None
    sha1: str | None
    error: str | None


def probe_image(path: str | os.PathLike[str], *, decode: bool = False,
                max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageProbe:
    """Header read (or, with `decode`, a reduced-size decode that still catches truncation) plus a hash.

    Reads the file once; never raises for a bad image, so a whole folder can be surveyed.
    """
    file_path = Path(path)
    label = os.fspath(path)
    try:
        data = file_path.read_bytes()
    except FileNotFoundError:
        return ImageProbe(file_path, None, None, None, None, f"{label}: image file not found")
    except OSError as exc:
        return ImageProbe(file_path, None, None, None, None, f"{label}: cannot read ({exc.strerror or exc})")
    digest = hashlib.sha1(data, usedforsecurity=False).hexdigest()
    if not data:
        return ImageProbe(file_path, None, None, None, digest, f"{label}: empty file (0 bytes)")
    try:
        image = _open_header(io.BytesIO(data), label, max_pixels)
        width, height, fmt = image.width, image.height, image.format
        if decode:
            _decode(image, label, (64, 64))
    except DataError as exc:
        return ImageProbe(file_path, None, None, None, digest, str(exc))
    return ImageProbe(file_path, width, height, fmt, digest, None)
