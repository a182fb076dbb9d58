"""Reviews back into training: preference pairs and sound outputs, and one DPO step trained on the export."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from helpers import model_output
from medvlm.annotations import AnnotationStore, Review
from medvlm.annotations.campaigns import Campaigns
from train.preferences import export, judged_outputs, main, preference_pairs

SOUND = "<think>Air-filled lobes with fine vessels: lung.</think><answer>B</answer>"
CONTRADICTS = "<think>Air-filled lobes with fine vessels: this is the liver.</think><answer>B</answer>"
SHALLOW = "<think>It is an organ.</think><answer>B</answer>"


def reviewed_store(folder: Path) -> AnnotationStore:
    """Case 0 answered three times (sound, contradicting, split vote); case 1 once, soundly."""
    store = AnnotationStore(folder)
    votes = {
        "sound": (SOUND, [("sound",), ("sound",)]),
        "contradicts": (CONTRADICTS, [("contradiction",), ("contradiction", "hallucination")]),
        "split": (SHALLOW, [("sound",), ("superficial",)]),  # a failure flag at half: fails
    }
    for name, (completion, flags) in votes.items():
        output = model_output(0, output_id=f"case0-{name}".ljust(32, "0"), completion=completion)
        for reviewer, chosen in zip(("Dr A", "Dr B"), flags, strict=True):
            store.add(output, Review(reviewer, chosen))
    other = model_output(1, output_id="case1-sound".ljust(32, "0"), completion=SOUND, question="Which side?")
    store.add(other, Review("Dr A", ("sound",)))
    return store


def test_pairs_come_from_answers_to_the_same_case_judged_by_majority(tmp_path: Path) -> None:
    judged = judged_outputs(reviewed_store(tmp_path).query())
    verdict = {output.review.output_id[:14].rstrip("0"): (output.sound, output.failed) for output in judged}
    assert verdict == {
        "case0-sound": (True, False),
        "case0-contradi": (False, True),
        "case0-split": (False, True),
        "case1-sound": (True, False),
    }
    pairs = {(chosen.review.completion, rejected.review.completion) for chosen, rejected in preference_pairs(judged)}
    assert pairs == {(SOUND, CONTRADICTS), (SOUND, SHALLOW)}  # case 1 has nothing to compare with


def test_an_adjudication_replaces_the_vote(tmp_path: Path) -> None:
    store = reviewed_store(tmp_path)
    judged = judged_outputs(store.query(), adjudicated={"case0-split".ljust(32, "0"): ("sound",)})
    assert [output.sound for output in judged if output.review.completion == SHALLOW] == [True]
    assert (
        len(preference_pairs(judged)) == 2
    )  # the split one now stands beside the sound one, against the contradiction


def test_a_campaign_exports_its_pairs_on_the_command_line(tmp_path: Path) -> None:
    import datasets

    store = AnnotationStore(tmp_path / "data")
    campaigns = Campaigns(store)
    outputs = [
        model_output(0, output_id="c-sound".ljust(32, "0"), completion=SOUND),
        model_output(0, output_id="c-bad".ljust(32, "0"), completion=CONTRADICTS),
    ]
    campaigns.create("Pairs", outputs, reviews_per_output=1, created_by="admin")
    for flags in (("sound",), ("contradiction",)):
        given = campaigns.next_output("Pairs", "Dr A")
        chosen = flags if given.output.completion == SOUND else ("contradiction",)
        campaigns.submit("Pairs", "Dr A", given.output.output_id, Review("Dr A", chosen))
    out = tmp_path / "prefs"
    assert main(["--data-dir", str(tmp_path / "data"), "--campaign", "Pairs", "--output-dir", str(out)]) == 0
    rows = datasets.load_dataset(str(out / "dpo"), split="train", cache_dir=str(tmp_path / "cache"))
    assert rows["chosen"][0][0]["content"][0]["text"] == SOUND and rows["rejected"][0][0]["content"][0]["text"] == (
        CONTRADICTS
    )
    prompt = rows["prompt"][0][0]
    assert prompt["role"] == "user" and prompt["content"][0]["type"] == "image"
    assert "Which organ is shown?" in "".join(part["text"] or "" for part in prompt["content"])
    assert rows[0]["image"].size == outputs[0].image.size
    assert main(["--data-dir", str(tmp_path / "empty"), "--output-dir", str(out)]) == 2


@pytest.mark.slow
def test_one_dpo_step_trains_the_tiny_model_on_the_exported_pairs(tmp_path: Path, tiny_model_dir: Path) -> None:
    import datasets
    import torch
    from trl import DPOConfig, DPOTrainer

    from medvlm.model import load_model

    counts = export(reviewed_store(tmp_path / "data").query(), tmp_path / "prefs")
    assert counts == {"dpo": 2, "sft": 2, "identical": 0}
    pairs = datasets.load_dataset(str(tmp_path / "prefs" / "dpo"), split="train", cache_dir=str(tmp_path / "cache"))
    loaded = load_model(tiny_model_dir, fast_cpu=False)
    before = {name: tensor.detach().clone() for name, tensor in loaded.model.named_parameters()}
    trainer = DPOTrainer(
        model=loaded.model,
        args=DPOConfig(
            output_dir=str(tmp_path / "dpo-run"),
            max_steps=1,
            per_device_train_batch_size=2,
            learning_rate=1e-2,
            logging_steps=1,
            report_to="none",
            save_strategy="no",
            use_cpu=True,
            bf16=False,
            remove_unused_columns=False,
        ),
        train_dataset=pairs.remove_columns(["chosen_output_id", "rejected_output_id"]),
        processing_class=loaded.processor,
    )
    result = trainer.train()
    assert math.isfinite(result.training_loss)
    changed = [name for name, tensor in loaded.model.named_parameters() if not torch.equal(tensor, before[name])]
    assert changed, "one DPO step changed no weight"


def test_a_comparison_of_identical_answers_gives_no_pair_says_so_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two runs that answered alike: verdicts on them would pair a text with itself. None is written, and the
    command line says why, without claiming a write of nothing."""
    import dataclasses

    from medvlm.annotations.comparison_campaigns import ComparisonCampaigns

    store = AnnotationStore(tmp_path / "data")
    pairs = []
    for index in range(3):
        base = model_output(index, output_id=f"base{index}".ljust(32, "0"), completion=SOUND)
        pairs.append((base, dataclasses.replace(base, output_id=f"copy{index}".ljust(32, "0"), model={"model": "b"})))
    comparisons = ComparisonCampaigns(Campaigns(store))
    comparisons.create("Alike", pairs, verdicts_per_pair=2, created_by="admin")
    for reviewer in ("Dr A", "Dr B"):
        while (shown := comparisons.next_pair("Alike", reviewer)) is not None:
            comparisons.submit("Alike", reviewer, shown.first.output_id, shown.second.output_id, "first")
    out = tmp_path / "prefs"
    assert main(["--data-dir", str(tmp_path / "data"), "--campaign", "Alike", "--output-dir", str(out)]) == 2
    assert capsys.readouterr().err == (
        "error: Nothing to train on yet (no pair among the 6 verdicts has a majority for one of two different "
        "answers; 3 pair(s) chose and rejected the same text, which teaches nothing): no dpo/ or sft/ is written.\n"
    )  # about verdicts only: the campaign has no reviews to speak of
    assert not out.exists()

    reviewed = AnnotationStore(tmp_path / "reviewed")  # a sound answer, and nothing to pair it with
    reviewed.add(model_output(0, completion=SOUND), Review("Dr C", ("sound",)))
    assert main(["--data-dir", str(tmp_path / "reviewed"), "--output-dir", str(out)]) == 0
    said = capsys.readouterr().out
    assert "dpo/ is not written" in said and "Wrote 0" not in said and not (out / "dpo").exists()
    assert "sound output(s) to" in said and (out / "sft" / "train.parquet").is_file()


def test_reviews_that_judge_one_text_both_sound_and_failing_give_no_pair_and_say_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two models wrote the same answer to a case and its reviewers judged the copies differently: a pair of that
    text with itself teaches nothing, and is left out and counted, as it is from verdicts."""
    store = AnnotationStore(tmp_path / "data")
    store.add(model_output(0, output_id="first".ljust(32, "0"), completion=SOUND), Review("Dr A", ("sound",)))
    twin = model_output(0, output_id="twin".ljust(32, "0"), completion=SOUND, model={"model": "other"})
    store.add(twin, Review("Dr B", ("superficial",)))
    out = tmp_path / "prefs"
    assert main(["--data-dir", str(tmp_path / "data"), "--output-dir", str(out)]) == 0
    said = capsys.readouterr().out.splitlines()
    assert said[0].startswith("No preference pair (") and said[0].endswith("dpo/ is not written.")
    assert said[2] == (
        "Left out 1 pair(s) whose chosen and rejected answers are the same text: they teach nothing (the two answers "
        "were identical)."
    )
    assert not (out / "dpo").exists() and (out / "sft" / "train.parquet").is_file()
    assert main(["--data-dir", str(tmp_path / "empty"), "--output-dir", str(out)]) == 2
    assert capsys.readouterr().err == (
        "error: Nothing to train on yet (there are no reviews and no verdicts): no dpo/ or sft/ is written.\n"
    )


def test_verdicts_become_preference_pairs_by_majority_and_export_from_a_comparison_campaign(tmp_path: Path) -> None:
    import dataclasses

    import datasets

    from medvlm.annotations import Verdict
    from medvlm.annotations.comparison_campaigns import ComparisonCampaigns
    from train.preferences import verdict_pairs

    won, tied = ("a" * 32, "b" * 32), ("c" * 32, "d" * 32)
    verdicts = [
        Verdict.from_sides(*won, "second", reviewer="Dr A", blind=True),
        Verdict.from_sides(won[1], won[0], "first", reviewer="Dr B", blind=True),  # the same output, other side
        Verdict.from_sides(*won, "tie", reviewer="Dr C", blind=True),
        Verdict.from_sides(*tied, "first", reviewer="Dr A", blind=True),
        Verdict.from_sides(*tied, "second", reviewer="Dr B", blind=True),  # one each: no majority
    ]
    assert verdict_pairs(verdicts) == [(won[1], won[0])]
    assert verdict_pairs([Verdict.from_sides(*won, "both_poor", reviewer="Dr A", blind=False)]) == []
    decided = [Verdict.from_sides(*tied, "first", reviewer="Dr Adj", blind=False),  # splits no more
               Verdict.from_sides(*won, "tie", reviewer="Dr Adj", blind=False)]  # overrides its majority  # fmt: skip
    assert verdict_pairs(verdicts, decided) == [(tied[0], tied[1])]

    store = AnnotationStore(tmp_path / "data")
    base = model_output(0, output_id="base".ljust(32, "0"), completion=SHALLOW)
    grpo = dataclasses.replace(base, output_id="grpo".ljust(32, "0"), completion=SOUND, model={"model": "grpo"})
    comparisons = ComparisonCampaigns(Campaigns(store))
    comparisons.create("Base vs GRPO", [(base, grpo)], verdicts_per_pair=2, created_by="admin")
    for reviewer in ("Dr A", "Dr B"):
        shown = comparisons.next_pair("Base vs GRPO", reviewer)
        better = "first" if shown.first.output_id == grpo.output_id else "second"
        comparisons.submit("Base vs GRPO", reviewer, shown.first.output_id, shown.second.output_id, better)
    out = tmp_path / "prefs"
    assert main(["--data-dir", str(tmp_path / "data"), "--campaign", "Base vs GRPO", "--output-dir", str(out)]) == 0
    rows = datasets.load_dataset(str(out / "dpo"), split="train", cache_dir=str(tmp_path / "cache"))
    assert len(rows) == 1 and rows["chosen_output_id"] == [grpo.output_id]
    assert rows["chosen"][0][0]["content"][0]["text"] == SOUND and rows["rejected"][0][0]["content"][0]["text"] == (
        SHALLOW
    )
    assert rows[0]["image"].size == base.image.size
    # An adjudicator (who sees the models: answer 1 is the first run's) decides the pair for the base model.
    decision = comparisons.adjudicate("Base vs GRPO", 1, "first", "Dr Adj", "the base reads the image")
    assert decision.preferred == base.output_id and comparisons.adjudications("Base vs GRPO") == {
        base.output_id: dataclasses.replace(decision, reviewer="Dr Adj")
    }
    decided_out = tmp_path / "decided"
    assert (
        main(["--data-dir", str(tmp_path / "data"), "--campaign", "Base vs GRPO", "--output-dir", str(decided_out)])
        == 0
    )
    decided_rows = datasets.load_dataset(str(decided_out / "dpo"), split="train", cache_dir=str(tmp_path / "c1"))
    assert decided_rows["chosen_output_id"] == [base.output_id] and decided_rows["rejected_output_id"] == [
        grpo.output_id
    ]
    # Without --campaign, the store's verdicts count too (no review was written at all here).
    assert main(["--data-dir", str(tmp_path / "data"), "--output-dir", str(tmp_path / "all")]) == 0
    everything = datasets.load_dataset(str(tmp_path / "all" / "dpo"), split="train", cache_dir=str(tmp_path / "c2"))
    assert everything["chosen_output_id"] == [grpo.output_id]
