"""Prompt-lookup decoding that keeps the model's own greedy tokens.

Greedy speculative decoding is exact in exact arithmetic: a drafted token is kept only where it is
the model's own greedy choice. In floating point it is exact only if each drafted position gets the
same numbers in a verification pass of several rows as it would in a plain decoding step of one.
Three things make that so on the CPU fast path:

* its decoding kernels give a row the same result whatever the other rows are (checked on this
  machine when the model loads, :func:`rows_are_independent`: PyTorch's weight-only int8 kernel
  is; oneDNN's bf16 matmul is under AVX2 kernels but not under AVX512 ones);
* attention computes a verification's rows one at a time (:func:`medvlm.fast_cpu.cpu_attention`);
* nothing is drafted at the prefill (:func:`draft_after_prefill`): transformers' prompt lookup
  would append drafts to the prompt's forward pass, whose rows go through the prefill's dense
  kernels, and a trained model's near-tied tokens flipped there.

``tests/test_trained_fidelity.py`` holds the result on a trained model: the same 256 greedy tokens
with and without prompt lookup, in fewer forward passes. Where it is switched on for an answer is
:func:`medvlm.streaming.speculation`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def rows_are_independent(layer: nn.Module, rows: int, dtype: torch.dtype) -> bool:
    """Whether ``layer`` gives each of ``rows`` input rows the same output as it gives that row alone."""
    generator = torch.Generator().manual_seed(0)
    batch = torch.randn(rows, layer.in_features, generator=generator).to(dtype)
    with torch.inference_mode():
        together = layer(batch)
        alone = torch.cat([layer(batch[row : row + 1]) for row in range(rows)])
    return torch.equal(together, alone)


def draft_after_prefill(model: nn.Module) -> None:
    """Make prompt lookup on ``model`` draft nothing at its first step (the prefill), only while decoding.

    transformers builds its candidate generator inside ``generate``; this wraps what it builds, on
    this model only. A first step without drafts costs nothing: a prompt rarely continues itself.
    """
    build: Callable[..., Any] = model._get_candidate_generator

    def build_without_first_drafts(*args: Any, **kwargs: Any) -> Any:
        generator = build(*args, **kwargs)
        get_candidates = generator.get_candidates
        prefilled = []

        def candidates(input_ids: torch.LongTensor, **more: Any) -> Any:
            if not prefilled:
                prefilled.append(True)
                return input_ids, None  # no drafts: the prefill decides the first token alone
            return get_candidates(input_ids, **more)

        generator.get_candidates = candidates
        return generator

    model._get_candidate_generator = build_without_first_drafts
