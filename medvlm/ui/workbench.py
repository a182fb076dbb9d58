"""What every user of the app shares, created once at start-up: the model (or why it could not be
loaded), the annotation store, the optional Hub sync, the example cases and the CPU fidelity check.

The handlers of each tab (:mod:`medvlm.ui.ask.case_handlers`, :mod:`medvlm.ui.ask.answer_handlers`,
:mod:`medvlm.ui.reviews.handlers`) hold a workbench and read these from it; nothing here is
per-user (that is :class:`~medvlm.ui.session.Session`).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from PIL import Image

from medvlm.annotations import Annotation, AnnotationStore, ModelOutput, Verdict
from medvlm.errors import MedVLMError
from medvlm.fast_cpu import has_fast_bf16
from medvlm.fidelity import FidelityGuard, FidelityVerdict
from medvlm.hub_sync import HubSync, hub_sync_from_env
from medvlm.memory import check_two_models, resident_bytes
from medvlm.model import LoadedModel, load_model
from medvlm.prompt import PromptStyle
from medvlm.published import model_prompt_style
from medvlm.relevance import relevance_maps
from medvlm.streaming import GenerationSettings, StreamUpdate, answer_batch, stream_completion
from medvlm.ui import render
from medvlm.ui.cases import Example, load_examples
from medvlm.ui.config import AppConfig
from medvlm.ui.session import Session

logger = logging.getLogger(__name__)

PREPARING_FAST_PATH = (
    "Answers are slower for the first few minutes: the model answers at its own precision (bf16) while its faster "
    "CPU version is prepared in the background (GPTQ, once per model version); the app switches by itself."
)
"""The banner's notice while :attr:`Workbench.fast_path_builder` runs."""

GPU_DURATION_S = 120
"""Seconds of ZeroGPU time asked for per answer: 512 tokens of a 2B model with room to spare."""


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


class Workbench:
    """The shared resources, created once at start-up."""

    def __init__(
        self,
        config: AppConfig,
        *,
        model: LoadedModel | None,
        store: AnnotationStore,
        compare: LoadedModel | None = None,
        load_error: str | None = None,
        hub_sync: HubSync | None = None,
        examples: Sequence[Example] = (),
        notices: Sequence[str] = (),
    ) -> None:
        self.config = config
        self.model = model
        self.compare = compare
        """The second model of a side-by-side comparison (``--compare-model``); None: one answer per question."""
        self.load_error = load_error
        self.store = store
        self.hub_sync = hub_sync
        self.examples = list(examples)
        self.notices = list(notices)
        """Start-up problems a maintainer should see (shown in the banner), e.g. a failed Hub sync."""
        self.generate = on_zero_gpu(generate)
        self.answer_batch = on_zero_gpu(answer_batch)
        """Non-streamed batches (a campaign's answers, probes); on ZeroGPU each batch holds a GPU while it runs."""
        self.relevance_maps = on_zero_gpu(relevance_maps)
        """Where the model looked, per reasoning sentence (one prefill: the accelerator's work)."""
        self.fidelity: FidelityGuard | None = None
        """The background check of the CPU fast path (None when it does not apply)."""
        self.fast_path_builder: threading.Thread | None = None
        """Where GPTQ prepares the CPU fast path while the bf16 model answers (None when it is not needed)."""
        self._model_lock = threading.Lock()
        self.exports = tempfile.TemporaryDirectory(prefix="medvlm-exports-")

    @classmethod
    def start(cls, config: AppConfig) -> Workbench:
        """Load the model, open the store, start the Hub sync if configured, read the examples.

        A model that cannot be loaded (no network, wrong path, out of memory, anything) does not
        stop the app: the banner says why and what to do, and the Reviews tab still works.
        """
        baseline = resident_bytes()
        model, load_error = _load(config.model, config, calibrate_now=False)
        notices, compare = [], None
        if config.compare_model and model is not None:
            compare, problem = _load_compare(config, model, baseline, resident_bytes() - baseline)
            if problem:
                notices.append(problem)
        store = AnnotationStore(config.data_dir)
        hub_sync = None
        try:
            hub_sync = hub_sync_from_env(store)
        except MedVLMError as error:
            notices.append(f"Reviews are saved locally only: {error}")
            logger.error("Hub sync not started: %s", error)
        workbench = cls(
            config,
            model=model,
            compare=compare,
            store=store,
            load_error=load_error,
            hub_sync=hub_sync,
            examples=load_examples(config.examples_file),
            notices=notices,
        )
        if model is not None and model.fast_path_pending:
            workbench._prepare_fast_path()
        else:
            workbench._check_fidelity()
        return workbench

    def _check_fidelity(self) -> None:
        """Start the fidelity guard on a quantized model, in the background: the page does not wait for it."""
        model = self.model
        if (
            self.config.fidelity_check
            and model is not None
            and model.fast_cpu is not None
            and model.fast_cpu.quantized
        ):
            self.fidelity = FidelityGuard(self.store.data_dir, model, self._use_full_precision)
            self.fidelity.start()

    def _prepare_fast_path(self) -> None:
        """GPTQ has not chosen this model's int8 weights yet (minutes on a 2B model, once per revision): serve the
        checkpoint's own bf16 now, faithful and slower, and switch to the fast path in the background."""
        self.notices.append(PREPARING_FAST_PATH)
        self.fast_path_builder = threading.Thread(target=self._build_fast_path, name="medvlm-gptq", daemon=True)
        self.fast_path_builder.start()

    def _build_fast_path(self) -> None:
        try:
            fast = load_model(self.config.model, fast_cpu=self.config.fast_cpu)  # runs GPTQ and caches its choice
        except Exception as error:  # noqa: BLE001 - keep serving bf16, and say so
            logger.exception("The CPU fast path could not be prepared")
            self.notices.remove(PREPARING_FAST_PATH)
            self.notices.append(f"The int8 fast path could not be prepared ({error}); answers keep coming from bf16.")
            return
        with self._model_lock:
            self.model = fast  # answers already streaming finish on the bf16 model they started on
        self.notices.remove(PREPARING_FAST_PATH)
        logger.info("CPU fast path ready: %s", fast.describe()["quantization"])
        self._check_fidelity()

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

    @property
    def answers_at_once(self) -> bool:
        """Whether the two models of a comparison stream at the same time: on a GPU yes; on a CPU one after the
        other, since each generation already uses every core."""
        return self.model is not None and self.model.device.type == "cuda"

    def model_name(self, loaded: LoadedModel) -> str:
        """How the page names a model once its side is revealed: the source it was started with."""
        return self.config.compare_model if loaded is self.compare and self.config.compare_model else self.config.model

    def close(self) -> None:
        """Push pending reviews to the Hub and remove temporary exports."""
        if self.hub_sync is not None:
            self.hub_sync.stop()
        self.exports.cleanup()

    def banner(self) -> str:
        """What is answering, as of now (the page asks again on every load: the fidelity check may have ended)."""
        fidelity = self.fidelity.status() if self.fidelity is not None else None
        return render.model_banner(
            self.model,
            self.config.model,
            self.load_error,
            fidelity=fidelity,
            notices=self.notices,
            compare=self.config.compare_model if self.compare is not None else None,
        )

    def reviewer(self, name: str | None, profile: Any = None, request: Any = None) -> str:
        """Who is saving a review: the Hugging Face account, the signed-in user, or the typed name (name mode)."""
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

    def mirror(self, annotation: Annotation) -> bool:
        """Copy a saved review (with its output's probes) to the Hub dataset when syncing is on, from any tab.

        On a Space without persistent storage the Hub copy is what survives a restart, so the Ask
        tab's reviews and a campaign's go there alike. False when the copy failed (logged): the
        review is safe in the local store, and the page says so.
        """
        if self.hub_sync is None:
            return True
        try:
            self.hub_sync.record(annotation, self.store.probe_answers([annotation.output_id]))
        except Exception as error:  # noqa: BLE001 - the review is safe locally; say so
            logger.warning("Hub sync of annotation %s failed: %s", annotation.id, error)
            return False
        return True

    def mirror_verdict(
        self, verdict: Verdict, first: ModelOutput, second: ModelOutput, campaign: str | None = None
    ) -> bool:
        """Copy a saved pairwise verdict, with the two answers it judges, to the Hub dataset when syncing is on
        (:meth:`mirror`, for verdicts: the Ask tab's comparison and a comparison campaign's)."""
        if self.hub_sync is None:
            return True
        try:
            self.hub_sync.record_verdict(verdict, first, second, campaign)
        except Exception as error:  # noqa: BLE001 - the verdict is safe locally; say so
            logger.warning("Hub sync of verdict %s failed: %s", verdict.id, error)
            return False
        return True

    def session_key(self, session: Session) -> str:
        """Whose saves are one person's beyond the name: in name mode the browser tab's own key (anyone can type any
        name, so a namesake in another tab saves a review of their own); signed in, the account alone (``""``)."""
        return session.key() if self.config.reviewer_mode == "name" else ""

    def is_admin(self, profile: Any = None, request: Any = None) -> bool:
        """Who may create campaigns and edit their guidelines in the browser.

        With ``--auth`` every configured user (they were given a password); with Hugging Face
        sign-in the Space's owner (``SPACE_AUTHOR_NAME``, which Spaces set). In name mode nobody:
        anyone can type any name there (use ``medvlm campaign create`` on the server instead).
        """
        mode = self.config.reviewer_mode
        if mode == "password":
            return bool(getattr(request, "username", None))
        if mode == "oauth":
            owner = os.environ.get("SPACE_AUTHOR_NAME", "").strip()
            return profile is not None and bool(owner) and profile.username == owner
        return False

    def default_style(self) -> PromptStyle:
        """The wording the model was trained with (its ``medvlm.json``, or the published id's), else the clean one."""
        if self.model is not None:
            return self.model.prompt_style
        return model_prompt_style(self.config.model)[0]

    def default_max_pixels(self) -> int | None:
        return self.model.max_pixels if self.model is not None else None


def _load(source: str, config: AppConfig, *, calibrate_now: bool = True) -> tuple[LoadedModel | None, str | None]:
    """The model, or why not in words: a model that cannot be loaded (no network, wrong path, out of memory,
    anything) must leave a working app behind. ``calibrate_now=False``: a fast path whose GPTQ has not run
    yet is not waited for (:meth:`Workbench._prepare_fast_path`); a comparison model waits for it."""
    try:
        return load_model(source, fast_cpu=config.fast_cpu, calibrate_now=calibrate_now), None
    except MedVLMError as error:
        logger.error("Model not loaded: %s", error)
        return None, str(error)
    except Exception as error:  # noqa: BLE001 - any failure must leave a working app behind
        logger.exception("Model not loaded")
        detail = str(error).strip().splitlines()[0] if str(error).strip() else "no details"
        return None, f"Could not load {source} ({type(error).__name__}: {detail})."


def _load_compare(
    config: AppConfig, first: LoadedModel, baseline: int, loaded: int
) -> tuple[LoadedModel | None, str | None]:
    """The comparison model, unless it would not fit beside the first (then a banner notice says so, at start).

    ``baseline`` is the resident memory before the first model was loaded, ``loaded`` what loading it added.
    """
    on_cpu = first.device.type == "cpu"
    check = check_two_models(
        first.model, first.device, loaded_bytes=loaded if on_cpu else 0, baseline_bytes=baseline if on_cpu else 0
    )
    if not check.fits:
        logger.error("Comparison model not loaded: %s", check.describe())
        return None, (
            f"The comparison model {config.compare_model} was not loaded, so questions get one answer: "
            f"{check.describe()} Use a machine with more memory, or a GPU."
        )
    compare, error = _load(config.compare_model or "", config)
    if compare is None:
        return None, f"The comparison model was not loaded, so questions get one answer: {error}"
    return compare, None
