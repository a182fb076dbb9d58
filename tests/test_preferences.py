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
    assert counts == {"dpo": 2, "sft": 2}
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
