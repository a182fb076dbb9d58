"""Prompt-lookup decoding on the 2B architecture: exact for greedy, and how much faster on MedVLM-R1-style text.

    python -m bench.speculative [--repeats 2] [--lookups 0,3,5,10]

Greedy speculative decoding is exact: draft tokens are kept only where they equal the model's own
greedy choice, so the text is the same and only the number of forward passes changes. Prompt
lookup (transformers' ``prompt_lookup_num_tokens``) drafts by finding the last few tokens earlier
in the prompt or the answer so far and proposing what followed them there; a reasoning model's
``<think>`` restates the question and the options, which is where it pays.

A random 2B model does not restate anything, so its own greedy text would accept no draft. Here
the 2B model (the fast path this CPU gets, real sizes and kernels) is made to produce realistic
MedVLM-R1-style completions (:data:`COMPLETIONS`) by a logits processor that forces them: every
forward pass, verification included, is the real model's cost, and what is accepted is what a
model writing that text would accept. Reported per lookup length: decode tokens/s, the ratio to
plain greedy in the same round, the forward passes per token, and the drafted tokens accepted.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import LogitsProcessorList

from bench._common import ct_head_image, load_variant, print_report, quiet, random_2b_checkpoint
from bench.fidelity import ForceTokens
from medvlm import fast_cpu

QUESTIONS = (
    (
        "Which imaging modality was used to acquire this image?",
        ["CT", "MRI", "X-Ray", "Ultrasound"],
        "<think> The image is an axial slice of the head. The question asks which imaging modality was used to "
        "acquire this image, and the options are CT, MRI, X-Ray and Ultrasound. The skull appears bright white and "
        "the brain is shown in shades of grey with little contrast between grey and white matter, which is typical "
        "of CT. An MRI would show more contrast between grey and white matter, an X-Ray would not show a "
        "cross-sectional slice, and Ultrasound cannot image the brain through the skull. So the modality used to "
        "acquire this image is CT. </think>\n<answer>A</answer>",
    ),
    (
        "Which organ is shown in this image?",
        ["Brain", "Liver", "Lung", "Kidney"],
        "<think> The image shows a cross-section surrounded by a bright ring of bone, which is the skull. Inside the "
        "skull there is soft tissue with the shape of the brain, with the ventricles in the middle. The question asks "
        "which organ is shown in this image. The liver, the lung and the kidney are in the chest and abdomen, not "
        "inside the skull. So the organ shown in this image is the brain. </think>\n<answer>A</answer>",
    ),
    (
        "Is there an abnormality in this image?",
        ["Yes, a haemorrhage", "Yes, a fracture", "No abnormality", "Yes, a tumour"],
        "<think> The image is a CT of the head. The question asks whether there is an abnormality in this image. I "
        "look for a haemorrhage, which would be a bright area in the brain; for a fracture, which would be a break "
        "in the bright bone of the skull; and for a tumour, which would be a mass with swelling around it. The brain "
        "looks symmetric, the ventricles are normal in size, and the skull is intact. There is no haemorrhage, no "
        "fracture and no tumour. So there is no abnormality in this image. </think>\n<answer>C</answer>",
    ),
    (
        "In which plane was this image acquired?",
        ["Axial", "Coronal", "Sagittal", "Oblique"],
        "<think> The question asks in which plane this image was acquired. The options are axial, coronal, sagittal "
        "and oblique. The image shows the head as a round cross-section with the front of the head at the top and "
        "both sides of the brain symmetric, which is how an axial image looks. A coronal image would show the head "
        "from the front, and a sagittal image would show it from the side. So this image was acquired in the axial "
        "plane. </think>\n<answer>A</answer>",
    ),
)


def run(loaded, lookup: int) -> dict[str, float]:
    """Each case once with prompt lookup of ``lookup`` tokens (0: plain greedy); decode rate and draft counts."""
    from medvlm.streaming import prepare_inputs

    tokenizer = loaded.processor.tokenizer
    seconds = tokens = passes = 0.0
    for question, options, completion in QUESTIONS:
        inputs = prepare_inputs(loaded, [ct_head_image(512)], [question], [options])
        forced = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        prompt_length = inputs["input_ids"].shape[1]
        calls = Counter(loaded.model)
        kwargs = {"prompt_lookup_num_tokens": lookup} if lookup else {}
        with torch.inference_mode(), calls:
            first = time.perf_counter()
            loaded.model.generate(**inputs, max_new_tokens=1, do_sample=False)  # prefill, timed apart
            prefill = time.perf_counter() - first
            calls.count = 0
            started = time.perf_counter()
            out = loaded.model.generate(
                **inputs,
                max_new_tokens=len(forced),
                do_sample=False,
                logits_processor=LogitsProcessorList([ForceTokens(forced, prompt_length)]),
                **kwargs,
            )
            elapsed = time.perf_counter() - started - prefill
        produced = out[0, prompt_length:].tolist()
        if produced != forced[: len(produced)] or len(produced) != len(forced):
            raise AssertionError(f"lookup {lookup}: the text changed")
        seconds += elapsed
        tokens += len(produced) - 1
        passes += calls.count - 1
    return {"tokens_per_s": tokens / seconds, "passes_per_token": passes / tokens}


class Counter:
    """Counts the language model's forward passes while active (one per decoding step or verification)."""

    def __init__(self, model) -> None:
        self.model, self.count, self.handle = model, 0, None

    def __enter__(self):
        self.handle = self.model.get_decoder().register_forward_hook(self._hook)
        return self

    def _hook(self, *args) -> None:
        self.count += 1

    def __exit__(self, *exc) -> None:
        self.handle.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--lookups", default="0,3,5,10")
    parser.add_argument("--variant", default="fast")
    args = parser.parse_args()
    quiet()
    loaded = load_variant(random_2b_checkpoint(), args.variant, fast_cpu.CPU_MAX_PIXELS)
    lookups = [int(value) for value in args.lookups.split(",")]
    run(loaded, lookups[-1])  # warm-up
    results: dict[int, list[dict[str, float]]] = {lookup: [] for lookup in lookups}
    for _ in range(args.repeats):
        for lookup in lookups:
            results[lookup].append(run(loaded, lookup))
    plain = results[lookups[0]]
    rows = []
    for lookup, runs in results.items():
        rates = [run_["tokens_per_s"] for run_ in runs]
        ratio = statistics.median(a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(runs, plain, strict=True))
        rows.append(
            [
                lookup or "off (plain greedy)",
                f"{statistics.median(rates):.2f} ({min(rates):.2f}-{max(rates):.2f})",
                f"{ratio:.2f}x",
                f"{statistics.median(run_['passes_per_token'] for run_ in runs):.2f}",
            ]
        )
    print_report(
        f"Prompt-lookup decoding, Qwen2-VL-2B architecture ({loaded.describe()['quantization']}), "
        f"{len(QUESTIONS)} MedVLM-R1-style completions, {args.repeats} interleaved rounds",
        rows,
        ["prompt lookup tokens", "decode tokens/s median (min-max)", "vs plain greedy", "forward passes per token"],
        ["every completion is the same text with and without lookup (checked): greedy speculation is exact"],
    )


if __name__ == "__main__":
    main()
