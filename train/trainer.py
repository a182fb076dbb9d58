"""The trainer ``train.grpo`` runs: TRL's ``GRPOTrainer``, with a resume that restores what was trained
and an end that lets every process exit.

Imported by ``train.grpo`` only when training starts (it pulls in torch, transformers and TRL).
"""

from __future__ import annotations

import gc
import logging
import weakref
from pathlib import Path
from typing import Any

from peft import PeftModel
from torch.nn.parallel import DistributedDataParallel
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

    def end(self) -> None:
        """Release the DDP wrapper, then the process group (``Trainer.end``).

        The order keeps a finished run from hanging on exit. DDP's C++ ``Reducer`` holds a reference
        to the process group and is freed with the GIL held. If it outlives the group's registration,
        it drops the last reference, and gloo's destructor joins its worker threads while holding the
        GIL; a worker still freeing the tensors of the last collective waits for the GIL, and the
        process never exits (pytorch/pytorch#56297; rare, once in 73 two-process CPU runs on a loaded machine
        here). Freed first, the wrapper leaves the last reference to ``destroy_process_group``, whose binding
        releases the GIL.
        """
        wrapper = self.model_wrapped
        if isinstance(wrapper, DistributedDataParallel):
            released = weakref.ref(wrapper)
            del wrapper
            self.model_wrapped = self.model
            self.accelerator.free_memory()  # drops the accelerator's reference to the wrapped model
            gc.collect()  # DDP's hooks make reference cycles
            if released() is None:
                logger.info("Freed the DistributedDataParallel wrapper before the process group")
            else:
                logger.warning(
                    "The DistributedDataParallel wrapper is still referenced after training: "
                    "the processes may hang on exit (pytorch/pytorch#56297)."
                )
        super().end()
