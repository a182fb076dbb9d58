"""Time to first token on CPU, split into image preprocessing, vision encoder and language prefill.

    python -m bench.ttft [--repeats 3] [--rounds 2] [--sizes 512,1024] [--variants fp32,bf16,fast-bf16-int8]

For the random Qwen2-VL-2B (real sizes), a CT head image resized to each ``--sizes`` square, at the
recipe's image budget (max_pixels 401408, up to 512 image tokens) and at the CPU default of the
fast path (200704, up to 256). Each variant runs in its own process, ``--rounds`` processes per
variant, alternating; inside each the budgets and sizes alternate, ``--repeats`` times. The vision
encoder is timed on its own
(``model.model.get_image_features``); the prefill is the first-token ``generate`` minus that.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from bench._common import (
    OPTIONS,
    QUESTION,
    VARIANTS,
    ct_head_image,
    load_variant,
    median,
    paired_ratio,
    print_report,
    quiet,
    random_2b_checkpoint,
    run_workers,
)
from medvlm import fast_cpu
from medvlm.processor import RECIPE_MAX_PIXELS

BUDGETS = {"recipe": RECIPE_MAX_PIXELS, "cpu": fast_cpu.CPU_MAX_PIXELS}


def measure(loaded, size: int, max_pixels: int) -> dict[str, float]:
    """Seconds for preprocessing, the vision encoder and the whole first token, and the image tokens."""
    from medvlm.streaming import prepare_inputs

    started = time.perf_counter()
    inputs = prepare_inputs(loaded, [ct_head_image(size)], [QUESTION], [OPTIONS], max_pixels=max_pixels)
    preprocess = time.perf_counter() - started
    with torch.inference_mode():
        started = time.perf_counter()
        loaded.model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])
        vision = time.perf_counter() - started
        started = time.perf_counter()
        loaded.model.generate(**inputs, max_new_tokens=1, do_sample=False)
        first_token = time.perf_counter() - started
    return {
        "preprocess_s": preprocess,
        "vision_s": vision,
        "prefill_s": first_token - vision,
        "ttft_s": preprocess + first_token,
        "image_tokens": int(inputs["image_grid_thw"].prod()) // 4,
        "prompt_tokens": int(inputs["input_ids"].shape[1]),
    }


def worker(variant: str, sizes: list[int], repeats: int) -> dict:
    """Every (size, budget) ``repeats`` times, alternating; the medians per (size, budget)."""
    quiet()
    loaded = load_variant(random_2b_checkpoint(), variant, RECIPE_MAX_PIXELS)
    cases = [(size, budget) for size in sizes for budget in BUDGETS]
    measure(loaded, sizes[0], BUDGETS["cpu"])  # warm-up: first calls allocate
    runs: dict[str, list[dict[str, float]]] = {f"{size}/{budget}": [] for size, budget in cases}
    for _ in range(repeats):
        for size, budget in cases:
            runs[f"{size}/{budget}"].append(measure(loaded, size, BUDGETS[budget]))
    return {
        case: {key: round(median([run[key] for run in values]), 3) for key in values[0]}
        for case, values in runs.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default="512,1024")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variants", default="fp32,fast")
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    if args.worker:
        print(json.dumps(worker(args.worker, sizes, args.repeats)))
        return

    random_2b_checkpoint()
    variants = args.variants.split(",")
    results = run_workers("bench.ttft", variants, args.rounds, ["--sizes", args.sizes, "--repeats", str(args.repeats)])
    rows = []
    for variant in variants:
        for size in sizes:
            recipe_ttft = [run[f"{size}/recipe"]["ttft_s"] for run in results[variant]]
            for budget in BUDGETS:
                cell = {
                    key: median([run[f"{size}/{budget}"][key] for run in results[variant]])
                    for key in ("preprocess_s", "vision_s", "prefill_s", "ttft_s", "image_tokens")
                }
                ttft = [run[f"{size}/{budget}"]["ttft_s"] for run in results[variant]]
                baseline_ttft = [run[f"{size}/{budget}"]["ttft_s"] for run in results[variants[0]]]
                rows.append(
                    [
                        variant,
                        f"{size}x{size}",
                        f"{budget} ({BUDGETS[budget]})",
                        int(cell["image_tokens"]),
                        f"{cell['preprocess_s']:.2f}",
                        f"{cell['vision_s']:.2f}",
                        f"{cell['prefill_s']:.2f}",
                        f"{cell['ttft_s']:.2f}",
                        f"{paired_ratio(recipe_ttft, ttft):.2f}x",
                        f"{paired_ratio(baseline_ttft, ttft):.2f}x",
                    ]
                )
    print_report(
        "Time to first token, Qwen2-VL-2B architecture (random weights), CPU",
        rows,
        [
            "variant",
            "image",
            "budget (max_pixels)",
            "image tokens",
            "preprocess s",
            "vision encoder s",
            "language prefill s",
            "TTFT s",
            "speed-up vs recipe budget",
            f"speed-up vs {variants[0]}",
        ],
        [f"medians of {args.repeats} alternating repeats in each of {args.rounds} processes per variant"],
    )


if __name__ == "__main__":
    main()
