"""Comparison campaigns: pairs of answers from two runs on the same questions, each judged k times, by the
review campaigns' lease rule; made from ``train.compare``'s output on the command line."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import multiprocessing
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from helpers import make_image, model_output, samples_file
from medvlm.annotations import AnnotationError, AnnotationStore
from medvlm.annotations.campaigns import LEASE_S, Campaigns
from medvlm.annotations.comparison_campaigns import ComparisonCampaigns
from medvlm.cli import main
from medvlm.errors import MedVLMError
from medvlm.evaluation_runs import paired_runs


def pairs(count: int) -> list[tuple]:
    """``count`` questions, each answered by the base model and by the GRPO model."""
    made = []
    for index in range(count):
        base = model_output(index, correct_answer="B")
        grpo = dataclasses.replace(
            base,
            output_id=f"{index + 1000:032x}",
            completion=f"<think>Finding {index}.</think><answer>B</answer>",
            model={**base.model, "model": "grpo-run"},
        )
        made.append((base, grpo))
    return made


def judge_all(comparisons: ComparisonCampaigns, name: str, reviewer: str, choice: str = "first") -> list[str]:
    """A reviewer's loop: next pair, verdict, until nothing is left for them; the pairs they judged."""
    done = []
    while (assignment := comparisons.next_pair(name, reviewer)) is not None:
        comparisons.submit(name, reviewer, assignment.first.output_id, assignment.second.output_id, choice)
        done.append(assignment.pair)
    return done


def verdicts_per_pair(store: AnnotationStore) -> dict[frozenset, list[str]]:
    with sqlite3.connect(store.db_path) as conn:
        rows = conn.execute("SELECT output_a, output_b, reviewer FROM verdicts").fetchall()
    found: dict[frozenset, list[str]] = {}
    for output_a, output_b, reviewer in rows:
        found.setdefault(frozenset((output_a, output_b)), []).append(reviewer)
    return found


def test_every_pair_gets_exactly_k_verdicts_from_different_reviewers(tmp_path: Path) -> None:
    store = AnnotationStore(tmp_path)
    comparisons = ComparisonCampaigns(Campaigns(store))
    made = pairs(4)
    campaign = comparisons.create("base vs grpo", made, verdicts_per_pair=2, blind=False, created_by="admin")
    assert campaign.kind == "comparison" and campaign.reviews_per_output == 2
    first = comparisons.next_pair(campaign.name, "Dr A")
    assert first.position == 1 and first.verdicts == 0 and first.pair == made[0][0].output_id
    assert (first.first.model["model"], first.second.model["model"]) == ("JZPeterPan/MedVLM-R1", "grpo-run")
    assert first.first.correct_answer == "B"  # the campaign's, for the reviewer to see when not blind
    assert comparisons.next_pair(campaign.name, "dr a").pair == first.pair  # kept, case-blind
    # Least-taken first: A's claim counts against the first pair, so B and C are handed the next ones.
    assert comparisons.next_pair(campaign.name, "Dr B").pair == made[1][0].output_id
    assert comparisons.next_pair(campaign.name, "Dr C").pair == made[2][0].output_id
    judged = {name: judge_all(comparisons, campaign.name, name) for name in ("Dr A", "Dr B", "Dr C")}
    counts = verdicts_per_pair(store)
    assert sorted(len(reviewers) for reviewers in counts.values()) == [2, 2, 2, 2]
    assert all(len(set(reviewers)) == 2 for reviewers in counts.values())
    assert sum(map(len, judged.values())) == 8 and all(len(set(done)) == len(done) for done in judged.values())
    progress = comparisons.progress(campaign.name)
    assert (progress.outputs, progress.complete, progress.reviews, progress.wanted) == (4, 4, 8, 8)
    tally = comparisons.tally(campaign.name)
    assert tally.preferred == {"JZPeterPan/MedVLM-R1": 8, "grpo-run": 0} and tally.verdicts == 8
    assert comparisons.next_pair(campaign.name, "Dr D") is None


def test_a_blind_campaign_gives_each_reviewer_their_own_fixed_sides_and_stores_the_verdict_by_output(
    tmp_path: Path,
) -> None:
    comparisons = ComparisonCampaigns(Campaigns(AnnotationStore(tmp_path)))
    made = pairs(1)
    comparisons.create("blind", made, verdicts_per_pair=40, blind=True, created_by="admin")
    orders = {}
    for index in range(40):
        reviewer = f"Reviewer {index}"
        shown = comparisons.next_pair("blind", reviewer)
        assert comparisons.next_pair("blind", reviewer).first.output_id == shown.first.output_id  # fixed for them
        orders[reviewer] = shown.first.model["model"]
        sides = (shown.first.output_id, shown.second.output_id)
        verdict, created = comparisons.submit("blind", reviewer, *sides, "first")
        assert created and verdict.blind and verdict.preferred == shown.first.output_id == verdict.shown_first
        back, again = comparisons.previous("blind", reviewer)
        assert back.first.output_id == shown.first.output_id and again.id == verdict.id  # Back: the same sides
    assert set(orders.values()) == {"JZPeterPan/MedVLM-R1", "grpo-run"}  # both sides come first for someone
    tally = comparisons.tally("blind")
    assert tally.preferred == dict(Counter(orders.values())) and tally.verdicts == 40


def test_leases_skips_and_refusals(tmp_path: Path) -> None:
    comparisons = ComparisonCampaigns(Campaigns(AnnotationStore(tmp_path)))
    made = pairs(2)
    comparisons.create("leases", made, verdicts_per_pair=1, blind=False, created_by="admin")
    held = comparisons.next_pair("leases", "Dr Slow", now=0)
    assert comparisons.next_pair("leases", "Dr Fast", now=1).pair == made[1][0].output_id  # the held one is taken
    assert comparisons.next_pair("leases", "Dr Other", now=2) is None
    later = LEASE_S + 10  # Dr Slow walked away: the lease ran out and someone else takes the pair
    taken = comparisons.next_pair("leases", "Dr Other", now=later)
    assert taken.pair == held.pair
    comparisons.submit("leases", "Dr Other", taken.first.output_id, taken.second.output_id, "tie", now=later)
    with pytest.raises(AnnotationError, match="your hold on this pair ran out"):
        comparisons.submit("leases", "Dr Slow", held.first.output_id, held.second.output_id, "first", now=later)
    # Changing one's own verdict is always allowed.
    _, created = comparisons.submit(
        "leases", "Dr Other", taken.second.output_id, taken.first.output_id, "both_poor", now=later
    )
    assert not created
    with pytest.raises(AnnotationError, match="not a pair of the campaign"):
        comparisons.submit("leases", "Dr Fast", made[0][0].output_id, made[1][1].output_id, "tie")
    with pytest.raises(AnnotationError, match="Say why"):
        comparisons.skip("leases", "Dr Fast", made[1][0].output_id, " ")
    comparisons.skip("leases", "Dr Fast", made[1][0].output_id, "image unreadable")
    assert comparisons.next_pair("leases", "Dr Fast", now=later) is None  # skipped, and the other one is done
    assert comparisons.progress("leases").skipped == 1
    with pytest.raises(AnnotationError, match="comparison campaign"):  # not handed out as single outputs
        Campaigns(comparisons.store).next_output("leases", "Dr Fast")
    with pytest.raises(AnnotationError, match="different cases"):
        comparisons.create("mixed", [(made[0][0], made[1][1])], verdicts_per_pair=1, created_by="admin")


def test_an_adjudicator_decides_a_split_pair_beside_its_verdicts(tmp_path: Path) -> None:
    comparisons = ComparisonCampaigns(Campaigns(AnnotationStore(tmp_path)))
    made = pairs(2)
    comparisons.create("split", made, verdicts_per_pair=2, blind=False, created_by="admin")
    judge_all(comparisons, "split", "Dr One", "first")
    judge_all(comparisons, "split", "Dr Two", "second")  # not blind: both see the first run's answer first
    assert [dict(counts) for _, _, counts in comparisons.outcomes("split")] == [
        {"JZPeterPan/MedVLM-R1": 1, "grpo-run": 1}
    ] * 2
    decided = comparisons.adjudicate("split", 2, "second", " Dr  Adj ", "the GRPO answer names the finding")
    assert (decided.preferred, decided.reviewer, decided.blind) == (made[1][1].output_id, "Dr Adj", False)
    again = comparisons.adjudicate("split", 2, "both_poor", "Dr Adj")  # deciding again replaces the decision
    assert comparisons.adjudications("split") == {made[1][0].output_id: again} and again.preferred is None
    assert len(comparisons.verdicts("split")) == 4  # the reviewers' verdicts stay as they were
    with pytest.raises(AnnotationError, match="1 to 2"):
        comparisons.adjudicate("split", 3, "first", "Dr Adj")
    with pytest.raises(AnnotationError, match="Choose one of"):
        comparisons.adjudicate("split", 1, "left", "Dr Adj")
    assert list(comparisons.adjudications("split")) == [made[1][0].output_id]


def _judge_process(folder: str, reviewer: str, queue) -> None:
    comparisons = ComparisonCampaigns(Campaigns(AnnotationStore(folder)))
    queue.put((reviewer, judge_all(comparisons, "shared pairs", reviewer, choice="second")))


@pytest.mark.slow
def test_eight_reviewers_in_eight_processes_leave_every_pair_with_exactly_k(tmp_path: Path) -> None:
    store = AnnotationStore(tmp_path)
    ComparisonCampaigns(Campaigns(store)).create(
        "shared pairs", pairs(12), verdicts_per_pair=3, blind=True, created_by="admin"
    )
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [
        context.Process(target=_judge_process, args=(str(tmp_path), f"Reviewer {index}", queue)) for index in range(8)
    ]
    for worker in workers:
        worker.start()
    done = dict(queue.get(timeout=300) for _ in workers)
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    counts = verdicts_per_pair(store)
    assert len(counts) == 12 and all(len(reviewers) == 3 == len(set(reviewers)) for reviewers in counts.values())
    assert all(len(set(judged)) == len(judged) for judged in done.values())


def test_two_runs_are_paired_by_question_id_and_must_ask_the_same_questions() -> None:
    first = [{"id": "q1", "question": "Q?", "options": ["A", "B"], "image": "a/x.png"}, {"id": "q2", **_case("y")}]
    second = [{"id": "q2", **_case("y")}, {"id": "q1", "question": "Q?", "options": ["A", "B"], "image": "b/x.png"}]
    kept_first, kept_second = paired_runs(first, second + [{"id": "q3", **_case("z")}])
    assert [sample["id"] for sample in kept_first] == [sample["id"] for sample in kept_second] == ["q1", "q2"]
    with pytest.raises(MedVLMError, match="does not say whether it was answered correctly"):
        paired_runs(first, second, flips_only=True)
    marked = [
        [{**sample, "correct": right} for sample, right in zip(run, rights, strict=True)]
        for run, rights in ((first, [True, True]), (second, [True, False]))
    ]  # the second run lists q2 before q1
    flipped = paired_runs(*marked, flips_only=True)  # q1: right in the first run, wrong in the second
    assert [sample["id"] for sample in flipped[0]] == [sample["id"] for sample in flipped[1]] == ["q1"]
    with pytest.raises(MedVLMError, match="No question flipped"):
        paired_runs(marked[0], marked[0], flips_only=True)
    with pytest.raises(MedVLMError, match="Question q2 differs"):
        paired_runs(first, [{"id": "q2", **_case("other")}])
    with pytest.raises(MedVLMError, match="share no question"):
        paired_runs(first, [{"id": "q9", **_case("y")}])
    with pytest.raises(MedVLMError, match="Sample 1 of the second run has no id"):
        paired_runs(first, [_case("y")])


def _case(image: str) -> dict:
    return {"question": "Which?", "options": ["CT", "MRI"], "image": f"scans/{image}.png"}


def test_the_command_line_imports_a_comparison_as_a_campaign(tmp_path: Path) -> None:
    from train.compare import main as compare_main

    images = [f"scan{index}.png" for index in range(4)]
    runs = {}
    for name, model in (("base", "base-model"), ("grpo", "grpo-model")):
        folder = tmp_path / name
        folder.mkdir()
        samples_file(folder, images, model={"model": model}, correct=True)
        runs[name] = folder
    for index, image in enumerate(images):
        make_image(index).save(runs["base"] / image)
    lines = [json.loads(line) for line in (runs["grpo"] / "samples.jsonl").read_text().splitlines()]
    lines[0]["correct"] = not lines[0]["correct"]  # one question flips
    for line in lines[:2]:  # and answers otherwise; the other two get the base model's very words
        line["completion"] = "<think>Dense bone, bright.</think><answer>A</answer>"
    (runs["grpo"] / "samples.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert compare_main([str(runs["base"]), str(runs["grpo"]), "--output-dir", str(tmp_path / "cmp")]) == 0
    data = tmp_path / "data"
    for name, extra in (("all", []), ("flips", ["--flips-only"])):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            status = main(
                ["campaign", "create", f"base vs grpo {name}", "--comparison", str(tmp_path / "cmp"),
                 "--images", str(runs["base"]), "--reviews-per-output", "2", "--blind", "--data-dir", str(data),
                 *extra]
            )  # fmt: skip
        assert status == 0, out.getvalue()
        assert "(base vs grpo)" in out.getvalue()
        identical = "Warning: 2 of 4 pairs have the same completion in both runs; verdicts on them can only be ties"
        assert (identical in out.getvalue()) == (name == "all")  # the flipped question's answers differ
    comparisons = ComparisonCampaigns(Campaigns(AnnotationStore(data)))
    assert len(comparisons.pairs("base vs grpo all")) == 4 and len(comparisons.pairs("base vs grpo flips")) == 1
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        status = main(["campaign", "export", "base vs grpo all", "--to", str(tmp_path / "x"), "--data-dir", str(data)])
    assert status == 2 and "python -m train.preferences --campaign 'base vs grpo all'" in out.getvalue()
    listed = io.StringIO()
    with contextlib.redirect_stdout(listed):
        assert main(["campaign", "list", "--data-dir", str(data)]) == 0
    assert "base vs grpo flips: 0/1 pairs complete, 0/2 verdicts" in listed.getvalue()
    shown = comparisons.next_pair("base vs grpo all", "Dr CLI")
    assert {shown.first.model["model"], shown.second.model["model"]} == {"base-model", "grpo-model"}
    assert shown.first.question == shown.second.question and shown.first.image == shown.second.image
