"""Whether a second model fits beside the first: the two-model comparison page's start-up check.

A free CPU Space has 16 GB. ``bench/two_models_memory.py`` measured two 2B models in one process
(README, Performance): on the CPU fast path 9.7 GiB once both are loaded and 12.3 GiB at the peak,
once both have answered; in bf16 an 8.9 GiB peak. Both fit 16 GB; fp32 (8.9 GB a copy) cannot.
The app therefore estimates the peak from what it can see, the first model as loaded, and
refuses the second model at start, in words, when the estimate does not fit the memory this
process may use (a container's cgroup limit, else the machine's memory), rather than being killed
mid-answer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

GIB = 1024**3

PEAK_OVER_MODELS = 1.35
"""The peak while both answer, over two models' footprints (each the larger of its weight bytes and
the resident memory its loading added). Measured by ``bench/two_models_memory.py`` on the 2B
checkpoint: fast path 0.4 GiB before loading + 2 x 4.4 GiB loaded -> 12.3 GiB peak (1.34); bf16
0.5 GiB + 2 x 4.1 GiB of (memory-mapped) weights -> 8.9 GiB (1.03)."""

HEADROOM = 0.9
"""Use at most 90% of the limit: the rest is the page cache, Gradio and the uploads."""


def weight_bytes(model: torch.nn.Module) -> int:
    """The bytes of a model's weights and buffers as loaded (int8 where quantized), each storage once."""
    seen: set[tuple[str, int]] = set()
    total = 0

    def count(value: object) -> None:
        nonlocal total
        if isinstance(value, torch.Tensor):
            if value.is_quantized:
                value = value.int_repr()  # a quantized tensor's storage is its int8 values
            key = (str(value.device), value.untyped_storage().data_ptr())
            if key not in seen:
                seen.add(key)
                total += value.untyped_storage().nbytes()
        elif isinstance(value, (tuple, list)):
            for item in value:
                count(item)

    for value in model.state_dict(keep_vars=True).values():
        count(value)
    return total


def memory_limit_bytes(device: torch.device | str = "cpu") -> int | None:
    """What this process may use on ``device``: the GPU's memory, or the cgroup limit, else the machine's RAM.

    None where it cannot be read (not Linux): the check then lets the model load.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    limits = [_meminfo_total(), _cgroup_limit()]
    known = [limit for limit in limits if limit]
    return min(known) if known else None


@dataclass(frozen=True)
class MemoryCheck:
    """The estimate for two models answering at once against what this process may use."""

    needed_bytes: int
    limit_bytes: int | None

    @property
    def fits(self) -> bool:
        return self.limit_bytes is None or self.needed_bytes <= self.limit_bytes * HEADROOM

    def describe(self) -> str:
        needed = f"about {self.needed_bytes / GIB:.1f} GiB at the peak"
        if self.limit_bytes is None:
            return f"Two models need {needed}."
        return f"Two models need {needed}; this machine allows {self.limit_bytes / GIB:.1f} GiB."


def check_two_models(
    first: torch.nn.Module, device: torch.device | str = "cpu", *, loaded_bytes: int = 0, baseline_bytes: int = 0
) -> MemoryCheck:
    """Whether a second model of the first one's size fits beside it while both answer.

    ``loaded_bytes`` is the resident memory loading the first model added (the CPU fast path
    holds more than its state dict: packed kernels), ``baseline_bytes`` the process's before it.
    A comparison is between two checkpoints of one architecture (the base model and its
    GRPO-tuned copy), so the second is assumed as large as the first.
    """
    footprint = max(weight_bytes(first), loaded_bytes)
    return MemoryCheck(
        needed_bytes=round(baseline_bytes + 2 * footprint * PEAK_OVER_MODELS),
        limit_bytes=memory_limit_bytes(device),
    )


def resident_bytes() -> int:
    """This process's resident memory now (Linux ``/proc/self/statm``); 0 where it cannot be read."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def _meminfo_total() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def _cgroup_limit() -> int | None:
    """The container's memory limit (cgroup v2 ``memory.max``, v1 ``memory.limit_in_bytes``); None if unlimited."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:  # v1 writes a huge number for "no limit"
            return int(text)
    return None
