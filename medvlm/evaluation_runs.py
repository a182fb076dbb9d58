"""An evaluation run written by ``train.evaluate`` (its ``samples.jsonl``), read back as model outputs.

The app imports a run to review it (:mod:`medvlm.ui.ask.case_handlers`, images uploaded with it) and
a review campaign is made from one (``medvlm campaign create``, images from a folder on the
operator's machine): both read the lines here, each checked with a message naming the line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medvlm.annotations import ModelOutput
from medvlm.errors import ImageLoadError, MedVLMError
from medvlm.images import load_image, read_input
from medvlm.prompt import validate_question

#: Fields every line of an evaluation run's ``samples.jsonl`` must have to be reviewed.
EVALUATION_FIELDS = ("image", "question", "options", "completion")


def read_evaluation_samples(path: str | Path) -> list[dict[str, Any]]:
    """The samples of a ``train.evaluate`` run, checked line by line with a message naming the line."""
    samples = []
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                sample = json.loads(line)
            except json.JSONDecodeError:
                raise MedVLMError(
                    f"Line {number} of the evaluation file is not JSON: choose the samples.jsonl written by "
                    "train.evaluate."
                ) from None
            missing = [key for key in EVALUATION_FIELDS if not isinstance(sample, dict) or key not in sample]
            if missing:
                raise MedVLMError(
                    f"Line {number} of the evaluation file lacks {', '.join(missing)}: choose the samples.jsonl "
                    "written by train.evaluate."
                )
            samples.append(sample)
    if not samples:
        raise MedVLMError("The evaluation file holds no samples.")
    return samples


def run_outputs(samples_path: str | Path, images_root: str | Path) -> list[ModelOutput]:
    """Every sample of a run as the :class:`ModelOutput` it records, images read from ``images_root``.

    Image paths in the file are taken relative to ``images_root`` (the run's ``--data_root``) and
    must stay inside it once resolved; a sample whose image is missing or unreadable stops the
    whole read with its line number, since a campaign with holes would not be the run.
    """
    return samples_outputs(read_evaluation_samples(samples_path), images_root)


def samples_outputs(samples: list[dict[str, Any]], images_root: str | Path) -> list[ModelOutput]:
    """As :func:`run_outputs`, for samples already read."""
    root = Path(images_root).resolve()
    outputs = []
    for index, sample in enumerate(samples):
        named = sample["image"]
        candidate = (root / str(named)).resolve()
        if not isinstance(named, str) or root not in candidate.parents or not candidate.is_file():
            raise MedVLMError(
                f"Sample {index + 1}: its image {str(named)[:80]!r} is not a file inside {root}. "
                "Pass the folder the run's image paths are relative to (its --data_root) as --images."
            )
        try:
            image = load_image(read_input(candidate))
            question, options = validate_question(sample["question"], sample["options"])
            outputs.append(ModelOutput.from_sample(sample, image, index=index, question=question, options=options))
        except (ImageLoadError, MedVLMError) as error:
            raise MedVLMError(f"Sample {index + 1}: {error}") from None
    return outputs


def uploaded_outputs(samples: list[dict[str, Any]], images: dict[str, bytes]) -> list[ModelOutput]:
    """Every sample as a :class:`ModelOutput`, its image among the uploaded files (matched by file name)."""
    outputs = []
    for index, sample in enumerate(samples):
        named = sample["image"]
        name = str(named).replace("\\", "/").rsplit("/", 1)[-1] if isinstance(named, str) else ""
        if name not in images:
            raise MedVLMError(
                f"Sample {index + 1}: its image ({name or 'no file name'}) was not uploaded with the samples. "
                "Upload samples.jsonl together with the image files it names."
            )
        try:
            image = load_image(images[name])
            question, options = validate_question(sample["question"], sample["options"])
            outputs.append(ModelOutput.from_sample(sample, image, index=index, question=question, options=options))
        except (ImageLoadError, MedVLMError) as error:
            raise MedVLMError(f"Sample {index + 1}: {error}") from None
    return outputs


def paired_runs(
    first: list[dict[str, Any]], second: list[dict[str, Any]], *, flips_only: bool = False
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The samples of two runs on the same questions, matched by question id, in the first run's order.

    ``flips_only`` keeps the questions that flipped alone (right in one run, wrong in the other:
    ``train.compare``'s flips), where what RL changed is easiest to see. Questions only one run
    answered are left out; a matched pair whose question, options or image differ stops the read
    with its id, since a verdict between them would compare nothing.
    """
    for run, samples in (("first", first), ("second", second)):
        unnamed = next((number for number, sample in enumerate(samples, start=1) if "id" not in sample), None)
        if unnamed is not None:
            raise MedVLMError(f"Sample {unnamed} of the {run} run has no id, so it cannot be matched to the other.")
    by_id = {str(sample["id"]): sample for sample in second}
    kept_first, kept_second = [], []
    for sample in first:
        question_id = str(sample["id"])
        other = by_id.get(question_id)
        if other is None or (flips_only and not _flipped(question_id, sample, other)):
            continue
        if [sample["question"], sample["options"], _image_name(sample)] != [
            other["question"],
            other["options"],
            _image_name(other),
        ]:
            raise MedVLMError(
                f"Question {question_id} differs between the two runs (question, options or image): "
                "were they run on the same data?"
            )
        kept_first.append(sample)
        kept_second.append(other)
    if not kept_first and flips_only and any(str(sample["id"]) in by_id for sample in first):
        raise MedVLMError("No question flipped between the two runs: both got each shared question right, or wrong.")
    if not kept_first:
        raise MedVLMError("The two runs share no question (by id) to compare: were they run on the same data?")
    return kept_first, kept_second


def identical_answers_note(first: list[dict[str, Any]], second: list[dict[str, Any]]) -> str:
    """A warning for paired samples (:func:`paired_runs`) whose two completions are the same text, or "".

    A verdict between two identical answers can only be a tie, and a preference pair of a text
    against itself teaches nothing (``train.preferences`` leaves such pairs out): whoever makes the
    comparison campaign should know before reviewers spend time on them.
    """
    same = sum(one.get("completion") == other.get("completion") for one, other in zip(first, second, strict=True))
    if not same:
        return ""
    which = "all" if same == len(first) else f"{same} of {len(first)}"
    why = " (were both runs made by the same model and settings?)" if same == len(first) else ""
    return (
        f"Warning: {which} pairs have the same completion in both runs{why}; verdicts on them can only be ties, "
        "and train.preferences leaves them out."
    )


def _flipped(question_id: str, first: dict[str, Any], second: dict[str, Any]) -> bool:
    if "correct" not in first or "correct" not in second:
        raise MedVLMError(
            f"Question {question_id} does not say whether it was answered correctly in both runs, so flips cannot "
            "be found: use samples.jsonl files written by python -m train.evaluate."
        )
    return bool(first["correct"]) != bool(second["correct"])


def _image_name(sample: dict[str, Any]) -> str:
    return str(sample["image"]).replace("\\", "/").rsplit("/", 1)[-1]
