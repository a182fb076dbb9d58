"""DICOM rendering: one frame of a DICOM file as an 8-bit RGB picture, and nothing that names a patient.

A radiologist expects a DICOM to look the way a viewer shows it, so the display pipeline follows
the standard (PS3.3 C.11 and C.7.6.3): stored values -> modality LUT (CT Hounsfield units) ->
VOI window (a named preset, a custom centre/width, or the file's own) -> 8-bit grey, with
MONOCHROME1 inverted, palette images through their colour LUT and YBR colour converted to RGB.
Every step is pydicom's own implementation; this module only chooses which step applies.

Privacy: the dataset is read from memory and never written anywhere. Only the image pixel and
LUT elements (group 0x0028, and their copies in enhanced multi-frame functional groups), the
transfer syntax and the whitelisted Modality and Body Part Examined are ever read. pydicom
converts values lazily, so patient and institution elements are never even decoded, which
also keeps them out of its warnings and logs. What leaves the module is a
:class:`~medvlm.pixels.SafeMetadata` and error messages built from fixed text, numbers and
valid Code Strings.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.pixels import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi,
    apply_windowing,
    get_decoder,
    pixel_array,
)
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    UID_dictionary,
)

from medvlm.errors import ImageLoadError
from medvlm.pixels import SafeMetadata, check_shape, out_of_memory, reduce_blocks, reduction_factor

WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "subdural": (75.0, 215.0),
    "stroke": (40.0, 40.0),
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "abdomen": (50.0, 400.0),
    "liver": (30.0, 150.0),
    "bone": (400.0, 1800.0),
}
"""CT window presets in Hounsfield units: name -> (centre, width).

Values from Radiopaedia, "Windowing (CT)" (https://radiopaedia.org/articles/windowing-ct):
brain W:80 L:40; subdural W:130-300 L:50-100, taken at the middle of both ranges (75/215);
stroke W:40 L:40 (the wider of the two stroke windows it gives, the other being W:8 L:32);
lungs W:1500 L:-600; mediastinum W:350 L:50; abdominal soft tissues W:400 L:50; liver W:150
L:30; bone W:1800 L:400. They only make sense on images in Hounsfield units (CT), which
``SafeMetadata.hounsfield`` reports.
"""

_PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_GREY = ("MONOCHROME1", "MONOCHROME2")
# pydicom's pixel_array already returns RGB for YBR_FULL/YBR_FULL_422, and the JPEG 2000
# decoders return RGB for the irreversible/reversible colour transforms (YBR_ICT/YBR_RCT).
_COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")
_PALETTE = "PALETTE COLOR"
# Code String values (VR CS): the only file text allowed into metadata or messages.
_CODE_STRING = re.compile(r"[A-Z0-9_ ]{1,16}")
_UID_STRING = re.compile(r"[0-9.]{1,64}")
_PLUGINS_HINT = "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg pylibjpeg-rle"


@dataclass(frozen=True)
class Window:
    """The display window a caller asks for; validated on creation so a bad one never reaches rendering.

    ``Window()`` means the file's own: its VOI LUT or window (first value), else the full range
    of the pixel values. ``automatic`` ignores the file's window and spans the 1st to 99th
    percentile of the image's values (what a viewer's "auto" does for an MR or X-ray whose
    stored window is missing or poor). A ``preset`` is a key of :data:`WINDOW_PRESETS`; ``center`` and
    ``width`` give a custom window and must come together. Windows apply to greyscale DICOMs
    only: a colour DICOM or a raster image refuses a preset or custom one (it would silently
    change nothing) and shows itself as it is for the automatic one. The presets are Hounsfield
    units, so a greyscale image that is not a CT in Hounsfield units refuses them too.

    Example:
        >>> Window(preset="brain").requested(), Window(center=40, width=400).requested(), Window().requested()
        ((40.0, 80.0, 'brain'), (40.0, 400.0, 'custom'), None)
        >>> Window(center=40, width=-5)
        Traceback (most recent call last):
        ...
        medvlm.errors.ImageLoadError: The window width must be greater than 0 (got -5).
    """

    preset: str | None = None
    center: float | None = None
    width: float | None = None
    automatic: bool = False

    def __post_init__(self) -> None:
        custom = (self.center is not None, self.width is not None)
        if self.automatic and (self.preset is not None or any(custom)):
            raise ImageLoadError("Choose either the automatic window or a preset or custom window, not several.")
        if self.preset is not None:
            if any(custom):
                raise ImageLoadError("Choose either a window preset or a custom window centre and width, not both.")
            if self.preset not in WINDOW_PRESETS:
                raise ImageLoadError(
                    f"Unknown window preset {self.preset!r}. Valid presets: {', '.join(sorted(WINDOW_PRESETS))}."
                )
        elif custom[0] != custom[1]:
            raise ImageLoadError(
                "Give both a window centre and a window width, or neither (to use the file's own window)."
            )
        elif all(custom):
            if not math.isfinite(self.center) or not math.isfinite(self.width):
                raise ImageLoadError("The window centre and width must be finite numbers.")
            if self.width <= 0:
                raise ImageLoadError(f"The window width must be greater than 0 (got {self.width:g}).")

    def requested(self) -> tuple[float, float, str] | None:
        """(centre, width, name) for a preset or custom window; None for the file's own or the automatic one."""
        if self.preset is not None:
            center, width = WINDOW_PRESETS[self.preset]
            return center, width, self.preset
        if self.center is not None and self.width is not None:
            return float(self.center), float(self.width), "custom"
        return None


def is_dicom(data: bytes) -> bool:
    """Whether ``data`` is a DICOM file, judged by content alone (extensions lie).

    A conforming file has "DICM" after its 128-byte preamble. Files without the preamble (old
    or non-conforming writers) must start with a group 0x0002 or 0x0008 element and parse as a
    dataset holding a SOP Class UID, Modality or Rows, so arbitrary bytes are not taken for DICOM.
    """
    if data[128:132] == b"DICM":
        return True
    if data[:2] not in (b"\x02\x00", b"\x08\x00", b"\x00\x08"):
        return False
    try:
        ds = dcmread(BytesIO(data), force=True, stop_before_pixels=True)
        return any(keyword in ds for keyword in ("SOPClassUID", "Modality", "Rows"))
    except Exception:  # noqa: BLE001 - anything pydicom cannot parse is simply not DICOM
        return False


def render_dicom(
    data: bytes, window: Window | None = None, frame: int | None = None
) -> tuple[Image.Image, SafeMetadata]:
    """Render one frame of a DICOM file as an RGB image, with only whitelisted metadata.

    ``frame`` counts from 0; the default is the middle frame, the most representative of a
    multi-frame series. A frame larger than :data:`~medvlm.pixels.MAX_RENDER_PIXELS` is reduced
    before windowing (the memory budget of :mod:`medvlm.pixels`). Every failure is an
    :class:`ImageLoadError` whose message says what is wrong with the file (truncated, corrupt,
    not decodable, out of memory) without quoting any of its contents.

    Args:
        data: the file's bytes (the app keeps them in memory; nothing is written).
        window: the display window; None or ``Window()`` for the file's own.
        frame: the frame of a multi-frame file, from 0; None for the middle one.

    Returns:
        The 8-bit RGB image and its :class:`~medvlm.pixels.SafeMetadata`.

    Example:
        >>> from pydicom.data import get_testdata_file
        >>> data = open(get_testdata_file("CT_small.dcm"), "rb").read()
        >>> image, metadata = render_dicom(data, Window(preset="lung"))
        >>> image.size, metadata.modality, metadata.window_name, metadata.hounsfield
        ((128, 128), 'CT', 'lung', True)
    """
    window = window or Window()
    if not is_dicom(data):
        raise ImageLoadError("This file is not a DICOM or image file (PNG, JPEG, TIFF, BMP, WebP).")
    ds = _read(data)
    if not any(keyword in ds for keyword in _PIXEL_DATA_KEYWORDS):
        raise _missing_pixels(data, ds)
    try:
        return _render(ds, window, frame)
    except ImageLoadError:
        raise
    except MemoryError:
        raise out_of_memory(_int(ds, "Columns"), _int(ds, "Rows")) from None
    except Exception:  # noqa: BLE001 - a malformed header can break pydicom anywhere
        raise ImageLoadError(CORRUPT_HEADER) from None


CORRUPT_HEADER = "This DICOM file is corrupt: its image description could not be read."
NOT_A_DATASET = (
    "This file starts like a DICOM file (it has the DICM marker) but what follows is not a readable "
    "DICOM dataset: it is corrupt. Export it again from your PACS."
)
TRUNCATED_PIXELS = (
    "This DICOM file is truncated: it describes an image, but its pixel data is missing or cut off "
    "(was the upload or copy interrupted?). Upload the complete file."
)


def _read(data: bytes) -> Dataset:
    """Parse the dataset; ``force`` only for preamble-less files, which ``is_dicom`` vetted.

    A file without a Transfer Syntax UID (no file meta) can only hold native pixel data in the
    encoding it was read with, which pydicom's decoders need spelled out.
    """
    try:
        ds = dcmread(BytesIO(data), force=data[128:132] != b"DICM")
        if "TransferSyntaxUID" not in ds.file_meta:
            implicit, little = ds.original_encoding
            ds.file_meta.TransferSyntaxUID = (
                ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
            )
        return ds
    except Exception:  # noqa: BLE001 - pydicom raises many types for damaged files
        # `from None`: pydicom's own message may quote element values.
        raise ImageLoadError("This DICOM file is truncated or corrupt and could not be read.") from None


def _missing_pixels(data: bytes, ds: Dataset) -> ImageLoadError:
    """Why a dataset has no pixel data: cut off inside it, not a dataset at all, or an SR / RT plan.

    pydicom reads a file cut inside encapsulated pixel data as an *empty* dataset, so the header
    is read again up to the pixel data: if it describes an image, the file was truncated.
    """
    if "Rows" not in ds:
        try:
            ds = dcmread(BytesIO(data), force=data[128:132] != b"DICM", stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - the first read already succeeded; this one only refines the message
            pass
    if "Rows" in ds and "Columns" in ds:
        return ImageLoadError(TRUNCATED_PIXELS)
    if not any(keyword in ds for keyword in ("SOPClassUID", "Modality", "StudyInstanceUID")):
        return ImageLoadError(NOT_A_DATASET)
    return ImageLoadError("This DICOM has no pixel data (is it a structured report or RT plan?).")


def _render(ds: Dataset, window: Window, frame: int | None) -> tuple[Image.Image, SafeMetadata]:
    _check_transfer_syntax(ds)
    rows, columns = int(ds.Rows), int(ds.Columns)
    check_shape(columns, rows, what="DICOM image")
    frame_count = max(int(ds.get("NumberOfFrames") or 1), 1)
    index = _frame_index(frame, frame_count)
    photometric = _code_string(ds, "PhotometricInterpretation") or ""
    samples = int(ds.get("SamplesPerPixel") or 1)
    if not ((photometric in _GREY + (_PALETTE,) and samples == 1) or (photometric in _COLOUR and samples == 3)):
        raise ImageLoadError(
            f"This DICOM's pixel format is not supported (photometric interpretation "
            f"{photometric or 'unrecognised'}, {samples} samples per pixel). "
            f"Supported: MONOCHROME1, MONOCHROME2, PALETTE COLOR, RGB and YBR colour."
        )
    if photometric not in _GREY and window.requested() is not None:  # refused before decoding: said at once
        raise ImageLoadError(
            f"Only a greyscale DICOM can be shown with another window: this one holds colour pixels ({photometric}), "
            "not values such as Hounsfield units. Leave the window out."
        )
    arr = _decode_frame(ds, index)
    if arr.base is None:  # a decoded copy: the encoded bytes are no longer needed, free them before the maths
        for keyword in _PIXEL_DATA_KEYWORDS:
            if keyword in ds:
                del ds[keyword]
    modality = _code_string(ds, "Modality")
    factor = reduction_factor(columns, rows)

    shown: dict[str, Any] = {}
    if photometric in _GREY:
        _use_frame_functional_groups(ds, index)
        values = reduce_blocks(arr, factor, lambda block: apply_modality_lut(block, ds))
        grey, shown = _render_grey(values, ds, window, modality)
        if photometric == "MONOCHROME1":
            grey = 255 - grey  # MONOCHROME1 means low values are white
        rgb = np.repeat(grey[..., np.newaxis], 3, axis=2)
    elif photometric == _PALETTE:
        # The LUT's entries are 8 or 16 bits; a one-pixel lookup tells which range to scale from.
        lut_bits = 8 * apply_color_lut(arr[:1, :1], ds).dtype.itemsize
        rgb = _to_uint8(reduce_blocks(arr, factor, lambda block: apply_color_lut(block, ds)[..., :3]), bits=lut_bits)
    elif factor > 1:
        rgb = _to_uint8(reduce_blocks(arr, factor), bits=_bits(ds))
    else:
        rgb = _to_uint8(arr, bits=_bits(ds))

    image = Image.fromarray(np.ascontiguousarray(rgb))
    metadata = SafeMetadata(
        source_format="DICOM",
        width=image.width,
        height=image.height,
        modality=modality,
        body_part=_code_string(ds, "BodyPartExamined"),
        frame_count=frame_count,
        frame_index=index,
        photometric=photometric,
        original_width=columns if factor > 1 else None,
        original_height=rows if factor > 1 else None,
        **shown,
    )
    return image, metadata


def _bits(ds: Dataset) -> int:
    return int(ds.get("BitsStored") or ds.get("BitsAllocated") or 8)


def _int(ds: Dataset, keyword: str) -> int:
    try:
        return int(ds.get(keyword) or 0)
    except (TypeError, ValueError):
        return 0


def _frame_index(frame: int | None, frame_count: int) -> int:
    if frame is None:
        return frame_count // 2
    if not 0 <= frame < frame_count:  # messages number frames from 1, as every viewer does
        if frame_count == 1:
            raise ImageLoadError(f"There is no frame {frame + 1}: this DICOM has a single frame.")
        raise ImageLoadError(
            f"There is no frame {frame + 1}: this DICOM has {frame_count} frames, numbered 1 to {frame_count}."
        )
    return frame


def _check_transfer_syntax(ds: Dataset) -> None:
    """Refuse a transfer syntax no decoder exists for, or whose decoder is not installed, in words."""
    syntax = UID(ds.file_meta.TransferSyntaxUID)  # always set by _read
    if not syntax.is_transfer_syntax:
        raise ImageLoadError(
            f"This DICOM declares {_syntax_name(syntax)}, which is not a known DICOM transfer syntax, "
            f"so its image cannot be decoded. Export it uncompressed from your PACS."
        )
    if not syntax.is_compressed:
        return
    try:
        available = get_decoder(syntax).is_available
    except NotImplementedError:
        raise ImageLoadError(
            f"This DICOM is compressed with {_syntax_name(syntax)}, which this workbench cannot decode. "
            f"Export it uncompressed or as JPEG / JPEG 2000 / RLE from your PACS."
        ) from None
    if not available:
        raise ImageLoadError(
            f"This DICOM is compressed with {_syntax_name(syntax)}, which could not be decoded because "
            f"no decoder is installed. Install the pylibjpeg plugins: {_PLUGINS_HINT}"
        )


def _decode_frame(ds: Dataset, index: int) -> np.ndarray:
    """Decode only the requested frame, telling apart cut-off data from damaged data.

    Native (uncompressed) pixel data comes back as a read-only view of the dataset's bytes, so the
    full-size frame is never copied: :func:`~medvlm.pixels.reduce_blocks` reads it block by block.
    """
    # A view is only possible when no bits need masking; asking for one otherwise makes pydicom log a warning.
    view = ds.get("BitsStored") == ds.get("BitsAllocated")
    try:
        return pixel_array(ds, index=index, view_only=view)
    except (KeyboardInterrupt, SystemExit):
        raise
    except MemoryError:
        raise
    except BaseException as error:  # noqa: BLE001 - bad data makes decoders raise anything, even pyo3's PanicException
        if "less than expected" in str(error):  # pydicom's own length check of native pixel data
            raise ImageLoadError(TRUNCATED_PIXELS) from None
        raise ImageLoadError("This DICOM's image data is corrupt and could not be decoded.") from None


def _use_frame_functional_groups(ds: Dataset, index: int) -> None:
    """Copy an enhanced multi-frame file's rescale and window for ``index`` to the top level.

    Enhanced CT/MR keep them in functional groups (shared, then per frame, the latter winning),
    where pydicom's LUT functions do not look. ``ds`` is our private in-memory copy.
    """
    items = list(ds.get("SharedFunctionalGroupsSequence") or [])[:1]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    if index < len(per_frame):
        items.append(per_frame[index])
    for item in items:
        for sequence in ("PixelValueTransformationSequence", "FrameVOILUTSequence"):
            if item.get(sequence):
                macro = item[sequence][0]
                for tag in macro.keys():
                    ds[tag] = macro.get_item(tag)  # raw: no conversion, see _code_string


def _render_grey(
    values: np.ndarray, ds: Dataset, window: Window, modality: str | None
) -> tuple[np.ndarray, dict[str, Any]]:
    """The window applied to modality values (float32); returns 8-bit grey and the metadata fields describing it."""
    hounsfield = (
        modality == "CT"
        and "RescaleSlope" in ds
        and "RescaleIntercept" in ds
        and (_code_string(ds, "RescaleType") or "HU") == "HU"
    )
    requested = window.requested()
    if window.preset is not None and not hounsfield:
        raise ImageLoadError(
            f"The {window.preset} window is a CT preset in Hounsfield units, and this image "
            f"({modality or 'of unknown modality'}) is not in Hounsfield units. Use its own window, the automatic "
            "one, or a custom centre and width."
        )
    if requested is not None:
        center, width, name = requested
        return _linear_window(values, center, width), _shown(center, width, name, hounsfield)
    finite = values[np.isfinite(values)]
    if window.automatic:
        low, high = (float(v) for v in np.percentile(finite, [1, 99])) if finite.size else (0.0, 0.0)
        center, width = (low + high) / 2, (high - low) or 1.0
        return _linear_window(values, center, width), _shown(center, width, "automatic", hounsfield)
    if ds.get("VOILUTSequence"):
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        # A VOI LUT is a table indexed by whole values; reduced (averaged) values are rounded to them.
        indices = np.rint(np.nan_to_num(values)).astype(np.int64)
        return _to_uint8(apply_voi(indices, ds), bits=bits), _shown(None, None, "file VOI LUT", hounsfield)
    file_window = _file_window(ds)
    if file_window is not None:
        center, width, function = file_window
        return _linear_window(values, center, width, function), _shown(center, width, "file", hounsfield)
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    center, width = (low + high) / 2, (high - low) or 1.0  # a blank image shows mid-grey
    return _linear_window(values, center, width), _shown(center, width, "full range", hounsfield)


def _shown(center: float | None, width: float | None, name: str, hounsfield: bool) -> dict[str, Any]:
    return {"window_center": center, "window_width": width, "window_name": name, "hounsfield": hounsfield}


def _file_window(ds: Dataset) -> tuple[float, float, str] | None:
    """The file's first Window Center/Width and its VOI LUT function, or None if absent or unusable."""
    try:
        center, width = (_first(ds["WindowCenter"]), _first(ds["WindowWidth"]))
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    if not (math.isfinite(center) and math.isfinite(width) and width > 0):
        return None
    function = _code_string(ds, "VOILUTFunction") or "LINEAR"
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        function = "LINEAR"
    if function == "LINEAR" and width < 1:
        function = "LINEAR_EXACT"  # LINEAR needs width >= 1 (PS3.3 C.11.2.1.2.1)
    return center, width, function


def _first(element: Any) -> float:
    value = element.value
    return float(value[0] if element.VM > 1 else value)


def _linear_window(values: np.ndarray, center: float, width: float, function: str = "LINEAR_EXACT") -> np.ndarray:
    """Window ``values`` straight onto 0-255 with pydicom's ``apply_windowing``.

    Handing it a minimal 8-bit unsigned dataset makes its output range exactly 0..255,
    whatever the source bit depth or rescale. LINEAR_EXACT maps centre +/- width/2 to black and
    white exactly, and accepts the sub-unit widths of float data such as PET SUV.
    """
    voi = Dataset()
    voi.PhotometricInterpretation = "MONOCHROME2"
    voi.BitsStored = 8
    voi.PixelRepresentation = 0
    voi.WindowCenter = center
    voi.WindowWidth = width
    voi.VOILUTFunction = function
    return _to_uint8(apply_windowing(np.nan_to_num(values), voi), bits=8)


def _to_uint8(arr: np.ndarray, bits: int | None = None) -> np.ndarray:
    """Scale values whose full range is 0..2**bits - 1 (default: that of the dtype) to 0..255."""
    top = 2**bits - 1 if bits is not None else np.iinfo(arr.dtype).max
    if top == 255:
        return np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return np.clip(np.rint(arr.astype(np.float32) * (255 / top)), 0, 255).astype(np.uint8)


def _code_string(ds: Dataset, keyword: str) -> str | None:
    """A text element that is a valid single Code String (upper-cased), else None.

    Read from the element's raw bytes, so that pydicom never converts, validates and hence
    warns or logs a value that turned out to hold something else (a name in Body Part...).
    Nothing else of the file's text may leave the module.
    """
    element = ds.get_item(keyword)
    if element is None or element.value is None:
        return None
    value = element.value
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    text = text.strip(" \x00").upper()
    return text if _CODE_STRING.fullmatch(text) else None


def _syntax_name(syntax: Any) -> str:
    """A transfer syntax's standard name, its bare UID, or a neutral phrase for anything stranger."""
    uid = str(syntax)
    if uid in UID_dictionary:
        return f"the '{UID(uid).name}' transfer syntax"
    return f"transfer syntax {uid}" if _UID_STRING.fullmatch(uid) else "an unrecognised transfer syntax"
