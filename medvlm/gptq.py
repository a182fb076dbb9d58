"""GPTQ for the CPU fast path's int8 weights: rounding chosen to keep each layer's outputs, not each weight.

The ``bf16-int8`` scheme stores one int8 weight per parameter with one scale per output channel
(what ``torch._weight_int8pack_mm`` reads). Rounding every weight to its nearest step costs a trained
model about 2 points of next-token agreement with fp32, three times bf16's own loss
(SmolLM2-135M-Instruct, 512 teacher-forced tokens: 23 differ from fp32, bf16 7). GPTQ (Frantar et
al. 2022, https://arxiv.org/abs/2210.17323) rounds the columns one at a time and pushes each
rounding error onto the columns not yet rounded, weighted by how the layer's inputs correlate
(their Hessian ``X^T X`` on a few calibration prompts), so that ``X @ W`` moves least. Same format,
same kernel, same speed, and on that model 5 of 512 differ: the bf16 floor (README, "Performance").

The calibration is three images from pydicom's own bundled sample files (a CT, an MR, a liver CT,
present wherever medvlm is installed) asked multiple-choice questions in the MedVLM-R1 prompt:
prefill only, no generation, so it costs three prefills. Layers are quantized in order, each
calibrated on the outputs of the layers already quantized before it (what the published algorithm
does), from the inputs the first decoder layer receives, caught once.

Written here rather than imported because the maintained implementations do not run in this
project's environment: torchao 0.18's ``GPTQConfig`` asserts CUDA, llm-compressor 0.14 pins
transformers <= 5.17, and GPTQModel installs a CUDA build of torch.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers.processing_utils import ProcessorMixin

from medvlm.processor import encode_prompts

logger = logging.getLogger(__name__)

DAMPING = 0.1
"""Added to the Hessian's diagonal, as a fraction of its mean: calibration of a few hundred tokens leaves
the 8960-wide inputs of a 2B model's down projections rank-deficient. 0.1 kept SmolLM2's answers at the
bf16 floor (4-5 of 512 tokens off) where 0.01 left 9."""

DAMPING_TRIES = 3
"""Where a Hessian is not positive definite even so, the damping is multiplied by 10 and tried again, this
many times in all (more damping moves GPTQ towards rounding to nearest, which it equals in the limit)."""

BLOCK = 128
"""Columns rounded one by one before their errors are pushed onto the rest in one matmul (GPTQ's lazy
batch update: same result, fewer passes over the weight)."""

ROWS_AT_ONCE = 16384
"""Output channels quantized together: rows are independent given the Hessian, so the 151936-row output
head never needs a full fp32 copy."""

VERSION = "gptq1"
"""Names this calibration and these settings in the cache key: change it when either changes."""

CALIBRATION = (
    ("CT_small.dcm", "What kind of scan is this?", ["CT", "MRI", "PET", "Ultrasound"]),
    ("MR_small.dcm", "Which part of the body is shown?", ["Knee", "Head", "Abdomen", "Hand"]),
    ("liver_1frame.dcm", "Which organ is most visible in this slice?", ["Liver", "Brain", "Heart", "Lung"]),
)
"""pydicom's bundled sample image, question and options of each calibration prompt."""

CALIBRATION_SIDE = 448
"""Calibration images are resized to this square (256 image tokens, the CPU fast path's budget) so the
image tokens' share of the Hessian is what a served image gives, not a 64-pixel thumbnail's."""


def row_steps(weight: torch.Tensor) -> torch.Tensor:
    """One step per output channel, ``max |w| / 127`` rounded to bf16 (the kernel takes bf16 scales, so the
    weights are rounded against the rounded step and keep within half a step of it)."""
    return (weight.float().abs().amax(dim=1).clamp(min=1e-12) / 127).to(torch.bfloat16)


def round_to_nearest(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``weight`` as int8 with :func:`row_steps`, each weight rounded to its nearest step (no calibration)."""
    quantized = torch.empty(weight.shape, dtype=torch.int8)
    steps = torch.empty(weight.shape[0], dtype=torch.bfloat16)
    for start in range(0, weight.shape[0], ROWS_AT_ONCE):
        rows = weight[start : start + ROWS_AT_ONCE].float()
        step = row_steps(rows)
        quantized[start : start + ROWS_AT_ONCE] = torch.round(rows / step.float()[:, None]).clamp(-127, 127)
        steps[start : start + ROWS_AT_ONCE] = step
    return quantized, steps


@dataclass(frozen=True)
class Hessian:
    """What GPTQ needs from a layer input's Hessian, computed once for every layer fed the same input (q, k, v;
    gate, up): the column order, which inputs were never seen, and how each column's error spreads."""

    order: torch.Tensor
    """Columns by decreasing Hessian diagonal ("act order": the inputs that matter most are rounded while the
    most columns remain to absorb their error)."""
    dead: torch.Tensor
    """Inputs never seen (a zero diagonal): their weights become zero, which they multiply anyway."""
    spread: torch.Tensor
    """The upper Cholesky factor of the damped inverse Hessian, in that order: row i holds how column i's
    rounding error is moved onto the columns after it."""

    @classmethod
    def of(cls, sums: torch.Tensor, damping: float = DAMPING) -> Hessian:
        """From ``sums`` (in x in), the sum of ``x^T x`` over the calibration inputs; fp32 throughout, as the
        published implementation (fp64 was twice as slow on an 8960-wide input for the same rounding)."""
        hessian = sums.float().clone()
        dead = hessian.diagonal() == 0
        hessian[dead, dead] = 1
        order = torch.argsort(hessian.diagonal(), descending=True)
        hessian = hessian[order][:, order]
        mean = hessian.diagonal().mean()
        for attempt in range(DAMPING_TRIES):  # fp32 rounding can leave a damped Hessian short of positive definite
            damped = hessian.clone()
            damped.diagonal().add_(damping * 10**attempt * mean)
            try:
                spread = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(damped)), upper=True)
            except torch.linalg.LinAlgError:
                logger.info("GPTQ: a Hessian not positive definite at damping %g; damping more", damping * 10**attempt)
                continue
            return cls(order=order, dead=dead, spread=spread)
        raise torch.linalg.LinAlgError(
            f"GPTQ: no Cholesky factor even at damping {damping * 10 ** (DAMPING_TRIES - 1)}"
        )


def gptq(weight: torch.Tensor, hessian: Hessian) -> tuple[torch.Tensor, torch.Tensor]:
    """``weight`` (out x in) as int8 with :func:`row_steps`, rounded by GPTQ against its input's ``hessian``."""
    columns = weight.shape[1]
    restore = torch.argsort(hessian.order)
    quantized = torch.empty(weight.shape, dtype=torch.int8)
    steps = torch.empty(weight.shape[0], dtype=torch.bfloat16)
    for start in range(0, weight.shape[0], ROWS_AT_ONCE):
        rows = weight[start : start + ROWS_AT_ONCE].to(torch.float32, copy=True)
        rows[:, hessian.dead] = 0
        step = row_steps(rows)
        steps[start : start + ROWS_AT_ONCE] = step
        rows = rows[:, hessian.order]
        levels = torch.empty_like(rows)
        for first in range(0, columns, BLOCK):
            _round_block(rows, levels, step.float(), hessian.spread, first, min(first + BLOCK, columns))
        quantized[start : start + ROWS_AT_ONCE] = levels[:, restore].to(torch.int8)
    return quantized, steps


def _round_block(
    rows: torch.Tensor, levels: torch.Tensor, step: torch.Tensor, spread: torch.Tensor, first: int, last: int
) -> None:
    """Round columns ``first:last`` of ``rows`` into ``levels``, each error spread over the block's later
    columns at once and over every column after the block in one matmul."""
    block = rows[:, first:last]
    errors = torch.empty_like(block)
    for i in range(last - first):
        column = block[:, i]
        level = torch.round(column / step).clamp_(-127, 127)
        levels[:, first + i] = level
        errors[:, i] = (column - level * step) / spread[first + i, first + i]
        block[:, i + 1 :] -= errors[:, i : i + 1] * spread[first + i, first + i + 1 : last]
    rows[:, last:] -= errors @ spread[first:last, last:]


class _Caught(Exception):
    """Stops the calibration forward once the first decoder layer's inputs are recorded."""


@contextmanager
def _hessians(modules: Mapping[str, nn.Linear]) -> Iterator[dict[str, torch.Tensor]]:
    """Sums of ``x^T x`` over every input row each of ``modules`` sees inside the block; modules called on the
    same tensor (q, k and v; gate and up) share one sum, the same object."""
    sums: dict[str, torch.Tensor] = {}
    last: dict[str, torch.Tensor] = {}  # the input each sum last added, to find which modules share it

    def hook(name: str) -> Callable:
        def add(module: nn.Module, args: tuple) -> None:
            sharing = next((other for other, seen in last.items() if seen is args[0]), None)
            if sharing is not None:
                sums[name] = sums[sharing]
                return
            rows = args[0].detach().reshape(-1, args[0].shape[-1]).float()
            sums.setdefault(name, torch.zeros(rows.shape[1], rows.shape[1])).addmm_(rows.T, rows)
            last[name] = args[0]

        return add

    handles = [module.register_forward_pre_hook(hook(name)) for name, module in modules.items()]
    try:
        yield sums
    finally:
        for handle in handles:
            handle.remove()


def quantize_with_calibration(
    model: nn.Module,
    names: Sequence[str],
    calibration: Sequence[Mapping[str, torch.Tensor]],
    replace: Callable[[str, torch.Tensor, torch.Tensor], None],
) -> None:
    """GPTQ every named linear layer of ``model`` on ``calibration`` (model inputs, one dict per prompt), in
    the order the layers run, calling ``replace(name, int8, steps)`` for each as soon as it is quantized.

    The decoder's layers are replayed one at a time on the hidden states the previous (already
    quantized) layer produced, from the inputs the first one received; named layers outside the
    decoder's layers (the output head) are calibrated by one more forward of the whole model.
    """
    started = time.perf_counter()
    logger.warning(
        "GPTQ is choosing the int8 weights of %d layers on %d calibration prompts, once per model revision "
        "(about 7 minutes for a 2B model on 2 cores; kept in a cache afterwards).",
        len(names),
        len(calibration),
    )
    layers = model.get_decoder().layers
    owner = {id(module): index for index, layer in enumerate(layers) for module in layer.modules()}
    by_layer: dict[int, dict[str, nn.Module]] = {index: {} for index in range(len(layers))}
    rest: dict[str, nn.Module] = {}
    for name in names:
        module = model.get_submodule(name)
        (by_layer[owner[id(module)]] if id(module) in owner else rest)[name] = module
    with torch.inference_mode():
        replays = _first_layer_inputs(model, layers[0], calibration)
        for index, layer in enumerate(layers):
            # popped, so a replaced layer's bf16 weight is freed at once: the model never holds both copies
            if modules := by_layer.pop(index):
                with _hessians(modules) as sums:
                    for args, kwargs in replays:
                        layer(*args, **kwargs)
                _quantize(modules, sums, replace)
                logger.info("GPTQ: decoder layer %d of %d quantized", index + 1, len(layers))
            del modules
            replays = [((_hidden(layer(*args, **kwargs)), *args[1:]), kwargs) for args, kwargs in replays]
        if rest:
            with _hessians(rest) as sums:
                for inputs in calibration:
                    model(**inputs, use_cache=False)
            _quantize(rest, sums, replace)
    logger.info("GPTQ: %d layers in %.0f s", len(names), time.perf_counter() - started)


def _quantize(
    modules: Mapping[str, nn.Linear],
    sums: Mapping[str, torch.Tensor],
    replace: Callable[[str, torch.Tensor, torch.Tensor], None],
) -> None:
    hessians: dict[int, Hessian] = {}  # one per input, shared by the layers it feeds
    for name, module in modules.items():
        if id(sums[name]) not in hessians:
            hessians[id(sums[name])] = Hessian.of(sums[name])
        replace(name, *gptq(module.weight, hessians[id(sums[name])]))


def _first_layer_inputs(
    model: nn.Module, first: nn.Module, calibration: Sequence[Mapping[str, torch.Tensor]]
) -> list[tuple[tuple, dict]]:
    """What the first decoder layer is called with for each calibration prompt (the embedded tokens and image,
    position embeddings, mask), caught by a hook that stops the forward there."""
    caught = []

    def catch(module: nn.Module, args: tuple, kwargs: dict) -> None:
        if not args:  # called as layer(hidden_states=...): replayed positionally
            kwargs = dict(kwargs)
            args = (kwargs.pop("hidden_states"),)
        caught.append((args, kwargs))
        raise _Caught

    handle = first.register_forward_pre_hook(catch, with_kwargs=True)
    try:
        for inputs in calibration:
            try:
                model(**inputs, use_cache=False)
            except _Caught:
                pass
    finally:
        handle.remove()
    return caught


def _hidden(output: torch.Tensor | tuple) -> torch.Tensor:
    """A decoder layer's hidden states (older transformers returned them in a tuple)."""
    return output[0] if isinstance(output, tuple) else output


def calibration_inputs(
    processor: ProcessorMixin, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> list[dict[str, torch.Tensor]]:
    """The :data:`CALIBRATION` prompts as inputs of an image-text model, one dict per prompt."""
    from pydicom.data import get_testdata_file

    from medvlm.images import load_image

    return [
        encode_prompts(
            processor,
            [load_image(get_testdata_file(file)).image.resize((CALIBRATION_SIDE, CALIBRATION_SIDE))],
            [question],
            [options],
            device=device,
            dtype=dtype,
        )
        for file, question, options in CALIBRATION
    ]


def cache_file(key: str) -> Path:
    """Where the int8 weights GPTQ chose for the model ``key`` names are kept between starts:
    ``$MEDVLM_CACHE/gptq/``, by default ``~/.cache/medvlm/gptq/`` (GPTQ takes minutes on a 2B model)."""
    root = (
        os.environ.get("MEDVLM_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "medvlm"
    )
    return Path(root) / "gptq" / f"{key}.safetensors"


def read_cache(path: Path, names: Sequence[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor]] | None:
    """The cached int8 weights and scales of every layer in ``names``; ``None`` when the file is missing,
    unreadable or not for these layers (then GPTQ runs again and replaces it)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        return None
    try:
        tensors = load_file(path)
    except (OSError, SafetensorError) as error:
        logger.warning("Ignoring an unreadable GPTQ cache %s (%s); quantizing again.", path, error)
        return None
    if set(tensors) != {f"{name}.{part}" for name in names for part in ("weight_int8", "scales")}:
        logger.warning("Ignoring the GPTQ cache %s: it holds other layers; quantizing again.", path)
        return None
    # Copied out of the file's mapping: safetensors aligns tensors to 8 bytes only, and PyTorch's int8 kernel
    # reads its weights with aligned AVX-512 loads (it crashed the process on 4 or more rows of a 2B model).
    return {name: (tensors[f"{name}.weight_int8"].clone(), tensors[f"{name}.scales"].clone()) for name in names}


def write_cache(path: Path, quantized: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Store ``quantized`` (layer name: int8 weights, scales) at ``path`` atomically: a crash leaves the old
    file or none, never half of one. Raises OSError when it cannot be written."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    tensors = {}
    for name, (weight_int8, scales) in quantized.items():
        tensors[f"{name}.weight_int8"], tensors[f"{name}.scales"] = weight_int8.contiguous(), scales.contiguous()
    try:
        save_file(tensors, partial, metadata={"version": VERSION})
        os.replace(partial, path)
    except SafetensorError as error:  # how safetensors reports a failed write (a full disk among them)
        raise OSError(f"could not write {path}: {error}") from error
    finally:
        partial.unlink(missing_ok=True)
