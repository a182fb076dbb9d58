"""Shared pieces of the benchmarks: cached checkpoints, the machine, clocks, repeats, subprocess workers.

The benchmarks run on shared machines whose speed drifts while they run, so every figure is a
ratio against a baseline measured in the same run, with the variants interleaved (A, B, A, B...)
and repeated; the medians are reported. Checkpoints are built once into a cache outside the
repository (``$MEDVLM_BENCH_CACHE``, default ``~/.cache/medvlm-bench``): the random 2B one is 4.4 GB.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("MEDVLM_BENCH_CACHE", Path.home() / ".cache" / "medvlm-bench"))
CT_HEAD = REPO / "assets" / "ct_head.dcm"
QUESTION = "Which imaging modality was used?"
OPTIONS = ["CT", "MRI", "X-Ray", "Ultrasound"]


def random_2b_checkpoint() -> Path:
    """The randomly initialised Qwen2-VL-2B (real sizes) with the real Qwen2 tokenizer, built on first use.

    The weights take a few minutes to build; the tokenizer is Qwen2's own (``bench.qwen2_vocab``), so
    prompt lengths and decoded text are the real model's.
    """
    from medvlm.tiny_model import build_random_checkpoint

    weights = _cached("qwen2-vl-2b-random", lambda path: build_random_checkpoint(path, size="2b"))
    return _cached("qwen2-vl-2b-random-qwen2-vocab", lambda path: _with_real_tokenizer(weights, path))


SPECIAL_TOKEN_IDS = {
    "image_token_id": "<|image_pad|>",
    "video_token_id": "<|video_pad|>",
    "vision_start_token_id": "<|vision_start|>",
    "vision_end_token_id": "<|vision_end|>",
    "eos_token_id": "<|im_end|>",
    "pad_token_id": "<|endoftext|>",
}
"""The config entries that name special tokens, and the tokens they name."""


def _with_real_tokenizer(weights: Path, path: Path) -> None:
    """``weights``' model files (linked, not copied) with the real Qwen2 tokenizer in their place."""
    import json

    from transformers import Qwen2VLImageProcessorPil

    from bench.qwen2_vocab import tokenizer
    from medvlm.processor import ImageOnlyQwen2VLProcessor, save_processor
    from medvlm.tiny_model import QWEN2_VL_CHAT_TEMPLATE

    path.mkdir(parents=True, exist_ok=True)
    (path / "model.safetensors").unlink(missing_ok=True)
    (path / "model.safetensors").symlink_to(weights / "model.safetensors")
    real = tokenizer()
    ids = {name: real.convert_tokens_to_ids(token) for name, token in SPECIAL_TOKEN_IDS.items()}
    config = json.loads((weights / "config.json").read_text())
    config.update(
        {key: ids[key] for key in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")}
    )
    config["text_config"].update(
        bos_token_id=ids["pad_token_id"], eos_token_id=ids["eos_token_id"], pad_token_id=ids["pad_token_id"]
    )
    (path / "config.json").write_text(json.dumps(config, indent=2))
    generation = json.loads((weights / "generation_config.json").read_text())
    generation.update(eos_token_id=[ids["eos_token_id"], ids["pad_token_id"]], pad_token_id=ids["pad_token_id"])
    generation.pop("bos_token_id", None)
    (path / "generation_config.json").write_text(json.dumps(generation, indent=2))
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(weights)
    save_processor(ImageOnlyQwen2VLProcessor(image_processor, real, chat_template=QWEN2_VL_CHAT_TEMPLATE), path)
    metadata = json.loads((weights / "medvlm.json").read_text())
    (path / "medvlm.json").write_text(json.dumps({**metadata, "tokenizer": "Qwen2 (ggml-vocab-qwen2.gguf)"}))


def tiny_checkpoint(*, formatted: bool = False) -> Path:
    """The tiny test checkpoint; ``formatted``: after the format warm-start (answers parse)."""
    from medvlm.tiny_model import build_tiny_checkpoint, warm_start_format

    if formatted:
        return _cached("tiny-formatted", lambda path: warm_start_format(build_tiny_checkpoint(path)))
    return _cached("tiny", build_tiny_checkpoint)


def _cached(name: str, build: Callable[[Path], Any]) -> Path:
    """``CACHE/name``, built by ``build`` unless a complete one (with ``medvlm.json``) is there."""
    path = CACHE / name
    if not (path / "medvlm.json").is_file():
        print(f"building {path} (once) ...", file=sys.stderr, flush=True)
        build(path)
    return path


@contextlib.contextmanager
def forced_scheme(scheme: str | None) -> Iterator[None]:
    """While active, the fast path uses ``scheme`` (``bf16-int8``, ``fp32-bf16``), whatever the CPU would pick."""
    from medvlm import fast_cpu

    choose = fast_cpu.choose_scheme
    if scheme is not None:
        fast_cpu.choose_scheme = lambda flags=None: scheme
    try:
        yield
    finally:
        fast_cpu.choose_scheme = choose


LOST_VARIANTS = ("int8-dynamic", "int8-block32", "int4-block32")
"""Schemes that were tried for the CPU fast path and lost (README, "Performance"), kept measurable."""


def apply_lost_scheme(model, variant: str) -> None:
    """The schemes that were tried and lost, on the layers the fast path quantizes, for the same table."""
    from medvlm.fast_cpu import quantizable_layers

    names = quantizable_layers(model)
    if variant == "int8-dynamic":
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        quantize_dynamic(model, dict.fromkeys(names, per_channel_dynamic_qconfig), dtype=torch.qint8, inplace=True)
        return
    bits = 8 if variant == "int8-block32" else 4
    with torch.no_grad():
        for name in names:
            weight = model.get_submodule(name).weight
            weight.copy_(round_in_blocks(weight, bits, 32))


def round_in_blocks(weight: torch.Tensor, bits: int, block: int) -> torch.Tensor:
    """``weight`` rounded to nearest with one scale per block of ``block`` inputs: symmetric int8 (llama.cpp's
    Q8_0), asymmetric with a minimum for fewer bits (Q4_1)."""
    rows = weight.float().reshape(weight.shape[0], -1, block)
    if bits == 8:
        step = rows.abs().amax(-1, keepdim=True).clamp(min=1e-12) / 127
        return (torch.round(rows / step).clamp(-127, 127) * step).reshape(weight.shape)
    low, high = rows.amin(-1, keepdim=True), rows.amax(-1, keepdim=True)
    step = ((high - low) / (2**bits - 1)).clamp(min=1e-12)
    return (torch.round((rows - low) / step) * step + low).reshape(weight.shape)


VARIANTS = ("fp32", "bf16", "fast", "fast-bf16-int8", "fast-fp32-bf16", *LOST_VARIANTS)
"""What the benchmarks can load: full precision, the fast path (``fast``: the scheme this CPU gets, or a scheme
forced), and the schemes that lost."""


def load_variant(checkpoint: str | Path, variant: str, max_pixels: int):
    """``checkpoint`` through ``medvlm.model.load_model`` as ``variant`` (one of :data:`VARIANTS`)."""
    from medvlm.model import load_model

    if variant.startswith("fast"):
        with forced_scheme(variant.removeprefix("fast").removeprefix("-") or None):
            loaded = load_model(checkpoint, max_pixels=max_pixels)
        if not loaded.fast_cpu.quantized:
            raise RuntimeError(f"the fast path did not quantize {checkpoint}: {loaded.describe()['quantization']}")
        return loaded
    dtype = "bf16" if variant == "bf16" else "fp32"
    loaded = load_model(checkpoint, fast_cpu=False, dtype=dtype, max_pixels=max_pixels)
    if variant in LOST_VARIANTS:
        apply_lost_scheme(loaded.model, variant)
    return loaded


def quiet() -> None:
    """No weight-loading progress bars in the benchmarks' output."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def ct_head_image(size: int | None = None) -> Image.Image:
    """The CT head DICOM from ``assets/`` as RGB, optionally resized to ``size`` x ``size``."""
    from medvlm.images import load_image

    image = load_image(CT_HEAD).image
    return image.resize((size, size)) if size else image


class TokenClock:
    """A ``generate`` streamer that only notes when each new token arrives (no decoding)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if self._prompt_seen:
            self.times.append(time.perf_counter())
        self._prompt_seen = True

    def end(self) -> None:
        pass

    def decode_rate(self) -> float:
        """Tokens per second after the first token (the first one includes the prefill)."""
        return (len(self.times) - 1) / (self.times[-1] - self.times[0])


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mib() -> float:
    """This process's resident memory now (what a model occupies once loaded)."""
    status = Path("/proc/self/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS")) / 1024


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem_kib = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
    except (OSError, StopIteration):
        mem_kib = 0
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "ram_gib": round(mem_kib / 2**20, 1),
        "torch": torch.__version__,
        "load_average": [round(load, 1) for load in os.getloadavg()],
        "date": date.today().isoformat(),
    }


def interleaved(variants: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Run each variant once per round, ``repeats`` rounds, and collect what each returns."""
    results: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            results[name].append(run())
    return results


def run_workers(
    module: str, variants: Sequence[str], repeats: int, extra: Sequence[str] = ()
) -> dict[str, list[dict[str, Any]]]:
    """Run ``python -m module --worker VARIANT`` once per variant per round, interleaved.

    Each worker is its own process, so its peak memory is its own; it prints one JSON object as
    its last line of output.
    """
    results: dict[str, list[dict[str, Any]]] = {variant: [] for variant in variants}
    for round_ in range(repeats):
        for variant in variants:
            command = [sys.executable, "-m", module, "--worker", variant, *extra]
            done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"{variant} worker failed:\n{done.stderr[-3000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            results[variant].append(result)
            print(f"round {round_ + 1}/{repeats} {variant}: {result}", file=sys.stderr, flush=True)
    return results


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def paired_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float:
    """Median of the per-round ratios: each pair ran back to back, so drift cancels within it."""
    return statistics.median(a / b for a, b in zip(numerators, denominators, strict=True))


def print_report(title: str, rows: Sequence[Sequence[Any]], header: Sequence[str], notes: Sequence[str] = ()) -> None:
    """A Markdown table, the machine it ran on and notes, ready to paste into the README."""
    print(f"## {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(" --- " for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")
    print(f"\nmachine: {json.dumps(machine())}")
    for note in notes:
        print(f"- {note}")
