"""Decode speed on CPU of the real Qwen2-VL-2B architecture: the fast path against plain fp32.

    python -m bench.decode_speed [--repeats 3] [--tokens 64] [--variants fp32,bf16,fast-bf16-int8,int8-dynamic]
    python -m bench.decode_speed --variants fp32@1,fast@1,fp32@2,fast@2     # pinned thread counts
    python -m bench.decode_speed --variants fp32,torchao-wo,torchao-dyn    # needs: pip install torchao

Each variant loads the randomly initialised 2B checkpoint in its own process (so peak memory is
its own), prefills the CT head image at 512x512 and the MedVLM-R1 prompt, and generates exactly
``--tokens`` tokens greedily (``min_new_tokens`` = ``max_new_tokens``, so no early end). Variants:
``fp32`` plain transformers (``fast_cpu=False``); ``bf16`` plain bf16; ``fast`` the default CPU
path (the scheme this CPU gets); ``fast-bf16-int8`` / ``fast-fp32-bf16`` the fast path with
that scheme whatever the CPU (``medvlm.fast_cpu``); ``int8-dynamic`` (``torch.ao``'s dynamic int8, the
old AVX2 scheme) and the other schemes that lost (``bench._common.LOST_VARIANTS``); ``torchao-wo`` / ``torchao-dyn``
the same layers as the fast path quantized with torchao's ``Int8WeightOnlyConfig`` /
``Int8DynamicActivationInt8WeightConfig`` instead (the alternatives we measured). ``VARIANT@N``
pins the thread count to N. Every variant gets the same image budget, so only decoding differs.
This is plain greedy decoding, one token a pass; what prompt lookup adds is ``bench.speculative``'s.
Rounds alternate the variants; ratios are per-round medians.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from bench._common import (
    OPTIONS,
    QUESTION,
    TokenClock,
    ct_head_image,
    median,
    paired_ratio,
    peak_rss_mib,
    print_report,
    quiet,
    random_2b_checkpoint,
    rss_mib,
    run_workers,
)
from bench._common import VARIANTS as COMMON_VARIANTS
from bench._common import load_variant as load_common_variant
from medvlm import fast_cpu

VARIANTS = (*COMMON_VARIANTS, "torchao-wo", "torchao-dyn")


def load_variant(variant: str):
    """The 2B checkpoint loaded as ``variant`` says, at the CPU image budget."""
    if not variant.startswith("torchao"):
        return load_common_variant(random_2b_checkpoint(), variant, fast_cpu.CPU_MAX_PIXELS)
    loaded = load_common_variant(random_2b_checkpoint(), "fp32", fast_cpu.CPU_MAX_PIXELS)
    quantize_with_torchao(loaded.model, weight_only=variant == "torchao-wo")
    return loaded


def quantize_with_torchao(model, *, weight_only: bool) -> None:
    """The fast path's layers (decoder linears and output head) quantized by torchao instead."""
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_

    names = set(fast_cpu.quantizable_layers(model))
    config = Int8WeightOnlyConfig() if weight_only else Int8DynamicActivationInt8WeightConfig()
    quantize_(model, config, filter_fn=lambda module, name: name in names)


def torchao_version() -> str:
    from importlib.metadata import version

    return version("torchao")


def worker(variant: str, tokens: int) -> dict:
    """Load, warm up, then time one generation of exactly ``tokens`` tokens."""
    from medvlm.streaming import prepare_inputs

    quiet()
    variant, _, threads = variant.partition("@")
    if threads:
        os.environ["OMP_NUM_THREADS"] = threads  # the fast path keeps an explicit choice
        torch.set_num_threads(int(threads))
    started = time.perf_counter()
    loaded = load_variant(variant)
    load_s = time.perf_counter() - started
    loaded_rss, load_peak = rss_mib(), peak_rss_mib()  # nothing but the load has run: its peak
    inputs = prepare_inputs(loaded, [ct_head_image(512)], [QUESTION], [OPTIONS])
    clock = TokenClock()
    with torch.inference_mode():
        loaded.model.generate(**inputs, max_new_tokens=2, min_new_tokens=2, do_sample=False)
        started = time.perf_counter()
        loaded.model.generate(**inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, streamer=clock)
    return {
        "tokens_per_s": round(clock.decode_rate(), 3),
        "prefill_s": round(clock.times[0] - started, 2),
        "new_tokens": len(clock.times),
        "prompt_tokens": int(inputs["input_ids"].shape[1]),
        "threads": torch.get_num_threads(),
        "load_s": round(load_s, 1),
        "loaded_rss_mib": round(loaded_rss),
        "load_peak_rss_mib": round(load_peak),
        "peak_rss_mib": round(peak_rss_mib()),
        "quantization": f"torchao {torchao_version()}"
        if variant.startswith("torchao")
        else loaded.describe()["quantization"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument(
        "--variants",
        default="fp32,fast",
        help=f"comma-separated, of {', '.join(VARIANTS)}, each optionally @THREADS; the first of each thread count is "
        "its baseline",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.tokens)))
        return

    random_2b_checkpoint()  # build once, before the workers race for it
    variants = args.variants.split(",")
    unknown = [variant for variant in variants if variant.partition("@")[0] not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    results = run_workers("bench.decode_speed", variants, args.repeats, ["--tokens", str(args.tokens)])
    rate = {variant: [run["tokens_per_s"] for run in runs] for variant, runs in results.items()}
    baseline = {
        variant: next(other for other in variants if other.partition("@")[2] == variant.partition("@")[2])
        for variant in variants
    }
    rows = [
        [
            variant,
            f"{median(rate[variant]):.2f} ({min(rate[variant]):.2f}-{max(rate[variant]):.2f})",
            f"{paired_ratio(rate[variant], rate[baseline[variant]]):.2f}x vs {baseline[variant]}",
            f"{median([run['prefill_s'] for run in runs]):.1f}",
            f"{median([run['load_peak_rss_mib'] for run in runs]) / 1e3 * 1.048576:.2f}",
            f"{median([run['loaded_rss_mib'] for run in runs]) / 1024:.2f}",
            f"{median([run['peak_rss_mib'] for run in runs]) / 1024:.2f}",
            runs[0]["threads"],
            runs[0]["quantization"],
        ]
        for variant, runs in results.items()
    ]
    print_report(
        f"Decode speed, Qwen2-VL-2B architecture (random weights), {args.tokens} new tokens, {args.repeats} "
        "interleaved rounds",
        rows,
        [
            "variant",
            "tokens/s median (min-max)",
            "ratio (paired rounds)",
            "time to first token s",
            "peak RSS while loading GB",
            "RSS loaded GiB",
            "peak RSS with generation GiB",
            "threads",
            "quantization",
        ],
        [
            f"prompt: {results[variants[0]][0]['prompt_tokens']} tokens (CT head at 512x512, max_pixels "
            f"{fast_cpu.CPU_MAX_PIXELS})"
        ],
    )


if __name__ == "__main__":
    main()
