"""The evaluator on the tiny models: numbers come from the model's own parsed text, batching changes nothing."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from medvlm.model import LoadedModel, load_model
from medvlm.parsing import NO_ANSWER_TAG
from medvlm.prompt import LETTERS
from medvlm.streaming import GenerationSettings
from medvlm.vqa_records import VQARecord, load_records
from train.evaluate import EvaluationResult, evaluate, main, write_outputs

SUBSETS = [
    "MR (Mag-netic Resonance Imaging)",
    "MR (Mag-netic Resonance Imaging)",
    "CT(Computed Tomography)",
    "CT(Computed Tomography)",
    "X-Ray",
    "X-Ray",
]
QUESTIONS = [
    ("What is apparent in this image?", ["Hemorrhage", "Acute infarct", "Abscess formation", "Chronic infarct"]),
    ("Which organ is shown?", ["Liver", "Brain", "Knee"]),
    ("Is there a fracture?", ["Yes", "No"]),
    ("Which imaging modality was used?", ["CT", "MRI", "X-Ray", "Ultrasound"]),
    ("What is the most likely diagnosis?", ["Normal", "Infarct", "Hemorrhage", "Abscess", "Tumor"]),
    ("Which side is affected?", ["Left", "Right"]),
]
FAST = GenerationSettings(max_new_tokens=32)


@pytest.fixture(scope="module")
def formatted(formatted_model_dir: Path) -> LoadedModel:
    return load_model(formatted_model_dir)


def _medvlm_r1_file(folder: Path, solutions: list[str]) -> Path:
    """A MedVLM-R1-format evaluation file; images of different sizes, so batches need padding."""
    rows = []
    for index, ((question, options), subset, solution) in enumerate(zip(QUESTIONS, SUBSETS, solutions, strict=True)):
        image = folder / "images" / f"case{index}.png"
        image.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (56 + 28 * index, 56 + 14 * (index % 3)), (index * 40, 90, 200 - index * 30)).save(image)
        problem = (
            question
            + "\n"
            + "\n".join(f"{letter}) {option}" for letter, option in zip(LETTERS, options, strict=False))
        )
        letter_index = LETTERS.index(solution)
        rows.append(
            {
                "image": [f"images/case{index}.png"],
                "problem": problem,
                "solution": solution,
                "question": question,
                "options": options,
                "answer": options[letter_index],
                "dataset": "OmniMedVQA",
                "subset": subset,
            }
        )
    path = folder / "MRI_CT_XRAY_dataset.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def _records(folder: Path, solutions: list[str] | None = None) -> list[VQARecord]:
    records, report = load_records(_medvlm_r1_file(folder, solutions or ["A"] * len(QUESTIONS)))
    assert report.loaded == len(QUESTIONS)
    return records


def test_scores_are_computed_from_the_models_own_answers(tmp_path: Path, formatted: LoadedModel) -> None:
    """(a) Solutions set to the model's own parsed answer on even rows and to another letter on odd rows.

    A first run learns what the model answers; the expected numbers are then counted by hand from
    those answers, so nothing but the model's text, parsed, can produce them. A row whose answer
    does not parse can only be wrong, whatever its solution.
    """
    probe = evaluate(formatted, _records(tmp_path / "probe"), batch_size=3, settings=FAST, progress=False)
    answered = [sample.parsed.letter for sample in probe.samples]
    assert sum(letter is not None for letter in answered[::2]) >= 2, [s.completion for s in probe.samples]

    solutions, expected = [], []
    for index, letter in enumerate(answered):
        right = letter is not None and index % 2 == 0
        offered = LETTERS[: len(QUESTIONS[index][1])]
        solutions.append(letter if right else next(other for other in offered if other != letter))
        expected.append(right)
    result = evaluate(formatted, _records(tmp_path / "scored", solutions), batch_size=3, settings=FAST, progress=False)

    assert [sample.parsed.letter for sample in result.samples] == answered
    assert [sample.correct for sample in result.samples] == expected
    short = {"MR (Mag-netic Resonance Imaging)": "MR", "CT(Computed Tomography)": "CT", "X-Ray": "X-Ray"}
    by_hand: dict[str, tuple[int, int]] = {}
    for subset, right in zip(SUBSETS, expected, strict=True):
        n, correct = by_hand.get(short[subset], (0, 0))
        by_hand[short[subset]] = (n + 1, correct + right)
    assert {name: (score.n, score.correct) for name, score in result.by_modality.items()} == by_hand
    assert {name: score.accuracy for name, score in result.by_modality.items()} == {
        name: c / n for name, (n, c) in by_hand.items()
    }
    overall = result.overall
    assert (overall.n, overall.correct, overall.accuracy) == (6, sum(expected), sum(expected) / 6)
    assert overall.format_ok == sum(sample.parsed.format_ok for sample in probe.samples)
    assert {name: (score.n, score.correct) for name, score in result.by_question_type.items()} == {
        "unknown": (6, sum(expected))
    }


def test_random_model_scores_zero_and_never_follows_the_format(tmp_path: Path, tiny_model: LoadedModel) -> None:
    """(b) Random weights write random words: no answer, no format, cut off at the token limit."""
    result = evaluate(
        tiny_model, _records(tmp_path), batch_size=4, settings=GenerationSettings(max_new_tokens=12), progress=False
    )
    assert (result.overall.correct, result.overall.accuracy, result.overall.format_compliance) == (0, 0.0, 0.0)
    assert all(sample.parsed.letter is None and sample.parsed.problem == NO_ANSWER_TAG for sample in result.samples)
    assert {(sample.stop_reason, sample.new_tokens) for sample in result.samples} == {("max_new_tokens", 12)}
    assert all(sample.completion.strip() for sample in result.samples)


@pytest.mark.parametrize("model_fixture", ["formatted", "tiny_model"])
def test_batched_and_one_at_a_time_generation_agree(
    tmp_path: Path, model_fixture: str, request: pytest.FixtureRequest
) -> None:
    """(c) Left padding: a question gets the same greedy completion in a batch of 4 as alone."""
    loaded = request.getfixturevalue(model_fixture)
    records = _records(tmp_path)
    batched = evaluate(loaded, records, batch_size=4, settings=FAST, progress=False)
    single = evaluate(loaded, records, batch_size=1, settings=FAST, progress=False)
    assert [s.completion for s in batched.samples] == [s.completion for s in single.samples]
    assert [s.parsed.letter for s in batched.samples] == [s.parsed.letter for s in single.samples]
    assert (batched.batch_size, single.batch_size) == (4, 1)


def test_sampling_settings_take_effect(tmp_path: Path, tiny_model: LoadedModel) -> None:
    records = _records(tmp_path)[:3]
    greedy = evaluate(
        tiny_model, records, batch_size=3, settings=GenerationSettings(max_new_tokens=12), progress=False
    )
    sampled = [
        evaluate(
            tiny_model,
            records,
            batch_size=3,
            settings=GenerationSettings(max_new_tokens=12, do_sample=True, seed=seed),
            progress=False,
        )
        for seed in (0, 0, 1)
    ]
    texts = [[s.completion for s in result.samples] for result in (greedy, *sampled)]
    assert texts[1] != texts[0]  # sampling is on
    assert texts[1] == texts[2]  # the seed is used
    assert texts[3] != texts[1]


def test_report_files_exist_and_parse(tmp_path: Path, formatted: LoadedModel) -> None:
    """(d) report.json, report.md and samples.jsonl, in the shape the app can import."""
    records = _records(tmp_path)
    result = evaluate(formatted, records, batch_size=6, settings=FAST, style="medvlm-exact", progress=False)
    paths = write_outputs(result, tmp_path / "out", data={"source": "synthetic"})
    report = json.loads(paths["report.json"].read_text())
    format_ok = sum(sample.parsed.format_ok for sample in result.samples)
    assert report["overall"] == {
        "n": 6,
        "correct": result.overall.correct,
        "format_ok": format_ok,
        "accuracy": result.overall.accuracy,
        "format_compliance": format_ok / 6,
    }
    assert report["format_compliance"] == format_ok / 6
    assert set(report["by_modality"]) == {"MR", "CT", "X-Ray"}
    assert report["settings"] == {**FAST.to_dict(), "prompt_style": "medvlm-exact", "batch_size": 6}
    assert report["model"] == formatted.describe() and report["model"]["random_weights"] is True
    assert report["data"] == {"source": "synthetic"}
    assert report["timing"]["samples_per_s"] > 0 and report["timing"]["new_tokens"] == sum(
        s.new_tokens for s in result.samples
    )

    markdown = paths["report.md"].read_text()
    assert "| **overall** | 6 |" in markdown and "## By modality" in markdown and "random test weights" in markdown

    lines = [json.loads(line) for line in paths["samples.jsonl"].read_text().splitlines()]
    assert [line["id"] for line in lines] == [record.id for record in records]
    first = lines[0]
    assert (
        first["image"] == str(records[0].image_path)
        and first["solution"] == first["correct_answer"] == records[0].answer
    )
    assert first["correct"] == (first["letter"] == first["solution"])
    assert first["prompt_style"] == "medvlm-exact" and first["settings"] == FAST.to_dict()

    # The pre-check hints: the library's function on each completion, counted per kind in the report.
    from medvlm.hints import reasoning_hints

    hints_of = lambda row: [hint.kind for hint in reasoning_hints(row["completion"], row["question"], row["options"])]  # noqa: E731
    expected = [hints_of(line) for line in lines]
    assert [line["hints"] for line in lines] == expected
    assert report["reasoning_hints"] == {
        kind: sum(kind in kinds for kinds in expected) for kind in ("contradiction", "superficial", "not_an_option")
    }
    assert f"superficial {report['reasoning_hints']['superficial']}" in markdown


def test_sample_lines_use_the_annotation_field_names(tmp_path: Path, formatted: LoadedModel) -> None:
    annotations = pytest.importorskip("medvlm.annotations")
    result = evaluate(formatted, _records(tmp_path)[:1], batch_size=1, settings=FAST, progress=False)
    line = result.samples[0].to_dict(model=result.model, settings=FAST.to_dict(), prompt_style="medvlm")
    shared = {
        "question",
        "options",
        "correct_answer",
        "completion",
        "reasoning",
        "answer_text",
        "letter",
        "format_ok",
        "problem",
        "stop_reason",
        "model",
        "settings",
        "prompt_style",
    }
    model_output_fields = {field.name for field in dataclasses.fields(annotations.ModelOutput)}
    assert shared <= model_output_fields and shared <= set(line)


def _jsonl_data(folder: Path) -> Path:
    """Our own format with question types, plus one row whose image is missing."""
    rows = []
    for index, ((question, options), modality) in enumerate(
        zip(QUESTIONS[:4], ["MRI", "CT", "CT", "xray"], strict=True)
    ):
        image = folder / f"{index}.png"
        Image.new("RGB", (60 + 10 * index, 60), (20 * index, 0, 0)).save(image)
        rows.append(
            {
                "id": f"q{index}",
                "image": image.name,
                "question": question,
                "options": options,
                "answer": "A",
                "modality": modality,
                "question_type": "Disease Diagnosis" if index % 2 else "Anatomy Identification",
            }
        )
    rows.append({**rows[0], "id": "lost", "image": "lost.png"})
    path = folder / "cases.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.mark.slow
def test_command_line_end_to_end(
    tmp_path: Path, formatted_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """(e) ``python -m train.evaluate`` from data file to report, through ``main``."""
    data = _jsonl_data(tmp_path)
    out = tmp_path / "report"
    status = main(
        [
            "--model",
            str(formatted_model_dir),
            "--data",
            str(data),
            "--batch-size",
            "2",
            "--max-new-tokens",
            "32",
            "--output-dir",
            str(out),
        ]
    )
    assert status == 0
    captured = capsys.readouterr()
    assert "Loaded 4 of 5 rows; skipped 1: missing image file (1)." in captured.err
    assert "Accuracy" in captured.out

    report = json.loads((out / "report.json").read_text())
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [s["id"] for s in samples] == ["q0", "q1", "q2", "q3"]
    correct = sum(s["letter"] == "A" for s in samples)
    assert report["overall"]["correct"] == correct and report["overall"]["skipped_rows"] == 1
    assert report["overall"]["accuracy_with_skipped_as_wrong"] == correct / 5
    assert {name: score["n"] for name, score in report["by_modality"].items()} == {"MR": 1, "CT": 2, "X-Ray": 1}
    assert {name: score["n"] for name, score in report["by_question_type"].items()} == {
        "Anatomy Identification": 2,
        "Disease Diagnosis": 2,
    }
    assert report["data"]["load_report"]["skipped"] == {"missing image file": 1}
    assert report["data"]["formats"] == ["jsonl"]
    assert report["settings"]["max_new_tokens"] == 32 and report["settings"]["batch_size"] == 2
    assert "Rows skipped while loading: 1" in (out / "report.md").read_text()

    sampled = tmp_path / "sampled"
    assert (
        main(
            [
                "--model",
                str(formatted_model_dir),
                "--data",
                str(data),
                "--max-new-tokens",
                "8",
                "--sample",
                "--temperature",
                "0.7",
                "--top-p",
                "0.9",
                "--seed",
                "3",
                "--output-dir",
                str(sampled),
            ]
        )
        == 0
    )
    settings: dict[str, Any] = json.loads((sampled / "report.json").read_text())["settings"]
    assert (
        settings["do_sample"],
        settings["temperature"],
        settings["top_p"],
        settings["seed"],
        settings["max_new_tokens"],
    ) == (True, 0.7, 0.9, 3, 8)


def test_command_line_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data", str(tmp_path / "missing.json"), "--output-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: No data file or folder")
    # Sampling values without --sample would be silently ignored by greedy decoding: refused instead.
    assert main(["--data", str(tmp_path), "--temperature", "0.5"]) == 2
    assert "only apply when sampling" in capsys.readouterr().err
    data = _jsonl_data(tmp_path)
    assert main(["--data", str(data), "--modality", "Dermoscopy", "--output-dir", str(tmp_path / "out")]) == 2
    assert "No question left to evaluate" in capsys.readouterr().err


def test_evaluation_result_of_nothing_is_empty() -> None:
    result = EvaluationResult(
        samples=[], model={"model": "m"}, settings=FAST, prompt_style="medvlm", batch_size=1, elapsed_s=0.0
    )
    assert (result.overall.n, result.overall.accuracy, result.by_modality, result.timing["samples_per_s"]) == (
        0,
        0.0,
        {},
        None,
    )


def test_the_report_counts_the_pre_check_hints_of_each_completion(tmp_path: Path) -> None:
    from medvlm.parsing import parse_completion
    from train.evaluate import SampleResult

    record = VQARecord(
        id="q1", image_path=tmp_path / "x.png", question="Which organ is shown?",
        options=("Liver", "Spleen", "Kidney"),
        answer="A", modality="CT", question_type="Anatomy Identification", source="jsonl",
    )  # fmt: skip
    completions = [
        "<think>The organ is bean-shaped and sits near the spine, so it is the spleen.</think><answer>A</answer>",
        "<think>This is a CT.</think><answer>A</answer>",
        "<think>A large homogeneous organ under the right hemidiaphragm with portal vessels entering it, "
        "typical of the liver.</think><answer>A</answer>",
    ]
    samples = [
        SampleResult(record, text, parse_completion(text, list(record.options), final=True), "eos", 20)
        for text in completions
    ]
    result = EvaluationResult(samples, {"model": "m"}, FAST, "medvlm", 1, 1.0)
    assert [sample.hints for sample in samples] == [["contradiction"], ["superficial"], []]
    assert result.to_report()["reasoning_hints"] == {"contradiction": 1, "superficial": 1, "not_an_option": 0}
    paths = write_outputs(result, tmp_path / "out")
    assert [json.loads(line)["hints"] for line in paths["samples.jsonl"].read_text().splitlines()] == [
        ["contradiction"], ["superficial"], []
    ]  # fmt: skip
    assert "contradiction 1, superficial 1, not an option 0" in paths["report.md"].read_text()
