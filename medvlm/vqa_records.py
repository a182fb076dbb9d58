"""Multiple-choice VQA data in every published format, read into one record type.

Training (``train.grpo``), evaluation (``train.evaluate``) and the benchmarks all read their data
here, so that a row counts as valid, and a question reaches the model, in the same way everywhere.
:func:`load_records` returns :class:`VQARecord` objects and a :class:`LoadReport` saying what was
skipped and why: a bad row (a missing image, an answer that is not among the options...) never
stops a 900-row evaluation, and never disappears without being counted.

Formats (``format="auto"`` tells them apart by their fields):

* ``"huatuo"``: the HuatuoGPT-Vision evaluation bundle
  (``FreedomIntelligence/Medical_Multimodal_Evaluation_Data``, file
  ``medical_multimodel_evaluation_data.json``, split ``"test"``), the data MedVLM-R1 trained on.
  Fields, as MedVLM-R1's ``src/open-r1-multimodal/src/open_r1/grpo.py`` reads them:
  ``question``; ``options`` (list of option texts); ``answer`` (the correct option's *text*, turned
  into its letter with ``options.index(answer)``); ``image`` (a list of paths relative to the
  dataset folder, of which the first is used); ``dataset`` (e.g. ``"OmniMedVQA"``); ``subset``
  (e.g. the literal ``"MR (Mag-netic Resonance Imaging)"``, ``"CT(Computed Tomography)"``,
  ``"X-Ray"``). The modality is read from ``subset``.
* ``"medvlm-r1"``: MedVLM-R1's evaluation file (``MRI_CT_XRAY_300each_dataset.json``): the
  HuatuoGPT fields plus ``problem`` (question and lettered options) and ``solution`` (the letter).
  The letter is taken from ``solution``, the question and options from ``question``/``options``.
* ``"med-r1"``: Med-R1's splits, ``{"image": "Images/...png", "problem": "Question? A)opt, B)opt",
  "solution": "<answer> C </answer>"}``, the options inline in ``problem`` (see
  :func:`split_inline_options`). Med-R1 organises its splits as
  ``Splits/modality/{train,test}/<modality>_{train,test}.json`` and
  ``Splits/question_type/{train,test}/<question type>_{train,test}.json`` (e.g.
  ``MR (Mag-netic Resonance Imaging)_test.json``, ``Disease Diagnosis_train.json``), so the modality
  or question type is read from the file name; image paths are relative to the OmniMedVQA folder
  (pass it as ``data_root``).
* ``"jsonl"``: this project's plain format, one JSON object per line::

      {"id": "case-17", "image": "images/knee.png", "question": "Which structure is torn?",
       "options": ["ACL", "PCL", "MCL", "LCL"], "answer": "B",
       "modality": "MR", "question_type": "Anatomy Identification"}

  ``image`` is a path relative to ``data_root`` (default: the file's folder) or absolute;
  ``answer`` is the option letter; ``id``, ``modality`` and ``question_type`` are optional; any
  other field is kept in ``VQARecord.extra``. (A ``.json`` file holding a list of such objects
  works too.)
* ``"annotations"``: the app's reviewed outputs, as written by
  ``medvlm.annotations.AnnotationStore.export_jsonl`` (``image``: ``images/<sha256>.png`` relative
  to the file) or ``export_parquet`` (``image``: the PNG bytes). The answer is the reviewer's
  ``correct_answer``; rows without one are skipped as ``"no correct answer"``. The reviewer's
  flags and the reviewed output (model, its letter, comment) are kept in ``VQARecord.extra``.
  Each exported row is one *review*, so an output reviewed twice appears twice.

Images stored as bytes (Parquet, Hub datasets with an image feature) are written once to
``<data_root>/images/`` (default: next to the Parquet file; for Hub datasets, the Hugging Face
datasets cache), because a record points at an image *file*: the evaluator, the app and
``datasets.Image()`` all read it from there.
"""

from __future__ import annotations

import collections
import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medvlm.atomic import atomic_write_bytes
from medvlm.errors import ImageLoadError, MedVLMError, QuestionError
from medvlm.images import load_image
from medvlm.parsing import solution_letter
from medvlm.prompt import (
    LETTERS,
    MAX_OPTIONS,
    MIN_OPTIONS,
    normalize_option_text,
    validate_question,
)

FORMATS: tuple[str, ...] = ("huatuo", "medvlm-r1", "med-r1", "jsonl", "annotations")
"""The formats :func:`load_records` reads; also the values of ``VQARecord.source``."""

CANONICAL_MODALITIES: tuple[str, ...] = (
    "MR",
    "CT",
    "X-Ray",
    "Ultrasound",
    "Dermoscopy",
    "Fundus",
    "OCT",
    "Microscopy",
)
"""OmniMedVQA's eight modalities (the Med-R1 splits), under one short name each."""

QUESTION_TYPES: tuple[str, ...] = (
    "Anatomy Identification",
    "Disease Diagnosis",
    "Lesion Grading",
    "Modality Recognition",
    "Other Biological Attributes",
)
"""OmniMedVQA's five question types (the Med-R1 question-type splits)."""

MODALITIES: dict[str, str] = {
    alias: canonical
    for canonical, aliases in {
        "MR": ("mr", "mri", "magneticresonance", "magneticresonanceimaging", "magneticresonanceimage"),
        "CT": ("ct", "computedtomography", "ctscan", "cect"),
        "X-Ray": ("xray", "xrays", "radiograph", "radiography", "cr", "dx", "dr", "cxr", "chestxray"),
        "Ultrasound": ("us", "ultrasound", "ultrasonography", "sonography", "ultrasoundimaging"),
        "Dermoscopy": ("dermoscopy", "dermatoscopy", "dermoscopic"),
        "Fundus": ("fundus", "fundusphotography", "fundusphoto", "fundusimage", "cfp", "op"),
        "OCT": ("oct", "opticalcoherencetomography", "opt"),
        "Microscopy": ("microscopy", "microscopyimages", "microscopyimage", "sm"),
    }.items()
    for alias in aliases
}
"""Normalised spelling -> canonical modality. Keys are lower-case letters and digits only (see
:func:`normalize_modality`); they cover the names in the HuatuoGPT/OmniMedVQA ``subset`` field
("MR (Mag-netic Resonance Imaging)", "CT(Computed Tomography)", "OCT (Optical Coherence
Tomography" -- sic, unclosed --, "Fundus Photography", "Microscopy Images", "ultrasound"), common
spellings ("MRI", "xray") and the DICOM modality codes the app reads (MR, CT, CR, DX, DR, US,
OP, OPT, SM)."""

EXAMPLES_PER_REASON = 3
"""How many skipped rows a :class:`LoadReport` lists by id."""

_SPLIT_SUFFIX = re.compile(r"_(?:train|test|val|validation)$", re.IGNORECASE)
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
_DATA_SUFFIXES = (".json", ".jsonl", ".parquet")


class DatasetError(MedVLMError):
    """A data source cannot be read at all (as opposed to a bad row, which is skipped and counted)."""


@dataclass(frozen=True)
class VQARecord:
    """One multiple-choice question about one image, whatever file it came from."""

    id: str
    image_path: Path
    """Absolute path of the image file."""
    question: str
    options: tuple[str, ...]
    answer: str
    """The correct option's letter, "A".."J"."""
    modality: str | None = None
    """One of :data:`CANONICAL_MODALITIES` when recognised, else as given (None: unknown)."""
    question_type: str | None = None
    source: str = "jsonl"
    """The format it was read from, one of :data:`FORMATS`."""
    extra: dict[str, Any] = field(default_factory=dict)
    """What else the row said: original subset and dataset, reviewer flags, ..."""


@dataclass
class LoadReport:
    """What :func:`load_records` did with the rows it read."""

    loaded: int = 0
    skipped: collections.Counter[str] = field(default_factory=collections.Counter)
    """Reason -> number of rows skipped for it."""
    examples: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    """Reason -> (row id, what is at fault: the image path, the answer, the field) of its first
    :data:`EXAMPLES_PER_REASON` rows, so that every reason, even the rarest, can be looked up."""
    not_selected: int = 0
    """Valid-looking rows left out by the ``subset``/``modality`` filters (not errors)."""

    @property
    def total(self) -> int:
        """Rows considered: loaded plus skipped (rows outside the filters are not counted)."""
        return self.loaded + sum(self.skipped.values())

    def skip(self, row_id: str, reason: str, detail: str = "") -> None:
        self.skipped[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < EXAMPLES_PER_REASON:
            shown.append((row_id, detail))

    def summary(self) -> str:
        """``"Loaded 598 of 600 rows; skipped 2: missing image file (1), answer not among options (1)."``

        Followed, when rows were skipped, by one line per reason with examples of what is at
        fault: ``"  missing image file: row q17 (images/brain001.png)"``.
        """
        text = f"Loaded {self.loaded} of {self.total} rows"
        if self.skipped:
            reasons = ", ".join(f"{reason} ({count})" for reason, count in self.skipped.most_common())
            text += f"; skipped {sum(self.skipped.values())}: {reasons}"
        if self.not_selected:
            text += f"; {self.not_selected} rows outside the selected subset/modality were not considered"
        lines = [text + "."]
        for reason, _ in self.skipped.most_common():
            shown = "; ".join(
                f"row {row_id}" + (f" ({detail})" if detail else "")
                for row_id, detail in self.examples.get(reason, [])
            )
            more = self.skipped[reason] - len(self.examples.get(reason, []))
            lines.append(f"  {reason}: {shown}" + (f"; and {more} more" if more > 0 else ""))
        return "\n".join(lines)

    def first_example(self, reason: str) -> str | None:
        """What is at fault in the first row skipped for ``reason`` (a path, an answer), if any."""
        shown = self.examples.get(reason) or []
        return shown[0][1] if shown and shown[0][1] else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "loaded": self.loaded,
            "total": self.total,
            "skipped": dict(self.skipped.most_common()),
            "examples": {reason: [list(example) for example in shown] for reason, shown in self.examples.items()},
            "not_selected": self.not_selected,
            "summary": self.summary(),
        }


def no_records_message(
    data: str | Path,
    data_root: str | Path | None,
    report: LoadReport,
    *,
    purpose: str,
    root_flag: str = "--data_root",
) -> str:
    """Why no question is left to ``purpose`` ("evaluate", "train on"), and where missing images were looked for.

    ``root_flag`` is how the command asking spells its image-folder flag (``train`` follows TRL's ``--data_root``,
    ``medvlm campaign`` its own ``--data-root``), so the hint names a flag that exists.
    """
    text = f"No question left to {purpose} in {data}. {report.summary()}"
    missing = report.first_example("missing image file")
    if missing is not None:
        where = f"{root_flag} {data_root}" if data_root else f"the data file's folder (no {root_flag} was given)"
        text += (
            f"\nImages are looked for under {where}: the first missing one was {missing}. "
            f"Pass {root_flag} with the folder that holds the images (e.g. the dataset downloaded with hf download "
            "--repo-type dataset)."
        )
    return text


# -- names -----------------------------------------------------------------------------------------


def normalize_modality(name: str | None) -> str | None:
    """The canonical modality for a name in any of the spellings of :data:`MODALITIES`, else None.

    The name is read up to its first "(" (so "MR (Mag-netic Resonance Imaging)" is "MR" and the
    unclosed "OCT (Optical Coherence Tomography" is "OCT"), ignoring case, spaces and punctuation;
    failing that, the whole name is tried ("Magnetic Resonance Imaging (MRI)").
    """
    if not name or not isinstance(name, str):
        return None
    for text in (name.split("(", 1)[0], name):
        key = re.sub(r"[^a-z0-9]", "", text.casefold())
        if key in MODALITIES:
            return MODALITIES[key]
    return None


def split_inline_options(problem: str) -> tuple[str, list[str]] | None:
    """Split Med-R1's ``"Question? A)opt, B)opt, C)opt"`` into the question and the option texts.

    Options may contain commas ("Lung, left lobe"): an option ends only where the *next* letter's
    label starts (``", B)"``, or a line break before it, as in MedVLM-R1's ``problem``). The options
    block is the last ``A)`` (after a space, or at the start) from which at least two labels follow
    in order, so a stray "A)" inside an option does not cut the list short. None when no such block.
    """
    starts = [match.start(1) for match in re.finditer(r"(?:^|\s)(A\))", problem)]
    for start in reversed(starts):
        options = _options_from(problem, start)
        if len(options) >= MIN_OPTIONS:
            return problem[:start].strip(), options
    return None


def _options_from(problem: str, start: int) -> list[str]:
    options: list[str] = []
    position = start + 2  # past "A)"
    for letter in LETTERS[1:]:
        boundary = re.compile(rf"\s*[,\n]\s*{letter}\)").search(problem, position)
        if boundary is None:
            break
        options.append(problem[position : boundary.start()].strip())
        position = boundary.end()
    options.append(problem[position:].strip())
    return options


def _split_category(path: Path | None) -> tuple[str | None, str | None, str | None]:
    """(modality, question type, name) of a Med-R1 split file, from ``<name>_{train,test}.json``."""
    if path is None:
        return None, None, None
    name = _SPLIT_SUFFIX.sub("", path.stem)
    if modality := normalize_modality(name):
        return modality, None, name
    question_type = next((known for known in QUESTION_TYPES if known.casefold() == name.casefold()), None)
    return None, question_type, name if question_type else None


# -- reading sources -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Origin:
    """Where a batch of rows came from: a file, or a Hub dataset."""

    name: str
    path: Path | None
    """The file; None for a Hub dataset."""
    root: Path | None
    """Relative image paths are resolved against this (``data_root``, else the file's folder)."""
    blob_root: Path
    """Where images stored as bytes are written."""


class _Skip(Exception):
    """A row that cannot become a record; ``reason`` is what the LoadReport counts, ``detail`` what is at fault."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


def _read_sources(source: str | Path, data_root: Path | None, split: str) -> Iterator[tuple[_Origin, Iterable[Any]]]:
    path = Path(source).expanduser()
    if path.is_dir():
        files = _data_files(path) or _data_files(path / "data")  # data/: a datasets export, as campaigns write
        if not files:
            raise DatasetError(
                f"The folder {path} holds no .json, .jsonl or .parquet file, nor a data/ folder of them (other "
                "sub-folders are not searched)."
            )
    elif path.is_file():
        files = [path]
    elif _HUB_ID.match(str(source)) and not str(source).startswith("."):
        yield _hub_origin(str(source), data_root), _hub_rows(str(source), split)
        return
    else:
        raise DatasetError(
            f"No data file or folder at {source}, and it is not a Hugging Face Hub dataset id (org/name)."
        )
    for file in files:
        root = (data_root or file.parent).resolve()
        yield _Origin(name=file.stem, path=file.resolve(), root=root, blob_root=root), _file_rows(file)


def _data_files(folder: Path) -> list[Path]:
    """The data files directly in ``folder`` (none if it is no folder), in name order."""
    if not folder.is_dir():
        return []
    return sorted(child for child in folder.iterdir() if child.is_file() and child.suffix.lower() in _DATA_SUFFIXES)


def _file_rows(path: Path) -> Iterable[Any]:
    """Rows of a .json (a list), .jsonl (one object per line; unreadable lines yield None) or .parquet file."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise DatasetError(f"Could not read {path}: {error}") from error
    if suffix == ".jsonl":
        return [_json_or_none(line) for line in text.splitlines() if line.strip()]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path} is not valid JSON ({error}); for one object per line, name it .jsonl.") from error
    if not isinstance(data, list):
        raise DatasetError(f"{path} should hold a JSON list of records, not a {type(data).__name__}.")
    return data


def _json_or_none(line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


def _hub_origin(dataset_id: str, data_root: Path | None) -> _Origin:
    import datasets

    blob_root = data_root or Path(datasets.config.HF_DATASETS_CACHE) / "medvlm-images" / dataset_id.replace("/", "--")
    return _Origin(
        name=dataset_id, path=None, root=data_root.resolve() if data_root else None, blob_root=blob_root.resolve()
    )


def _hub_rows(dataset_id: str, split: str) -> Iterable[dict[str, Any]]:
    """Rows of a Hub dataset, with image features left as bytes (decoded later, by our loader)."""
    import datasets

    try:
        dataset = datasets.load_dataset(dataset_id, split=split)
    except Exception as error:  # noqa: BLE001 - network, auth, missing split: all mean "cannot read it"
        raise DatasetError(
            f"Could not load the Hub dataset {dataset_id} (split {split!r}): {error}. Check the id and your network, "
            "or download it first (hf download --repo-type dataset ID --local-dir DIR) and pass the local file."
        ) from error
    for name, feature in dataset.features.items():
        if isinstance(feature, datasets.Image):
            dataset = dataset.cast_column(name, datasets.Image(decode=False))
    return dataset


# -- one parser per format: row -> _Row --------------------------------------------------------------


@dataclass
class _Row:
    """A row in the common shape, before validation."""

    image: Any
    question: Any
    options: Any
    answer: Any
    """The gold answer as the row gives it: a letter (or ``<answer> C </answer>``), or the option text."""
    answer_is_text: bool = False
    modality: str | None = None
    question_type: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _parse_huatuo(row: Mapping[str, Any], origin: _Origin) -> _Row:
    return _Row(
        image=row.get("image"),
        question=row.get("question"),
        options=_options_list(row.get("options")),
        answer=row.get("answer"),
        answer_is_text=True,
        modality=normalize_modality(row.get("subset")),
        question_type=row.get("question_type"),
        extra=_pick(row, ("dataset", "subset")),
    )


def _parse_medvlm_r1(row: Mapping[str, Any], origin: _Origin) -> _Row:
    """HuatuoGPT's fields, but the letter comes from ``solution`` (what MedVLM-R1 scored against)."""
    parsed = _parse_huatuo(row, origin)
    parsed.answer, parsed.answer_is_text = row.get("solution"), False
    return parsed


def _parse_med_r1(row: Mapping[str, Any], origin: _Origin) -> _Row:
    problem = row.get("problem")
    split = split_inline_options(problem) if isinstance(problem, str) else None
    if split is None:
        raise _Skip("options not found in problem", f"problem {str(problem)[:60]!r}")
    question, options = split
    modality, question_type, category = _split_category(origin.path)
    return _Row(
        image=row.get("image"),
        question=question,
        options=options,
        answer=row.get("solution"),
        modality=modality,
        question_type=question_type,
        extra={"subset": category} if category else {},
    )


_JSONL_FIELDS = ("id", "image", "question", "options", "answer", "modality", "question_type")


def _parse_jsonl(row: Mapping[str, Any], origin: _Origin) -> _Row:
    return _Row(
        image=row.get("image"),
        question=row.get("question"),
        options=_options_list(row.get("options")),
        answer=row.get("answer"),
        modality=_modality_or_given(row.get("modality")),
        question_type=row.get("question_type") or None,
        extra={key: value for key, value in row.items() if key not in _JSONL_FIELDS},
    )


_ANNOTATION_EXTRA = (
    "output_id",
    "reviewer",
    "flags",
    "comment",
    "model_id",
    "letter",
    "format_ok",
    "is_correct",
    "prompt_style",
)


def _parse_annotation(row: Mapping[str, Any], origin: _Origin) -> _Row:
    if not row.get("correct_answer"):
        raise _Skip("no correct answer", "field correct_answer")
    return _Row(
        image=row.get("image"),
        question=row.get("question"),
        options=_options_list(row.get("options")),
        answer=row.get("correct_answer"),
        modality=_modality_or_given(row.get("modality")),
        extra=_pick(row, _ANNOTATION_EXTRA),
    )


_PARSERS = {
    "huatuo": _parse_huatuo,
    "medvlm-r1": _parse_medvlm_r1,
    "med-r1": _parse_med_r1,
    "jsonl": _parse_jsonl,
    "annotations": _parse_annotation,
}


def detect_format(row: Mapping[str, Any]) -> str | None:
    """The format a row's fields say it is in (one of :data:`FORMATS`), or None."""
    keys = set(row)
    if "correct_answer" in keys and keys & {"completion", "flags"}:
        return "annotations"
    if {"problem", "solution"} <= keys:
        return "medvlm-r1" if {"question", "options"} <= keys else "med-r1"
    if {"question", "options", "answer"} <= keys:
        # Ours names one image and the answer's letter; HuatuoGPT's lists images and gives the text.
        single_image = not isinstance(row.get("image"), (list, tuple))
        return "jsonl" if single_image and solution_letter(row.get("answer")) else "huatuo"
    return None


def _options_list(value: Any) -> Any:
    """Options as a list; some JSON conversions store the list as a JSON string."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return value  # validate_question refuses a single string with its own message
    return list(value) if isinstance(value, (list, tuple)) else value


def _letter_of_text(answer: Any, options: Sequence[str]) -> str | None:
    """The letter of the option whose text is ``answer`` (exactly, else ignoring case and spacing)."""
    if not isinstance(answer, str):
        return None
    for wanted, texts in (
        (answer, list(options)),
        (normalize_option_text(answer), [normalize_option_text(text) for text in options]),
    ):
        if wanted in texts:
            return LETTERS[texts.index(wanted)]
    return None


def _modality_or_given(value: Any) -> str | None:
    """Our own formats keep a modality we do not recognise (e.g. "Endoscopy") as written."""
    if not isinstance(value, str) or not value.strip():
        return None
    return normalize_modality(value) or value.strip()


def _pick(row: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    return {key: row[key] for key in keys if row.get(key) is not None}


# -- validation ------------------------------------------------------------------------------------


def _refusal_reason(question: Any, options: Any) -> str:
    """Names, for the report, why ``validate_question`` refused a question/options pair.

    ``validate_question`` decides (so the app and the data agree on what a valid question is);
    this only names its refusal.
    """
    if not isinstance(question, str) or not question.strip():
        return "empty question"
    if not isinstance(options, list):
        return "options not a list"
    if len(options) < MIN_OPTIONS:
        return "fewer than two options"
    if len(options) > MAX_OPTIONS:
        return "more than ten options"
    if not all(isinstance(option, str) and option.strip() for option in options):
        return "empty option"
    return "duplicate options"


def _image_path(image: Any, origin: _Origin) -> Path:
    """The image file a row names: a path, a one-element list of paths, or ``{"bytes", "path"}``."""
    if isinstance(image, (list, tuple)):
        if len(image) > 1:
            raise _Skip("more than one image", f"field image has {len(image)}")  # the prompt has one image slot
        image = image[0] if image else None
    if isinstance(image, Mapping):
        if image.get("bytes"):
            return _write_blob(image["bytes"], image.get("path"), origin.blob_root)
        image = image.get("path")
    if not isinstance(image, str) or not image.strip():
        raise _Skip("no image", "field image")
    path = Path(image).expanduser()
    if not path.is_absolute():
        if origin.root is None:
            raise DatasetError(
                f"{origin.name} names its images by relative paths ({image!r}); pass the folder that holds them "
                "as data_root (--data-root), e.g. the dataset repository downloaded with hf download --repo-type "
                "dataset."
            )
        path = origin.root / path
    return path.resolve()


def _write_blob(data: bytes, name: str | None, root: Path) -> Path:
    """Write image bytes once, under the name the row gives (if a safe relative path) or their hash."""
    relative = Path(name) if name else None
    if relative is None or relative.is_absolute() or ".." in relative.parts or relative.parent == Path("."):
        suffix = relative.suffix if relative is not None and relative.suffix else ".png"
        relative = Path("images") / f"{hashlib.sha256(data).hexdigest()}{suffix}"
    target = (root / relative).resolve()
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, data)
    return target


def _image_problem(path: Path, check_images: bool) -> str | None:
    if not path.is_file():
        return "missing image file"
    if check_images:
        try:
            load_image(path)
        except ImageLoadError:
            return "unreadable image"
    return None


# -- the entry point -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordSource:
    """Where a run's questions come from: the options of :func:`load_records` every command exposes.

    ``train.evaluate``, ``train.grpo`` and ``medvlm campaign create --data`` each build one from
    their own flags, so a new way to select rows is added here once, not three times.
    """

    source: str | Path
    format: str = "auto"
    data_root: str | Path | None = None
    subset: str | None = None
    modality: str | None = None
    limit: int | None = None
    split: str = "test"
    check_images: bool = True

    def load(self, image_files: Mapping[str, str | Path] | None = None) -> tuple[list[VQARecord], LoadReport]:
        """The records and the report of what was skipped (:func:`load_records`)."""
        return load_records(
            self.source,
            format=self.format,
            data_root=self.data_root,
            subset=self.subset,
            modality=self.modality,
            limit=self.limit,
            split=self.split,
            check_images=self.check_images,
            image_files=image_files,
        )

    def describe(self) -> dict[str, Any]:
        """What a report or a run's metadata records of the data: where it came from and how it was selected."""
        return {
            "source": str(self.source),
            "data_root": None if self.data_root is None else str(self.data_root),
            "subset": self.subset,
            "modality": self.modality,
            "split": self.split,
            "limit": self.limit,
        }


def load_records(
    source: str | Path,
    *,
    format: str = "auto",
    data_root: str | Path | None = None,
    subset: str | None = None,
    modality: str | None = None,
    limit: int | None = None,
    split: str = "test",
    check_images: bool = True,
    image_files: Mapping[str, str | Path] | None = None,
) -> tuple[list[VQARecord], LoadReport]:
    """Read multiple-choice VQA rows from a file, a folder of files, or a Hub dataset.

    ``source``: a ``.json``/``.jsonl``/``.parquet`` file; a folder (its data files, not its
    sub-folders: Med-R1 keeps train and test splits in sibling folders, which must not mix; a folder
    with none of its own but a ``data/`` of them, as ``datasets`` and a campaign export lay it out,
    is read from there); or a Hub dataset id, loaded with ``datasets.load_dataset(source,
    split=split)`` (needs network).
    ``data_root``: the folder relative image paths start from (default: the file's folder).
    ``subset`` keeps rows whose original subset is exactly this string (HuatuoGPT's ``subset``
    field, or a Med-R1 split's file name such as "MR (Mag-netic Resonance Imaging)");
    ``modality`` keeps rows of one modality, in any spelling :func:`normalize_modality` knows.
    ``limit`` stops after that many valid records (MedVLM-R1 trained on the first 500 MRI rows).
    ``check_images`` decodes every image up front (with :func:`medvlm.images.load_image`), so that
    an unreadable file is a counted skip now rather than a crash mid-run; a missing file is
    always a skip. ``image_files`` (file name -> path) are images uploaded with the data file, as
    the app receives them: a row's image is then the uploaded file of the same name, and a row
    whose image was not uploaded is skipped as ``"image not uploaded"``.

    Bad rows are skipped and counted in the returned :class:`LoadReport`; a source that cannot
    be read at all raises :class:`DatasetError`.

    Args:
        source: a data file, a folder of them, or a Hub dataset id.
        format: "auto" (detected per file from its first row) or one of :data:`FORMATS`.
        data_root, subset, modality, limit, split, check_images, image_files: as described above.

    Returns:
        The usable records, in file order, and the report of what was loaded and skipped.

    Example:
        >>> questions = Path(__file__).resolve().parents[1] / "assets" / "questions.json"  # in a checkout
        >>> records, report = load_records(questions, modality="MRI")
        >>> report.summary()
        'Loaded 2 of 2 rows; 4 rows outside the selected subset/modality were not considered.'
        >>> records[0].options, records[0].answer, records[0].image_path.name
        (('Spleen', 'Liver', 'Heart', 'Urinary bladder'), 'B', 'mr_abdomen.dcm')
    """
    if format != "auto" and format not in FORMATS:
        raise DatasetError(f"Unknown data format {format!r}; choose one of: auto, {', '.join(FORMATS)}.")
    if limit is not None and limit < 1:
        raise DatasetError(f"The limit must be at least 1 (got {limit}).")
    wanted_modality = (normalize_modality(modality) or modality.strip()) if modality else None
    root = Path(data_root).expanduser() if data_root is not None else None
    records: list[VQARecord] = []
    report = LoadReport()
    for row_id, origin, row_format, row in _tagged_rows(source, root, split, format):
        if limit is not None and len(records) >= limit:
            break
        try:
            if row is None:
                raise _Skip("malformed row")
            parsed = _PARSERS[row_format](row, origin)
            if (subset is not None and parsed.extra.get("subset") != subset) or (
                wanted_modality is not None and parsed.modality != wanted_modality
            ):
                report.not_selected += 1
                continue
            records.append(_validated(row_id, parsed, origin, row_format, check_images, image_files))
        except _Skip as skip:
            report.skip(row_id, skip.reason, skip.detail)
    report.loaded = len(records)
    return records, report


def _tagged_rows(
    source: str | Path, root: Path | None, split: str, format: str
) -> Iterator[tuple[str, _Origin, str, Mapping[str, Any] | None]]:
    """(row id, origin, format, row or None if not an object) for every row, lazily, file by file.

    The id is the row's own ``id`` field, else ``<file stem>:<index>``; ``"auto"`` is resolved per
    file from its first object.
    """
    for origin, rows in _read_sources(source, root, split):
        row_format = None if format == "auto" else format
        for index, row in enumerate(rows):
            if not isinstance(row, Mapping):
                yield f"{origin.name}:{index}", origin, row_format or "jsonl", None
                continue
            if row_format is None and (row_format := detect_format(row)) is None:
                raise DatasetError(
                    f"Cannot tell the format of {origin.name} from its fields ({', '.join(sorted(map(str, row)))}); "
                    f"pass format= (--format) as one of: {', '.join(FORMATS)}."
                )
            row_id = str(row["id"]) if row.get("id") is not None else f"{origin.name}:{index}"
            yield row_id, origin, row_format, row


def _validated(
    row_id: str,
    row: _Row,
    origin: _Origin,
    row_format: str,
    check_images: bool,
    image_files: Mapping[str, str | Path] | None,
) -> VQARecord:
    """The record for a parsed row, or ``_Skip``: question and options, then answer, then image."""
    try:
        question, options = validate_question(row.question, row.options)
    except QuestionError as error:
        raise _Skip(_refusal_reason(row.question, row.options), str(error)) from None
    answer = _letter_of_text(row.answer, options) if row.answer_is_text else solution_letter(row.answer)
    if answer is None or answer not in LETTERS[: len(options)]:
        raise _Skip(
            "answer not among options",
            f"answer {str(row.answer)[:60]!r}, options {', '.join(LETTERS[: len(options)])}",
        )
    image_path = _image_path(row.image, origin)
    if image_files is not None:
        if image_path.name not in image_files:
            raise _Skip("image not uploaded", image_path.name)
        image_path = Path(image_files[image_path.name])
    if problem := _image_problem(image_path, check_images):
        raise _Skip(problem, str(image_path))
    return VQARecord(
        id=row_id,
        image_path=image_path,
        question=question,
        options=tuple(options),
        answer=answer,
        modality=row.modality,
        question_type=row.question_type,
        source=row_format,
        extra=row.extra,
    )


# -- checks and conversions ------------------------------------------------------------------------
