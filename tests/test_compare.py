"""Two tiny checkpoints evaluated on the same questions, compared: the flips are the ones set up."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from medvlm.model import LoadedModel, load_model
from medvlm.prompt import LETTERS
from medvlm.streaming import GenerationSettings
from medvlm.vqa_records import load_records
from train.compare import main, mcnemar_exact
from train.evaluate import evaluate, write_outputs

pytestmark = pytest.mark.slow

FAST = GenerationSettings(max_new_tokens=24)
OPTIONS = ["Effusion", "Nodule", "Normal", "Mass"]
MODALITIES = ["CT", "MR", "CT", "X-Ray", "MR", "CT", "X-Ray", "CT", "MR", "CT", "X-Ray", "CT"]


@pytest.fixture(scope="module")
def trained(formatted_model_dir: Path) -> LoadedModel:
    """Answers in the format (always the same letter, as it happens: the known part of the flips)."""
    return load_model(formatted_model_dir)


def dataset(folder: Path, solutions: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for index, (modality, solution) in enumerate(zip(MODALITIES, solutions, strict=True)):
        Image.new("L", (40 + 6 * index, 44), 25 * index).save(folder / f"scan{index}.png")
        lines.append(
            {"id": f"q{index}", "image": f"scan{index}.png", "question": f"Case {index}: the finding?",
             "options": OPTIONS, "answer": solution, "modality": modality,
             "question_type": "Disease Diagnosis" if index % 2 else "Lesion Grading"}
        )  # fmt: skip
    path = folder / "questions.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def letters(model: LoadedModel, folder: Path) -> list[str | None]:
    records, _ = load_records(dataset(folder, ["A"] * len(MODALITIES)))
    return [sample.parsed.letter for sample in evaluate(model, records, settings=FAST, progress=False).samples]


def test_the_comparison_lists_the_flips_that_were_set_up_and_tests_them(
    tmp_path: Path, trained: LoadedModel, tiny_model: LoadedModel
) -> None:
    """The random checkpoint never answers (all wrong); the formatted one is right where the solution is its letter.

    Compared both ways round, every row set up with the formatted model's letter flips, in each direction.
    """
    said = letters(trained, tmp_path / "probe")
    assert all(letter is not None for letter in said), said
    # Half the rows get the formatted model's own letter (right), the others another letter (wrong).
    solutions = [
        letter if index % 2 == 0 else next(other for other in LETTERS[: len(OPTIONS)] if other != letter)
        for index, letter in enumerate(said)
    ]
    right = [letter == solution for letter, solution in zip(said, solutions, strict=True)]
    records, _ = load_records(dataset(tmp_path / "data", solutions))
    for name, model in (("random", tiny_model), ("formatted", trained)):
        write_outputs(evaluate(model, records, settings=FAST, progress=False), tmp_path / name)
    flipped = [f"q{index}" for index, is_right in enumerate(right) if is_right]

    for order, direction in ((("random", "formatted"), "wrong_to_right"), (("formatted", "random"), "right_to_wrong")):
        out = tmp_path / f"{order[0]}-vs-{order[1]}"
        assert main([str(tmp_path / order[0]), str(tmp_path / order[1]), "--output-dir", str(out)]) == 0
        report = json.loads((out / "comparison.json").read_text())
        other = "right_to_wrong" if direction == "wrong_to_right" else "wrong_to_right"
        assert [flip["id"] for flip in report["flips"][direction]] == flipped and report["flips"][other] == []
        assert report["mcnemar"]["p_value"] == mcnemar_exact(0, len(flipped)) == 2 / 2**6  # 6 flips, one way
        assert report["per_model"]["formatted"]["correct"] == sum(right) == len(flipped)
        assert (
            report["per_model"]["random"]["correct"] == 0 and report["per_model"]["random"]["format_compliance"] == 0
        )
        ct = [index for index, modality in enumerate(MODALITIES) if modality == "CT"]
        assert report["per_model"]["formatted"]["by_modality"]["CT"] == {
            "n": len(ct), "correct": sum(right[i] for i in ct), "accuracy": sum(right[i] for i in ct) / len(ct)
        }  # fmt: skip
    samples = [json.loads(line) for line in (tmp_path / "formatted" / "samples.jsonl").read_text().splitlines()]
    for flip in report["flips"]["right_to_wrong"]:
        index = int(flip["id"][1:])
        assert flip["formatted"]["completion"] == samples[index]["completion"]
        assert flip["correct_answer"] == solutions[index] == flip["formatted"]["letter"]
    markdown = (out / "comparison.md").read_text()
    assert f"Flips: {len(flipped)} right to wrong, 0 wrong to right" in markdown and "## By question type" in markdown


def test_runs_on_different_questions_or_without_samples_are_refused(tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), "--output-dir", str(tmp_path / "c")]) == 2
    assert "There is no samples.jsonl in" in capsys.readouterr().err
    for name, ids in (("a", ["q1"]), ("b", ["q2"])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "samples.jsonl").write_text(
            "".join(
                json.dumps(
                    {
                        "id": i,
                        "image": "x.png",
                        "question": "Q?",
                        "options": ["A", "B"],
                        "completion": "",
                        "correct": False,
                        "model": {"model": name},
                    }
                )
                + "\n"
                for i in ids
            )  # fmt: skip
        )
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), "--output-dir", str(tmp_path / "c")]) == 2
    assert "share no question id" in capsys.readouterr().err


def test_evaluate_with_a_compare_model_writes_both_runs_and_their_comparison(
    tmp_path: Path, formatted_model_dir: Path, tiny_model_dir: Path
) -> None:
    from train.evaluate import main as evaluate_main

    data = dataset(tmp_path / "data", ["B"] * len(MODALITIES))
    status = evaluate_main(
        ["--data", str(data), "--model", str(tiny_model_dir), "--compare_model", str(formatted_model_dir),
         "--max_new_tokens", "24", "--output_dir", str(tmp_path / "out")]
    )  # fmt: skip
    assert status == 0
    report = json.loads((tmp_path / "out" / "comparison.json").read_text())
    names = [tiny_model_dir.name, formatted_model_dir.name]
    assert list(report["models"]) == names and report["questions"] == len(MODALITIES)
    for name in names:
        run = json.loads((tmp_path / "out" / name / "report.json").read_text())
        assert run["overall"]["correct"] == report["per_model"][name]["correct"]
    assert report["per_model"][names[0]]["correct"] == 0  # the random model never answers
