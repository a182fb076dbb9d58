"""Pre-check hints: what in a completion is worth a reviewer's second look. Suggestions, never flags.

Three cheap, explainable checks on the text alone, each pointing at the flag it suggests:

* **contradiction**: the reasoning's conclusion (its last sentence) names another option than
  the answer and not the answer itself, or the reasoning names only other options;
* **superficial**: the reasoning is very short, or says next to nothing that is not already in
  the question, the options or the modality ("This is a CT image, so the answer is CT");
* **not an option**: the answer block gives no offered option.

One pure function, :func:`reasoning_hints`, used by review campaigns (shown beside the form and
measured against the reviewers' flags) and usable by evaluation reports and training filters.
A hint carries character offsets into the completion, so a viewer can underline its evidence.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from medvlm.parsing import parse_completion
from medvlm.prompt import LETTERS

HINT_FLAGS: dict[str, str] = {
    "contradiction": "contradiction",
    "superficial": "superficial",
    "not_an_option": "wrong_answer",
}
"""Each hint kind and the review flag it suggests."""
MIN_REASONING_WORDS = 12
"""Reasoning shorter than this many words is a superficial candidate."""
MIN_NEW_WORDS = 4
"""Fewer content words than this beyond the question, options and modality: a superficial candidate."""

_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_STOPWORDS = frozenset(
    """a an the this that these those is are was were be been being it its of in on at to for from with by as
    and or but so because therefore thus hence which who whom what there here image images scan shows showing
    shown show appears appear seen see visible likely most consistent suggests suggest indicates indicate answer
    option options question correct based given using used acquire acquired modality type kind view""".split()
)
_MODALITY_WORDS = frozenset(
    "ct mri mr x-ray xray radiograph ultrasound us pet dicom computed tomography magnetic resonance".split()
)


@dataclass(frozen=True)
class Hint:
    """One check that fired: the flag it suggests, why, and where in the completion its evidence is."""

    kind: str
    """``contradiction``, ``superficial`` or ``not_an_option``."""
    flag: str
    """The review flag it suggests (a key of :data:`medvlm.annotations.FLAGS`)."""
    message: str
    start: int | None = None
    """Offset in the completion where the evidence starts (None: the whole reasoning)."""
    end: int | None = None


def reasoning_hints(completion: str, question: str, options: Sequence[str]) -> list[Hint]:
    """The hints for one finished completion of a multiple-choice question.

    >>> options = ["Liver", "Spleen", "Kidney"]
    >>> [hint.kind for hint in reasoning_hints(
    ...     "<think>The organ is bean-shaped and sits near the spine, so it is the spleen.</think>"
    ...     "<answer>A</answer>", "Which organ is shown?", options)]
    ['contradiction']
    >>> [hint.kind for hint in reasoning_hints(
    ...     "<think>This is a CT.</think><answer>A</answer>", "Which modality?", ["CT", "MRI"])]
    ['superficial']
    """
    parsed = parse_completion(completion, options, final=True)
    hints = []
    if parsed.letter is None and parsed.answer_text:
        start = completion.find(parsed.answer_text)
        hints.append(
            Hint(
                "not_an_option",
                HINT_FLAGS["not_an_option"],
                f"The answer ({parsed.answer_text[:60]!r}) is none of the offered options.",
                *(_span(start, parsed.answer_text)),
            )
        )
    reasoning = parsed.reasoning
    offset = completion.find(reasoning) if reasoning else -1
    if parsed.letter is not None and reasoning:
        hints += _contradiction(reasoning, max(offset, 0), options, LETTERS.index(parsed.letter))
    if reasoning or parsed.think_closed:
        hints += _superficial(reasoning, max(offset, 0), question, options)
    return hints


def _contradiction(reasoning: str, offset: int, options: Sequence[str], chosen: int) -> list[Hint]:
    named = [_mentions(reasoning, option) for option in options]
    sentences = [match for match in _sentences(reasoning) if match[1].strip()]
    last_start, last = sentences[-1] if sentences else (0, reasoning)
    in_conclusion = [index for index, option in enumerate(options) if _mentions(last, option)]
    others = [index for index in in_conclusion if index != chosen]
    if others and chosen not in in_conclusion:
        named_option = options[others[0]]
        return [
            Hint(
                "contradiction",
                "contradiction",
                f"The reasoning concludes {named_option!r}, but the answer is {LETTERS[chosen]}) {options[chosen]}.",
                offset + last_start,
                offset + last_start + len(last),
            )
        ]
    mentioned = [index for index, found in enumerate(named) if found]
    if mentioned and chosen not in mentioned:
        names = ", ".join(repr(options[index]) for index in mentioned)
        return [
            Hint(
                "contradiction",
                "contradiction",
                f"The reasoning names {names} but never the answer, {LETTERS[chosen]}) {options[chosen]}.",
                offset,
                offset + len(reasoning),
            )
        ]
    return []


def _superficial(reasoning: str, offset: int, question: str, options: Sequence[str]) -> list[Hint]:
    words = [word.lower() for word in _WORD.findall(reasoning)]
    span = (offset, offset + len(reasoning)) if reasoning else (None, None)
    if len(words) < MIN_REASONING_WORDS:
        return [
            Hint(
                "superficial",
                "superficial",
                f"The reasoning is {len(words)} word(s) long: too short to show how the answer was reached.",
                *span,
            )
        ]
    known = {word.lower() for word in _WORD.findall(" ".join([question, *options]))} | _STOPWORDS | _MODALITY_WORDS
    new = {word for word in words if word not in known and len(word) > 2}
    if len(new) < MIN_NEW_WORDS:
        return [
            Hint(
                "superficial",
                "superficial",
                "The reasoning says next to nothing beyond the question, the options and the modality.",
                *span,
            )
        ]
    return []


def reasoning_sentences(completion: str) -> list[tuple[int, int, str]]:
    """The sentences of the completion's reasoning as ``(start, end, text)``, offsets into the completion.

    What a reviewer ticks to mark a passage (:class:`medvlm.annotations.Span` keeps the offsets).

    >>> reasoning_sentences("<think>Air in the lobes. No mass.</think><answer>B</answer>")
    [(7, 24, 'Air in the lobes.'), (25, 33, 'No mass.')]
    """
    reasoning = parse_completion(completion, len(LETTERS), final=True).reasoning  # the options do not matter here
    offset = completion.find(reasoning) if reasoning else -1
    if offset < 0:
        return []
    return [
        (offset + start, offset + start + len(text), text) for start, text in _sentences(reasoning) if text.strip()
    ]


def _mentions(text: str, option: str) -> bool:
    """Whether ``text`` names ``option`` as a word or phrase (case-blind; "CT" is not found in "act")."""
    option = option.strip()
    if not option:
        return False
    return re.search(rf"(?<![A-Za-z0-9]){re.escape(option)}(?![A-Za-z0-9])", text, re.IGNORECASE) is not None


def _sentences(text: str) -> list[tuple[int, str]]:
    """(offset, sentence) for each sentence of ``text``."""
    result, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        result.append((start, text[start : match.start()]))
        start = match.end()
    result.append((start, text[start:]))
    return result


def _span(start: int, text: str) -> tuple[int | None, int | None]:
    return (start, start + len(text)) if start >= 0 else (None, None)
