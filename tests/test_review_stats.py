"""Review statistics against values computed by hand."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from medvlm.annotations import FLAGS, Annotation, AnnotationError
from medvlm.review_stats import (
    AGREEMENT_COLUMNS,
    flag_rates,
    reviewer_agreement,
    summary_text,
)


def annotation(output_id: str, reviewer: str, *flags: str, **changes: object) -> Annotation:
    fields: dict[str, object] = dict(
        id=0, output_id=output_id, reviewer=reviewer, flags=flags, comment="", image_sha256="0" * 64,
        image_path=Path("images") / f"{'0' * 64}.png", image_metadata={}, modality="CT", question="Q?",
        options=["Liver", "Lung"], correct_answer=None, completion="", reasoning="", answer_text="A", letter="A",
        format_ok=True, problem=None, stop_reason="eos", model_id="m", model={"model": "m"}, settings={},
        prompt_style="medvlm", timing=None, app_version="0", generated_at="2025-01-01T00:00:00+00:00",
        created_at="2025-01-01T00:00:00+00:00", updated_at="2025-01-01T00:00:00+00:00", is_correct=None,
    )  # fmt: skip
    fields.update(changes)
    return Annotation(**fields)  # type: ignore[arg-type]


@pytest.fixture
def two_reviewers() -> list[Annotation]:
    """Reviewers A and B on outputs o1..o4, and A alone on o5.

    superficial:   A 1 1 0 0, B 1 0 0 0 -> agreement 3/4, p = 3/8, P_e = 34/64, kappa = 7/15
    sound:         A 0 0 1 1, B 0 1 1 0 -> agreement 1/2, p = 1/2, P_e = 1/2,   kappa = 0
    hallucination: A 0 0 0 0, B 0 0 0 1 -> agreement 3/4, p = 1/8, P_e = 50/64, kappa = -1/7
    contradiction and wrong_answer: never set on o1..o4 -> agreement 1, kappa undefined
    """
    return [
        annotation("o1", "A", "superficial"),
        annotation("o2", "A", "superficial"),
        annotation("o3", "A", "sound"),
        annotation("o4", "A", "sound"),
        annotation("o5", "A", "wrong_answer", modality=None),
        annotation("o1", "B", "superficial"),
        annotation("o2", "B", "sound"),
        annotation("o3", "B", "sound"),
        annotation("o4", "B", "hallucination"),
    ]


def by_flag(frame: pd.DataFrame) -> dict[str, dict[str, object]]:
    return {row["flag"]: row for row in frame.to_dict("records")}


def test_reviewer_agreement_matches_hand_computed_fleiss_kappa(two_reviewers: list[Annotation]) -> None:
    frame = reviewer_agreement(two_reviewers)
    assert list(frame.columns) == list(AGREEMENT_COLUMNS)
    assert list(frame["flag"]) == list(FLAGS)
    rows = by_flag(frame)
    assert all(row["outputs"] == 4 and row["ratings"] == 8 for row in rows.values())  # o5 has one reviewer
    expected = {"superficial": (0.75, 7 / 15), "sound": (0.5, 0.0), "hallucination": (0.75, -1 / 7)}
    for flag, (observed, kappa) in expected.items():
        assert rows[flag]["observed_agreement"] == pytest.approx(observed)
        assert rows[flag]["fleiss_kappa"] == pytest.approx(kappa)
    for flag in ("contradiction", "wrong_answer"):
        assert rows[flag]["observed_agreement"] == 1.0
        assert math.isnan(rows[flag]["fleiss_kappa"])


def test_agreement_with_unequal_numbers_of_reviewers() -> None:
    # o1: three reviewers, two flag it -> 1 agreeing pair of 3; o2: two reviewers, neither -> 1 of 1.
    # agreement (1/3 + 1) / 2 = 2/3; p = 2/5; P_e = 13/25; kappa = (2/3 - 13/25) / (12/25) = 11/36
    annotations = [
        annotation("o1", "A", "superficial"),
        annotation("o1", "B", "superficial"),
        annotation("o1", "C", "sound"),
        annotation("o2", "A", "sound"),
        annotation("o2", "B", "sound"),
    ]
    row = by_flag(reviewer_agreement(annotations))["superficial"]
    assert (row["outputs"], row["ratings"]) == (2, 5)
    assert row["observed_agreement"] == pytest.approx(2 / 3)
    assert row["fleiss_kappa"] == pytest.approx(11 / 36)


def test_a_reviewers_repeated_review_counts_once_and_the_latest_wins() -> None:
    annotations = [
        annotation("o1", "A", "superficial", updated_at="2025-01-02T00:00:00+00:00"),
        annotation("o1", "A", "sound", updated_at="2025-01-01T00:00:00+00:00"),
        annotation("o1", "B", "superficial"),
    ]
    row = by_flag(reviewer_agreement(annotations))["superficial"]
    assert (row["outputs"], row["ratings"], row["observed_agreement"]) == (1, 2, 1.0)


@pytest.mark.parametrize("annotations", [[], [annotation("o1", "A", "sound"), annotation("o2", "B", "sound")]])
def test_no_double_review_gives_an_empty_frame_with_columns(annotations: list[Annotation]) -> None:
    frame = reviewer_agreement(annotations)
    assert frame.empty and list(frame.columns) == list(AGREEMENT_COLUMNS)


def test_flag_rates_overall(two_reviewers: list[Annotation]) -> None:
    frame = flag_rates(two_reviewers)
    assert list(frame.columns) == ["flag", "label", "count", "rate"]
    assert list(frame["label"]) == list(FLAGS.values())
    counts = dict(zip(frame["flag"], frame["count"], strict=True))
    assert counts == {"superficial": 3, "contradiction": 0, "hallucination": 1, "wrong_answer": 1, "sound": 4}
    assert dict(zip(frame["flag"], frame["rate"], strict=True))["sound"] == pytest.approx(4 / 9)


def test_flag_rates_by_group_are_long_and_complete(two_reviewers: list[Annotation]) -> None:
    frame = flag_rates(two_reviewers, by="reviewer")
    assert list(frame.columns) == ["reviewer", "flag", "label", "count", "rate"]
    assert len(frame) == 2 * len(FLAGS)  # every flag for every reviewer, zeros included
    rates = {(row["reviewer"], row["flag"]): row["rate"] for row in frame.to_dict("records")}
    assert rates[("A", "superficial")] == pytest.approx(2 / 5)
    assert rates[("B", "superficial")] == pytest.approx(1 / 4)
    assert rates[("B", "contradiction")] == 0
    modality = flag_rates(two_reviewers, by="modality")
    assert sorted(set(modality["modality"])) == ["CT", "unknown"]  # no modality -> "unknown", not None


def test_flag_rates_edge_cases() -> None:
    assert flag_rates([]).empty and list(flag_rates([], by="model_id").columns)[0] == "model_id"
    with pytest.raises(AnnotationError, match="choose from: modality, question_type, model_id, reviewer"):
        flag_rates([], by="question")


def test_summary_text(two_reviewers: list[Annotation]) -> None:
    annotations = [
        *two_reviewers[:-1],
        annotation("o4", "B", "hallucination", correct_answer="B", is_correct=False),
        annotation("o6", "C", "sound", correct_answer="A", is_correct=True, format_ok=False),
    ]
    text = summary_text(annotations)
    assert "**10** annotation(s) of **6** model output(s) by **3** reviewer(s): A, B, C." in text
    assert "two or more reviewers: 4 output(s)" in text
    assert "Accuracy: 1/2 = 50% of annotations with a known correct answer" in text
    assert "5/6 = 83% of outputs" in text
    assert "Superficial reasoning 3" in text and "Contradicts" not in text
    assert summary_text([]) == "No annotations yet."
    assert "no correct answers given yet" in summary_text(two_reviewers)


def test_hints_are_measured_against_the_reviewers_flags() -> None:
    import tempfile

    from helpers import model_output
    from medvlm.annotations import AnnotationStore, Review
    from medvlm.review_stats import hint_accuracy

    store = AnnotationStore(tempfile.mkdtemp())
    contradicting = "<think>Air-filled lobes on both sides: this is the brain.</think><answer>B</answer>"
    sound = (
        "<think>Both hemithoraces show aerated lobes with branching vessels and no mass, the picture of the "
        "lung.</think><answer>B</answer>"
    )
    store.add(model_output(0, completion=contradicting), Review("Dr A", ("contradiction",)))  # hint right
    store.add(model_output(0, completion=contradicting), Review("Dr B", ("sound",)))  # hint fired, not flagged
    store.add(model_output(1, completion=sound), Review("Dr A", ("contradiction",)))  # flagged, hint silent
    table = hint_accuracy(store.query()).set_index("hint")
    row = table.loc["contradiction"]
    assert (row["reviews"], row["fired"], row["flagged"], row["both"]) == (3, 2, 2, 1)
    assert (row["precision"], row["recall"]) == (0.5, 0.5)
    assert table.loc["not_an_option", "fired"] == 0 and pd.isna(table.loc["not_an_option", "precision"])


def test_reviews_over_time_rise_when_the_reviews_were_submitted() -> None:
    from medvlm.review_stats import reviews_over_time

    frame = reviews_over_time(["2026-12-01T09:10:00+00:00", "2026-12-01T11:05:00+00:00", "2026-12-01T02:25:00-07:00"])
    assert frame["reviews"].tolist() == [0, 1, 2, 3]
    assert [str(time) for time in frame["time"]] == [
        "2026-12-01 09:10:00",  # from 0 at the first review, not an hour before it
        "2026-12-01 09:10:00",
        "2026-12-01 09:25:00",  # 02:25 at UTC-7 is 09:25 UTC
        "2026-12-01 11:05:00",
    ]
    assert reviews_over_time([]).empty
