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

import hashlib
import json
import logging
import secrets
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
from PIL import Image

from medvlm.annotations import FLAGS, AnnotationStore, ModelOutput, Review
from medvlm.dicom import WINDOW_PRESETS, Window
from medvlm.errors import ImageLoadError, MedVLMError, ModelLoadError, QuestionError
from medvlm.hub_sync import HubSync, hub_sync_from_env
from medvlm.images import LoadedImage, load_image, read_input
from medvlm.model import DEFAULT_MODEL_ID, LoadedModel, load_model
from medvlm.prompt import LETTERS, PromptStyle, validate_question
from medvlm.review_stats import flag_rates, reviewer_agreement, summary_text
from medvlm.streaming import GenerationSettings, StreamUpdate, stream_completion
from medvlm.ui import render
from medvlm.ui.config import AppConfig

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

    @property
    def generating(self) -> bool:
        return self.cancel is not None

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
            candidates = [Path(entry["file"])] if Path(entry["file"]).is_absolute() else [path.parent.parent / entry["file"], path.parent / entry["file"]]
            found = next((candidate for candidate in candidates if candidate.is_file()), None)
            if found is None:
                logger.warning("Example file %s is missing; that example is skipped.", entry["file"])
                continue
            examples.append(Example(file=found, question=entry["question"], options=list(entry["options"]), answer=entry.get("answer"), window=entry.get("window")))
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
                raise MedVLMError(f"Line {number} of the evaluation file is not JSON: choose the samples.jsonl written by train.evaluate.") from None
            missing = [key for key in EVALUATION_FIELDS if not isinstance(sample, dict) or key not in sample]
            if missing:
                raise MedVLMError(f"Line {number} of the evaluation file lacks {', '.join(missing)}: choose the samples.jsonl written by train.evaluate.")
            samples.append(sample)
    if not samples:
        raise MedVLMError("The evaluation file holds no samples.")
    return samples


def window_from(choice: str | None, center: float | None, width: float | None) -> Window:
    """The display window chosen in the UI (raises ImageLoadError for an incomplete custom one)."""
    if choice in (None, "", FILE_DEFAULT):
        return Window()
    if choice == CUSTOM:
        return Window(center=center, width=width)
    return Window(preset=choice)


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
    return gr.update(visible=True, minimum=0, maximum=count - 1, step=1, value=image.metadata.frame_index, label=f"Frame (0 to {count - 1})")


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
        return cls(config, model=model, store=store, load_error=load_error, hub_sync=hub_sync, examples=load_examples(config.examples_file), notices=notices)

    def close(self) -> None:
        """Push pending reviews to the Hub and remove temporary exports."""
        if self.hub_sync is not None:
            self.hub_sync.stop()
        self._exports.cleanup()

    # -- what the page starts with ---------------------------------------------------------------

    def banner(self) -> str:
        text = render.model_banner(self.model, self.config.model, self.load_error)
        return "\n\n".join([text, *(render.error_markdown(notice) for notice in self.notices)])

    def default_style(self) -> PromptStyle:
        """MedVLM-R1 was trained and evaluated on the exact original string; other models get the clean one."""
        return PromptStyle.MEDVLM_EXACT if self.config.model == DEFAULT_MODEL_ID else PromptStyle.MEDVLM

    def default_max_pixels(self) -> int | None:
        return self.model.max_pixels if self.model is not None else None

    # -- the image -------------------------------------------------------------------------------

    def load_file(self, session: Session, file: str | None, window: str | None = None, center: float | None = None, width: float | None = None):
        """An upload: render it as the model will see it (DICOM window applied, middle frame).

        Returns (preview, image facts, DICOM controls, frame slider, error).
        """
        if not file:
            session.file_bytes, session.image, session.source_label = None, None, None
            return self._image_outputs(session, "")
        return self._image_outputs(session, self._open(session, file, window_from(window, center, width)))

    @staticmethod
    def _open(session: Session, source: str | Path, window: Window | None) -> str:
        """Read a file once, render it into ``session`` (kept with its bytes); the error message, or ""."""
        session.file_bytes, session.image, session.source_label = None, None, None
        try:
            data = read_input(source)
            session.image = load_image(data, window=window)
        except ImageLoadError as error:
            return str(error)
        session.file_bytes = data
        return ""

    def clear_file(self, session: Session):
        """The upload was removed: forget its bytes and image."""
        return self.load_file(session, None)

    def render_image(self, session: Session, window: str | None = None, center: float | None = None, width: float | None = None, frame: float | None = None):
        """Another window or frame: re-render the kept bytes.

        Returns (preview, image facts, custom-window row, centre, width, error). Choosing
        "Custom" without a width fills in the window currently shown, so there is something to adjust.
        """
        custom = window == CUSTOM
        if custom and not width and session.image is not None:  # the browser sends an empty number as 0
            center, width = session.image.metadata.window_center, session.image.metadata.window_width
        row, numbers = gr.update(visible=custom), (gr.update(value=center), gr.update(value=width))
        if session.file_bytes is None:
            return gr.skip(), gr.skip(), row, *numbers, ""
        multi_frame = session.image is not None and session.image.metadata.frame_count > 1
        try:
            session.image = load_image(session.file_bytes, window=window_from(window, center, width), frame=int(frame) if multi_frame and frame is not None else None)
        except ImageLoadError as error:
            return gr.skip(), gr.skip(), row, *numbers, render.error_markdown(str(error))
        return session.image.image, self._image_markdown(session), row, *numbers, ""

    def load_example(self, index: int, session: Session):
        """An example case: its image, question, options, correct answer and window.

        Returns (file box, preview, image facts, DICOM controls, frame slider, error, window,
        custom-window row, question, options, correct answer).
        """
        example = self.examples[index]
        window = example.window if example.window in WINDOW_PRESETS else FILE_DEFAULT
        error = self._open(session, example.file, window_from(window, None, None))
        if not error:
            session.source_label = f"Example: {example.label}"
        answer = example.answer if example.answer in LETTERS[: len(example.options)] else ""
        return (
            None,
            *self._image_outputs(session, error),
            window,
            gr.update(visible=False),
            example.question,
            "\n".join(example.options),
            gr.update(choices=render.letter_choices(example.options), value=answer),
        )

    def load_evaluation(self, session: Session, file: str | None):
        """An evaluation run's ``samples.jsonl``: keep its samples and show the first.

        Returns what :meth:`show_evaluation_sample` returns, plus the sample slider.
        """
        session.evaluation = []
        if not file:
            return *self._no_sample(""), gr.update(visible=False)
        try:
            session.evaluation = read_evaluation_samples(file)
        except (MedVLMError, OSError, UnicodeDecodeError) as error:
            message = str(error) if isinstance(error, MedVLMError) else "The evaluation file could not be read as text."
            return *self._no_sample(message), gr.update(visible=False)
        slider = gr.update(visible=True, minimum=1, maximum=len(session.evaluation), value=1)
        return *self.show_evaluation_sample(session, 1), slider

    def show_evaluation_sample(self, session: Session, number: float | None):
        """Sample ``number`` (from 1) of the imported run, shown as if just answered, ready for review.

        Returns (preview, image facts, question, options, correct answer, answer panel,
        reasoning, raw output, timing, error). Reviewing the same sample twice updates one
        review: the output id is derived from the model, the sample and its completion.
        """
        if not session.evaluation:
            return self._no_sample("Import a samples.jsonl first.")
        if session.generating:
            return self._no_sample("An answer is still being generated. Wait for it or press Stop first.")
        index = min(max(int(number or 1), 1), len(session.evaluation)) - 1
        sample = session.evaluation[index]
        try:
            image = load_image(sample["image"])
            question, options = validate_question(sample["question"], sample["options"])
        except MedVLMError as error:
            return self._no_sample(f"Sample {index + 1}: {error}")
        correct = sample.get("correct_answer") or sample.get("solution")
        correct = correct if correct in LETTERS[: len(options)] else None
        model = sample.get("model") if isinstance(sample.get("model"), dict) else {}
        identity = json.dumps([model.get("model"), sample.get("id", index), sample["completion"]], sort_keys=True)
        output = ModelOutput(
            output_id=hashlib.sha256(identity.encode()).hexdigest()[:32],
            image=image.image,
            image_metadata=image.metadata.to_dict(),
            question=question,
            options=options,
            correct_answer=correct,
            completion=sample["completion"],
            reasoning=sample.get("reasoning") or "",
            answer_text=sample.get("answer_text"),
            letter=sample.get("letter"),
            format_ok=bool(sample.get("format_ok")),
            problem=sample.get("problem"),
            stop_reason=sample.get("stop_reason"),
            model=model,
            settings=sample.get("settings") if isinstance(sample.get("settings"), dict) else {},
            prompt_style=str(sample.get("prompt_style") or ""),
            timing=None,
            generated_at=str(sample.get("generated_at") or datetime.now(timezone.utc).isoformat(timespec="seconds")),
        )
        session.file_bytes, session.image, session.options, session.last_output = None, image, options, output
        session.source_label = f"Evaluation sample {index + 1} of {len(session.evaluation)}"
        panel = render.answer_html(options, letter=output.letter, correct=correct, format_ok=output.format_ok, problem=output.problem, stop_reason=output.stop_reason)
        model_name = model.get("model") or "unknown model"
        return (
            image.image,
            self._image_markdown(session),
            question,
            "\n".join(options),
            gr.update(choices=render.letter_choices(options), value=correct or ""),
            panel,
            output.reasoning,
            output.completion,
            f"From an evaluation run of {model_name}; review it like a fresh answer.",
            "",
        )

    @staticmethod
    def _no_sample(error: str):
        return (gr.skip(),) * 9 + (render.error_markdown(error),)

    def _image_outputs(self, session: Session, error: str):
        image = session.image
        return (
            image.image if image is not None else None,
            self._image_markdown(session),
            gr.update(visible=_is_windowable(image)),
            _frame_update(image),
            render.error_markdown(error),
        )

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
            panel = render.answer_html(parsed, letter=output.letter, correct=keep or None, format_ok=output.format_ok, problem=output.problem, stop_reason=output.stop_reason)
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
    ) -> Iterator[tuple[Any, ...]]:
        """Stream the model's answer: yields (answer panel, reasoning, raw output, timing, error).

        The reasoning grows with every piece of text; the last update highlights the chosen
        option (or says why there is none) and keeps the finished answer in the session for the
        review. Closing this generator (Gradio does on Stop, or when the tab goes away) stops the
        generation thread too.
        """
        try:
            request = self._request(session, question, options, correct, decoding, temperature, top_p, seed, max_new_tokens, max_pixels, style)
        except MedVLMError as error:
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), render.error_markdown(str(error))
            return
        cancel = threading.Event()
        session.cancel, session.options, session.last_output = cancel, request.options, None
        stream = self._generate(self.model, request.image.image, request.question, request.options, request.settings, request.style, cancel)
        final: StreamUpdate | None = None
        try:
            yield render.streaming_html(request.options, None), "", "", "Generating...", ""
            for update in stream:
                if update.done:
                    final = update
                else:
                    yield render.streaming_html(request.options, update), render.shown_reasoning(update), gr.skip(), "Generating...", ""
        except MedVLMError as error:
            yield render.options_html(request.options), gr.skip(), gr.skip(), "", render.error_markdown(str(error))
            return
        except Exception:  # noqa: BLE001 - the page must get a message, not a traceback
            logger.exception("Generation failed")
            message = "Generation failed unexpectedly; the error was logged on the server. Please try again."
            yield render.options_html(request.options), gr.skip(), gr.skip(), "", render.error_markdown(message)
            return
        finally:
            stream.close()
            if session.cancel is cancel:
                session.cancel = None
        assert final is not None, "stream_completion always ends with a done update"
        if final.stop_reason != "cancelled":
            session.last_output = self._model_output(request, final)
        parsed = final.parsed
        panel = render.answer_html(request.options, letter=parsed.letter, correct=request.correct, format_ok=parsed.format_ok, problem=parsed.problem, stop_reason=final.stop_reason)
        yield panel, render.shown_reasoning(final), final.text, render.timing_markdown(final.timing, final.stop_reason), ""

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
        return render.answer_html(output.options, letter=output.letter, correct=correct or None, format_ok=output.format_ok, problem=output.problem, stop_reason=output.stop_reason)

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
            raise ModelLoadError(f"No model is loaded, so questions cannot be answered. {self.load_error or ''}".strip())
        if session.generating:
            raise QuestionError("An answer is still being generated. Wait for it or press Stop before asking again.")
        if session.image is None:
            raise ImageLoadError("Please upload an image or DICOM file first.")
        question, parsed_options = validate_question(question, split_options(options))
        correct = correct or None
        if correct is not None and correct not in LETTERS[: len(parsed_options)]:
            raise QuestionError(f"The correct answer {correct} is not one of the options (A to {LETTERS[len(parsed_options) - 1]}).")
        if max_new_tokens is None:
            raise MedVLMError("Please give the maximum number of new tokens.")
        settings = GenerationSettings(
            max_new_tokens=int(max_new_tokens),
            do_sample=decoding == "sample",
            temperature=float(temperature),
            top_p=float(top_p),
            seed=_seed(seed, sampling=decoding == "sample"),
            max_pixels=None if max_pixels is None else int(max_pixels),
        ).validate()
        try:
            prompt_style = PromptStyle(style or self.default_style())
        except ValueError:
            raise MedVLMError(f"Unknown prompt style {style!r}.") from None
        return _Request(image=session.image, question=question, options=parsed_options, correct=correct, settings=settings, style=prompt_style)

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
            model=self.model.describe(),
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
        profile: gr.OAuthProfile | None = None,
        request: gr.Request | None = None,
    ) -> str:
        """Save this reviewer's flags and comment on the last finished answer.

        The same reviewer saving again updates their review instead of adding another.
        """
        if session.generating:
            return render.error_markdown("The answer is still being generated. Wait for it to finish, then save your review.")
        if session.last_output is None:
            return render.error_markdown("There is no answer to review yet. Ask a question and wait for the answer first.")
        try:
            review = Review(reviewer=self._reviewer(name, profile, request), flags=tuple(flags or ()), comment=comment or "")
            annotation, created = self.store.add(replace(session.last_output, correct_answer=correct or None), review)
        except MedVLMError as error:
            return render.error_markdown(str(error))
        message = f"Saved your review (#{annotation.id})." if created else f"Updated your review (#{annotation.id})."
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

    def reviews_table(self, flag: str | None, modality: str | None, reviewer: str | None, model_id: str | None) -> pd.DataFrame:
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

    def open_review(self, annotation_id: float | None):
        """One stored review in full. Returns (image, details)."""
        if annotation_id is None:
            return None, render.error_markdown("Enter the id of a review (the first column of the table).")
        try:
            annotation = self.store.get(int(annotation_id))
        except MedVLMError as error:
            return None, render.error_markdown(str(error))
        with Image.open(annotation.image_path) as image:
            return image.convert("RGB"), render.annotation_html(annotation)

    def select_review(self, evt: gr.SelectData):
        """A row of the table was clicked: open it. Returns (id, image, details)."""
        row = evt.row_value or []
        annotation_id = row[0] if row else None
        return (annotation_id, *self.open_review(annotation_id))

    def export_jsonl(self):
        """All annotations as JSON Lines. Returns (file, status)."""
        return self._export("annotations.jsonl", self.store.export_jsonl, "Images are not inside a JSONL file; the Parquet export carries them.")

    def export_parquet(self):
        """All annotations with their images as one Parquet file. Returns (file, status)."""
        return self._export("annotations.parquet", self.store.export_parquet, "Load it with datasets.load_dataset('parquet', data_files=...).")

    def _export(self, name: str, write: Callable[[Path], Path], note: str):
        folder = Path(tempfile.mkdtemp(dir=self._exports.name))
        try:
            path = write(folder / name)
        except MedVLMError as error:
            return None, render.error_markdown(str(error))
        return str(path), f"Exported {self.store.count()} review(s). {note}"

    def _query(self, flag: str | None, modality: str | None, reviewer: str | None, model_id: str | None, limit: int | None = None):
        return self.store.query(flag=_any(flag), modality=_any(modality), reviewer=_any(reviewer), model_id=_any(model_id), limit=limit)


def flag_choices() -> list[tuple[str, str]]:
    """Choices of the flag filter: any, then each flag by its label."""
    return [("Any flag", ANY), *((label, key) for key, label in FLAGS.items())]
