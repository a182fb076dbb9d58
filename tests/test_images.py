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
import medvlm.pixels
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
    with pytest.raises(ImageLoadError, match="^This PNG file is truncated: it ends before its image data does"):
        load_image(data[: len(data) // 2])


def test_huge_png_header_is_refused_fast() -> None:
    with pytest.raises(ImageLoadError, match=f"too large.*the limit is {MAX_PIXELS:,} pixels"):
        load_image(png_header(20_000, 20_000))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_png_over_our_limit_reports_its_size() -> None:
    with pytest.raises(
        ImageLoadError, match=f"12,000 x 10,000 = 120,000,000 pixels, over the limit of {MAX_PIXELS:,} pixels"
    ):
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
    image = (
        Image.fromarray(values.astype(np.float32), "F").convert(mode)
        if mode == "F"
        else Image.fromarray((values * 100 + 600).astype(np.uint16)).convert(mode)
    )
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


@pytest.mark.parametrize(
    ("mode", "fmt"), [("CMYK", "JPEG"), ("CMYK", "TIFF"), ("1", "BMP"), ("L", "PNG"), ("P", "BMP")]
)
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
    with pytest.raises(ImageLoadError, match="There is no frame 4: this image has 3 frame"):
        load_image(data, frame=3)


def test_a_window_for_a_raster_image_is_refused_not_silently_ignored() -> None:
    from medvlm.dicom import Window

    for window in (Window(preset="brain"), Window(center=40, width=400)):
        with pytest.raises(ImageLoadError, match="Only a DICOM file can be shown with another window"):
            load_image(encode(gradient(), "PNG"), window=window)
    assert load_image(encode(gradient(), "PNG"), window=Window()).metadata.window_name is None  # its own: fine


def test_metadata_to_dict() -> None:
    meta = load_image(encode(gradient(), "BMP")).metadata
    assert meta.to_dict() == {
        "source_format": "BMP", "width": 64, "height": 48, "modality": None, "body_part": None,
        "frame_count": 1, "frame_index": 0, "window_center": None, "window_width": None,
        "window_name": None, "photometric": None, "hounsfield": False,
        "original_width": None, "original_height": None,
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


# --- Damage, shape, identity and size (the hostile-input campaign) --------------------------------


def png_chunks(data: bytes) -> list[tuple[int, bytes]]:
    """(offset of the length field, chunk type) of every chunk in a PNG."""
    chunks, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        chunks.append((offset, data[offset + 4 : offset + 8]))
        offset += 12 + length
    return chunks


def test_png_cut_after_its_image_data_says_truncated() -> None:
    data = encode(Image.radial_gradient("L"), "PNG")
    iend = next(offset for offset, kind in png_chunks(data) if kind == b"IEND")
    with pytest.raises(ImageLoadError, match="^This PNG file is truncated: it ends before its image data does"):
        load_image(data[:iend])


def test_png_with_a_wrong_image_data_checksum_says_damaged() -> None:
    data = bytearray(encode(Image.radial_gradient("L"), "PNG"))
    offset = next(offset for offset, kind in png_chunks(bytes(data)) if kind == b"IDAT")
    (length,) = struct.unpack(">I", data[offset : offset + 4])
    data[offset + 8 + length] ^= 0xFF  # the CRC of the IDAT chunk: the pixels still inflate
    with pytest.raises(ImageLoadError, match="^This PNG file is damaged: a checksum inside it does not match"):
        load_image(bytes(data))


def test_truncated_jpeg_says_truncated() -> None:
    data = encode(gradient(256, 256), "JPEG", quality=95)
    with pytest.raises(ImageLoadError, match="^This JPEG file is truncated"):
        load_image(data[: len(data) // 2])


PNG_IDENTITY = {
    "PatientName": "Doe^Jane-SECRET",
    "PatientID": "PID-SECRET-123",
    "InstitutionName": "SECRET General Hospital",
}


def png_with_identity() -> bytes:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for key, value in PNG_IDENTITY.items():
        info.add_text(key, value)
    info.add_itxt("AccessionNumber", "ACC-SECRET-9")
    return encode(gradient(), "PNG", pnginfo=info, icc_profile=b"ICC-SECRET-PROFILE")


def test_png_text_chunks_never_reach_the_loaded_image_or_what_gradio_serves() -> None:
    from gradio.processing_utils import encode_pil_to_bytes

    data = png_with_identity()
    assert b"PID-SECRET-123" in data and Image.open(BytesIO(data)).info["PatientID"] == "PID-SECRET-123"
    loaded = load_image(data)
    assert loaded.image.info == {}
    served = encode_pil_to_bytes(loaded.image, "png")  # what gr.Image writes to its cache and serves back
    for marker in (*PNG_IDENTITY.values(), "ACC-SECRET-9", "ICC-SECRET-PROFILE"):
        assert marker.encode() not in served
    assert np.array_equal(np.asarray(Image.open(BytesIO(served)).convert("RGB")), np.asarray(gradient()))


@pytest.mark.parametrize(("width", "height"), [(10000, 1), (1, 5000), (2010, 10)])
def test_elongated_images_are_refused_at_load(width: int, height: int) -> None:
    data = encode(Image.new("L", (width, height)), "PNG")
    with pytest.raises(
        ImageLoadError, match=f"is {width:,} x {height:,} pixels: one side is more than 200 times the other"
    ):
        load_image(data)


def test_an_image_200_times_longer_than_wide_is_still_accepted() -> None:
    assert load_image(encode(Image.new("L", (2000, 10)), "PNG")).image.size == (2000, 10)


def test_a_huge_16_bit_image_is_reduced_before_any_float_maths(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(medvlm.pixels, "MAX_RENDER_PIXELS", 30 * 20)
    values = (np.arange(61 * 40, dtype=np.uint16).reshape(40, 61) * 20).astype(np.uint16)
    loaded = load_image(encode(Image.fromarray(values), "PNG"))
    meta = loaded.metadata
    assert (meta.width, meta.height, meta.original_width, meta.original_height) == (21, 14, 61, 40)  # factor 3
    means = np.array([[values[r : r + 3, c : c + 3].mean() for c in range(0, 61, 3)] for r in range(0, 40, 3)])
    expected = np.rint((means - means.min()) * 255 / (means.max() - means.min()))
    assert np.abs(rgb_array(loaded)[..., 0] - expected).max() <= 1


def test_a_huge_rgb_jpeg_is_decoded_reduced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(medvlm.pixels, "MAX_RENDER_PIXELS", 64 * 48)
    image = gradient(256, 192)
    loaded = load_image(encode(image, "JPEG", quality=95))
    assert loaded.image.width * loaded.image.height <= 64 * 48
    assert (loaded.metadata.original_width, loaded.metadata.original_height) == (256, 192)
    reference = np.asarray(image.resize(loaded.image.size, Image.Resampling.BOX)).astype(int)
    assert np.abs(rgb_array(loaded) - reference).mean() < 6


def test_out_of_memory_is_reported_as_what_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    def exhausted(*args: object, **kwargs: object) -> None:
        raise MemoryError

    monkeypatch.setattr(medvlm.images, "reduce_blocks", exhausted)
    data = encode(Image.fromarray(np.zeros((40, 60), dtype=np.uint16)), "PNG")
    with pytest.raises(ImageLoadError, match="^The server ran out of memory while loading this 60 x 40 pixel image"):
        load_image(data)


@settings(max_examples=80, deadline=None)
@given(
    rows=st.integers(1, 23),
    columns=st.integers(1, 23),
    factor=st.integers(1, 5),
    samples=st.sampled_from([0, 3]),
    band=st.integers(1, 64),
)
def test_block_reduction_is_the_mean_of_each_block_whatever_the_band(
    rows: int, columns: int, factor: int, samples: int, band: int
) -> None:
    from medvlm import pixels

    shape = (rows, columns, samples) if samples else (rows, columns)
    values = np.random.default_rng(rows * 100 + columns).integers(-500, 500, size=shape).astype(np.int16)
    expected = np.array(
        [
            [
                values[r : r + factor, c : c + factor].reshape(-1, *shape[2:]).mean(axis=0)
                for c in range(0, columns, factor)
            ]
            for r in range(0, rows, factor)
        ]
    )
    original = pixels._ROWS_PER_BLOCK
    pixels._ROWS_PER_BLOCK = band  # bands of a few rows: the seams between them must not show
    try:
        reduced = pixels.reduce_blocks(values, factor)
        from_image = (
            pixels.reduce_blocks(Image.fromarray(values.astype(np.int32), "I"), factor) if not samples else None
        )
    finally:
        pixels._ROWS_PER_BLOCK = original
    assert reduced.dtype == np.float32 and reduced.shape == expected.shape
    assert np.allclose(reduced, expected, atol=1e-3)
    if from_image is not None:
        assert np.allclose(from_image, expected, atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["ct-16bit-rle", "png-16bit"])
def test_loading_the_largest_accepted_upload_stays_within_the_memory_budget(case: str, tmp_path: Path) -> None:
    """Memory test: a synthetic 10,000 x 10,000 upload, small on disk, loaded in a fresh process by the bench."""
    import json
    import os
    import subprocess
    import sys

    from bench.load_memory import BUDGET_MIB

    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-m", "bench.load_memory", "--worker", "medvlm", "--case", case],
        cwd=repo,
        env={**os.environ, "MEDVLM_BENCH_CACHE": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["size"][0] * result["size"][1] <= medvlm.pixels.MAX_RENDER_PIXELS
    assert result["growth_mib"] <= BUDGET_MIB, result
