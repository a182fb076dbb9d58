"""The prompt: options block, the four instruction styles, validation messages, chat messages."""

from __future__ import annotations

import pytest

from medvlm.errors import MedVLMError, QuestionError
from medvlm.prompt import (
    LETTERS,
    MAX_OPTIONS,
    MIN_OPTIONS,
    PromptStyle,
    build_messages,
    build_prompt_text,
    format_options,
    format_question,
    validate_question,
)

QUESTION = "What is apparent in this image?"
OPTIONS = ["Hemorrhage", "Acute infarct", "Abscess formation", "Chronic infarct"]
PROBLEM = "What is apparent in this image?\nA) Hemorrhage\nB) Acute infarct\nC) Abscess formation\nD) Chronic infarct"

# The three MedVLM-R1 instruction lines, copied from recipe.md.
INSTRUCTION_LINES = (
    "Your task:",
    "1. Think through the question step by step, enclose your reasoning process in <think>...</think> tags.",
    "2. Then provide the correct single-letter choice (A, B, C, D,...) inside <answer>...</answer> tags.",
    "3. No extra information or text outside of these tags.",
)


def test_letters_and_limits() -> None:
    assert LETTERS == "ABCDEFGHIJ"
    assert (MIN_OPTIONS, MAX_OPTIONS) == (2, 10)


def test_options_block_and_question_join_as_in_the_recipe() -> None:
    assert format_options(OPTIONS) == "A) Hemorrhage\nB) Acute infarct\nC) Abscess formation\nD) Chronic infarct"
    # recipe.md: question + "\n" + "\n".join("A) opt1", "B) opt2", ...); also the recipe's data record.
    assert format_question(QUESTION, OPTIONS) == PROBLEM


def test_ten_options_are_lettered_a_to_j() -> None:
    options = [f"option {n}" for n in range(10)]
    lines = format_options(options).split("\n")
    assert [line.split(")")[0] for line in lines] == list("ABCDEFGHIJ")
    assert lines[-1] == "J) option 9"
    assert "J) option 9" in build_prompt_text("Which?", options)


def test_medvlm_style_is_the_question_then_the_instructions_cleanly() -> None:
    text = build_prompt_text(QUESTION, OPTIONS, PromptStyle.MEDVLM)
    assert text == PROBLEM + "\n" + "\n".join(INSTRUCTION_LINES)
    for line in INSTRUCTION_LINES:
        assert line in text.split("\n")
    assert all(line == line.strip() for line in text.split("\n"))


def test_medvlm_is_the_default_style() -> None:
    assert build_prompt_text(QUESTION, OPTIONS) == build_prompt_text(QUESTION, OPTIONS, PromptStyle.MEDVLM)


def test_medvlm_exact_is_the_original_string_byte_for_byte() -> None:
    # JZPeterPan/MedVLM-R1, demo.ipynb and src/eval/test_qwen2vl_med.py:
    # QUESTION_TEMPLATE.format(Question=problem), the template indented by four spaces.
    expected = (
        "\n"
        "    What is apparent in this image?\n"
        "A) Hemorrhage\n"
        "B) Acute infarct\n"
        "C) Abscess formation\n"
        "D) Chronic infarct \n"
        "    Your task: \n"
        "    1. Think through the question step by step, enclose your reasoning process in <think>...</think> tags. \n"
        "    2. Then provide the correct single-letter choice (A, B, C, D,...) inside <answer>...</answer> tags.\n"
        "    3. No extra information or text outside of these tags.\n"
        "    "
    )
    assert build_prompt_text(QUESTION, OPTIONS, PromptStyle.MEDVLM_EXACT) == expected
    assert build_prompt_text(QUESTION, OPTIONS, "medvlm-exact") == expected


def test_medr1_style_puts_the_three_instructions_on_one_line_after_the_question() -> None:
    expected = (
        PROBLEM + " Your task: 1. Think through the question step by step, enclose your reasoning process in "
        "<think>...</think> tags. 2. Then provide the correct single-letter choice (A, B, C, D,...) inside "
        "<answer>...</answer> tags. 3. No extra information or text outside of these tags."
    )
    assert build_prompt_text(QUESTION, OPTIONS, PromptStyle.MEDR1) == expected


def test_no_think_style_asks_only_for_the_answer_tag() -> None:
    text = build_prompt_text(QUESTION, OPTIONS, PromptStyle.NO_THINK)
    assert text == (
        PROBLEM + " Your task: 1. Provide the correct single-letter choice (A, B, C, D,...) inside "
        "<answer>...</answer> tags. 2. No extra information or text outside of this tag."
    )
    assert "<answer>" in text and "think" not in text.lower()


@pytest.mark.parametrize("style", list(PromptStyle))
def test_every_style_contains_the_question_and_all_options(style: PromptStyle) -> None:
    text = build_prompt_text(QUESTION, OPTIONS, style)
    assert PROBLEM in text
    assert build_prompt_text(QUESTION, OPTIONS, style.value) == text


def test_style_values() -> None:
    assert [style.value for style in PromptStyle] == ["medvlm", "medvlm-exact", "medr1", "no-think"]


def test_unknown_style_is_a_readable_error() -> None:
    with pytest.raises(MedVLMError, match="Unknown prompt style 'fancy'.*medvlm, medvlm-exact, medr1, no-think"):
        build_prompt_text(QUESTION, OPTIONS, "fancy")


def test_validation_strips_question_and_options() -> None:
    assert validate_question("  Which modality?  ", [" CT ", "MRI\n"]) == ("Which modality?", ["CT", "MRI"])
    assert build_prompt_text("  Which modality? ", [" CT", "MRI "]).startswith("Which modality?\nA) CT\nB) MRI\n")


@pytest.mark.parametrize("question", ["", "   ", "\n\t"])
def test_empty_question_is_refused(question: str) -> None:
    with pytest.raises(QuestionError, match=r"^Please type a question\.$"):
        validate_question(question, OPTIONS)


def test_one_option_is_too_few() -> None:
    with pytest.raises(QuestionError, match=r"at least 2 options \(got 1\)"):
        validate_question(QUESTION, ["MRI"])
    with pytest.raises(QuestionError, match=r"at least 2 options \(got 0\)"):
        validate_question(QUESTION, [])


def test_eleven_options_are_too_many() -> None:
    with pytest.raises(QuestionError, match=r"at most 10 options, A to J \(got 11\)"):
        validate_question(QUESTION, [f"option {n}" for n in range(11)])


def test_empty_option_names_its_letter() -> None:
    with pytest.raises(QuestionError, match=r"^Option C is empty\. Please fill it in or remove it\.$"):
        validate_question(QUESTION, ["CT", "MRI", "  ", "X-ray"])


def test_duplicate_options_name_their_letters_ignoring_case_and_spacing() -> None:
    with pytest.raises(QuestionError, match=r"^Options A and C are the same\. Please make each option different\.$"):
        validate_question(QUESTION, ["MRI", "CT", " mri", "X-ray"])
    with pytest.raises(QuestionError, match=r"Options B, C and D are the same"):
        validate_question(QUESTION, ["CT", "Acute  infarct", "acute infarct", "ACUTE INFARCT"])


def test_options_given_as_one_string_are_refused() -> None:
    with pytest.raises(QuestionError, match="list of separate answers"):
        validate_question(QUESTION, "ABCD")


def test_build_prompt_text_validates() -> None:
    with pytest.raises(QuestionError, match="Please type a question"):
        build_prompt_text(" ", OPTIONS)


def test_messages_are_one_user_turn_with_image_then_text() -> None:
    messages = build_messages(QUESTION, OPTIONS)
    assert messages == [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": build_prompt_text(QUESTION, OPTIONS)}],
        }
    ]


def test_messages_carry_the_image_and_style_when_given() -> None:
    image = object()
    messages = build_messages(QUESTION, OPTIONS, style=PromptStyle.NO_THINK, image=image)
    assert len(messages) == 1 and messages[0]["role"] == "user"
    image_entry, text_entry = messages[0]["content"]
    assert image_entry == {"type": "image", "image": image}
    assert text_entry == {"type": "text", "text": build_prompt_text(QUESTION, OPTIONS, PromptStyle.NO_THINK)}
    assert all(message["role"] != "system" for message in messages)


# --- Limits (the hostile-input campaign) ----------------------------------------------------------


def test_a_question_over_the_limit_is_refused_with_its_length() -> None:
    from medvlm.user_text import MAX_QUESTION_CHARS

    with pytest.raises(
        QuestionError, match=f"^The question is too long: 100,000 characters, and the limit is {MAX_QUESTION_CHARS:,}"
    ):
        validate_question("x" * 100_000, ["A", "B"])
    assert validate_question("x" * MAX_QUESTION_CHARS, ["A", "B"])[0] == "x" * MAX_QUESTION_CHARS


def test_an_option_over_the_limit_is_refused() -> None:
    with pytest.raises(QuestionError, match="^Option B is too long: 501 characters"):
        validate_question("Which?", ["Liver", "y" * 501])


@pytest.mark.parametrize("text", ["Which\x00 organ?", "Which\x1b[31m organ?", "Which\x7f?"])
def test_control_characters_in_a_question_are_refused(text: str) -> None:
    with pytest.raises(QuestionError, match=r"^The question contains a control character \(U\+00(00|1B|7F)\)"):
        validate_question(text, ["A", "B"])


def test_newlines_and_tabs_are_fine_in_a_question_but_not_in_an_option() -> None:
    assert validate_question("Which organ?\n\tLook closely.", ["A", "B"])[0] == "Which organ?\n\tLook closely."
    with pytest.raises(QuestionError, match=r"^Option A contains a control character \(U\+0009\)"):
        validate_question("Which?", ["Li\tver", "Lung"])
