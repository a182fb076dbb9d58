"""Where cases come from besides an upload: the bundled examples, and the disposal of Gradio's copies
of uploaded files. (An evaluation run's samples are read by :mod:`medvlm.evaluation_runs`.)
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from gradio.utils import get_upload_folder as gradio_upload_folder

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
