"""The one definition of the prompt put to the model: question, lettered options, instructions.

The app, GRPO training and evaluation all build the user turn here, so that a model is always
asked in the words it was trained on.

Where the wordings come from (read in the public code, not retyped from the papers):

* MedVLM-R1 (``JZPeterPan/MedVLM-R1``, commit 2eee421): ``demo.ipynb`` (the inference cell) and
  ``src/eval/test_qwen2vl_med.py`` (``--prompt_type complex``) both define, at module level::

      QUESTION_TEMPLATE = \"\"\"
          {Question}·
          Your task:·
          1. Think through ... in <think>...</think> tags.·
          2. Then provide ... inside <answer>...</answer> tags.
          3. No extra information or text outside of these tags.
          \"\"\"

  (``·`` marks a trailing space), filled with ``QUESTION_TEMPLATE.format(Question=problem)``.
  :attr:`PromptStyle.MEDVLM_EXACT` reproduces that string byte for byte: a leading newline, four
  spaces of indent on every template line, trailing spaces after the question, ``Your task:`` and
  item 1, and a final newline plus four spaces. Only the question's first line is indented: the
  option lines come from inside ``problem``. Note: the GRPO training script of the same repository
  (``src/open-r1-multimodal/src/open_r1/grpo.py``) defines the same template inside a function,
  so the string it trained on carries *eight* spaces of indent instead of four; the demo and the
  evaluation script (what the released model was shown at test time) use four, and so do we.
* Med-R1 (``Yuxiang-Lai117/Med-R1``; the upstream repository could not be read when this was
  written, so the text was read in two forks that keep its GRPO training scripts unchanged:
  ``solrac031504/Med-Seq`` ``src/r1-v/src/open_r1/grpo_vqa.py`` and ``Corleno/Med-R1``
  ``src/r1-v/src/open_r1/grpo_vqa_nothink.py``):
  ``"{Question} Your task: 1. Think through ... 3. No extra information or text outside of these
  tags."`` on one line, and for the no-think variant ``"{Question} Your task: 1. Provide the correct
  single-letter choice (A, B, C, D,...) inside <answer>...</answer> tags. 2. No extra information or
  text outside of this tag."``. (Med-R1's evaluation scripts, e.g. ``src/eval_vqa/test_qwen2vl_vqa.py``
  in the fork ``IgoyAI/AdvMed-R1``, use a shorter two-sentence wording; we follow the training
  wording, which is what the weights learnt.) Med-R1's own data put the
  options inline on one line; here every style uses the recipe's question-and-options block
  (one ``A) ...`` line per option), so only the instruction wording differs between styles.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any

from medvlm.errors import MedVLMError, QuestionError
from medvlm.user_text import MAX_OPTION_CHARS, MAX_QUESTION_CHARS, check_text

LETTERS: str = "ABCDEFGHIJ"
"""Option letters, in order; the recipe supports up to ten options."""

MIN_OPTIONS = 2
MAX_OPTIONS = len(LETTERS)


class PromptStyle(str, enum.Enum):
    """How the instructions after the question are worded."""

    MEDVLM = "medvlm"
    """The MedVLM-R1 instructions, cleanly formatted: no indentation, no trailing spaces."""
    MEDVLM_EXACT = "medvlm-exact"
    """Byte for byte the string of MedVLM-R1's demo and evaluation code (see the module docstring)."""
    MEDR1 = "medr1"
    """Med-R1: the same three instructions on one line after the question."""
    NO_THINK = "no-think"
    """Med-R1's no-think variant: asks only for ``<answer>...</answer>``, no reasoning."""


_MEDVLM_STEPS = (
    "1. Think through the question step by step, enclose your reasoning process in <think>...</think> tags.",
    "2. Then provide the correct single-letter choice (A, B, C, D,...) inside <answer>...</answer> tags.",
    "3. No extra information or text outside of these tags.",
)

# Written with explicit escapes because the trailing spaces are part of the string and editors
# strip them from literal multi-line text.
_MEDVLM_EXACT_TEMPLATE = (
    "\n"
    "    {Question} \n"
    "    Your task: \n"
    "    1. Think through the question step by step, enclose your reasoning process in <think>...</think> tags. \n"
    "    2. Then provide the correct single-letter choice (A, B, C, D,...) inside <answer>...</answer> tags.\n"
    "    3. No extra information or text outside of these tags.\n"
    "    "
)

_NO_THINK_INSTRUCTIONS = (
    "Your task: 1. Provide the correct single-letter choice (A, B, C, D,...) inside <answer>...</answer> tags. "
    "2. No extra information or text outside of this tag."
)


def validate_question(question: str, options: Sequence[str]) -> tuple[str, list[str]]:
    """Check a question and its options before they reach the model; return them stripped.

    Raises :class:`QuestionError` with a message for the person who typed them. Duplicates are
    compared ignoring case and runs of whitespace, because "MRI" and "mri " would be the same
    choice to the model and make its answer impossible to map back to one option.
    """
    if not isinstance(question, str) or not question.strip():
        raise QuestionError("Please type a question.")
    check_text(question.strip(), what="The question", limit=MAX_QUESTION_CHARS, error=QuestionError)
    if isinstance(options, str):
        raise QuestionError("Please give the options as a list of separate answers, not as one text.")
    count = len(options)
    if count < MIN_OPTIONS:
        raise QuestionError(f"Please give at least {MIN_OPTIONS} options (got {count}).")
    if count > MAX_OPTIONS:
        raise QuestionError(f"Please give at most {MAX_OPTIONS} options, A to {LETTERS[-1]} (got {count}).")
    cleaned: list[str] = []
    for letter, option in zip(LETTERS, options, strict=False):
        if not isinstance(option, str):
            raise QuestionError(f"Option {letter} is not text.")
        if not option.strip():
            raise QuestionError(f"Option {letter} is empty. Please fill it in or remove it.")
        cleaned.append(
            check_text(
                option.strip(), what=f"Option {letter}", limit=MAX_OPTION_CHARS, multiline=False, error=QuestionError
            )
        )
    _reject_duplicates(cleaned)
    return question.strip(), cleaned


def _reject_duplicates(options: Sequence[str]) -> None:
    letters_by_text: dict[str, list[str]] = {}
    for letter, option in zip(LETTERS, options, strict=False):
        letters_by_text.setdefault(normalize_option_text(option), []).append(letter)
    for letters in letters_by_text.values():
        if len(letters) > 1:
            named = ", ".join(letters[:-1]) + " and " + letters[-1]
            raise QuestionError(f"Options {named} are the same. Please make each option different.")


def normalize_option_text(text: str) -> str:
    """The form in which two option texts count as the same: case-folded, whitespace collapsed.

    Shared with :mod:`medvlm.parsing`, which matches an answer written as an option's text.
    """
    return " ".join(text.split()).casefold()


def format_options(options: Sequence[str]) -> str:
    """The options block: ``"A) opt1\\nB) opt2..."``, one line per option, letters in order."""
    return "\n".join(f"{letter}) {option}" for letter, option in zip(LETTERS, options, strict=False))


def format_question(question: str, options: Sequence[str]) -> str:
    """The question and its options as the recipe joins them: ``question + "\\n" + options block``."""
    return question + "\n" + format_options(options)


def build_prompt_text(question: str, options: Sequence[str], style: PromptStyle | str = PromptStyle.MEDVLM) -> str:
    """The full text of the user turn (the image comes before it) in the given style.

    The question and options are validated and stripped first (:func:`validate_question`).
    """
    style = as_style(style)
    question, options = validate_question(question, options)
    problem = format_question(question, options)
    if style is PromptStyle.MEDVLM:
        return "\n".join((problem, "Your task:", *_MEDVLM_STEPS))
    if style is PromptStyle.MEDVLM_EXACT:
        return _MEDVLM_EXACT_TEMPLATE.format(Question=problem)
    if style is PromptStyle.MEDR1:
        return " ".join((problem, "Your task:", *_MEDVLM_STEPS))
    return problem + " " + _NO_THINK_INSTRUCTIONS


def build_messages(
    question: str,
    options: Sequence[str],
    style: PromptStyle | str = PromptStyle.MEDVLM,
    image: Any = None,
) -> list[dict[str, Any]]:
    """Conversational messages for a Qwen2-VL processor's ``apply_chat_template``.

    One user turn, the image first and then the text, as in both recipes. There is no system
    message: the recipes used none, and Qwen2-VL's chat template adds its default
    "You are a helpful assistant." turn by itself. ``image`` (a PIL image, a path or URL) is put in
    the image entry when given, for tools such as ``qwen_vl_utils.process_vision_info`` that read it
    from there; otherwise the entry is a placeholder and the image goes to the processor separately.
    """
    image_entry: dict[str, Any] = {"type": "image"} if image is None else {"type": "image", "image": image}
    text = build_prompt_text(question, options, style)
    return [{"role": "user", "content": [image_entry, {"type": "text", "text": text}]}]


def as_style(style: PromptStyle | str) -> PromptStyle:
    """``style`` as a ``PromptStyle``; an unknown name raises ``MedVLMError`` listing the known ones."""
    try:
        return PromptStyle(style)
    except ValueError:
        known = ", ".join(member.value for member in PromptStyle)
        raise MedVLMError(f"Unknown prompt style {style!r}. Choose one of: {known}.") from None
