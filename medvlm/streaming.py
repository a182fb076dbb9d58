"""Streaming one completion, token by token, with its parsed result and timing.

``stream_completion`` is what the app, the CLI and the benchmarks call: it builds the prompt with
``medvlm.prompt``, runs ``model.generate`` in a worker thread with transformers'
``TextIteratorStreamer``, and yields a ``StreamUpdate`` for each piece of text, each carrying
the text so far parsed with ``medvlm.parsing`` (so a UI can show reasoning and answer apart while
they stream). The last update has ``done=True``, the stop reason and the timing.

Cancellation is cooperative: setting the ``cancel`` event (from any thread) makes a stopping
criterion end generation after the current token. Closing the generator (a client went away, a
Stop button) sets it too, so no generation outlives its consumer.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from PIL import Image
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from medvlm.errors import MedVLMError
from medvlm.model import LoadedModel
from medvlm.parsing import ParsedCompletion, parse_completion
from medvlm.pixels import MAX_RENDER_PIXELS
from medvlm.processor import RECIPE_MIN_PIXELS, encode_prompts
from medvlm.prompt import PromptStyle, as_style, validate_question

#: Upper bound on new tokens a user may ask for (the recipe uses 512).
MAX_NEW_TOKENS_LIMIT = 4096
#: Largest seed: NumPy's and transformers' ``set_seed`` accept 32-bit seeds, so one seed reproduces everywhere.
MAX_SEED = 2**32 - 1


class GenerationError(MedVLMError):
    """Generation failed part-way (out of memory, a broken model...)."""


@dataclass(frozen=True)
class GenerationSettings:
    """How to decode. The defaults are the paper's: greedy, up to 512 new tokens."""

    max_new_tokens: int = 512
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    max_pixels: int | None = None
    """Image-token budget for this request (``None``: the loaded model's setting)."""

    @classmethod
    def from_options(
        cls,
        *,
        max_new_tokens: int,
        sample: bool,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
        max_pixels: int | None = None,
        strict: bool = False,
    ) -> GenerationSettings:
        """The settings a command line or the page's controls give, checked (:meth:`validate`).

        The one builder behind ``medvlm ask``, ``medvlm campaign``, ``train.evaluate`` and the Ask
        page. ``strict`` refuses a temperature or top-p given with greedy decoding, where they would
        do nothing: a command line's typed ``--temperature`` must not be silently ignored (the page's
        sliders always hold values, so it is not strict).
        """
        if strict and not sample and (temperature != 1.0 or top_p != 1.0):
            raise MedVLMError(
                "--temperature and --top-p only apply when sampling: add --sample, or drop them for greedy decoding."
            )
        return cls(
            max_new_tokens=max_new_tokens,
            do_sample=sample,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            max_pixels=max_pixels,
        ).validate()

    def validate(self) -> GenerationSettings:
        """Raise ``MedVLMError`` with a readable message for settings ``generate`` would reject."""
        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS_LIMIT:
            raise MedVLMError(
                f"Maximum new tokens must be between 1 and {MAX_NEW_TOKENS_LIMIT} (got {self.max_new_tokens})."
            )
        if self.do_sample and not self.temperature > 0:
            raise MedVLMError(f"Temperature must be above 0 when sampling (got {self.temperature}).")
        if not 0 < self.top_p <= 1:
            raise MedVLMError(f"top-p must be in (0, 1] (got {self.top_p}).")
        if self.max_pixels is not None and not RECIPE_MIN_PIXELS <= self.max_pixels <= MAX_RENDER_PIXELS:
            raise MedVLMError(
                f"Image resolution (max_pixels) must be between {RECIPE_MIN_PIXELS:,} and {MAX_RENDER_PIXELS:,}, "
                f"Qwen2-VL's ceiling (got {self.max_pixels:,})."
            )
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED:
            raise MedVLMError(f"The seed must be a whole number from 0 to {MAX_SEED:,} (got {self.seed:,}).")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``model.generate``."""
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample}
        if self.do_sample:
            kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=None)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        return kwargs


@dataclass(frozen=True)
class Timing:
    """Speed of one completion as the user experienced it."""

    time_to_first_token_s: float | None
    """From the call (prompt building, vision encoder and prefill included) to the first new token."""
    total_s: float
    new_tokens: int
    tokens_per_second: float | None
    """Decode rate after the first token (``None`` with fewer than two tokens)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StreamUpdate:
    """One step of a streamed completion."""

    text: str
    """The whole completion so far."""
    delta: str
    """What this update added."""
    parsed: ParsedCompletion
    done: bool = False
    stop_reason: str | None = None
    """On the final update: ``"eos"``, ``"max_new_tokens"`` or ``"cancelled"``."""
    timing: Timing | None = None
    """On the final update."""


class _CancelCriterion(StoppingCriteria):
    """Stops generation (for the whole batch) once ``event`` is set."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class _TokenStreamer(TextIteratorStreamer):
    """A ``TextIteratorStreamer`` that passes on every token's text, and counts and times the tokens.

    transformers' streamer holds text back until a word is complete (its heuristic against words
    that change as tokens arrive), which delays a slow CPU model's first visible token by a whole
    token or more. Qwen2-VL's byte-level tokenizer only ever *appends* when a token is decoded,
    except for a character whose UTF-8 bytes are split over tokens, which decodes to U+FFFD until
    its last byte arrives; only that is held back here.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.new_tokens = 0
        self.first_token_at: float | None = None

    def put(self, value: torch.Tensor) -> None:
        if self.next_tokens_are_prompt:  # generate() passes the prompt first
            self.next_tokens_are_prompt = False
            return
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.new_tokens += int(value.numel())
        self.token_cache.extend(value.reshape(-1).tolist())
        text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
        complete = len(text.rstrip("\ufffd"))
        if complete > self.print_len:
            self.on_finalized_text(text[self.print_len : complete])
            self.print_len = complete
        if text.endswith("\n"):  # start afresh, so decoding stays short however long the answer
            self.token_cache, self.print_len = [], 0


def prepare_inputs(
    loaded: LoadedModel,
    images: Sequence[Image.Image],
    questions: Sequence[str],
    options: Sequence[Sequence[str]],
    *,
    style: PromptStyle | str = PromptStyle.MEDVLM,
    max_pixels: int | None = None,
) -> dict[str, torch.Tensor]:
    """Tokenise a batch of (image, question, options) into model inputs on the model's device.

    Batches are left-padded, so that every row's new tokens start at the same position (what
    batched generation needs; one row is just a batch of one).
    """
    return encode_prompts(
        loaded.processor,
        images,
        questions,
        options,
        style=style,
        max_pixels=max_pixels,
        device=loaded.device,
        dtype=loaded.dtype,
    )


@dataclass(frozen=True)
class BatchAnswer:
    """One row's answer from :func:`answer_batch`, parsed."""

    completion: str
    parsed: ParsedCompletion
    stop_reason: str
    """``"eos"`` (the model ended its turn) or ``"max_new_tokens"`` (cut off)."""
    new_tokens: int


def answer_batch(
    loaded: LoadedModel,
    images: Sequence[Image.Image],
    questions: Sequence[str],
    options: Sequence[Sequence[str]],
    settings: GenerationSettings,
    *,
    style: PromptStyle | str = PromptStyle.MEDVLM,
) -> list[BatchAnswer]:
    """Answer a batch of questions at once, without streaming: evaluation runs and generated campaigns.

    The answers are read with ``final=True`` (the completion is finished), so a campaign's outputs
    and an evaluation's samples are parsed exactly as the ``accuracy`` reward parses them.
    """
    style = as_style(style)
    inputs = prepare_inputs(loaded, images, questions, options, style=style, max_pixels=settings.max_pixels)
    tokenizer = loaded.processor.tokenizer
    with torch.inference_mode():
        output = loaded.model.generate(**inputs, **settings.generate_kwargs(), pad_token_id=tokenizer.pad_token_id)
    # Left padding: every row's prompt ends at the same column, and its new tokens follow it.
    new_tokens = output[:, inputs["input_ids"].shape[1] :]
    texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    eos_ids = _eos_ids(loaded)
    require_think = style is not PromptStyle.NO_THINK
    answers = []
    for text, row, opts in zip(texts, new_tokens.tolist(), options, strict=True):
        reason, count = _stop(row, eos_ids)
        parsed = parse_completion(text, list(opts), require_think=require_think, final=True)
        answers.append(BatchAnswer(text, parsed, reason, count))
    return answers


def _eos_ids(loaded: LoadedModel) -> set[int]:
    eos = loaded.model.generation_config.eos_token_id
    if eos is None:
        eos = loaded.processor.tokenizer.eos_token_id
    return set(eos) if isinstance(eos, (list, tuple)) else {eos}


def _stop(tokens: list[int], eos_ids: set[int]) -> tuple[str, int]:
    """Why a row stopped and how many tokens it generated (up to and including its end token)."""
    for index, token in enumerate(tokens):
        if token in eos_ids:
            return "eos", index + 1
    return "max_new_tokens", len(tokens)


def stream_completion(
    loaded: LoadedModel,
    image: Image.Image,
    question: str,
    options: Sequence[str],
    settings: GenerationSettings | None = None,
    *,
    style: PromptStyle | str | None = None,
    cancel: threading.Event | None = None,
    poll_interval_s: float = 0.1,
) -> Iterator[StreamUpdate]:
    """Stream the model's completion for one image and one multiple-choice question.

    Raises ``QuestionError`` (invalid question/options) or ``MedVLMError`` (invalid settings)
    before any work starts, and ``GenerationError`` if generation itself fails.

    Args:
        loaded: the model (:func:`medvlm.model.load_model`).
        image: the RGB image the model sees (:func:`medvlm.images.load_image` renders uploads).
        question, options: the question and its 2 to 10 option texts (lettered A, B, ... in order).
        settings: how to decode (default: the paper's, greedy and up to 512 new tokens).
        style: the prompt wording; None for the model's own (:attr:`LoadedModel.prompt_style`).
        cancel: set it to stop after the current token (the app's Stop button).

    Returns:
        An iterator of :class:`StreamUpdate` s: one per piece of text, each with the text so far
        parsed, then a last one with ``done`` set, the stop reason and the timing.

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> from medvlm.model import load_model
        >>> from medvlm.tiny_model import build_tiny_checkpoint
        >>> loaded = load_model(build_tiny_checkpoint(tempfile.mkdtemp()))
        >>> updates = list(stream_completion(loaded, Image.new("RGB", (56, 56)), "Which?", ["CT", "MRI"],
        ...                                  GenerationSettings(max_new_tokens=8)))
        >>> final = updates[-1]
        >>> final.done, final.stop_reason, final.timing.new_tokens, "".join(u.delta for u in updates) == final.text
        (True, 'max_new_tokens', 8, True)
    """
    style = loaded.prompt_style if style is None else style
    settings = (settings or GenerationSettings()).validate()
    question, options = validate_question(question, options)
    require_think = PromptStyle(style) is not PromptStyle.NO_THINK
    cancel = cancel or threading.Event()
    started = time.perf_counter()

    inputs = prepare_inputs(loaded, [image], [question], [options], style=style, max_pixels=settings.max_pixels)
    streamer = _TokenStreamer(loaded.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
    failure: list[BaseException] = []

    def generate() -> None:
        try:
            if settings.seed is not None:
                torch.manual_seed(settings.seed)
            with torch.inference_mode():
                loaded.model.generate(
                    **inputs,
                    **settings.generate_kwargs(),
                    **speculation(loaded, settings),
                    streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([_CancelCriterion(cancel)]),
                    pad_token_id=loaded.processor.tokenizer.pad_token_id,
                )
        except BaseException as error:  # reported to the consumer below, never lost in the thread
            failure.append(error)
            streamer.end()

    worker = threading.Thread(target=generate, name="medvlm-generate", daemon=True)
    worker.start()
    text = ""
    try:
        for delta in _pieces(streamer, worker, poll_interval_s):
            text += delta
            yield StreamUpdate(
                text=text, delta=delta, parsed=parse_completion(text, options, require_think=require_think)
            )
        worker.join()
        cancelled = cancel.is_set()
    finally:
        cancel.set()  # a consumer that stops early stops the generation too
    if failure:
        error = failure[0]
        if isinstance(error, torch.OutOfMemoryError):
            raise GenerationError(
                "The model ran out of memory while answering. Lower the image resolution (max_pixels) or the maximum "
                "new tokens."
            ) from error
        raise GenerationError(f"Generation failed: {error}") from error

    finished = time.perf_counter()
    timing = _timing(started, streamer.first_token_at, finished, streamer.new_tokens)
    if streamer.new_tokens >= settings.max_new_tokens:
        reason = "max_new_tokens"
    else:
        reason = "cancelled" if cancelled else "eos"
    yield StreamUpdate(
        text=text,
        delta="",
        parsed=parse_completion(text, options, require_think=require_think, final=True),
        done=True,
        stop_reason=reason,
        timing=timing,
    )


def _pieces(streamer: TextIteratorStreamer, worker: threading.Thread, poll_interval_s: float) -> Iterator[str]:
    """Text pieces from the streamer; polls so that a dead worker can never hang the consumer."""
    while True:
        try:
            piece = streamer.text_queue.get(timeout=poll_interval_s)
        except queue.Empty:
            if not worker.is_alive() and streamer.text_queue.empty():
                return
            continue
        if piece is streamer.stop_signal:
            return
        if piece:
            yield piece


def _timing(started: float, first_token_at: float | None, finished: float, new_tokens: int) -> Timing:
    ttft = None if first_token_at is None else first_token_at - started
    rate = None
    if first_token_at is not None and new_tokens > 1 and finished > first_token_at:
        rate = (new_tokens - 1) / (finished - first_token_at)
    return Timing(
        time_to_first_token_s=ttft, total_s=finished - started, new_tokens=new_tokens, tokens_per_second=rate
    )


class CancelAll(threading.Event):
    """One Stop for several generations: setting it sets each of theirs.

    Each :func:`stream_completion` needs its own ``cancel`` event, because a stream that ends sets
    its event (no generation outlives its consumer); shared, the first answer to finish would stop
    the second before it began.
    """

    def __init__(self, parts: Sequence[threading.Event]) -> None:
        super().__init__()
        self.parts = list(parts)

    def set(self) -> None:
        super().set()
        for part in self.parts:
            part.set()


_END = object()


def interleave(streams: Sequence[Iterator[Any]], stop: threading.Event) -> Iterator[tuple[int, Any]]:
    """The items of several streams as they arrive, each with its stream's index: two models answering at once.

    Each stream is drained by its own thread (a :func:`stream_completion` already waits on its own
    generation thread, so these only pass text along). An exception in either stream is raised
    here. Ending or closing this iterator sets ``stop`` (the streams' ``cancel`` event) and waits
    for the threads, so no generation outlives its consumer.
    """
    arrived: queue.Queue[tuple[int, Any, BaseException | None]] = queue.Queue()

    def drain(index: int, stream: Iterator[Any]) -> None:
        try:
            for item in stream:
                arrived.put((index, item, None))
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, never lost in the thread
            arrived.put((index, None, error))
            return
        arrived.put((index, _END, None))

    threads = [
        threading.Thread(target=drain, args=(index, stream), name="medvlm-interleave", daemon=True)
        for index, stream in enumerate(streams)
    ]
    for thread in threads:
        thread.start()
    running = len(threads)
    try:
        while running:
            index, item, error = arrived.get()
            if error is not None:
                raise error
            if item is _END:
                running -= 1
            else:
                yield index, item
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def speculation(loaded: LoadedModel, settings: GenerationSettings) -> dict[str, Any]:
    """``generate`` arguments for prompt-lookup decoding of one greedy answer, where it is exact and measured.

    Prompt lookup drafts what followed the last tokens earlier in the prompt or the answer, and a
    reasoning model restates the question and its options. It is on for the CPU fast path where the
    load found it exact (:attr:`medvlm.fast_cpu.FastCpuReport.prompt_lookup_tokens`); sampling,
    batches, other devices and full precision decode as before.
    """
    tokens = loaded.fast_cpu.prompt_lookup_tokens if loaded.fast_cpu is not None else 0
    return {"prompt_lookup_num_tokens": tokens} if tokens and not settings.do_sample else {}
