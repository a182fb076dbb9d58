"""A campaign that probes its answers as part of the generation, end to end: planned, answered, probed
(interrupted and resumed), shown to reviewers or hidden, measured against the superficial flag in the
report, exported as machine annotations. The model: a tiny checkpoint taught to ignore the image."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from medvlm.annotations import AnnotationError, AnnotationStore, Review
from medvlm.annotations.campaign_export import export_campaign
from medvlm.annotations.campaigns import Campaigns
from medvlm.campaign_generation import generate_answers, plan_campaign
from medvlm.model import LoadedModel, load_model
from medvlm.probes import DEFAULT_KINDS, ProbeKind
from medvlm.review_stats import PROBE_HINT, hint_accuracy
from medvlm.square_task import write_square_task
from medvlm.streaming import GenerationSettings, answer_batch
from medvlm.ui.campaigns.review_kind import OutputReviews
from medvlm.vqa_records import load_records


@pytest.fixture(scope="module")
def blind_model(blind_model_dir: Path) -> LoadedModel:
    return load_model(blind_model_dir)


def planned(tmp_path: Path, model: LoadedModel, *, show: bool = True) -> Campaigns:
    records, _ = load_records(write_square_task(tmp_path / "task", 6, seed=3, modalities=("CT", "MRI")))
    campaigns = Campaigns(AnnotationStore(tmp_path / "data"))
    plan_campaign(
        campaigns,
        "Squares",
        records,
        loaded=model,
        settings=GenerationSettings(max_new_tokens=40),
        batch_size=2,
        reviews_per_output=1,
        created_by="admin",
        probes=DEFAULT_KINDS,
        show_probes=show,
    )
    return campaigns


def test_probes_run_with_the_generation_resume_after_an_interruption_and_are_stored(
    tmp_path: Path, blind_model: LoadedModel
) -> None:
    campaigns = planned(tmp_path, blind_model)
    calls, seen = [], []

    def breaks_during_probes(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 7:  # 3 answer batches, then 3 calls per 2 outputs' probes: stop in the second 2
            raise KeyboardInterrupt
        return answer_batch(*args, **kwargs)

    with pytest.raises(KeyboardInterrupt):
        generate_answers(campaigns, "Squares", blind_model, answer=breaks_during_probes)
    plan = campaigns.generation("Squares")
    assert plan.answered == 6 and plan.probes == ("blank", "shuffle", "rotate") and plan.probed == 2
    assert not plan.done
    with pytest.raises(AnnotationError, match=r"6 of 6 answered, 2 probed so far"):
        campaigns.next_output("Squares", "Dr A")
    plan = generate_answers(campaigns, "Squares", blind_model, progress=lambda done, total: seen.append((done, total)))
    assert plan.done and plan.probed == 6 and seen[0][1] == 12 and seen[-1] == (12, 12)
    stored = campaigns.store.probe_answers(campaigns.output_ids("Squares"))
    assert len(stored) == 6
    pool = {output_id: campaigns.store.output(output_id) for output_id in stored}
    for output_id, answers in stored.items():
        assert [answer.kind for answer in answers] == [ProbeKind.BLANK, ProbeKind.SHUFFLE, ProbeKind.ROTATE]
        assert not any(answer.changed for answer in answers[:2])  # it never looks
        assert answers[2].changed  # always A: under rotation that is the other option
        modality = pool[output_id].image_metadata["modality"]
        partners = [o for o in pool.values() if o.image_metadata["modality"] == modality and o.output_id != output_id]
        assert answers[1].variant in {partner_sha[:12] for partner_sha in map(_sha, partners)}


def _sha(output) -> str:
    from medvlm.annotations.records import image_sha256

    return image_sha256(output.image)


def test_reviewers_see_the_probes_unless_hidden_and_the_report_measures_them(
    tmp_path: Path, blind_model: LoadedModel
) -> None:
    campaigns = planned(tmp_path / "shown", blind_model)
    generate_answers(campaigns, "Squares", blind_model)
    handlers = OutputReviews(campaigns)
    output = campaigns.next_output("Squares", "Dr A").output
    evidence = handlers.probe_evidence("Squares", output)
    assert "**Probes**" in evidence and "Image-invariant with visual claims" in evidence
    assert "Options rotated: the same option in 0% of rotations." in evidence

    hidden = planned(tmp_path / "hidden", blind_model, show=False)
    generate_answers(hidden, "Squares", blind_model)
    handlers = OutputReviews(hidden)
    assert handlers.probe_evidence("Squares", hidden.next_output("Squares", "Dr A").output) == ""

    # Reviews: two outputs flagged superficial, the rest sound. Every output is image-invariant with claims.
    handlers = OutputReviews(campaigns)
    for index, output_id in enumerate(campaigns.output_ids("Squares")):
        flags = ("superficial",) if index < 2 else ("sound",)
        campaigns.store.add(campaigns.store.output(output_id), Review("Dr A", flags))
    table = hint_accuracy(campaigns.annotations("Squares"), probes=handlers.probe_verdicts("Squares"))
    row = table[table["hint"] == PROBE_HINT].iloc[0]
    assert (row["reviews"], row["fired"], row["flagged"], row["both"]) == (6, 6, 2, 2)
    assert row["precision"] == pytest.approx(2 / 6) and row["recall"] == 1.0
    assert PROBE_HINT not in set(hint_accuracy(campaigns.annotations("Squares"))["hint"])

    exported = export_campaign(campaigns, "Squares", tmp_path / "export")
    rows = datasets.load_dataset("parquet", data_files=str(exported / "data" / "*.parquet"), split="train")
    assert len(rows) == 6
    for row in rows:
        probes = json.loads(row["probes"])
        assert probes["made_by"] == "probe" and probes["summary"]["invariant_with_visual_claims"] is True
        assert [answer["kind"] for answer in probes["answers"]] == ["blank", "shuffle", "rotate"]
        assert [review["made_by"] for review in row["reviews"]] == ["person"]
    assert "made_by: probe" in (exported / "README.md").read_text()


def test_the_command_line_probes_a_campaign_it_generates_and_can_hide_the_probes(
    tmp_path: Path, blind_model_dir: Path
) -> None:
    """``medvlm campaign create --probes --hide-probes``: every answer probed and stored, hidden from reviewers."""
    import contextlib
    import io

    from medvlm.cli import main

    data = write_square_task(tmp_path / "task", 4, seed=5, modalities=("CT",))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(
            ["campaign", "create", "Probed", "--data", str(data), "--model", str(blind_model_dir),
             "--probes", "blank,shuffle,rotate", "--hide-probes", "--reviews-per-output", "1",
             "--max-new-tokens", "24", "--batch-size", "4", "--data-dir", str(tmp_path / "store")]
        )  # fmt: skip
    assert status == 0, err.getvalue()
    assert "all 4 answers stored and probed (blank, shuffle, rotate)" in out.getvalue()
    assert "Answering and probing" in err.getvalue()  # the bar says it counts the probes too
    campaigns = Campaigns(AnnotationStore(tmp_path / "store"))
    generation = campaigns.generation("Probed")
    assert generation.probes == DEFAULT_KINDS and not generation.show_probes and generation.done
    probed = campaigns.store.probe_answers(campaigns.output_ids("Probed"))
    assert len(probed) == 4 and all(
        {answer.kind for answer in answers} == set(DEFAULT_KINDS) for answers in probed.values()
    )
    reviews = OutputReviews(campaigns)
    assert reviews.probe_evidence("Probed", campaigns.store.output(campaigns.output_ids("Probed")[0])) == ""
