"""``medvlm``: ask one question about one image from the terminal, streaming the reasoning.

    medvlm ask --image scan.dcm --question "Which organ is shown?" \\
        --option Liver --option Brain --option Knee --option Lung [--window lung] [--model DIR]
    medvlm tiny-model --format-warm-start ./tiny-model   # the offline test checkpoint (random weights)
    medvlm campaign create NAME --samples run/samples.jsonl --reviews-per-output 3   # see medvlm.campaign_cli

The input is checked (file readable, question and options valid) before the model is loaded, so
a typo costs a second, not a 4 GB load. Problems print one line on stderr, ``error: ...``, and
the exit status is 2; the parsed answer ends the output and ``--json`` prints it machine-readably.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from medvlm import campaign_cli
from medvlm.cli_options import add_generation_options, add_model_options, load_model_from, settings_from
from medvlm.dicom import WINDOW_PRESETS, Window
from medvlm.errors import MedVLMError
from medvlm.images import load_image
from medvlm.prompt import LETTERS, validate_question

if TYPE_CHECKING:  # torch and transformers load when a model is needed, so --help answers at once
    from medvlm.streaming import StreamUpdate

EXIT_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medvlm", description="A workbench for reasoning medical vision-language models."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    ask = commands.add_parser(
        "ask", help="answer one multiple-choice question about one image (PNG, JPEG, TIFF, BMP, WebP or DICOM)"
    )
    ask.add_argument("--image", required=True, help="image or DICOM file")
    ask.add_argument("--question", required=True, help="the question, in words (the options go in --option)")
    ask.add_argument(
        "--option",
        action="append",
        default=[],
        dest="options",
        help="an answer option; repeat 2 to 10 times (lettered A, B, C... in order)",
    )
    add_model_options(ask)
    dicom = ask.add_argument_group("DICOM display")
    dicom.add_argument(
        "--window",
        choices=sorted(WINDOW_PRESETS),
        help="named CT window preset, for CT in Hounsfield units (default: the file's own window)",
    )
    dicom.add_argument("--window-center", type=float, help="custom window centre (with --window-width)")
    dicom.add_argument("--window-width", type=float, help="custom window width (with --window-center)")
    dicom.add_argument(
        "--frame", type=int, help="frame of a multi-frame DICOM, numbered from 1 (default: the middle one)"
    )
    add_generation_options(ask)
    ask.add_argument(
        "--json", action="store_true", help="print the final result as one JSON object instead of the summary"
    )

    tiny = commands.add_parser(
        "tiny-model", help="write the tiny offline test checkpoint (random weights, random output)"
    )
    tiny.add_argument("arguments", nargs=argparse.REMAINDER, help="DIRECTORY [--seed N] [--format-warm-start]")
    campaign_cli.add_parser(commands)
    return parser


def tiny_model_parser() -> argparse.ArgumentParser:
    """The options of ``medvlm-tiny-model`` (also ``medvlm tiny-model``)."""
    parser = argparse.ArgumentParser(
        prog="medvlm-tiny-model",
        description="Write a tiny, randomly initialised Qwen2-VL checkpoint (offline, about a second). "
        "It exercises the whole pipeline; its answers are random text.",
    )
    parser.add_argument("directory", type=Path, help="where to write the checkpoint")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the random weights and of the warm-start (default: %(default)s)"
    )
    parser.add_argument(
        "--format-warm-start",
        action="store_true",
        help="also teach it the <think>/<answer> format, so that its answers parse and highlight (the letters stay "
        "random): 300 training steps, about 15 s on 2 idle CPU cores and longer when they are busy",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace the model the directory holds (without it, a directory holding another model is left alone; "
        "one holding files that are not a model never is)",
    )
    return parser


def tiny_model_main(argv: Sequence[str] | None = None) -> int:
    """``medvlm-tiny-model DIR``: write the tiny offline checkpoint (random weights) to DIR.

    A directory already holding this very model is left as it is (the README's commands can be run
    again); one holding anything else, such as the format-warm-started model when the plain one is
    asked for, is never replaced without ``--force``: the app would silently answer with another model.
    """
    args = tiny_model_parser().parse_args(argv)
    held = _held_by(args.directory)
    if held in (NOT_A_DIRECTORY, OTHER_FILES):  # never deleted, --force or not: it may be anything of the user's
        print(f"error: {args.directory} holds {held}: give a new or empty directory.", file=sys.stderr)
        return EXIT_ERROR
    if held is not None and not args.force:
        asked = _tiny_model_name(args.seed, args.format_warm_start)
        if held == asked:
            print(f"{args.directory} already holds {asked}; nothing written.")
            return 0
        print(
            f"error: {args.directory} already holds {held}; writing {asked} there would replace it. Pass --force to "
            "replace it, or give another directory.",
            file=sys.stderr,
        )
        return EXIT_ERROR
    from medvlm.tiny_model import build_tiny_checkpoint, warm_start_format

    if args.force and args.directory.is_dir():
        shutil.rmtree(args.directory)
    path = build_tiny_checkpoint(args.directory, seed=args.seed)
    if args.format_warm_start:
        warm_start_format(path, seed=args.seed)
    print(f"Wrote a tiny random Qwen2-VL checkpoint to {path}. Its weights are random: its output is random text.")
    print(f"Try: medvlm ask --model {path} --image IMAGE --question '...' --option '...' --option '...'")
    return 0


def _readable_file(typed: str) -> Path:
    """The image path as typed, once it is known to be a file this process can read; else the reason, naming it.

    Checked before anything is decoded or imported, so a typo, a folder or a file without read
    permission costs a second and says which path (the person typed it; the app never names one).
    """
    path = Path(typed)
    if not path.exists():
        raise MedVLMError(f"There is no file at {typed} (check the path).")
    if not path.is_file():
        raise MedVLMError(f"{typed} is a folder, not a file: give one image or DICOM file.")
    try:
        with path.open("rb") as file:
            file.read(1)
    except OSError as error:
        raise MedVLMError(f"The file {typed} cannot be read ({error.strerror or 'input/output error'}).") from None
    return path


NOT_A_DIRECTORY, OTHER_FILES = "a file, not a directory", "files that are not a model"


def _tiny_model_name(seed: int, warm_started: bool) -> str:
    return f"the {'format-warm-started ' if warm_started else ''}tiny test model (seed {seed})"


def _held_by(directory: Path) -> str | None:
    """What ``directory`` holds, in words (None: nothing, so a model can be written there)."""
    if not directory.exists() or (directory.is_dir() and not any(directory.iterdir())):
        return None
    if not directory.is_dir():
        return NOT_A_DIRECTORY
    from medvlm.metadata import read_metadata

    metadata = read_metadata(directory)
    if metadata.get("kind") == "random-test-model":
        return _tiny_model_name(metadata.get("seed", 0), "format_warm_start" in metadata)
    if (directory / "config.json").is_file():
        return "another model"
    return OTHER_FILES


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "tiny-model":
            return tiny_model_main(args.arguments)
        if args.command == "campaign":
            return campaign_cli.run(args, out=sys.stdout)
        return ask(args, out=sys.stdout, err=sys.stderr)
    except MedVLMError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


def ask(args: argparse.Namespace, *, out: TextIO, err: TextIO) -> int:
    """Run the ``ask`` command: check inputs, load the model, stream, print the parsed result.

    Everything typed is checked before torch is imported (seconds) and the model loaded (minutes):
    the image path is named back to the person who typed it (the app, serving others, never names one).
    """
    question, options = validate_question(args.question, args.options)
    image = _readable_file(args.image)
    window = Window(preset=args.window, center=args.window_center, width=args.window_width)
    loaded_image = load_image(image, window=window, frame=None if args.frame is None else args.frame - 1)
    settings = settings_from(args)

    from medvlm.streaming import stream_completion  # torch, only once the inputs are known to be good

    _quiet_libraries()
    print(f"Loading {args.model} ...", file=err, flush=True)
    loaded = load_model_from(args)
    if loaded.is_test_model:
        print(
            "Note: this is the tiny random test model; its output is random text, not medical reasoning.",
            file=err,
            flush=True,
        )
    style = args.style or loaded.prompt_style.value
    if args.style is None:
        print(f"Prompt wording: {style}, {loaded.prompt_style_reason} (--style changes it).", file=err, flush=True)
    meta = loaded_image.metadata
    described = ", ".join(
        part
        for part in (
            meta.source_format,
            meta.modality,
            meta.body_part,
            meta.window_name and f"window {meta.window_name}",
        )
        if part
    )
    print(f"Image: {meta.width}x{meta.height} ({described})", file=err, flush=True)

    final: StreamUpdate | None = None
    for update in stream_completion(loaded, loaded_image.image, question, options, settings, style=style):
        if not args.json:
            out.write(update.delta)
            out.flush()
        final = update
    assert final is not None and final.done
    if args.json:
        out.write(json.dumps(_result_dict(final, options, loaded.describe(), meta.to_dict()), indent=2) + "\n")
    else:
        out.write("\n\n" + _summary(final, options) + "\n")
    return 0


def _summary(final: StreamUpdate, options: Sequence[str]) -> str:
    parsed = final.parsed
    if parsed.letter is not None:
        answer = f"Answer: {parsed.letter}) {options[LETTERS.index(parsed.letter)]}"
    else:
        answer = f"Answer: none. {parsed.problem or 'The model gave no answer.'}"
    lines = [answer, f"Format followed: {'yes' if parsed.format_ok else 'no'}"]
    if parsed.letter is not None and parsed.problem:
        lines.append(f"Warning: {parsed.problem}")
    if final.stop_reason == "max_new_tokens":
        lines.append("Stopped at the maximum number of new tokens (raise --max-new-tokens for longer reasoning).")
    timing = final.timing
    if timing is not None:
        ttft = f"{timing.time_to_first_token_s:.2f} s" if timing.time_to_first_token_s is not None else "n/a"
        rate = f"{timing.tokens_per_second:.1f} tokens/s" if timing.tokens_per_second is not None else "n/a"
        lines.append(f"Time to first token: {ttft}; {rate}; {timing.new_tokens} new tokens in {timing.total_s:.2f} s")
    return "\n".join(lines)


def _result_dict(final: StreamUpdate, options: Sequence[str], model: dict, image: dict) -> dict:
    parsed = final.parsed
    return {
        "letter": parsed.letter,
        "option": options[LETTERS.index(parsed.letter)] if parsed.letter else None,
        "format_ok": parsed.format_ok,
        "problem": parsed.problem,
        "reasoning": parsed.reasoning,
        "answer_text": parsed.answer_text,
        "completion": final.text,
        "stop_reason": final.stop_reason,
        "timing": final.timing.to_dict() if final.timing else None,
        "model": model,
        "image": image,
    }


def _quiet_libraries() -> None:
    """Keep the terminal for the answer: no weight-loading progress bars or library warnings."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


if __name__ == "__main__":
    raise SystemExit(main())
