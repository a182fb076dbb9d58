"""Peak memory of loading the largest accepted uploads: medvlm's loader against a plain full-size pipeline.

    python -m bench.load_memory [--repeats 2] [--cases ct-16bit,ct-16bit-rle,png-16bit,png-rgb,jpeg-rgb,dicom-rgb-rle]

Every case is a synthetic 10,000 x 10,000 image (100 megapixels, the largest size the app
accepts), built once into ``$MEDVLM_BENCH_CACHE/load-memory``. Each load runs in a fresh process
that first reads the file's bytes (the app holds them too) and then records its peak resident
memory before and after decoding: the figure is the growth, i.e. what loading costs on top of the
upload itself. ``medvlm`` is :func:`medvlm.images.load_image`; ``plain`` is what a straightforward
script does (pydicom's ``pixel_array``, then the modality LUT and the window in float64 on the
full-size frame; for rasters, the full image to float and back), measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from io import BytesIO
from pathlib import Path

import numpy as np

from bench._common import CACHE, median, paired_ratio, print_report, run_workers

SIDE = 10_000
CASES = ("ct-16bit", "ct-16bit-rle", "png-16bit", "png-rgb", "jpeg-rgb", "dicom-rgb-rle")
BUDGET_MIB = 1024
"""The budget the README states: loading any accepted upload grows the process by at most 1 GiB."""


def case_file(case: str) -> Path:
    """The synthetic file for ``case``, built on first use."""
    suffix = {"png": ".png", "jpeg": ".jpg"}.get(case.split("-")[0], ".dcm")
    path = CACHE / "load-memory" / f"{case}{suffix}"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        print(f"building {path} (once) ...", file=sys.stderr, flush=True)
        tmp = path.with_suffix(".partial")
        tmp.write_bytes(build(case))
        tmp.replace(path)
    return path


def _scan(dtype: type, channels: int = 0) -> np.ndarray:
    """A body-like disc on a dark background with a few bright blocks: compressible, not constant."""
    y, x = np.ogrid[:SIDE, :SIDE]
    inside = (x - SIDE / 2) ** 2 + (y - SIDE / 2) ** 2 < (0.4 * SIDE) ** 2
    high = 1100 if dtype is np.int16 else (60000 if dtype is np.uint16 else 200)
    arr = np.where(inside, np.asarray(high // 2, dtype=dtype), np.asarray(0, dtype=dtype)).astype(dtype)
    arr[SIDE // 3 : SIDE // 3 + SIDE // 10, SIDE // 3 : SIDE // 3 + SIDE // 10] = high
    return np.repeat(arr[..., np.newaxis], channels, axis=2) if channels else arr


def build(case: str) -> bytes:
    from PIL import Image

    if case.startswith("png-") or case.startswith("jpeg-"):
        image = (
            Image.fromarray(_scan(np.uint16)) if case == "png-16bit" else Image.fromarray(_scan(np.uint8, channels=3))
        )
        buffer = BytesIO()
        image.save(
            buffer,
            format="PNG" if case.startswith("png") else "JPEG",
            **({"quality": 90} if case.startswith("jpeg") else {}),
        )
        return buffer.getvalue()
    return _dicom(case)


def _dicom(case: str) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        CTImageStorage,
        ExplicitVRLittleEndian,
        RLELossless,
        SecondaryCaptureImageStorage,
        generate_uid,
    )

    colour = case == "dicom-rgb-rle"
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage if colour else CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT" if colour else "CT"
    ds.Rows = ds.Columns = SIDE
    if colour:
        arr = _scan(np.uint8, channels=3)
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    else:
        arr = _scan(np.int16)
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 1
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, -1024, "HU"
        ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.PixelData = arr.tobytes()
    if case.endswith("-rle"):
        ds.compress(RLELossless, arr, encoding_plugin="pylibjpeg")
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def plain_load(data: bytes) -> object:
    """The straightforward full-size pipeline (what this project did before its memory budget)."""
    from PIL import Image
    from pydicom import dcmread
    from pydicom.pixels import apply_modality_lut, apply_windowing

    if data[128:132] == b"DICM":
        ds = dcmread(BytesIO(data))
        arr = ds.pixel_array
        if ds.SamplesPerPixel == 1:
            values = apply_windowing(apply_modality_lut(arr, ds).astype(np.float64), ds)
            low, high = float(values.min()), float(values.max())
            arr = ((values - low) * (255 / ((high - low) or 1))).astype(np.uint8)
        return Image.fromarray(arr).convert("RGB")
    image = Image.open(BytesIO(data))
    if image.mode.startswith("I;16"):
        values = np.asarray(image, dtype=np.float64)
        return Image.fromarray(((values - values.min()) * (255 / (np.ptp(values) or 1))).astype(np.uint8)).convert(
            "RGB"
        )
    return image.convert("RGB")


def worker(variant: str, case: str) -> None:
    from medvlm.images import load_image

    data = case_file(case).read_bytes()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    if variant == "medvlm":
        loaded = load_image(data)
        size = loaded.image.size
    else:
        size = plain_load(data).size
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "growth_mib": round(peak - before, 1),
                "seconds": round(seconds, 2),
                "size": list(size),
                "file_mib": round(len(data) / 2**20, 1),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.case)
        return
    rows = []
    for case in args.cases.split(","):
        path = case_file(case)
        results = run_workers("bench.load_memory", ["plain", "medvlm"], args.repeats, extra=["--case", case])
        plain, ours = ([r["growth_mib"] for r in results[v]] for v in ("plain", "medvlm"))
        rows.append(
            [
                case,
                f"{path.stat().st_size / 2**20:,.1f} MiB",
                f"{median(plain):,.0f} MiB, {median([r['seconds'] for r in results['plain']]):.1f} s",
                f"{median(ours):,.0f} MiB, {median([r['seconds'] for r in results['medvlm']]):.1f} s",
                "x".join(str(side) for side in results["medvlm"][0]["size"]),
                f"{paired_ratio(ours, plain):.2f}",
                "yes" if max(ours) <= BUDGET_MIB else "**no**",
            ]
        )
    print_report(
        f"Peak memory of loading a {SIDE:,} x {SIDE:,} upload (growth over the process after reading the file)",
        rows,
        [
            "case",
            "file",
            "plain pipeline: peak growth, time",
            "medvlm: peak growth, time",
            "medvlm image",
            "ratio",
            f"within {BUDGET_MIB} MiB",
        ],
        notes=[f"medians of {args.repeats} fresh processes per variant, interleaved"],
    )


if __name__ == "__main__":
    main()
