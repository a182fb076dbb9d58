"""The fidelity guard: the fast path checked against the bf16 model, the verdict kept, a bad scheme replaced."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medvlm import fast_cpu, fidelity
from medvlm.fidelity import FidelityGuard, FidelityVerdict
from medvlm.model import load_model


@pytest.fixture
def quantize_every_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tiny model's layers are below the size int8 pays off at: quantize them anyway."""
    monkeypatch.setattr(fast_cpu, "MIN_QUANTIZED_WEIGHTS", 0)


@pytest.fixture
def broken_int8(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 'fast path' that changes the model: its int8 layers add noise as large as their output."""
    forward = fast_cpu.Int8WeightLinear.forward

    def noisy(self, x):
        out = forward(self, x)
        return out + torch.randn_like(out) * out.abs().mean() * 3

    monkeypatch.setattr(fast_cpu.Int8WeightLinear, "forward", noisy)


@pytest.mark.usefixtures("quantize_every_layer")
def test_a_faithful_fast_path_agrees_with_bf16_on_the_probe(formatted_model_dir: Path) -> None:
    verdict = fidelity.check(str(formatted_model_dir), tokens=16)
    assert verdict.passed and verdict.tokens == 16 and verdict.agreeing >= 15
    assert verdict.cosine_mean > 0.99 and verdict.reference == "bf16" and verdict.scheme == fast_cpu.choose_scheme()
    assert verdict.summary().startswith(f"{verdict.scheme} agrees with bf16 on {verdict.agreeing}/16 tokens")


@pytest.mark.usefixtures("quantize_every_layer", "broken_int8")
def test_a_fast_path_that_changes_the_answers_fails_the_check(
    formatted_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fast_cpu, "choose_scheme", lambda flags=None: fast_cpu.BF16_INT8)
    verdict = fidelity.check(str(formatted_model_dir), tokens=16)
    assert not verdict.passed and verdict.agreeing < 0.9 * 16


def test_verdicts_round_trip_and_the_threshold_is_ninety_percent() -> None:
    verdict = FidelityVerdict("k", "m", "bf16-int8", "bf16", 32, 29, 0.999, 0.99, 1.0, "2026-12-01T00:00:00+00:00")
    assert verdict.passed and not FidelityVerdict(**{**json.loads(verdict.to_json()), "agreeing": 28}).passed
    assert FidelityVerdict.from_json(verdict.to_json()) == verdict


@pytest.mark.usefixtures("quantize_every_layer")
def test_the_guard_runs_once_keeps_the_verdict_and_replaces_a_bad_scheme(
    formatted_model_dir: Path, tmp_path: Path
) -> None:
    loaded = load_model(formatted_model_dir)
    calls, failures = [], []

    def runner(source: str, revision: str | None) -> FidelityVerdict:
        calls.append(source)
        return FidelityVerdict("x", source, "bf16-int8", "bf16", 32, 20, 0.9, 0.5, 1.0, "2026-12-01T00:00:00+00:00")

    guard = FidelityGuard(tmp_path, loaded, failures.append, runner=runner)
    assert "checking it against bf16" in guard.status()
    guard.start()
    guard.thread.join(30)
    assert calls == [str(formatted_model_dir)] and failures == [guard.verdict] and "20/32 tokens" in guard.status()
    assert json.loads(guard.path.read_text())["agreeing"] == 20 and guard.path.parent == tmp_path / "fidelity"

    again = FidelityGuard(tmp_path, loaded, failures.append, runner=lambda *args: pytest.fail("checked twice"))
    again.start()  # the stored verdict: no second check
    assert again.thread is None and again.verdict == guard.verdict and len(failures) == 2


@pytest.mark.slow
@pytest.mark.usefixtures("quantize_every_layer")
def test_the_child_process_reports_why_it_could_not_check(formatted_model_dir: Path, tmp_path: Path) -> None:
    """The real ``python -m medvlm.fidelity``: the tiny model's layers are too small for int8 in a fresh process."""
    loaded = load_model(formatted_model_dir)
    guard = FidelityGuard(tmp_path, loaded, lambda verdict: pytest.fail("no verdict, no fallback"))
    guard.start()
    guard.thread.join(300)
    assert guard.verdict is None and "did not apply" in (guard.error or "") and not guard.path.exists()
    assert "could not run" in guard.status()


@pytest.mark.usefixtures("quantize_every_layer")
def test_the_app_answers_with_full_precision_when_the_fast_path_fails_the_check(
    formatted_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medvlm.ui import AppConfig, Workbench

    bad = FidelityVerdict("x", "m", "bf16-int8", "bf16", 32, 12, 0.8, 0.2, 1.0, "2026-12-01T00:00:00+00:00")
    monkeypatch.setattr(fidelity, "run_in_child_process", lambda source, revision: bad)
    workbench = Workbench.start(AppConfig(model=str(formatted_model_dir), data_dir=tmp_path))
    try:
        assert workbench.model.fast_cpu is not None and workbench.model.fast_cpu.quantized
        workbench.fidelity.thread.join(120)
        assert workbench.model.fast_cpu is None  # replaced by the full-precision model
        banner = workbench.banner()
        assert "changed this model's answers (bf16-int8 agrees with bf16 on 12/32 tokens" in banner
        assert "full-precision model" in banner
    finally:
        workbench.close()
