"""Does the GRPO loop learn? A visual task the tiny model can only solve by looking at the image.

    python bench/grpo_learning.py                 # about 3-4 minutes on 2 CPU cores
    python bench/grpo_learning.py --seed 3 --output-dir outputs/grpo-learning

The task: "Is the square bright or dark?" (A) Bright, B) Dark), a light or dark square on a grey
background, so the right letter is fixed by the pixels alone. The tiny offline checkpoint is
warm-started to the answer *format* with random letters (``medvlm.tiny_model.warm_start_format``),
so it starts at chance. Then ``train.grpo`` trains it on the CPU with the smoke recipe (beta 0.04,
``accuracy`` + ``format`` rewards), scaled up: 250 steps of 4 prompts x 8 completions, a constant
learning rate of 2e-3 after 20 warm-up steps (a 0.3 M-parameter model needs far more than the 2B
model's 1e-6). Eight completions per prompt, not the recipe's four: a near-deterministic tiny
model often answers all four the same way, and such a group carries no signal, so with G = 4 some
seeds collapse to one letter before they learn to look. Warm-up keeps the first Adam steps from
breaking the format. The script prints the mean accuracy reward over the first and last logged
steps, and the greedy accuracy on 60 held-out images before and after (``train.evaluate.evaluate``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import tempfile
import time
from pathlib import Path
from statistics import mean

import torch

from medvlm.model import load_model
from medvlm.square_task import write_square_task
from medvlm.streaming import GenerationSettings
from medvlm.tiny_model import build_tiny_checkpoint, warm_start_format
from medvlm.vqa_records import load_records
from train.evaluate import evaluate
from train.grpo import main as grpo_main
from train.grpo import parse_args

RECIPE = Path(__file__).resolve().parents[1] / "train" / "recipes" / "tiny_cpu_smoke.yaml"


def grpo_argv(
    model_dir: Path, train_questions: Path, run_dir: Path, *, steps: int, learning_rate: float, seed: int
) -> list[str]:
    """The ``train.grpo`` command line of these benchmarks: the smoke recipe, scaled up (see the docstring)."""
    return [
        "--config", str(RECIPE),
        "--model_name_or_path", str(model_dir),
        "--dataset_name", str(train_questions),
        "--output_dir", str(run_dir),
        "--dataset_limit", "200",
        "--num_generations", "8",
        "--per_device_train_batch_size", "32",
        "--max_steps", str(steps),
        "--learning_rate", str(learning_rate),
        "--lr_scheduler_type", "constant_with_warmup",
        "--warmup_steps", "20",
        "--save_strategy", "no",
        "--seed", str(seed),
    ]  # fmt: skip


def held_out_accuracy(model_dir: Path, questions: Path) -> float:
    records, _ = load_records(questions)
    loaded = load_model(model_dir, device="cpu", dtype="fp32")
    return evaluate(
        loaded, records, batch_size=20, settings=GenerationSettings(max_new_tokens=32), progress=False
    ).overall.accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=250, help="GRPO steps (each: 4 prompts x 8 completions)")
    parser.add_argument(
        "--learning-rate", type=float, default=2e-3, help="constant; for the tiny model (the 2B recipe: 1e-6)"
    )
    parser.add_argument("--hidden-size", type=int, default=64, help="of the tiny model (a multiple of 64)")
    parser.add_argument("--window", type=int, default=10, help="logged steps averaged at the start and at the end")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--output-dir", type=Path, default=None, help="keep the model, data and run here (default: a temporary folder)"
    )
    args = parser.parse_args()
    # One thread: the tiny model's matrices are too small to gain from more, and on a busy machine
    # two threads per process make each step several times slower.
    torch.set_num_threads(1)

    work = args.output_dir or Path(tempfile.mkdtemp(prefix="grpo-learning-"))
    model_dir = warm_start_format(
        build_tiny_checkpoint(work / "tiny-model", seed=args.seed, hidden_size=args.hidden_size), seed=args.seed
    )
    train_questions = write_square_task(work / "train", 200, seed=args.seed)
    test_questions = write_square_task(work / "test", 60, seed=args.seed + 1)
    run_dir = work / "run"
    argv = grpo_argv(
        model_dir, train_questions, run_dir, steps=args.steps, learning_rate=args.learning_rate, seed=args.seed
    )

    before = held_out_accuracy(model_dir, test_questions)
    started = time.perf_counter()
    grpo_main(*parse_args(argv))
    minutes = (time.perf_counter() - started) / 60
    after = held_out_accuracy(run_dir, test_questions)

    history = [
        entry for entry in json.loads((run_dir / "trainer_state.json").read_text())["log_history"] if "reward" in entry
    ]
    accuracy = [entry["rewards/accuracy_reward/mean"] for entry in history]
    fmt = [entry["rewards/format_reward/mean"] for entry in history]
    k = args.window
    print()
    print(f"command: python -m train.grpo {shlex.join(argv)}")
    print(
        f"GRPO: {len(history)} steps in {minutes:.1f} min; accuracy reward (mean of {k} logged steps) first "
        f"{mean(accuracy[:k]):.2f} -> last {mean(accuracy[-k:]):.2f}; format reward {mean(fmt[:k]):.2f} -> "
        f"{mean(fmt[-k:]):.2f}"
    )
    print(
        f"held-out greedy accuracy ({test_questions.parent}, 60 questions, chance 0.50): before {before:.2f} -> after "
        f"{after:.2f}"
    )


if __name__ == "__main__":
    main()
