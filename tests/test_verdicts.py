"""Pairwise verdicts in the annotation store: kept in terms of outputs, one per pair and reviewer."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import pytest

from helpers import model_output, undo_schema_11
from medvlm.annotations import VERDICT_CHOICES, AnnotationError, AnnotationStore, Verdict


def pair(image_index: int = 0) -> tuple:
    """Two answers to one case (same image, question and options) by two models."""
    base = model_output(image_index)
    grpo = dataclasses.replace(
        base,
        output_id=f"{image_index + 100:032x}",
        completion="<think>The left lung is dark.</think><answer>B</answer>",
        model={**base.model, "model": "grpo-run"},
    )
    return base, grpo


@pytest.mark.parametrize(
    ("choice", "outcome", "better"),
    [("first", "preferred", 0), ("second", "preferred", 1), ("tie", "tie", None), ("both_poor", "both_poor", None)],
)
def test_a_verdict_given_by_sides_is_kept_by_outputs(choice: str, outcome: str, better: int | None) -> None:
    first, second = "f" * 32, "0" * 32  # the left one sorts last: a and b are not the sides
    verdict = Verdict.from_sides(first, second, choice, reviewer=" Dr Pair ", blind=True)
    assert (verdict.output_a, verdict.output_b, verdict.shown_first) == (second, first, first)
    assert verdict.outcome == outcome and verdict.reviewer == "Dr Pair"
    assert verdict.preferred == (None if better is None else (first, second)[better])
    assert verdict.rejected == (None if better is None else (first, second)[1 - better])
    assert verdict.choice(first) == choice  # read back in terms of the sides it was given on
    if better is not None:  # the same judgement seen with the sides swapped
        assert verdict.choice(second) == {"first": "second", "second": "first"}[choice]


def test_bad_verdicts_are_refused_in_words() -> None:
    with pytest.raises(AnnotationError, match="Choose one of: " + VERDICT_CHOICES["first"]):
        Verdict.from_sides("a", "b", "left", reviewer="Dr Pair", blind=False)
    with pytest.raises(AnnotationError, match="two different answers"):
        Verdict.from_sides("a", "a", "tie", reviewer="Dr Pair", blind=False)
    with pytest.raises(AnnotationError, match="name"):
        Verdict.from_sides("a", "b", "tie", reviewer="  ", blind=False)


def test_verdicts_are_stored_with_both_outputs_and_a_changed_mind_updates_its_own_keeping_the_first(
    tmp_path: Path,
) -> None:
    store = AnnotationStore(tmp_path)
    base, grpo = pair()
    stored, created = store.add_verdict(
        grpo, base, Verdict.from_sides(grpo.output_id, base.output_id, "first", reviewer="Dr Pair", blind=True)
    )
    assert created and stored.id == 1 and stored.preferred == grpo.output_id and stored.decided_at
    assert store.output(grpo.output_id).completion == grpo.completion  # both outputs stored with the verdict
    assert store.output(base.output_id).model["model"] == "JZPeterPan/MedVLM-R1"
    # The same reviewer (another spelling), the sides shuffled the other way, judging again: one verdict, updated.
    again, created = store.add_verdict(
        base, grpo, Verdict.from_sides(base.output_id, grpo.output_id, "tie", reviewer="DR PAIR", blind=True)
    )
    assert not created and again.id == 1 and again.reviewer == "Dr Pair"
    other, _ = store.add_verdict(
        base, grpo, Verdict.from_sides(base.output_id, grpo.output_id, "second", reviewer="Dr Two", blind=False)
    )
    kept = store.verdicts([grpo.output_id])
    assert [(verdict.reviewer, verdict.outcome, verdict.preferred) for verdict in kept] == [
        ("Dr Pair", "tie", None),
        ("Dr Two", "preferred", grpo.output_id),
    ]
    assert kept[0].shown_first == base.output_id and kept[1].blind is False
    assert store.verdicts(["nothing"]) == [] and len(store.verdicts()) == 2
    history = store.verdict_history(1)  # the first judgement is kept as version 1, the latest is what counts
    assert [(version.outcome, version.preferred, version.shown_first) for version in history] == [
        ("preferred", grpo.output_id, grpo.output_id),
        ("tie", None, base.output_id),
    ]
    assert history[-1] == kept[0] and [version.outcome for version in store.verdict_history(other.id)] == ["preferred"]
    with pytest.raises(AnnotationError, match="No verdict has the id 99"):
        store.verdict_history(99)


def test_a_verdict_on_answers_to_different_cases_or_another_pair_is_refused(tmp_path: Path) -> None:
    store = AnnotationStore(tmp_path)
    base, grpo = pair()
    elsewhere = model_output(7)  # another image
    with pytest.raises(AnnotationError, match="same case"):
        store.add_verdict(
            base,
            elsewhere,
            Verdict.from_sides(base.output_id, elsewhere.output_id, "tie", reviewer="Dr P", blind=True),
        )
    with pytest.raises(AnnotationError, match="another pair"):
        store.add_verdict(
            base, grpo, Verdict.from_sides(base.output_id, elsewhere.output_id, "tie", reviewer="Dr P", blind=True)
        )
    assert store.verdicts() == []
    with pytest.raises(AnnotationError):  # nothing half-written: neither output was stored either
        store.output(base.output_id)


def test_the_schema_itself_refuses_a_verdict_naming_an_output_outside_its_pair(tmp_path: Path) -> None:
    store = AnnotationStore(tmp_path)
    base, grpo = pair()
    store.add_verdict(base, grpo, Verdict.from_sides(base.output_id, grpo.output_id, "tie", reviewer="Dr P", blind=1))
    with sqlite3.connect(store.db_path) as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute("UPDATE verdicts SET outcome = 'preferred', preferred = 'someone else'")


def test_a_schema_7_store_keeps_its_verdicts_as_their_first_version(tmp_path: Path) -> None:
    store = AnnotationStore(tmp_path)
    base, grpo = pair()
    store.add_verdict(
        base, grpo, Verdict.from_sides(base.output_id, grpo.output_id, "first", reviewer="Dr P", blind=0)
    )
    with sqlite3.connect(store.db_path) as conn:  # what a store written before verdict versions holds
        conn.execute("DROP TABLE verdict_versions")
        conn.execute("DROP TABLE campaign_pair_adjudications")
        undo_schema_11(conn)
        conn.execute("PRAGMA user_version = 7")
    reopened = AnnotationStore(tmp_path)
    (old,) = reopened.verdicts()
    assert reopened.verdict_history(old.id) == [old]
    reopened.add_verdict(
        base, grpo, Verdict.from_sides(base.output_id, grpo.output_id, "both_poor", reviewer="Dr P", blind=0)
    )
    assert [version.outcome for version in reopened.verdict_history(old.id)] == ["preferred", "both_poor"]
