"""The CPU fast path judged on a real trained model (SmolLM2-135M-Instruct, ``bench.trained_model``).

Random weights have flat logits, so only a trained model shows whether a scheme keeps the model's
answers. What a CPU without fast bf16 runs is measured the way such a CPU runs it: in a process
with ``ATEN_CPU_CAPABILITY=avx2`` (PyTorch's AVX2 kernels, and the scheme they get).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

MEASURE = """
import json, torch
from bench import fidelity
from medvlm import fast_cpu
fast_cpu.MIN_QUANTIZED_WEIGHTS = 0  # every layer, as in the 2B model, whose layers are all above it
torch.set_num_threads(2)
tokens, reference, results = fidelity.teacher_forced("trained", ["bf16", "fast"], 16, free=False)
top1 = {variant: int((reference.argmax(-1) == forced.argmax(-1)).sum()) for variant, (forced, _) in results.items()}
cosine = {
    variant: float(torch.nn.functional.cosine_similarity(reference, forced, dim=-1).min())
    for variant, (forced, _) in results.items()
}
print(json.dumps({"scheme": fast_cpu.choose_scheme(), "tokens": len(reference), "top1": top1, "cosine_min": cosine}))
"""


@pytest.mark.slow
@pytest.mark.usefixtures("trained_model_dir")
def test_the_avx2_default_keeps_a_trained_models_greedy_choices_as_bf16_does() -> None:
    """fp32 greedy on four medical cases: the AVX2 fast path, teacher-forced on it, keeps its choices as bf16 does."""
    environment = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    done = subprocess.run(
        [sys.executable, "-c", MEASURE], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    assert measured["scheme"] == "fp32-bf16" and measured["tokens"] == 64
    floor = measured["top1"]["bf16"]
    assert floor >= 60, measured  # a trained model's logits are peaked: bf16 itself keeps nearly every token
    assert measured["top1"]["fast"] >= floor - 1, measured  # within one token of the bf16 floor
    # and its worst step as close to fp32 as bf16's (per-channel int8 weights fall 0.003 short of it here)
    assert measured["cosine_min"]["fast"] >= measured["cosine_min"]["bf16"] - 0.001, measured


LOOKUP = """
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from bench.trained_model import chat_prompts, checkpoint_dir
from medvlm import fast_cpu
fast_cpu.MIN_QUANTIZED_WEIGHTS = 0
model = AutoModelForCausalLM.from_pretrained(checkpoint_dir(), dtype=torch.bfloat16).eval()
report = fast_cpu.apply_fast_cpu(model, sys.argv[1])
passes = []
model.get_decoder().register_forward_hook(lambda *args: passes.append(1))
same, tokens, drafted_passes = [], 0, 0
for ids in chat_prompts(AutoTokenizer.from_pretrained(checkpoint_dir())):
    prompt = torch.tensor([ids])
    with torch.inference_mode():
        plain = model.generate(prompt, max_new_tokens=64, do_sample=False)
        passes.clear()
        drafted = model.generate(
            prompt, max_new_tokens=64, do_sample=False, prompt_lookup_num_tokens=report.prompt_lookup_tokens
        )
    same.append(drafted.tolist() == plain.tolist())
    tokens += drafted.shape[1] - prompt.shape[1]
    drafted_passes += len(passes)
print(json.dumps({"drafts": report.prompt_lookup_tokens, "same": same, "tokens": tokens, "passes": drafted_passes}))
"""


@pytest.mark.slow
@pytest.mark.parametrize(("scheme", "kernels"), [("bf16-int8", None), ("fp32-bf16", "avx2")])
@pytest.mark.usefixtures("trained_model_dir")
def test_prompt_lookup_keeps_the_trained_models_greedy_tokens(scheme: str, kernels: str | None) -> None:
    """Speculation changes how many passes the model makes, never its greedy text (four cases, 64 tokens each).

    Each scheme runs on the kernels a CPU that gets it runs (``fp32-bf16``: PyTorch's AVX2 ones).
    """
    environment = {**os.environ, **({"ATEN_CPU_CAPABILITY": kernels, "ONEDNN_MAX_CPU_ISA": "AVX2"} if kernels else {})}
    done = subprocess.run(
        [sys.executable, "-c", LOOKUP, scheme], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    assert measured["drafts"] > 0, measured  # this CPU's kernels keep rows apart: prompt lookup is on
    assert measured["same"] == [True] * 4, measured
    assert measured["passes"] < measured["tokens"], measured  # drafts were accepted: fewer passes than tokens
