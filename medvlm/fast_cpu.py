"""The CPU fast path: language-model weights in fewer bytes, arithmetic this CPU does fast, fitting threads.

Decoding one token reads every weight of the language model once. In fp32 that is about 6 GB for
Qwen2-VL-2B (1.3 B parameters in the decoder's linear layers plus the 151936x1536 output head),
so memory bandwidth alone caps a CPU at one or two tokens a second; bf16 weights read half of
that, int8 weights a quarter.

Whether the answers stay the model's, and what is fast, depend on the CPU, so the scheme is chosen
by what it can do (:func:`choose_scheme`):

* ``bf16-int8`` (CPUs with AVX512-BF16 or AMX, which multiply bf16 at full speed): the model runs
  in bf16, its checkpoint's own precision (what a GPU runs), and the decoder's and output head's
  linear layers keep int8 weights, one scale per output channel, with bf16 activations that are
  never quantized (:class:`Int8WeightLinear`). Decoding uses PyTorch's weight-only int8 kernel
  ``torch._weight_int8pack_mm``; a prefill of many rows dequantizes the weight into a reused
  bf16 buffer and runs a dense bf16 matmul, which is 2.5x faster there. The vision encoder runs
  in bf16 too (its matmuls are 5x faster than fp32 on such a CPU).
* ``fp32-bf16`` (other CPUs, e.g. AVX2 only, where bf16 arithmetic is emulated): the decoder's and
  output head's linear layers keep the checkpoint's own bf16 weights and multiply a decoding step's
  few rows in bf16 (:class:`Bf16WeightLinear`: about 3x fp32's decode speed on the 2B model under
  PyTorch's AVX2 kernels, because it reads half the bytes); a prefill's many rows, and everything
  else (vision encoder, attention, norms), run in fp32, where emulated bf16 is 3x slower.

On a real trained model (``bench.fidelity``, README "Performance") both schemes' next-token choices
agree with fp32's as often as plain bf16's do. For ``bf16-int8`` that takes GPTQ (:mod:`medvlm.gptq`):
its int8 values are chosen on three calibration prompts when the model is first loaded (minutes on
a 2B model, then read from a cache), because rounding each weight to nearest with one scale per
output channel cost 2.3 points of top-1 agreement there. The fidelity guard (:mod:`medvlm.fidelity`)
still checks the result on the real weights. What lost: PyTorch's dynamic int8 (``torch.ao``,
activations quantized per tensor), this path's old AVX2 scheme, changed a quarter of the greedy
tokens; the int8 weights of ``bf16-int8`` with everything else in fp32 decoded 15 % faster than
``fp32-bf16`` under AVX2 but, rounded to nearest, lost the same 2 points.

Either way the checkpoint is loaded in bf16 (:func:`load_dtype`) and its linear layers are converted
one by one, so loading never builds a full fp32 copy of them. torchao 0.18's int8 configurations
were 3-10x *slower* than fp32 in eager mode on this CPU (README, "Performance"), and
optimum-quanto the same; if this torch lacks the kernel the loader logs a warning and keeps full
precision. Layers below ``MIN_QUANTIZED_WEIGHTS`` stay unquantized because the per-call overhead
beats the saving.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from medvlm.gptq import quantize_with_calibration, read_cache, round_to_nearest, write_cache
from medvlm.processor import PIXELS_PER_IMAGE_TOKEN
from medvlm.speculation import draft_after_prefill, rows_are_independent

logger = logging.getLogger(__name__)

#: Linear layers with fewer weights than this stay fp32 (per-call overhead beats the saving).
MIN_QUANTIZED_WEIGHTS = 512 * 512

INPUT_MULTIPLE = 16
"""Layers whose input width is not a multiple of this stay as they are: ``torch._weight_int8pack_mm`` returns
garbage for one row and crashes the process for several otherwise (torch 2.13; 104 inputs fail, 96 and 112 work).
Qwen2-VL's (1536, 8960) and most models' widths are multiples."""

#: Image-token budget on CPU: 256 tokens (the recipe's 512 doubles the time to first token).
CPU_MAX_PIXELS = 256 * PIXELS_PER_IMAGE_TOKEN

#: A vision encoder this large makes the image cost seconds on a CPU; smaller ones keep their budget.
LARGE_VISION_PARAMETERS = 100_000_000


BF16_INT8 = "bf16-int8"
FP32_BF16 = "fp32-bf16"
SCHEMES = (BF16_INT8, FP32_BF16)

INT8_KERNEL_ROWS = 32
"""At most this many rows go through the weight-only int8 kernel; more (a prefill) dequantize into a
bf16 buffer and use a dense matmul (measured crossover on the development CPU: about 40 rows)."""
BF16_KERNEL_ROWS = 6
"""Under emulated bf16, at most this many rows multiply in bf16; more are faster in fp32 (one 8960x1536
layer under PyTorch's AVX2 kernels: bf16 2.6 ms against fp32 5.4 ms at 5 rows, 6.1 against 4.7 at 8)."""


PROMPT_LOOKUP_TOKENS = {BF16_INT8: 5, FP32_BF16: 3}
"""Draft tokens per step for prompt-lookup decoding of a greedy answer, per scheme (``python -m bench.speculative``,
the 2B model on MedVLM-R1-style completions: under ``bf16-int8`` 1.30x plain greedy's decode speed with 5 and 1.22x
with 10; under ``fp32-bf16`` 1.10x with 3 and 0.97x with 10, whose verification rows leave the bf16 kernel)."""


@dataclass(frozen=True)
class FastCpuReport:
    """What the CPU fast path did, for ``LoadedModel.describe()`` and the UI."""

    quantization: str
    """E.g. ``"int8 weights, bf16 activations (AVX512-BF16, torch 2.13.0)"``, or why it stayed full precision."""
    quantized_layers: int
    threads: int
    fallback: str | None = None
    """Why quantization did not happen (``None`` when it did)."""
    scheme: str = FP32_BF16
    """:data:`BF16_INT8` or :data:`FP32_BF16`: what ran, or what was tried."""
    prompt_lookup_tokens: int = 0
    """Draft tokens per step for greedy prompt-lookup decoding (:data:`PROMPT_LOOKUP_TOKENS`); 0 where this
    CPU's decoding kernels would not keep the model's own tokens (:mod:`medvlm.speculation`)."""

    @property
    def quantized(self) -> bool:
        return self.fallback is None


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``); empty where they cannot be read."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def has_fast_bf16(flags: set[str] | None = None) -> bool:
    """Whether bf16 matmuls run in hardware here (AVX512-BF16 or AMX-BF16); without, bf16 is emulated.

    The CPU's flags say what it has; PyTorch's own kernel level says what it uses, which
    ``ATEN_CPU_CAPABILITY=avx2`` lowers (how a laptop's AVX2 path is measured on a newer CPU).
    """
    flags = cpu_flags() if flags is None else flags
    kernels = torch.backends.cpu.get_cpu_capability()
    return bool({"avx512_bf16", "amx_bf16"} & flags) and not kernels.startswith(("AVX2", "DEFAULT", "NO AVX"))


def choose_scheme(flags: set[str] | None = None) -> str:
    """``bf16-int8`` where bf16 is fast, else ``fp32-bf16`` (the checkpoint's bf16 weights, the rest in fp32)."""
    return BF16_INT8 if has_fast_bf16(flags) else FP32_BF16


def load_dtype() -> torch.dtype:
    """The dtype to load a checkpoint in for the fast path: bf16 (its own), so no fp32 copy is ever made."""
    return torch.bfloat16


def apply_fast_cpu(
    model: nn.Module,
    scheme: str | None = None,
    *,
    calibration: Sequence[Mapping[str, torch.Tensor]],
    cache: Path | None = None,
) -> FastCpuReport:
    """Set the thread count and convert ``model`` (loaded in bf16) for the CPU in place; never raises.

    ``scheme`` defaults to :func:`choose_scheme`. ``calibration`` (model inputs,
    :func:`medvlm.gptq.calibration_inputs`) lets ``bf16-int8`` round its weights by GPTQ, which keeps a
    trained model's choices at the bf16 floor; an empty one rounds to nearest, which does not (tiny or
    test models only). ``cache`` (:func:`medvlm.gptq.cache_file`) keeps GPTQ's choice for the next load,
    which then skips the calibration (minutes on a 2B model). Any failure of the int8 backend leaves a
    working full-precision model (bf16 where the CPU has fast bf16, else fp32) and says why.
    """
    threads = configure_threads()
    scheme = scheme or choose_scheme()
    if scheme not in SCHEMES:
        raise ValueError(f"Unknown CPU fast path scheme {scheme!r}; choose from {', '.join(SCHEMES)}.")
    names = quantizable_layers(model)
    if not names:
        # A model this small gains nothing from int8 or bf16: it runs as trained, in fp32.
        reason = "no linear layer in the language model is large enough to gain from int8"
        model.float()
        return _fallback_report(reason, threads, FP32_BF16)
    try:
        convert_linear_layers(model, names, scheme, calibration, cache)
    except Exception as error:  # a backend failure of any kind must not stop the model loading
        reason = f"{type(error).__name__}: {error}"
        logger.warning("CPU fast path: int8 unavailable, keeping full precision (%s)", reason)
        _to_full_precision(model, scheme)
        return _fallback_report(reason, threads, scheme)
    gc.collect()  # replaced layers sit in reference cycles: free their gigabytes now
    return FastCpuReport(
        quantization=describe(scheme, calibrated=bool(calibration)),
        quantized_layers=len(names),
        threads=threads,
        scheme=scheme,
        prompt_lookup_tokens=exact_prompt_lookup(model, scheme),
    )


def calibrates(model: nn.Module, scheme: str | None = None) -> bool:
    """Whether converting ``model`` runs GPTQ (``bf16-int8`` with layers to quantize): minutes on a 2B model."""
    return (scheme or choose_scheme()) == BF16_INT8 and bool(quantizable_layers(model))


def exact_prompt_lookup(model: nn.Module, scheme: str) -> int:
    """Set ``model`` up for exact greedy prompt lookup and return its draft length; 0 where it would not be exact.

    A verification of ``n`` drafts multiplies ``n + 1`` rows; the scheme's layer must give each row
    what it gives that row alone (:func:`medvlm.speculation.rows_are_independent`, on a layer of the
    2B model's width).
    """
    drafts = PROMPT_LOOKUP_TOKENS[scheme]
    weight = torch.randn(1536, 1536, generator=torch.Generator().manual_seed(0)) * 0.02
    if scheme == BF16_INT8:
        layer = Int8WeightLinear(*round_to_nearest(weight), None)
    else:
        layer = Bf16WeightLinear(weight, None).float()
    dtype = torch.bfloat16 if scheme == BF16_INT8 else torch.float32
    if not all(rows_are_independent(layer, rows, dtype) for rows in range(2, drafts + 2)):
        logger.info("CPU fast path: prompt lookup off, this CPU's %s kernels round rows by their batch", scheme)
        return 0
    draft_after_prefill(model)
    return drafts


def describe(scheme: str, *, calibrated: bool = True) -> str:
    """What ``scheme`` does, for the banner's details and the stored answers."""
    if scheme == BF16_INT8:
        rounding = "GPTQ" if calibrated else "rounded to nearest"
        return f"int8 weights ({rounding}), bf16 activations (AVX512-BF16/AMX, torch {torch.__version__})"
    return f"bf16 weights, the rest fp32 (no fast bf16 on this CPU, torch {torch.__version__})"


def _fallback_report(reason: str, threads: int, scheme: str) -> FastCpuReport:
    precision = "bf16" if scheme == BF16_INT8 else "fp32"
    return FastCpuReport(
        quantization=f"none ({precision}: {reason})",
        quantized_layers=0,
        threads=threads,
        fallback=reason,
        scheme=scheme,
    )


def _to_full_precision(model: nn.Module, scheme: str) -> None:
    """bf16 stays where the CPU has fast bf16; elsewhere fp32 (bf16 matmuls are emulated, several times slower)."""
    if scheme != BF16_INT8:
        model.float()


def quantizable_layers(model: nn.Module) -> list[str]:
    """Names of the floating-point ``nn.Linear`` layers of the decoder and output head worth quantizing."""
    targets = {id(model.get_decoder()), id(model.get_output_embeddings())}
    names = []
    for name, module in model.named_modules():
        if id(module) in targets:
            names += [
                f"{name}.{sub}".strip(".")
                for sub, layer in module.named_modules()
                if type(layer) is nn.Linear
                and layer.weight.dtype in (torch.float32, torch.bfloat16, torch.float16)
                and layer.weight.numel() >= MIN_QUANTIZED_WEIGHTS
                and layer.in_features % INPUT_MULTIPLE == 0
            ]
    return names


class Int8WeightLinear(nn.Module):
    """A linear layer with int8 weights (one scale per output channel) and bf16 activations, never quantized.

    Few rows (decoding) go through ``torch._weight_int8pack_mm``, which reads the int8 weight
    directly; many rows (a prefill) dequantize it into a bf16 buffer shared by all layers and use
    a dense matmul. The int8 values come from :mod:`medvlm.gptq`: GPTQ on calibration prompts when the
    model loads, or rounding to nearest (:meth:`from_linear`, for probes).
    """

    def __init__(self, weight_int8: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight_int8.shape
        self.register_buffer("weight_int8", weight_int8.to(torch.int8))
        self.register_buffer("scales", scales.to(torch.bfloat16))
        self.register_buffer("bias", None if bias is None else bias.detach().to(torch.bfloat16))

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8WeightLinear:
        """``linear`` with each weight rounded to its nearest step (no calibration)."""
        return cls(*round_to_nearest(linear.weight.detach()), linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        rows = x.reshape(-1, self.in_features).to(torch.bfloat16)
        if rows.shape[0] <= INT8_KERNEL_ROWS:
            out = torch._weight_int8pack_mm(rows, self.weight_int8, self.scales)
        else:
            dense = _scratch(self.weight_int8.shape, torch.bfloat16)
            torch.mul(self.weight_int8, self.scales.unsqueeze(1), out=dense)
            out = nn.functional.linear(rows, dense)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights, bf16 activations"


class Bf16WeightLinear(nn.Module):
    """A linear layer that keeps its checkpoint's bf16 weight in a model otherwise run in fp32.

    Up to :data:`BF16_KERNEL_ROWS` rows multiply in bf16 (the input rounded to bf16, the output
    returned in fp32), which reads half the bytes of fp32 and is 4x faster at one row under
    PyTorch's AVX2 kernels; a prefill's many rows, where emulated bf16 is 3x slower than fp32, copy
    the weight into a shared fp32 buffer and multiply in fp32.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.register_buffer("weight_bf16", weight.detach().to(torch.bfloat16))
        self.register_buffer("bias", None if bias is None else bias.detach().float())

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Bf16WeightLinear:
        return cls(linear.weight, linear.bias)

    def _apply(self, fn, recurse: bool = True):
        """``model.float()`` may change the bias, never the bf16 weight."""
        super()._apply(fn, recurse)
        if self.weight_bf16.dtype != torch.bfloat16:
            self.weight_bf16 = self.weight_bf16.to(torch.bfloat16)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        rows = x.reshape(-1, self.in_features)
        if rows.shape[0] <= BF16_KERNEL_ROWS:
            out = nn.functional.linear(rows.to(torch.bfloat16), self.weight_bf16).to(x.dtype)
        else:
            out = nn.functional.linear(rows, _scratch(self.weight_bf16.shape, x.dtype).copy_(self.weight_bf16))
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bf16 weights"


_SCRATCH = threading.local()


def _scratch(shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
    """A buffer of ``shape`` for every layer of that shape in this thread (a prefill runs layer by layer)."""
    buffers = _SCRATCH.__dict__.setdefault("buffers", {})
    if (shape, dtype) not in buffers:
        buffers[(shape, dtype)] = torch.empty(shape, dtype=dtype)
    return buffers[(shape, dtype)]


CPU_ATTENTION = "medvlm_cpu_sdpa"
"""The attention the fast path registers with transformers (:func:`cpu_attention`)."""


def cpu_attention(
    module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask, **kwargs
):
    """SDPA, computing a decoding step's few query rows in fp32 and one at a time.

    In fp32: on the development CPU one decode step's attention in bf16 (12 heads, 420 cached keys)
    took 0.65 ms and 0.08 ms in fp32, while a prefill's or the vision encoder's long sequences run
    as fast in bf16 as in fp32; the inputs are bf16 values, so fp32 is at least as accurate.

    One at a time: a step that verifies drafted tokens (prompt lookup, :func:`medvlm.streaming.speculation`)
    gives each row exactly the computation a plain decoding step would have given it, so greedy
    speculation keeps the model's own tokens; SDPA's kernels for one query and for several round
    differently, which flipped near-tied tokens of a trained model.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    rows = query.shape[-2]
    if rows > INT8_KERNEL_ROWS:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    dtype = query.dtype
    if dtype == torch.bfloat16:
        query, key, value = query.float(), key.float(), value.float()
    if not kwargs.get("is_causal", getattr(module, "is_causal", True)):  # the vision encoder: every row sees all
        floating = attention_mask is not None and attention_mask.is_floating_point()
        mask = attention_mask.float() if floating else attention_mask
        output, _ = sdpa_attention_forward(module, query, key, value, mask, **kwargs)
        return output.to(dtype), None
    outputs = []
    for row in range(rows):
        seen = key.shape[-2] - rows + row + 1  # the cached keys and the drafts up to this one
        mask = None if attention_mask is None else attention_mask[..., row : row + 1, :seen]
        if mask is not None and bool((mask == 0).all() if mask.is_floating_point() else mask.all()):
            mask = None  # nothing hidden: the same call as a plain decoding step's
        elif mask is not None and mask.is_floating_point():
            mask = mask.float()
        output, _ = sdpa_attention_forward(
            module, query[..., row : row + 1, :], key[..., :seen, :], value[..., :seen, :], mask, **kwargs
        )
        outputs.append(output)
    return torch.cat(outputs, dim=1).to(dtype), None


def use_cpu_attention(model: nn.Module) -> None:
    """Register :func:`cpu_attention` with transformers and make ``model`` use it (its masks are SDPA's)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(CPU_ATTENTION, cpu_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(CPU_ATTENTION, sdpa_mask)
    model.set_attn_implementation(CPU_ATTENTION)


def convert_linear_layers(
    model: nn.Module,
    names: list[str],
    scheme: str = BF16_INT8,
    calibration: Sequence[Mapping[str, torch.Tensor]] = (),
    cache: Path | None = None,
) -> None:
    """Replace the named linear layers for ``scheme`` and bring the rest of ``model`` to its dtype, in place.

    ``bf16-int8``: :class:`Int8WeightLinear`, its weights rounded by GPTQ on ``calibration`` (model
    inputs, :func:`medvlm.gptq.calibration_inputs`; read from ``cache`` where an earlier load stored
    them there) or, without any, to nearest; the rest in bf16, decoding attention through
    :func:`cpu_attention`. ``fp32-bf16``: :class:`Bf16WeightLinear`, the rest in fp32. Raises (leaving
    ``model`` usable) when the int8 kernel is missing; it is probed on a small layer first.
    """

    def replace(name: str, layer: nn.Module) -> None:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, layer)

    if scheme == BF16_INT8:
        probe = Int8WeightLinear.from_linear(nn.Linear(64, 64, bias=False))
        probe(torch.ones(1, 64, dtype=torch.bfloat16))  # raises where torch has no such kernel on this CPU
    if scheme == BF16_INT8 and calibration:
        biases = {name: model.get_submodule(name).bias for name in names}
        chosen = (read_cache(cache, names) if cache else None) or {}
        if chosen:
            logger.info("CPU fast path: GPTQ's int8 weights read from %s", cache)
            for name, (weight_int8, scales) in chosen.items():
                replace(name, Int8WeightLinear(weight_int8, scales, biases[name]))
        else:

            def keep(name: str, weight_int8: torch.Tensor, scales: torch.Tensor) -> None:
                chosen[name] = (weight_int8, scales)
                replace(name, Int8WeightLinear(weight_int8, scales, biases[name]))

            quantize_with_calibration(model, names, calibration, keep)
            if cache:
                try:
                    write_cache(cache, chosen)
                except OSError as error:  # the model is converted: a full disk only costs the next load a new GPTQ
                    logger.warning(
                        "GPTQ's int8 weights could not be cached in %s (%s); the next load runs it again.",
                        cache,
                        error,
                    )
    else:
        layer = Int8WeightLinear if scheme == BF16_INT8 else Bf16WeightLinear
        for name in names:
            replace(name, layer.from_linear(model.get_submodule(name)))
    model.to(torch.float32 if scheme == FP32_BF16 else torch.bfloat16)  # fp32-bf16: the bf16 weights stay (_apply)
    if getattr(model.config, "_attn_implementation", None) == "sdpa":
        use_cpu_attention(model)


def configure_threads() -> int:
    """Use one thread per physical core this process may run on, unless OMP_NUM_THREADS says otherwise.

    PyTorch's default counts every core of the host, which oversubscribes a container limited to
    two vCPUs (a free Space) and makes hyper-threads fight over the same memory bandwidth.
    """
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(available_cores())
    return torch.get_num_threads()


def available_cores() -> int:
    """Physical cores among the CPUs this process may use, capped by a cgroup CPU quota."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    cores = {_core_of(cpu) for cpu in cpus}
    quota = _cgroup_cpu_quota()
    return max(1, min(len(cores), quota) if quota else len(cores))


def _core_of(cpu: int) -> str:
    """The hyper-thread siblings sharing ``cpu``'s physical core (the CPU itself where unknown)."""
    path = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
    try:
        return path.read_text().strip()
    except OSError:
        return str(cpu)


def _cgroup_cpu_quota() -> int | None:
    """Whole CPUs allowed by a cgroup v2 ``cpu.max`` or v1 CFS quota; ``None`` without a limit."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        try:
            quota = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text().strip()
            period = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    if quota in ("max", "-1"):
        return None
    return max(1, int(quota) // int(period))


def cpu_max_pixels(checkpoint_max_pixels: int, model: nn.Module) -> int:
    """The image-token budget to use on CPU: ``CPU_MAX_PIXELS`` when the image would cost seconds.

    A large vision encoder (Qwen2-VL-2B's has 0.67 B parameters) with up to 512 image tokens
    dominates the time to first token on a CPU; a small one costs nothing, so it keeps the
    checkpoint's budget (and the model sees what it was trained on).
    """
    vision = getattr(getattr(model, "model", model), "visual", None)
    vision_parameters = sum(p.numel() for p in vision.parameters()) if vision is not None else 0
    if vision_parameters >= LARGE_VISION_PARAMETERS:
        return min(checkpoint_max_pixels, CPU_MAX_PIXELS)
    return checkpoint_max_pixels
