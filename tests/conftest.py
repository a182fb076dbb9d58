"""Shared fixtures: the tiny offline checkpoint (built once per session) and sample images."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from medvlm.tiny_model import build_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen2-VL checkpoint written by the project's own builder."""
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir: Path):
    """The tiny checkpoint loaded through ``load_model``, exactly as a Hub checkpoint would be."""
    from medvlm.model import load_model

    return load_model(tiny_model_dir)


@pytest.fixture(scope="session")
def sample_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic greyscale 'scan' saved as PNG."""
    path = tmp_path_factory.mktemp("images") / "scan.png"
    image = Image.radial_gradient("L").resize((160, 128)).convert("RGB")
    image.save(path)
    return path


@pytest.fixture(scope="session")
def formatted_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint after the format warm-start: it answers ``<think>..</think><answer>L</answer>``."""
    from medvlm.tiny_model import warm_start_format

    return warm_start_format(build_tiny_checkpoint(tmp_path_factory.mktemp("formatted-model")))


@pytest.fixture(scope="session")
def qwen2_tokenizer():
    """The real Qwen2 tokenizer with Qwen2-VL's special tokens (``bench.qwen2_vocab``; .ci/run fetches it first)."""
    from bench.qwen2_vocab import tokenizer

    return tokenizer()


@pytest.fixture(scope="session")
def qwen2_vocab_model_dir(tmp_path_factory: pytest.TempPathFactory, qwen2_tokenizer) -> Path:
    """A tiny random Qwen2-VL with the real 151,936-token vocabulary."""
    return build_tiny_checkpoint(tmp_path_factory.mktemp("qwen2-vocab-model"), tokenizer=qwen2_tokenizer)


@pytest.fixture(scope="session")
def second_formatted_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another format-warm-started tiny checkpoint (another seed): the second model of a side-by-side comparison."""
    from medvlm.tiny_model import warm_start_format

    return warm_start_format(build_tiny_checkpoint(tmp_path_factory.mktemp("second-formatted-model")), seed=1)
