"""Helpers shared by the test files that launch the app (gradio_client and browser tests).

Not fixtures: plain functions, imported by name (``from helpers import launch, upload``); pytest
puts this folder on ``sys.path``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import types
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import numpy as np
from gradio_client import Client, handle_file
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from medvlm.annotations import ModelOutput
from medvlm.ui import AppConfig, Workbench, build_demo
from medvlm.ui.handlers import AskUpdate, CaseShown

REPO = Path(__file__).resolve().parents[1]
SECRETS = ("SECRETNAME", "Doe^Jane", "PID-SECRET-4711", "SECRET Institution of Radiology", "19450203")
"""The identity written into :func:`identified_ct`: none of it may appear anywhere the app writes."""

LAYOUT_ONLY = ("dicom_controls", "custom_window")
"""Outputs that are layout blocks (a Group, a Row): gradio_client returns no value for them."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(workbench: Workbench):
    """Build and launch the app as ``app.py`` does, on a free port, without blocking."""
    demo = build_demo(workbench)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_port=free_port(), quiet=True)
    return demo, url


@contextlib.contextmanager
def running_app(config: AppConfig) -> Iterator[types.SimpleNamespace]:
    """The app started as ``app.py`` starts it (``Workbench.start``), launched; ``.url`` and ``.workbench``."""
    workbench = Workbench.start(config)
    demo, url = launch(workbench)
    try:
        yield types.SimpleNamespace(url=url, workbench=workbench)
    finally:
        demo.close()
        workbench.close()


def client(url: str, **kwargs) -> Client:
    return Client(url, verbose=False, analytics_enabled=False, **kwargs)


def generation_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "medvlm-generate"]


def named(result: tuple, event: type[tuple]) -> dict:
    """An API result as {field: value}, by the handler's NamedTuple (the same one the layout wires)."""
    fields = [name for name in event._fields if name not in LAYOUT_ONLY]
    return dict(zip(fields, result, strict=True))


def upload(user: Client, path: Path) -> dict:
    return named(user.predict(handle_file(str(path)), api_name="/load_file"), CaseShown)


def review(
    user: Client, shown: dict, flags: list[str], comment: str = "", correct: str | None = None, name: str = "Dr API"
) -> str:
    """Save a review as the page does: naming the answer on screen by its output id."""
    return user.predict(flags, comment, correct, name, shown["output_id"], api_name="/submit_review")


def ask(user: Client, question: str, options: list[str], **settings):
    """Submit a question; returns the job (iterate it or call ``outputs()`` for every streamed update)."""
    settings.setdefault("max_new_tokens", 48)
    return user.submit(question=question, options="\n".join(options), api_name="/ask", **settings)


def answered(job) -> dict:
    """The last update of an ask job, by field."""
    return named(job.result(), AskUpdate)


def identified_ct(path: Path) -> Path:
    """A CT-like DICOM whose header names a patient, an institution and a birth date."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.BodyPartExamined = "CHEST"
    ds.PatientName = "Doe^Jane^SECRETNAME"
    ds.PatientID = "PID-SECRET-4711"
    ds.InstitutionName = SECRETS[3]
    ds.PatientBirthDate = SECRETS[4]
    ds.StudyDescription = "CT chest for Doe^Jane^SECRETNAME"
    hounsfield = np.linspace(-1000, 1000, 64 * 64).reshape(64, 64)
    ds.set_pixel_data((hounsfield + 1024).astype(np.uint16), "MONOCHROME2", 12)
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.WindowCenter, ds.WindowWidth = 40, 400
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    path.write_bytes(buffer.getvalue())
    return path


def model_output(output_id: str):
    """A plausible model output to store a review against, when what it says does not matter."""
    return ModelOutput(
        output_id=output_id,
        image=Image.new("RGB", (32, 32)),
        image_metadata={"source_format": "PNG", "width": 32, "height": 32},
        question="Which organ?",
        options=["Liver", "Lung"],
        correct_answer=None,
        completion="<think>x</think><answer>A</answer>",
        reasoning="x",
        answer_text="A",
        letter="A",
        format_ok=True,
        problem=None,
        stop_reason="eos",
        model={"model": "tiny"},
        settings={},
        prompt_style="medvlm",
        timing=None,
        generated_at="2026-01-01T00:00:00+00:00",
    )
