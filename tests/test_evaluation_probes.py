"""``train.evaluate --probes`` and ``train.compare`` on two tiny models whose use of the image is known:
one taught to answer the square task from the pixels, one taught to ignore them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medvlm.square_task import write_square_task
from train.compare import main as compare_main
from train.evaluate import main as evaluate_main

PROBES = "blank,shuffle,rotate"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, looking_model_dir: Path, blind_model_dir: Path) -> Path:
    work = tmp_path_factory.mktemp("probe-runs")
    questions = write_square_task(work / "task", 16, seed=7, modalities=("CT", "MRI"))
    for name, model in (("looking", looking_model_dir), ("blind", blind_model_dir)):
        argv = ["--model", str(model), "--data", str(questions), "--output-dir", str(work / name)]
        assert evaluate_main([*argv, "--max-new-tokens", "40", "--batch-size", "8", "--probes", PROBES]) == 0
    return work


def report(runs: Path, name: str) -> dict:
    return json.loads((runs / name / "report.json").read_text())


def test_the_looking_model_depends_on_the_image_and_is_consistent_under_rotation(runs: Path) -> None:
    probes = report(runs, "looking")["probes"]
    assert probes["kinds"] == ["blank", "shuffle", "rotate"]
    overall = probes["overall"]
    assert overall["n"] == 16 and overall["accuracy"]["original"] == 1.0
    assert overall["accuracy"]["circular"] == 1.0 and overall["rotation_consistency"] == 1.0
    # A black image reads as dark: right for every dark square, wrong for every bright one.
    assert overall["accuracy"]["blank"] == 0.5 and overall["changed"]["blank"] == 0.5
    assert overall["changed"]["image"] >= 0.5
    assert set(probes["by_modality"]) == {"CT", "MR"}
    assert sum(group["n"] for group in probes["by_modality"].values()) == 16


def test_the_blind_model_is_image_invariant_with_visual_claims_and_breaks_under_rotation(runs: Path) -> None:
    overall = report(runs, "blind")["probes"]["overall"]
    assert overall["accuracy"]["original"] == 0.5  # always A) Bright
    assert overall["changed"] == {"blank": 0.0, "shuffle": 0.0, "image": 0.0, "no_think": None}
    assert overall["invariant_with_visual_claims"] == 1.0
    assert overall["rotation_consistency"] == 0.0 and overall["accuracy"]["circular"] == 0.0


def test_every_sample_line_keeps_its_probe_answers_and_the_report_has_the_table(runs: Path) -> None:
    lines = [json.loads(line) for line in (runs / "blind" / "samples.jsonl").read_text().splitlines()]
    for line in lines:
        answers = line["probes"]["answers"]
        assert [answer["kind"] for answer in answers] == ["blank", "shuffle", "rotate"]
        partner = answers[1]["variant"]
        assert partner != line["id"] and partner.startswith("task-")
        assert answers[2]["options"] == ["Dark", "Bright"] and answers[2]["letter"] == "B"
        assert line["probes"]["summary"]["invariant_with_visual_claims"] is True
    markdown = (runs / "looking" / "report.md").read_text()
    assert "## Probes (blank, shuffle, rotate)" in markdown
    assert "| **overall** | 16 | 100.00% | 50.00% |" in markdown and "| modality: CT | 8 |" in markdown


def test_compare_shows_which_model_uses_the_image(runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = runs / "comparison"
    assert compare_main([str(runs / "blind"), str(runs / "looking"), "--output-dir", str(out)]) == 0
    comparison = json.loads((out / "comparison.json").read_text())
    per = comparison["per_model"]
    assert per["blind"]["probes"]["overall"]["changed"]["image"] == 0.0
    assert per["looking"]["probes"]["overall"]["changed"]["image"] >= 0.5
    markdown = (out / "comparison.md").read_text()
    assert "| accuracy in all rotations | 0.00% | 100.00% |" in markdown
    assert "| image-invariant with visual claims | 100.00% |" in markdown
    assert "| modality: MR | 0.00% |" in markdown


def test_an_unknown_probe_is_refused_before_anything_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert evaluate_main(["--data", str(tmp_path / "missing.json"), "--probes", "blank,mirror"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --probes: Unknown probe 'mirror'. Choose from: blank, shuffle, rotate, no_think."
    )


def test_each_image_is_decoded_once_for_its_answer_and_its_probes(
    tmp_path: Path, blind_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probes reuse the batch's decoded images; only a shuffle partner's image is read again."""
    import medvlm.images
    from medvlm.model import load_model
    from medvlm.streaming import GenerationSettings
    from medvlm.vqa_records import load_records
    from train.evaluate import evaluate

    records, _ = load_records(write_square_task(tmp_path / "task", 6, seed=2, modalities=("CT",)))
    decoded: list[str] = []
    real = medvlm.images.load_image

    def counted(source, *args, **kwargs):
        decoded.append(Path(source).name)
        return real(source, *args, **kwargs)

    loaded = load_model(blind_model_dir)  # (its CPU fidelity check reads a bundled DICOM)
    monkeypatch.setattr(medvlm.images, "load_image", counted)
    settings = GenerationSettings(max_new_tokens=24)
    result = evaluate(loaded, records, batch_size=4, settings=settings, probes=("blank", "rotate"), progress=False)
    assert sorted(decoded) == sorted(Path(record.image_path).name for record in records)
    assert all(len(sample.probes) == 2 for sample in result.samples)  # the blank image and one rotation
    assert 0 < result.probe_s < result.elapsed_s
    decoded.clear()
    evaluate(loaded, records, batch_size=4, settings=settings, probes=("shuffle",), progress=False)
    assert len(decoded) == 2 * len(records)  # each answer's image, and each one's partner
