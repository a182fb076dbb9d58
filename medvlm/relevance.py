"""Where did the model look? A relevance map over the image for each sentence of the reasoning.

The method is the class-activation step of the *Token Activation Map* (TAM, Li et al., ICCV 2025):
the language model's output layer is applied to the last hidden state of every image token, and
the logit each one gives a generated token is that token's activation at that image patch. Qwen2-VL
turns every 28 x 28-pixel block of the image into one image token (2 x 2 merged 14-pixel patches),
so the map has one cell per block.

Why this method here:

* it needs *one* forward pass over the prompt and no gradients: the image tokens come before the
  answer, so under causal attention their hidden states are already final after the prefill the
  model ran to answer. It works with the CPU int8 fast path (which has no backward) and with SDPA
  attention; attention rollout would need eager attention weights over the whole sequence, and
  gradient x input a backward pass per sentence through the 1.5 B-parameter language model;
* a sentence's map is the mean of its tokens' maps, so every sentence of a reasoning is mapped by
  the same pass (a reviewer clicks through sentences without waiting).

TAM also removes the interference of the context tokens (its "estimated causal inference": a
token's map partly repeats the maps of the tokens before it) and denoises with a rank Gaussian
filter. We keep the first idea in its simplest form and leave out the filter: each token's map is
centred over the patches (what every patch shares says nothing about *where*), the sentence's map
is the mean over its tokens minus the mean over the whole completion's tokens (what the sentence
adds to the reasoning's general activation), clipped at zero and scaled to [0, 1]. A map is
evidence of what the output layer reads from each patch, not proof of causation: the probes
(:mod:`medvlm.probes`) measure whether the answer depends on the image at all.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from medvlm.hints import reasoning_sentences
from medvlm.model import LoadedModel
from medvlm.prompt import PromptStyle
from medvlm.streaming import prepare_inputs

OVERLAY_COLOUR = (255, 64, 0)
"""The overlay's hue: warm orange, visible on greyscale scans."""
OVERLAY_OPACITY = 0.55
"""Opacity where relevance is 1; it falls to 0 with relevance."""


@dataclass(frozen=True)
class RelevanceMaps:
    """One relevance map per reasoning sentence, over the image's 28 x 28-pixel blocks."""

    sentences: list[tuple[int, int, str]]
    """The reasoning's sentences as ``(start, end, text)``, offsets into the completion."""
    maps: np.ndarray
    """``(len(sentences), rows, cols)``, each in [0, 1] (all zero: no patch stands out)."""
    seconds: float
    """Wall time of the computation (one prefill and the output layer on the image tokens)."""

    @property
    def grid(self) -> tuple[int, int]:
        return self.maps.shape[1], self.maps.shape[2]


def sentence_relevance(
    activations: np.ndarray,
    token_spans: Sequence[tuple[int, int]],
    sentences: Sequence[tuple[int, int, str]],
    grid: tuple[int, int],
) -> np.ndarray:
    """The maps of ``sentences`` from per-token activations: the pure part, for tests and reuse.

    Args:
        activations: ``(image tokens, completion tokens)``: the output layer's logit for each
            completion token at each image token, image tokens in raster order of the blocks.
        token_spans: each completion token's ``(start, end)`` characters in the completion.
        sentences: ``(start, end, text)`` of the sentences to map.
        grid: ``(rows, cols)`` of image blocks; ``rows * cols`` is the number of image tokens.

    Returns:
        ``(len(sentences), rows, cols)`` in [0, 1] (see the module docstring for the steps).
    """
    rows, cols = grid
    centred = activations - activations.mean(axis=0, keepdims=True)
    reasoning = [i for i, (start, end) in enumerate(token_spans) if end > start]
    background = centred[:, reasoning].mean(axis=1) if reasoning else np.zeros(rows * cols)
    maps = np.zeros((len(sentences), rows, cols), dtype=np.float32)
    for index, (start, end, _) in enumerate(sentences):
        inside = [i for i, (first, last) in enumerate(token_spans) if first < end and last > start]
        if not inside:
            continue
        relevance = np.clip(centred[:, inside].mean(axis=1) - background, 0, None)
        top = relevance.max()
        if top > 0:
            maps[index] = (relevance / top).reshape(rows, cols)
    return maps


def relevance_maps(
    loaded: LoadedModel,
    image: Image.Image,
    question: str,
    options: Sequence[str],
    completion: str,
    *,
    style: PromptStyle | str | None = None,
    max_pixels: int | None = None,
) -> RelevanceMaps:
    """The relevance map of every reasoning sentence of ``completion``, from one prefill of its prompt.

    ``image``, the question, options, style and ``max_pixels`` must be those the completion was
    generated with, so the image tokens are the ones the model read.
    """
    started = time.perf_counter()
    style = loaded.prompt_style if style is None else style
    sentences = reasoning_sentences(completion)
    inputs = prepare_inputs(loaded, [image], [question], [list(options)], style=style, max_pixels=max_pixels)
    merge = loaded.model.config.vision_config.spatial_merge_size
    _, height, width = inputs["image_grid_thw"][0].tolist()
    grid = (height // merge, width // merge)
    encoded = loaded.processor.tokenizer(completion, add_special_tokens=False, return_offsets_mapping=True)
    token_ids = torch.tensor(encoded["input_ids"], dtype=torch.long, device=loaded.device)
    with torch.inference_mode():
        hidden = loaded.model.model(**inputs).last_hidden_state[0]
        image_hidden = hidden[inputs["input_ids"][0] == loaded.model.config.image_token_id]
        logits = loaded.model.lm_head(image_hidden)[:, token_ids].float().cpu().numpy()
    maps = sentence_relevance(logits, [tuple(span) for span in encoded["offset_mapping"]], sentences, grid)
    return RelevanceMaps(sentences, maps, round(time.perf_counter() - started, 3))
