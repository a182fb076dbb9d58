"""GPTQ for the fast path's int8 weights (``medvlm.gptq``): what it chooses, and that a model keeps its choice.

The decisive check is on a trained model (``test_trained_fidelity.py``); here, the algorithm's own
promise on one layer, the calibration, and the cache a 2B model's minutes of GPTQ are kept in.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image

from medvlm import fast_cpu, gptq
from medvlm.model import load_model
from medvlm.streaming import stream_completion
from medvlm.ui.config import AppConfig
from medvlm.ui.workbench import PREPARING_FAST_PATH, Workbench

IMAGE = Image.radial_gradient("L").resize((56, 56)).convert("RGB")


def correlated_inputs(rows: int, width: int, seed: int = 0) -> torch.Tensor:
    """Inputs whose features move together (the same few directions dominate every sample, as in hidden states),
    one of them large; ``seed`` draws other samples of the same kind."""
    directions = torch.randn(8, width, generator=torch.Generator().manual_seed(width))
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, 8, generator=generator) @ directions + 0.1 * torch.randn(rows, width, generator=generator)
    x[:, 3] *= 20  # an outlier feature
    return x


def rebuilt(weight_int8: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    return weight_int8.float() * steps.float()[:, None]


def test_gptq_moves_a_layers_outputs_less_than_rounding_each_weight() -> None:
    """Same int8 format and scales as rounding to nearest; the layer's outputs on unseen inputs of the same kind
    move far less, which is GPTQ's whole point (a trained model's answers follow the outputs, not the weights)."""
    weight = torch.randn(96, 256, generator=torch.Generator().manual_seed(1)) * 0.05
    calibration = correlated_inputs(512, 256)
    chosen, steps = gptq.gptq(weight, gptq.Hessian.of(calibration.T @ calibration))
    nearest, nearest_steps = gptq.round_to_nearest(weight)
    assert chosen.dtype == torch.int8 and chosen.abs().max() <= 127
    assert torch.equal(steps, nearest_steps) and torch.equal(steps, gptq.row_steps(weight))  # the kernel's scales
    assert not torch.equal(chosen, nearest)
    unseen = correlated_inputs(256, 256, seed=2)
    gptq_error = (unseen @ (rebuilt(chosen, steps) - weight).T).norm()
    nearest_error = (unseen @ (rebuilt(nearest, steps) - weight).T).norm()
    assert gptq_error < 0.5 * nearest_error, (gptq_error, nearest_error)


def test_inputs_never_seen_get_zero_weights_and_the_rest_stay_in_range() -> None:
    weight = torch.randn(32, 64)
    calibration = correlated_inputs(128, 64)
    calibration[:, 10] = 0  # an input that is always zero in calibration
    chosen, steps = gptq.gptq(weight, gptq.Hessian.of(calibration.T @ calibration))
    assert (chosen[:, 10] == 0).all()
    assert chosen.abs().max() <= 127 and (steps > 0).all()


def test_rows_are_quantized_in_chunks_with_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """The output head (151936 rows) is done a chunk of rows at a time: rows are independent given the Hessian."""
    weight = torch.randn(40, 48)
    calibration = correlated_inputs(96, 48)
    hessian = gptq.Hessian.of(calibration.T @ calibration)
    whole = gptq.gptq(weight, hessian)
    monkeypatch.setattr(gptq, "ROWS_AT_ONCE", 16)
    chunked = gptq.gptq(weight, hessian)
    assert torch.equal(whole[0], chunked[0]) and torch.equal(whole[1], chunked[1])


def test_a_float32_weight_is_not_changed_by_quantizing_it() -> None:
    weight = torch.randn(16, 32)
    original = weight.clone()
    calibration = correlated_inputs(64, 32)
    gptq.gptq(weight, gptq.Hessian.of(calibration.T @ calibration))
    assert torch.equal(weight, original)


def test_the_calibration_is_three_images_in_the_medvlm_prompt(tiny_model) -> None:
    """pydicom's bundled CT and MR images, at the fast path's image size, asked in the MedVLM-R1 wording."""
    inputs = gptq.calibration_inputs(tiny_model.processor)
    assert len(inputs) == len(gptq.CALIBRATION) == 3
    for batch, (_, question, _) in zip(inputs, gptq.CALIBRATION, strict=True):
        text = tiny_model.processor.tokenizer.decode(batch["input_ids"][0])
        assert question in text and "<think>" in text and "<answer>" in text
        assert "pixel_values" in batch and int(batch["image_grid_thw"].prod()) > 64  # a real image, not a thumbnail


@pytest.fixture
def int8_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fast_cpu, "MIN_QUANTIZED_WEIGHTS", 0)
    monkeypatch.setattr(fast_cpu, "choose_scheme", lambda flags=None: fast_cpu.BF16_INT8)


def int8_weights(loaded) -> dict[str, torch.Tensor]:
    return {
        name: module.weight_int8.clone()
        for name, module in loaded.model.named_modules()
        if isinstance(module, fast_cpu.Int8WeightLinear)
    }


@pytest.mark.usefixtures("int8_everywhere")
def test_the_next_load_reads_gptqs_choice_from_the_cache(
    formatted_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first load runs GPTQ and stores its int8 weights; the next one uses them without calibrating again."""
    monkeypatch.setenv("MEDVLM_CACHE", str(tmp_path))
    first = int8_weights(load_model(formatted_model_dir))
    stored = list((tmp_path / "gptq").glob("*.safetensors"))
    assert len(stored) == 1 and not list((tmp_path / "gptq").glob(".*partial"))
    nearest = int8_weights(load_nearest(formatted_model_dir))
    assert any(not torch.equal(first[name], nearest[name]) for name in first)  # GPTQ chose, not rounding

    def no_calibration(*args, **kwargs):
        raise AssertionError("GPTQ ran again although its choice was cached")

    monkeypatch.setattr(fast_cpu, "quantize_with_calibration", no_calibration)
    second = int8_weights(load_model(formatted_model_dir))
    assert second.keys() == first.keys() and all(torch.equal(second[name], first[name]) for name in first)


def load_nearest(directory: Path):
    """The same checkpoint's fast path with every weight rounded to nearest (no calibration)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("medvlm.model.calibration_inputs", lambda *args, **kwargs: [])
        return load_model(directory)


def test_cached_weights_are_aligned_for_the_int8_kernel(tmp_path: Path) -> None:
    """safetensors places tensors 8 bytes apart; PyTorch's int8 kernel reads aligned: a weight read straight from
    the file's mapping crashed the process on a decoding step of 4 or more rows (prompt lookup's verification)."""
    # odd row counts put the tensors after the first off a 64-byte boundary in the file (the kernel wants 32 | in)
    layers = {
        f"layer{i}": (torch.ones(63 + 2 * i, 96, dtype=torch.int8), torch.full((63 + 2 * i,), 0.01)) for i in range(6)
    }
    path = tmp_path / "gptq" / "odd.safetensors"
    gptq.write_cache(path, layers)
    cached = gptq.read_cache(path, list(layers))
    assert cached is not None
    for name, (weight_int8, scales) in cached.items():
        assert weight_int8.data_ptr() % 64 == 0 and scales.data_ptr() % 64 == 0, name
        rows = torch.ones(8, weight_int8.shape[1], dtype=torch.bfloat16)
        out = torch._weight_int8pack_mm(rows, weight_int8, scales.to(torch.bfloat16))
        assert torch.allclose(out.float(), torch.full_like(out.float(), weight_int8.shape[1] * 0.01), rtol=0.02)


@pytest.mark.usefixtures("int8_everywhere")
def test_a_cache_that_cannot_be_written_costs_only_the_next_load(
    formatted_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A full disk or a read-only cache folder: the model is still GPTQ's int8 model and says so; nothing half
    written is left behind."""
    (tmp_path / "gptq").write_text("a file where the cache folder would be")
    monkeypatch.setenv("MEDVLM_CACHE", str(tmp_path))
    loaded = load_model(formatted_model_dir)
    assert loaded.fast_cpu is not None and loaded.fast_cpu.quantized and int8_weights(loaded)
    assert loaded.describe()["quantization"].startswith("int8 weights (GPTQ)")
    assert "could not be cached" in caplog.text and "the next load runs it again" in caplog.text
    assert sorted(path.name for path in tmp_path.iterdir()) == ["gptq"]


def test_a_hessian_short_of_positive_definite_is_damped_more(monkeypatch: pytest.MonkeyPatch) -> None:
    """fp32 rounding can leave a damped Hessian without a Cholesky factor: GPTQ damps more rather than failing."""
    calibration = correlated_inputs(64, 32)
    cholesky, failures = torch.linalg.cholesky, []

    def once_not_positive_definite(matrix, *args, **kwargs):
        if not failures:
            failures.append(matrix)
            raise torch.linalg.LinAlgError("not positive definite")
        return cholesky(matrix, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "cholesky", once_not_positive_definite)
    hessian = gptq.Hessian.of(calibration.T @ calibration)
    assert len(failures) == 1 and torch.isfinite(hessian.spread).all()
    chosen, _ = gptq.gptq(torch.randn(8, 32), hessian)
    assert chosen.abs().max() <= 127


@pytest.mark.usefixtures("int8_everywhere")
@pytest.mark.parametrize("damage", ["garbage", "other layers"])
def test_a_damaged_or_foreign_cache_is_replaced_not_used(
    formatted_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    monkeypatch.setenv("MEDVLM_CACHE", str(tmp_path))
    expected = int8_weights(load_model(formatted_model_dir))
    [stored] = (tmp_path / "gptq").glob("*.safetensors")
    if damage == "garbage":
        stored.write_bytes(b"not a safetensors file")
    else:
        gptq.write_cache(stored, {"model.some_other_layer": (torch.zeros(2, 2, dtype=torch.int8), torch.ones(2))})
    again = int8_weights(load_model(formatted_model_dir))
    assert all(torch.equal(again[name], expected[name]) for name in expected)
    assert gptq.read_cache(stored, list(expected)) is not None  # rewritten with this model's layers


@pytest.fixture
def keep_thread_count() -> Iterator[None]:
    """The fast path sets torch's process-wide thread count; give the other tests theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("int8_everywhere", "keep_thread_count")
def test_the_app_answers_with_bf16_until_gptq_is_ready_then_with_int8(
    formatted_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first start does not wait minutes for GPTQ: the page serves the checkpoint's own bf16 and says so, every
    answer records which model gave it, and the fast path takes over by itself once ready; the next start has
    it at once, from the cache."""
    monkeypatch.setenv("MEDVLM_CACHE", str(tmp_path / "cache"))
    release = threading.Event()
    calibrate = fast_cpu.quantize_with_calibration

    def held_back(*args, **kwargs) -> None:
        release.wait(60)
        calibrate(*args, **kwargs)

    monkeypatch.setattr(fast_cpu, "quantize_with_calibration", held_back)
    config = AppConfig(model=str(formatted_model_dir), data_dir=tmp_path / "data", fidelity_check=False)
    bench = Workbench.start(config)
    try:
        assert bench.model is not None and bench.model.fast_path_pending and not int8_weights(bench.model)
        assert bench.model.dtype == torch.bfloat16
        assert PREPARING_FAST_PATH in bench.banner() and "being prepared (GPTQ" in bench.banner()
        meanwhile = list(stream_completion(bench.model, IMAGE, "Which modality?", ["CT", "MRI"]))[-1]
        assert meanwhile.parsed.format_ok
        assert bench.model.describe()["quantization"] == "none (bf16 while GPTQ prepares the int8 fast path)"
        release.set()
        bench.fast_path_builder.join(120)
        assert not bench.fast_path_builder.is_alive()
        assert bench.model.fast_cpu is not None and bench.model.fast_cpu.quantized and int8_weights(bench.model)
        assert bench.model.describe()["quantization"].startswith("int8 weights (GPTQ)")
        assert PREPARING_FAST_PATH not in bench.banner() and "CPU fast path: int8 weights" in bench.banner()
        after = list(stream_completion(bench.model, IMAGE, "Which modality?", ["CT", "MRI"]))[-1]
        assert after.text == meanwhile.text  # the warm-started tiny model's peaked logits: the same answer
    finally:
        bench.close()
    again = Workbench.start(config)
    try:
        assert again.fast_path_builder is None and again.model is not None and again.model.fast_cpu.quantized
        assert all(
            torch.equal(weight, int8_weights(bench.model)[name]) for name, weight in int8_weights(again.model).items()
        )
    finally:
        again.close()
