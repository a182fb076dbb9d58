"""Command-line options shared by the commands that load a model and generate (``ask``, ``campaign create``).

One definition of each option, so ``--max-new-tokens`` or ``--no-fast-cpu`` mean the same in every command.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from medvlm.prompt import PromptStyle
from medvlm.published import DEFAULT_MODEL_ID

if TYPE_CHECKING:  # torch loads when a model is needed, so --help answers at once
    from medvlm.model import LoadedModel
    from medvlm.streaming import GenerationSettings


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--revision``, ``--style``."""
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL_ID,
        help=f"Hub id, checkpoint directory or LoRA adapter directory (default: {DEFAULT_MODEL_ID})",
    )
    parser.add_argument("--revision", help="Hub revision (branch, tag or commit) of --model")
    parser.add_argument(
        "--style",
        choices=[style.value for style in PromptStyle],
        help="prompt wording (default: the model's own: what its medvlm.json records, medvlm-exact for "
        "JZPeterPan/MedVLM-R1, else medvlm)",
    )


def add_generation_options(parser: argparse.ArgumentParser) -> None:
    """The decoding settings, then where the model runs (:func:`add_device_options`)."""
    generation = parser.add_argument_group("generation")
    generation.add_argument(
        "--max-new-tokens",
        type=int,
        default=512,
        help="most tokens the model may write (default: %(default)s, as the paper)",
    )
    generation.add_argument(
        "--sample", action="store_true", help="sample instead of greedy decoding (the paper decodes greedily)"
    )
    generation.add_argument(
        "--temperature", type=float, default=1.0, help="sampling temperature, with --sample (default: %(default)s)"
    )
    generation.add_argument(
        "--top-p",
        type=float,
        default=1.0,
        help="nucleus sampling: keep the smallest set of tokens with this total probability, with --sample (default: "
        "%(default)s)",
    )
    generation.add_argument(
        "--seed", type=int, help="random seed, 0 to 4294967295, so a sampled answer can be reproduced"
    )
    generation.add_argument(
        "--max-pixels", type=int, help="image-token budget in pixels (recipe: 401408 = 512 tokens)"
    )
    add_device_options(parser)


def add_device_options(parser: argparse.ArgumentParser) -> None:
    """Where the model runs and in what precision."""
    device = parser.add_argument_group("device")
    device.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: automatic)")
    device.add_argument("--dtype", help="bf16, fp16 or fp32 (default: bf16 on CUDA, fp32 on CPU)")
    device.add_argument(
        "--no-fast-cpu",
        action="store_true",
        help="on CPU, keep plain fp32 weights and the checkpoint's image budget (no int8 fast path)",
    )


def settings_from(args: argparse.Namespace) -> GenerationSettings:
    """The :class:`GenerationSettings` the options give, checked."""
    from medvlm.streaming import GenerationSettings

    return GenerationSettings.from_options(
        max_new_tokens=args.max_new_tokens,
        sample=args.sample,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        max_pixels=args.max_pixels,
    )


def load_model_from(args: argparse.Namespace, model: str | None = None) -> LoadedModel:
    """The model the options name (or ``model``), on the device and in the precision they ask for."""
    from medvlm.model import load_model

    return load_model(
        model or args.model,
        revision=args.revision,
        device=args.device,
        dtype=args.dtype,
        fast_cpu=False if args.no_fast_cpu else None,
    )
