"""The CPU fast path: int8 language-model weights and a thread count that fits the machine.

Decoding one token reads every weight of the language model once. In fp32 that is about 6 GB for
Qwen2-VL-2B (1.3 B parameters in the decoder's linear layers plus the 151936x1536 output head),
so memory bandwidth alone caps a CPU at one or two tokens a second. Storing those weights as int8
reads a quarter of the bytes.

The backend is PyTorch's own dynamic int8 linear (fbgemm on x86, qnnpack on ARM), reached through
``torch.ao.quantization.quantize_dynamic``: int8 per-channel weights, activations quantized per
call. We measured the alternatives on the same CPU (README, "Performance"): torchao 0.18's
``Int8WeightOnlyConfig`` and ``Int8DynamicActivationInt8WeightConfig`` run 3-10x *slower* than
fp32 in eager mode (their CPU path converts the whole int8 weight to float on every call; the
fused kernels need ``torch.compile`` and were still slower here), and optimum-quanto does the
same. ``torch.ao.quantization`` is marked deprecated, so if a future torch drops it, or the
machine has no quantized engine, the loader logs a warning and keeps fp32.

Only the language model is quantized. Quantizing the vision encoder's linear layers the same way
made it 2.16x faster on the 2-core machine (README, "Performance"), but it runs once per image and
its accuracy matters most, and random weights cannot show what int8 does to a trained encoder's
activations; so it stays fp32, and the smaller CPU image budget (``CPU_MAX_PIXELS``) shortens it.
Layers below ``MIN_QUANTIZED_WEIGHTS`` stay fp32 because quantizing each activation costs more than
their weights take to read.
"""

from __future__ import annotations

import gc
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medvlm.processor import PIXELS_PER_IMAGE_TOKEN

logger = logging.getLogger(__name__)

#: Linear layers with fewer weights than this stay fp32 (per-call overhead beats the saving).
MIN_QUANTIZED_WEIGHTS = 512 * 512

#: Image-token budget on CPU: 256 tokens (the recipe's 512 doubles the time to first token).
CPU_MAX_PIXELS = 256 * PIXELS_PER_IMAGE_TOKEN

#: A vision encoder this large makes the image cost seconds on a CPU; smaller ones keep their budget.
LARGE_VISION_PARAMETERS = 100_000_000


class QuantizationUnavailable(RuntimeError):
    """The int8 backend cannot run here (missing from this torch, or no quantized engine)."""


@dataclass(frozen=True)
class FastCpuReport:
    """What the CPU fast path did, for ``LoadedModel.describe()`` and the UI."""

    quantization: str
    """E.g. ``"int8 dynamic, per-channel (x86 engine, torch 2.13.0)"``, or why it stayed fp32."""
    quantized_layers: int
    threads: int
    fallback: str | None = None
    """Why quantization did not happen (``None`` when it did)."""

    @property
    def quantized(self) -> bool:
        return self.fallback is None


def apply_fast_cpu(model: nn.Module) -> FastCpuReport:
    """Set the thread count and quantize ``model``'s language model in place; never raises.

    Any failure of the quantization backend leaves a working fp32 model and says why.
    """
    threads = configure_threads()
    names = quantizable_layers(model)
    if not names:
        reason = "no float32 linear layer in the language model is large enough to gain from int8"
        return FastCpuReport(quantization=f"none ({reason})", quantized_layers=0, threads=threads, fallback=reason)
    try:
        engine = quantize_layers(model, names)
    except Exception as error:  # a backend failure of any kind must not stop the model loading
        reason = f"{type(error).__name__}: {error}"
        logger.warning("CPU fast path: int8 quantization unavailable, keeping fp32 (%s)", reason)
        return FastCpuReport(
            quantization=f"none (fp32 fallback: {reason})", quantized_layers=0, threads=threads, fallback=reason
        )
    return FastCpuReport(
        quantization=f"int8 dynamic, per-channel ({engine} engine, torch {torch.__version__})",
        quantized_layers=len(names),
        threads=threads,
    )


def quantizable_layers(model: nn.Module) -> list[str]:
    """Names of the float32 ``nn.Linear`` layers of the decoder and output head worth quantizing."""
    targets = {id(model.get_decoder()), id(model.get_output_embeddings())}
    names = []
    for name, module in model.named_modules():
        if id(module) in targets:
            names += [
                f"{name}.{sub}".strip(".")
                for sub, layer in module.named_modules()
                if type(layer) is nn.Linear
                and layer.weight.dtype == torch.float32
                and layer.weight.numel() >= MIN_QUANTIZED_WEIGHTS
            ]
    return names


def quantize_layers(model: nn.Module, names: list[str]) -> str:
    """Swap the named linear layers for int8 dynamic ones in place; returns the engine running them.

    Raises ``QuantizationUnavailable`` (or the backend's own error) when it cannot be done; the
    backend is probed on a small layer first, so a failure leaves ``model`` untouched.
    """
    quantize_dynamic, qconfig = _dynamic_quantization_api()
    engine = _usable_engine(quantize_dynamic, qconfig)
    with warnings.catch_warnings():
        _ignore_deprecation_notices()
        quantize_dynamic(model, {name: qconfig for name in names}, dtype=torch.qint8, inplace=True)
    gc.collect()  # the replaced fp32 layers sit in reference cycles: free their 5 GB now, not at some later collection
    return engine


def _dynamic_quantization_api() -> tuple[Any, Any]:
    """``quantize_dynamic`` and the per-channel qconfig, or ``QuantizationUnavailable``."""
    try:
        with warnings.catch_warnings():
            _ignore_deprecation_notices()
            from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    except ImportError as error:
        raise QuantizationUnavailable(
            f"this torch ({torch.__version__}) has no torch.ao.quantization: {error}"
        ) from error
    return quantize_dynamic, per_channel_dynamic_qconfig


def _usable_engine(quantize_dynamic: Any, qconfig: Any) -> str:
    """The quantized engine in use (x86/fbgemm, qnnpack...), after checking a small int8 layer runs on it."""
    engine = torch.backends.quantized.engine
    if engine in (None, "none"):
        raise QuantizationUnavailable(
            f"no quantized engine in this torch build (supported: {torch.backends.quantized.supported_engines})"
        )
    probe = nn.Sequential(nn.Linear(64, 64))
    with warnings.catch_warnings(), torch.inference_mode():
        _ignore_deprecation_notices()
        quantize_dynamic(probe, {nn.Linear: qconfig}, dtype=torch.qint8, inplace=True)
        probe(torch.ones(1, 64))
    return engine


def _ignore_deprecation_notices() -> None:
    """Silence torch's notices that ``torch.ao.quantization`` and qint8 tensors are deprecated.

    They would print on every load; the fallback covers their eventual removal (module docstring).
    Call inside ``warnings.catch_warnings()``.
    """
    warnings.simplefilter("ignore", DeprecationWarning)
    warnings.filterwarnings(
        "ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel", category=UserWarning
    )


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
