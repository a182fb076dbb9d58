"""Reading every published VQA format into VQARecords, skipping bad rows with reasons, and the GRPO dataset."""

from __future__ import annotations

import json
import shutil
from io import BytesIO
from pathlib import Path
from typing import Any

import datasets
import pytest
from PIL import Image

from helpers import model_output
from medvlm.parsing import solution_letter
from medvlm.prompt import build_messages
from medvlm.vqa_records import (
    CANONICAL_MODALITIES,
    DatasetError,
    LoadReport,
    RecordSource,
    VQARecord,
    detect_format,
    load_records,
    normalize_modality,
    split_inline_options,
)
from train.data import image_overlap, to_grpo_dataset


def _png(path: Path, shade: int = 128, size: tuple[int, int] = (40, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (shade, 255 - shade, shade // 2)).save(path)
    return path


def _png_bytes(shade: int) -> bytes:
    buffer = BytesIO()
    Image.new("RGB", (24, 24), (shade, shade, shade)).save(buffer, format="PNG")
    return buffer.getvalue()


def _write_json(path: Path, rows: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def _write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _huatuo_row(image: str, subset: str, answer: str = "Chronic infarct", **fields: Any) -> dict[str, Any]:
    return {
        "question": "What is apparent in this image?",
        "options": ["Hemorrhage", "Acute infarct", "Abscess formation", "Chronic infarct"],
        "answer": answer,
        "image": [image],
        "dataset": "OmniMedVQA",
        "subset": subset,
        **fields,
    }


# -- names -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, canonical",
    [
        ("MR (Mag-netic Resonance Imaging)", "MR"),
        ("MRI", "MR"),
        ("mri", "MR"),
        ("Magnetic Resonance Imaging (MRI)", "MR"),
        ("CT(Computed Tomography)", "CT"),
        ("ct", "CT"),
        ("X-Ray", "X-Ray"),
        ("xray", "X-Ray"),
        ("CR", "X-Ray"),
        ("DX", "X-Ray"),
        ("US", "Ultrasound"),
        ("ultrasound", "Ultrasound"),
        ("Fundus Photography", "Fundus"),
        ("OCT (Optical Coherence Tomography", "OCT"),
        ("OCT (Optical Coherence Tomography)", "OCT"),
        ("Microscopy Images", "Microscopy"),
        ("Dermoscopy", "Dermoscopy"),
        (" dermoscopy ", "Dermoscopy"),
    ],
)
def test_normalize_modality(name: str, canonical: str) -> None:
    assert normalize_modality(name) == canonical
    assert canonical in CANONICAL_MODALITIES


@pytest.mark.parametrize("name", [None, "", "Endoscopy", "Basic Medical Science"])
def test_normalize_modality_unknown(name: str | None) -> None:
    assert normalize_modality(name) is None


@pytest.mark.parametrize(
    "solution, letter",
    [
        ("C", "C"),
        (" c ", "C"),
        ("<answer> C </answer>", "C"),
        ("<answer>J</answer>", "J"),
        ("CD", None),
        ("K", None),
        ("", None),
        (None, None),
    ],
)
def test_solution_letter(solution: str | None, letter: str | None) -> None:
    assert solution_letter(solution) == letter


@pytest.mark.parametrize(
    "problem, question, options",
    [
        (
            "What imaging technique is employed for obtaining this image? A)Mammogram, B)PET, C)CT, D)Fluoroscopy",
            "What imaging technique is employed for obtaining this image?",
            ["Mammogram", "PET", "CT", "Fluoroscopy"],
        ),
        (
            "Which region is abnormal? A)Lung, left lower lobe, B)Liver, C)Brain, right hemisphere, D)Knee",
            "Which region is abnormal?",
            ["Lung, left lower lobe", "Liver", "Brain, right hemisphere", "Knee"],
        ),
        ("Is lesion A) or B) larger? A) Yes, B) No", "Is lesion A) or B) larger?", ["Yes", "No"]),
        ("What is apparent?\nA) Hemorrhage\nB) Acute infarct", "What is apparent?", ["Hemorrhage", "Acute infarct"]),
    ],
)
def test_split_inline_options(problem: str, question: str, options: list[str]) -> None:
    assert split_inline_options(problem) == (question, options)


@pytest.mark.parametrize("problem", ["What is shown?", "Only one: A)Liver", "A)Liver B)Brain"])
def test_split_inline_options_without_a_block(problem: str) -> None:
    assert split_inline_options(problem) is None


# -- formats ---------------------------------------------------------------------------------------


def test_huatuo_bundle_answer_text_becomes_its_letter_and_subset_selects(tmp_path: Path) -> None:
    _png(tmp_path / "images" / "brain.png")
    _png(tmp_path / "images" / "chest.png", shade=10)
    data = _write_json(
        tmp_path / "medical_multimodel_evaluation_data.json",
        [
            _huatuo_row("images/brain.png", "MR (Mag-netic Resonance Imaging)"),
            _huatuo_row("images/chest.png", "CT(Computed Tomography)", answer="acute  INFARCT"),
            _huatuo_row("images/chest.png", "Basic Medical Science", dataset="MMMU"),
        ],
    )
    records, report = load_records(data)
    assert [(r.answer, r.modality, r.source) for r in records] == [
        ("D", "MR", "huatuo"),
        ("B", "CT", "huatuo"),
        ("D", None, "huatuo"),
    ]
    assert records[0] == VQARecord(
        id="medical_multimodel_evaluation_data:0",
        image_path=(tmp_path / "images" / "brain.png").resolve(),
        question="What is apparent in this image?",
        options=("Hemorrhage", "Acute infarct", "Abscess formation", "Chronic infarct"),
        answer="D",
        modality="MR",
        question_type=None,
        source="huatuo",
        extra={"dataset": "OmniMedVQA", "subset": "MR (Mag-netic Resonance Imaging)"},
    )
    assert report.loaded == 3 and not report.skipped

    mri, report = load_records(data, subset="MR (Mag-netic Resonance Imaging)")
    assert [r.modality for r in mri] == ["MR"]
    assert report.not_selected == 2
    assert report.summary() == "Loaded 1 of 1 rows; 2 rows outside the selected subset/modality were not considered."


def test_medvlm_r1_takes_the_letter_from_solution(tmp_path: Path) -> None:
    _png(tmp_path / "images" / "brain002206.png")
    row = {
        "image": ["images/brain002206.png"],
        "problem": "What is apparent in this image?\nA) Hemorrhage\nB) Acute infarct\nC) Abscess formation\nD) "
        "Chronic infarct",
        "solution": "D",
        "question": "What is apparent in this image?",
        "options": ["Hemorrhage", "Acute infarct", "Abscess formation", "Chronic infarct"],
        "answer": "Chronic infarct",
        "dataset": "OmniMedVQA",
        "subset": "X-Ray",
    }
    data = _write_json(
        tmp_path / "MRI_CT_XRAY_300each_dataset.json", [row, {**row, "solution": "B", "answer": "not an option"}]
    )
    records, _ = load_records(data)
    assert [(r.answer, r.modality, r.source) for r in records] == [
        ("D", "X-Ray", "medvlm-r1"),
        ("B", "X-Ray", "medvlm-r1"),
    ]
    assert load_records(data, format="medvlm-r1")[0] == records


def test_med_r1_splits_read_modality_and_question_type_from_the_file_name(tmp_path: Path) -> None:
    _png(tmp_path / "Images" / "Chest CT Scan" / "test" / "000139 (9).png")
    row = {
        "image": "Images/Chest CT Scan/test/000139 (9).png",
        "problem": "What imaging technique is employed for obtaining this image? A)Mammogram, B)PET, C)CT, "
        "D)Fluoroscopy",
        "solution": "<answer> C </answer>",
    }
    by_modality = _write_json(tmp_path / "Splits" / "modality" / "test" / "CT(Computed Tomography)_test.json", [row])
    by_type = _write_json(tmp_path / "Splits" / "question_type" / "test" / "Modality Recognition_test.json", [row])

    (record,), _ = load_records(by_modality, data_root=tmp_path)
    assert (record.question, record.options, record.answer) == (
        "What imaging technique is employed for obtaining this image?",
        ("Mammogram", "PET", "CT", "Fluoroscopy"),
        "C",
    )
    assert (record.modality, record.question_type, record.source) == ("CT", None, "med-r1")
    assert record.extra == {"subset": "CT(Computed Tomography)"}
    assert record.image_path == (tmp_path / "Images" / "Chest CT Scan" / "test" / "000139 (9).png").resolve()

    (record,), _ = load_records(by_type, data_root=tmp_path)
    assert (record.modality, record.question_type) == (None, "Modality Recognition")

    assert load_records(by_modality, data_root=tmp_path, subset="CT(Computed Tomography)")[1].loaded == 1


def test_own_jsonl_format_keeps_ids_and_extra_fields(tmp_path: Path) -> None:
    _png(tmp_path / "images" / "knee.png")
    data = _write_jsonl(
        tmp_path / "cases.jsonl",
        [
            {
                "id": "case-17",
                "image": "images/knee.png",
                "question": "Which structure is torn?",
                "options": ["ACL", "PCL"],
                "answer": "b",
                "modality": "MRI",
                "question_type": "Anatomy Identification",
                "site": "Basel",
            },
            {
                "image": str((tmp_path / "images" / "knee.png").resolve()),
                "question": "Which view?",
                "options": ["Axial", "Sagittal"],
                "answer": "A",
                "modality": "Endoscopy",
            },
        ],
    )
    first, second = load_records(data)[0]
    assert (first.id, first.answer, first.modality, first.question_type, first.extra, first.source) == (
        "case-17",
        "B",
        "MR",
        "Anatomy Identification",
        {"site": "Basel"},
        "jsonl",
    )
    assert (second.id, second.modality, second.question_type) == ("cases:1", "Endoscopy", None)


def _annotation_row(image: str | dict[str, Any], correct_answer: str | None, flags: list[str]) -> dict[str, Any]:
    """A row in the shape of ``medvlm.annotations.Annotation.to_record``."""
    return {
        "id": 7,
        "output_id": "0f3c",
        "reviewer": "dr-a",
        "flags": flags,
        **{
            f"flag_{flag}": flag in flags
            for flag in ("superficial", "contradiction", "hallucination", "wrong_answer", "sound")
        },
        "comment": "",
        "image": image,
        "image_sha256": "ab" * 32,
        "image_metadata": {"source_format": "DICOM", "width": 24, "height": 24},
        "modality": "CT",
        "question": "Which organ is shown?",
        "options": ["Liver", "Lung", "Brain"],
        "correct_answer": correct_answer,
        "completion": "<think> x </think><answer>A</answer>",
        "reasoning": "x",
        "answer_text": "A",
        "letter": "A",
        "format_ok": True,
        "problem": None,
        "model_id": "JZPeterPan/MedVLM-R1",
        "prompt_style": "medvlm",
        "is_correct": correct_answer == "A" if correct_answer else None,
    }


def test_annotations_jsonl_uses_the_reviewers_answer_and_keeps_flags(tmp_path: Path) -> None:
    _png(tmp_path / "images" / f"{'ab' * 32}.png")
    rows = [
        _annotation_row(f"images/{'ab' * 32}.png", "B", ["superficial", "wrong_answer"]),
        {**_annotation_row(f"images/{'ab' * 32}.png", None, ["sound"]), "id": 8},
    ]
    data = _write_jsonl(tmp_path / "export" / "annotations.jsonl", rows)
    shutil.copytree(tmp_path / "images", tmp_path / "export" / "images")
    (record,), report = load_records(data)
    assert (record.id, record.answer, record.modality, record.source) == ("7", "B", "CT", "annotations")
    assert record.extra["flags"] == ["superficial", "wrong_answer"]
    assert record.extra["letter"] == "A" and record.extra["reviewer"] == "dr-a"
    assert report.skipped == {"no correct answer": 1}
    assert report.examples == {"no correct answer": [("8", "field correct_answer")]}


def test_annotations_parquet_with_embedded_images(tmp_path: Path) -> None:
    rows = [
        _annotation_row({"bytes": _png_bytes(30), "path": "images/one.png"}, "A", ["sound"]),
        {**_annotation_row({"bytes": _png_bytes(90), "path": None}, "C", ["hallucination"]), "id": 9},
    ]
    data = tmp_path / "annotations.parquet"
    datasets.Dataset.from_list(rows).cast_column("image", datasets.Image()).to_parquet(str(data))
    records, report = load_records(data)
    assert [r.answer for r in records] == ["A", "C"] and report.loaded == 2
    assert records[0].image_path == (tmp_path / "images" / "one.png").resolve()
    assert records[1].image_path.parent == (tmp_path / "images").resolve()
    assert Image.open(records[1].image_path).getpixel((0, 0)) == (90, 90, 90)
    assert load_records(data)[0] == records  # the written images are reused


def test_real_annotation_export_round_trips(tmp_path: Path) -> None:
    annotations = pytest.importorskip("medvlm.annotations")
    store = annotations.AnnotationStore(tmp_path / "store")
    for index, (correct, flags) in enumerate([("B", ("superficial",)), (None, ("sound",))]):
        output = model_output(
            index,
            image=Image.new("RGB", (20, 20), (index * 80, 0, 0)),
            image_metadata={"source_format": "DICOM", "width": 20, "height": 20, "modality": "MR"},
            question="Which organ?",
            options=["Liver", "Knee"],
            correct_answer=correct,
            completion="<think> x </think><answer>A</answer>",
            letter="A",
        )
        store.add(output, annotations.Review(reviewer="dr-a", flags=flags))
    for export in (
        store.export_jsonl(tmp_path / "out" / "a.jsonl"),
        store.export_parquet(tmp_path / "out" / "a.parquet"),
    ):
        (record,), report = load_records(export)
        assert (record.answer, record.modality, record.options, record.extra["flags"]) == (
            "B",
            "MR",
            ("Liver", "Knee"),
            ["superficial"],
        )
        assert report.skipped == {"no correct answer": 1}
        assert Image.open(record.image_path).size == (20, 20)


@pytest.mark.parametrize(
    "row, expected",
    [
        ({"image": ["a.png"], "problem": "p", "solution": "A", "question": "q", "options": ["x", "y"]}, "medvlm-r1"),
        ({"image": "a.png", "problem": "q A)x, B)y", "solution": "<answer> A </answer>"}, "med-r1"),
        ({"image": ["a.png"], "question": "q", "options": ["x", "y"], "answer": "x", "subset": "X-Ray"}, "huatuo"),
        ({"image": "a.png", "question": "q", "options": ["x", "y"], "answer": "B"}, "jsonl"),
        ({"image": "a.png", "question": "q", "options": ["x", "y"], "answer": "y"}, "huatuo"),
        (
            {"image": "a.png", "question": "q", "options": ["x", "y"], "correct_answer": "A", "flags": []},
            "annotations",
        ),
        ({"text": "q"}, None),
    ],
)
def test_detect_format(row: dict[str, Any], expected: str | None) -> None:
    assert detect_format(row) == expected


# -- bad rows --------------------------------------------------------------------------------------


def test_bad_rows_are_skipped_and_counted_by_reason(tmp_path: Path) -> None:
    _png(tmp_path / "ok.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    good = {"image": "ok.png", "question": "Which organ?", "options": ["Liver", "Lung", "Brain"], "answer": "B"}
    rows = [
        good,
        {**good, "id": "gone", "image": "missing.png"},
        {**good, "id": "broken", "image": "broken.png"},
        {**good, "id": "beyond", "answer": "D"},
        {**good, "id": "one", "options": ["Liver"], "answer": "A"},
        {**good, "id": "eleven", "options": [f"organ {i}" for i in range(11)]},
        {**good, "id": "dupes", "options": ["Liver", "liver ", "Brain"]},
        {**good, "id": "blank", "question": "  "},
        {**good, "id": "no image", "image": None},
    ]
    data = _write_jsonl(tmp_path / "rows.jsonl", rows)
    with data.open("a") as handle:
        handle.write("{not json\n")
    records, report = load_records(data)
    assert [r.id for r in records] == ["rows:0"]
    assert report.skipped == {
        "missing image file": 1,
        "unreadable image": 1,
        "answer not among options": 1,
        "fewer than two options": 1,
        "more than ten options": 1,
        "duplicate options": 1,
        "empty question": 1,
        "no image": 1,
        "malformed row": 1,
    }
    assert report.examples["missing image file"][0][0] == "gone" and report.examples["missing image file"][0][
        1
    ].endswith("missing.png")
    assert report.examples["unreadable image"][0][0] == "broken"
    assert report.examples["answer not among options"][0] == ("beyond", "answer 'D', options A, B, C")
    assert report.examples["malformed row"] == [("rows:9", "")]
    assert report.summary().startswith(
        "Loaded 1 of 10 rows; skipped 9: missing image file (1), unreadable image (1), "
    )

    unchecked, report = load_records(data, check_images=False)
    assert [r.id for r in unchecked] == ["rows:0", "broken"]
    assert "unreadable image" not in report.skipped and report.skipped["missing image file"] == 1


def test_huatuo_answer_that_is_not_an_option_and_multi_image_rows_are_skipped(tmp_path: Path) -> None:
    _png(tmp_path / "a.png")
    data = _write_json(
        tmp_path / "bundle.json",
        [
            _huatuo_row("a.png", "X-Ray", answer="Fracture"),
            {**_huatuo_row("a.png", "X-Ray"), "image": ["a.png", "a.png"]},
            {**_huatuo_row("a.png", "X-Ray"), "options": json.dumps(["Hemorrhage", "Chronic infarct"])},
        ],
    )
    records, report = load_records(data)
    assert [r.answer for r in records] == ["B"]  # options stored as a JSON string are read
    assert report.skipped == {"answer not among options": 1, "more than one image": 1}


def test_limit_modality_filter_and_directories(tmp_path: Path) -> None:
    for shade in range(4):
        _png(tmp_path / f"{shade}.png", shade=shade * 60)
    rows = [
        {
            "image": f"{i}.png",
            "question": f"Question {i}?",
            "options": ["Yes", "No"],
            "answer": "A",
            "modality": modality,
        }
        for i, modality in enumerate(["CT", "MR", "mri", "X-Ray"])
    ]
    _write_jsonl(tmp_path / "a.jsonl", rows[:2])
    _write_jsonl(tmp_path / "b.jsonl", rows[2:])
    _write_jsonl(tmp_path / "nested" / "c.jsonl", rows)  # sub-folders are not read

    records, report = load_records(tmp_path)
    assert [r.question for r in records] == ["Question 0?", "Question 1?", "Question 2?", "Question 3?"]
    assert [r.id for r in records] == ["a:0", "a:1", "b:0", "b:1"]
    assert [r.question for r in load_records(tmp_path, limit=3)[0]] == ["Question 0?", "Question 1?", "Question 2?"]
    mri, report = load_records(tmp_path, modality="Magnetic Resonance Imaging")
    assert [r.question for r in mri] == ["Question 1?", "Question 2?"]
    assert (report.loaded, report.not_selected) == (2, 2)


def test_unreadable_sources_raise(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="No data file or folder"):
        load_records(tmp_path / "nothing.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="holds no .json"):
        load_records(tmp_path / "empty")
    with pytest.raises(DatasetError, match="Unknown data format 'csv'"):
        load_records(tmp_path, format="csv")
    odd = _write_json(tmp_path / "odd.json", [{"text": "q", "label": 1}])
    with pytest.raises(DatasetError, match="Cannot tell the format of odd.*pass format="):
        load_records(odd)
    _write_json(tmp_path / "dict.json", {"rows": []})  # type: ignore[arg-type]
    with pytest.raises(DatasetError, match="JSON list"):
        load_records(tmp_path / "dict.json")


def test_hub_datasets_go_through_load_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    embedded = datasets.Dataset.from_dict(
        {
            "image": [{"bytes": _png_bytes(50), "path": "scan.png"}],
            "question": ["Which?"],
            "options": [["Yes", "No"]],
            "answer": ["B"],
        },
        features=datasets.Features(
            {
                "image": datasets.Image(),
                "question": datasets.Value("string"),
                "options": datasets.List(datasets.Value("string")),
                "answer": datasets.Value("string"),
            }
        ),
    )
    by_path = datasets.Dataset.from_list([_huatuo_row("images/brain.png", "X-Ray")])
    calls: list[tuple[str, str]] = []

    def fake_load_dataset(dataset_id: str, split: str) -> datasets.Dataset:
        calls.append((dataset_id, split))
        return embedded if dataset_id == "org/embedded" else by_path

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    (record,), _ = load_records("org/embedded", split="train", data_root=tmp_path)
    assert calls == [("org/embedded", "train")]
    assert record.answer == "B" and record.image_path.parent == (tmp_path / "images").resolve()

    with pytest.raises(DatasetError, match="relative paths.*data_root"):
        load_records("FreedomIntelligence/Medical_Multimodal_Evaluation_Data")
    _png(tmp_path / "images" / "brain.png")
    (record,), _ = load_records("FreedomIntelligence/Medical_Multimodal_Evaluation_Data", data_root=tmp_path)
    assert (record.answer, record.modality) == ("D", "X-Ray")


# -- checks and the GRPO dataset -------------------------------------------------------------------


def _record(image_path: Path, **fields: Any) -> VQARecord:
    values = {
        "id": image_path.stem,
        "image_path": image_path,
        "question": "Which organ?",
        "options": ("Liver", "Lung"),
        "answer": "B",
        **fields,
    }
    return VQARecord(**values)


def test_image_overlap_compares_file_content_not_paths(tmp_path: Path) -> None:
    shared = _png(tmp_path / "train" / "scan.png", shade=5)
    copy = tmp_path / "test" / "renamed.png"
    copy.parent.mkdir()
    shutil.copy(shared, copy)
    other = _png(tmp_path / "test" / "scan.png", shade=200)  # same name, other content
    train = [_record(shared)]
    test = [_record(copy, question="Another question?"), _record(other)]
    assert image_overlap(train, test) == {str(copy)}
    assert image_overlap(train, [_record(other)]) == set()


def test_to_grpo_dataset_columns_for_trl(tmp_path: Path) -> None:
    from trl.data_utils import prepare_multimodal_messages

    records = [
        _record(_png(tmp_path / "a.png"), modality="MR", question_type="Disease Diagnosis"),
        _record(_png(tmp_path / "b.png", size=(30, 50)), options=("Yes", "No", "Maybe"), answer="C"),
    ]
    dataset = to_grpo_dataset(records, style="medr1")
    assert dataset.column_names == ["prompt", "image", "solution", "options", "modality", "question_type", "id"]
    assert isinstance(dataset.features["image"], datasets.Image)
    first, second = dataset[0], dataset[1]
    assert first["prompt"][0]["content"][0]["type"] == "image"
    assert (
        first["prompt"][0]["content"][1]
        == build_messages("Which organ?", ["Liver", "Lung"], style="medr1")[0]["content"][1]
    )
    assert (first["solution"], first["options"], first["modality"], first["question_type"], first["id"]) == (
        "B",
        ["Liver", "Lung"],
        "MR",
        "Disease Diagnosis",
        "a",
    )
    assert (second["solution"], second["modality"], second["image"].size) == ("C", None, (30, 50))
    # What GRPOTrainer does with a row: the image fills the placeholder.
    filled = prepare_multimodal_messages(first["prompt"], images=[first["image"]])
    assert filled[0]["content"][0]["image"].size == (40, 32)


@pytest.mark.slow
def test_grpo_trainer_accepts_the_dataset_and_rewards(tmp_path: Path, formatted_model_dir: Path) -> None:
    """One GRPO step on the warm-started tiny model: the dataset, prompt and rewards fit TRL's trainer."""
    from trl import GRPOConfig, GRPOTrainer

    from medvlm.model import load_model
    from train.rewards import get_rewards

    records = [_record(_png(tmp_path / f"{i}.png", shade=i * 70), question=f"Which organ {i}?") for i in range(2)]
    seen: dict[str, Any] = {}

    def spy(completions: list[Any], **kwargs: Any) -> list[float]:
        seen.update(kwargs, completions=completions)
        return [0.0] * len(completions)

    loaded = load_model(formatted_model_dir)
    config = GRPOConfig(
        output_dir=str(tmp_path / "run"),
        per_device_train_batch_size=2,
        num_generations=2,
        max_completion_length=32,
        max_steps=1,
        report_to=[],
        use_cpu=True,
        bf16=False,
        save_strategy="no",
        logging_steps=1,
    )
    trainer = GRPOTrainer(
        model=loaded.model,
        processing_class=loaded.processor,
        reward_funcs=[*get_rewards(["format", "accuracy"]), spy],
        args=config,
        train_dataset=to_grpo_dataset(records),
    )
    trainer.train()
    assert seen["solution"] == ["B", "B"] and seen["options"] == [["Liver", "Lung"]] * 2
    assert seen["completions"][0][0]["role"] == "assistant"
    logged = trainer.state.log_history[0]
    assert logged["rewards/format_reward/mean"] == 1.0  # the warm-started model follows the format


def test_load_report_summary_without_skips() -> None:
    report = LoadReport(loaded=3)
    assert report.summary() == "Loaded 3 of 3 rows."
    assert report.to_dict()["skipped"] == {}


def test_the_report_shows_examples_of_every_reason_with_what_is_at_fault(tmp_path: Path) -> None:
    """Rare reasons are not crowded out by a common one, and each example names the path or field."""
    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "ok.png")
    rows = [
        {"id": f"gone{i}", "image": f"images/missing{i}.png", "question": "Q?", "options": ["A", "B"], "answer": "A"}
        for i in range(30)
    ]
    rows.append({"id": "rare", "image": "images/ok.png", "question": "Q?", "options": ["A", "B"], "answer": "Z"})
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    _, report = load_records(tmp_path / "rows.jsonl", format="jsonl")
    lines = report.summary().splitlines()
    assert lines[0] == "Loaded 0 of 31 rows; skipped 31: missing image file (30), answer not among options (1)."
    assert (
        lines[1].startswith("  missing image file: row gone0 (")
        and str(tmp_path / "images" / "missing0.png") in lines[1]
    )
    assert lines[1].endswith("; and 27 more")
    assert lines[2] == "  answer not among options: row rare (answer 'Z', options A, B)"


def test_no_question_left_says_where_images_were_looked_for(tmp_path: Path) -> None:
    from medvlm.vqa_records import no_records_message

    (tmp_path / "rows.jsonl").write_text(
        json.dumps({"id": "q", "image": "brain001.png", "question": "Q?", "options": ["A", "B"], "answer": "A"}) + "\n"
    )
    _, report = load_records(tmp_path / "rows.jsonl", format="jsonl")
    message = no_records_message(tmp_path / "rows.jsonl", None, report, purpose="evaluate")
    assert f"No question left to evaluate in {tmp_path / 'rows.jsonl'}." in message
    assert "the data file's folder (no --data_root was given)" in message and str(tmp_path / "brain001.png") in message
    assert "Pass --data_root" in message


def test_training_rows_hold_the_image_the_app_shows_even_for_a_dicom() -> None:
    """Pillow cannot open a DICOM: the dataset carries load_image's rendering (window applied)."""
    import numpy as np

    from medvlm.images import load_image
    from train.data import to_grpo_dataset

    records, _ = load_records(Path(__file__).resolve().parents[1] / "assets" / "questions.json")
    dataset = to_grpo_dataset(records[:2])
    rendered = load_image(records[0].image_path).image
    assert records[0].image_path.suffix == ".dcm"
    assert np.array_equal(np.asarray(dataset[0]["image"].convert("RGB")), np.asarray(rendered))


def test_a_record_source_selects_as_load_records_does_and_says_what_it_read(tmp_path: Path) -> None:
    from medvlm.square_task import write_square_task

    questions = write_square_task(tmp_path / "task", 8, seed=1, modalities=("CT", "MRI"))
    source = RecordSource(questions, modality="MRI", limit=3, check_images=False)
    records, report = source.load()
    expected, _ = load_records(questions, modality="MRI", limit=3, check_images=False)
    assert [record.id for record in records] == [record.id for record in expected]
    assert len(records) == 3 and {record.modality for record in records} == {"MR"}
    assert report.loaded == 3
    assert source.describe() == {
        "source": str(questions), "data_root": None, "subset": None, "modality": "MRI", "split": "test", "limit": 3,
    }  # fmt: skip
