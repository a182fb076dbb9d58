"""What a probe and a relevance map cost on CPU, at 256 image tokens, against the answer itself.

    python -m bench.probe_cost [--repeats 3] [--new-tokens 64] [--variant fast]

The random Qwen2-VL-2B (real sizes, ``bench._common.random_2b_checkpoint``) loaded as the app loads
it on this CPU (``fast``: the int8 fast path) at the CPU image budget (200,704 pixels: the CT head
at 448 x 448 is 16 x 16 = 256 image tokens). Interleaved, ``--repeats`` rounds of:

* ``prefill``: ``generate`` with one new token (time to first token), the baseline;
* ``answer``: the greedy answer of ``--new-tokens`` tokens (the random model never stops early);
* ``blank probe``: :func:`medvlm.probes.run_probes` with the blank image (one re-ask);
* ``relevance``: :func:`medvlm.relevance.relevance_maps` for a three-sentence reasoning.

Each is printed in seconds and as a ratio to the prefill or to the answer of the same round.
"""

from __future__ import annotations

import argparse
import time

from bench._common import (
    OPTIONS,
    QUESTION,
    ct_head_image,
    load_variant,
    median,
    paired_ratio,
    print_report,
    quiet,
    random_2b_checkpoint,
)
from medvlm import fast_cpu
from medvlm.probes import ProbeCase, ProbeKind, model_answerer, run_probes
from medvlm.relevance import relevance_maps
from medvlm.streaming import GenerationSettings, answer_batch

REASONING = (
    "<think>The image is an axial slice of the head with bone shown bright and soft tissue grey. The "
    "skull and ventricles are visible with a density scale typical of computed tomography. No "
    "magnetic resonance contrast is seen, so the modality is CT.</think><answer>A</answer>"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--variant", default="fast", help="as bench/_common.py's VARIANTS (default: the app's)")
    args = parser.parse_args()
    quiet()
    loaded = load_variant(random_2b_checkpoint(), args.variant, fast_cpu.CPU_MAX_PIXELS)
    image = ct_head_image(448)
    settings = GenerationSettings(max_new_tokens=args.new_tokens)
    answer = model_answerer(loaded, settings)
    case = ProbeCase(image, QUESTION, tuple(OPTIONS), REASONING, style=loaded.prompt_style)
    image_tokens = relevance_maps(loaded, image, QUESTION, OPTIONS, REASONING).maps[0].size

    def timed(run) -> float:
        started = time.perf_counter()
        run()
        return time.perf_counter() - started

    runs = {
        "prefill": lambda: answer_batch(loaded, [image], [QUESTION], [OPTIONS], GenerationSettings(max_new_tokens=1)),
        "answer": lambda: answer(image, QUESTION, OPTIONS, loaded.prompt_style),
        "blank probe": lambda: list(run_probes(case, answer, [ProbeKind.BLANK])),
        "relevance": lambda: relevance_maps(loaded, image, QUESTION, OPTIONS, REASONING),
    }
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            seconds[name].append(timed(run))
    rows = [
        [
            name,
            f"{median(values):.2f}",
            f"{paired_ratio(values, seconds['prefill']):.2f}",
            f"{paired_ratio(values, seconds['answer']):.2f}",
        ]
        for name, values in seconds.items()
    ]
    print_report(
        f"Probe cost, random Qwen2-VL-2B ({loaded.describe()['quantization']}), {image_tokens} image tokens",
        rows,
        ["step", "median s", "x prefill", "x answer"],
        [
            f"command: python -m bench.probe_cost --repeats {args.repeats} --new-tokens {args.new_tokens} "
            f"--variant {args.variant}",
            f"answer and probe: greedy, {args.new_tokens} new tokens; a probe set of n options costs "
            "2 + (n - 1) answers for up to 4 options (blank, shuffle, each rotation)",
        ],
    )


if __name__ == "__main__":
    main()
