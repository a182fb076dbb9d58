"""Loading and saving Qwen2-VL processors without needing torchvision.

Since transformers 5, ``AutoProcessor.from_pretrained`` on a Qwen2-VL checkpoint also builds the
*video* processor, which imports torchvision (huggingface/transformers#48558). The app and the
trainer only ever send images, and torchvision is not something we can require: PyPI's wheel
needs the CUDA build of torch and, installed next to the CPU build, breaks transformers' image
processors outright. So we load an image-only variant of the same processor class, and pick the
image processor's backend ourselves: torchvision where it actually imports, PIL otherwise.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import Qwen2VLProcessor
from transformers.processing_utils import ProcessorMixin

from medvlm.pixels import PIXELS_PER_IMAGE_TOKEN, RECIPE_MAX_PIXELS, RECIPE_MIN_PIXELS  # noqa: F401 - re-exported
from medvlm.prompt import PromptStyle, build_messages


def image_tokens(max_pixels: int) -> int:
    """How many image tokens at most an image bounded by ``max_pixels`` becomes."""
    return max_pixels // PIXELS_PER_IMAGE_TOKEN


class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
    """Qwen2-VL's processor with only its tokenizer and image processor.

    Behaves exactly like ``Qwen2VLProcessor`` for text and images (same chat template, same image
    token expansion); passing ``videos=`` is not supported.
    """

    def __init__(
        self, image_processor: Any = None, tokenizer: Any = None, chat_template: str | None = None, **kwargs: Any
    ):
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = getattr(tokenizer, "image_token_id", None) or tokenizer.convert_tokens_to_ids(
            self.image_token
        )
        self.video_token_id = getattr(tokenizer, "video_token_id", None) or tokenizer.convert_tokens_to_ids(
            self.video_token
        )
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


@functools.cache
def torchvision_usable() -> bool:
    """True when torchvision imports and its v2 transforms work with the installed torch.

    ``is_torchvision_available`` only checks that the package is installed; a CUDA-only wheel
    next to the CPU build of torch is installed but fails on import, so we really import it.
    """
    try:
        import torchvision.transforms.v2.functional  # noqa: F401
    except Exception:  # any failure (ImportError, RuntimeError from mismatched ops) means unusable
        return False
    return True


def image_backend(requested: str | None = None) -> str:
    """The image processor backend to use: ``requested`` if given, else torchvision when usable."""
    if requested not in (None, "pil", "torchvision"):
        raise ValueError(f"image backend must be 'pil' or 'torchvision', not {requested!r}")
    return requested or ("torchvision" if torchvision_usable() else "pil")


def load_processor(
    source: str | Path,
    *,
    max_pixels: int | None = None,
    min_pixels: int | None = None,
    backend: str | None = None,
    **hub_kwargs: Any,
) -> ImageOnlyQwen2VLProcessor:
    """Load the tokenizer, image processor and chat template of a Qwen2-VL style checkpoint.

    ``hub_kwargs`` (revision, token, local_files_only, cache_dir...) go to ``from_pretrained``.
    ``max_pixels`` / ``min_pixels`` override the checkpoint's image-size bounds.
    """
    processor = ImageOnlyQwen2VLProcessor.from_pretrained(str(source), backend=image_backend(backend), **hub_kwargs)
    if max_pixels is not None or min_pixels is not None:
        processor.image_processor.size = pixel_bounds(processor, max_pixels=max_pixels, min_pixels=min_pixels)
    if processor.tokenizer.pad_token is None:
        processor.tokenizer.pad_token = processor.tokenizer.eos_token
    return processor


def pixel_bounds(
    processor: ProcessorMixin, *, max_pixels: int | None = None, min_pixels: int | None = None
) -> dict[str, int]:
    """The image processor's ``size`` with new pixel bounds; ``None`` keeps the current bound.

    Qwen2-VL resizes each image so that its pixel count lies between the two bounds (rounded to
    28-pixel multiples); each 28x28 block becomes one image token.
    """
    size = processor.image_processor.size
    return {
        "longest_edge": int(max_pixels if max_pixels is not None else size["longest_edge"]),
        "shortest_edge": int(min_pixels if min_pixels is not None else size["shortest_edge"]),
    }


def save_processor(processor: ProcessorMixin, directory: str | Path) -> None:
    """Save a processor in the layout of published Qwen2-VL checkpoints.

    Tokenizer files, ``preprocessor_config.json`` and ``chat_template.json``, so that the result
    loads with our loader *and* with plain ``AutoProcessor`` (where torchvision is installed).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    processor.tokenizer.save_pretrained(directory)
    processor.image_processor.save_pretrained(directory)
    config_path = directory / "preprocessor_config.json"
    config = json.loads(config_path.read_text())
    config["processor_class"] = "Qwen2VLProcessor"
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    (directory / "chat_template.json").write_text(
        json.dumps({"chat_template": processor.chat_template}, indent=2) + "\n"
    )


def encode_prompts(
    processor: ProcessorMixin,
    images: Sequence[Image.Image],
    questions: Sequence[str],
    options: Sequence[Sequence[str]],
    *,
    style: PromptStyle | str = PromptStyle.MEDVLM,
    max_pixels: int | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    """A batch of (image, question, options) as model inputs on ``device``, pixels in ``dtype``.

    Batches are left-padded, so that every row's new tokens start at the same position (what
    batched generation needs; one row is just a batch of one).
    """
    texts = [
        processor.apply_chat_template(
            build_messages(question, opts, style=style), add_generation_prompt=True, tokenize=False
        )
        for question, opts in zip(questions, options, strict=True)
    ]
    image_kwargs = {"size": pixel_bounds(processor, max_pixels=max_pixels)} if max_pixels is not None else {}
    processor.tokenizer.padding_side = "left"
    inputs = processor(
        text=texts,
        images=[image.convert("RGB") for image in images],
        padding=True,
        return_tensors="pt",
        **image_kwargs,
    )
    inputs = inputs.to(device)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    return dict(inputs)
