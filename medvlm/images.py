"""Uploaded files -> RGB images the model can read, with only metadata that is safe to show.

The one entry point is :func:`load_image`. It decides what a file is from its content, never its
name (a ``.dcm`` may be a PNG, many DICOMs have no extension, a text file may be called
``x.png``), sends DICOMs to :mod:`medvlm.dicom` and opens raster formats with Pillow. Sizes and
shapes are checked from headers before any pixel is decoded, so a hostile or mistaken upload is
refused fast instead of exhausting memory; very large images are reduced to what the model can
read before any float maths (:mod:`medvlm.pixels` states the memory budget). Damage gets its own
sentence: a truncated file, a checksum that does not match, a file that is not an image at all.
The returned image carries pixels only: no text chunk, EXIF or ICC profile of the upload.
"""

from __future__ import annotations

import os
import warnings
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from medvlm.dicom import Window, is_dicom, render_dicom
from medvlm.errors import ImageLoadError
from medvlm.pixels import (
    MAX_PIXELS,
    MAX_RENDER_PIXELS,
    LoadedImage,
    SafeMetadata,
    bare_image,
    check_shape,
    out_of_memory,
    reduce_blocks,
    reduction_factor,
)

__all__ = [
    "MAX_INPUT_BYTES",
    "MAX_PIXELS",
    "MAX_RENDER_PIXELS",
    "LoadedImage",
    "SafeMetadata",
    "load_image",
    "read_input",
]

MAX_INPUT_BYTES: int = 512 * 1024 * 1024
"""Largest file accepted (512 MiB): bigger than any single radiograph or CT series export."""

RASTER_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "TIFF", "BMP", "WEBP")
"""The Pillow formats accepted; anything else (GIF, PSD, EPS...) is refused as not an image."""

NOT_AN_IMAGE = "This file is not a DICOM or image file (PNG, JPEG, TIFF, BMP, WebP)."


def load_image(
    source: str | os.PathLike[str] | bytes, *, window: Window | None = None, frame: int | None = None
) -> LoadedImage:
    """Load a DICOM, PNG, JPEG, TIFF, BMP or WebP file (a path or its bytes) as RGB.

    ``window`` and ``frame`` are passed to :func:`medvlm.dicom.render_dicom` for DICOMs; a raster
    image has no values to window (a preset or a custom window is refused: it would silently change
    nothing), and ``frame`` picks a page of a multi-page TIFF or an animated WebP (default: the
    first). Raises :class:`ImageLoadError` for anything unusable, including running out of memory
    (reported as that, not as a damaged file).
    """
    data = read_input(source)
    if not data:
        raise ImageLoadError("The file is empty.")
    if is_dicom(data):
        image, metadata = render_dicom(data, window=window, frame=frame)
        return LoadedImage(image=image, metadata=metadata)
    if window is not None and window.requested() is not None:
        raise ImageLoadError(
            "Only a DICOM file can be shown with another window: this image holds display grey levels, not the "
            "scanner's values. Leave the window out."
        )
    return _load_raster(data, frame)


def read_input(source: str | os.PathLike[str] | bytes) -> bytes:
    """The file's bytes, refusing oversize files before reading them (no path in messages: it may name a patient).

    Raises :class:`ImageLoadError`. Callers that keep the bytes read them here once and pass them
    to :func:`load_image`.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        _check_input_size(len(data))
        return data
    path = Path(source)
    try:
        if path.is_dir():
            raise ImageLoadError("This is a folder, not a file: choose a single image or DICOM file.")
        _check_input_size(path.stat().st_size)
        return path.read_bytes()
    except FileNotFoundError:
        raise ImageLoadError("The file does not exist (check the path).") from None
    except OSError as error:
        raise ImageLoadError(f"The file could not be read ({error.strerror or 'input/output error'}).") from None


def _check_input_size(size: int) -> None:
    if size > MAX_INPUT_BYTES:
        raise ImageLoadError(
            f"The file is too large: {size / 2**20:,.0f} MiB, over the limit of {MAX_INPUT_BYTES / 2**20:,.0f} MiB."
        )


TRUNCATED = (
    "This {format} file is truncated: it ends before its image data does (was the upload or copy "
    "interrupted?). Upload the complete file."
)
DAMAGED = (
    "This {format} file is damaged: a checksum inside it does not match its data, so its pixels cannot be "
    "trusted. Export it again."
)
CORRUPT = "This {format} file is corrupt and could not be decoded."


def _load_raster(data: bytes, frame: int | None) -> LoadedImage:
    """Open with Pillow, check the header's size and shape, verify, decode (reduced if huge), normalise to RGB."""
    image = _open_raster(data)
    width, height = image.size
    check_shape(width, height)
    # Pillow's JPEG opener reports multi-picture JPEGs (written by some cameras) as MPO.
    source_format = "JPEG" if image.format == "MPO" else str(image.format)
    if source_format == "PNG":
        _verify_png(data)
    try:
        frame_count = getattr(image, "n_frames", 1)
        index = _raster_frame(frame, frame_count)
        image.seek(index)
        factor = reduction_factor(width, height)
        if factor > 1 and source_format == "JPEG":
            # libjpeg decodes at 1/2, 1/4 or 1/8 scale directly: the full-size image is never made.
            image.draft(image.mode, (-(-width // factor), -(-height // factor)))
        image.load()
        # Orientations 5 to 8 turn the image a quarter: its original width is then its height.
        quarter_turn = image.getexif().get(0x0112, 1) in (5, 6, 7, 8)
        ImageOps.exif_transpose(image, in_place=True)  # in place: a copy would double the peak
        original = (height, width) if quarter_turn else (width, height)
        rgb = _to_rgb(image, (-(-original[0] // factor), -(-original[1] // factor)))
    except ImageLoadError:
        raise
    except MemoryError:
        raise out_of_memory(width, height) from None
    except Exception as error:  # noqa: BLE001 - decoders raise OSError, SyntaxError, ValueError, zlib errors...
        message = TRUNCATED if "truncated" in str(error).lower() else CORRUPT
        raise ImageLoadError(message.format(format=source_format)) from None
    reduced = rgb.size != original
    metadata = SafeMetadata(
        source_format=source_format,
        width=rgb.width,
        height=rgb.height,
        frame_count=frame_count,
        frame_index=index,
        original_width=original[0] if reduced else None,
        original_height=original[1] if reduced else None,
    )
    return LoadedImage(image=rgb, metadata=metadata)


def _open_raster(data: bytes) -> Image.Image:
    try:
        with (
            warnings.catch_warnings()
        ):  # Pillow warns above 89 megapixels; our own limit (checked next) is the rule here
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(BytesIO(data), formats=RASTER_FORMATS)
    except Image.DecompressionBombError:  # Pillow's own limit, twice MAX_IMAGE_PIXELS, hit before ours
        raise ImageLoadError(
            f"This image is too large: over {2 * Image.MAX_IMAGE_PIXELS:,} pixels, "
            f"and the limit is {MAX_PIXELS:,} pixels."
        ) from None
    except Exception:  # noqa: BLE001 - Pillow raises many types for unknown or damaged headers
        raise ImageLoadError(NOT_AN_IMAGE) from None


def _verify_png(data: bytes) -> None:
    """Check every chunk's CRC and that the file reaches its end chunk (Pillow's decoder checks neither).

    Without this, a PNG cut after its last complete row block, or with a flipped byte whose zlib
    stream still inflates, would show with black or wrong rows and no warning.
    """
    try:
        Image.open(BytesIO(data), formats=("PNG",)).verify()
    except SyntaxError as error:  # Pillow's PNG reader raises SyntaxError("broken PNG file (bad header checksum...)")
        raise ImageLoadError((DAMAGED if "checksum" in str(error) else CORRUPT).format(format="PNG")) from None
    except Exception as error:  # noqa: BLE001 - OSError("Truncated File Read"), struct errors...
        raise ImageLoadError(
            (TRUNCATED if "truncated" in str(error).lower() else CORRUPT).format(format="PNG")
        ) from None


def _raster_frame(frame: int | None, frame_count: int) -> int:
    """The page to show: the first unless asked (pages of a TIFF are not a series with a middle)."""
    index = 0 if frame is None else frame
    if not 0 <= index < frame_count:
        raise ImageLoadError(
            f"There is no frame {index + 1}: this image has {frame_count} frame(s), numbered 1 to {frame_count}."
        )
    return index


def _to_rgb(image: Image.Image, target: tuple[int, int] | None = None) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB without metadata, the way a person would expect to see it.

    High-bit-depth greyscale ("I;16", "I", "F") is min-max scaled, because Pillow's own
    conversion clips it to 0-255 and turns most 16-bit scans white. Transparency is composited
    over black, the background of radiology images. A ``target`` size smaller than the image is
    reached by area averaging first (before any float copy of the full image is made).
    """
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        # Never drafted, so still full size: the same whole factor reaches the target.
        values = reduce_blocks(image, reduction_factor(*image.size))
        finite = values[np.isfinite(values)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        np.nan_to_num(values, copy=False, nan=low, posinf=high, neginf=low)
        values -= low
        values *= 255 / ((high - low) or 1.0)
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = _reduce(image if image.mode == "RGBA" else image.convert("RGBA"), target)
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return bare_image(Image.alpha_composite(black, rgba))
    return bare_image(_reduce(image if image.mode in ("L", "RGB") else image.convert("RGB"), target))


def _reduce(image: Image.Image, target: tuple[int, int] | None) -> Image.Image:
    """``image`` at ``target`` size by area averaging: Pillow's ``reduce`` for a whole factor, else a box resize.

    A JPEG decoded at 1/2 scale (``draft``) may still be 1.5 times the target.
    """
    if target is None or image.size == target:
        return image
    factor = max(1, image.width // target[0])
    if (-(-image.width // factor), -(-image.height // factor)) == target:
        return image.reduce(factor)
    return image.resize(target, Image.Resampling.BOX)
