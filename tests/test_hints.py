"""Pre-check hints: each check fires on what it describes, points at its evidence, and stays quiet otherwise."""

from __future__ import annotations

from medvlm.annotations import FLAGS
from medvlm.hints import reasoning_hints

ORGANS = ["Liver", "Spleen", "Kidney"]
MODALITIES = ["CT", "MRI", "X-Ray", "Ultrasound"]


def kinds(completion: str, question: str = "Which organ is shown?", options=ORGANS) -> list[str]:
    return [hint.kind for hint in reasoning_hints(completion, question, options)]


def test_sound_detailed_reasoning_gets_no_hint() -> None:
    completion = (
        "<think>A large homogeneous organ fills the right upper quadrant under the diaphragm, with hepatic "
        "veins draining into the inferior vena cava: this is the liver.</think><answer>A</answer>"
    )
    assert kinds(completion) == []


def test_a_conclusion_naming_another_option_is_a_contradiction_candidate_with_its_sentence() -> None:
    completion = (
        "<think>The organ lies in the left upper quadrant beside the stomach, posterior and lateral. "
        "Its size and position match the spleen.</think><answer>A</answer>"
    )
    (hint,) = reasoning_hints(completion, "Which organ is shown?", ORGANS)
    assert (hint.kind, hint.flag) == ("contradiction", "contradiction") and hint.flag in FLAGS
    assert completion[hint.start : hint.end] == "Its size and position match the spleen."
    assert "'Spleen'" in hint.message and "A) Liver" in hint.message


def test_reasoning_that_names_only_other_options_is_a_contradiction_candidate() -> None:
    completion = (
        "<think>The kidney would show a hilum and cortex. Here the outline is smooth and the texture even, "
        "nothing else is seen in the field.</think><answer>A</answer>"
    )
    (hint,) = reasoning_hints(completion, "Which organ is shown?", ORGANS)
    assert hint.kind == "contradiction" and "never the answer" in hint.message


def test_short_or_restating_reasoning_is_a_superficial_candidate() -> None:
    assert kinds("<think>It is a CT.</think><answer>A</answer>", "Which modality?", MODALITIES) == ["superficial"]
    restating = (
        "<think>The question asks which imaging modality was used to acquire this image. This image is a CT "
        "image, so the modality used is CT.</think><answer>A</answer>"
    )
    assert kinds(restating, "Which imaging modality was used to acquire this image?", MODALITIES) == ["superficial"]
    assert kinds("<think></think><answer>A</answer>") == ["superficial"]  # no reasoning at all


def test_an_answer_that_is_no_offered_option_is_flagged_as_such() -> None:
    hints = reasoning_hints(
        "<think>Dense bone and air, typical of a plain film of the chest wall and ribs.</think><answer>E</answer>",
        "Which modality?",
        ["CT", "MRI"],
    )
    assert [hint.kind for hint in hints] == ["not_an_option"] and hints[0].flag == "wrong_answer"


def test_option_names_are_matched_as_words() -> None:
    # "CT" inside "act" or "ACTH" is not a mention of the CT option.
    completion = (
        "<think>The act of scanning with a transducer, gel on the skin and the ACTH level do not matter; the "
        "grey speckle and acoustic shadowing are those of sonography.</think><answer>D</answer>"
    )
    assert kinds(completion, "Which modality?", MODALITIES) == []
