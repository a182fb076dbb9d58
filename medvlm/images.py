"""Uploaded files -> RGB images the model can read, with only metadata that is safe to show.

The one entry point is :func:`load_image`. It decides what a file is from its content, never its
name (a ``.dcm`` may be a PNG, many DICOMs have no extension, a text file may be called
``x.png``), sends DICOMs to :mod:`medvlm.dicom` and opens raster formats with Pillow. Sizes are
checked from headers before any pixel is decoded, so a hostile or mistaken upload is refused
fast instead of exhausting memory.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageOps

from medvlm.errors import ImageLoadError

if TYPE_CHECKING:
    from medvlm.dicom import Window

MAX_INPUT_BYTES: int = 512 * 1024 * 1024
"""Largest file accepted (512 MiB): bigger than any single radiograph or CT series export."""

MAX_PIXELS: int = 100_000_000
"""Most pixels in the rendered image (e.g. 10,000 x 10,000); whole-slide images are out of scope."""

RASTER_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "TIFF", "BMP", "WEBP")
"""The Pillow formats accepted; anything else (GIF, PSD, EPS...) is refused as not an image."""

NOT_AN_IMAGE = "This file is not a DICOM or image file (PNG, JPEG, TIFF, BMP, WebP)."


@dataclass(frozen=True)
class SafeMetadata:
    """The only facts about a file that leave this package: display settings, never identities.

    ``width`` and ``height`` are those of the returned image. The window fields describe what
    was applied to a greyscale DICOM (``window_name``: a preset name, "custom", "file",
    "file VOI LUT" or "full range") and stay None for colour and raster images.
    """

    source_format: str
    width: int
    height: int
    modality: str | None = None
    body_part: str | None = None
    frame_count: int = 1
    frame_index: int = 0
    window_center: float | None = None
    window_width: float | None = None
    window_name: str | None = None
    photometric: str | None = None
    hounsfield: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy, for the UI and ``--json`` output."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class LoadedImage:
    """An 8-bit RGB image ready for the model, with its safe metadata."""

    image: Image.Image
    metadata: SafeMetadata


def load_image(
    source: str | os.PathLike[str] | bytes, *, window: Window | None = None, frame: int | None = None
) -> LoadedImage:
    """Load a DICOM, PNG, JPEG, TIFF, BMP or WebP file (a path or its bytes) as RGB.

    ``window`` and ``frame`` are passed to :func:`medvlm.dicom.render_dicom` for DICOMs; for
    raster images the window is ignored and ``frame`` picks a page of a multi-page TIFF or an
    animated WebP (default: the first). Raises :class:`ImageLoadError` for anything unusable.
    """
    # Imported here because medvlm.dicom imports SafeMetadata and MAX_PIXELS from this module.
    from medvlm.dicom import is_dicom, render_dicom

    data = read_input(source)
    if not data:
        raise ImageLoadError("The file is empty.")
    if is_dicom(data):
        image, metadata = render_dicom(data, window=window, frame=frame)
        return LoadedImage(image=image, metadata=metadata)
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


def _load_raster(data: bytes, frame: int | None) -> LoadedImage:
    """Open with Pillow, check the header's size before decoding, then normalise to RGB."""
    try:
        image = Image.open(BytesIO(data), formats=RASTER_FORMATS)
    except Image.DecompressionBombError:  # Pillow's own limit, twice MAX_IMAGE_PIXELS, hit before ours
        raise ImageLoadError(
            f"This image is too large: over {2 * Image.MAX_IMAGE_PIXELS:,} pixels, "
            f"and the limit is {MAX_PIXELS:,} pixels."
        ) from None
    except Exception:  # noqa: BLE001 - Pillow raises many types for unknown or damaged headers
        raise ImageLoadError(NOT_AN_IMAGE) from None
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise ImageLoadError(
            f"This image is too large: {width:,} x {height:,} = {width * height:,} pixels, "
            f"over the limit of {MAX_PIXELS:,} pixels."
        )
    # Pillow's JPEG opener reports multi-picture JPEGs (written by some cameras) as MPO.
    source_format = "JPEG" if image.format == "MPO" else str(image.format)
    try:
        frame_count = getattr(image, "n_frames", 1)
        index = _raster_frame(frame, frame_count)
        image.seek(index)
        rgb = _to_rgb(ImageOps.exif_transpose(image))
    except ImageLoadError:
        raise
    except Exception:  # noqa: BLE001 - decoders raise OSError, SyntaxError, ValueError, zlib errors...
        raise ImageLoadError(f"This {source_format} file is truncated or corrupt and could not be decoded.") from None
    metadata = SafeMetadata(
        source_format=source_format,
        width=rgb.width,
        height=rgb.height,
        frame_count=frame_count,
        frame_index=index,
    )
    return LoadedImage(image=rgb, metadata=metadata)


def _raster_frame(frame: int | None, frame_count: int) -> int:
    """The page to show: the first unless asked (pages of a TIFF are not a series with a middle)."""
    index = 0 if frame is None else frame
    if not 0 <= index < frame_count:
        raise ImageLoadError(
            f"Frame {index} does not exist: this image has {frame_count} frame(s), numbered 0 to {frame_count - 1}."
        )
    return index


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB, the way a person would expect to see it.

    High-bit-depth greyscale ("I;16", "I", "F") is min-max scaled, because Pillow's own
    conversion clips it to 0-255 and turns most 16-bit scans white. Transparency is composited
    over black, the background of radiology images.
    """
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        values = np.asarray(image, dtype=np.float32)  # half of float64 on a 100-megapixel scan
        finite = values[np.isfinite(values)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        scaled = (np.nan_to_num(values, nan=low, posinf=high, neginf=low) - low) * (255 / ((high - low) or 1.0))
        return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    return image.convert("RGB")
