"""Rebuild the example cases in this folder from test data bundled with pydicom.

    python assets/build_examples.py

Each example is a copy of a DICOM that ships inside the pydicom package (MIT licensed), with its
identifying tags removed or replaced, so that the examples model good practice. Provenance of
every file is in ``assets/README.md``; the questions are in ``assets/examples.json``.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file

HERE = Path(__file__).resolve().parent

#: file written here -> pydicom test file it comes from
SOURCES = {
    "ct_head.dcm": "J2K_pixelrep_mismatch.dcm",
    "ct_chest.dcm": "CT_small.dcm",
    "mr_abdomen.dcm": "examples_overlay.dcm",
}

#: Tags that identify a person or a place; removed from the copies.
IDENTIFYING_KEYWORDS = (
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "PatientAddress",
    "OtherPatientIDs",
    "OtherPatientNames",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
    "PhysiciansOfRecord",
    "AccessionNumber",
    "StationName",
    "StudyID",
    "DeviceSerialNumber",
    "RequestingPhysician",
)


def deidentify(dataset: pydicom.Dataset, label: str) -> pydicom.Dataset:
    """Replace the patient's name and ID with a label and drop the other identifying tags."""
    dataset.remove_private_tags()
    for keyword in IDENTIFYING_KEYWORDS:
        if keyword in dataset:
            delattr(dataset, keyword)
    dataset.PatientName = "Example^" + label
    dataset.PatientID = label
    dataset.PatientIdentityRemoved = "YES"
    return dataset


def main() -> None:
    for target, source in SOURCES.items():
        dataset = pydicom.dcmread(get_testdata_file(source))
        deidentify(dataset, Path(target).stem.upper()).save_as(HERE / target)
        print(f"wrote {target} from pydicom's {source}")


if __name__ == "__main__":
    main()
