"""The GRPO rewards on the recipe's known edge cases, for every rule side by side."""

from __future__ import annotations

import pytest

from medvlm.errors import MedVLMError
from train.rewards import (
    REWARDS,
    accuracy_reward,
    completion_text,
    consistency_reward,
    format_reward,
    get_rewards,
    medr1_accuracy_reward,
    paper_accuracy_reward,
)

OPTIONS = ["CT", "X-Ray", "MRI", "Ultrasound"]  # the truth is C, "MRI"
THINK = "<think> The scan shows the knee. </think>"

# completion -> (format, accuracy with options, accuracy without options, paper, Med-R1)
CASES = {
    "letter": (f"{THINK}\n<answer>C</answer>", (1.0, 1.0, 1.0, 1.0, 1.0)),
    "letter and option text (paper flaw: the I of MRI)": (
        f"{THINK}<answer>C) MRI</answer>",
        (1.0, 1.0, 1.0, 0.0, 0.0),
    ),
    "letter in brackets (paper: half)": (f"{THINK}<answer>(C)</answer>", (1.0, 1.0, 1.0, 0.5, 0.0)),
    "letter and period (paper: half)": (f"{THINK}<answer>C.</answer>", (1.0, 1.0, 1.0, 0.5, 0.0)),
    "lower case": (f"{THINK}<answer>c</answer>", (1.0, 1.0, 1.0, 1.0, 0.0)),
    "no answer tag": (f"{THINK} C", (0.0, 0.0, 0.0, 0.0, 0.0)),
    "bare letter (Med-R1 compares the whole text)": ("C", (0.0, 0.0, 0.0, 0.0, 1.0)),
    "unclosed think, then an answer": ("<think> The scan <answer>C</answer>", (0.0, 1.0, 1.0, 1.0, 1.0)),
    "unclosed think, cut off": ("<think> The scan shows", (0.0, 0.0, 0.0, 0.0, 0.0)),
    "two answer tags, wrong one first": (f"{THINK}<answer>A</answer><answer>C</answer>", (1.0, 0.0, 0.0, 0.0, 0.0)),
    "two different answer tags, right one first (ours: no answer; the paper reads the first)": (
        f"{THINK}<answer>C</answer><answer>A</answer>",
        (1.0, 0.0, 0.0, 1.0, 1.0),
    ),
    "the same answer twice": (f"{THINK}<answer>C</answer><answer>C</answer>", (1.0, 1.0, 1.0, 1.0, 1.0)),
    "letter, comma, option text": (f"{THINK}<answer>C, MRI</answer>", (1.0, 1.0, 1.0, 0.0, 0.0)),
    "letter, then a reason on the next line": (
        f"{THINK}<answer>C\nBecause of the contrast.</answer>",
        (1.0, 1.0, 1.0, 0.0, 0.0),
    ),
    "full-width letter": (f"{THINK}<answer>\uff23</answer>", (1.0, 1.0, 1.0, 0.0, 0.0)),
    "option text as answer": (f"{THINK}<answer>MRI</answer>", (1.0, 1.0, 0.0, 0.0, 0.0)),
    "answer tag inside the reasoning": (
        "<think> maybe <answer>C</answer> </think><answer>B</answer>",
        (1.0, 0.0, 0.0, 1.0, 1.0),
    ),
    "two letters": (f"{THINK}<answer>C or D</answer>", (1.0, 0.0, 0.0, 0.0, 0.0)),
    "wrong letter": (f"{THINK}<answer>B</answer>", (1.0, 0.0, 0.0, 0.0, 0.0)),
    "answer on its own line (Med-R1's regex is single-line)": (
        f"{THINK}<answer>\nC\n</answer>",
        (1.0, 1.0, 1.0, 1.0, 0.0),
    ),
    "trailing newline (the paper's format reward gives 0)": (
        f"{THINK}\n<answer>C</answer>\n",
        (1.0, 1.0, 1.0, 1.0, 1.0),
    ),
    "empty": ("", (0.0, 0.0, 0.0, 0.0, 0.0)),
}


def _all_rewards(completion, solution="C") -> tuple[float | None, ...]:
    return (
        format_reward([completion])[0],
        accuracy_reward([completion], [solution], options=[OPTIONS])[0],
        accuracy_reward([completion], [solution])[0],
        paper_accuracy_reward([completion], [solution])[0],
        medr1_accuracy_reward([completion], [solution])[0],
    )


@pytest.mark.parametrize("completion, expected", CASES.values(), ids=CASES.keys())
def test_reward_table(completion: str, expected: tuple[float, ...]) -> None:
    assert _all_rewards(completion) == expected


@pytest.mark.parametrize("completion, expected", CASES.values(), ids=CASES.keys())
def test_conversational_completions_and_tagged_solutions_score_the_same(
    completion: str, expected: tuple[float, ...]
) -> None:
    as_string = [{"role": "assistant", "content": completion}]
    as_parts = [{"role": "assistant", "content": [{"type": "text", "text": completion}]}]
    assert _all_rewards(as_string) == expected
    assert _all_rewards(as_parts) == expected
    assert _all_rewards(completion, solution="<answer> C </answer>") == expected


def test_rewards_score_a_batch_in_order() -> None:
    completions = [f"{THINK}<answer>A</answer>", f"{THINK}<answer>B</answer>", "no format"]
    assert format_reward(completions) == [1.0, 1.0, 0.0]
    assert accuracy_reward(completions, ["A", "A", "A"], options=[OPTIONS] * 3) == [1.0, 0.0, 0.0]
    assert paper_accuracy_reward(completions, ["B", "B", "B"]) == [0.0, 1.0, 0.0]


def test_accuracy_reward_cannot_judge_a_solution_that_is_not_a_letter() -> None:
    assert accuracy_reward([f"{THINK}<answer>C</answer>"], ["MRI"]) == [None]


def test_accuracy_reward_refuses_a_letter_that_is_not_offered() -> None:
    completion = f"{THINK}<answer>D</answer>"
    assert accuracy_reward([completion], ["D"], options=[["Yes", "No", "Maybe"]]) == [0.0]
    assert accuracy_reward([completion], ["D"]) == [1.0]


def test_rewards_accept_the_other_dataset_columns_as_keyword_arguments() -> None:
    extra = {"modality": ["MR"], "question_type": [None], "id": ["q1"], "image": [None], "trainer_state": object()}
    completion = [f"{THINK}<answer>C</answer>"]
    for reward in REWARDS.values():
        assert reward(completion, solution=["C"], options=[OPTIONS], **extra) == [1.0]


def test_completion_text_joins_message_contents() -> None:
    messages = [
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "<think> a"},
                {"type": "image"},
                {"type": "text", "text": " </think>"},
            ],
        }
    ]
    assert completion_text(messages) == "<think> a </think>"
    assert completion_text("plain") == "plain"


def test_get_rewards_by_name() -> None:
    assert get_rewards(["accuracy", "format"]) == [accuracy_reward, format_reward]
    assert get_rewards(["accuracy_paper", "accuracy_medr1"]) == [paper_accuracy_reward, medr1_accuracy_reward]
    assert get_rewards(["consistency"]) == [consistency_reward]
    with pytest.raises(MedVLMError, match="'acuracy'.*format, accuracy, accuracy_paper, accuracy_medr1, consistency"):
        get_rewards(["format", "acuracy"])


# completion -> consistency reward, for OPTIONS (CT, X-Ray, MRI, Ultrasound)
CONSISTENCY = {
    "concludes the answer": ("<think>Bright fluid, no bone artefact: an MRI.</think><answer>C</answer>", 1.0),
    "concludes another option": ("<think>Bright fluid, no bone artefact: an MRI.</think><answer>A</answer>", 0.0),
    "concludes another option by letter and text": (
        "<think>Dense bone, Hounsfield units given. So the answer is CT.</think><answer>C</answer>",
        0.0,
    ),
    "weighs options, concludes the answer": (
        "<think>Not CT: no beam hardening. Not Ultrasound. Fluid is bright, so it is MRI.</think><answer>C</answer>",
        1.0,
    ),
    "names no option at all": ("<think>The knee joint is shown in a sagittal plane.</think><answer>C</answer>", 1.0),
    "names only another option": ("<think>Typical Ultrasound speckle.</think><answer>B</answer>", 0.0),
    "no answer": ("<think>Bright fluid: an MRI.</think>", 0.0),
    "answer not offered": ("<think>Bright fluid: an MRI.</think><answer>PET</answer>", 0.0),
    "never closes think": ("<think>Bright fluid, so MRI", 0.0),
}


@pytest.mark.parametrize(("completion", "expected"), CONSISTENCY.values(), ids=CONSISTENCY.keys())
def test_consistency_table(completion: str, expected: float) -> None:
    assert consistency_reward([completion], options=[OPTIONS]) == [expected]
    messages = [{"role": "assistant", "content": [{"type": "text", "text": completion}]}]
    assert consistency_reward([messages], options=[OPTIONS], solution=["C"]) == [expected]  # TRL's keyword arguments


def test_consistency_is_the_campaigns_contradiction_hint() -> None:
    from medvlm.hints import reasoning_hints
    from medvlm.parsing import parse_completion

    for completion, expected in CONSISTENCY.values():
        if parse_completion(completion, OPTIONS, final=True).letter is not None:  # an answer to agree with
            hinted = any(hint.kind == "contradiction" for hint in reasoning_hints(completion, "", OPTIONS))
            assert expected == (0.0 if hinted else 1.0), completion
    with pytest.raises(MedVLMError, match="needs the dataset's options column"):
        consistency_reward(["<answer>A</answer>"])
