"""Does the CPU fast path give *this* model's answers? Checked once per model revision, on its real weights.

Random weights cannot show what int8 does to a trained model (flat logits, no activation
outliers), and the published weights cannot be downloaded where this project is developed, so the
check runs where the weights are: the first time a model is loaded on a CPU with the fast path,
the app runs :func:`check` in a background process (:class:`FidelityGuard`), never delaying the
page. The protocol is the one ``bench/fidelity.py`` reports:

1. The reference: the same checkpoint in bf16, its own precision (what a GPU runs), greedy for
   :data:`PROBE_TOKENS` tokens on a fixed probe (an image question in the MedVLM-R1 prompt).
2. The fast model, teacher-forced on those tokens one decoding step at a time (so the decoding
   kernels are the ones measured), its next-token logits compared with the reference's.

The verdict (tokens on which both pick the same next token, logit cosine) is stored per model
revision, fast-path scheme and torch version in the data folder, shown in the banner ("bf16-int8
agrees with bf16 on 31/32 tokens") and with every answer. Below :data:`MIN_AGREEMENT` the app falls back
to the full-precision model, with a warning. Why that threshold: two faithful implementations of
the same bf16 model (PyTorch and llama.cpp) agree on 95 % of greedy tokens even on random weights,
whose near-tied logits are the hardest case; a trained model's logits are peaked, so a faithful
scheme agrees on nearly all of them. 90 % (29 of 32) leaves room for one or two genuine near-ties
and still catches a scheme that changes the model's choices (the per-tensor int8 path agreed on
56 % of tokens on random weights).

Cost: loading the checkpoint twice more in one background process (one model at a time) and
about 2 x 32 decoding steps: about a minute on 2 cores for Qwen2-VL-2B, once per revision.

``python -m medvlm.fidelity MODEL [--revision R]`` runs the check and prints the verdict as JSON.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from medvlm.atomic import atomic_write_text
from medvlm.weights_key import model_key

if TYPE_CHECKING:
    import torch

    from medvlm.model import LoadedModel

logger = logging.getLogger(__name__)

PROBE_TOKENS = 32
"""Teacher-forced decoding steps compared."""
MIN_AGREEMENT = 0.9
"""Share of steps on which both must pick the same next token (see the module docstring)."""
PROBE_QUESTION = "Which imaging modality was used to acquire this image?"
PROBE_OPTIONS = ("CT", "MRI", "X-Ray", "Ultrasound")
FIDELITY_DIR = "fidelity"
"""Where verdicts are kept inside the data folder."""


def probe_image(size: int = 448) -> Image.Image:
    """A fixed synthetic image (a bright disc with a darker ring), the same everywhere: no asset needed."""
    y, x = np.mgrid[:size, :size]
    radius = np.hypot(x - size / 2, y - size / 2) / (size / 2)
    grey = np.clip(255 * (1 - radius) + 60 * np.sin(radius * 12), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


@dataclass(frozen=True)
class FidelityVerdict:
    """How the fast path's next-token choices compared with the full-precision model's on the probe."""

    key: str
    source: str
    scheme: str
    reference: str
    """The precision compared against: ``bf16`` (the checkpoint's own)."""
    tokens: int
    agreeing: int
    cosine_mean: float
    cosine_min: float
    seconds: float
    checked_at: str

    @property
    def passed(self) -> bool:
        return self.agreeing >= MIN_AGREEMENT * self.tokens

    def summary(self) -> str:
        """One line for the banner and the stored answers: "bf16-int8 agrees with bf16 on 31/32 tokens (...)"."""
        return (
            f"{self.scheme} agrees with {self.reference} on {self.agreeing}/{self.tokens} tokens "
            f"(logit cosine {self.cosine_mean:.4f}, lowest {self.cosine_min:.4f})"
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> FidelityVerdict:
        return cls(**json.loads(text))


# -- the measurement ---------------------------------------------------------------------------------


def reference_run(source: str, revision: str | None, tokens: int) -> tuple[list[int], torch.Tensor]:
    """The full-precision (bf16) model's greedy tokens and logits on the probe; the model is freed after."""
    from medvlm.model import load_model

    loaded = load_model(source, revision=revision, fast_cpu=False, dtype="bf16")
    try:
        return decode(loaded, tokens)
    finally:
        del loaded
        gc.collect()


def decode(loaded: LoadedModel, tokens: int, forced: Sequence[int] | None = None) -> tuple[list[int], torch.Tensor]:
    """Greedy tokens and logits (tokens x vocab, float32) on the probe; teacher-forced to ``forced`` when given."""
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    from medvlm.streaming import prepare_inputs

    inputs = prepare_inputs(loaded, [probe_image()], [PROBE_QUESTION], [list(PROBE_OPTIONS)])
    prompt_length = inputs["input_ids"].shape[1]

    class Force(LogitsProcessor):
        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            chosen = torch.full_like(scores, float("-inf"))
            chosen[:, forced[input_ids.shape[1] - prompt_length]] = 0.0
            return chosen

    with torch.inference_mode():
        out = loaded.model.generate(
            **inputs,
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            do_sample=False,
            logits_processor=LogitsProcessorList([Force()] if forced is not None else []),
            output_logits=True,
            return_dict_in_generate=True,
        )
    return out.sequences[0, prompt_length:].tolist(), torch.cat(out.logits).float()


def compare(reference: torch.Tensor, candidate: torch.Tensor) -> dict[str, Any]:
    """Agreement of two logit sequences (steps x vocab): same top-1 token, cosine, top-5 overlap, KL."""
    import torch

    cosine = torch.nn.functional.cosine_similarity(reference, candidate, dim=-1)
    top5 = (reference.topk(5).indices.unsqueeze(-1) == candidate.topk(5).indices.unsqueeze(-2)).any(-1).float()
    kl = torch.nn.functional.kl_div(
        candidate.log_softmax(-1), reference.log_softmax(-1), log_target=True, reduction="none"
    ).sum(-1)
    return {
        "agreeing": int((reference.argmax(-1) == candidate.argmax(-1)).sum()),
        "tokens": int(reference.shape[0]),
        "cosine_mean": float(cosine.mean()),
        "cosine_min": float(cosine.min()),
        "top5_overlap": float(top5.mean()),
        "kl_mean": float(kl.mean()),
    }


def check(source: str, revision: str | None = None, *, tokens: int = PROBE_TOKENS) -> FidelityVerdict:
    """Compare the fast path with the bf16 model on the probe, loading one model at a time."""
    from medvlm.fast_cpu import choose_scheme
    from medvlm.model import load_model

    started = time.perf_counter()
    reference_tokens, reference_logits = reference_run(source, revision, tokens)
    fast = load_model(source, revision=revision)
    if fast.fast_cpu is None or not fast.fast_cpu.quantized:
        raise RuntimeError(f"The CPU fast path did not apply to {source}: nothing to check.")
    _, fast_logits = decode(fast, tokens, forced=reference_tokens)
    scheme = fast.fast_cpu.scheme
    del fast
    gc.collect()
    numbers = compare(reference_logits, fast_logits)
    return FidelityVerdict(
        key=model_key(source, revision, scheme or choose_scheme()),
        source=source,
        scheme=scheme,
        reference="bf16",
        tokens=numbers["tokens"],
        agreeing=numbers["agreeing"],
        cosine_mean=numbers["cosine_mean"],
        cosine_min=numbers["cosine_min"],
        seconds=round(time.perf_counter() - started, 1),
        checked_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


# -- in the app --------------------------------------------------------------------------------------


class FidelityGuard:
    """Runs the check for the app in the background, once per model revision, and acts on the verdict.

    The verdict is read from ``<data_dir>/fidelity/<key>.json`` when an earlier start stored it;
    otherwise ``python -m medvlm.fidelity`` runs in a low-priority child process (so the app keeps
    serving and its memory is its own) and the verdict is stored. ``on_failure`` (the app's switch
    to the full-precision model) is called in the guard's thread when the fast path disagrees.
    """

    def __init__(
        self,
        data_dir: str | Path,
        loaded: LoadedModel,
        on_failure: Callable[[FidelityVerdict], None],
        *,
        runner: Callable[[str, str | None], FidelityVerdict] | None = None,
    ) -> None:
        self.folder = Path(data_dir) / FIDELITY_DIR
        self.source, self.revision = loaded.source, loaded.revision
        self.key = model_key(loaded.source, loaded.revision, loaded.fast_cpu.scheme if loaded.fast_cpu else "")
        self.on_failure = on_failure
        self.runner = runner or run_in_child_process
        self.verdict: FidelityVerdict | None = None
        self.error: str | None = None
        self.thread: threading.Thread | None = None

    @property
    def path(self) -> Path:
        return self.folder / f"{self.key}.json"

    def start(self) -> None:
        """Use a stored verdict, or start the check in the background; returns at once."""
        if self.path.is_file():
            try:
                self.verdict = FidelityVerdict.from_json(self.path.read_text())
            except (OSError, ValueError, TypeError):
                logger.warning("Ignoring an unreadable fidelity verdict %s; checking again.", self.path)
        if self.verdict is not None:
            self._act()
            return
        self.thread = threading.Thread(target=self._run, name="medvlm-fidelity", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            verdict = self.runner(self.source, self.revision)
        except Exception as error:  # noqa: BLE001 - the check failing must not take the app down
            self.error = f"{type(error).__name__}: {str(error).strip().splitlines()[-1] if str(error).strip() else ''}"
            logger.warning("The CPU fast path check could not run: %s", self.error)
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, verdict.to_json())
        self.verdict = verdict
        logger.info("CPU fast path check: %s", verdict.summary())
        self._act()

    def _act(self) -> None:
        if self.verdict is not None and not self.verdict.passed:
            logger.warning(
                "The CPU fast path changes this model's answers (%s); using full precision.", self.verdict.summary()
            )
            self.on_failure(self.verdict)

    def status(self) -> str:
        """For the banner: what the check found, or that it is running."""
        if self.verdict is not None:
            return self.verdict.summary()
        if self.error is not None:
            return f"the check against bf16 could not run ({self.error})"
        return "checking it against bf16 on a probe in the background (about a minute, once per model revision)"


def run_in_child_process(source: str, revision: str | None) -> FidelityVerdict:
    """``python -m medvlm.fidelity`` at low priority; its verdict, or RuntimeError with its last error line."""
    command = [sys.executable, "-m", "medvlm.fidelity", source, *(["--revision", revision] if revision else [])]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=(lambda: os.nice(10)) if hasattr(os, "nice") else None,  # the app's users come first
    )
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise RuntimeError(lines[-1] if lines else f"exit status {done.returncode}")
    return FidelityVerdict.from_json(done.stdout)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medvlm.fidelity", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="Hub id or checkpoint directory")
    parser.add_argument("--revision", help="Hub revision of the model")
    parser.add_argument("--tokens", type=int, default=PROBE_TOKENS, help="teacher-forced steps (default: %(default)s)")
    args = parser.parse_args(argv)
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    verdict = check(args.model, args.revision, tokens=args.tokens)
    sys.stdout.write(verdict.to_json())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
