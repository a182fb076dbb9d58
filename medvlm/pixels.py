"""What every image loader shares: the safe metadata type, the size limits, and memory-bounded reduction.

A leaf module (it imports nothing else of medvlm but the errors), so :mod:`medvlm.images` and
:mod:`medvlm.dicom` both build on it without importing each other.

**The memory budget.** A free Space has 16 GB for several users, so loading one upload must not
cost gigabytes. Two rules keep it bounded:

* An image larger than :data:`MAX_RENDER_PIXELS` is reduced (area averaging by a whole factor)
  *before* any floating-point maths, a block of rows at a time, so the float copies that windowing
  needs are made of the reduced image only. No Qwen2-VL input is ever larger than that ceiling,
  so the reduction loses nothing the model could be given.
* Decoding itself is the only full-size step: the decoded raster (or a read-only view of a DICOM's
  native pixel data) is read once, block by block.

``python -m bench.load_memory`` measures the peak for the largest accepted DICOM and PNG; the
README states the budget it holds.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from medvlm.errors import ImageLoadError

MAX_PIXELS: int = 100_000_000
"""Most pixels in an upload (e.g. 10,000 x 10,000); whole-slide images are out of scope."""

PIXELS_PER_IMAGE_TOKEN: int = 28 * 28
"""Pixels behind one image token of Qwen2-VL's language model: a 28x28 square (14x14 patches, merged 2x2)."""
RECIPE_MAX_PIXELS: int = 512 * PIXELS_PER_IMAGE_TOKEN
"""The recipe's image-token budget: 512 tokens (401,408 pixels)."""
RECIPE_MIN_PIXELS: int = 4 * PIXELS_PER_IMAGE_TOKEN
"""The recipe's lower bound (4 tokens)."""

MAX_RENDER_PIXELS: int = 16384 * PIXELS_PER_IMAGE_TOKEN
"""Most pixels in the rendered image (12,845,056, about 3584 x 3584): Qwen2-VL's own ceiling.

Its image processor never passes more than 16,384 image tokens of 28 x 28 pixels to the model, so
an upload is reduced to at most this size before windowing (see the module docstring).
"""

MAX_ASPECT_RATIO: float = 200.0
"""Longest side / shortest side that Qwen2-VL's image processor accepts (it raises beyond it)."""

_ROWS_PER_BLOCK = 1 << 20
"""Pixels processed per block when reducing (about 1 million: a few MB of float32 at a time)."""


@dataclass(frozen=True)
class SafeMetadata:
    """The only facts about a file that leave the loaders: display settings, never identities.

    ``width`` and ``height`` are those of the returned image. When a very large upload was reduced
    to fit :data:`MAX_RENDER_PIXELS`, ``original_width`` and ``original_height`` give its size
    (None otherwise). The window fields describe what was applied to a greyscale DICOM
    (``window_name``: a preset name, "custom", "file", "file VOI LUT",
    "automatic" or "full range") and stay
    None for colour and raster images.
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
    original_width: int | None = None
    original_height: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy, for the UI and ``--json`` output."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class LoadedImage:
    """An 8-bit RGB image ready for the model, with its safe metadata."""

    image: Image.Image
    metadata: SafeMetadata


def check_shape(width: int, height: int, *, what: str = "image") -> None:
    """Refuse, from the header's size alone, an image the model could never read.

    Raises :class:`ImageLoadError` for no pixels, more than :data:`MAX_PIXELS`, or sides more
    than :data:`MAX_ASPECT_RATIO` times apart (a 10000 x 1 strip), each with its own sentence.
    """
    if width <= 0 or height <= 0:
        raise ImageLoadError(f"This {what} is corrupt: it has no rows or columns.")
    if width * height > MAX_PIXELS:
        raise ImageLoadError(
            f"This {what} is too large: {width:,} x {height:,} = {width * height:,} pixels, "
            f"over the limit of {MAX_PIXELS:,} pixels."
        )
    if max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
        raise ImageLoadError(
            f"This {what} is {width:,} x {height:,} pixels: one side is more than {MAX_ASPECT_RATIO:g} times "
            f"the other, and the model cannot read so elongated an image. Crop it, or pad it to a squarer shape."
        )


def reduction_factor(width: int, height: int, limit: int | None = None) -> int:
    """The smallest whole factor that brings ``width x height`` (rounded up per block) within ``limit``.

    ``limit`` defaults to :data:`MAX_RENDER_PIXELS`, read at call time.
    """
    limit = MAX_RENDER_PIXELS if limit is None else limit
    factor = max(1, math.ceil(math.sqrt(width * height / limit)))
    while math.ceil(width / factor) * math.ceil(height / factor) > limit:
        factor += 1
    return factor


def reduce_blocks(
    source: np.ndarray | Image.Image,
    factor: int,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """``transform`` applied to ``source``, then averaged over ``factor x factor`` blocks, as float32.

    Works a band of rows at a time, so memory beyond ``source`` itself is one band plus the
    reduced result: an array (which may be a read-only view) is sliced, a Pillow image is cropped
    band by band, so neither is ever copied whole. ``source`` is ``(rows, columns)`` or ``(rows,
    columns, samples)``; edge blocks that do not fill ``factor`` rows or columns average the pixels
    they have, so nothing at the borders is dropped. ``transform`` (a modality or colour LUT) maps
    raw values to display values elementwise and may change the trailing sample axis. The result
    is always a new, writable array.
    """
    if isinstance(source, Image.Image):
        columns, rows = source.size
        image = source

        def band_of(start: int, stop: int) -> np.ndarray:
            return np.asarray(image.crop((0, start, columns, stop)))
    else:
        rows, columns = source.shape[:2]
        array = source

        def band_of(start: int, stop: int) -> np.ndarray:
            return array[start:stop]

    band = max(1, _ROWS_PER_BLOCK // max(columns * factor, 1)) * factor
    pieces = []
    for start in range(0, rows, band):
        chunk = band_of(start, min(start + band, rows))
        values = np.array(transform(chunk) if transform is not None else chunk, dtype=np.float32)  # a writable copy
        pieces.append(_mean_blocks(values, factor) if factor > 1 else values)
    return np.concatenate(pieces, axis=0) if len(pieces) > 1 else pieces[0]


def _mean_blocks(values: np.ndarray, factor: int) -> np.ndarray:
    """Mean over factor x factor blocks of one band; partial edge blocks average what they hold."""
    rows, columns = values.shape[:2]
    pad_rows, pad_columns = -rows % factor, -columns % factor
    trailing = values.shape[2:]
    sums = np.zeros((rows + pad_rows, columns + pad_columns, *trailing), dtype=np.float32)
    sums[:rows, :columns] = values
    counts = np.zeros((rows + pad_rows, columns + pad_columns), dtype=np.float32)
    counts[:rows, :columns] = 1
    shape = ((rows + pad_rows) // factor, factor, (columns + pad_columns) // factor, factor)
    totals = sums.reshape(*shape, *trailing).sum(axis=(1, 3))
    weights = counts.reshape(shape).sum(axis=(1, 3))
    return totals / weights.reshape(weights.shape + (1,) * len(trailing))


def bare_image(image: Image.Image) -> Image.Image:
    """The same pixels as a new RGB image with no metadata at all.

    PNG text chunks (where a PACS may write patient name, ID, institution), EXIF, XMP and ICC
    profiles live in ``Image.info``; Gradio copies text chunks into the preview it serves, and
    Pillow carries ``info`` through ``convert``. A fresh image built from the raw bytes carries none.
    """
    rgb = image.convert("RGB")
    return Image.frombytes("RGB", rgb.size, rgb.tobytes())


def out_of_memory(width: int, height: int) -> ImageLoadError:
    """The message for a decoder or conversion that ran out of memory: what happened, and what helps."""
    return ImageLoadError(
        f"The server ran out of memory while loading this {width:,} x {height:,} pixel image. "
        f"Try again in a moment, or export a smaller image (the model reads at most "
        f"{MAX_RENDER_PIXELS:,} pixels anyway)."
    )
