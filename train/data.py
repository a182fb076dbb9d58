"""Training data: the records :mod:`medvlm.vqa_records` reads, turned into what TRL's ``GRPOTrainer`` takes.

Reading the published formats lives in :mod:`medvlm.vqa_records`, because the app reads the same
files (a review campaign generated from a dataset): one definition of a valid row, for training,
evaluation and review."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medvlm.images import load_image
from medvlm.prompt import PromptStyle, build_messages
from medvlm.vqa_records import VQARecord

if TYPE_CHECKING:
    import datasets


def image_overlap(train: Sequence[VQARecord], test: Sequence[VQARecord]) -> set[str]:
    """Paths of test images whose file content (sha256) also appears among the training images.

    The Med-R1 splits are known to put the same image, under different questions, in train and
    test; comparing paths would miss copies, so this hashes the files. Filter a test set with
    ``[r for r in test if str(r.image_path) not in image_overlap(train, test)]``.
    """
    digests: dict[Path, str] = {}

    def digest(path: Path) -> str:
        if path not in digests:
            digests[path] = hashlib.sha256(path.read_bytes()).hexdigest()
        return digests[path]

    seen = {digest(record.image_path) for record in train}
    return {str(record.image_path) for record in test if digest(record.image_path) in seen}


def _rendered_png(path: Path) -> bytes:
    buffer = io.BytesIO()
    load_image(path).image.save(buffer, format="PNG")
    return buffer.getvalue()


def to_grpo_dataset(
    records: Sequence[VQARecord], *, style: PromptStyle | str = PromptStyle.MEDVLM
) -> datasets.Dataset:
    """The records as a dataset for TRL's ``GRPOTrainer`` (vision-language, conversational).

    Columns: ``prompt`` (``medvlm.prompt.build_messages``: one user turn whose content starts with
    an ``{"type": "image"}`` placeholder), ``image`` (a ``datasets.Image()`` holding the image as
    :func:`medvlm.images.load_image` renders it, PNG-encoded: a DICOM with its window, a 16-bit scan
    scaled, exactly what the app and ``train.evaluate`` show the model; Pillow alone cannot open a
    DICOM at all),
    ``solution`` (the answer letter), ``options``, ``modality``, ``question_type``, ``id``.
    TRL 1.16's trainer keeps ``prompt``/``image``/``images`` as its signature columns, fills the
    placeholder with the row's ``image`` (``prepare_multimodal_messages``), and passes every other
    column to the reward functions as keyword arguments: ``solution`` and ``options`` are what
    :mod:`train.rewards` reads.
    """
    import datasets

    features = datasets.Features(
        {
            "prompt": datasets.List(
                {
                    "role": datasets.Value("string"),
                    "content": datasets.List({"type": datasets.Value("string"), "text": datasets.Value("string")}),
                }
            ),
            "image": datasets.Image(),
            "solution": datasets.Value("string"),
            "options": datasets.List(datasets.Value("string")),
            "modality": datasets.Value("string"),
            "question_type": datasets.Value("string"),
            "id": datasets.Value("string"),
        }
    )
    columns: dict[str, list[Any]] = {
        "prompt": [build_messages(record.question, record.options, style=style) for record in records],
        "image": [{"bytes": _rendered_png(record.image_path), "path": None} for record in records],
        "solution": [record.answer for record in records],
        "options": [list(record.options) for record in records],
        "modality": [record.modality for record in records],
        "question_type": [record.question_type for record in records],
        "id": [record.id for record in records],
    }
    return datasets.Dataset.from_dict(columns, features=features)
