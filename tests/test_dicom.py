"""DICOM rendering: pydicom's bundled samples, synthetic files with known values, privacy, failures."""

from __future__ import annotations

import logging
import os
import warnings
from io import BytesIO
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import dcmwrite
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    MPEG2MPML,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

import medvlm.dicom
import medvlm.pixels
from medvlm.dicom import WINDOW_PRESETS, Window, is_dicom, render_dicom
from medvlm.errors import ImageLoadError
from medvlm.images import MAX_PIXELS, LoadedImage, load_image

SECRETS = (
    "Doe^Jane-SECRET",
    "PID-SECRET-123",
    "SECRET General Hospital",
    "19700101",
    "Dr^SECRET^Referrer",
    "ACC-SECRET-9",
)


def sample(name: str) -> Path:
    """A file bundled with pydicom (never downloaded: the tests run offline)."""
    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} is not bundled with this pydicom"
    return Path(path)


def pixels(loaded: LoadedImage) -> np.ndarray:
    return np.asarray(loaded.image).astype(int)


def make_dicom(
    values: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 16,
    syntax: str = ExplicitVRLittleEndian,
    preamble: bool = True,
    patient: bool = False,
    **elements: object,
) -> bytes:
    """A DICOM built from ``values`` (rows x cols, or frames x rows x cols), with extra ``elements``."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.SOPClassUID = CTImageStorage
    ds.Modality = "CT"
    ds.set_pixel_data(values, photometric, bits_stored)
    ds.file_meta.TransferSyntaxUID = syntax  # set_pixel_data may pick another
    if patient:
        ds.PatientName = SECRETS[0]
        ds.PatientID = SECRETS[1]
        ds.InstitutionName = SECRETS[2]
        ds.PatientBirthDate = SECRETS[3]
        ds.ReferringPhysicianName = SECRETS[4]
        ds.AccessionNumber = SECRETS[5]
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=preamble)
    return buffer.getvalue()


def hu_image(hu: list[float]) -> bytes:
    """A one-row CT whose pixels are the given Hounsfield units (stored = HU + 1024)."""
    stored = np.array([hu], dtype=np.int16) + 1024
    return make_dicom(stored, RescaleIntercept=-1024, RescaleSlope=1)


# --- Window ------------------------------------------------------------------------------------


def test_presets_are_the_documented_values() -> None:
    assert WINDOW_PRESETS == {
        "brain": (40, 80),
        "subdural": (75, 215),
        "stroke": (40, 40),
        "lung": (-600, 1500),
        "mediastinum": (50, 350),
        "abdomen": (50, 400),
        "liver": (30, 150),
        "bone": (400, 1800),
    }


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        (Window(), None),
        (Window(preset="lung"), (-600, 1500, "lung")),
        (Window(center=10, width=20), (10, 20, "custom")),
    ],
)
def test_window_requested(window: Window, expected: tuple | None) -> None:
    assert window.requested() == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"preset": "lungs!"}, "Valid presets: abdomen, bone, brain, liver, lung, mediastinum, stroke, subdural."),
        ({"center": 40}, "Give both a window centre and a window width"),
        ({"width": 80}, "Give both a window centre and a window width"),
        ({"center": 40, "width": 0}, "must be greater than 0 (got 0)"),
        ({"center": 40, "width": -5}, "must be greater than 0 (got -5)"),
        ({"center": float("nan"), "width": 80}, "finite"),
        ({"preset": "brain", "center": 40, "width": 80}, "not both"),
    ],
)
def test_bad_windows_are_refused_on_creation(kwargs: dict, message: str) -> None:
    with pytest.raises(ImageLoadError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Window(**kwargs)


# --- Bundled samples ---------------------------------------------------------------------------


def test_ct_small_is_hounsfield_and_presets_change_the_picture() -> None:
    brain = load_image(sample("CT_small.dcm"), window=Window(preset="brain"))
    lung = load_image(sample("CT_small.dcm"), window=Window(preset="lung"))
    meta = brain.metadata
    assert (meta.source_format, meta.modality, meta.hounsfield, meta.photometric) == (
        "DICOM",
        "CT",
        True,
        "MONOCHROME2",
    )
    assert (meta.window_name, meta.window_center, meta.window_width) == ("brain", 40, 80)
    assert (meta.width, meta.height) == brain.image.size == (128, 128)
    assert lung.metadata.window_name == "lung"
    assert np.abs(pixels(brain) - pixels(lung)).mean() > 20


def test_ct_small_without_a_file_window_uses_the_full_range() -> None:
    loaded = load_image(sample("CT_small.dcm"))
    assert loaded.metadata.window_name == "full range"
    grey = pixels(loaded)[..., 0]
    assert grey.min() == 0 and grey.max() == 255


def test_mr_uses_the_files_own_window() -> None:
    meta = load_image(sample("MR_small.dcm")).metadata
    assert (meta.modality, meta.hounsfield) == ("MR", False)
    assert (meta.window_name, meta.window_center, meta.window_width) == ("file", 600, 1600)


@pytest.mark.parametrize(
    "name",
    [
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm",
        "MR_small_expb.dcm",
    ],
)
def test_lossless_encodings_render_identically(name: str) -> None:
    assert np.array_equal(pixels(load_image(sample(name))), pixels(load_image(sample("MR_small.dcm"))))


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "JPGExtended.dcm", "693_J2KI.dcm", "JPEGLSNearLossless_16.dcm"])
def test_other_compressed_greyscale_samples_render(name: str) -> None:
    loaded = load_image(sample(name))
    assert loaded.image.mode == "RGB" and min(loaded.image.size) > 0


# Centre of each 10-row band of the SC_rgb test pattern, as stored in the lossless RLE file.
RGB_BANDS = [
    (255, 0, 0),
    (255, 128, 128),
    (0, 255, 0),
    (128, 255, 128),
    (0, 0, 255),
    (128, 128, 255),
    (0, 0, 0),
    (64, 64, 64),
    (192, 192, 192),
    (255, 255, 255),
]


@pytest.mark.parametrize(
    "name",
    [
        "SC_rgb_rle.dcm",
        "SC_rgb_rle_16bit.dcm",
        "SC_rgb_rle_32bit.dcm",
        "SC_rgb_jpeg_dcmtk.dcm",  # JPEG, YBR_FULL
        "SC_rgb_dcmtk_+eb+cy+np.dcm",  # JPEG, YBR_FULL_422
        "SC_rgb_jpeg_gdcm.dcm",
        "SC_ybr_full_422_uncompressed.dcm",
        "SC_rgb_jls_lossy_line.dcm",
    ],
)
def test_colour_samples_show_the_rgb_test_pattern(name: str) -> None:
    loaded = load_image(sample(name))
    rgb = pixels(loaded)
    assert loaded.metadata.window_name is None and loaded.metadata.hounsfield is False
    for band, colour in enumerate(RGB_BANDS):
        assert np.abs(rgb[band * 10 + 5, 50] - colour).max() <= 8, (band, rgb[band * 10 + 5, 50])


def test_ybr_ultrasound_is_converted_to_rgb() -> None:
    loaded = load_image(sample("examples_ybr_color.dcm"))
    rgb = pixels(loaded)
    assert loaded.metadata.photometric == "YBR_FULL_422"
    # A grey echo: R, G and B agree once YCbCr is converted (unconverted, G and B would sit near 128).
    assert np.abs(rgb[..., 0] - rgb[..., 2]).mean() < 2


def test_rgb_ultrasound() -> None:
    loaded = load_image(sample("examples_rgb_color.dcm"))
    assert (loaded.metadata.photometric, loaded.image.size) == ("RGB", (320, 240))


def test_palette_colour_goes_through_the_lut() -> None:
    loaded = load_image(sample("examples_palette.dcm"))
    rgb = pixels(loaded)
    assert loaded.metadata.photometric == "PALETTE COLOR"
    assert (np.abs(rgb[..., 0] - rgb[..., 1]) > 20).mean() > 0.05  # really coloured, not grey


def test_multiframe_sample_defaults_to_the_middle_frame() -> None:
    meta = load_image(sample("rtdose.dcm")).metadata
    assert (meta.frame_count, meta.frame_index) == (15, 7)
    with pytest.raises(ImageLoadError, match="There is no frame 16: this DICOM has 15 frames, numbered 1 to 15"):
        load_image(sample("rtdose.dcm"), frame=15)


def test_two_frame_colour_sample_frames_differ() -> None:
    first = load_image(sample("SC_rgb_rle_2frame.dcm"), frame=0)
    second = load_image(sample("SC_rgb_rle_2frame.dcm"))
    assert (second.metadata.frame_count, second.metadata.frame_index) == (2, 1)
    assert not np.array_equal(pixels(first), pixels(second))


def test_truncated_dicom_says_it_is_truncated() -> None:
    with pytest.raises(
        ImageLoadError,
        match="^This DICOM file is truncated: it describes an image, but its pixel data is missing or cut off",
    ):
        load_image(sample("MR_truncated.dcm"))


@pytest.mark.parametrize("name", ["rtplan.dcm", "test-SR.dcm", "waveform_ecg.dcm"])
def test_dicom_without_pixels(name: str) -> None:
    with pytest.raises(
        ImageLoadError, match=r"^This DICOM has no pixel data \(is it a structured report or RT plan\?\)\.$"
    ):
        load_image(sample(name))


ALL_SAMPLES = sorted(path for path in get_testdata_files() if os.path.isfile(path))


@pytest.mark.parametrize("path", ALL_SAMPLES, ids=lambda path: os.path.relpath(path, sample("CT_small.dcm").parent))
def test_every_bundled_file_renders_or_fails_cleanly(path: str) -> None:
    try:
        loaded = load_image(path)
    except ImageLoadError as error:
        assert str(error) and "Traceback" not in str(error)
        return
    assert loaded.image.mode == "RGB" and min(loaded.image.size) > 0
    assert (loaded.metadata.width, loaded.metadata.height) == loaded.image.size


# --- Synthetic files with known values ---------------------------------------------------------


def test_custom_window_maps_a_hu_ramp_to_known_values() -> None:
    hu = [-10, 0, 40, 80, 120, 160, 200, 250]
    loaded = load_image(hu_image(hu), window=Window(center=100, width=200))
    assert pixels(loaded)[0, :, 0].tolist() == [0, 0, 51, 102, 153, 204, 255, 255]
    meta = loaded.metadata
    assert (meta.window_name, meta.window_center, meta.window_width, meta.hounsfield) == ("custom", 100, 200, True)


def test_a_ct_preset_on_an_image_not_in_hounsfield_units_is_refused() -> None:
    """The presets are Hounsfield units: on an MR they would pick an arbitrary band of its values."""
    with pytest.raises(
        ImageLoadError, match=r"The lung window is a CT preset in Hounsfield units, and this image \(MR\)"
    ):
        load_image(sample("MR_small.dcm"), window=Window(preset="lung"))
    assert load_image(sample("MR_small.dcm"), window=Window(center=600, width=1200)).metadata.window_name == "custom"


@pytest.mark.parametrize(
    ("name", "photometric"), [("examples_rgb_color.dcm", "RGB"), ("examples_palette.dcm", "PALETTE")]
)
def test_a_preset_or_custom_window_on_a_colour_dicom_is_refused_not_silently_ignored(
    name: str, photometric: str
) -> None:
    """A colour ultrasound has no values to window: `--window lung` on it used to be accepted and change nothing."""
    for window in (Window(preset="lung"), Window(center=40, width=400)):
        with pytest.raises(ImageLoadError, match=rf"^Only a greyscale DICOM .* colour pixels \({photometric}"):
            load_image(sample(name), window=window)
    assert load_image(sample(name), window=Window()).metadata.window_name is None  # its own colours: fine
    assert load_image(sample(name), window=Window(automatic=True)).metadata.window_name is None


def test_preset_window_on_hounsfield_units() -> None:
    loaded = load_image(hu_image([-1000, 0, 20, 60, 80, 1000]), window=Window(preset="brain"))
    assert pixels(loaded)[0, :, 0].tolist() == [0, 0, 64, 191, 255, 255]


def test_file_window_first_value_is_used() -> None:
    stored = np.array([[-1000, 0, 40, 1000]], dtype=np.int16) + 1024
    data = make_dicom(stored, RescaleIntercept=-1024, RescaleSlope=1, WindowCenter=[40, 400], WindowWidth=[80, 2000])
    loaded = load_image(data)
    assert (loaded.metadata.window_name, loaded.metadata.window_center, loaded.metadata.window_width) == (
        "file",
        40,
        80,
    )
    grey = pixels(loaded)[0, :, 0].tolist()
    assert grey[0] == 0 and grey[-1] == 255 and 120 < grey[2] < 136


def test_voi_lut_sequence_is_applied() -> None:
    item = Dataset()
    item.add_new(0x00283002, "US", [256, 0, 8])  # LUT Descriptor: 256 entries from 0, 8 bits
    item.add_new(0x00283006, "US", list(range(255, -1, -1)))  # LUT Data: an inverting LUT
    values = np.array([[0, 10, 200, 255]], dtype=np.uint16)
    loaded = load_image(make_dicom(values, Modality="MR", VOILUTSequence=[item]))
    assert loaded.metadata.window_name == "file VOI LUT"
    assert pixels(loaded)[0, :, 0].tolist() == [255, 245, 55, 0]


def test_full_range_when_the_file_has_no_window() -> None:
    loaded = load_image(make_dicom(np.array([[100, 150, 300]], dtype=np.uint16), Modality="MR"))
    meta = loaded.metadata
    assert (meta.window_name, meta.window_center, meta.window_width) == ("full range", 200, 200)
    assert pixels(loaded)[0, :, 0].tolist() == [0, 64, 255]


def test_monochrome1_is_inverted() -> None:
    ramp = np.arange(0, 1000, 10, dtype=np.uint16).reshape(10, 10)
    mono2 = pixels(load_image(make_dicom(ramp, photometric="MONOCHROME2")))
    mono1 = load_image(make_dicom(ramp, photometric="MONOCHROME1"))
    assert mono1.metadata.photometric == "MONOCHROME1"
    assert mono2[0, 0, 0] == 0 and mono2[-1, -1, 0] == 255
    assert np.array_equal(pixels(mono1), 255 - mono2)


def test_multiframe_frames_and_range() -> None:
    frames = np.stack([np.full((4, 6), 100 * index, dtype=np.uint16) for index in range(5)])
    data = make_dicom(frames)
    window = Window(center=250, width=500)
    middle = load_image(data, window=window)
    assert (middle.metadata.frame_count, middle.metadata.frame_index) == (5, 2)
    assert pixels(middle)[0, 0, 0] == 102
    assert pixels(load_image(data, window=window, frame=4))[0, 0, 0] == 204
    for frame in (5, -1):
        with pytest.raises(
            ImageLoadError, match=f"There is no frame {frame + 1}: this DICOM has 5 frames, numbered 1 to 5."
        ):
            load_image(data, frame=frame)


def test_single_frame_out_of_range() -> None:
    with pytest.raises(ImageLoadError, match="single frame"):
        load_image(hu_image([0, 1]), frame=1)


def test_enhanced_multiframe_functional_groups() -> None:
    """Enhanced CT keeps rescale and window in functional groups, per frame."""
    transform = Dataset()
    transform.RescaleIntercept = -1024
    transform.RescaleSlope = 1
    transform.RescaleType = "HU"
    shared = Dataset()
    shared.PixelValueTransformationSequence = [transform]
    per_frame = []
    for center in (40, 400):
        voi = Dataset()
        voi.WindowCenter = center
        voi.WindowWidth = 80
        group = Dataset()
        group.FrameVOILUTSequence = [voi]
        per_frame.append(group)
    frames = np.stack([np.full((2, 2), 1024 + 40, dtype=np.uint16)] * 2)
    data = make_dicom(frames, SharedFunctionalGroupsSequence=[shared], PerFrameFunctionalGroupsSequence=per_frame)
    meta = load_image(data, frame=1).metadata
    assert (meta.hounsfield, meta.window_name, meta.window_center) == (True, "file", 400)
    assert load_image(data, frame=0).metadata.window_center == 40


def test_extensionless_and_misnamed_dicom_files(tmp_path: Path) -> None:
    data = hu_image([0, 100])
    for name in ("IM000001", "scan.png"):
        path = tmp_path / name
        path.write_bytes(data)
        assert load_image(path).metadata.source_format == "DICOM"
        assert load_image(str(path)).metadata.modality == "CT"


def test_preamble_less_dicoms_are_recognised() -> None:
    with_meta = make_dicom(np.zeros((2, 2), dtype=np.uint16), preamble=False)
    assert with_meta[:2] == b"\x02\x00"
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.set_pixel_data(np.zeros((2, 2), dtype=np.uint16), "MONOCHROME2", 16)
    del ds.file_meta
    buffer = BytesIO()
    dcmwrite(buffer, ds, implicit_vr=True, little_endian=True, enforce_file_format=False)
    bare = buffer.getvalue()
    assert bare[:2] == b"\x08\x00"
    for data in (with_meta, bare):
        assert is_dicom(data)
        assert load_image(data).image.size == (2, 2)


@pytest.mark.parametrize(
    "data",
    [b"", b"\x08\x00" + b"junk" * 40, b"\x89PNG\r\n\x1a\n" + b"\x00" * 200, b"hello, world\n" * 20],
)
def test_is_dicom_rejects_non_dicom(data: bytes) -> None:
    assert not is_dicom(data)


def test_render_dicom_refuses_non_dicom() -> None:
    with pytest.raises(ImageLoadError, match="not a DICOM or image file"):
        render_dicom(b"plain text, not a scan" * 10)


def test_oversize_header_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_dicom(np.zeros((2, 2), dtype=np.uint16), Rows=20000, Columns=20000)
    monkeypatch.setattr(medvlm.dicom, "pixel_array", lambda *args, **kwargs: pytest.fail("decoded an oversize image"))
    with pytest.raises(
        ImageLoadError, match=f"20,000 x 20,000 = 400,000,000 pixels, over the limit of {MAX_PIXELS:,} pixels"
    ):
        load_image(data)


def test_missing_decoder_names_the_syntax_and_the_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(medvlm.dicom, "get_decoder", lambda uid: SimpleNamespace(is_available=False))
    with pytest.raises(ImageLoadError, match=r"'RLE Lossless' transfer syntax.*pip install pylibjpeg"):
        load_image(sample("MR_small_RLE.dcm"))


def test_a_panicking_decoder_is_a_clean_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """pylibjpeg-rle is written in Rust: on some corrupt data it panics with a BaseException."""

    class PanicException(BaseException):
        pass

    def panic(*args: object, **kwargs: object) -> None:
        raise PanicException("index out of bounds")

    monkeypatch.setattr(medvlm.dicom, "pixel_array", panic)
    with pytest.raises(ImageLoadError, match="image data is corrupt and could not be decoded"):
        load_image(sample("MR_small_RLE.dcm"))


def test_video_transfer_syntax_is_refused() -> None:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.SOPClassUID = CTImageStorage
    ds.set_pixel_data(np.zeros((2, 2), dtype=np.uint8), "MONOCHROME2", 8)
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(12)])
    ds["PixelData"].VR = "OB"
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    with pytest.raises(
        ImageLoadError, match="'MPEG2 Main Profile / Main Level' transfer syntax, which this workbench cannot decode"
    ):
        load_image(buffer.getvalue())


def test_unsupported_pixel_format() -> None:
    data = make_dicom(
        np.zeros((2, 2, 3), dtype=np.uint8), photometric="RGB", bits_stored=8, PhotometricInterpretation="HSV"
    )
    with pytest.raises(
        ImageLoadError, match="pixel format is not supported .photometric interpretation HSV, 3 samples"
    ):
        load_image(data)


def test_implicit_little_endian_file() -> None:
    loaded = load_image(make_dicom(np.array([[0, 1000]], dtype=np.uint16), syntax=ImplicitVRLittleEndian))
    assert pixels(loaded)[0, :, 0].tolist() == [0, 255]


# --- Privacy -----------------------------------------------------------------------------------


def _assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text
    assert "SECRET" not in text


def test_patient_data_never_leaves_the_module(caplog: pytest.LogCaptureFixture) -> None:
    values = np.arange(12, dtype=np.uint16).reshape(3, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns while *we* write the misfiled names below
        data = make_dicom(values, patient=True, BodyPartExamined="Doe^Jane-SECRET")
        failing = [
            (data, {"frame": 9}),
            (data[:-10], {}),
            (make_dicom(values, patient=True, Rows=20000, Columns=20000), {}),
            (make_dicom(values, patient=True, PhotometricInterpretation="Doe^Jane-SECRET"), {}),
            (make_dicom(values, patient=True, SamplesPerPixel=3), {}),
        ]
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_image(data)
        messages = []
        for source, kwargs in failing:
            with pytest.raises(ImageLoadError) as error:
                load_image(source, **kwargs)
            messages.append(str(error.value))
    assert loaded.metadata.body_part is None  # not a Code String: never shown
    assert len(set(messages)) == len(failing)
    for text in (
        repr(loaded),
        str(loaded.metadata.to_dict()),
        *messages,
        caplog.text,
        *(str(w.message) for w in caught),
    ):
        _assert_no_secret(text)


def test_metadata_has_only_whitelisted_fields() -> None:
    fields = set(load_image(sample("CT_small.dcm")).metadata.to_dict())
    assert fields == {
        "source_format", "width", "height", "modality", "body_part", "frame_count", "frame_index",
        "window_center", "window_width", "window_name", "photometric", "hounsfield",
        "original_width", "original_height",
    }  # fmt: skip


# --- Robustness --------------------------------------------------------------------------------

MR_SMALL = sample("MR_small.dcm").read_bytes()


@pytest.mark.filterwarnings("ignore:VR lookup failed:UserWarning")  # pydicom on random bytes, as expected
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(MR_SMALL) - 1), st.integers(0, 255)), min_size=1, max_size=8))
def test_corrupted_dicom_bytes_only_raise_image_load_error(edits: list[tuple[int, int]]) -> None:
    data = bytearray(MR_SMALL)
    for position, value in edits:
        data[position] = value
    try:
        loaded = load_image(bytes(data))
    except ImageLoadError:
        return
    assert loaded.image.mode == "RGB"


@pytest.mark.filterwarnings("ignore:VR lookup failed:UserWarning")  # pydicom on random bytes, as expected
@settings(max_examples=60, deadline=None)
@given(st.sampled_from([bytes(128) + b"DICM", b"\x08\x00", b"\x02\x00", b"\x00\x08"]), st.binary(max_size=600))
def test_random_dicom_like_bytes_only_raise_image_load_error(prefix: bytes, tail: bytes) -> None:
    try:
        load_image(prefix + tail)
    except ImageLoadError:
        pass


# --- Damage, shape and size (the hostile-input campaign) -----------------------------------------


@pytest.mark.filterwarnings("ignore:VR lookup failed:UserWarning")  # pydicom on random bytes, as expected
def test_random_bytes_after_the_dicm_marker_are_called_corrupt() -> None:
    rng = np.random.default_rng(7)
    for tail in (b"", rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()):
        with pytest.raises(
            ImageLoadError,
            match="^This file starts like a DICOM file .* but what follows is not a readable DICOM dataset",
        ):
            load_image(bytes(128) + b"DICM" + tail)


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "MR_small_RLE.dcm"])
def test_compressed_dicom_cut_inside_its_pixel_data_says_truncated(name: str) -> None:
    data = sample(name).read_bytes()
    pixel_data = data.rfind(b"\xe0\x7f\x10\x00")  # the Pixel Data tag, little endian
    cut = pixel_data + (len(data) - pixel_data) // 2
    with pytest.raises(
        ImageLoadError,
        match="^This DICOM file is truncated: it describes an image, but its pixel data is missing or cut off",
    ):
        load_image(data[:cut])


def test_native_dicom_cut_inside_its_pixel_data_says_truncated() -> None:
    data = sample("CT_small.dcm").read_bytes()
    with pytest.raises(ImageLoadError, match="^This DICOM file is truncated"):
        load_image(data[:-5000])


def test_unknown_transfer_syntax_says_it_cannot_be_decoded() -> None:
    data = make_dicom(np.zeros((8, 8), dtype=np.uint16))
    data = data.replace(
        ExplicitVRLittleEndian.encode(), b"1.2.3.4.5.6.7.8.9.1", 1
    )  # same length: the file stays well-formed
    with pytest.raises(
        ImageLoadError,
        match=r"^This DICOM declares transfer syntax 1\.2\.3\.4\.5\.6\.7\.8\.9\.1, which is not a known DICOM "
        r"transfer syntax, so its image cannot be decoded",
    ):
        load_image(data)


@pytest.mark.parametrize(("rows", "columns"), [(1, 5000), (3000, 2)])
def test_elongated_dicom_is_refused_at_load(rows: int, columns: int) -> None:
    data = make_dicom(np.zeros((rows, columns), dtype=np.uint16))
    with pytest.raises(
        ImageLoadError, match=f"is {columns:,} x {rows:,} pixels: one side is more than 200 times the other"
    ):
        load_image(data)


def test_reduced_ct_equals_the_window_of_the_block_mean(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydicom import dcmread
    from pydicom.pixels import apply_modality_lut

    ds = dcmread(sample("CT_small.dcm"))
    hu = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    means = hu.reshape(64, 2, 64, 2).mean(axis=(1, 3))
    center, width = WINDOW_PRESETS["brain"]
    expected = np.clip(np.rint((means - (center - width / 2)) / width * 255), 0, 255)
    monkeypatch.setattr(medvlm.pixels, "MAX_RENDER_PIXELS", 64 * 64)
    loaded = load_image(sample("CT_small.dcm"), window=Window(preset="brain"))
    meta = loaded.metadata
    assert (meta.width, meta.height, meta.original_width, meta.original_height) == (64, 64, 128, 128)
    assert meta.window_name == "brain" and meta.hounsfield
    assert np.abs(pixels(loaded)[..., 0] - expected).max() <= 1


@pytest.mark.parametrize(
    "name", ["examples_rgb_color.dcm", "examples_palette.dcm", "examples_ybr_color.dcm", "MR_small.dcm"]
)
def test_every_kind_of_dicom_reduces_to_its_block_means(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    full = pixels(load_image(sample(name))).astype(float)
    monkeypatch.setattr(medvlm.pixels, "MAX_RENDER_PIXELS", (full.shape[0] * full.shape[1]) // 4)
    reduced = pixels(load_image(sample(name)))
    rows, columns = full.shape[:2]
    assert reduced.shape[:2] == (-(-rows // 2), -(-columns // 2))
    means = np.array(
        [
            [full[r : r + 2, c : c + 2].reshape(-1, 3).mean(axis=0) for c in range(0, columns, 2)]
            for r in range(0, rows, 2)
        ]
    )
    # Averaging before or after the 8-bit display mapping differs by rounding (and, for a file window, by clipping).
    assert np.abs(reduced - means).mean() < 2


def test_dicom_out_of_memory_is_reported_as_what_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    def exhausted(*args: object, **kwargs: object) -> None:
        raise MemoryError

    monkeypatch.setattr(medvlm.dicom, "reduce_blocks", exhausted)
    with pytest.raises(ImageLoadError, match="^The server ran out of memory while loading this 128 x 128 pixel image"):
        load_image(sample("CT_small.dcm"))


def test_automatic_window_spans_the_values_and_ignores_the_files_window() -> None:
    """An MR whose stored window is poor: "Automatic" spans the 1st to 99th percentile of its values."""
    values = np.arange(101, dtype=np.uint16).reshape(1, 101) * 10  # 0, 10, ..., 1000
    data = make_dicom(values, Modality="MR", WindowCenter=5000, WindowWidth=10)  # a window that shows all black
    assert pixels(load_image(data))[0, :, 0].max() == 0
    loaded = load_image(data, window=Window(automatic=True))
    meta = loaded.metadata
    assert (meta.window_name, meta.window_center, meta.window_width) == ("automatic", 500, 980)
    grey = pixels(loaded)[0, :, 0].tolist()
    assert grey[0] == 0 and grey[-1] == 255 and 120 < grey[50] < 136
    with pytest.raises(ImageLoadError, match="not several"):
        Window(automatic=True, preset="brain")
