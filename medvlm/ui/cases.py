"""Where cases come from besides an upload: the bundled examples, an evaluation run uploaded with its
images (the Ask tab reviews it, the Campaigns tab makes a campaign of it), and the disposal of
Gradio's copies of uploaded files. (A run's samples are parsed by :mod:`medvlm.evaluation_runs`.)
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradio.utils import get_upload_folder as gradio_upload_folder

from medvlm.errors import MedVLMError
from medvlm.evaluation_runs import read_evaluation_samples
from medvlm.images import MAX_INPUT_BYTES, read_input

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    """One ready-made case from ``assets/examples.json``."""

    file: Path
    question: str
    options: list[str]
    answer: str | None = None
    window: str | None = None

    @property
    def label(self) -> str:
        return self.file.stem.replace("_", " ")


def load_examples(path: Path) -> list[Example]:
    """The example cases listed in ``path``; none when the file is absent or unreadable.

    ``file`` entries are relative to the folder holding ``app.py`` (the file's parent's parent,
    as in ``assets/ct_head.dcm``) or to the file's own folder; entries whose file is missing are
    skipped, so a half-installed asset folder costs an example, not the app.
    """
    if not path.is_file():
        return []
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
        examples = []
        for entry in entries:
            candidates = (
                [Path(entry["file"])]
                if Path(entry["file"]).is_absolute()
                else [path.parent.parent / entry["file"], path.parent / entry["file"]]
            )
            found = next((candidate for candidate in candidates if candidate.is_file()), None)
            if found is None:
                logger.warning("Example file %s is missing; that example is skipped.", entry["file"])
                continue
            examples.append(
                Example(
                    file=found,
                    question=entry["question"],
                    options=list(entry["options"]),
                    answer=entry.get("answer"),
                    window=entry.get("window"),
                )
            )
        return examples
    except (OSError, ValueError, KeyError, TypeError) as error:
        logger.warning("Could not read the examples in %s (%s); no examples are shown.", path, error)
        return []


def discard_upload(path: str | Path) -> None:
    """Delete Gradio's copy of an uploaded file once it has been read.

    The app keeps what it needs in memory; the copy in Gradio's cache would otherwise sit there
    for up to an hour with every DICOM tag, under the upload's own file name (often the
    patient's). Only files inside Gradio's upload folder are touched (never an example from
    ``assets/`` or a path a test passes), and the per-upload folder goes too when it is empty.
    """
    cache = Path(gradio_upload_folder()).resolve()
    try:
        resolved = Path(path).resolve()
    except OSError:
        return
    if cache not in resolved.parents:
        return
    resolved.unlink(missing_ok=True)
    folder = resolved.parent
    if folder != cache:
        try:
            folder.rmdir()
        except OSError:  # not empty (another upload of the same content) or already gone
            pass


def file_name(path: str) -> str:
    """The last part of a path written on any system (``samples.jsonl`` may come from Windows)."""
    return str(path).replace("\\", "/").rsplit("/", 1)[-1]


def read_run_uploads(paths: list[str]) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
    """The samples of the one ``.jsonl`` among the uploads, and the other uploads (images) by file name."""
    jsonl = [path for path in paths if file_name(path).lower().endswith(".jsonl")]
    if len(jsonl) != 1:
        raise MedVLMError(
            "Choose one samples.jsonl (written by train.evaluate), together with the image files it names."
        )
    try:
        samples = read_evaluation_samples(jsonl[0])
    except (OSError, UnicodeDecodeError):
        raise MedVLMError("The evaluation file could not be read as text.") from None
    images: dict[str, bytes] = {}
    for path in paths:
        if path == jsonl[0]:
            continue
        name = file_name(path)
        if name in images:
            raise MedVLMError(f"Two uploaded images are called {name}; upload each image file once.")
        images[name] = read_input(path)
        if sum(map(len, images.values())) > MAX_INPUT_BYTES:
            raise MedVLMError(
                f"The uploaded images come to more than {MAX_INPUT_BYTES // 2**20:,} MiB; review the run in parts, "
                "or have the operator start the app with --evaluation-images pointing at the images."
            )
    return samples, images
