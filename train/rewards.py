"""GRPO reward functions: pure functions with TRL's signature ``f(completions, **kwargs) -> list[float | None]``.

``completions`` are plain strings or, for conversational datasets (ours), lists of messages
(``[{"role": "assistant", "content": "..."}]``, the content possibly a list of text parts); both
are read. The dataset's other columns arrive as keyword arguments, one list entry per completion:
:func:`train.data.to_grpo_dataset` provides ``solution`` (the letter) and ``options``.

Three accuracy rules, because reproducing a paper and training well are different goals:

* ``accuracy`` (:func:`accuracy_reward`, the default): the letter as :mod:`medvlm.parsing` reads it,
  the same reading the app and the evaluation use, so a model is never rewarded for an answer that
  is then scored wrong (or the reverse). "C) MRI", "(C)", "C." and "c" all read as C.
* ``accuracy_paper`` (:func:`paper_accuracy_reward`): MedVLM-R1's rule exactly, flaw included
  ("C) MRI" scores 0.0 because the I of MRI also counts as a letter; "(C)" and "C." score 0.5).
* ``accuracy_medr1`` (:func:`medr1_accuracy_reward`): Med-R1's (R1-V's) string match exactly.

A fourth reward, ``consistency`` (:func:`consistency_reward`), pays reasoning whose conclusion
agrees with its own answer (the campaigns' contradiction pre-check).

A rule that cannot judge a sample (its gold answer is not a letter) returns None for it, which TRL
leaves out of the reward instead of counting it as wrong.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from medvlm.errors import MedVLMError
from medvlm.hints import reasoning_hints
from medvlm.parsing import ANSWER_BLOCK, parse_completion, solution_letter
from medvlm.prompt import LETTERS, MAX_OPTIONS

RewardFunction = Callable[..., list[float | None]]

_PAPER_ANSWER = ANSWER_BLOCK  # the original's re.search(r"<answer>(.*?)</answer>", ..., re.DOTALL | re.IGNORECASE)
_PAPER_LETTERS = re.compile(f"[{LETTERS[0]}-{LETTERS[-1]}]")
_MEDR1_ANSWER = re.compile(r"<answer>(.*?)</answer>")


def completion_text(completion: str | Sequence[dict[str, Any]]) -> str:
    """The text of a completion, plain or conversational (the contents of its messages, joined)."""
    if isinstance(completion, str):
        return completion
    parts: list[str] = []
    for message in completion:
        content = message.get("content") or ""
        if isinstance(content, str):
            parts.append(content)
        else:
            parts.extend(part.get("text") or "" for part in content if part.get("type") == "text")
    return "".join(parts)


def format_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """1.0 when the completion is ``<think>...</think>``, optional whitespace, ``<answer>...</answer>``, else 0.0.

    This is ``ParsedCompletion.format_ok`` from :mod:`medvlm.parsing`, the app's format check, so
    there is one definition. It differs from MedVLM-R1's ``re.fullmatch`` in one way: surrounding
    whitespace is stripped first, so a completion ending in a newline is not penalised (the
    original gives it 0.0).

    Args:
        completions: the group's completions, plain text or conversational (as TRL passes them).

    Returns:
        One reward per completion.

    Example:
        >>> format_reward(["<think>x</think>\\n<answer>A</answer>", "A", "<think>x</think><answer>A</answer>\\n"])
        [1.0, 0.0, 1.0]
    """
    return [
        1.0 if parse_completion(completion_text(completion), MAX_OPTIONS, final=True).format_ok else 0.0
        for completion in completions
    ]


def accuracy_reward(
    completions: Sequence[Any],
    solution: Sequence[str],
    options: Sequence[Sequence[str] | None] | None = None,
    **kwargs: Any,
) -> list[float | None]:
    """1.0 when the letter :func:`medvlm.parsing.parse_completion` reads (final) is the solution's, else 0.0.

    ``solution`` entries are letters or ``"<answer> C </answer>"``. With ``options`` (the option
    texts of each sample) an answer written as an option's text counts too, and a letter beyond
    the offered options is no answer; without, A..J are all accepted. An answer written after a
    ``<think>`` that was never closed counts, as in the paper's reward (``format_reward`` gives
    such a completion 0.0). No answer (no closed ``<answer>``, a ``<think>`` cut off at the token
    limit), several letters, or two ``<answer>`` blocks naming different letters score 0.0 (the
    paper reads the first block); an unreadable *solution* gives None.

    Args:
        completions: the group's completions, plain text or conversational.
        solution: each sample's correct letter (or ``"<answer> C </answer>"``).
        options: each sample's option texts (the dataset's ``options`` column), or None.

    Returns:
        One reward per completion (None where the solution is unreadable).

    Example:
        >>> accuracy_reward(["<think>x</think><answer>C) MRI</answer>", "<answer>B</answer>"], ["C", "C"])
        [1.0, 0.0]
        >>> accuracy_reward(["<answer>MRI</answer>"], ["C"], options=[["CT", "X-Ray", "MRI"]])
        [1.0]
    """
    per_sample_options = options if options is not None else [None] * len(completions)
    rewards: list[float | None] = []
    for completion, gold, sample_options in zip(completions, solution, per_sample_options, strict=True):
        truth = solution_letter(gold)
        if truth is None:
            rewards.append(None)
            continue
        parsed = parse_completion(
            completion_text(completion), list(sample_options) if sample_options else MAX_OPTIONS, final=True
        )
        rewards.append(1.0 if parsed.letter == truth else 0.0)
    return rewards


def paper_accuracy_reward(completions: Sequence[Any], solution: Sequence[str], **kwargs: Any) -> list[float]:
    """MedVLM-R1's accuracy reward, reproduced exactly, for comparisons with the paper.

    The truth is the solution's ``<answer>`` text (or the solution), upper-cased, whitespace
    removed. The answer is the text of the completion's first ``<answer>...</answer>`` (any case,
    across lines; none: 0.0), stripped. Every character A..J of the upper-cased answer counts as a
    letter: exactly one, equal to the truth, scores 1.0 if nothing else remains once it is removed
    and 0.5 otherwise; anything else 0.0. Hence its flaws: "C) MRI" is 0.0 (C and I), "(C)" 0.5.

    Example:
        >>> paper_accuracy_reward(["<answer>C</answer>", "<answer>(C)</answer>", "<answer>C) MRI</answer>"], ["C"] * 3)
        [1.0, 0.5, 0.0]
    """
    rewards = []
    for completion, gold in zip(completions, solution, strict=True):
        truth = re.sub(r"\s+", "", _tag_or_whole(_PAPER_ANSWER, gold).upper())
        tagged = _PAPER_ANSWER.search(completion_text(completion))
        answer = tagged.group(1).strip() if tagged else ""
        letters = _PAPER_LETTERS.findall(answer.upper())
        if len(letters) != 1 or letters[0] != truth:
            rewards.append(0.0)
            continue
        leftover = re.sub(letters[0], "", answer, count=1, flags=re.IGNORECASE)
        rewards.append(0.5 if leftover.strip() else 1.0)
    return rewards


def medr1_accuracy_reward(completions: Sequence[Any], solution: Sequence[str], **kwargs: Any) -> list[float]:
    """Med-R1's (R1-V's) accuracy reward: exact match of the stripped answer with the stripped truth.

    As in the original, ``<answer>`` is matched case-sensitively and within one line, in both the
    completion and the solution, and a completion *without* the tag is compared whole (so a bare
    "C" scores 1.0). Its math-verify step, which only matters for numeric answers, is left out.

    Example:
        >>> medr1_accuracy_reward(["<answer> C </answer>", "<answer>c</answer>"], ["<answer> C </answer>"] * 2)
        [1.0, 0.0]
    """
    return [
        1.0 if _tag_or_whole(_MEDR1_ANSWER, completion_text(completion)) == _tag_or_whole(_MEDR1_ANSWER, gold) else 0.0
        for completion, gold in zip(completions, solution, strict=True)
    ]


def consistency_reward(
    completions: Sequence[Any], options: Sequence[Sequence[str]] | None = None, **kwargs: Any
) -> list[float]:
    """1.0 when the reasoning's conclusion agrees with the answer, 0.0 when it argues for another option.

    The judgement is the review campaigns' contradiction pre-check (:func:`medvlm.hints.reasoning_hints`,
    kind ``"contradiction"``: the reasoning's last sentence names another option and not the
    answer, or the reasoning names only other options), so what reviewers are told to look at and
    what training penalises are one definition. A completion with no readable answer has nothing
    to agree with and scores 0.0 (the accuracy and format rewards already punish it; this one must
    not pay for it). Add it to a recipe's ``reward_funcs`` beside ``accuracy`` and ``format`` to
    train away the contradictory reasoning both papers report.

    Args:
        completions: the group's completions, plain text or conversational.
        options: each sample's option texts (the dataset's ``options`` column).

    Returns:
        One reward per completion.

    Example:
        >>> consistency_reward(
        ...     ["<think>Bean-shaped, beside the spine: the kidney.</think><answer>C</answer>",
        ...      "<think>Bean-shaped, beside the spine: the kidney.</think><answer>A</answer>",
        ...      "<think>Hard to say.</think>"],
        ...     options=[["Liver", "Spleen", "Kidney"]] * 3)
        [1.0, 0.0, 0.0]
    """
    if options is None:
        raise MedVLMError("The consistency reward needs the dataset's options column (train.data provides it).")
    rewards = []
    for completion, sample_options in zip(completions, options, strict=True):
        text = completion_text(completion)
        if parse_completion(text, list(sample_options), final=True).letter is None:
            rewards.append(0.0)
            continue
        hints = reasoning_hints(text, "", list(sample_options))
        rewards.append(0.0 if any(hint.kind == "contradiction" for hint in hints) else 1.0)
    return rewards


def _tag_or_whole(pattern: re.Pattern[str], text: str) -> str:
    """The stripped contents of the first tag ``pattern`` finds, else the whole text stripped."""
    match = pattern.search(text)
    return (match.group(1) if match else text).strip()


REWARDS: dict[str, RewardFunction] = {
    "format": format_reward,
    "accuracy": accuracy_reward,
    "accuracy_paper": paper_accuracy_reward,
    "accuracy_medr1": medr1_accuracy_reward,
    "consistency": consistency_reward,
}
"""Reward functions by the name a recipe uses (``reward_funcs: [accuracy, format]``)."""


def get_rewards(names: Sequence[str]) -> list[RewardFunction]:
    """The reward functions named, in order; an unknown name raises with the list of valid ones."""
    if isinstance(names, str):
        names = [names]
    unknown = [name for name in names if name not in REWARDS]
    if unknown:
        raise MedVLMError(f"Unknown reward function {unknown[0]!r}; choose from: {', '.join(REWARDS)}.")
    return [REWARDS[name] for name in names]
