"""The CPU fast path: its two schemes (int8 or bf16 language-model layers), the switch, the fallback, threads and
image budget.

The tiny checkpoint's layers are below the size where int8 pays off, so the tests that need them
quantized lower ``MIN_QUANTIZED_WEIGHTS`` to 0: the same code then runs on every layer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from medvlm import fast_cpu
from medvlm.gptq import round_to_nearest
from medvlm.model import LoadedModel, default_attention, load_model
from medvlm.processor import RECIPE_MAX_PIXELS
from medvlm.streaming import GenerationSettings, stream_completion

IMAGE = Image.radial_gradient("L").convert("RGB").resize((120, 90))
OPTIONS = ["CT", "MRI", "X-Ray"]


@pytest.fixture(autouse=True)
def keep_thread_count() -> Iterator[None]:
    """The fast path sets torch's process-wide thread count; give the other tests theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def quantize_every_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fast_cpu, "MIN_QUANTIZED_WEIGHTS", 0)


def language_linears(loaded: LoadedModel) -> dict[str, nn.Module]:
    model = loaded.model
    layers = {
        f"decoder.{name}": module
        for name, module in model.get_decoder().named_modules()
        if "proj" in name.rsplit(".", 1)[-1]
    }
    return {**layers, "lm_head": model.lm_head}


def stream(loaded: LoadedModel, max_new_tokens: int = 40):
    return list(
        stream_completion(loaded, IMAGE, "Which modality?", OPTIONS, GenerationSettings(max_new_tokens=max_new_tokens))
    )[-1]


@pytest.fixture(params=fast_cpu.SCHEMES)
def scheme(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each scheme in turn, whatever this CPU would choose (both run anywhere; bf16 is slower without AVX512-BF16)."""
    monkeypatch.setattr(fast_cpu, "choose_scheme", lambda flags=None: request.param)
    return request.param


@pytest.mark.usefixtures("quantize_every_layer")
def test_switched_off_gives_plain_fp32_linear_layers(tiny_model_dir: Path) -> None:
    loaded = load_model(tiny_model_dir, fast_cpu=False)
    assert all(
        type(layer) is nn.Linear and layer.weight.dtype == torch.float32 for layer in language_linears(loaded).values()
    )
    described = loaded.describe()
    assert described["fast_cpu"] is False and described["quantization"] == "none"
    assert loaded.max_pixels == RECIPE_MAX_PIXELS


def test_small_layers_stay_fp32_by_default(tiny_model: LoadedModel) -> None:
    assert all(
        type(layer) is nn.Linear and layer.weight.dtype == torch.float32
        for layer in language_linears(tiny_model).values()
    )
    assert tiny_model.fast_cpu is not None and not tiny_model.fast_cpu.quantized
    assert "large enough" in tiny_model.describe()["quantization"]


def test_the_scheme_follows_what_the_cpu_can_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert fast_cpu.choose_scheme({"avx2", "avx512f", "avx512_bf16"}) == fast_cpu.BF16_INT8
    assert fast_cpu.choose_scheme({"avx2", "amx_bf16", "amx_tile"}) == fast_cpu.BF16_INT8
    assert fast_cpu.choose_scheme({"avx2", "avx512f", "avx512_vnni"}) == fast_cpu.FP32_BF16
    assert fast_cpu.choose_scheme(set()) == fast_cpu.FP32_BF16


def test_a_cpu_made_to_run_avx2_kernels_gets_the_avx2_scheme() -> None:
    """``ATEN_CPU_CAPABILITY=avx2`` (how a laptop is measured on a newer CPU) is what PyTorch runs, so it decides."""
    done = subprocess.run(
        [sys.executable, "-c", "from medvlm import fast_cpu; print(fast_cpu.choose_scheme({'avx512_bf16'}))"],
        env={**os.environ, "ATEN_CPU_CAPABILITY": "avx2"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == fast_cpu.FP32_BF16


def test_the_checkpoint_is_loaded_in_bf16_never_as_a_full_fp32_copy(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import medvlm.model

    seen = []
    load = medvlm.model.AutoModelForImageTextToText.from_pretrained

    def recording(*args, **kwargs):
        seen.append(kwargs["dtype"])
        return load(*args, **kwargs)

    monkeypatch.setattr(medvlm.model.AutoModelForImageTextToText, "from_pretrained", recording)
    load_model(tiny_model_dir)
    load_model(tiny_model_dir, fast_cpu=False)
    assert seen == [torch.bfloat16, torch.float32]


@pytest.mark.usefixtures("quantize_every_layer")
def test_bf16_int8_keeps_int8_weights_and_bf16_everywhere_else(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fast_cpu, "choose_scheme", lambda flags=None: fast_cpu.BF16_INT8)
    loaded = load_model(tiny_model_dir)
    layers = language_linears(loaded)
    assert len(layers) == 2 * 7 + 1  # two decoder layers of q, k, v, o, gate, up, down; the head
    assert all(
        type(layer) is fast_cpu.Int8WeightLinear and layer.weight_int8.dtype == torch.int8 for layer in layers.values()
    )
    vision_layer = loaded.model.model.visual.blocks[0].mlp.fc1
    assert type(vision_layer) is nn.Linear and vision_layer.weight.dtype == torch.bfloat16
    assert loaded.model.get_input_embeddings().weight.dtype == torch.bfloat16 and loaded.dtype == torch.bfloat16
    described = loaded.describe()
    assert described["quantization"].startswith("int8 weights (GPTQ), bf16 activations")
    assert described["dtype"] == "bfloat16"
    assert (
        loaded.fast_cpu is not None
        and loaded.fast_cpu.quantized_layers == 15
        and loaded.fast_cpu.scheme == "bf16-int8"
    )


@pytest.mark.usefixtures("quantize_every_layer")
def test_fp32_bf16_keeps_the_bf16_weights_and_fp32_everywhere_else(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fast_cpu, "choose_scheme", lambda flags=None: fast_cpu.FP32_BF16)
    loaded = load_model(tiny_model_dir)
    layers = language_linears(loaded)
    assert len(layers) == 15
    assert all(
        type(layer) is fast_cpu.Bf16WeightLinear and layer.weight_bf16.dtype == torch.bfloat16
        for layer in layers.values()
    )
    assert all(layer.bias.dtype == torch.float32 for layer in layers.values() if layer.bias is not None)
    assert loaded.model.model.visual.blocks[0].mlp.fc1.weight.dtype == torch.float32
    assert loaded.dtype == torch.float32
    assert loaded.describe()["quantization"].startswith("bf16 weights, the rest fp32")


@pytest.mark.parametrize("rows", [1, fast_cpu.BF16_KERNEL_ROWS, fast_cpu.BF16_KERNEL_ROWS + 1, 300])
def test_bf16_weight_linear_is_the_layer_with_its_weight_rounded_to_bf16(rows: int) -> None:
    """A few rows multiply in bf16, many in fp32 (a prefill): both give the layer with its bf16 weight, in fp32."""
    torch.manual_seed(rows)
    dense = nn.Linear(384, 640)
    layer = fast_cpu.Bf16WeightLinear.from_linear(dense).float()
    x = torch.randn(2, rows, 384)
    with torch.inference_mode():
        expected = nn.functional.linear(x, dense.weight.bfloat16().float(), dense.bias)
        got = layer(x)
    assert got.dtype == torch.float32 and got.shape == (2, rows, 640)
    tolerance = 0.01 if rows <= fast_cpu.BF16_KERNEL_ROWS else 1e-5  # the bf16 rows also round the input
    assert (got - expected).abs().max().item() < tolerance * expected.abs().max().item()


@pytest.mark.parametrize("rows", [1, 7, 32, 33, 300])
def test_int8_weight_linear_matches_the_dense_layer_in_both_paths(rows: int) -> None:
    """Decode-sized inputs use the int8 kernel, prefill-sized ones a dequantized bf16 matmul: both are the layer."""
    torch.manual_seed(rows)
    dense = nn.Linear(384, 640)
    layer = fast_cpu.Int8WeightLinear.from_linear(dense)
    x = torch.randn(2, rows, 384)
    with torch.inference_mode():
        expected, got = dense(x), layer(x.to(torch.bfloat16)).float()
    assert got.shape == expected.shape == (2, rows, 640)
    cosine = nn.functional.cosine_similarity(got.flatten(), expected.flatten(), dim=0).item()
    assert cosine > 0.9999
    assert (got - expected).abs().max().item() < 0.05 * expected.abs().max().item()


def test_int8_weights_are_quantized_in_blocks_of_rows_with_one_scale_per_row() -> None:
    weight = torch.randn(20_000, 16) * torch.linspace(0.01, 10, 20_000)[:, None]  # scales spanning 3 decades
    layer = fast_cpu.Int8WeightLinear(*round_to_nearest(weight), None)
    assert layer.scales.shape == (20_000,) and layer.weight_int8.abs().amax(dim=1).min().item() >= 126
    rebuilt = layer.weight_int8.float() * layer.scales.float()[:, None]
    assert ((rebuilt - weight).abs() <= layer.scales.float()[:, None] * 0.5001).all()  # within half a step


@pytest.mark.usefixtures("quantize_every_layer")
def test_quantized_model_streams_and_its_answer_parses(formatted_model_dir: Path, scheme: str) -> None:
    loaded = load_model(formatted_model_dir)
    assert loaded.fast_cpu is not None and loaded.fast_cpu.quantized and loaded.fast_cpu.scheme == scheme
    final = stream(loaded)
    assert final.parsed.format_ok and final.parsed.letter in {"A", "B", "C"}
    assert final.timing.new_tokens > 0


@pytest.mark.usefixtures("quantize_every_layer")
def test_quantized_greedy_answer_matches_full_precision(formatted_model_dir: Path, scheme: str) -> None:
    """The warm-started tiny model has peaked logits: a faithful scheme keeps every greedy token."""
    reference = stream(load_model(formatted_model_dir, fast_cpu=False))
    fast = stream(load_model(formatted_model_dir))
    assert fast.text == reference.text


@pytest.mark.usefixtures("quantize_every_layer")
def test_missing_int8_kernel_falls_back_to_bf16_and_says_so(
    formatted_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def missing(*args, **kwargs):
        raise RuntimeError("_weight_int8pack_mm: not implemented for this CPU")

    monkeypatch.setattr(fast_cpu, "choose_scheme", lambda flags=None: fast_cpu.BF16_INT8)
    monkeypatch.setattr(torch, "_weight_int8pack_mm", missing)
    loaded = load_model(formatted_model_dir)
    assert all(
        type(layer) is nn.Linear and layer.weight.dtype == torch.bfloat16
        for layer in language_linears(loaded).values()
    )
    assert loaded.describe()["quantization"].startswith("none (bf16: RuntimeError")


def test_large_vision_encoder_gets_the_smaller_cpu_image_budget(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fast_cpu, "LARGE_VISION_PARAMETERS", 0)
    assert load_model(tiny_model_dir).max_pixels == fast_cpu.CPU_MAX_PIXELS == 256 * 28 * 28
    assert load_model(tiny_model_dir, max_pixels=64 * 28 * 28).max_pixels == 64 * 28 * 28  # asked for: kept
    assert load_model(tiny_model_dir, fast_cpu=False).max_pixels == RECIPE_MAX_PIXELS


def test_small_vision_encoder_keeps_the_checkpoint_budget(tiny_model: LoadedModel) -> None:
    assert tiny_model.max_pixels == RECIPE_MAX_PIXELS


def test_threads_follow_affinity_and_cgroup_quota(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(fast_cpu.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(fast_cpu, "_core_of", lambda cpu: str(cpu // 2))  # two hyper-threads per core
    monkeypatch.setattr(fast_cpu, "_cgroup_cpu_quota", lambda: None)
    assert fast_cpu.available_cores() == 2
    monkeypatch.setattr(fast_cpu, "_cgroup_cpu_quota", lambda: 1)
    assert fast_cpu.configure_threads() == 1 == torch.get_num_threads()


def test_explicit_omp_num_threads_is_respected(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(fast_cpu, "available_cores", lambda: 8)
    assert fast_cpu.configure_threads() == 1


def test_cgroup_v2_quota_is_read_in_whole_cpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cpu_max = tmp_path / "cpu.max"
    real_path = fast_cpu.Path
    monkeypatch.setattr(
        fast_cpu, "Path", lambda name: cpu_max if name == "/sys/fs/cgroup/cpu.max" else real_path(name)
    )
    cpu_max.write_text("200000 100000\n")
    assert fast_cpu._cgroup_cpu_quota() == 2
    cpu_max.write_text("max 100000\n")
    assert fast_cpu._cgroup_cpu_quota() is None


def test_attention_is_sdpa_on_cpu_and_flash_attention_on_cuda_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_attention(torch.device("cpu"), torch.float32) == "sdpa"
    monkeypatch.setattr(
        "medvlm.model.importlib.util.find_spec", lambda name: object() if name == "flash_attn" else None
    )
    assert default_attention(torch.device("cuda"), torch.bfloat16) == "flash_attention_2"
    assert default_attention(torch.device("cuda"), torch.float32) == "sdpa"
    monkeypatch.setattr("medvlm.model.importlib.util.find_spec", lambda name: None)
    assert default_attention(torch.device("cuda"), torch.bfloat16) == "sdpa"


def test_cli_switch_turns_the_fast_path_off(
    tiny_model_dir: Path, sample_png: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from medvlm.cli import main

    args = [
        "ask",
        "--model",
        str(tiny_model_dir),
        "--image",
        str(sample_png),
        "--question",
        "Which?",
        "--option",
        "a",
        "--option",
        "b",
        "--max-new-tokens",
        "3",
        "--json",
    ]
    assert main([*args, "--no-fast-cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["model"]["fast_cpu"] is False
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["model"]["fast_cpu"] is True


@pytest.mark.usefixtures("quantize_every_layer")
def test_a_greedy_answer_streams_the_same_tokens_with_prompt_lookup_in_fewer_passes(
    formatted_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The streamed answer is plain greedy's, token for token, and drafts from the prompt were accepted.

    (``bf16-int8``, whose int8 kernel keeps rows apart on every CPU; ``fp32-bf16`` is held to the same on a
    trained model under the AVX2 kernels it runs with, in ``test_trained_fidelity.py``.)
    """
    from medvlm.streaming import prepare_inputs

    monkeypatch.setattr(fast_cpu, "choose_scheme", lambda flags=None: fast_cpu.BF16_INT8)
    loaded = load_model(formatted_model_dir)
    assert loaded.fast_cpu.prompt_lookup_tokens == fast_cpu.PROMPT_LOOKUP_TOKENS[fast_cpu.BF16_INT8] > 0
    with torch.inference_mode():
        inputs = prepare_inputs(loaded, [IMAGE], ["Which modality?"], [OPTIONS])
        plain = loaded.model.generate(**inputs, max_new_tokens=40, do_sample=False)
    expected = loaded.processor.tokenizer.decode(plain[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    passes = []
    hook = loaded.model.get_decoder().register_forward_hook(lambda *args: passes.append(1))
    try:
        final = stream(loaded)
    finally:
        hook.remove()
    assert final.text == expected and final.parsed.format_ok
    assert len(passes) < final.timing.new_tokens  # one pass per token without speculation (the prefill is one)


@pytest.mark.usefixtures("quantize_every_layer")
def test_prompt_lookup_stays_off_where_the_kernels_round_rows_by_their_batch(
    formatted_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Drafts would not be verified exactly there: the answer is decoded one token per pass, as without the path."""
    from medvlm.streaming import speculation

    monkeypatch.setattr(fast_cpu, "rows_are_independent", lambda layer, rows, dtype: rows < 3)
    loaded = load_model(formatted_model_dir)
    assert loaded.fast_cpu.quantized and loaded.fast_cpu.prompt_lookup_tokens == 0
    assert speculation(loaded, GenerationSettings()) == {}
    assert stream(loaded).parsed.format_ok


def test_cpu_attention_gives_each_decoding_row_its_own_step_and_leaves_the_vision_encoder_whole() -> None:
    """A verification's rows each see the keys up to themselves, as one decoding step would; a non-causal
    module's few rows (a small image in the vision encoder) see every key."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    torch.manual_seed(0)
    query, key, value = torch.randn(1, 2, 4, 8), torch.randn(1, 2, 10, 8), torch.randn(1, 2, 10, 8)
    causal, vision = nn.Module(), nn.Module()
    vision.is_causal = False
    rows, _ = fast_cpu.cpu_attention(causal, query, key, value, None, scaling=8**-0.5)
    for row in range(4):
        seen = 10 - 4 + row + 1
        alone, _ = sdpa_attention_forward(
            causal, query[..., row : row + 1, :], key[..., :seen, :], value[..., :seen, :], None, scaling=8**-0.5
        )
        assert torch.equal(rows[:, row : row + 1], alone)
    whole, _ = fast_cpu.cpu_attention(vision, query, key, value, None, scaling=8**-0.5)
    expected, _ = sdpa_attention_forward(vision, query, key, value, None, scaling=8**-0.5)
    assert torch.allclose(whole, expected) and not torch.allclose(whole, rows)


@pytest.mark.usefixtures("quantize_every_layer")
def test_a_layer_the_int8_kernel_cannot_multiply_stays_as_it_is(tiny_model_dir: Path) -> None:
    """An input width that is not a multiple of 16 makes PyTorch's int8 kernel return garbage or crash: such a
    layer is left out of the fast path, and the rest is converted."""
    loaded = load_model(tiny_model_dir, fast_cpu=False)
    mlp = loaded.model.get_decoder().layers[0].mlp
    mlp.down_proj = nn.Linear(104, mlp.down_proj.out_features, bias=False)
    names = fast_cpu.quantizable_layers(loaded.model)
    assert not any(name.endswith("layers.0.mlp.down_proj") for name in names)
    assert any(name.endswith("layers.0.mlp.up_proj") for name in names) and len(names) == 2 * 7 + 1 - 1
