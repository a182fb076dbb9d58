"""What the ``consistency`` reward does to reasoning that contradicts its own answer.

    python -m bench.grpo_consistency              # about 6-8 minutes on 2 CPU cores
    python -m bench.grpo_consistency --seed 1 --consistency-weight 0.25

The task is ``bench/grpo_learning.py``'s ("Is the square bright or dark?", A) Bright, B) Dark), but
the tiny model is warm-started with a *contradiction habit*: its reasoning says "The square is
Bright." or "... Dark." at random, and its answer letter is drawn independently, so about half of
its completions conclude one option and answer the other, the failure both papers report. From
that one checkpoint, ``train.grpo`` trains twice with the same seed and settings: with the
recipe's rewards (``accuracy`` + ``format``) and with ``consistency`` added. The script prints, on
60 held-out images before and after each run, the greedy accuracy and the contradiction rate (the
share of completions whose reasoning the campaigns' pre-check, :func:`medvlm.hints.reasoning_hints`,
finds contradicting the answer).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from bench.grpo_learning import grpo_argv
from medvlm.hints import reasoning_hints
from medvlm.model import load_model
from medvlm.square_task import OPTIONS, QUESTION, write_square_task
from medvlm.streaming import GenerationSettings
from medvlm.tiny_model import build_tiny_checkpoint, warm_start_format
from medvlm.vqa_records import load_records
from train.evaluate import evaluate
from train.grpo import main as grpo_main
from train.grpo import parse_args


def contradicting_example(rng: random.Random) -> tuple[Image.Image, str, list[str], str]:
    """A task image; reasoning naming a random option; an answer letter drawn on its own."""
    image = Image.new("RGB", (56, 56), (128, 128, 128))
    shade = rng.choice((rng.randint(190, 255), rng.randint(0, 65)))
    side = rng.randint(24, 44)
    left, top = rng.randint(0, 56 - side), rng.randint(0, 56 - side)
    image.paste((shade, shade, shade), (left, top, left + side, top + side))
    said, letter = rng.choice(OPTIONS), rng.choice("AB")
    return image, QUESTION, list(OPTIONS), f"<think> The square is {said}. </think>\n<answer>{letter}</answer>"


def held_out(model_dir: Path, questions: Path) -> tuple[float, float]:
    """(greedy accuracy, share of completions whose reasoning contradicts the answer)."""
    records, _ = load_records(questions)
    loaded = load_model(model_dir, device="cpu", dtype="fp32")
    result = evaluate(loaded, records, batch_size=20, settings=GenerationSettings(max_new_tokens=32), progress=False)
    contradictions = sum(
        any(hint.kind == "contradiction" for hint in reasoning_hints(s.completion, QUESTION, OPTIONS))
        for s in result.samples
    )
    return result.overall.accuracy, contradictions / len(result.samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=250, help="GRPO steps per run (each: 4 prompts x 8 completions)")
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--consistency-weight", type=float, default=1.0, help="its weight beside accuracy and format (1.0 each)"
    )
    parser.add_argument("--output-dir", type=Path, default=None, help="keep everything here (default: a temp folder)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as bench/grpo_learning.py: the tiny model gains nothing from more

    work = args.output_dir or Path(tempfile.mkdtemp(prefix="grpo-consistency-"))
    model_dir = warm_start_format(
        build_tiny_checkpoint(work / "tiny-model", seed=args.seed), seed=args.seed, example=contradicting_example
    )
    train_questions = write_square_task(work / "train", 200, seed=args.seed)
    test_questions = write_square_task(work / "test", 60, seed=args.seed + 1)
    start = held_out(model_dir, test_questions)
    print(f"warm-started (seed {args.seed}): accuracy {start[0]:.2f}, contradiction rate {start[1]:.2f}")
    for rewards in (["accuracy", "format"], ["accuracy", "format", "consistency"]):
        run_dir = work / "-".join(rewards)
        argv = grpo_argv(
            model_dir, train_questions, run_dir, steps=args.steps, learning_rate=args.learning_rate, seed=args.seed
        )
        argv += ["--reward_funcs", *rewards]
        if "consistency" in rewards:
            argv += ["--reward_weights", "1.0", "1.0", str(args.consistency_weight)]
        started = time.perf_counter()
        grpo_main(*parse_args(argv))
        minutes = (time.perf_counter() - started) / 60
        accuracy, contradiction = held_out(run_dir, test_questions)
        history = json.loads((run_dir / "trainer_state.json").read_text())["log_history"]
        weights = f" (consistency weight {args.consistency_weight})" if "consistency" in rewards else ""
        print(
            f"rewards {' + '.join(rewards)}{weights}: {minutes:.1f} min; "
            f"held-out accuracy {start[0]:.2f} -> {accuracy:.2f}, "
            f"contradiction rate {start[1]:.2f} -> {contradiction:.2f} ({len(history)} log entries)",
            flush=True,
        )


if __name__ == "__main__":
    main()
