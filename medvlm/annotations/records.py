"""The annotation store's record types: a model output, a review of it, a stored annotation, a version.

Pure data, no I/O (as argilla's SDK keeps its record model apart from its clients): the store
(:mod:`medvlm.annotations.store`) writes and reads them, the exports
(:mod:`medvlm.annotations.exports`) and the Hub sync serialise them, ``train.evaluate`` writes
:class:`ModelOutput` s as ``samples.jsonl`` lines and the app reads them back
(:meth:`ModelOutput.to_sample`, :meth:`ModelOutput.from_sample`). The columns of the ``outputs``
table are derived from :class:`ModelOutput`'s fields (:data:`OUTPUT_COLUMNS`), so the two cannot
drift apart.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from medvlm.errors import MedVLMError
from medvlm.pixels import SafeMetadata
from medvlm.user_text import MAX_COMMENT_CHARS, check_text, normalize_name

if TYPE_CHECKING:
    from medvlm.parsing import ParsedCompletion
    from medvlm.pixels import LoadedImage

FLAGS: dict[str, str] = {
    "superficial": "Superficial reasoning",
    "contradiction": "Reasoning contradicts the answer",
    "hallucination": "Hallucinated finding",
    "wrong_answer": "Wrong answer",
    "sound": "Sound reasoning",
}
"""Flag key -> label shown to the reviewer. Keys are what is stored and exported."""


class AnnotationError(MedVLMError):
    """An annotation cannot be stored or read (invalid review, unknown id, ...); shown as is."""


SAFE_METADATA_KEYS: frozenset[str] = frozenset(field.name for field in dataclasses.fields(SafeMetadata))
"""The only image-metadata keys ever stored: those of SafeMetadata, so the two cannot drift apart."""

IMAGES_DIR = "images"


def image_relpath(sha256: str) -> str:
    """Where an image lives relative to a data, export or sync folder: ``images/<sha256>.png``."""
    return f"{IMAGES_DIR}/{sha256}.png"


def image_sha256(image: Image.Image) -> str:
    """The content hash naming an image: sha256 of ``b"<width>x<height>:"`` + its raw RGB bytes.

    Hashing pixels rather than the PNG file keeps the name stable across Pillow and zlib versions
    (PNG bytes for the same pixels may differ), so the same image is stored once for good. To
    verify a stored file: ``image_sha256(Image.open(path))`` equals its name.
    """
    rgb = image.convert("RGB")
    digest = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode())
    digest.update(rgb.tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelOutput:
    """One model answer to one case, exactly as shown to the reviewer."""

    output_id: str
    """uuid4 hex made by the app per generation; with the reviewer, the idempotency key."""
    image: Image.Image | None
    """The rendered, de-identified RGB image the model saw (None only where an output is written as a
    ``samples.jsonl`` line, whose image is a path; the store refuses an output without one)."""
    image_metadata: dict[str, Any]
    """``SafeMetadata.to_dict()``; filtered again to the whitelisted keys before storing."""
    question: str
    options: list[str]
    correct_answer: str | None
    """Letter A..J if the reviewer knows it (stored per reviewer: reviewers may differ)."""
    completion: str
    reasoning: str
    answer_text: str | None
    letter: str | None
    format_ok: bool
    problem: str | None
    stop_reason: str | None
    model: dict[str, Any]
    """``LoadedModel.describe()``; its ``"model"`` entry becomes ``model_id``."""
    settings: dict[str, Any]
    """``GenerationSettings.to_dict()``."""
    prompt_style: str
    timing: dict[str, Any] | None
    generated_at: str
    """ISO-8601 UTC; "" when not recorded (never "now": the same sample must meet the same stored output)."""
    question_type: str | None = None
    """The dataset's kind of question ("Disease Diagnosis"...), where the output answers a dataset's row:
    campaign reports give flag rates per question type. None for a question typed in the app."""

    @classmethod
    def answered(cls, parsed: ParsedCompletion, **fields: Any) -> ModelOutput:
        """The output whose completion ``parsed`` read; ``fields`` give the rest (image, question, model...).

        The app, ``train.evaluate`` and generated campaigns all build their outputs here, so the
        stored reasoning, answer and format verdict are always the parser's.
        """
        return cls(
            completion=parsed.raw,
            reasoning=parsed.reasoning,
            answer_text=parsed.answer_text,
            letter=parsed.letter,
            format_ok=parsed.format_ok,
            problem=parsed.problem,
            **fields,
        )

    def to_sample(self, *, image: str, **extra: Any) -> dict[str, Any]:
        """This output as one line of an evaluation run's ``samples.jsonl`` (``train.evaluate`` writes them).

        ``image`` is the path of the image file (the pixels are not in the line); ``extra`` adds the
        evaluation's own columns (``id``, ``solution``, ``correct``, ``modality``...). Every field of
        the output but its id, image and timing is a key of the line, under the same name.
        """
        return {"image": image, **{name: getattr(self, name) for name in SAMPLE_FIELDS}, **extra}

    @classmethod
    def from_sample(
        cls, sample: dict[str, Any], image: LoadedImage, *, index: int, question: str, options: list[str]
    ) -> ModelOutput:
        """The output a ``samples.jsonl`` line records, with its image loaded and question validated.

        The id is derived from the model, the sample's id (or ``index``) and the completion, and
        nothing is filled in from the clock, so every reviewer of the same sample, at any time,
        reviews the very same stored output.
        """
        model = sample.get("model") if isinstance(sample.get("model"), dict) else {}
        if not model.get("model"):
            raise AnnotationError(
                "it does not name the model that wrote it (no 'model' entry); use the samples.jsonl that "
                "train.evaluate writes."
            )
        identity = json.dumps([model.get("model"), sample.get("id", index), sample["completion"]], sort_keys=True)
        correct = sample.get("correct_answer") or sample.get("solution")
        return cls(
            output_id=hashlib.sha256(identity.encode()).hexdigest()[:32],
            image=image.image,
            image_metadata=with_dataset_modality(image.metadata.to_dict(), sample.get("modality")),
            question=question,
            options=options,
            correct_answer=correct if isinstance(correct, str) and correct in _letters(len(options)) else None,
            completion=str(sample["completion"]),
            reasoning=str(sample.get("reasoning") or ""),
            answer_text=sample.get("answer_text"),
            letter=sample.get("letter"),
            format_ok=bool(sample.get("format_ok")),
            problem=sample.get("problem"),
            stop_reason=sample.get("stop_reason"),
            model=model,
            settings=sample.get("settings") if isinstance(sample.get("settings"), dict) else {},
            prompt_style=str(sample.get("prompt_style") or ""),
            timing=None,
            generated_at=str(sample.get("generated_at") or ""),
            question_type=_text_or_none(sample.get("question_type")),
        )


def _text_or_none(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def with_dataset_modality(metadata: dict[str, Any], modality: Any) -> dict[str, Any]:
    """The image's metadata, with the dataset's modality where the image itself names none (a PNG).

    A DICOM's own Modality tag wins: it is what the scanner wrote.
    """
    if metadata.get("modality") or _text_or_none(modality) is None:
        return metadata
    return {**metadata, "modality": _text_or_none(modality)}


SAMPLE_FIELDS: tuple[str, ...] = tuple(
    field.name
    for field in dataclasses.fields(ModelOutput)
    if field.name not in ("output_id", "image", "image_metadata", "timing")
)
"""The :class:`ModelOutput` fields a ``samples.jsonl`` line carries: all but the id (derived from the line),
the image and its metadata (the line names the file; they come from loading it) and the timing."""

OUTPUT_COLUMNS: tuple[str, ...] = (
    "image_sha256",
    "modality",
    "model_id",
    *(field.name for field in dataclasses.fields(ModelOutput) if field.name not in ("image", "correct_answer")),
)
"""Columns of the ``outputs`` table: every :class:`ModelOutput` field but the image (stored once, by its
hash) and the correct answer (each reviewer gives their own), plus the modality and model id that
filters search."""

JSON_COLUMNS: tuple[str, ...] = ("image_metadata", "options", "model", "settings", "timing")
"""Output columns stored as JSON text."""


def _letters(count: int) -> str:
    from medvlm.prompt import LETTERS

    return LETTERS[:count]


#: Flags that say the reasoning itself is faulty, so they contradict "sound". ("wrong_answer" does
#: not: sound reasoning can still end on the wrong option, and that is worth recording.)
REASONING_FAULTS = ("superficial", "contradiction", "hallucination")


SPAN_LABELS: dict[str, str] = {
    "hallucination": "Hallucinated finding",
    "contradiction": "Contradicts the answer",
    "unsupported": "Not supported by the image",
    "irrelevant": "Irrelevant",
}
"""Label key -> text of a marked passage of the reasoning (a span)."""


@dataclass(frozen=True, order=True)
class Span:
    """A passage of the raw completion a reviewer marked: character offsets ``[start, end)`` and a label."""

    start: int
    end: int
    label: str

    def __post_init__(self) -> None:
        if not all(isinstance(value, int) and not isinstance(value, bool) for value in (self.start, self.end)):
            raise AnnotationError("A marked passage needs whole-number character offsets.")
        if not 0 <= self.start < self.end:
            raise AnnotationError(f"A marked passage must run forwards from offset 0 (got {self.start}-{self.end}).")
        if self.label not in SPAN_LABELS:
            raise AnnotationError(
                f"Unknown label {self.label!r} for a marked passage; choose from: {', '.join(SPAN_LABELS)}."
            )

    @classmethod
    def from_json(cls, value: Any) -> Span:
        start, end, label = value
        return cls(int(start), int(end), str(label))


@dataclass(frozen=True)
class Review:
    """What a reviewer said about one output. Validated and normalised on creation.

    ``reviewer`` is normalised (:func:`medvlm.user_text.normalize_name`: NFKC, no invisible
    characters, at most 64 characters); ``comment`` is stripped and limited; ``flags`` are
    de-duplicated and put in :data:`FLAGS` order (a single string counts as one flag, as a
    checkbox group may send one).
    """

    reviewer: str
    flags: tuple[str, ...]
    comment: str = ""
    spans: tuple[Span, ...] = ()
    """Marked passages of the completion (offsets into the raw completion), sorted, none twice."""

    def __post_init__(self) -> None:
        reviewer = normalize_name(self.reviewer or "", error=AnnotationError)
        given = (self.flags,) if isinstance(self.flags, str) else tuple(self.flags or ())
        for flag in given:
            check_flag(flag)
        comment = check_text(
            (self.comment or "").strip(), what="Your comment", limit=MAX_COMMENT_CHARS, error=AnnotationError
        )
        if not given and not comment and not self.spans:
            raise AnnotationError("Choose at least one flag, mark a passage or write a comment.")
        clashing = [FLAGS[flag] for flag in REASONING_FAULTS if flag in given]
        if "sound" in given and clashing:
            raise AnnotationError(
                f"'{FLAGS['sound']}' cannot be combined with {' / '.join(repr(label) for label in clashing)}: untick "
                "one of them."
            )
        object.__setattr__(self, "reviewer", reviewer)
        object.__setattr__(self, "flags", tuple(flag for flag in FLAGS if flag in given))
        object.__setattr__(self, "comment", comment)
        spans = tuple(sorted(set(span if isinstance(span, Span) else Span.from_json(span) for span in self.spans)))
        object.__setattr__(self, "spans", spans)


@dataclass(frozen=True)
class Annotation:
    """A stored row, as read back: one reviewer's review of one model output."""

    id: int
    output_id: str
    reviewer: str
    flags: tuple[str, ...]
    comment: str
    image_sha256: str
    image_path: Path
    """Absolute path of the stored PNG (``<data_dir>/images/<sha256>.png``)."""
    image_metadata: dict[str, Any]
    modality: str | None
    question: str
    options: list[str]
    correct_answer: str | None
    completion: str
    reasoning: str
    answer_text: str | None
    letter: str | None
    format_ok: bool
    problem: str | None
    stop_reason: str | None
    model_id: str
    model: dict[str, Any]
    settings: dict[str, Any]
    prompt_style: str
    timing: dict[str, Any] | None
    app_version: str
    """The medvlm version that last wrote this review."""
    generated_at: str
    created_at: str
    updated_at: str
    is_correct: bool | None
    """``letter == correct_answer`` when the reviewer gave the correct answer, else None."""
    revision: int = 1
    """How many versions this review has had (1: never edited); :meth:`AnnotationStore.history` lists them."""
    spans: tuple[Span, ...] = ()
    """The passages of the completion the reviewer marked (offsets into ``completion``)."""
    question_type: str | None = None
    """:attr:`ModelOutput.question_type` of the reviewed output."""

    def to_record(self) -> dict[str, Any]:
        """A JSON-able dict for exports and the Hub sync.

        The image is the relative path ``images/<sha256>.png`` (relative to the folder holding
        the export); ``flags`` is a list, and each flag also gets a boolean column
        ``flag_<key>`` so that training code can select rows without parsing lists.
        """
        record: dict[str, Any] = {
            "id": self.id,
            "output_id": self.output_id,
            "reviewer": self.reviewer,
            "flags": list(self.flags),
            **{f"flag_{key}": key in self.flags for key in FLAGS},
            "comment": self.comment,
            "spans": [{"start": span.start, "end": span.end, "label": span.label} for span in self.spans],
            "image": image_relpath(self.image_sha256),
        }
        for field in dataclasses.fields(self):
            if field.name not in record and field.name not in ("image_path", "flags", "spans"):
                record[field.name] = getattr(self, field.name)
        return record


@dataclass(frozen=True)
class ReviewVersion:
    """One saved version of a review: every save is kept, so a later click never loses an earlier one."""

    version: int
    """1 for the first save, then 2, 3... (the highest is what :class:`Annotation` shows)."""
    flags: tuple[str, ...]
    comment: str
    correct_answer: str | None
    app_version: str
    saved_at: str


VERDICT_CHOICES: dict[str, str] = {
    "first": "Answer 1 is better",
    "second": "Answer 2 is better",
    "tie": "Tie: equally good",
    "both_poor": "Both poor",
}
"""A pairwise verdict as the reviewer gives it, in terms of the sides on screen -> its label."""


@dataclass(frozen=True)
class Verdict:
    """One reviewer's judgement of two answers to the same case: which reasoning is better.

    Kept in terms of outputs, never of sides: the pair is unordered (``output_a < output_b``),
    ``preferred`` names the better output (None for a tie or both poor) and ``shown_first`` the
    output that was on the left, so shuffled sides can be audited and never misread.
    """

    output_a: str
    output_b: str
    shown_first: str
    outcome: str
    """``"preferred"``, ``"tie"`` or ``"both_poor"``."""
    preferred: str | None
    blind: bool
    reviewer: str
    decided_at: str = ""
    id: int | None = None

    @classmethod
    def from_sides(cls, first: str, second: str, choice: str, *, reviewer: str, blind: bool) -> Verdict:
        """The verdict ``choice`` (a key of :data:`VERDICT_CHOICES`) on ``first`` shown left, ``second`` right."""
        if choice not in VERDICT_CHOICES:
            raise AnnotationError(f"Choose one of: {'; '.join(VERDICT_CHOICES.values())}.")
        if not first or not second or first == second:
            raise AnnotationError("A verdict compares two different answers.")
        preferred = {"first": first, "second": second}.get(choice)
        return cls(
            output_a=min(first, second),
            output_b=max(first, second),
            shown_first=first,
            outcome="preferred" if preferred else choice,
            preferred=preferred,
            blind=bool(blind),
            reviewer=normalize_name(reviewer or "", error=AnnotationError),
        )

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Verdict:
        """A stored verdict: (id, output_a, output_b, shown_first, outcome, preferred, blind, reviewer, decided_at)."""
        id_, output_a, output_b, shown_first, outcome, preferred, blind, reviewer, decided_at = row
        return cls(
            id=id_,
            output_a=output_a,
            output_b=output_b,
            shown_first=shown_first,
            outcome=outcome,
            preferred=preferred,
            blind=bool(blind),
            reviewer=reviewer,
            decided_at=decided_at,
        )

    @property
    def rejected(self) -> str | None:
        """The worse output of a preference (None for a tie or both poor)."""
        if self.preferred is None:
            return None
        return self.output_b if self.preferred == self.output_a else self.output_a

    def choice(self, first: str) -> str:
        """This verdict in terms of sides, with ``first`` on the left (a key of :data:`VERDICT_CHOICES`)."""
        if self.preferred is None:
            return self.outcome
        return "first" if self.preferred == first else "second"


#: Annotation fields holding dictionaries whose keys vary (by model, app version, input type).
FREE_FORM_FIELDS = ("image_metadata", "model", "settings", "timing")


def filter_metadata(metadata: dict[str, Any] | None) -> dict[str, Any]:
    """Only the SafeMetadata keys, and only scalar values: nothing else about a file is kept."""
    scalar = (str, int, float, bool, type(None))
    return {
        key: value
        for key, value in (metadata or {}).items()
        if key in SAFE_METADATA_KEYS and isinstance(value, scalar)
    }


def check_flag(flag: str) -> None:
    if flag not in FLAGS:
        raise AnnotationError(f"Unknown flag {flag!r}; choose from: {', '.join(FLAGS)}.")


def ordered_flags(stored: str | None) -> tuple[str, ...]:
    """Flags as stored (comma-joined), in :data:`FLAGS` order."""
    present = set((stored or "").split(","))
    return tuple(flag for flag in FLAGS if flag in present)


def to_json(value: Any) -> str:
    """Deterministic, strict JSON: non-finite floats become null (NaN is not JSON and breaks loaders)."""
    return json.dumps(_finite(value), sort_keys=True, ensure_ascii=False, allow_nan=False, default=str)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(key): _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value
