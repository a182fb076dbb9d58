"""A visual task the tiny offline model can only solve by looking: "Is the square bright or dark?".

A light or dark square on a grey background, options ``Bright`` and ``Dark``, so the right answer
is fixed by the pixels alone. Benchmarks train on it (``bench/grpo_learning.py``), and tests and the
README's probe table need models whose dependence on the image is *known*:
:func:`build_square_model` teaches a tiny checkpoint, by a few hundred supervised steps, either to
look (its reasoning names what it sees and its letter follows the option that says so, in whichever
order the options come) or to ignore the image (the same visual claim and letter every time, the
"image-invariant with visual claims" failure the probes exist to catch).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image

from medvlm.prompt import LETTERS

QUESTION = "Is the square bright or dark?"
OPTIONS = ("Bright", "Dark")
SIZE = 56
"""Image side in pixels: two of Qwen2-VL's 28-pixel merged patches, so four image tokens."""


def square_image(rng: random.Random, bright: bool) -> Image.Image:
    """A light (190-255) or dark (0-65) square of random size and place on mid-grey."""
    image = Image.new("RGB", (SIZE, SIZE), (128, 128, 128))
    shade = rng.randint(190, 255) if bright else rng.randint(0, 65)
    side = rng.randint(24, 44)
    left, top = rng.randint(0, SIZE - side), rng.randint(0, SIZE - side)
    image.paste((shade, shade, shade), (left, top, left + side, top + side))
    return image


def write_square_task(directory: Path, count: int, seed: int, *, modalities: tuple[str, ...] = ("CT",)) -> Path:
    """``count`` questions (half bright, half dark) as JSONL with PNGs next to it; returns the JSONL path.

    ``modalities`` are assigned in turn, so per-modality reports have groups to show.
    """
    rng = random.Random(seed)
    (directory / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for index in range(count):
        bright = index % 2 == 0
        name = f"images/{index:04d}.png"
        square_image(rng, bright).save(directory / name)
        record = {
            "id": f"{directory.name}-{index}",
            "image": name,
            "question": QUESTION,
            "options": list(OPTIONS),
            "answer": "A" if bright else "B",
            "modality": modalities[(index // 2) % len(modalities)],
        }
        lines.append(json.dumps(record))
    path = directory / "questions.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _looking_example(rng: random.Random) -> tuple[Image.Image, str, list[str], str]:
    bright = rng.random() < 0.5
    options = list(OPTIONS) if rng.random() < 0.5 else list(reversed(OPTIONS))
    seen = "Bright" if bright else "Dark"
    letter = LETTERS[options.index(seen)]
    return (
        square_image(rng, bright),
        QUESTION,
        options,
        f"<think> The square is {seen.lower()}. </think>\n<answer>{letter}</answer>",
    )


def _blind_example(rng: random.Random) -> tuple[Image.Image, str, list[str], str]:
    bright = rng.random() < 0.5
    options = list(OPTIONS) if rng.random() < 0.5 else list(reversed(OPTIONS))
    return square_image(rng, bright), QUESTION, options, "<think> The square is bright. </think>\n<answer>A</answer>"


def build_square_model(directory: str | Path, *, looks: bool, steps: int = 800, seed: int = 0) -> Path:
    """A tiny checkpoint taught the square task: ``looks=True`` answers from the pixels, ``False`` ignores them.

    The looking model sees the options in both orders while it learns, so its letter follows the
    option text (it answers rotated options consistently); the blind one always writes "The square
    is bright." and answers A. Four layers, not the default two: two cannot learn to copy the letter
    of the option its reasoning named. About 20 s on 2 CPU cores.
    """
    from medvlm.metadata import read_metadata, write_metadata
    from medvlm.tiny_model import build_tiny_checkpoint, warm_start_format

    directory = build_tiny_checkpoint(directory, seed=seed, layers=4)
    warm_start_format(directory, steps=steps, seed=seed, example=_looking_example if looks else _blind_example)
    metadata = read_metadata(directory)
    metadata["square_task"] = {"looks_at_image": looks, "steps": steps}
    metadata["note"] = f"Tiny Qwen2-VL taught by medvlm to answer {QUESTION!r} " + (
        "from the image." if looks else "without looking: always 'The square is bright.' and A."
    )
    write_metadata(directory, metadata)
    return directory


def main(argv: list[str] | None = None) -> int:
    """``python -m medvlm.square_task DIR``: both tiny square models and a question file, for the probes."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m medvlm.square_task", description=main.__doc__)
    parser.add_argument("output_dir", type=Path, help="gets looking/, blind/ (two checkpoints) and task/ (questions)")
    parser.add_argument("--questions", type=int, default=40, help="questions in task/ (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name, looks in (("looking", True), ("blind", False)):
        build_square_model(args.output_dir / name, looks=looks, seed=args.seed)
    questions = write_square_task(args.output_dir / "task", args.questions, args.seed, modalities=("CT", "MRI"))
    print(f"Models in {args.output_dir / 'looking'} and {args.output_dir / 'blind'}; questions in {questions}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
