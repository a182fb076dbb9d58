"""Fidelity of the CPU fast path: its next-token logits against fp32's, step by step.

    python -m bench.fidelity [--steps 64] [--models 2b,tiny] [--variants bf16,fast-bf16-int8,fast-int8-dynamic]
    python -m bench.fidelity --models /path/to/MedVLM-R1          # the real weights, where you have them

fp32 decodes the CT head prompt greedily for ``--steps`` tokens; each fast variant is then
teacher-forced on that same sequence (every step sees the fp32 tokens so far), so both give
logits for identical contexts, and it also decodes freely. Reported: cosine similarity of the
logit vectors (mean and minimum over steps), top-5 overlap, top-1 agreement, KL(fp32 || fast),
and how many leading tokens of its own greedy output equal fp32's. ``bf16`` is plain bf16 (the
checkpoint's own precision: the noise floor of any scheme that computes in bf16); ``fast`` is the
default fast path, ``fast-bf16-int8`` and ``fast-int8-dynamic`` force a scheme
(``medvlm.fast_cpu``).

Random weights make logits flat (a random 2B model has no preferred next token: the median gap
between its two best logits is printed), so top-k agreement is pessimistic there; and random
weights have none of the activation outliers trained LLMs have, which is where int8 activations
hurt most, so a random model cannot show that risk. ``tiny`` is the format-warm-started tiny model
(peaked logits) with every layer quantized. Only the real weights settle it: pass their directory.

The app's fidelity guard (:mod:`medvlm.fidelity`, ``python -m medvlm.fidelity DIR``) runs the
same teacher-forced comparison where the real weights are, with the checkpoint's own bf16 as the
reference (what a GPU runs) on a 32-token probe; its top-1 agreement is this table's, counted in
tokens.
"""

from __future__ import annotations

import argparse
import gc
import statistics

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from bench._common import (
    OPTIONS,
    QUESTION,
    ct_head_image,
    forced_scheme,
    print_report,
    quiet,
    random_2b_checkpoint,
    tiny_checkpoint,
)
from medvlm import fast_cpu


class ForceTokens(LogitsProcessor):
    """Makes ``generate`` emit ``tokens`` in order (teacher forcing), whatever the model prefers."""

    def __init__(self, tokens: list[int], prompt_length: int):
        self.tokens = tokens
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        forced = torch.full_like(scores, float("-inf"))
        forced[:, self.tokens[input_ids.shape[1] - self.prompt_length]] = 0.0
        return forced


def checkpoint(name: str) -> str:
    """``2b`` and ``tiny`` are the benchmark checkpoints; anything else is a directory or Hub id."""
    if name == "2b":
        return str(random_2b_checkpoint())
    if name == "tiny":
        return str(tiny_checkpoint(formatted=True))
    return name


def decode(loaded, steps: int, forced: list[int] | None = None) -> tuple[list[int], torch.Tensor]:
    """Greedy tokens and raw logits (steps x vocab); teacher-forced to ``forced`` when given."""
    from medvlm.streaming import prepare_inputs

    inputs = prepare_inputs(loaded, [ct_head_image()], [QUESTION], [OPTIONS])
    prompt_length = inputs["input_ids"].shape[1]
    processors = LogitsProcessorList([ForceTokens(forced, prompt_length)] if forced is not None else [])
    with torch.inference_mode():
        out = loaded.model.generate(
            **inputs,
            max_new_tokens=steps,
            min_new_tokens=steps,
            do_sample=False,
            logits_processor=processors,
            output_logits=True,
            return_dict_in_generate=True,
        )
    return out.sequences[0, prompt_length:].tolist(), torch.cat(out.logits).float()


def load(name: str, variant: str):
    """``name`` loaded as ``fp32`` or ``bf16`` (fast path off), or a fast variant, at the CPU image budget."""
    from medvlm.model import load_model

    if variant in ("fp32", "bf16"):
        return load_model(checkpoint(name), fast_cpu=False, dtype=variant, max_pixels=fast_cpu.CPU_MAX_PIXELS)
    with forced_scheme(variant.removeprefix("fast").removeprefix("-") or None):
        loaded = load_model(checkpoint(name), max_pixels=fast_cpu.CPU_MAX_PIXELS)
    if not loaded.fast_cpu.quantized:
        raise RuntimeError(f"the fast path did not quantize {name}: {loaded.describe()['quantization']}")
    return loaded


def compare(
    reference_tokens: list[int], reference: torch.Tensor, forced: torch.Tensor, free_tokens: list[int]
) -> list[str]:
    """Table cells: the fast logits against fp32's on fp32's own greedy sequence."""
    cosine = torch.nn.functional.cosine_similarity(reference, forced, dim=-1)
    top5 = [
        len(set(a) & set(b)) / 5
        for a, b in zip(reference.topk(5).indices.tolist(), forced.topk(5).indices.tolist(), strict=True)
    ]
    top1 = (reference.argmax(-1) == forced.argmax(-1)).float().mean().item()
    kl = torch.nn.functional.kl_div(
        forced.log_softmax(-1), reference.log_softmax(-1), log_target=True, reduction="none"
    ).sum(-1)
    shared = next(
        (i for i, (a, b) in enumerate(zip(reference_tokens, free_tokens, strict=False)) if a != b),
        len(reference_tokens),
    )
    return [
        f"{cosine.mean():.5f} / {cosine.min():.5f}",
        f"{statistics.mean(top5):.3f}",
        f"{top1:.3f}",
        f"{kl.mean():.4f}",
        f"{shared}/{len(reference_tokens)}",
    ]


def rows_for(name: str, variants: list[str], steps: int) -> list[list[str]]:
    """fp32 first (its greedy sequence and logits), then each fast variant, one model in memory at a time."""
    loaded = load(name, "fp32")
    reference_tokens, reference = decode(loaded, steps)
    del loaded
    gc.collect()
    best_two = reference.topk(2).values
    margin = (
        f"{statistics.median((best_two[:, 0] - best_two[:, 1]).tolist()):.3f} (logit std "
        f"{statistics.median(reference.std(-1).tolist()):.3f})"
    )
    rows = []
    for variant in variants:
        loaded = load(name, variant)
        _, forced = decode(loaded, steps, forced=reference_tokens)
        free_tokens, _ = decode(loaded, steps)
        rows.append([name, variant, *compare(reference_tokens, reference, forced, free_tokens), margin])
        del loaded
        gc.collect()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument(
        "--models",
        default="2b,tiny",
        help="comma-separated: 2b (random Qwen2-VL-2B), tiny (warm-started tiny model), or a checkpoint directory / "
        "Hub id",
    )
    parser.add_argument("--variants", default="bf16,fast-bf16-int8,fast-int8-dynamic")
    args = parser.parse_args()
    quiet()
    fast_cpu.MIN_QUANTIZED_WEIGHTS = 0  # the tiny model's layers too; a 2B model's are all above the default anyway
    rows = [row for name in args.models.split(",") for row in rows_for(name, args.variants.split(","), args.steps)]
    print_report(
        f"Fidelity of the CPU schemes against fp32, {args.steps} teacher-forced greedy steps",
        rows,
        [
            "model",
            "variant",
            "cosine mean / min",
            "top-5 overlap",
            "top-1 agreement",
            "KL(fp32||fast) mean",
            "own greedy = fp32 (prefix)",
            "fp32 top-1 margin median",
        ],
        [
            f"prompt: CT head DICOM (assets/ct_head.dcm), the MedVLM-R1 prompt, max_pixels {fast_cpu.CPU_MAX_PIXELS} "
            "on both sides"
        ],
    )


if __name__ == "__main__":
    main()
