"""Memory for two 2B models in one process: what the two-model comparison page needs on a CPU.

    python -m bench.two_models_memory [--variants fast,bf16,fast+fidelity]

Each variant runs in a fresh process that loads the 2B checkpoint (random weights at Qwen2-VL-2B's
shapes with the real vocabulary, ``bench._common.random_2b_checkpoint``: the same bytes as the real
model) as the app would, then a second copy, and answers one question with each. It prints the
resident memory after one model, after two, and the process's peak. A free CPU Space has 16 GB;
the README says which variants fit. (fp32 is left out by default: 2.2 B parameters at 4 bytes are
8.9 GB a copy, so two cannot fit 16 GB, and measuring it needs more than this 24 GB machine spares.)

``fast+fidelity`` is the first start of a two-model Space on CPU: once both fast models have
answered, the fidelity guard's child process (``python -m medvlm.fidelity``, bf16 and fast copies
of the checkpoint one after the other) runs beside them. Resident sizes add file pages the two
processes share, so this variant reads the machine's used memory instead (MemTotal - MemAvailable,
which leaves out reclaimable page cache), sampled every 0.1 s, as the rise over the moment before the
first model loaded: run it on an otherwise quiet machine.
"""

from __future__ import annotations

import argparse
import json
import threading
from pathlib import Path

import torch

from bench._common import (
    OPTIONS,
    QUESTION,
    ct_head_image,
    peak_rss_mib,
    print_report,
    quiet,
    random_2b_checkpoint,
    rss_mib,
    run_workers,
)
from bench.decode_speed import load_variant

SPACE_GIB = 16


def used_mib() -> float:
    """The machine's memory in use that page-cache reclaim cannot free: MemTotal - MemAvailable."""
    info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return (int(info["MemTotal"].split()[0]) - int(info["MemAvailable"].split()[0])) / 1024


class UsedPeak:
    """The highest :func:`used_mib` while it runs, sampled in a thread."""

    def __init__(self) -> None:
        self.start = self.peak = used_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, used_mib())

    def rise_mib(self) -> float:
        """The peak so far over the memory in use when sampling began."""
        return max(self.peak, used_mib()) - self.start

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def worker(variant: str) -> dict:
    from medvlm.streaming import prepare_inputs

    quiet()
    with_fidelity = variant.endswith("+fidelity")
    sampler = UsedPeak() if with_fidelity else None
    models, after = [], []
    for _ in range(2):
        models.append(load_variant(variant.removesuffix("+fidelity")))
        after.append(rss_mib())
    for loaded in models:
        inputs = prepare_inputs(loaded, [ct_head_image(512)], [QUESTION], [OPTIONS])
        with torch.inference_mode():
            loaded.model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    result = {
        "one_model_rss_mib": round(after[0]),
        "two_models_rss_mib": round(after[1]),
        "peak_rss_mib": round(peak_rss_mib()),
        "after_answers_rss_mib": round(rss_mib()),
    }
    if sampler is not None:
        from medvlm.fidelity import run_in_child_process

        result["used_rise_before_check_mib"] = round(sampler.rise_mib())
        run_in_child_process(str(random_2b_checkpoint()), None)
        result["used_rise_peak_mib"] = round(sampler.rise_mib())
        sampler.stop()
    return result


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
        peak_gib = result.get("used_rise_peak_mib", result["peak_rss_mib"]) / 1024
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
            "bf16 weights stay memory-mapped from the checkpoint and count as resident only once used: read the peak.",
            "fast+fidelity: its peak is the machine's used memory (MemTotal - MemAvailable) over its start, while "
            "the fidelity check ran beside the two answered models.",
        ],
    )


if __name__ == "__main__":
    main()
