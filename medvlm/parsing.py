"""The one definition of "what did the model answer": reasoning, answer, option letter, format.

The app (while the completion streams and when it ends), the GRPO rewards and the evaluation all
read completions here, so a completion can never count as right in one place and wrong in another.

Where this departs from the published recipe (``recipe.md``), on purpose:

* **Reading the letter.** MedVLM-R1's accuracy reward upper-cases the answer and collects every
  character in A..J, so "C) MRI" finds both C and I and scores 0, and "(C)" or "C." only 0.5.
  :func:`extract_letter` instead reads the answer the way a person would: a letter standing on its
  own ("C", "(C)", "C.", "c", "**C**"), a leading letter label followed by text ("C) MRI",
  "(C) MRI", "C: MRI"), a labelled letter inside a phrase ("Answer: C", "The answer is C",
  "Option C"), or the full text of one option ("MRI" when an option is "MRI"). A letter is only
  taken when it is a token of its own and in one of those positions, so the capitals inside "MRI"
  or the article in "A CT scan" are never read as choices. When an explicit letter and an option
  text disagree ("C) CT" where C is "MRI" and B is "CT") the **explicit letter wins**: the letter is
  what the prompt asks for, and the text after it is most often a slip in copying the option.
  Answers naming several letters ("A or C", "A, C"), letters outside the offered options and text
  that matches nothing give no letter (``None``), each with its own explanation in ``problem``.
* **Which answer block.** Like the recipe's accuracy reward we take the first *closed*
  ``<answer>...</answer>``, but we look for it after the reasoning (after ``</think>``), so tags
  the model merely mentions while thinking are not read as its answer. If the model never closes
  ``<think>`` but does write a closed answer, that answer still counts (the recipe's reward and
  evaluation would count it too), ``format_ok`` is False and ``problem`` says so
  (:data:`ANSWERED_WITHOUT_CLOSING_THINK`), so a reviewer sees the broken format beside the answer.
  Two closed answers naming *different* letters give no letter and a problem saying so (the
  recipe's reward reads the first): a model that answers twice has not chosen.
* **Forms a person reads at once** are read too: "C, MRI", a letter alone on the first line and a
  reason below it, full-width letters ("Ａ", folded by Unicode NFKC), and an option's first clause
  ("No" for "No, it's normal.") when no other option shares it. Another offered letter standing
  alone after the first ("B, or maybe C") makes it a second answer.
* **Tags** are found regardless of case when reading the reasoning and the answer (the recipe's
  accuracy reward ignores case too); ``format_ok`` is case-sensitive, exactly as the format reward.
* **format_ok** is the recipe's format reward (full match of
  ``<think>.*?</think>\\s*<answer>.*?</answer>``, dot matching newlines) applied after stripping
  surrounding whitespace; the original applies it to the raw text, so a completion ending in a
  newline fails there and passes here. A trailing newline is not a format error worth a clinician's
  attention, and decoded completions often carry one.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from medvlm.errors import QuestionError
from medvlm.prompt import LETTERS, MAX_OPTIONS, MIN_OPTIONS, normalize_option_text

# -- completion structure ------------------------------------------------------------------------
_THINK_OPEN = re.compile(r"<think>", re.IGNORECASE | re.ASCII)
_THINK_CLOSE = re.compile(r"</think>", re.IGNORECASE | re.ASCII)
_ANSWER_OPEN = re.compile(r"<answer>", re.IGNORECASE | re.ASCII)
ANSWER_BLOCK = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.ASCII | re.DOTALL)
"""An ``<answer>...</answer>`` block, any case, over lines: the one pattern for it (parser, gold answers,
the paper's reward)."""
_FORMAT_WITH_THINK = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
_FORMAT_ANSWER_ONLY = re.compile(r"<answer>.*?</answer>", re.DOTALL)
_OPENING_TAGS = ("<think>", "<answer>")
_STREAMING_TAGS = ("</think>", "<answer>")

# -- answer text ---------------------------------------------------------------------------------
_TAG_LEFTOVER = re.compile(r"</?\s*(?:answer|think)\s*>", re.IGNORECASE)
_MARKDOWN = re.compile(r"[*`]")
_QUOTES = "\"'\u2018\u2019\u201c\u201d"
_DASHES = r"\-\u2013\u2014"
# "C", "(C)", "[C]", "C.", "C)", "C:", "c"
_LETTER_ONLY = re.compile(r"[(\[]?\s*([A-Za-z])\s*[)\]]?\s*[.:)]?")
# "A, C", "A or C", "(A) and (C)", "A/C". Spaces are taken only before a separator, never after it as
# well, so that a long run of separators cannot make the match backtrack exponentially.
_LETTER_LIST = re.compile(
    r"[(\[]?\s*[A-Za-z]\s*[)\]]?\.?(?:(?:\s*(?:[,/&;+]|\band\b|\bor\b))+\s*[(\[]?\s*[A-Za-z]\s*[)\]]?\.?)+",
    re.IGNORECASE,
)
# A letter label at the start, then text: "C) MRI", "(C) MRI", "c) MRI", "C. MRI", "C: MRI", "C - MRI",
# "C, MRI", and a capital alone on its first line ("C\nbecause..."). Lower-case letters only count
# before a bracket, so "e. coli" is not read as E; a capital followed by a plain space is not a
# label either ("A lesion is seen" is no answer A).
_LETTER_HEAD = re.compile(
    rf"(?:[(\[]\s*(?P<bracketed>[A-Za-z])\s*[)\]]|(?P<closed>[A-Za-z])\s*[)\]]|(?P<dotted>[A-Z])\s*[.:,{_DASHES}](?=\s)"
    rf"|(?P<lined>[A-Z])(?=[ \t]*\n))"
    rf"[.:{_DASHES}]?\s*(?P<rest>\S.*)",
    re.DOTALL,
)
# A letter, a space, then text: only accepted when the text is that letter's option ("C MRI").
_LETTER_THEN_TEXT = re.compile(r"([A-Za-z])\s+(\S.*)", re.DOTALL)
# Text, then the letter in brackets: "MRI (C)".
_TRAILING_LETTER = re.compile(r"(?P<text>.+?)\s*[(\[](?P<letter>[A-Z])[)\]]\s*\.?", re.DOTALL)
# Other option labels inside the text that follows a letter: the "C)" in "A) CT or C) MRI".
_OTHER_LABEL = re.compile(r"(?<![A-Za-z])[(\[]?([A-Z])[)\]]")
_FIRST_CLAUSE = re.compile(r"\s*[,;.]\s+|\s+[-\u2013\u2014]\s+")
_CAPITAL_ALONE = re.compile(r"(?<![A-Za-z])([A-Z])(?![A-Za-z'\u2019])")
_SINGLE_LETTER = re.compile(r"(?<![A-Za-z])[A-Za-z](?![A-Za-z])")
# "Option C", "choice: (B)"
_OPTION_LABEL = re.compile(r"\b(?i:option|choice)\b\s*[:#]?\s*(?:[(\[]\s*([A-Za-z])\s*[)\]]|([A-Z])(?![A-Za-z0-9]))")
# "Answer: ", "The answer is ", "the final answer would be: "
_ANSWER_PHRASE = re.compile(r"\b(?i:answer)\b(?:\s+(?i:is|would\s+be|should\s+be|will\s+be))?\s*[:=]?\s*")
# After such a phrase, a letter that ends the clause: "C.", "C,", "(C) because", "C" at the end.
_CLAUSE_LETTER = re.compile(r"[(\[]\s*([A-Za-z])\s*[)\]]|([A-Za-z])(?=[ \t]*(?:[).,;:!\]\n]|$))")

NEVER_CLOSED_THINK = "The model never closed its reasoning (<think> without </think>), so there is no answer."
ANSWERED_WITHOUT_CLOSING_THINK = (
    "The model never closed its reasoning (<think> without </think>) before it answered: its answer was read "
    "from <answer>, but the reasoning and the answer are not cleanly separated. Check the reasoning with care."
)
NEVER_CLOSED_ANSWER = (
    "The model started its answer but never closed it (<answer> without </answer>), so there is no final answer."
)
NO_ANSWER_TAG = "No <answer> tag: the model did not give its answer in the required format."
EMPTY_OUTPUT = "The model produced no text."
EMPTY_ANSWER = "The answer is empty."


@dataclass(frozen=True)
class ParsedCompletion:
    """What a (possibly still streaming) completion says."""

    raw: str
    """The completion as given."""
    reasoning: str
    """Text inside ``<think>...</think>``, stripped; while the think is open, what has streamed so far."""
    answer_text: str | None
    """Text inside the first closed ``<answer>...</answer>``, stripped; None when there is none."""
    letter: str | None
    """The chosen option letter, "A".."J"; None means no (usable) answer."""
    format_ok: bool
    """The recipe's format reward, as a boolean (see the module docstring)."""
    think_closed: bool
    """A ``</think>`` ended the reasoning."""
    complete: bool
    """An ``</answer>`` closed the answer: it is final."""
    problem: str | None
    """None when fine (or not yet decidable while streaming), else an explanation for a clinician.

    Usually it says why there is no letter; with a letter it is a warning that stays beside the
    answer (:data:`ANSWERED_WITHOUT_CLOSING_THINK`)."""


@dataclass(frozen=True)
class _Reading:
    letter: str | None
    problem: str | None


def parse_completion(
    text: str,
    options: Sequence[str] | int,
    *,
    require_think: bool = True,
    final: bool = False,
) -> ParsedCompletion:
    """Read a completion, finished or still streaming; never raises on any text.

    ``options`` are the option texts (preferred: an answer may then be the text of an option) or
    just their number. ``require_think=False`` is for the no-think prompt: ``format_ok`` then asks
    for ``<answer>...</answer>`` alone.

    While the answer is not closed there is no letter and ``complete`` is False. A completion can
    stop anywhere, so whether "no answer yet" is a problem depends on whether more text may come:
    with ``final=False`` (streaming) ``problem`` stays None while the text can still become a
    well-formed completion (an open ``<think>``, an open ``<answer>``, the start of a tag) and only
    text that has already left the format is reported; pass ``final=True`` once generation has
    ended, and every completion without a closed answer gets its explanation (for example
    :data:`NEVER_CLOSED_THINK` when the reasoning ran until the token limit).

    Args:
        text: the completion so far, or all of it.
        options: the option texts (preferred) or just their number.
        require_think: False for the no-think prompt, whose format is the answer alone.
        final: True once generation has ended: every missing answer then gets its explanation.

    Returns:
        A :class:`ParsedCompletion`: the reasoning, the answer text, the letter, the format check
        and, when something is wrong, a ``problem`` written for a clinician.

    Example:
        >>> parsed = parse_completion("<think>Bone is bright.</think>\\n<answer>A</answer>", ["CT", "MRI"])
        >>> parsed.letter, parsed.format_ok, parsed.reasoning
        ('A', True, 'Bone is bright.')
        >>> parse_completion("<think>Bone is bright", ["CT", "MRI"], final=True).problem
        'The model never closed its reasoning (<think> without </think>), so there is no answer.'
    """
    count, texts = _option_spec(options)
    think_open = _THINK_OPEN.search(text)
    reasoning_from = think_open.end() if think_open else 0
    think_close = _THINK_CLOSE.search(text, reasoning_from)
    if think_close is not None:
        reasoning = text[reasoning_from : think_close.start()]
        answer_from = think_close.end()
    elif think_open is not None:
        reasoning = _reasoning_so_far(text[reasoning_from:])
        answer_from = reasoning_from
    else:
        reasoning = ""
        answer_from = 0
    think_unclosed = think_open is not None and think_close is None

    block = ANSWER_BLOCK.search(text, answer_from)
    answer_text = block.group(1).strip() if block else None
    if answer_text is not None:
        reading = _read_answer(answer_text, count, texts)
        letter, problem = reading.letter, reading.problem
        others = {
            _read_answer(later.group(1).strip(), count, texts).letter
            for later in ANSWER_BLOCK.finditer(text, block.end())
        }
        others.discard(None)
        if letter is not None and others - {letter}:
            named = " and ".join(sorted({letter, *others}))
            letter, problem = (
                None,
                f"The model gave different answers ({named}) in separate <answer> blocks, so it is not clear which it "
                "chose.",
            )
        elif letter is not None and think_unclosed:
            problem = ANSWERED_WITHOUT_CLOSING_THINK
    else:
        letter = None
        problem = _missing_answer_problem(text, answer_from, think_unclosed, think_close is not None, final)

    pattern = _FORMAT_WITH_THINK if require_think else _FORMAT_ANSWER_ONLY
    return ParsedCompletion(
        raw=text,
        reasoning=reasoning.strip(),
        answer_text=answer_text,
        letter=letter,
        format_ok=pattern.fullmatch(text.strip()) is not None,
        think_closed=think_close is not None,
        complete=answer_text is not None,
        problem=problem,
    )


def extract_letter(answer_text: str, options: Sequence[str] | int) -> str | None:
    """The option letter an answer names, or None when it names none, several, or one not offered.

    See the module docstring for the forms read and why this is not the paper's rule.

    Args:
        answer_text: the text inside ``<answer>...</answer>``.
        options: the option texts (an answer may then be an option's text) or just their number.

    Returns:
        "A".."J", or None.

    Example:
        >>> extract_letter("C) MRI", ["CT", "X-Ray", "MRI"]), extract_letter("The answer is B.", 3)
        ('C', 'B')
        >>> extract_letter("MRI", ["CT", "MRI"]), extract_letter("A or C", 3)
        ('B', None)
    """
    count, texts = _option_spec(options)
    return _read_answer(answer_text, count, texts).letter


def _option_spec(options: Sequence[str] | int) -> tuple[int, list[str] | None]:
    if isinstance(options, int):
        count, texts = options, None
    elif isinstance(options, str):
        raise QuestionError("Please give the options as a list of separate answers, not as one text.")
    else:
        texts = list(options)
        count = len(texts)
    if not MIN_OPTIONS <= count <= MAX_OPTIONS:
        raise QuestionError(f"A question has {MIN_OPTIONS} to {MAX_OPTIONS} options (got {count}).")
    return count, texts


def _reasoning_so_far(after_think: str) -> str:
    """The open reasoning, up to an ``<answer>`` if one started, without a half-streamed tag.

    While streaming, "... the lesion </thi" would flash the start of a tag in the reasoning pane;
    the dropped characters reappear as part of the tag once it is complete.
    """
    answer = _ANSWER_OPEN.search(after_think)
    body = after_think[: answer.start()] if answer else after_think
    return body[: len(body) - _partial_tag_suffix(body, _STREAMING_TAGS)]


def _partial_tag_suffix(text: str, tags: Iterable[str]) -> int:
    """Length of the longest end of ``text`` that is a proper, non-empty start of one of ``tags``."""
    return max(
        (size for tag in tags for size in range(1, len(tag)) if text[-size:].lower() == tag[:size]),
        default=0,
    )


def _missing_answer_problem(
    text: str, answer_from: int, think_unclosed: bool, think_closed: bool, final: bool
) -> str | None:
    """Why there is no answer: always said once the text is final, while streaming only when the
    text can no longer turn into a well-formed completion (so the pane does not flash warnings)."""
    answer_unclosed = _ANSWER_OPEN.search(text, answer_from) is not None
    if final:
        if not text.strip():
            return EMPTY_OUTPUT
        if think_unclosed:
            return NEVER_CLOSED_THINK
        return NEVER_CLOSED_ANSWER if answer_unclosed else NO_ANSWER_TAG
    if think_unclosed or answer_unclosed:
        return None
    pending = text[answer_from:].strip() if think_closed else text.strip()
    allowed = ("<answer>",) if think_closed else _OPENING_TAGS
    if not pending or any(tag.startswith(pending.lower()) for tag in allowed):
        return None
    return NO_ANSWER_TAG


# -- reading the answer --------------------------------------------------------------------------


def _read_answer(answer_text: str, count: int, texts: Sequence[str] | None) -> _Reading:
    text = _clean(answer_text)
    if not text:
        return _Reading(None, EMPTY_ANSWER)
    offered = f"{LETTERS[0]}-{LETTERS[count - 1]}"
    letters = _whole_answer_letters(text, texts, count) or _phrase_letters(text, texts, count)
    if not letters:
        return _Reading(None, f"The answer {_quote(text)} does not match any of the options ({offered}).")
    if len(letters) > 1:
        return _Reading(None, f"The answer names several options ({', '.join(letters)}).")
    letter = letters[0]
    if letter not in LETTERS[:count]:
        return _Reading(None, f"The model answered '{letter}', which is not one of the options ({offered}).")
    return _Reading(letter, None)


def _clean(answer_text: str) -> str:
    """The answer with compatibility forms folded (full-width "Ａ" is "A") and without tag leftovers,
    Markdown emphasis or surrounding quotes."""
    text = _MARKDOWN.sub("", _TAG_LEFTOVER.sub(" ", unicodedata.normalize("NFKC", answer_text)))
    return text.strip().strip(_QUOTES).strip()


def _whole_answer_letters(text: str, texts: Sequence[str] | None, count: int) -> tuple[str, ...]:
    """Letters named when the whole answer is one of the accepted forms; () when it is none."""
    if match := _LETTER_ONLY.fullmatch(text):
        return (match.group(1).upper(),)
    if texts is not None and (found := _option_text_letters(text, texts)):
        return found
    if _LETTER_LIST.fullmatch(text):
        return _distinct(_SINGLE_LETTER.findall(text))
    if match := _LETTER_HEAD.fullmatch(text):
        letter = match.group("bracketed") or match.group("closed") or match.group("dotted") or match.group("lined")
        rest = match.group("rest")
        # Another offered letter standing alone in what follows ("B, or maybe C") is a second answer.
        alone = [found for found in _CAPITAL_ALONE.findall(rest) if found in LETTERS[:count]]
        return _distinct([letter, *_OTHER_LABEL.findall(rest), *alone])
    if texts is not None and (match := _LETTER_THEN_TEXT.fullmatch(text)):
        letter = match.group(1).upper()
        if letter in LETTERS[: len(texts)] and _option_text_letters(match.group(2), texts) == (letter,):
            return (letter,)
    if match := _TRAILING_LETTER.fullmatch(text):
        return _distinct([*_OTHER_LABEL.findall(match.group("text")), match.group("letter")])
    return ()


def _phrase_letters(text: str, texts: Sequence[str] | None, count: int) -> tuple[str, ...]:
    """Letters labelled inside free text: "Option C", "the answer is C.", "Answer: MRI"."""
    found = [match.group(1) or match.group(2) for match in _OPTION_LABEL.finditer(text)]
    for phrase in _ANSWER_PHRASE.finditer(text):
        rest = text[phrase.end() :].strip()
        named = _whole_answer_letters(rest.rstrip("."), texts, count)
        if not named and (match := _CLAUSE_LETTER.match(rest)):
            named = (match.group(1) or match.group(2),)
        found.extend(named)
    return _distinct(found)


def _option_text_letters(text: str, texts: Sequence[str]) -> tuple[str, ...]:
    """Letters of the options whose text the answer is (ignoring case, spacing, a final period).

    Failing that, the options whose first clause it is: "No" for "No, it's normal." (a real pair of
    options in the published evaluation set), when no other option starts with the same clause.
    """
    wanted = _comparable(text)
    if not wanted:
        return ()
    whole = tuple(letter for letter, option in zip(LETTERS, texts, strict=False) if _comparable(option) == wanted)
    if whole:
        return whole
    return tuple(
        letter
        for letter, option in zip(LETTERS, texts, strict=False)
        if _comparable(_FIRST_CLAUSE.split(option, maxsplit=1)[0]) == wanted
    )


def _comparable(text: str) -> str:
    return normalize_option_text(text.strip().strip(_QUOTES).rstrip(".").strip())


def _distinct(letters: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(letter.upper() for letter in letters))


def _quote(text: str, limit: int = 60) -> str:
    flat = " ".join(text.split())
    return f"'{flat}'" if len(flat) <= limit else f"'{flat[: limit - 3]}...'"


def solution_letter(solution: str | None) -> str | None:
    """The letter of a gold answer written ``"C"``, ``" c "`` or ``"<answer> C </answer>"``; else None.

    Args:
        solution: the correct answer as a dataset gives it (MedVLM-R1: a letter; Med-R1: a tagged one).

    Returns:
        The upper-case letter A..J, or None when it is not one letter.

    Example:
        >>> solution_letter("<answer> c </answer>"), solution_letter("B"), solution_letter("MRI")
        ('C', 'B', None)
    """
    if not isinstance(solution, str):
        return None
    tagged = ANSWER_BLOCK.search(solution)
    letter = (tagged.group(1) if tagged else solution).strip().upper()
    return letter if len(letter) == 1 and letter in LETTERS else None
