"""Raster images and the generic entry point: sniffing by content, mode conversion, limits, errors."""

from __future__ import annotations

import struct
import zlib
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import medvlm.images
from medvlm.errors import ImageLoadError
from medvlm.images import MAX_PIXELS, NOT_AN_IMAGE, LoadedImage, SafeMetadata, load_image


def gradient(width: int = 64, height: int = 48) -> Image.Image:
    """An RGB image whose every pixel differs, so flips and channel swaps show."""
    x, y = np.meshgrid(np.arange(width), np.arange(height))
    return Image.fromarray(np.stack([x * 4, y * 5, (x + y) * 2], axis=2).astype(np.uint8))


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR claims ``width`` x ``height`` 1-bit pixels (its data is nowhere near)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b"")


def rgb_array(loaded: LoadedImage) -> np.ndarray:
    assert loaded.image.mode == "RGB"
    return np.asarray(loaded.image).astype(int)


@pytest.mark.parametrize(
    ("fmt", "params", "tolerance"),
    [
        ("PNG", {}, 0),
        ("TIFF", {}, 0),
        ("BMP", {}, 0),
        ("WEBP", {"lossless": True}, 0),
        ("JPEG", {"quality": 95}, 24),
        ("WEBP", {"quality": 90}, 40),
    ],
)
def test_raster_round_trips(tmp_path: Path, fmt: str, params: dict, tolerance: int) -> None:
    original = gradient()
    path = tmp_path / f"image.{fmt.lower()}"
    path.write_bytes(encode(original, fmt, **params))
    loaded = load_image(path)
    assert loaded.metadata == SafeMetadata(source_format=fmt, width=64, height=48)
    assert np.abs(rgb_array(loaded) - np.asarray(original).astype(int)).max() <= tolerance


def test_path_str_and_bytes_inputs_agree(tmp_path: Path) -> None:
    data = encode(gradient(), "PNG")
    path = tmp_path / "scan.png"
    path.write_bytes(data)
    results = [load_image(source) for source in (path, str(path), data, bytearray(data), memoryview(data))]
    for loaded in results[1:]:
        assert loaded.metadata == results[0].metadata
        assert np.array_equal(rgb_array(loaded), rgb_array(results[0]))


def test_content_decides_not_the_extension(tmp_path: Path) -> None:
    path = tmp_path / "scan.dcm"
    path.write_bytes(encode(gradient(), "JPEG"))
    assert load_image(path).metadata.source_format == "JPEG"
    noext = tmp_path / "scan"
    noext.write_bytes(encode(gradient(), "TIFF"))
    assert load_image(noext).metadata.source_format == "TIFF"


def test_text_file_named_png_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    path.write_text("Patient has a cough.\n" * 20)
    with pytest.raises(ImageLoadError) as error:
        load_image(path)
    assert str(error.value) == NOT_AN_IMAGE == "This file is not a DICOM or image file (PNG, JPEG, TIFF, BMP, WebP)."


def test_unsupported_raster_format_is_not_an_image() -> None:
    with pytest.raises(ImageLoadError, match="not a DICOM or image file"):
        load_image(encode(gradient(), "GIF"))


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageLoadError, match="^The file is empty.$"):
        load_image(path)
    with pytest.raises(ImageLoadError, match="empty"):
        load_image(b"")


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError, match="does not exist"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageLoadError, match="folder"):
        load_image(tmp_path)


def test_truncated_png() -> None:
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = encode(noisy, "PNG")
    with pytest.raises(ImageLoadError, match="^This PNG file is truncated or corrupt"):
        load_image(data[: len(data) // 2])


def test_huge_png_header_is_refused_fast() -> None:
    with pytest.raises(ImageLoadError, match=f"too large.*the limit is {MAX_PIXELS:,} pixels"):
        load_image(png_header(20_000, 20_000))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_png_over_our_limit_reports_its_size() -> None:
    with pytest.raises(ImageLoadError, match=f"12,000 x 10,000 = 120,000,000 pixels, over the limit of {MAX_PIXELS:,} pixels"):
        load_image(png_header(12_000, 10_000))


def test_oversize_input_is_refused_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(medvlm.images, "MAX_INPUT_BYTES", 2**20)
    path = tmp_path / "big.bmp"
    path.write_bytes(bytes(3 * 2**20))
    with pytest.raises(ImageLoadError, match="too large: 3 MiB, over the limit of 1 MiB"):
        load_image(path)


def test_16_bit_greyscale_is_min_max_scaled() -> None:
    ramp = np.linspace(1000, 3000, 64 * 8).reshape(8, 64).astype(np.uint16)
    image = Image.fromarray(ramp)
    assert image.mode == "I;16"
    grey = rgb_array(load_image(encode(image, "PNG")))[..., 0]
    assert grey.min() == 0 and grey.max() == 255
    assert np.all(np.diff(grey.ravel()) >= 0)  # still a ramp, not clipped to white


@pytest.mark.parametrize(("mode", "fmt"), [("I", "TIFF"), ("F", "TIFF"), ("I;16", "TIFF")])
def test_other_high_depth_greyscale(mode: str, fmt: str) -> None:
    values = np.linspace(-5, 5, 100).reshape(10, 10)
    image = Image.fromarray(values.astype(np.float32), "F").convert(mode) if mode == "F" else Image.fromarray((values * 100 + 600).astype(np.uint16)).convert(mode)
    grey = rgb_array(load_image(encode(image, fmt)))[..., 0]
    assert (grey.min(), grey.max()) == (0, 255)


def test_float_image_with_nan_and_inf() -> None:
    values = np.array([[0.0, 1.0, np.nan, np.inf, -np.inf, 0.5]], dtype=np.float32)
    grey = rgb_array(load_image(encode(Image.fromarray(values, "F"), "TIFF")))[0, :, 0]
    assert grey.tolist() == [0, 255, 0, 255, 0, 128]


def test_constant_16_bit_image_does_not_divide_by_zero() -> None:
    grey = rgb_array(load_image(encode(Image.fromarray(np.full((4, 4), 700, dtype=np.uint16)), "PNG")))
    assert grey.shape == (4, 4, 3)


def test_transparency_is_composited_over_black() -> None:
    rgba = Image.new("RGBA", (2, 1))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    rgba.putpixel((1, 0), (0, 255, 0, 0))
    assert rgb_array(load_image(encode(rgba, "PNG")))[0].tolist() == [[255, 0, 0], [0, 0, 0]]
    la = Image.new("LA", (1, 1), (200, 255))
    assert rgb_array(load_image(encode(la, "PNG")))[0, 0].tolist() == [200, 200, 200]
    palette = Image.new("P", (2, 1))
    palette.putpalette([255, 255, 255, 0, 0, 255])
    palette.putpixel((1, 0), 1)
    assert rgb_array(load_image(encode(palette, "PNG", transparency=0)))[0].tolist() == [[0, 0, 0], [0, 0, 255]]


@pytest.mark.parametrize(("mode", "fmt"), [("CMYK", "JPEG"), ("CMYK", "TIFF"), ("1", "BMP"), ("L", "PNG"), ("P", "BMP")])
def test_other_modes_become_rgb(mode: str, fmt: str) -> None:
    loaded = load_image(encode(gradient().convert(mode), fmt))
    assert loaded.image.mode == "RGB" and loaded.image.size == (64, 48)


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    loaded = load_image(encode(gradient(40, 20), "JPEG", exif=exif.tobytes()))
    assert loaded.image.size == (20, 40)
    assert (loaded.metadata.width, loaded.metadata.height) == (20, 40)


def test_multipage_tiff_frames() -> None:
    pages = [Image.new("RGB", (4, 4), colour) for colour in ("red", "lime", "blue")]
    data = encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    first = load_image(data)
    assert (first.metadata.frame_count, first.metadata.frame_index) == (3, 0)
    assert rgb_array(first)[0, 0].tolist() == [255, 0, 0]
    assert rgb_array(load_image(data, frame=2))[0, 0].tolist() == [0, 0, 255]
    with pytest.raises(ImageLoadError, match="Frame 3 does not exist: this image has 3 frame"):
        load_image(data, frame=3)


def test_window_is_ignored_for_raster_images() -> None:
    from medvlm.dicom import Window

    loaded = load_image(encode(gradient(), "PNG"), window=Window(preset="brain"))
    assert loaded.metadata.window_name is None


def test_metadata_to_dict() -> None:
    meta = load_image(encode(gradient(), "BMP")).metadata
    assert meta.to_dict() == {
        "source_format": "BMP", "width": 64, "height": 48, "modality": None, "body_part": None,
        "frame_count": 1, "frame_index": 0, "window_center": None, "window_width": None,
        "window_name": None, "photometric": None, "hounsfield": False,
    }  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_only_raise_image_load_error(data: bytes) -> None:
    try:
        load_image(data)
    except ImageLoadError:
        pass


PNG_SAMPLE = encode(gradient(16, 16), "PNG")


@settings(max_examples=80, deadline=None)
@given(st.sampled_from([PNG_SAMPLE, encode(gradient(16, 16), "JPEG"), encode(gradient(16, 16), "TIFF")]), st.data())
def test_corrupted_raster_bytes_only_raise_image_load_error(original: bytes, data: st.DataObject) -> None:
    corrupted = bytearray(original)
    for _ in range(data.draw(st.integers(1, 6))):
        corrupted[data.draw(st.integers(0, len(corrupted) - 1))] = data.draw(st.integers(0, 255))
    try:
        loaded = load_image(bytes(corrupted))
    except ImageLoadError:
        return
    assert loaded.image.mode == "RGB"
