"""The trainer ``train.grpo`` runs: TRL's ``GRPOTrainer``, with a resume that restores what was trained.

Imported by ``train.grpo`` only when training starts (it pulls in torch, transformers and TRL).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from peft import PeftModel
from trl import GRPOTrainer

logger = logging.getLogger("train.grpo")


class ResumableGRPOTrainer(GRPOTrainer):
    """TRL's ``GRPOTrainer`` whose resume really restores the checkpoint's weights.

    transformers 5 writes checkpoints in the published key layout of Qwen2-VL (``model.layers.*``,
    ``visual.*``), but ``Trainer._load_from_checkpoint`` reads them back with a raw
    ``load_state_dict(strict=False)`` into the runtime layout (``model.language_model.*``,
    ``model.visual.*``): no key matches, a warning lists them all, and training silently goes on
    from the base weights (reported for Qwen2/2.5-VL in QwenLM/Qwen3-VL#1763 and
    modelscope/ms-swift#7947). Full weights are therefore read with ``from_pretrained``, which
    converts the layout, and copied in strictly; optimizer, scheduler, RNG and step counters are
    restored by the Trainer as usual. LoRA adapters, DeepSpeed and FSDP keep the Trainer's path.
    """

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        model = self.model if model is None else model
        full_weights = any(
            (Path(resume_from_checkpoint) / name).is_file()
            for name in ("model.safetensors", "model.safetensors.index.json")
        )
        if not full_weights or isinstance(model, PeftModel):
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            return
        dtype = next(model.parameters()).dtype
        saved = type(model).from_pretrained(
            resume_from_checkpoint, dtype=dtype, attn_implementation=model.config._attn_implementation
        )
        model.load_state_dict(saved.state_dict(), strict=True)  # every key, or an error: never a silent restart
        del saved
        logger.info("Restored the weights of %s", resume_from_checkpoint)
