"""What the app shows, as HTML and Markdown: the lettered options with the model's choice, warnings,
the model banner, image facts and timing.

Pure functions of plain values, so every state a reader can see is testable without a browser.
Right and wrong are said in words as well as colours (a colour-blind reader, a printout), and
anything that came from a user or a model is escaped before it becomes HTML.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import pandas as pd

from medvlm import fast_cpu
from medvlm.annotations import FLAGS, SPAN_LABELS, Annotation, ModelOutput, ReviewVersion
from medvlm.annotations.campaigns import Progress
from medvlm.images import SafeMetadata
from medvlm.model import LoadedModel
from medvlm.processor import RECIPE_MAX_PIXELS, image_tokens
from medvlm.prompt import LETTERS
from medvlm.streaming import StreamUpdate, Timing
from medvlm.user_text import escape_markdown

OPTIONS_CSS = """
.options { display: flex; flex-direction: column; gap: 6px; }
.status { font-weight: 600; margin-bottom: 4px; }
.option { display: flex; gap: 10px; align-items: baseline; padding: 6px 10px; border-radius: 6px;
          border: 1px solid var(--border-color-primary); }
.option .letter { font-weight: 700; min-width: 1.5em; }
.option .text { flex: 1; }
.option .tag { font-size: 0.85em; font-weight: 600; }
.option.chosen { border: 2px solid #1d4ed8; background: rgba(29, 78, 216, 0.10); }
.option.correct { border: 2px solid #15803d; background: rgba(21, 128, 61, 0.14); }
.option.wrong { border: 2px solid #b91c1c; background: rgba(185, 28, 28, 0.12); }
.option.correct .tag { color: #15803d; }
.option.wrong .tag { color: #b91c1c; }
.warning { margin-top: 8px; padding: 6px 10px; border-radius: 6px; border: 1px solid #b45309;
           background: rgba(180, 83, 9, 0.12); }
.empty { opacity: 0.7; font-style: italic; }
"""
"""Scoped to the answer panels through ``gr.HTML(css_template=...)``."""

FORMAT_WARNING = (
    "The model did not follow the required format (its reasoning in <think>...</think>, then the answer in "
    "<answer>...</answer>). Treat this answer with caution."
)
CUT_OFF_HINT = (
    "The model was cut off at the maximum number of new tokens. Raise it under Generation settings for "
    "longer reasoning."
)
WAITING_FOR_FIRST = "Waiting: on a CPU the two models answer one after the other, and this one is second."
STOPPED = "You stopped the generation before it finished, so there is no answer to review."
RESEARCH_ONLY = "Research use only: not a medical device, not for diagnosis."
MIRROR_FAILED = " It is stored locally; copying it to the Hub dataset failed and was logged."
"""Said after a saved review whose copy to the Hub dataset failed (:meth:`~medvlm.ui.workbench.Workbench.mirror`)."""


def options_html(
    options: Sequence[str],
    *,
    chosen: str | None = None,
    correct: str | None = None,
    status: str = "",
    warnings: Sequence[str] = (),
) -> str:
    """The lettered options, the model's choice and the known correct answer marked in words and colour.

    Each option is a ``div.option`` with ``data-letter``; the model's choice adds ``chosen``, the
    known correct answer ``correct``, and a choice that is not the correct answer ``wrong``.
    """
    parts = [f'<div class="status">{_escape(status)}</div>'] if status else []
    if options:
        rows = [_option_row(letter, text, chosen, correct) for letter, text in zip(LETTERS, options, strict=False)]
        parts.append('<div class="options">' + "".join(rows) + "</div>")
    else:
        parts.append('<div class="empty">Type the options (one per line) to see them lettered A, B, C...</div>')
    parts += [f'<div class="warning" role="alert">\u26a0 {_escape(warning)}</div>' for warning in warnings]
    return "\n".join(parts)


def _option_row(letter: str, text: str, chosen: str | None, correct: str | None) -> str:
    classes = ["option"]
    tag = ""
    if letter == chosen:
        classes.append("chosen")
        if correct is None:
            tag = "\u25c0 Model's answer"
        elif letter == correct:
            classes.append("correct")
            tag = "\u2713 Model's answer: correct"
        else:
            classes.append("wrong")
            tag = "\u2717 Model's answer: wrong"
    elif letter == correct:
        classes.append("correct")
        tag = "\u2713 Correct answer"
    return (
        f'<div class="{" ".join(classes)}" data-letter="{letter}"><span class="letter">{letter})</span>'
        f'<span class="text">{_escape(text)}</span><span class="tag">{tag}</span></div>'
    )


def answer_html(
    options: Sequence[str],
    *,
    letter: str | None,
    correct: str | None,
    format_ok: bool,
    problem: str | None,
    stop_reason: str | None,
) -> str:
    """A finished answer: the choice highlighted, or a plain-language reason why there is none.

    A completion that broke the format is never shown as a plain answer: without a letter the
    status says "No answer" with the parser's explanation; with a letter but a broken format a
    warning stays beside it.
    """
    if stop_reason == "cancelled":
        return options_html(options, correct=correct, status="Stopped", warnings=[STOPPED])
    warnings = []
    if problem:
        warnings.append(problem)
    elif not format_ok:
        warnings.append(FORMAT_WARNING)
    if letter is None:
        if stop_reason == "max_new_tokens":
            warnings.append(CUT_OFF_HINT)
        return options_html(options, correct=correct, status="No answer", warnings=warnings)
    verdict = "" if correct is None else (": correct" if letter == correct else f": wrong (correct: {correct})")
    status = f"Answer: {letter}) {options[LETTERS.index(letter)]}{verdict}"
    return options_html(options, chosen=letter, correct=correct, status=status, warnings=warnings)


def output_html(output: ModelOutput, correct: str | None) -> str:
    """A stored or just finished answer, with ``correct`` (the reader's, which may differ from the stored one)."""
    return answer_html(
        output.options,
        letter=output.letter,
        correct=correct,
        format_ok=output.format_ok,
        problem=output.problem,
        stop_reason=output.stop_reason,
    )


def streaming_html(options: Sequence[str], update: StreamUpdate | None) -> str:
    """The options while the model works: what it is doing, and a warning once the text has left the format."""
    if update is None:
        status = "Reading the image..."
    elif update.parsed.think_closed or "<answer>" in update.text.lower():
        status = "Answering..."
    else:
        status = "Thinking..."
    warnings = [update.parsed.problem] if update is not None and update.parsed.problem else []
    return options_html(options, status=status, warnings=warnings)


def shown_reasoning(update: StreamUpdate) -> str:
    """The reasoning to show: the ``<think>`` text, or while no tag has come the raw text so far.

    A model that ignores the format still streams visibly; the answer panel says it broke the format.
    """
    parsed = update.parsed
    start = update.text.lstrip().lower()
    follows_format = any(start.startswith(tag) or tag.startswith(start) for tag in ("<think>", "<answer>"))
    return parsed.reasoning if follows_format or parsed.complete else update.text


def timing_markdown(timing: Timing | None, stop_reason: str | None) -> str:
    """One line under the output: time to first token, decode speed, tokens, and why it stopped."""
    if timing is None:
        return ""
    parts = []
    if timing.time_to_first_token_s is not None:
        parts.append(f"Time to first token {timing.time_to_first_token_s:.2f} s")
    if timing.tokens_per_second is not None:
        parts.append(f"{timing.tokens_per_second:.1f} tokens/s")
    parts.append(f"{timing.new_tokens} new tokens in {timing.total_s:.1f} s")
    reason = {"eos": "finished", "max_new_tokens": "stopped at the token limit", "cancelled": "stopped by you"}.get(
        stop_reason or ""
    )
    if reason:
        parts.append(reason)
    return " \u00b7 ".join(parts)


def error_markdown(message: str) -> str:
    """A problem the user can fix, shown as is (escaped: messages may quote tags such as <think>)."""
    return f"\u26a0 **{escape_markdown(message)}**" if message else ""


def error_html(message: str) -> str:
    """A problem, for an HTML panel (escaped; no Markdown there to render)."""
    return f'<div class="warning" role="alert">\u26a0 {_escape(message)}</div>' if message else ""


def reviewer_markdown(username: str | None) -> str:
    """Who is signed in (password login), shown above the review form."""
    return f"Reviewing as **{escape_markdown(username)}**." if username else ""


def image_markdown(metadata: SafeMetadata, *, label: str | None = None) -> str:
    """The safe facts about the shown image: format, modality, body part, size, frame, window."""
    parts = [label] if label else []
    parts += [part for part in (metadata.source_format, metadata.modality, metadata.body_part) if part]
    parts.append(f"{metadata.width}\u00d7{metadata.height} px")
    if metadata.frame_count > 1:
        parts.append(f"frame {metadata.frame_index + 1} of {metadata.frame_count}")
    if metadata.window_name is not None:
        window = f"window: {metadata.window_name}"
        if metadata.window_center is not None and metadata.window_width is not None:
            unit = " HU" if metadata.hounsfield else ""
            window += f" (centre {metadata.window_center:g}{unit}, width {metadata.window_width:g}{unit})"
        parts.append(window)
    return escape_markdown(" \u00b7 ".join(parts))


BANNER_CSS = """
.notice { padding: 8px 12px; border-radius: 8px; border: 1px solid; font-size: 0.95em; }
.notice.ok { border-color: #1d4ed8; background: rgba(29, 78, 216, 0.08); }
.notice.test { border-color: #b45309; background: rgba(180, 83, 9, 0.12); }
.notice.none { border-color: #b91c1c; background: rgba(185, 28, 28, 0.12); }
.notice .headline { font-weight: 600; }
.notice details { display: inline; margin-left: 0.5em; }
.notice details[open] { display: block; margin: 6px 0 0 0; }
.notice summary { display: inline; cursor: pointer; text-decoration: underline; }
.notice .problem { margin-top: 4px; font-weight: 600; color: #b91c1c; }
.notice code { font-size: 0.9em; }
"""
"""Scoped to the banner through ``gr.HTML(css_template=...)``."""

TINY_MODEL_HINT = (
    "To try the app without downloading weights, build the tiny test model (medvlm-tiny-model "
    "--format-warm-start ./tiny-model) and start the app with --model ./tiny-model; or pass --model DIR for a "
    "checkpoint you have downloaded. The Reviews tab works without a model."
)


def model_banner(
    model: LoadedModel | None,
    source: str,
    load_error: str | None,
    *,
    fidelity: str | None = None,
    notices: Sequence[str] = (),
    compare: str | None = None,
) -> str:
    """One short coloured notice: which model answers, whether it is the random test model, or why none does.

    ``compare`` names the second model of a side-by-side comparison (which side is which stays hidden
    on the Ask page until a blind verdict is saved).

    The engineering facts (device, precision, CPU fast path, threads, image budget, prompt
    wording) sit in a "details" disclosure; ``fidelity`` is the state of the fast path's check
    against the bf16 model (:mod:`medvlm.fidelity`); ``notices`` are start-up problems.
    """
    problems = "".join(f'<div class="problem" role="alert">\u26a0 {_escape(notice)}</div>' for notice in notices)
    if model is None:
        return (
            '<div class="notice none" role="status"><span class="headline">\u26d4 No model is loaded, so questions '
            f"cannot be answered.</span> {_escape(load_error or '')} {_escape(TINY_MODEL_HINT)}{problems}</div>"
        )
    description = model.describe()
    revision = f" at revision {description['revision'][:7]}" if description.get("revision") else ""
    headline = f"Model: <b>{_escape(source)}</b>{_escape(revision)}"
    if compare:
        headline = (
            f"Comparing <b>{_escape(source)}</b>{_escape(revision)} with <b>{_escape(compare)}</b>: each question "
            "gets both answers, side by side"
        )
    kind = "ok"
    if model.is_test_model:
        kind = "test"
        headline = (
            "\u26a0 This is the tiny test model with random weights: its output is random text, not medical "
            f"reasoning; it only shows how the app works. {headline}"
        )
    facts = [
        f"Runs on {description['device']}, {description['dtype']}.",
        f"Asked in the {model.prompt_style.value} wording: {model.prompt_style_reason} (changeable under "
        "Generation settings).",
        speed_note(model, fidelity),
    ]
    details = " ".join(_escape(fact) for fact in facts if fact)
    return (
        f'<div class="notice {kind}" role="status"><span class="headline">{headline}.</span> '
        f"{_escape(RESEARCH_ONLY)}<details><summary>Details</summary> {details}</details>{problems}</div>"
    )


def blind_banner() -> str:
    """The notice while a blind campaign is reviewed: what kind of work this is, and no model's name anywhere."""
    return (
        '<div class="notice ok" role="status"><span class="headline">A blind campaign: the model that answered is '
        f"hidden from its reviewers, and so is the correct answer.</span> {_escape(RESEARCH_ONLY)}</div>"
    )


FAST_PATH_WEIGHTS = {
    fast_cpu.BF16_INT8: "int8 weights with bf16 activations",
    fast_cpu.FP32_BF16: "bf16 weights (the rest fp32)",
}
"""What each CPU fast path scheme keeps in the language model's linear layers, as the banner says it."""


def speed_note(model: LoadedModel, fidelity: str | None = None) -> str:
    """On a CPU: what the fast path did, how faithful it is, and the image size it chose (what the model sees)."""
    if model.device.type != "cpu":
        return ""
    images = (
        f"images up to {model.max_pixels:,} pixels ({image_tokens(model.max_pixels)} image tokens; "
        f"the recipe uses {RECIPE_MAX_PIXELS:,} = {image_tokens(RECIPE_MAX_PIXELS)}, set under Generation settings)"
    )
    report = model.fast_cpu
    if model.fast_path_pending:
        return f"CPU fast path being prepared (GPTQ, in the background): the model's own bf16 meanwhile, {images}."
    if report is None:
        return f"CPU fast path off: plain fp32, {images}."
    if not report.quantized:
        return f"CPU fast path without int8 ({report.fallback or ''}), {report.threads} threads, {images}."
    weights = FAST_PATH_WEIGHTS[report.scheme]
    checked = f" Fidelity: {fidelity}." if fidelity else ""
    return (
        f"CPU fast path: {weights} in {report.quantized_layers} layers, {report.threads} "
        f"threads, {images}; --no-fast-cpu turns it off.{checked}"
    )


AGREEMENT_HEADERS = {
    "label": "Flag",
    "outputs": "Outputs reviewed by 2+ people",
    "ratings": "Reviews of them",
    "observed_agreement": "Observed agreement",
    "fleiss_kappa": "Fleiss' kappa",
}
"""The agreement table's headers, on the Reviews tab and in a campaign report."""

REVIEW_COLUMNS = [
    "Review id",
    "Question",
    "Model's answer",
    "Flags",
    "Comment",
    "Reviewer",
    "Right?",
    "Modality",
    "Model",
    "Saved (UTC)",
]
"""The Reviews table's headers: the id first (what Open takes, seen without scrolling), then what a reviewer scans
for, the bookkeeping last."""
REVIEW_COLUMN_WIDTHS = ["72px", "240px", "140px", "170px", "190px", "110px", "72px", "80px", "150px", "120px"]
"""Their widths: 1,344 px in all, inside the 1,374 px of a 1440-pixel-wide window; narrower, the table scrolls
sideways with every column readable instead of squeezing all but one."""


def reviews_frame(annotations: Sequence[Annotation]) -> pd.DataFrame:
    """One row per annotation for the Reviews table, newest first (the order given)."""
    rows = [
        [
            annotation.id,
            annotation.question,
            f"{annotation.letter}) {annotation.options[LETTERS.index(annotation.letter)]}"
            if annotation.letter and LETTERS.index(annotation.letter) < len(annotation.options)
            else "no answer",
            "; ".join(FLAGS[flag] for flag in annotation.flags) or "none",
            annotation.comment,
            annotation.reviewer,
            {True: "right", False: "wrong", None: "not known"}[annotation.is_correct],
            annotation.modality or "",
            annotation.model_id,
            annotation.updated_at[:19].replace("T", " "),
        ]
        for annotation in annotations
    ]
    return pd.DataFrame(rows, columns=REVIEW_COLUMNS)


def review_target(output: ModelOutput | None, case: str | None, *, generating: bool = False) -> str:
    """What a review saved now would be about: the case and the answer on screen, by its output id.

    Shown above the review form, so a reviewer always sees which answer their flags attach to.
    """
    where = escape_markdown(case) if case else "the uploaded image"
    if generating:
        return f"Generating an answer for {where}; the review opens when it is finished."
    if output is None:
        return "No answer to review yet: ask a question about the image on screen."
    answer = f"answer {output.letter}" if output.letter else "no answer"
    return (
        f"Reviewing the model's answer to **{escape_markdown(output.question)}** on {where} ({answer}; output "
        f"`{output.output_id[:8]}`)."
    )


def hints_markdown(hints: Sequence[Any]) -> str:
    """Pre-check hints as a short list: each names the flag it suggests; the reviewer decides."""
    if not hints:
        return "Pre-check: nothing to point out."
    lines = [
        f"- Possible **{escape_markdown(FLAGS[hint.flag].lower())}**: {escape_markdown(hint.message)}"
        for hint in hints
    ]
    return "Pre-check hints (suggestions, not flags):\n" + "\n".join(lines)


def campaign_progress(progress: Progress, reviewer: str, per_item: int, *, comparison: bool = False) -> str:
    """A campaign's progress line: items with their k judgements, and how many are this reviewer's."""
    mine = next((count for name, count in progress.by_reviewer.items() if name.casefold() == reviewer.casefold()), 0)
    items, judgements, verb = ("pairs", "verdict", "judged") if comparison else ("outputs", "review", "reviewed")
    return (
        f"**{progress.complete} of {progress.outputs}** {items} have their {per_item} {judgements}(s) "
        f"({progress.reviews} of {progress.wanted} {judgements}s); you have {verb} **{mine}**."
    )


def revealed_pair(first: str | None, second: str | None) -> str:
    """After a verdict: which model gave which answer."""
    first, second = escape_markdown(first or "?"), escape_markdown(second or "?")
    return f"Answer 1 came from **{first}**, answer 2 from **{second}**."


def answer_header(position: int, model: str | None) -> str:
    """The heading above one answer of a comparison: its model once revealed, else only its position."""
    if model is None:
        return f"### Answer {position}"
    return f"### Answer {position}: {escape_markdown(model)}"


def annotation_html(annotation: Annotation, history: Sequence[ReviewVersion] = ()) -> str:
    """One stored review in full: question, options and answer, reasoning, flags, comment, earlier versions."""
    answer = output_html(annotation, annotation.correct_answer)
    flags = ", ".join(FLAGS[flag] for flag in annotation.flags) or "none"
    facts = [
        f"Review #{annotation.id} by {annotation.reviewer}, saved {annotation.updated_at[:19].replace('T', ' ')} UTC"
        + (f" (version {annotation.revision})" if annotation.revision > 1 else ""),
        f"Model: {annotation.model_id} (prompt: {annotation.prompt_style})",
    ]
    return "\n".join(
        [
            *(f'<div class="fact">{_escape(fact)}</div>' for fact in facts),
            f'<div class="question"><b>Question:</b> {_escape(annotation.question)}</div>',
            answer,
            '<div class="reasoning"><b>Reasoning:</b><pre style="white-space: '
            f'pre-wrap">{_escape(annotation.reasoning or annotation.completion)}</pre></div>',
            f'<div class="flags"><b>Flags:</b> {_escape(flags)}</div>',
            *_marked_passages(annotation),
            f'<div class="comment"><b>Comment:</b> {_escape(annotation.comment) or "none"}</div>',
            *_earlier_versions(history),
        ]
    )


def _marked_passages(annotation: Annotation) -> list[str]:
    """The passages of the completion the reviewer marked, quoted with their labels."""
    if not annotation.spans:
        return []
    items = "".join(
        f"<li><q>{_escape(annotation.completion[span.start : span.end])}</q>: {_escape(SPAN_LABELS[span.label])}</li>"
        for span in annotation.spans
    )
    return [f'<div class="spans"><b>Marked passages:</b><ul>{items}</ul></div>']


def _earlier_versions(history: Sequence[ReviewVersion]) -> list[str]:
    """The versions before the latest, newest first: what the reviewer (or a namesake) said before."""
    earlier = list(history)[:-1][::-1]
    if not earlier:
        return []
    items = "".join(
        f"<li>Version {version.version}, saved {_escape(version.saved_at[:19].replace('T', ' '))} UTC: "
        f"flags {_escape(', '.join(FLAGS[flag] for flag in version.flags) or 'none')}; "
        f"comment {_escape(version.comment) or 'none'}</li>"
        for version in earlier
    )
    return [f'<div class="history"><b>Earlier versions ({len(earlier)}):</b><ul>{items}</ul></div>']


def letter_choices(options: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """Choices of the "correct answer" dropdown: "not known", then one per option ("B) MRI").

    Without options, every letter A..J (what the page starts with, so an API client that never
    types into the options box can still name any letter).
    """
    if options is None:
        return [("Not known", ""), *((letter, letter) for letter in LETTERS)]
    return [
        ("Not known", ""),
        *((f"{letter}) {text}", letter) for letter, text in zip(LETTERS, options, strict=False)),
    ]


def _escape(text: Any) -> str:
    return html.escape(str(text), quote=False)
