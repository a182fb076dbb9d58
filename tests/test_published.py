"""The wording each model is asked in by default: recorded by training, known for the published ids."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from medvlm.metadata import read_metadata, write_metadata
from medvlm.model import load_model
from medvlm.prompt import PromptStyle
from medvlm.published import DEFAULT_MODEL_ID, model_prompt_style


def test_the_published_model_is_asked_in_the_words_it_was_evaluated_with() -> None:
    style, reason = model_prompt_style(DEFAULT_MODEL_ID)
    assert style is PromptStyle.MEDVLM_EXACT and "paper" in reason
    assert model_prompt_style("Qwen/Qwen2-VL-2B-Instruct")[0] is PromptStyle.MEDVLM


def test_a_trained_checkpoint_is_asked_in_the_words_it_was_trained_with() -> None:
    assert model_prompt_style("outputs/run", {"data": {"prompt_style": "no-think"}})[0] is PromptStyle.NO_THINK
    assert model_prompt_style("outputs/run", {"data": {"prompt_style": "unknown"}})[0] is PromptStyle.MEDVLM


@pytest.fixture
def no_think_checkpoint(tiny_model_dir: Path, tmp_path: Path) -> Path:
    copy = Path(shutil.copytree(tiny_model_dir, tmp_path / "no-think-run"))
    write_metadata(copy, {**read_metadata(copy), "data": {"prompt_style": "no-think"}})  # as train.grpo records it
    return copy


def test_app_cli_and_evaluation_default_to_the_recorded_wording(
    no_think_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from medvlm.annotations import AnnotationStore
    from medvlm.cli import main as cli_main
    from medvlm.ui import AppConfig, Workbench
    from train.evaluate import main as evaluate_main

    loaded = load_model(no_think_checkpoint)
    assert loaded.prompt_style is PromptStyle.NO_THINK
    bench = Workbench(
        AppConfig(model=str(no_think_checkpoint)), model=loaded, store=AnnotationStore(tmp_path / "data")
    )
    assert bench.default_style() is PromptStyle.NO_THINK and "no-think wording" in bench.banner()

    image = tmp_path / "scan.png"
    from PIL import Image

    Image.new("RGB", (56, 56), (200, 200, 200)).save(image)
    assert (
        cli_main(
            [
                "ask",
                "--model",
                str(no_think_checkpoint),
                "--image",
                str(image),
                "--question",
                "Which?",
                "--option",
                "A",
                "--option",
                "B",
                "--max-new-tokens",
                "4",
            ]
        )
        == 0
    )
    assert "Prompt wording: no-think, the wording it was trained with" in capsys.readouterr().err

    data = tmp_path / "data.jsonl"
    data.write_text(
        json.dumps({"id": "q", "image": image.name, "question": "Which?", "options": ["CT", "MRI"], "answer": "A"})
        + "\n"
    )
    assert (
        evaluate_main(
            [
                "--model",
                str(no_think_checkpoint),
                "--data",
                str(data),
                "--max_new_tokens",
                "4",
                "--output_dir",
                str(tmp_path / "eval"),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "eval" / "report.json").read_text())["settings"]["prompt_style"] == "no-think"
    assert "Prompt wording: no-think" in capsys.readouterr().err
