"""The published models this project knows by name, and the words each was trained and evaluated with.

A light module (no torch): command-line ``--help`` and the app's configuration read the default
model id from here before anything heavy is imported.

The prompt wording matters: a model fine-tuned with GRPO on one exact instruction string may answer
differently when asked in other words, so every entry point asks a model in its own words by
default, and says so. A checkpoint written by ``train.grpo`` records its wording in ``medvlm.json``;
the published MedVLM-R1 weights were trained and evaluated with the original, byte-exact string.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medvlm.prompt import PromptStyle

DEFAULT_MODEL_ID = "JZPeterPan/MedVLM-R1"
"""The published MedVLM-R1 weights (GRPO on Qwen2-VL-2B-Instruct), the default model everywhere."""

PUBLISHED_PROMPT_STYLES: dict[str, PromptStyle] = {
    DEFAULT_MODEL_ID: PromptStyle.MEDVLM_EXACT,
}
"""Hub id -> the wording the model was evaluated with in its paper's code."""


def model_prompt_style(source: str, metadata: Mapping[str, Any] | None = None) -> tuple[PromptStyle, str]:
    """The wording to ask ``source`` in by default, and why (a phrase for banners and logs).

    Order: the ``prompt_style`` a training run recorded in the checkpoint's ``medvlm.json``, then the
    published ids above, then the clean MedVLM-R1 wording (a base model was never trained on any).
    """
    recorded = ((metadata or {}).get("data") or {}).get("prompt_style") or (metadata or {}).get("prompt_style")
    if recorded:
        try:
            return PromptStyle(recorded), "the wording it was trained with (medvlm.json)"
        except ValueError:
            pass
    name = str(source).rstrip("/")
    if name in PUBLISHED_PROMPT_STYLES:
        return PUBLISHED_PROMPT_STYLES[name], "the wording it was trained and evaluated with in its paper's code"
    return PromptStyle.MEDVLM, "the clean MedVLM-R1 wording (this model records none of its own)"


def looks_like_local_path(source: str) -> bool:
    """A model source that can only be meant as a local path (a Hub id is ``name`` or ``org/name``)."""
    return source.startswith((".", "/", "~")) or source.count("/") > 1 or "\\" in source
