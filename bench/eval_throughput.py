"""Evaluation throughput: batched generation against one question at a time, on the tiny checkpoint.

    python -m bench.eval_throughput [--questions 32] [--batch-size 16] [--tokens 64] [--repeats 3]

Runs ``train.evaluate.evaluate`` over the same synthetic questions (greyscale gradients of
different sizes, so batches need padding, as real ones do) with ``--batch-size`` and with 1,
alternating, ``--repeats`` rounds, and reports questions per second. The tiny model never emits
its end token, so every answer is exactly ``--tokens`` long and both runs do the same work. Also
reported: how many answers are identical between the two (left padding may change the numerics).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from PIL import Image

from bench._common import OPTIONS, QUESTION, interleaved, median, paired_ratio, print_report, quiet, tiny_checkpoint
from medvlm.streaming import GenerationSettings

SIZES = ((96, 96), (160, 128), (224, 224), (120, 200))
MODALITY_QUESTIONS = ((QUESTION, tuple(OPTIONS)), ("Which organ is shown?", ("Liver", "Brain", "Knee")))


def synthetic_records(count: int, directory: Path) -> list:
    """``count`` questions about gradient images of varied sizes, saved as PNGs in ``directory``."""
    from medvlm.vqa_records import VQARecord

    records = []
    for index in range(count):
        path = directory / f"scan{index}.png"
        Image.radial_gradient("L").resize(SIZES[index % len(SIZES)]).rotate(index * 7).save(path)
        question, options = MODALITY_QUESTIONS[index % len(MODALITY_QUESTIONS)]
        records.append(VQARecord(id=str(index), image_path=path, question=question, options=options, answer="A"))
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    quiet()
    from medvlm.model import load_model
    from train.evaluate import evaluate

    loaded = load_model(tiny_checkpoint())
    settings = GenerationSettings(max_new_tokens=args.tokens)
    completions: dict[int, list[str]] = {}

    def run(batch_size: int):
        def once() -> float:
            result = evaluate(loaded, records, batch_size=batch_size, settings=settings, progress=False)
            completions[batch_size] = [sample.completion for sample in result.samples]
            return len(records) / result.elapsed_s

        return once

    with tempfile.TemporaryDirectory() as tmp:
        records = synthetic_records(args.questions, Path(tmp))
        run(1)()  # warm-up
        rates = interleaved({"one at a time": run(1), f"batch {args.batch_size}": run(args.batch_size)}, args.repeats)
    baseline = rates["one at a time"]
    same = sum(a == b for a, b in zip(completions[1], completions[args.batch_size], strict=True))
    rows = [
        [name, f"{median(values):.2f} ({min(values):.2f}-{max(values):.2f})", f"{paired_ratio(values, baseline):.2f}x"]
        for name, values in rates.items()
    ]
    print_report(
        f"Evaluation throughput, tiny checkpoint, {args.questions} questions x {args.tokens} new tokens, "
        f"{args.repeats} interleaved rounds",
        rows,
        ["run", "questions/s median (min-max)", "vs one at a time"],
        [f"answers identical between batched and one-at-a-time: {same}/{len(records)}"],
    )


if __name__ == "__main__":
    main()
