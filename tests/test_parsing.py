"""Reading completions: the letter, the reasoning, the format check, streaming states, problems."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from medvlm.errors import QuestionError
from medvlm.parsing import (
    ANSWERED_WITHOUT_CLOSING_THINK,
    EMPTY_ANSWER,
    NEVER_CLOSED_ANSWER,
    NEVER_CLOSED_THINK,
    NO_ANSWER_TAG,
    ParsedCompletion,
    extract_letter,
    parse_completion,
)
from medvlm.prompt import LETTERS, build_prompt_text, normalize_option_text

# C is "MRI" and B is "CT", as in the recipe's known edge cases.
OPTIONS = ["Hemorrhage", "CT", "MRI", "Chronic infarct"]
TAGS = ("<think>", "</think>", "<answer>", "</answer>")


# -- extract_letter --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        "C",
        "(C)",
        "C.",
        "C)",
        "C) MRI",
        "c",
        "Answer: C",
        "answer: c",
        "The answer is C",
        "The correct answer is (C).",
        "<answer> C </answer>",
        "C: MRI",
        "**C**",
        "**C) MRI**",
        "(C) MRI",
        "[C]",
        "C - MRI",
        "Option C",
        "Option C is correct.",
        "I think the answer is C, because of the signal.",
        "MRI",
        "  mri ",
        "Mri.",
        "MRI (C)",
        "C MRI",
        "The answer is MRI.",
        # Explicit letter and text disagree (C is MRI, B is CT): the explicit letter wins.
        "C) CT",
    ],
)
def test_reads_c(answer: str) -> None:
    assert extract_letter(answer, OPTIONS) == "C"


@pytest.mark.parametrize(
    "answer",
    [
        "",
        "   ",
        "E",  # outside A-D
        "K",
        "A or C",
        "A, C",
        "(A) and (C)",
        "A/C",
        "A) CT or C) MRI",
        "The answer is A or C",
        "A CT scan",  # the article is not a choice
        "The answer is a CT scan",
        "Ultrasound",
        "e. coli",
        "MRI of the knee",
    ],
)
def test_reads_no_letter(answer: str) -> None:
    assert extract_letter(answer, OPTIONS) is None


def test_the_papers_flawed_cases_read_as_a_person_would() -> None:
    # MedVLM-R1's reward collects every character in A..J: "C) MRI" gives C and I (0.0), "(C)" and
    # "C." score 0.5. All three plainly answer C.
    for answer in ("C) MRI", "(C)", "C."):
        assert extract_letter(answer, 4) == "C"


def test_capitals_inside_words_are_never_letters() -> None:
    assert extract_letter("MRI", ["CT", "X-ray", "Ultrasound", "PET"]) is None
    assert extract_letter("MRI", 10) is None
    assert extract_letter("CT", 4) is None


def test_option_text_is_matched_only_when_given() -> None:
    assert extract_letter("MRI", OPTIONS) == "C"
    assert extract_letter("MRI", 4) is None


def test_free_text_starting_with_a_is_an_option_only_if_it_is_the_option_text() -> None:
    assert extract_letter("A CT scan", ["CT scan", "MRI"]) == "A"  # "A" then option A's text
    assert extract_letter("A CT scan", ["MRI", "A CT scan"]) == "B"  # the text of option B
    assert extract_letter("A CT scan", ["MRI", "CT"]) is None


def test_explicit_letter_outside_the_options_is_not_rescued_by_its_text() -> None:
    assert extract_letter("E) MRI", OPTIONS) is None


def test_letters_up_to_j_with_ten_options() -> None:
    assert extract_letter("J", 10) == "J"
    assert extract_letter("I.", 10) == "I"
    assert extract_letter("J", 9) is None


# -- parse_completion: answers and problems --------------------------------------------------------


def test_well_formed_completion() -> None:
    parsed = parse_completion("<think> The image is an MRI of a knee ... </think>\n\n<answer>A</answer>", OPTIONS)
    assert parsed == ParsedCompletion(
        raw="<think> The image is an MRI of a knee ... </think>\n\n<answer>A</answer>",
        reasoning="The image is an MRI of a knee ...",
        answer_text="A",
        letter="A",
        format_ok=True,
        think_closed=True,
        complete=True,
        problem=None,
    )


@pytest.mark.parametrize("answer", ["C) MRI", "(C)", "C.", "MRI", "Answer: C"])
def test_completion_with_recipe_edge_case_answers(answer: str) -> None:
    parsed = parse_completion(f"<think>The signal is typical.</think>\n<answer>{answer}</answer>", OPTIONS)
    assert (parsed.letter, parsed.answer_text, parsed.problem, parsed.format_ok) == ("C", answer, None, True)


@pytest.mark.parametrize(
    ("completion", "problem"),
    [
        ("<think>x</think><answer>  </answer>", EMPTY_ANSWER),
        ("<think>x</think><answer>E</answer>", "The model answered 'E', which is not one of the options (A-D)."),
        ("<think>x</think><answer>A, C</answer>", "The answer names several options (A, C)."),
        (
            "<think>x</think><answer>Ultrasound</answer>",
            "The answer 'Ultrasound' does not match any of the options (A-D).",
        ),
    ],
)
def test_closed_answers_that_name_no_option_explain_why(completion: str, problem: str) -> None:
    parsed = parse_completion(completion, OPTIONS)
    assert parsed.complete and parsed.letter is None
    assert parsed.problem == problem


def test_problem_messages_say_what_the_clinician_needs() -> None:
    assert EMPTY_ANSWER == "The answer is empty."
    assert (
        NEVER_CLOSED_THINK == "The model never closed its reasoning (<think> without </think>), so there is no answer."
    )
    assert NO_ANSWER_TAG == "No <answer> tag: the model did not give its answer in the required format."


def test_unclosed_think_at_the_end_is_a_problem() -> None:
    parsed = parse_completion("<think> The image shows a hyperintense lesion in the", OPTIONS, final=True)
    assert parsed.letter is None and not parsed.complete and not parsed.think_closed
    assert parsed.reasoning == "The image shows a hyperintense lesion in the"
    assert parsed.problem == NEVER_CLOSED_THINK


def test_missing_answer_tag_at_the_end_is_a_problem() -> None:
    parsed = parse_completion("<think>x</think>\nThe answer is C.", OPTIONS, final=True)
    assert parsed.letter is None and parsed.problem == NO_ANSWER_TAG
    assert parse_completion("<think>x</think>\n<answer>C", OPTIONS, final=True).problem == NEVER_CLOSED_ANSWER
    assert parse_completion("", OPTIONS, final=True).problem


def test_text_that_left_the_format_is_a_problem_even_while_streaming() -> None:
    assert parse_completion("<think>x</think>\nThe answer is", OPTIONS).problem == NO_ANSWER_TAG
    assert parse_completion("Sure, let me look", OPTIONS).problem == NO_ANSWER_TAG


def test_two_answer_blocks_that_disagree_are_a_visible_problem_not_the_first_one() -> None:
    # The recipe's reward reads the first block; a reviewer must see that the model answered twice.
    parsed = parse_completion("<think>x</think><answer>A</answer><answer>C</answer>", OPTIONS, final=True)
    assert (
        parsed.letter is None
        and parsed.problem
        == "The model gave different answers (A and C) in separate <answer> blocks, so it is not clear which it chose."
    )
    assert (
        parse_completion("<think>x</think><answer>A</answer><answer>(A)</answer>", OPTIONS).letter == "A"
    )  # the same, twice


def test_nested_answer_tags_leave_no_leftovers() -> None:
    parsed = parse_completion("<think>x</think><answer><answer> C </answer></answer>", OPTIONS)
    assert parsed.letter == "C"


def test_answer_tags_mentioned_inside_the_reasoning_are_not_the_answer() -> None:
    completion = "<think>I must reply in <answer>...</answer> tags.</think>\n<answer>C</answer>"
    parsed = parse_completion(completion, OPTIONS)
    assert parsed.letter == "C" and parsed.reasoning == "I must reply in <answer>...</answer> tags."


def test_answer_after_a_never_closed_think_still_counts_but_breaks_the_format() -> None:
    parsed = parse_completion("<think> bright signal <answer>B</answer>", OPTIONS, final=True)
    # The letter counts (as in the paper's reward and evaluation); the reviewer is told the format broke.
    assert parsed.letter == "B" and parsed.complete and parsed.problem == ANSWERED_WITHOUT_CLOSING_THINK
    assert not parsed.think_closed and not parsed.format_ok
    assert parsed.reasoning == "bright signal"


def test_tags_are_read_regardless_of_case_but_the_format_is_strict() -> None:
    parsed = parse_completion("<THINK>x</THINK><Answer>B</Answer>", OPTIONS)
    assert parsed.letter == "B" and parsed.reasoning == "x" and not parsed.format_ok


# -- streaming states ------------------------------------------------------------------------------


def test_streaming_inside_the_reasoning() -> None:
    parsed = parse_completion("<think> The image sh", OPTIONS)
    assert parsed.reasoning == "The image sh"
    assert (parsed.letter, parsed.answer_text, parsed.complete, parsed.problem) == (None, None, False, None)
    assert not parsed.think_closed and not parsed.format_ok


def test_streaming_hides_a_half_written_closing_tag() -> None:
    assert parse_completion("<think> The image shows </thi", OPTIONS).reasoning == "The image shows"


def test_streaming_between_reasoning_and_answer() -> None:
    parsed = parse_completion("<think> x </think>\n\n<ans", OPTIONS)
    assert parsed.think_closed and parsed.reasoning == "x"
    assert (parsed.letter, parsed.complete, parsed.problem) == (None, False, None)


def test_streaming_inside_the_answer() -> None:
    parsed = parse_completion("<think> x </think><answer>B", OPTIONS)
    assert (parsed.letter, parsed.answer_text, parsed.complete, parsed.problem) == (None, None, False, None)


@pytest.mark.parametrize("text", ["", "<", "<th", "<think>", "<answer>C"])
def test_streaming_beginnings_are_not_problems(text: str) -> None:
    assert parse_completion(text, OPTIONS).problem is None


# -- format_ok -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "completion",
    [
        "<think>r</think><answer>B</answer>",
        "<think>r</think>\n\n<answer>B</answer>",
        "<think>line 1\nline 2</think> \t\n<answer>B</answer>",
        "  <think>r</think><answer>B</answer>\n",  # surrounding whitespace is stripped first
    ],
)
def test_format_ok(completion: str) -> None:
    assert parse_completion(completion, OPTIONS).format_ok


@pytest.mark.parametrize(
    "completion",
    [
        "Sure! <think>r</think><answer>B</answer>",  # text before
        "<think>r</think><answer>B</answer> Hope this helps.",  # text after
        "<think>r</think>so<answer>B</answer>",  # text between
        "<answer>B</answer>",  # missing think
        "<think>r<answer>B</answer>",  # think never closed
        "<think>r</think>",  # no answer
        "<THINK>r</THINK><answer>B</answer>",  # the recipe's format reward is case-sensitive
    ],
)
def test_format_not_ok(completion: str) -> None:
    assert not parse_completion(completion, OPTIONS).format_ok


def test_no_think_style_needs_only_the_answer_tag() -> None:
    parsed = parse_completion(" <answer> B </answer>\n", OPTIONS, require_think=False)
    assert parsed.format_ok and parsed.letter == "B" and parsed.reasoning == ""
    assert not parse_completion("<think>r</think><answer>B</answer>", OPTIONS, require_think=False).format_ok
    assert not parse_completion("B", OPTIONS, require_think=False, final=True).format_ok
    assert parse_completion("B", OPTIONS, require_think=False, final=True).problem == NO_ANSWER_TAG


# -- option specification --------------------------------------------------------------------------


@pytest.mark.parametrize("options", [1, 11, ["only one"], "ABCD"])
def test_impossible_option_lists_are_refused(options: object) -> None:
    with pytest.raises(QuestionError):
        parse_completion("<answer>A</answer>", options)  # type: ignore[arg-type]


# -- properties ------------------------------------------------------------------------------------


def _has_no_tags(text: str) -> bool:
    lowered = text.lower()
    return not any(tag in lowered for tag in TAGS)


reasoning_texts = st.text(max_size=120).filter(_has_no_tags)
#: What a person can type: any text but control characters (validate_question refuses those).
typed = st.characters(exclude_categories=("Cc", "Cs"))
option_texts = st.text(typed, min_size=1, max_size=30).filter(lambda text: text.strip())
option_lists = st.lists(option_texts, min_size=2, max_size=10, unique_by=normalize_option_text)
word = st.text(alphabet=string.ascii_letters, min_size=2, max_size=8)
wordy_option_lists = st.lists(
    st.lists(word, min_size=1, max_size=3).map(" ".join), min_size=2, max_size=10, unique_by=normalize_option_text
)
tag_soup = st.lists(
    st.sampled_from([*TAGS, "A", "C) MRI", "(B)", " ", "\n", "<", "</", "answer is ", "Option "])
    | st.text(max_size=6),
    max_size=25,
).map("".join)


@given(
    question=st.text(typed, min_size=1, max_size=60).filter(lambda text: text.strip()),
    options=option_lists,
    reasoning=reasoning_texts,
    data=st.data(),
)
def test_well_formed_completions_parse_to_their_letter(
    question: str, options: list[str], reasoning: str, data: st.DataObject
) -> None:
    build_prompt_text(question, options)  # any such question and options can be asked
    letter = data.draw(st.sampled_from(LETTERS[: len(options)]))
    parsed = parse_completion(f"<think>{reasoning}</think>\n<answer>{letter}</answer>", options)
    assert parsed.letter == letter
    assert parsed.format_ok and parsed.complete and parsed.think_closed
    assert parsed.reasoning == reasoning.strip()
    assert parsed.problem is None


@given(
    text=st.one_of(st.text(max_size=200), tag_soup),
    options=st.one_of(st.integers(min_value=2, max_value=10), option_lists),
    require_think=st.booleans(),
    final=st.booleans(),
)
def test_parse_never_raises_and_stays_consistent(
    text: str, options: int | list[str], require_think: bool, final: bool
) -> None:
    parsed = parse_completion(text, options, require_think=require_think, final=final)
    count = options if isinstance(options, int) else len(options)
    assert parsed.raw == text
    assert parsed.letter is None or parsed.letter in LETTERS[:count]
    assert parsed.complete == (parsed.answer_text is not None)
    assert parsed.letter is None or parsed.complete
    if parsed.complete and parsed.letter is None:
        assert parsed.problem
    if final and parsed.letter is None:
        assert parsed.problem
    if parsed.letter is not None:
        assert parsed.problem is None
    if parsed.answer_text is not None:
        assert extract_letter(parsed.answer_text, options) == parsed.letter


@given(reasoning=reasoning_texts, count=st.integers(min_value=2, max_value=10), data=st.data())
def test_prefixes_of_a_well_formed_completion_never_show_a_premature_letter(
    reasoning: str, count: int, data: st.DataObject
) -> None:
    letter = data.draw(st.sampled_from(LETTERS[:count]))
    completion = f"<think>{reasoning}</think>\n<answer>{letter}</answer>"
    for end in range(len(completion)):
        parsed = parse_completion(completion[:end], count)
        assert parsed.letter is None and not parsed.complete
        assert parsed.problem is None
        assert reasoning.strip().startswith(parsed.reasoning)
    assert parse_completion(completion, count).letter == letter


@given(count=st.integers(min_value=2, max_value=10), data=st.data())
def test_letters_outside_the_options_give_no_letter(count: int, data: st.DataObject) -> None:
    letter = data.draw(st.sampled_from(LETTERS[count:] + "KLMNOPQRSTUVWXYZ"))
    assert extract_letter(letter, count) is None
    parsed = parse_completion(f"<think>x</think><answer>{letter}</answer>", count)
    assert parsed.letter is None and f"'{letter}'" in (parsed.problem or "")


@given(options=wordy_option_lists, data=st.data())
def test_option_text_answers_map_to_their_letter(options: list[str], data: st.DataObject) -> None:
    index = data.draw(st.integers(min_value=0, max_value=len(options) - 1))
    variant = data.draw(
        st.sampled_from([str.upper, str.lower, str.title, lambda text: f"  {text.replace(' ', '   ')} "])
    )
    answer = variant(options[index])
    assert extract_letter(answer, options) == LETTERS[index]
    assert parse_completion(f"<think>x</think><answer>{answer}</answer>", options).letter == LETTERS[index]


# -- forms a person reads at once (issue 10) -------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "options", "letter"),
    [
        ("A, Chondral abnormality", ["Chondral abnormality", "Normal"], "A"),
        ("A\nBecause the cartilage is irregular.", ["Chondral abnormality", "Normal"], "A"),
        ("\uff21", ["Chondral abnormality", "Normal"], "A"),
        ("\uff08\uff22\uff09", ["Chondral abnormality", "Normal"], "B"),
        ("No", ["No, It's normal.", "Yes, it is abnormal."], "A"),
        ("yes", ["No, It's normal.", "Yes, it is abnormal."], "B"),
        ("No", ["No, normal", "No, abnormal"], None),  # the first clause is not enough when two share it
        ("A lesion is seen", ["Chondral abnormality", "Normal"], None),  # "A" here is an article
        ("B, or maybe C", ["CT", "MRI", "X-Ray"], None),
    ],
)
def test_answers_a_person_reads_at_once(answer: str, options: list[str], letter: str | None) -> None:
    assert parse_completion(f"<think>x</think><answer>{answer}</answer>", options, final=True).letter == letter


@given(options=wordy_option_lists, data=st.data())
def test_a_letter_with_its_option_text_in_any_common_layout_is_that_letter(
    options: list[str], data: st.DataObject
) -> None:
    index = data.draw(st.integers(0, len(options) - 1))
    letter, text = LETTERS[index], options[index]
    layout = data.draw(st.sampled_from(["{l}, {t}", "{l}\n{t}", "{l}\nBecause {t}.", "{w}", "({w}) {t}"]))
    answer = layout.format(l=letter, t=text, w=chr(ord(letter) + 0xFEE0))  # w: the full-width letter
    assert parse_completion(f"<think>x</think><answer>{answer}</answer>", options, final=True).letter == letter


@given(options=wordy_option_lists, data=st.data())
def test_two_different_answers_are_never_one_of_them(options: list[str], data: st.DataObject) -> None:
    first, second = data.draw(st.lists(st.sampled_from(LETTERS[: len(options)]), min_size=2, max_size=2, unique=True))
    parsed = parse_completion(
        f"<think>x</think><answer>{first}</answer> <answer>{second}</answer>", options, final=True
    )
    assert parsed.letter is None and "different answers" in parsed.problem
