"""Helpers shared by the test files: launching the app and driving it, and builders of model outputs
and DICOMs.

Not fixtures: plain functions, imported by name (``from helpers import launch, upload``); pytest
puts this folder on ``sys.path``. Gradio and the app load only when a helper that needs them runs,
so the store's worker processes that import this module stay light.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import socket
import threading
import types
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from medvlm.annotations import ModelOutput
from medvlm.pixels import SafeMetadata

if TYPE_CHECKING:
    from gradio_client import Client

    from medvlm.ui import AppConfig, Workbench

REPO = Path(__file__).resolve().parents[1]
SECRETS = ("SECRETNAME", "Doe^Jane", "PID-SECRET-4711", "SECRET Institution of Radiology", "19450203")
"""The identity written into :func:`identified_ct`: none of it may appear anywhere the app writes."""

NOT_RETURNED = (
    "dicom_controls",
    "custom_window",
    "review_panel",
    "submit_next",
    "ask_button",
    "second_review_panel",
    "verdict_panel",
    "campaign_review_form",
    "campaign_pair_panel",
    "probe_panel",
    "probe_button",
)
"""Outputs gradio_client returns no value for: layout blocks (a Row, a Column) and buttons."""


def chromium_path() -> str | None:
    """Debian's Chromium (or ``$MEDVLM_CHROMIUM``) for Playwright, whose own browser download cannot run here.

    None when there is none to run, a ``$MEDVLM_CHROMIUM`` naming no program included (it is not silently passed
    over for another browser: the run stops before its first test, saying so, ``tests/conftest.py``).
    """
    named = os.environ.get("MEDVLM_CHROMIUM")
    if named:
        return shutil.which(named)  # a path, or a name on the PATH; None when it is no program
    return shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(workbench: Workbench):
    """Build and launch the app as ``app.py`` does, on a free port, without blocking."""
    from medvlm.ui import build_demo

    demo = build_demo(workbench)
    settings = workbench.config.launch_kwargs()  # the login page and the page's CSS, as app.py sets them up
    _, url, _ = demo.launch(
        prevent_thread_lock=True, server_port=free_port(), quiet=True, auth=settings["auth"], css=settings["css"]
    )
    return demo, url


@contextlib.contextmanager
def running_app(config: AppConfig) -> Iterator[types.SimpleNamespace]:
    """The app started as ``app.py`` starts it (``Workbench.start``), launched; ``.url`` and ``.workbench``."""
    from medvlm.ui import Workbench

    workbench = Workbench.start(config)
    demo, url = launch(workbench)
    try:
        yield types.SimpleNamespace(url=url, workbench=workbench)
    finally:
        demo.close()
        workbench.close()


def client(url: str, **kwargs) -> Client:
    from gradio_client import Client

    return Client(url, verbose=False, analytics_enabled=False, **kwargs)


def generation_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "medvlm-generate"]


def named(result: tuple, event: type[tuple]) -> dict:
    """An API result as {field: value}, by the handler's NamedTuple (the same one the layout wires)."""
    fields = [name for name in event._fields if name not in NOT_RETURNED]
    if len(fields) == 1:  # gradio_client returns a lone output's value itself, not a tuple of one
        result = (result,)
    return dict(zip(fields, result, strict=True))


def upload(user: Client, path: Path) -> dict:
    from gradio_client import handle_file

    from medvlm.ui.events import CaseShown

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
    from medvlm.ui.events import AskUpdate

    return named(job.result(), AskUpdate)


def ct_dataset() -> Dataset:
    """A minimal CT dataset with file meta, no pixels yet: the start of every DICOM the tests build."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.Modality = "CT"
    return ds


def dicom_bytes(ds: Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def dicom_without_pixels() -> bytes:
    """A CT header with no pixel data: what an SR or a stripped export looks like to the loader."""
    return dicom_bytes(ct_dataset())


def identified_ct(path: Path) -> Path:
    """A CT-like DICOM whose header names a patient, an institution and a birth date."""
    ds = ct_dataset()
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
    path.write_bytes(dicom_bytes(ds))
    return path


def make_image(shade: int = 0, size: tuple[int, int] = (48, 32)) -> Image.Image:
    image = Image.linear_gradient("L").resize(size).convert("RGB")
    image.putpixel((0, 0), (shade % 256, 0, 0))
    return image


def model_output(index: int = 0, **changes: object) -> ModelOutput:
    """A plausible stored model output; ``index`` varies its id and image, ``changes`` override fields."""
    image = make_image(index)
    output = ModelOutput(
        output_id=f"{index:032x}",
        image=image,
        image_metadata=SafeMetadata(
            source_format="DICOM", width=image.width, height=image.height, modality="CT"
        ).to_dict(),
        question="Which organ is shown?",
        options=["Liver", "Lung", "Brain"],
        correct_answer="B",
        completion="<think>Air-filled lobes.</think><answer>B</answer>",
        reasoning="Air-filled lobes.",
        answer_text="B",
        letter="B",
        format_ok=True,
        problem=None,
        stop_reason="eos",
        model={"model": "JZPeterPan/MedVLM-R1", "revision": "abc123", "dtype": "bfloat16", "max_pixels": 401408},
        settings={
            "max_new_tokens": 512,
            "do_sample": False,
            "temperature": 1.0,
            "top_p": 1.0,
            "seed": None,
            "max_pixels": None,
        },
        prompt_style="medvlm",
        timing={"time_to_first_token_s": 0.5, "total_s": 3.0, "new_tokens": 40, "tokens_per_second": 15.6},
        generated_at="2025-06-01T12:00:00+00:00",
    )
    return dataclasses.replace(output, **changes)


class Page:
    """Every handler of the app over one workbench, as the layout wires them (tests call them directly).

    ``page.load_file(...)`` is the Ask tab's :class:`~medvlm.ui.ask.case_handlers.CaseHandlers`
    method, ``page.ask(...)`` the :class:`~medvlm.ui.ask.answer_handlers.AnswerHandlers` one,
    ``page.reviews_table(...)`` the Reviews tab's; anything else (``store``, ``model``,
    ``banner()``) is the workbench's.
    """

    def __init__(self, workbench: Workbench) -> None:
        from medvlm.ui.ask.answer_handlers import AnswerHandlers
        from medvlm.ui.ask.case_handlers import CaseHandlers
        from medvlm.ui.reviews.handlers import ReviewsHandlers

        workbench = workbench.workbench if isinstance(workbench, Page) else workbench
        self.workbench = workbench
        self.cases = CaseHandlers(workbench)
        self.answers = AnswerHandlers(workbench, self.cases)
        self.reviews = ReviewsHandlers(workbench)

    def __getattr__(self, name: str):
        for part in (self.cases, self.answers, self.reviews, self.workbench):
            if hasattr(part, name):
                return getattr(part, name)
        raise AttributeError(name)


def undo_schema_11(conn) -> None:
    """Remove what schema 11 added (probe answers, a campaign's probe settings): a store as schema 10 wrote it."""
    conn.execute("DROP TABLE probe_answers")
    conn.execute("ALTER TABLE campaign_generation DROP COLUMN probes")
    conn.execute("ALTER TABLE campaign_generation DROP COLUMN show_probes")


def error_of(outputs) -> str:
    """The message of any handler's named outputs: beside the upload, the window, the question or the run."""
    for name in ("upload_error", "window_error", "ask_error", "evaluation_error"):
        if name in outputs._fields and isinstance(getattr(outputs, name), str) and getattr(outputs, name):
            return getattr(outputs, name)
    return ""


def samples_file(folder: Path, images: list[str], *, questions: list[str] | None = None, **extra) -> Path:
    """An evaluation run's ``samples.jsonl`` (as ``train.evaluate`` writes it), one sample per image named."""
    path = folder / "samples.jsonl"
    lines = [
        {
            "id": f"q{i}",
            "image": image,
            "question": questions[i] if questions else "Which modality?",
            "options": ["CT", "MRI"],
            "completion": "<think>Dense bone.</think><answer>A</answer>",
            "reasoning": "Dense bone.",
            "letter": "A",
            "format_ok": True,
            "model": {"model": "some/model"},
            **extra,
        }
        for i, image in enumerate(images)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path
