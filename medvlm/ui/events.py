"""What each event changes on the page: one NamedTuple per kind of event, its fields naming components.

A handler returns (or yields) one of these; the layout builds the event's outputs list from the
same fields (:func:`outputs_of`), so the order of the two cannot drift apart, and a test reads
``shown.viewer`` instead of counting positions. A field holds a value, a ``gr.update`` or
``gr.skip()``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import gradio as gr
import pandas as pd

from medvlm.hints import reasoning_sentences
from medvlm.ui import render
from medvlm.ui.session import Session

IMAGE_FIELDS = (
    "viewer",
    "image_info",
    "dicom_controls",
    "window",
    "custom_window",
    "center",
    "width",
    "frame",
    "window_error",
)
"""The image on screen and its display controls."""
ANSWER_FIELDS = ("answer", "reasoning", "raw_output", "timing")
"""The model's answer: the lettered options, the reasoning, the raw text and the timing line."""
PROBE_FIELDS = ("probe_panel", "probe_results", "probe_button", "sentence", "relevance_status")
"""The probes of the answer on screen and the sentence whose relevance map the viewer shows."""
REVIEW_FIELDS = (
    "review_panel",
    "review_target",
    "output_id",
    "flags",
    "comment",
    "review_status",
    "submit_next",
    *PROBE_FIELDS,
)
"""The review form, the id of the answer it is for, and that answer's probes."""
QUESTION_FIELDS = ("question", "options", "correct")
SECOND_ANSWER_FIELDS = ("second_answer", "second_reasoning", "second_raw_output", "second_timing")
"""In a comparison (``--compare-model``), the answer shown second; hidden otherwise."""
SECOND_REVIEW_FIELDS = (
    "second_review_panel",
    "second_review_target",
    "second_output_id",
    "second_flags",
    "second_comment",
    "second_review_status",
)
VERDICT_FIELDS = ("first_header", "second_header", "verdict_panel", "verdict", "verdict_status")
"""The two answers' headings (the model names once revealed) and the pairwise verdict form."""
PAIR_FIELDS = (*SECOND_ANSWER_FIELDS, *SECOND_REVIEW_FIELDS, *VERDICT_FIELDS)
"""Everything a comparison adds to the answer area: emptied, filled and reset with it."""


def _event(name: str, fields: Sequence[str], doc: str) -> type[tuple]:
    event = NamedTuple(name, [(field_name, Any) for field_name in fields])
    event.__doc__ = doc
    return event


CaseShown = _event(
    "CaseShown",
    ("upload", "upload_error", *IMAGE_FIELDS, *ANSWER_FIELDS, *REVIEW_FIELDS, *PAIR_FIELDS, *QUESTION_FIELDS),
    "An upload or its removal: the image and its controls, the answer area and the review form emptied, the correct "
    "answer cleared (and the question and options a loaded case brought). A refused file leaves the upload box "
    "empty, with the reason beside it.",
)
ImageRendered = _event(
    "ImageRendered",
    (*IMAGE_FIELDS, *ANSWER_FIELDS, *REVIEW_FIELDS, *PAIR_FIELDS),
    "Another window (the answer stays: same pixels, another display) or another frame (a new case).",
)
ExampleShown = _event(
    "ExampleShown",
    CaseShown._fields,
    "An example case: its image, question, options and window, and the answer area emptied.",
)
SampleShown = _event(
    "SampleShown",
    (
        *IMAGE_FIELDS,
        *QUESTION_FIELDS,
        *ANSWER_FIELDS,
        *REVIEW_FIELDS,
        "evaluation_sample",
        "evaluation_error",
        *PAIR_FIELDS,
    ),
    "A sample of an imported evaluation run, shown as a finished answer ready for review.",
)
AskUpdate = _event(
    "AskUpdate",
    (*ANSWER_FIELDS, *REVIEW_FIELDS, "ask_error", "ask_button", *PAIR_FIELDS),
    "One step of a streamed answer (or, in a comparison, of two); the last one names the answer (``output_id``, and "
    "``second_output_id``) and opens the review forms.",
)

ProbeUpdate = _event(
    "ProbeUpdate",
    ("probe_results", "probe_button"),
    "The probes of the answer on screen, as each one ends (Probe disabled while they run), or why they cannot run.",
)
RelevanceShown = _event(
    "RelevanceShown",
    ("viewer", "relevance_status"),
    "A reasoning sentence selected: the viewer with that sentence's relevance map over the image (or without one).",
)

OptionsPreviewed = _event(
    "OptionsPreviewed",
    ("answer", "correct", "second_answer"),
    "The options as typed, lettered (the last answer still highlighted while they are its own), and the "
    "correct-answer choices that follow them.",
)
AnswerMarked = _event(
    "AnswerMarked",
    ("answer", "second_answer"),
    "The correct answer changed after the answers came: each marked right or wrong again.",
)

Stopped = _event(
    "Stopped",
    ("answer", "timing", "ask_button", "second_answer", "second_timing"),
    "Stop pressed: the answer area says so (nothing changes when nothing was running), and Ask is ready again.",
)
VerdictSaved = _event(
    "VerdictSaved",
    ("verdict_status", "first_header", "second_header"),
    "A pairwise verdict saved (the model names revealed above both answers) or refused, with the reason.",
)

CAMPAIGN_FIELDS = (
    "campaign_guidelines",
    "campaign_progress",
    "campaign_viewer",
    "campaign_case",
    "campaign_answer",
    "campaign_reasoning",
    "campaign_hints",
    "campaign_sentences",
    "campaign_flags",
    "campaign_comment",
    "campaign_skip_reason",
    "campaign_output_id",
    "campaign_status",
    "campaign_review_form",
    "campaign_verdict",
    "campaign_first_header",
    "campaign_pair_panel",
    "campaign_second_header",
    "campaign_second_answer",
    "campaign_second_reasoning",
    "campaign_second_hints",
    "campaign_second_output_id",
)
"""The Campaigns tab's output and its form; in a comparison campaign, the pair and the verdict instead."""
CampaignShown = _event(
    "CampaignShown",
    CAMPAIGN_FIELDS,
    "The Campaigns tab: the output handed to this reviewer (or that there is none left), with a fresh form.",
)


CampaignCreated = _event(
    "CampaignCreated",
    ("campaign", "campaign_admin_status"),
    "A campaign made in the set-up panel (the campaign chooser now lists it and has it chosen), or why not.",
)
GuidelinesSaved = _event(
    "GuidelinesSaved",
    ("campaign_guidelines", "campaign_admin_status"),
    "An administrator's new guidelines, shown as reviewers see them, or why they were not saved.",
)
CampaignExported = _event(
    "CampaignExported", ("campaign_export_file", "campaign_export_status"), "The campaign as a zip, or why not."
)
AdjudicationForm = _event(
    "AdjudicationForm",
    ("adjudicate_flags", "adjudicate_verdict"),
    "The adjudication form for the campaign's kind: flags for a review campaign, a verdict for a comparison.",
)
ReportClosed = _event(
    "ReportClosed",
    ("campaign_report_box", "campaign_report"),
    "Another campaign chosen: the report closed and emptied (it loads when opened, never the last one's shown).",
)
CampaignSourceChosen = _event(
    "CampaignSourceChosen",
    ("new_campaign_second_run", "new_campaign_flips_only", "new_campaign_probes", "new_campaign_show_probes"),
    "What the set-up panel asks for a campaign made from a run, a dataset or two runs.",
)
CampaignReport = _event(
    "CampaignReport",
    ("campaign_report", "campaign_agreement", "campaign_hint_table", "campaign_disagreements"),
    "The campaign report's summary and tables: agreement, the hints (and probes) against the flags, what to "
    "adjudicate (a comparison campaign: its verdicts' summary, agreement, no hint table, the split pairs).",
)
CampaignDashboard = _event(
    "CampaignDashboard",
    (
        "campaign_over_time",
        "campaign_by_modality",
        "campaign_by_question_type",
        "campaign_by_model",
        "campaign_per_reviewer",
    ),
    "The campaign report's plots: reviews (or verdicts) over time, flag (or verdict) rates by modality, question "
    "type and model, and the count per reviewer.",
)


ReviewFilters = _event(
    "ReviewFilters",
    ("modality_filter", "reviewer_filter", "model_filter"),
    "The Reviews tab's filters, their choices read from the store (the flags are fixed).",
)
ReviewOpened = _event(
    "ReviewOpened",
    ("review_image", "review_detail"),
    "One stored review in full (its image, its details and earlier versions), or why it cannot be shown.",
)
ReviewSelected = _event(
    "ReviewSelected",
    ("review_id", *ReviewOpened._fields),
    "A row of the reviews table clicked: its id, and it opened.",
)
ReviewsExported = _event(
    "ReviewsExported", ("export_file", "export_status"), "Every review as a file to download, or why not."
)
ReviewsSummary = _event(
    "ReviewsSummary",
    (
        "reviews_summary",
        "reviews_flag_rates",
        "reviews_by_modality",
        "reviews_by_model",
        "reviews_agreement_note",
        "reviews_agreement",
    ),
    "The Reviews tab's summary of the reviews the filters select: the text, flag rates overall, by modality and "
    "by model, and the agreement between reviewers with its caution.",
)


def campaign_dashboard(
    over_time: Any,
    by_modality: Any,
    by_question_type: Any,
    by_model: Any,
    by_reviewer: Mapping[str, int],
    *,
    comparison: bool,
) -> CampaignDashboard:
    """The campaign dashboard's five plots, titled for what they count: reviews and flags, or a comparison's
    verdicts (the plots are shared, so each answer sets its titles). ``by_reviewer``: each one's count."""
    unit, parts, part = ("verdicts", "Verdicts", "Verdict") if comparison else ("reviews", "Flags", "Flag")
    per_reviewer = pd.DataFrame(
        [{"reviewer": name, "reviews": count} for name, count in by_reviewer.items()], columns=["reviewer", "reviews"]
    )
    most = max(by_reviewer.values(), default=1)
    grouped = [
        gr.update(
            value=frame,
            title=f"{parts} in this {'comparison' if comparison else 'campaign'}, by {what}",
            y_title=f"Share of that {what}'s {unit}, stacked by {part.lower()}",
            color_title=part,
        )
        for frame, what in ((by_modality, "modality"), (by_question_type, "question type"), (by_model, "model"))
    ]
    return CampaignDashboard(
        gr.update(
            value=over_time, title=f"{unit.capitalize()} submitted so far", y_title=f"{unit.capitalize()}, cumulative"
        ),
        *grouped,
        # y from 0: an axis from the smallest count hides its bar
        gr.update(
            value=per_reviewer, y_lim=[0, most], title=f"{unit.capitalize()} per reviewer", y_title=unit.capitalize()
        ),
    )


def one_output_form() -> dict[str, Any]:
    """The Campaigns tab set for a review campaign: the review form shown, the pair and the verdict hidden."""
    return {
        "campaign_review_form": gr.update(visible=True),
        "campaign_verdict": gr.update(visible=False, value=None),
        "campaign_first_header": "",
        "campaign_pair_panel": gr.update(visible=False),
        "campaign_second_header": "",
        "campaign_second_answer": "",
        "campaign_second_reasoning": "",
        "campaign_second_hints": "",
        "campaign_second_output_id": "",
    }


def campaign_message(text: str) -> CampaignShown:
    """The Campaigns tab unchanged but for its status line, which says what went wrong."""
    return CampaignShown(**{**skips(CampaignShown._fields), "campaign_status": render.error_markdown(text)})


def skips(fields: Sequence[str]) -> dict[str, Any]:
    """Leave these components as they are."""
    return {name: gr.skip() for name in fields}


def outputs_of(event: type[tuple] | str, page: Mapping[str, Any]) -> list[Any]:
    """The outputs list of an event, in the order of its NamedTuple's fields (each names a component).

    A handler that changes one component returns its value, and is wired with that component's
    name: Gradio hands a lone output whatever the handler returns, so a one-field tuple would be
    shown as the tuple itself.
    """
    return [page[event]] if isinstance(event, str) else [page[name] for name in event._fields]


def inputs_of(handler: Callable[..., Any], page: Mapping[str, Any], *, session: Any) -> list[Any]:
    """The inputs list of a handler, from its parameter names: ``session`` is the tab's state.

    Parameters Gradio fills itself (a ``gr.Request``, an OAuth profile, event data, a progress bar) are left out,
    so the handler's signature is the one place that says what it reads from the page.
    """
    names = [
        name
        for name, parameter in inspect.signature(handler).parameters.items()
        if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.POSITIONAL_ONLY)
        and name not in ("profile", "request", "evt", "progress")
    ]
    return [session if name == "session" else page[name] for name in names]


def review_fields(session: Session) -> dict[str, Any]:
    """The review forms emptied, each for its answer now on screen (named by its output id), shown only with one.

    In a comparison, the second answer's form and the verdict too; the verdict form opens once both
    answers are finished.
    """
    output, second = session.last_output, session.second_output
    last_sample = session.evaluation_index is not None and session.evaluation_index + 1 >= len(session.evaluation)
    first_name, second_name = session.shown_names()
    return {
        "review_panel": gr.update(visible=output is not None),
        "review_target": render.review_target(output, session.source_label),
        "output_id": output.output_id if output else "",
        "flags": [],
        "comment": "",
        "review_status": "",
        "submit_next": gr.update(visible=session.evaluation_index is not None and not last_sample),
        "second_review_panel": gr.update(visible=second is not None),
        "second_review_target": render.review_target(second, session.source_label),
        "second_output_id": second.output_id if second else "",
        "second_flags": [],
        "second_comment": "",
        "second_review_status": "",
        "first_header": render.answer_header(1, first_name),
        "second_header": render.answer_header(2, second_name),
        "verdict_panel": gr.update(visible=output is not None and second is not None),
        "verdict": None,
        "verdict_status": "",
        **probe_fields(session),
    }


def probe_fields(session: Session) -> dict[str, Any]:
    """The probe panel for the answer on screen: shown for an answer this app generated, emptied."""
    output = session.last_output
    probeable = output is not None and session.answered_by is not None
    sentences = reasoning_sentences(output.completion) if output is not None else []
    return {
        "probe_panel": gr.update(visible=probeable),
        "probe_results": PROBE_INTRO,
        "probe_button": gr.update(interactive=probeable, value=PROBE_LABEL),
        "sentence": gr.update(
            choices=[(NO_OVERLAY, "")] + [(text, str(index)) for index, (_, _, text) in enumerate(sentences)],
            value="",
        ),
        "relevance_status": "",
    }


PROBE_LABEL = "Probe this answer"
PROBE_INTRO = (
    "Does the answer depend on the image, or on its reasoning? *Probe* asks again with the probes ticked: a blank "
    "image, another case's image, the options rotated, or without reasoning."
)
NO_OVERLAY = "(no map)"


def empty_answer_fields(session: Session) -> dict[str, Any]:
    """The answer area emptied (the options shown lettered, nothing chosen) and the review form with it."""
    return {
        "answer": render.options_html(session.options),
        "reasoning": "",
        "raw_output": "",
        "timing": "",
        **empty_second_answer(session),
        **review_fields(session),
    }


def empty_second_answer(session: Session) -> dict[str, Any]:
    """The second answer area of a comparison emptied (a case with one answer, such as an evaluation sample)."""
    return {
        "second_answer": render.options_html(session.options),
        "second_reasoning": "",
        "second_raw_output": "",
        "second_timing": "",
    }
