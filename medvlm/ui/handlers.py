"""The app's event handlers: ordinary functions (generators when they stream), testable without a browser.

Two kinds of state, kept apart on purpose:

* :class:`Workbench` holds what every user shares and what is created once at start-up: the
  model (or why it could not be loaded), the annotation store, the optional Hub sync, the
  example cases. Handlers are its methods, so the layout wires ``workbench.ask`` and a test calls
  the very same function.
* :class:`Session` holds one browser tab's state, in a ``gr.State``: the uploaded file's bytes
  (in memory only: never written to the data folder), the rendered image the model will see,
  the stop switch of the running generation, and the last finished answer, which is what a
  review is attached to.

Every problem a user can fix arrives as a :class:`~medvlm.errors.MedVLMError` and is shown as
its message, never as a traceback. Nothing here logs file names, image metadata or answers:
file names can carry patient names.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import gradio as gr
import pandas as pd
from gradio.utils import get_upload_folder as gradio_upload_folder
from PIL import Image

from medvlm.annotations import FLAGS, AnnotationStore, ModelOutput, Review
from medvlm.dicom import WINDOW_PRESETS, Window
from medvlm.errors import ImageLoadError, MedVLMError, ModelLoadError, QuestionError
from medvlm.fast_cpu import has_fast_bf16
from medvlm.fidelity import FidelityGuard, FidelityVerdict
from medvlm.hub_sync import HubSync, hub_sync_from_env
from medvlm.images import MAX_INPUT_BYTES, LoadedImage, load_image, read_input
from medvlm.model import LoadedModel, load_model
from medvlm.prompt import LETTERS, PromptStyle, validate_question
from medvlm.published import model_prompt_style
from medvlm.review_stats import flag_rates, reviewer_agreement, summary_text
from medvlm.streaming import GenerationSettings, StreamUpdate, stream_completion
from medvlm.ui import render
from medvlm.ui.config import AppConfig
from medvlm.user_text import escape_markdown

logger = logging.getLogger(__name__)

FILE_DEFAULT = "File default"
CUSTOM = "Custom"
WINDOW_CHOICES = [FILE_DEFAULT, *WINDOW_PRESETS, CUSTOM]
ANY = "Any"
GPU_DURATION_S = 120
"""Seconds of ZeroGPU time asked for per answer: 512 tokens of a 2B model with room to spare."""
TABLE_LIMIT = 1000
"""Most rows in the Reviews table (the summary and the exports always cover every match)."""


# -- per-tab state -------------------------------------------------------------------------------


@dataclass
class Session:
    """One browser tab's state. Lives in a ``gr.State``, so no other user ever sees it."""

    file_bytes: bytes | None = None
    """The uploaded file, kept in memory to re-render it with another window or frame."""
    image: LoadedImage | None = None
    """The rendered image exactly as the model will see it, with its safe metadata."""
    source_label: str | None = None
    """"Example: ..." for an example case; None for an upload (whose name is never shown or kept)."""
    options: list[str] = field(default_factory=list)
    """The options of the question being answered (to redraw the panel when stopped)."""
    cancel: threading.Event | None = None
    """Set to stop the running generation; None when nothing runs."""
    last_output: ModelOutput | None = None
    """The last finished answer: what a review is saved against."""
    evaluation: list[dict[str, Any]] = field(default_factory=list)
    """Samples of an imported evaluation run (``samples.jsonl`` from ``train.evaluate``), to review one by one."""
    evaluation_images: dict[str, bytes] = field(default_factory=dict)
    """The image files uploaded with those samples, by file name (in memory: the uploads are deleted)."""
    case_version: int = 0
    """Counts the cases shown in this tab; an answer generated for an earlier one is never kept."""

    @property
    def generating(self) -> bool:
        return self.cancel is not None

    def new_case(self) -> None:
        """Another case is now on screen: stop the running generation and forget the answer on show.

        This is what makes a review belong to what is on screen: after it, no save can attach to
        the previous case's output, and a generation still running for it is discarded.
        """
        if self.cancel is not None:
            self.cancel.set()
        self.last_output = None
        self.case_version += 1

    def close(self) -> None:
        """Stop this tab's generation (the tab was closed or its state expired)."""
        if self.cancel is not None:
            self.cancel.set()


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


@dataclass(frozen=True)
class _Request:
    """A validated question, ready for the model."""

    image: LoadedImage
    question: str
    options: list[str]
    correct: str | None
    settings: GenerationSettings
    style: PromptStyle


# -- what each event changes on the page --------------------------------------------------------
#
# Each handler returns (or yields) one of these. Their fields name the components they update, in
# the order of the event's outputs list, which the layout builds from the same fields
# (``layout.outputs_of``), so the two cannot drift apart. A field holds a value, a ``gr.update``
# or ``gr.skip()``.

_ANSWER_FIELDS = ("answer", "reasoning", "raw_output", "timing")
_REVIEW_FIELDS = ("flags", "comment", "review_status", "output_id", "review_target")
_IMAGE_FIELDS = ("preview", "image_info", "dicom_controls", "frame", "error")


def _page_event(name: str, fields: Sequence[str], doc: str) -> type[tuple]:
    """A NamedTuple class with these fields (each a value, a ``gr.update`` or ``gr.skip()``)."""
    event = NamedTuple(name, [(field_name, Any) for field_name in fields])
    event.__doc__ = doc
    return event


CaseShown = _page_event(
    "CaseShown",
    (*_IMAGE_FIELDS, *_ANSWER_FIELDS, *_REVIEW_FIELDS),
    "An upload, or its removal: the image and its controls, and the answer area emptied.",
)
ImageRendered = _page_event(
    "ImageRendered",
    ("preview", "image_info", "custom_window", "center", "width", "error", *_ANSWER_FIELDS, *_REVIEW_FIELDS),
    "Another window or frame of the same file (the answer area emptied when the image changed).",
)
ExampleShown = _page_event(
    "ExampleShown",
    (
        "upload",
        *_IMAGE_FIELDS,
        "window",
        "custom_window",
        "question",
        "options",
        "correct",
        *_ANSWER_FIELDS,
        *_REVIEW_FIELDS,
    ),
    "An example case: its image, question, options and window, and the answer area emptied.",
)
SampleShown = _page_event(
    "SampleShown",
    ("preview", "image_info", "question", "options", "correct", *_ANSWER_FIELDS, "error", *_REVIEW_FIELDS),
    "A sample of an imported evaluation run, shown as a finished answer ready for review.",
)
EvaluationLoaded = _page_event(
    "EvaluationLoaded",
    (*SampleShown._fields, "evaluation_sample"),
    "An imported run: its first sample, and the sample slider.",
)
AskUpdate = _page_event(
    "AskUpdate",
    (*_ANSWER_FIELDS, "error", "output_id", "review_target"),
    "One step of a streamed answer; the last one names the answer (``output_id``) for the review.",
)


def _skips(fields: Sequence[str]) -> dict[str, Any]:
    return {name: gr.skip() for name in fields}


# -- helpers that need no workbench --------------------------------------------------------------


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


def split_options(text: str | None) -> list[str]:
    """The options typed one per line; blank lines are ignored."""
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


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


def window_from(choice: str | None, center: Any = None, width: Any = None) -> Window:
    """The display window chosen in the UI (raises ImageLoadError for an incomplete or non-numeric custom one)."""
    if choice in (None, "", FILE_DEFAULT):
        return Window()
    if choice == CUSTOM:
        try:
            return Window(center=as_number(center, "The window centre"), width=as_number(width, "The window width"))
        except ImageLoadError:
            raise
        except MedVLMError as error:
            raise ImageLoadError(str(error)) from None
    if not isinstance(choice, str):
        raise ImageLoadError(f"Unknown window preset {choice!r}.")
    return Window(preset=choice)


def as_number(value: Any, what: str, *, whole: bool = False) -> float | int | None:
    """A value from a number field or slider, as sent by a browser or an API client; None when empty.

    The components pass values through unchecked (:mod:`medvlm.ui.components`), so this is where
    ``"abc"``, ``inf`` or ``1.5`` for a count gets a sentence naming the field.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise MedVLMError(f"{what} must be a number (got {value!r}).")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise MedVLMError(f"{what} must be a number (got {str(value)[:40]!r}).") from None
    if not math.isfinite(number):
        raise MedVLMError(f"{what} must be a finite number (got {str(value)[:40]!r}).")
    if whole:
        if number != int(number):
            raise MedVLMError(f"{what} must be a whole number (got {str(value)[:40]!r}).")
        return int(value) if isinstance(value, int) else int(number)
    return number


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


def on_zero_gpu(fn: Callable[..., Any], *, duration: int = GPU_DURATION_S) -> Callable[..., Any]:
    """``spaces.GPU(duration=...)(fn)`` where the ``spaces`` package imports (Hugging Face Spaces), else ``fn``.

    On a ZeroGPU Space the decorator attaches a GPU for each call; elsewhere it does nothing, and
    off Spaces the package is usually absent.
    """
    try:
        import spaces
    except ImportError:
        return fn
    return spaces.GPU(duration=duration)(fn)


def generate(
    loaded: LoadedModel,
    image: Image.Image,
    question: str,
    options: Sequence[str],
    settings: GenerationSettings,
    style: PromptStyle,
    cancel: threading.Event,
) -> Iterator[StreamUpdate]:
    """The one function that needs the accelerator (so ZeroGPU holds a GPU only while it runs)."""
    yield from stream_completion(loaded, image, question, options, settings, style=style, cancel=cancel)


def _frame_update(image: LoadedImage | None) -> dict[str, Any]:
    if image is None or image.metadata.frame_count < 2:
        return gr.update(visible=False)
    count = image.metadata.frame_count
    return gr.update(
        visible=True,
        minimum=0,
        maximum=count - 1,
        step=1,
        value=image.metadata.frame_index,
        label=f"Frame (0 to {count - 1})",
    )


def _is_windowable(image: LoadedImage | None) -> bool:
    """Greyscale DICOMs take a display window; colour DICOMs and raster images do not."""
    return image is not None and image.metadata.window_name is not None


def _seed(text: str | None, *, sampling: bool) -> int | None:
    """The typed seed; when sampling without one, a fresh random seed, recorded so the answer can be reproduced."""
    text = "" if text is None else str(text).strip()
    if not text:
        return secrets.randbelow(2**31) if sampling else None
    try:
        return int(text)
    except ValueError:
        raise MedVLMError(f"The seed must be a whole number, or empty for a random one (got {text!r}).") from None


def _or(value: float | int | None, default: float) -> float:
    return default if value is None else float(value)


def _any(value: str | None) -> str | None:
    return None if value in (None, "", ANY) else value


# -- the shared workbench ------------------------------------------------------------------------


class Workbench:
    """The shared resources, created once at start-up, and the handlers that use them."""

    def __init__(
        self,
        config: AppConfig,
        *,
        model: LoadedModel | None,
        store: AnnotationStore,
        load_error: str | None = None,
        hub_sync: HubSync | None = None,
        examples: Sequence[Example] = (),
        notices: Sequence[str] = (),
    ) -> None:
        self.config = config
        self.model = model
        self.load_error = load_error
        self.store = store
        self.hub_sync = hub_sync
        self.examples = list(examples)
        self.notices = list(notices)
        """Start-up problems a maintainer should see (shown in the banner), e.g. a failed Hub sync."""
        self._generate = on_zero_gpu(generate)
        self.fidelity: FidelityGuard | None = None
        """The background check of the CPU fast path (None when it does not apply)."""
        self._model_lock = threading.Lock()
        self._exports = tempfile.TemporaryDirectory(prefix="medvlm-exports-")

    @classmethod
    def start(cls, config: AppConfig) -> Workbench:
        """Load the model, open the store, start the Hub sync if configured, read the examples.

        A model that cannot be loaded (no network, wrong path, out of memory, anything) does not
        stop the app: the banner says why and what to do, and the Reviews tab still works.
        """
        model, load_error = None, None
        try:
            model = load_model(config.model, fast_cpu=config.fast_cpu)
        except MedVLMError as error:
            load_error = str(error)
            logger.error("Model not loaded: %s", error)
        except Exception as error:  # noqa: BLE001 - any failure must leave a working app behind
            detail = str(error).strip().splitlines()[0] if str(error).strip() else "no details"
            load_error = f"Could not load {config.model} ({type(error).__name__}: {detail})."
            logger.exception("Model not loaded")
        store = AnnotationStore(config.data_dir)
        notices, hub_sync = [], None
        try:
            hub_sync = hub_sync_from_env(store)
        except MedVLMError as error:
            notices.append(f"Reviews are saved locally only: {error}")
            logger.error("Hub sync not started: %s", error)
        workbench = cls(
            config,
            model=model,
            store=store,
            load_error=load_error,
            hub_sync=hub_sync,
            examples=load_examples(config.examples_file),
            notices=notices,
        )
        if config.fidelity_check and model is not None and model.fast_cpu is not None and model.fast_cpu.quantized:
            workbench.fidelity = FidelityGuard(store.data_dir, model, workbench._use_full_precision)
            workbench.fidelity.start()  # in the background: the page does not wait for it
        return workbench

    def _use_full_precision(self, verdict: FidelityVerdict) -> None:
        """The fast path changes this model's answers: load it in full precision and answer with that."""
        try:
            full = load_model(self.config.model, fast_cpu=False, dtype="bf16" if has_fast_bf16() else "fp32")
        except Exception as error:  # noqa: BLE001 - keep the fast model, but say so
            self.notices.append(
                f"The CPU fast path disagrees with the full-precision model ({verdict.summary()}), "
                f"and the full-precision model could not be loaded ({error}). Treat answers with caution."
            )
            return
        with self._model_lock:
            self.model = full
        self.notices.append(
            f"The CPU fast path changed this model's answers ({verdict.summary()}), so answers now come from the "
            "full-precision model, which is slower."
        )

    def close(self) -> None:
        """Push pending reviews to the Hub and remove temporary exports."""
        if self.hub_sync is not None:
            self.hub_sync.stop()
        self._exports.cleanup()

    # -- what the page starts with ---------------------------------------------------------------

    def banner(self) -> str:
        """What is answering, as of now (the page asks again on every load: the fidelity check may have ended)."""
        fidelity = self.fidelity.status() if self.fidelity is not None else None
        text = render.model_banner(self.model, self.config.model, self.load_error, fidelity=fidelity)
        return "\n\n".join([text, *(render.error_markdown(notice) for notice in self.notices)])

    def default_style(self) -> PromptStyle:
        """The wording the model was trained with (its ``medvlm.json``, or the published id's), else the clean one."""
        if self.model is not None:
            return self.model.prompt_style
        return model_prompt_style(self.config.model)[0]

    def default_max_pixels(self) -> int | None:
        return self.model.max_pixels if self.model is not None else None

    # -- the image -------------------------------------------------------------------------------
    #
    # Every handler that puts another case on screen (an upload, an example, another window or
    # frame, an evaluation sample) calls ``session.new_case()`` and returns ``_cleared_answer``'s
    # outputs too: the previous answer, reasoning, review form and output id leave the page with
    # the case they belonged to.

    def load_file(
        self, session: Session, file: str | None, window: str | None = None, center: Any = None, width: Any = None
    ):
        """An upload: render it as the model will see it (DICOM window applied, middle frame).

        Returns a :class:`CaseShown`: the image as rendered, and the answer area emptied (see
        :meth:`_cleared_answer`). Gradio's copy of the file is deleted once read.
        """
        if not file:
            session.new_case()
            session.file_bytes, session.image, session.source_label = None, None, None
            return CaseShown(**self._image_fields(session, ""), **self._cleared_answer(session))
        try:
            chosen = window_from(window, center, width)
        except ImageLoadError as error:
            discard_upload(file)
            return CaseShown(**self._image_fields(session, str(error)), **self._cleared_answer(session))
        error = self._open(session, file, chosen)
        discard_upload(file)
        return CaseShown(**self._image_fields(session, error), **self._cleared_answer(session))

    @staticmethod
    def _open(session: Session, source: str | Path, window: Window | None) -> str:
        """Read a file once, render it into ``session`` as a new case; the error message, or "".

        The bytes are kept only when they may be rendered again (a DICOM's window, a frame of a
        multi-page file): a plain PNG or JPEG is not held in memory twice.
        """
        session.new_case()
        session.file_bytes, session.image, session.source_label = None, None, None
        try:
            data = read_input(source)
            session.image = load_image(data, window=window)
        except ImageLoadError as error:
            return str(error)
        metadata = session.image.metadata
        if metadata.source_format == "DICOM" or metadata.frame_count > 1:
            session.file_bytes = data
        return ""

    def clear_file(self, session: Session):
        """The upload was removed: forget its bytes, its image and the answer about it."""
        return self.load_file(session, None)

    def render_image(
        self, session: Session, window: str | None = None, center: Any = None, width: Any = None, frame: Any = None
    ):
        """Another window or frame: re-render the kept bytes.

        Returns an :class:`ImageRendered`, whose answer area is emptied when the rendering changed
        (the model's answer was about the old one) and left alone when nothing changed (leaving
        the centre box without editing it, say).
        Choosing "Custom" without a width fills in the window currently shown, so there is
        something to adjust.
        """
        custom = window == CUSTOM
        if custom and not width and session.image is not None:  # the browser sends an empty number as 0
            center, width = session.image.metadata.window_center, session.image.metadata.window_width
        controls = {
            "custom_window": gr.update(visible=custom),
            "center": gr.update(value=center),
            "width": gr.update(value=width),
        }
        unchanged = {
            "preview": gr.skip(),
            "image_info": gr.skip(),
            **controls,
            **_skips(_ANSWER_FIELDS + _REVIEW_FIELDS),
        }
        if session.file_bytes is None:
            return ImageRendered(**unchanged, error="")
        multi_frame = session.image is not None and session.image.metadata.frame_count > 1
        try:
            chosen = window_from(window, center, width)
            index = as_number(frame, "The frame number", whole=True) if multi_frame else None
            rendered = load_image(session.file_bytes, window=chosen, frame=index)
        except MedVLMError as error:
            return ImageRendered(**unchanged, error=render.error_markdown(str(error)))
        if session.image is not None and rendered.metadata == session.image.metadata:
            return ImageRendered(**unchanged, error="")
        label = session.source_label
        session.new_case()
        session.image, session.source_label = rendered, label
        return ImageRendered(
            preview=rendered.image,
            image_info=self._image_markdown(session),
            **controls,
            error="",
            **self._cleared_answer(session),
        )

    def load_example(self, index: int, session: Session):
        """An example case: its image, question, options, correct answer and window.

        Returns an :class:`ExampleShown` (the answer area emptied).
        """
        example = self.examples[index]
        window = example.window if example.window in WINDOW_PRESETS else FILE_DEFAULT
        error = self._open(session, example.file, window_from(window, None, None))
        if not error:
            session.source_label = f"Example: {example.label}"
        session.options = list(example.options)
        answer = example.answer if example.answer in LETTERS[: len(example.options)] else ""
        return ExampleShown(
            upload=None,
            **self._image_fields(session, error),
            window=window,
            custom_window=gr.update(visible=False),
            question=example.question,
            options="\n".join(example.options),
            correct=gr.update(choices=render.letter_choices(example.options), value=answer),
            **self._cleared_answer(session),
        )

    def load_evaluation(self, session: Session, files: str | Sequence[str] | None):
        """An evaluation run: its ``samples.jsonl``, uploaded with the image files it names.

        Images come from the upload (matched by file name) or from the folder the operator
        configured (``--evaluation-images``); a path inside ``samples.jsonl`` never makes the
        server open anything else. Gradio's copies of the uploads are deleted once read.
        Returns an :class:`EvaluationLoaded`: the first sample, and the sample slider.
        """
        session.evaluation, session.evaluation_images = [], {}
        paths = [files] if isinstance(files, str) else list(files or [])
        try:
            if not paths:
                return EvaluationLoaded(*self._no_sample(""), evaluation_sample=gr.update(visible=False))
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
                        f"The uploaded images come to more than {MAX_INPUT_BYTES // 2**20:,} MiB; review the run in "
                        "parts, "
                        "or have the operator start the app with --evaluation-images pointing at the images."
                    )
        except MedVLMError as error:
            return EvaluationLoaded(*self._no_sample(str(error)), evaluation_sample=gr.update(visible=False))
        finally:
            for path in paths:
                discard_upload(path)
        session.evaluation, session.evaluation_images = samples, images
        many = len(samples) > 1  # a slider needs a minimum below its maximum
        slider = gr.update(visible=many, minimum=1, maximum=max(len(samples), 2), value=1)
        return EvaluationLoaded(*self.show_evaluation_sample(session, 1), evaluation_sample=slider)

    def _evaluation_image(self, session: Session, index: int) -> LoadedImage:
        """The image of sample ``index``: uploaded with the samples, or inside the configured folder.

        Every other case (a path outside the folder, a missing file, the store's own images) gets
        the same sentence, so the answer reveals nothing about what exists on the server.
        """
        named = session.evaluation[index]["image"]
        name = file_name(named) if isinstance(named, str) else ""
        if name in session.evaluation_images:
            return load_image(session.evaluation_images[name])
        folder = self.config.evaluation_images
        if folder is not None and isinstance(named, str) and named.strip():
            root = Path(folder).resolve()
            candidate = (root / named).resolve()
            inside = root in candidate.parents and self.store.data_dir not in (candidate, *candidate.parents)
            if inside and candidate.is_file():
                return load_image(read_input(candidate))
        where = " or in the image folder this app was started with" if folder is not None else ""
        raise ImageLoadError(
            f"its image ({name or 'no file name'}) was not uploaded with the samples{where}. "
            "Upload samples.jsonl together with the image files it names."
        )

    def show_evaluation_sample(self, session: Session, number: Any):
        """Sample ``number`` (from 1) of the imported run, shown as if just answered, ready for review.

        Returns a :class:`SampleShown`. Reviewing the same sample twice (or by a second reviewer)
        meets one stored output: its id and every stored field are derived from the sample alone.
        """
        if not session.evaluation:
            return self._no_sample("Import a samples.jsonl first.")
        if session.generating:
            return self._no_sample("An answer is still being generated. Wait for it or press Stop first.")
        try:
            requested = as_number(number, "The sample number", whole=True) or 1
        except MedVLMError as error:
            return self._no_sample(str(error))
        index = min(max(requested, 1), len(session.evaluation)) - 1
        sample = session.evaluation[index]
        try:
            image = self._evaluation_image(session, index)
            question, options = validate_question(sample["question"], sample["options"])
        except MedVLMError as error:
            return self._no_sample(f"Sample {index + 1}: {error}")
        output = ModelOutput.from_sample(sample, image, index=index, question=question, options=options)
        correct, model = output.correct_answer, output.model
        session.new_case()
        session.file_bytes, session.image, session.options, session.last_output = None, image, options, output
        session.source_label = f"Evaluation sample {index + 1} of {len(session.evaluation)}"
        panel = render.answer_html(
            options,
            letter=output.letter,
            correct=correct,
            format_ok=output.format_ok,
            problem=output.problem,
            stop_reason=output.stop_reason,
        )
        model_name = model.get("model") or "unknown model"
        return SampleShown(
            preview=image.image,
            image_info=self._image_markdown(session),
            question=question,
            options="\n".join(options),
            correct=gr.update(choices=render.letter_choices(options), value=correct or ""),
            answer=panel,
            reasoning=output.reasoning,
            raw_output=output.completion,
            timing=escape_markdown(f"From an evaluation run of {model_name}; review it like a fresh answer."),
            error="",
            **self._review_reset(session),
        )

    @staticmethod
    def _no_sample(error: str) -> SampleShown:
        """Nothing on the page changes but the message (the case on screen, and its answer, stay)."""
        return SampleShown(**{**_skips(SampleShown._fields), "error": render.error_markdown(error)})

    def _image_fields(self, session: Session, error: str) -> dict[str, Any]:
        image = session.image
        return {
            "preview": image.image if image is not None else None,
            "image_info": self._image_markdown(session),
            "dicom_controls": gr.update(visible=_is_windowable(image)),
            "frame": _frame_update(image),
            "error": render.error_markdown(error),
        }

    @staticmethod
    def _review_reset(session: Session) -> dict[str, Any]:
        """The review form emptied, for the answer now on screen (named by its output id) or for none."""
        output = session.last_output
        return {
            "flags": [],
            "comment": "",
            "review_status": "",
            "output_id": output.output_id if output else "",
            "review_target": render.review_target(output, session.source_label),
        }

    def _cleared_answer(self, session: Session) -> dict[str, Any]:
        """The answer area emptied (the options shown lettered, nothing chosen) and the review form with it."""
        return {
            "answer": render.options_html(session.options),
            "reasoning": "",
            "raw_output": "",
            "timing": "",
            **self._review_reset(session),
        }

    @staticmethod
    def _image_markdown(session: Session) -> str:
        if session.image is None:
            return ""
        return render.image_markdown(session.image.metadata, label=session.source_label)

    # -- the question ----------------------------------------------------------------------------

    def preview_options(self, session: Session, options: str, correct: str | None):
        """The options as typed, lettered; the correct-answer choices follow them.

        While the options are those of the last answer (an evaluation sample just shown sets
        them too), that answer stays highlighted. Returns (answer panel, correct-answer dropdown).
        """
        parsed = split_options(options)[: len(LETTERS)]
        keep = correct if correct and correct in LETTERS[: len(parsed)] else ""
        output = session.last_output
        if output is not None and output.options == parsed and not session.generating:
            panel = render.answer_html(
                parsed,
                letter=output.letter,
                correct=keep or None,
                format_ok=output.format_ok,
                problem=output.problem,
                stop_reason=output.stop_reason,
            )
        else:
            panel = render.options_html(parsed)
        return panel, gr.update(choices=render.letter_choices(parsed), value=keep)

    def ask(
        self,
        session: Session,
        question: str,
        options: str,
        correct: str | None = None,
        decoding: str = "greedy",
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: str | None = None,
        max_new_tokens: float | None = 512,
        max_pixels: float | None = None,
        style: str | None = None,
    ) -> Iterator[AskUpdate]:
        """Stream the model's answer as :class:`AskUpdate` s.

        The reasoning grows with every piece of text; the last update highlights the chosen
        option (or says why there is none), keeps the finished answer in the session for the
        review and names it (its output id) so that a save says which answer it is for. Closing
        this generator (Gradio does on Stop, or when the tab goes away) stops the generation
        thread too. If another case is loaded meanwhile, the generation is stopped and its
        answer never shown or kept: the page belongs to the new case.
        """
        try:
            request = self._request(
                session,
                question,
                options,
                correct,
                decoding,
                temperature,
                top_p,
                seed,
                max_new_tokens,
                max_pixels,
                style,
            )
        except MedVLMError as error:
            yield AskUpdate(**{**_skips(AskUpdate._fields), "error": render.error_markdown(str(error))})
            return
        cancel = threading.Event()
        session.cancel, session.options, session.last_output = cancel, request.options, None
        case = session.case_version
        stream = self._generate(
            self.model, request.image.image, request.question, request.options, request.settings, request.style, cancel
        )
        final: StreamUpdate | None = None
        nothing = render.review_target(None, session.source_label)
        try:
            yield AskUpdate(
                answer=render.streaming_html(request.options, None),
                reasoning="",
                raw_output="",
                timing="Generating...",
                error="",
                output_id="",
                review_target=render.review_target(None, session.source_label, generating=True),
            )
            for update in stream:
                if session.case_version != case:
                    return  # another case was loaded: this answer belongs to nothing on screen
                if update.done:
                    final = update
                else:
                    yield AskUpdate(
                        answer=render.streaming_html(request.options, update),
                        reasoning=render.shown_reasoning(update),
                        raw_output=gr.skip(),
                        timing="Generating...",
                        error="",
                        output_id=gr.skip(),
                        review_target=gr.skip(),
                    )
        except MedVLMError as error:
            failed = render.error_markdown(str(error))
            yield AskUpdate(render.options_html(request.options), gr.skip(), gr.skip(), "", failed, "", nothing)
            return
        except Exception:  # noqa: BLE001 - the page must get a message, not a traceback
            logger.exception("Generation failed")
            failed = render.error_markdown(
                "Generation failed unexpectedly; the error was logged on the server. Please try again."
            )
            yield AskUpdate(render.options_html(request.options), gr.skip(), gr.skip(), "", failed, "", nothing)
            return
        finally:
            stream.close()
            if session.cancel is cancel:
                session.cancel = None
        if session.case_version != case:
            return
        assert final is not None, "stream_completion always ends with a done update"
        if final.stop_reason != "cancelled":
            session.last_output = self._model_output(request, final)
        output = session.last_output
        parsed = final.parsed
        panel = render.answer_html(
            request.options,
            letter=parsed.letter,
            correct=request.correct,
            format_ok=parsed.format_ok,
            problem=parsed.problem,
            stop_reason=final.stop_reason,
        )
        yield AskUpdate(
            answer=panel,
            reasoning=render.shown_reasoning(final),
            raw_output=final.text,
            timing=render.timing_markdown(final.timing, final.stop_reason),
            error="",
            output_id=output.output_id if output else "",
            review_target=render.review_target(output, session.source_label),
        )

    def stop(self, session: Session):
        """The Stop button: end this tab's generation after the current token.

        Returns (answer panel, timing). Gradio's ``cancels`` also closes the streaming handler;
        setting the event as well stops the generation thread even when that close comes late
        (or never, for an API client that calls only this endpoint).
        """
        if session.cancel is None:
            return gr.skip(), "Nothing is being generated."
        session.cancel.set()
        return render.options_html(session.options, status="Stopped", warnings=[render.STOPPED]), "Stopped by you."

    def show_answer(self, session: Session, correct: str | None):
        """The correct answer was changed after the answer came: mark right and wrong again."""
        output = session.last_output
        if output is None or session.generating:
            return gr.skip()
        return render.answer_html(
            output.options,
            letter=output.letter,
            correct=correct or None,
            format_ok=output.format_ok,
            problem=output.problem,
            stop_reason=output.stop_reason,
        )

    def _request(
        self,
        session: Session,
        question: str,
        options: str,
        correct: str | None,
        decoding: str,
        temperature: float,
        top_p: float,
        seed: str | None,
        max_new_tokens: float | None,
        max_pixels: float | None,
        style: str | None,
    ) -> _Request:
        """Check everything before the model is touched; each problem raises its own MedVLMError."""
        if self.model is None:
            raise ModelLoadError(
                f"No model is loaded, so questions cannot be answered. {self.load_error or ''}".strip()
            )
        if session.generating:
            raise QuestionError("An answer is still being generated. Wait for it or press Stop before asking again.")
        if session.image is None:
            raise ImageLoadError("Please upload an image or DICOM file first.")
        question, parsed_options = validate_question(question, split_options(options))
        correct = correct or None
        if correct is not None and correct not in LETTERS[: len(parsed_options)]:
            raise QuestionError(
                f"The correct answer {correct} is not one of the options (A to {LETTERS[len(parsed_options) - 1]})."
            )
        tokens = as_number(max_new_tokens, "Maximum new tokens", whole=True)
        if tokens is None:
            raise MedVLMError("Please give the maximum number of new tokens.")
        settings = GenerationSettings(
            max_new_tokens=tokens,
            do_sample=decoding == "sample",
            temperature=_or(as_number(temperature, "The temperature"), 1.0),
            top_p=_or(as_number(top_p, "Top-p"), 1.0),
            seed=_seed(seed, sampling=decoding == "sample"),
            max_pixels=as_number(max_pixels, "The image resolution (max pixels)", whole=True),
        ).validate()
        try:
            prompt_style = PromptStyle(style or self.default_style())
        except ValueError:
            raise MedVLMError(f"Unknown prompt style {style!r}.") from None
        return _Request(
            image=session.image,
            question=question,
            options=parsed_options,
            correct=correct,
            settings=settings,
            style=prompt_style,
        )

    def _model_output(self, request: _Request, final: StreamUpdate) -> ModelOutput:
        parsed = final.parsed
        return ModelOutput(
            output_id=uuid.uuid4().hex,
            image=request.image.image,
            image_metadata=request.image.metadata.to_dict(),
            question=request.question,
            options=request.options,
            correct_answer=request.correct,
            completion=final.text,
            reasoning=parsed.reasoning,
            answer_text=parsed.answer_text,
            letter=parsed.letter,
            format_ok=parsed.format_ok,
            problem=parsed.problem,
            stop_reason=final.stop_reason,
            model={**self.model.describe(), **({"fidelity": self.fidelity.status()} if self.fidelity else {})},
            settings=request.settings.to_dict(),
            prompt_style=request.style.value,
            timing=final.timing.to_dict() if final.timing else None,
            generated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )

    # -- the review ------------------------------------------------------------------------------

    def whoami(self, request: gr.Request | None = None) -> str:
        """Who reviews in password mode (shown once the page loads)."""
        return render.reviewer_markdown(getattr(request, "username", None))

    def submit_review(
        self,
        session: Session,
        flags: list[str] | None,
        comment: str | None = None,
        correct: str | None = None,
        name: str | None = None,
        output_id: str | None = None,
        profile: gr.OAuthProfile | None = None,
        request: gr.Request | None = None,
    ) -> str:
        """Save this reviewer's flags and comment on the answer on screen, named by ``output_id``.

        The page sends the id of the answer it shows; a save whose id is not the one this tab
        shows now (another case was loaded, or an old page) is refused, so a review can never be
        attached to a case that is no longer on screen. The same reviewer saving again adds a
        version of their review (earlier ones are kept).
        """
        if session.generating:
            return render.error_markdown(
                "The answer is still being generated. Wait for it to finish, then save your review."
            )
        output = session.last_output
        if not output_id:
            return render.error_markdown(
                "There is no answer to review yet. Ask a question and wait for the answer first."
            )
        if output is None or output.output_id != output_id:
            return render.error_markdown(
                "This review was not saved: the answer it is for is no longer on screen (another case was loaded "
                "since). "
                "Review the answer shown now, or ask again."
            )
        try:
            review = Review(
                reviewer=self._reviewer(name, profile, request), flags=tuple(flags or ()), comment=comment or ""
            )
            annotation, created = self.store.add(replace(output, correct_answer=correct or None), review)
        except MedVLMError as error:
            return render.error_markdown(str(error))
        if created:
            message = f"Saved your review (#{annotation.id})."
        else:
            message = (
                f"Updated your review (#{annotation.id}, version {annotation.revision}; earlier versions are kept)."
            )
        if self.hub_sync is not None:
            try:
                self.hub_sync.record(annotation)
            except Exception as error:  # noqa: BLE001 - the review is safe locally; say so
                logger.warning("Hub sync of annotation %s failed: %s", annotation.id, error)
                message += " It is stored locally; copying it to the Hub dataset failed and was logged."
        return message

    def _reviewer(self, name: str | None, profile: gr.OAuthProfile | None, request: gr.Request | None) -> str:
        mode = self.config.reviewer_mode
        if mode == "oauth":
            if profile is None:
                raise MedVLMError("Please sign in with Hugging Face (the button above) to save a review.")
            return profile.username
        if mode == "password":
            username = getattr(request, "username", None)
            if not username:
                raise MedVLMError("Please sign in to save a review.")
            return username
        return name or ""

    # -- the Reviews tab -------------------------------------------------------------------------

    def review_filters(self):
        """Current choices of the modality, reviewer and model filters (the flags are fixed)."""

        def choices(column: str) -> dict[str, Any]:
            return gr.update(choices=[ANY, *self.store.distinct(column)])

        return choices("modality"), choices("reviewer"), choices("model_id")

    def reviews_table(
        self, flag: str | None, modality: str | None, reviewer: str | None, model_id: str | None
    ) -> pd.DataFrame:
        """The annotations matching the filters, newest first."""
        return render.reviews_frame(self._query(flag, modality, reviewer, model_id, limit=TABLE_LIMIT))

    def reviews_summary(self, flag: str | None, modality: str | None, reviewer: str | None, model_id: str | None):
        """Summary of the annotations matching the filters.

        Returns (summary text, flag rates, flag rates by modality, by model, reviewer agreement).
        """
        annotations = self._query(flag, modality, reviewer, model_id)
        agreement = reviewer_agreement(annotations)
        for column in ("observed_agreement", "fleiss_kappa"):
            agreement[column] = [("undefined" if pd.isna(value) else f"{value:.2f}") for value in agreement[column]]
        return (
            summary_text(annotations),
            flag_rates(annotations),
            flag_rates(annotations, by="modality"),
            flag_rates(annotations, by="model_id"),
            agreement,
        )

    def open_review(self, annotation_id: Any):
        """One stored review in full, with its earlier versions. Returns (image, details)."""
        try:
            number = as_number(annotation_id, "A review id", whole=True)
            if number is None:
                return None, render.error_markdown("Enter the id of a review (the first column of the table).")
            annotation = self.store.get(number)
            history = self.store.history(number)
        except MedVLMError as error:
            return None, render.error_markdown(str(error))
        with Image.open(annotation.image_path) as image:
            return image.convert("RGB"), render.annotation_html(annotation, history)

    def select_review(self, evt: gr.SelectData):
        """A row of the table was clicked: open it. Returns (id, image, details)."""
        row = evt.row_value or []
        annotation_id = row[0] if row else None
        return (annotation_id, *self.open_review(annotation_id))

    def export_jsonl(self):
        """All annotations as JSON Lines. Returns (file, status)."""
        return self._export(
            "annotations.jsonl",
            self.store.export_jsonl,
            "Images are not inside a JSONL file; the Parquet export carries them.",
        )

    def export_parquet(self):
        """All annotations with their images as one Parquet file. Returns (file, status)."""
        return self._export(
            "annotations.parquet",
            self.store.export_parquet,
            "Load it with datasets.load_dataset('parquet', data_files=...).",
        )

    def _export(self, name: str, write: Callable[[Path], Path], note: str):
        folder = Path(tempfile.mkdtemp(dir=self._exports.name))
        try:
            path = write(folder / name)
        except MedVLMError as error:
            return None, render.error_markdown(str(error))
        return str(path), f"Exported {self.store.count()} review(s). {note}"

    def _query(
        self,
        flag: str | None,
        modality: str | None,
        reviewer: str | None,
        model_id: str | None,
        limit: int | None = None,
    ):
        return self.store.query(
            flag=_any(flag), modality=_any(modality), reviewer=_any(reviewer), model_id=_any(model_id), limit=limit
        )


def flag_choices() -> list[tuple[str, str]]:
    """Choices of the flag filter: any, then each flag by its label."""
    return [("Any flag", ANY), *((label, key) for key, label in FLAGS.items())]
