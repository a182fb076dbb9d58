"""A campaign made from a dataset plus a model: the model's own answers, generated once, resumable."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from helpers import model_output
from medvlm.annotations import AnnotationError, AnnotationStore, Review
from medvlm.annotations.campaigns import Campaigns
from medvlm.campaign_generation import generate_answers, plan_campaign
from medvlm.cli import build_parser, main
from medvlm.errors import MedVLMError
from medvlm.model import LoadedModel, load_model
from medvlm.review_stats import flag_rates
from medvlm.streaming import GenerationSettings, answer_batch
from medvlm.vqa_records import VQARecord, load_records

FAST = GenerationSettings(max_new_tokens=24)
TYPES = ["Disease Diagnosis", "Anatomy Identification", "Disease Diagnosis", "Modality Recognition", "Lesion Grading"]


@pytest.fixture(scope="module")
def formatted(formatted_model_dir: Path) -> LoadedModel:
    return load_model(formatted_model_dir)


def dataset(folder: Path, count: int = 5) -> Path:
    """This project's plain JSONL format: PNG images, a modality and a question type per row."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for index in range(count):
        Image.new("L", (48 + 8 * index, 40), 30 * index).save(folder / f"scan{index}.png")
        lines.append(
            {
                "id": f"row-{index}",
                "image": f"scan{index}.png",
                "question": f"Question {index}: which finding?",
                "options": ["Effusion", "Nodule", "Normal"],
                "answer": "ABC"[index % 3],
                "modality": "CT" if index % 2 else "X-Ray",
                "question_type": TYPES[index],
            }
        )
    path = folder / "questions.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def records(folder: Path, count: int = 5) -> list[VQARecord]:
    loaded, report = load_records(dataset(folder, count))
    assert report.loaded == count
    return loaded


def plan(campaigns: Campaigns, name: str, rows: list[VQARecord], model: LoadedModel, **kwargs):
    return plan_campaign(
        campaigns,
        name,
        rows,
        loaded=model,
        settings=FAST,
        batch_size=2,
        reviews_per_output=2,
        created_by="admin",
        **kwargs,
    )


def test_a_generated_campaign_holds_the_models_own_answers_and_the_datasets_labels(
    tmp_path: Path, formatted: LoadedModel
) -> None:
    rows = records(tmp_path / "data")
    campaigns = Campaigns(AnnotationStore(tmp_path / "store"))
    plan(campaigns, "From data", rows, formatted)
    with pytest.raises(AnnotationError, match=r"still being generated \(0 of 5 so far\)"):
        campaigns.next_output("From data", "Dr A")

    seen = []
    generation = generate_answers(campaigns, "From data", formatted, progress=lambda done, total: seen.append(done))
    assert seen == [0, 2, 4, 5] and generation.done and generation.planned == 5

    # Each stored completion is what the model writes for that question alone (the tokens, not a stand-in).
    for position, row in enumerate(rows, start=1):
        output_id = campaigns.output_ids("From data")[position - 1]
        stored = campaigns.store.output(output_id)
        image = Image.open(row.image_path).convert("RGB")
        (alone,) = answer_batch(formatted, [image], [row.question], [list(row.options)], FAST)
        assert stored.completion == alone.completion and stored.letter == alone.parsed.letter
        assert stored.question_type == TYPES[position - 1] and stored.image_metadata["modality"] == row.modality
        assert stored.settings["max_new_tokens"] == 24 and stored.model["model"] == formatted.describe()["model"]

    # Reviewers now get them, with the dataset's correct answer; their reviews group by question type.
    while (assignment := campaigns.next_output("From data", "Dr A")) is not None:
        assert assignment.output.correct_answer == rows[assignment.position - 1].answer
        flags = ("contradiction",) if assignment.output.question_type == "Disease Diagnosis" else ("sound",)
        campaigns.submit("From data", "Dr A", assignment.output.output_id, Review("Dr A", flags))
    rates = flag_rates(campaigns.annotations("From data"), by="question_type")
    by_type = {(row.question_type, row.flag): row.rate for row in rates.itertuples()}
    assert by_type[("Disease Diagnosis", "contradiction")] == 1.0 and by_type[("Lesion Grading", "sound")] == 1.0


def test_an_interrupted_generation_resumes_and_answers_as_an_uninterrupted_one(
    tmp_path: Path, formatted: LoadedModel
) -> None:
    rows = records(tmp_path / "data")
    campaigns = Campaigns(AnnotationStore(tmp_path / "store"))
    plan(campaigns, "Whole", rows, formatted)
    generate_answers(campaigns, "Whole", formatted)

    plan(campaigns, "Cut", rows, formatted)
    asked: list[str] = []

    def dies_on_the_second_batch(loaded, images, questions, options, settings, *, style):
        if asked:
            raise KeyboardInterrupt  # the operator's Ctrl+C, or a Space restarting
        asked.extend(questions)
        return answer_batch(loaded, images, questions, options, settings, style=style)

    with pytest.raises(KeyboardInterrupt):
        generate_answers(campaigns, "Cut", formatted, answer=dies_on_the_second_batch)
    assert campaigns.generation("Cut").answered == 2 and len(asked) == 2  # the first batch is stored
    first_two = campaigns.output_ids("Cut")

    # A new process: only the store is left. It answers the three questions that have none.
    resumed = Campaigns(AnnotationStore(tmp_path / "store"))
    counted: list[str] = []

    def counting(loaded, images, questions, options, settings, *, style):
        counted.extend(questions)
        return answer_batch(loaded, images, questions, options, settings, style=style)

    assert resumed.generation("Cut").done is False
    assert generate_answers(resumed, "Cut", formatted, answer=counting).done
    assert counted == [row.question for row in rows[2:]]
    assert resumed.output_ids("Cut")[:2] == first_two
    completions = {
        name: [resumed.store.output(output_id).completion for output_id in resumed.output_ids(name)]
        for name in ("Whole", "Cut")
    }
    assert completions["Cut"] == completions["Whole"]
    assert generate_answers(resumed, "Cut", formatted, answer=counting).answered == 5 and len(counted) == 3


def test_only_the_planned_model_continues_a_campaign(tmp_path: Path, formatted: LoadedModel, tiny_model) -> None:
    campaigns = Campaigns(AnnotationStore(tmp_path / "store"))
    plan(campaigns, "Planned", records(tmp_path / "data", 2), formatted)
    with pytest.raises(MedVLMError, match="is answered by .*Load .* to continue it"):
        generate_answers(campaigns, "Planned", tiny_model)
    assert campaigns.generation("Planned").answered == 0
    campaigns.create("From a run", [model_output(0)], reviews_per_output=1, created_by="admin")
    with pytest.raises(MedVLMError, match="made from an evaluation run"):
        generate_answers(campaigns, "From a run", formatted)


def test_uploaded_images_stand_in_for_the_datasets_paths_and_unreadable_ones_stop_the_plan(
    tmp_path: Path, formatted: LoadedModel
) -> None:
    data = dataset(tmp_path / "data", 2)
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    (uploads / "scan0.png").write_bytes((tmp_path / "data" / "scan0.png").read_bytes())
    rows, report = load_records(data, image_files={"scan0.png": uploads / "scan0.png"})
    assert [row.image_path for row in rows] == [uploads / "scan0.png"]
    assert report.skipped["image not uploaded"] == 1 and report.first_example("image not uploaded") == "scan1.png"

    (uploads / "scan1.png").write_text("not an image")  # a text file renamed .png
    rows, _ = load_records(data, image_files={name: uploads / name for name in ("scan0.png", "scan1.png")},
                           check_images=False)  # fmt: skip
    campaigns = Campaigns(AnnotationStore(tmp_path / "store"))
    with pytest.raises(MedVLMError, match="Question row-1, image scan1.png: "):
        plan(campaigns, "Upload", rows, formatted)
    assert campaigns.all() == []  # nothing half-made


def test_planning_reads_and_stores_one_image_at_a_time(
    tmp_path: Path, formatted: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large dataset's images are never all in memory: each is stored before the next is read."""
    import medvlm.campaign_generation as generation

    events = []
    read, campaigns = generation.load_image, Campaigns(AnnotationStore(tmp_path / "store"))
    save = campaigns.store.save_image
    monkeypatch.setattr(generation, "load_image", lambda path: events.append("read") or read(path))
    monkeypatch.setattr(campaigns.store, "save_image", lambda image, sha: events.append("stored") or save(image, sha))
    plan(campaigns, "One at a time", records(tmp_path / "data", 3), formatted)
    assert events == ["read", "stored"] * 3
    assert campaigns.generation("One at a time").planned == 3


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    """Every flag of a command and of its subcommands."""
    found = set()
    for action in parser._actions:
        found.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= option_strings(sub)
    return found


def test_the_command_line_creates_generates_and_continues(tmp_path: Path, formatted_model_dir: Path) -> None:
    data = dataset(tmp_path / "data", 3)
    store = tmp_path / "store"

    def run(*argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(list(argv))
        return status, out.getvalue(), err.getvalue()

    status, out, err = run(
        "campaign", "create", "CLI round", "--data", str(data), "--model", str(formatted_model_dir),
        "--reviews-per-output", "2", "--max-new-tokens", "16", "--batch-size", "2", "--data-dir", str(store),
    )  # fmt: skip
    assert status == 0, err
    assert "Created campaign 'CLI round': 3 questions" in out and "all 3 answers stored" in out
    assert "Answering" in err  # the progress bar
    campaigns = Campaigns(AnnotationStore(store))
    assert campaigns.generation("CLI round").settings["max_new_tokens"] == 16
    assert len(campaigns.output_ids("CLI round")) == 3

    import medvlm.campaign_cli as campaign_cli

    def no_model(*args, **kwargs):
        raise AssertionError("a finished campaign loads no model")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(campaign_cli, "load_model_from", no_model)
        status, out, err = run("campaign", "generate", "CLI round", "--data-dir", str(store))
    assert status == 0 and "all 3 answers are stored already; nothing to generate" in out, err
    assert "Answering" not in err  # no progress bar of 0 questions
    status, out, err = run("campaign", "create", "CLI round", "--data", str(data), "--data-dir", str(store),
                           "--model", str(formatted_model_dir), "--reviews-per-output", "2")  # fmt: skip
    assert status == 2 and "There is already a campaign called 'CLI round'" in err

    elsewhere = ["--data-root", str(tmp_path / "elsewhere")]  # no image of the dataset is there
    status, out, err = run("campaign", "create", "Missing", "--data", str(data), "--data-dir", str(store),
                           *elsewhere, "--model", str(formatted_model_dir), "--reviews-per-output", "1")  # fmt: skip
    assert status == 2 and "Pass --data-root with the folder" in err and "--data_root" not in err, err
    flags = option_strings(build_parser())
    hinted = set(re.findall(r"--[a-z][a-z_-]+", err))
    assert hinted <= flags | {"--repo-type"}, hinted - flags  # every flag the hint names exists (hf's own aside)
