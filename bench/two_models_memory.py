"""Memory for two 2B models in one process: what the two-model comparison page needs on a CPU.

    python -m bench.two_models_memory [--variants fast,bf16]

Each variant runs in a fresh process that loads the 2B checkpoint (random weights at Qwen2-VL-2B's
shapes with the real vocabulary, ``bench._common.random_2b_checkpoint``: the same bytes as the real
model) as the app would, then a second copy, and answers one question with each. It prints the
resident memory after one model, after two, and the process's peak. A free CPU Space has 16 GB;
the README says which variants fit. (fp32 is left out by default: 2.2 B parameters at 4 bytes are
8.9 GB a copy, so two cannot fit 16 GB, and measuring it needs more than this 24 GB machine spares.)
"""

from __future__ import annotations

import argparse
import json

import torch

from bench._common import OPTIONS, QUESTION, ct_head_image, peak_rss_mib, print_report, quiet, rss_mib, run_workers
from bench.decode_speed import load_variant

SPACE_GIB = 16


def worker(variant: str) -> dict:
    from medvlm.streaming import prepare_inputs

    quiet()
    models, after = [], []
    for _ in range(2):
        models.append(load_variant(variant))
        after.append(rss_mib())
    for loaded in models:
        inputs = prepare_inputs(loaded, [ct_head_image(512)], [QUESTION], [OPTIONS])
        with torch.inference_mode():
            loaded.model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    return {
        "one_model_rss_mib": round(after[0]),
        "two_models_rss_mib": round(after[1]),
        "peak_rss_mib": round(peak_rss_mib()),
        "after_answers_rss_mib": round(rss_mib()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="fast,bf16")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker)))
        return
    variants = args.variants.split(",")
    results = run_workers("bench.two_models_memory", variants, 1)
    rows = []
    for variant in variants:
        (result,) = results[variant]
        peak_gib = result["peak_rss_mib"] / 1024
        rows.append(
            (
                variant,
                f"{result['one_model_rss_mib'] / 1024:.1f} GiB",
                f"{result['two_models_rss_mib'] / 1024:.1f} GiB",
                f"{peak_gib:.1f} GiB",
                "yes" if peak_gib < SPACE_GIB * 0.9 else "no",
            )
        )
    print_report(
        "Two 2B models in one process (resident memory)",
        rows,
        (
            "variant",
            "one model loaded",
            "two loaded",
            "peak, both answered",
            f"fits a {SPACE_GIB} GB Space (10% headroom)",
        ),
        notes=[
            "bf16 weights stay memory-mapped from the checkpoint and count as resident only once used: read the peak."
        ],
    )


if __name__ == "__main__":
    main()
