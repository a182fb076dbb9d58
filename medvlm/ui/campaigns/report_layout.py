"""The Campaigns tab's report, loaded when opened: progress, agreement, the hints against the flags, the plots,
the disagreements with their adjudication, and (for administrators) the export.

A comparison campaign fills the same tables and plots with its verdicts; which kind a campaign is
decides what :class:`~medvlm.ui.campaigns.handlers.CampaignHandlers` puts in them.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from medvlm.annotations import FLAGS, VERDICT_CHOICES
from medvlm.ui.campaigns.admin_handlers import CampaignAdmin
from medvlm.ui.campaigns.admin_layout import export_panel
from medvlm.ui.campaigns.handlers import CampaignHandlers
from medvlm.ui.events import (
    AdjudicationForm,
    CampaignDashboard,
    CampaignReport,
    ReportClosed,
    inputs_of,
    outputs_of,
)

GROUPED_PLOTS = (("modality", "modality"), ("question_type", "question type"), ("model_id", "model"))
"""The campaign report's flag-rate plots: the column grouped by, and its name on the plot."""


def report_panel(page: dict[str, Any], handlers: CampaignHandlers, admin: CampaignAdmin) -> None:
    """The campaign report (loaded when opened), adjudication, and the export (administrators)."""
    with gr.Accordion("Campaign report", open=False, elem_id="campaign-report-box") as report_box:
        report_button = gr.Button(
            "Refresh the report",
            size="sm",
            elem_id="campaign-report-refresh",
        )
        report_summary = gr.Markdown(elem_id="campaign-report")
        report_agreement = gr.Dataframe(
            label="Agreement between reviewers, per flag (outputs reviewed by two or more)",
            interactive=False,
            wrap=True,
            elem_id="campaign-agreement",
        )
        report_hints = gr.Dataframe(
            label="Pre-check hints against the reviewers' flags",
            interactive=False,
            elem_id="campaign-hint-accuracy",
        )
        with gr.Row():
            progress_plot = gr.LinePlot(
                x="time",
                y="reviews",
                title="Reviews submitted so far",
                x_title="Time (in your time zone)",
                y_title="Reviews, cumulative",
                elem_id="campaign-progress-plot",
            )
            per_reviewer = gr.BarPlot(
                x="reviewer",
                y="reviews",
                title="Reviews per reviewer",
                x_title="Reviewer",
                y_title="Reviews",
                elem_id="campaign-per-reviewer",
            )
        with gr.Row(equal_height=False):  # each wide enough for its legend to name all five flags: one per line
            campaign_by_modality, campaign_by_question_type, campaign_by_model = (
                gr.BarPlot(
                    x=column,
                    y="rate",
                    color="label",
                    title=f"Flags per review in this campaign, by {what}",
                    x_title=what.capitalize(),
                    y_title=f"Share of that {what}'s reviews, stacked by flag",
                    color_title="Flag",
                    min_width=900,
                    elem_id=f"campaign-plot-{column}",
                )
                for column, what in GROUPED_PLOTS
            )
        report_disagreements = gr.Dataframe(
            label="Disagreements to adjudicate (outputs whose reviewers set different flags; in a comparison, "
            "the pairs its reviewers split on)",
            interactive=False,
            elem_id="campaign-disagreements",
        )
        with gr.Row(equal_height=False):
            adjudicate_output = gr.Textbox(  # a number box would show "0" while empty
                label="Output (or pair) number: the first column above",
                elem_id="adjudicate-output",
            )
            adjudicate_flags = gr.CheckboxGroup(
                [(label, key) for key, label in FLAGS.items()],
                label="Adjudicated flags",
                elem_id="adjudicate-flags",
            )
            adjudicate_verdict = gr.Radio(
                [(label.replace("Answer 1", "The first run's").replace("Answer 2", "The second run's"), key)
                 for key, label in VERDICT_CHOICES.items()],
                label="Adjudicated verdict on the pair",
                visible=False,
                elem_id="adjudicate-verdict",
            )  # fmt: skip
            adjudicate_note = gr.Textbox(
                label="Note",
                elem_id="adjudicate-note",
            )
        adjudicate = gr.Button(
            "Save the adjudication (administrators)",
            elem_id="adjudicate-save",
        )
        adjudicate_status = gr.Markdown(elem_id="adjudicate-status")
        export_panel(page, admin)
    page.update(
        campaign_report_box=report_box,
        adjudicate_output=adjudicate_output,
        adjudicate_flags=adjudicate_flags,
        adjudicate_note=adjudicate_note,
        adjudicate_verdict=adjudicate_verdict,
        adjudicate_status=adjudicate_status,
        campaign_report=report_summary,
        campaign_agreement=report_agreement,
        campaign_hint_table=report_hints,
        campaign_disagreements=report_disagreements,
        campaign_over_time=progress_plot,
        campaign_by_modality=campaign_by_modality,
        campaign_by_question_type=campaign_by_question_type,
        campaign_by_model=campaign_by_model,
        campaign_per_reviewer=per_reviewer,
    )
    shown_report = [report_button.click, report_box.expand]  # opening the report loads it: no Refresh needed
    gr.on(
        shown_report,
        handlers.report,
        inputs_of(handlers.report, page, session=None),
        outputs_of(CampaignReport, page),
        api_name="campaign_report",
    )
    gr.on(
        shown_report,
        handlers.dashboard,
        inputs_of(handlers.dashboard, page, session=None),
        outputs_of(CampaignDashboard, page),
        api_name="campaign_dashboard",
    )
    gr.on(
        shown_report,
        handlers.adjudication_form,
        inputs_of(handlers.adjudication_form, page, session=None),
        outputs_of(AdjudicationForm, page),
        api_visibility="private",
        queue=False,
    )
    page["campaign"].change(
        handlers.report_closed, None, outputs_of(ReportClosed, page), api_visibility="private", queue=False
    )
    adjudicate.click(
        handlers.adjudicate,
        inputs_of(handlers.adjudicate, page, session=None),
        outputs_of("adjudicate_status", page),
        api_name="campaign_adjudicate",
    ).then(  # the decision, shown
        handlers.report,
        inputs_of(handlers.report, page, session=None),
        outputs_of(CampaignReport, page),
        api_visibility="private",
    )
