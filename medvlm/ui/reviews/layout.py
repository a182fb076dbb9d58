"""The Reviews tab, top to bottom: the filters, the table of matching reviews, one opened in full (its image and
every earlier version), the summary of what the filters select (flag rates, agreement), and the exports.

Its events go to :class:`~medvlm.ui.reviews.handlers.ReviewsHandlers`.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from medvlm.ui import render
from medvlm.ui.events import (
    ReviewFilters,
    ReviewOpened,
    ReviewSelected,
    ReviewsExported,
    ReviewsSummary,
    inputs_of,
    outputs_of,
)
from medvlm.ui.inputs import ANY
from medvlm.ui.reviews.handlers import ReviewsHandlers, flag_choices
from medvlm.ui.workbench import Workbench


def reviews_tab(workbench: Workbench, reviews_tab: gr.Tab) -> None:
    """Every stored review: filtered, listed, one opened in full, summarised, exported."""
    reviews = ReviewsHandlers(workbench)
    page: dict[str, Any] = {}
    with gr.Row():
        page["flag_filter"] = gr.Dropdown(
            flag_choices(),
            value=ANY,
            label="Flag",
            elem_id="reviews-flag",
        )
        for name, label in (("modality", "Modality"), ("reviewer", "Reviewer"), ("model", "Model")):
            page[f"{name}_filter"] = gr.Dropdown(  # its choices come from the store when the tab opens
                [ANY],
                value=ANY,
                label=label,
                allow_custom_value=True,
                elem_id=f"reviews-{name}",
            )
        refresh = gr.Button(
            "Refresh",
            size="sm",
            elem_id="reviews-refresh",
        )
    table = gr.Dataframe(
        render.reviews_frame([]),
        interactive=False,
        wrap=True,
        max_height=400,
        column_widths=render.REVIEW_COLUMN_WIDTHS,
        elem_id="reviews-table",
    )
    with gr.Row():
        page["review_id"] = gr.Textbox(  # a number box would show "0" while empty; the handler reads the number
            label="Review id (or click a row)",
            placeholder="the first column of the table",
            elem_id="review-id",
        )
        open_button = gr.Button(
            "Open",
            elem_id="review-open",
        )
    with gr.Row(equal_height=False):
        review_image = gr.Image(
            label="Image",
            type="pil",
            format="png",
            interactive=False,
            elem_id="review-image",
        )
        review_detail = gr.HTML(
            css_template=render.OPTIONS_CSS,
            js_on_load=None,
            elem_id="review-detail",
        )
    _summary_area(page)
    with gr.Row():
        export_jsonl = gr.Button(
            "Export JSONL",
            elem_id="export-jsonl",
        )
        export_parquet = gr.Button(
            "Export Parquet (with images)",
            elem_id="export-parquet",
        )
    export_file = gr.File(
        label="Download",
        interactive=False,
        elem_id="export-file",
    )
    export_status = gr.Markdown(elem_id="export-status")

    page.update(
        reviews_table=table,
        review_image=review_image,
        review_detail=review_detail,
        export_file=export_file,
        export_status=export_status,
    )
    filters = [page[name] for name in ("flag_filter", "modality_filter", "reviewer_filter", "model_filter")]
    triggers = [reviews_tab.select, refresh.click, *(dropdown.input for dropdown in filters)]
    gr.on(
        [reviews_tab.select, refresh.click],
        reviews.review_filters,
        None,
        outputs_of(ReviewFilters, page),
        api_name="review_filters",
    )
    gr.on(
        triggers,
        reviews.reviews_table,
        inputs_of(reviews.reviews_table, page, session=None),
        outputs_of("reviews_table", page),
        api_name="reviews",
    )
    gr.on(
        triggers,
        reviews.reviews_summary,
        inputs_of(reviews.reviews_summary, page, session=None),
        outputs_of(ReviewsSummary, page),
        api_name="review_summary",
    )
    table.select(reviews.select_review, None, outputs_of(ReviewSelected, page), api_visibility="private")
    gr.on(
        [open_button.click, page["review_id"].submit],
        reviews.open_review,
        inputs_of(reviews.open_review, page, session=None),
        outputs_of(ReviewOpened, page),
        api_name="open_review",
    )
    for button, handler, api_name in (
        (export_jsonl, reviews.export_jsonl, "export_jsonl"),
        (export_parquet, reviews.export_parquet, "export_parquet"),
    ):
        button.click(handler, None, outputs_of(ReviewsExported, page), api_name=api_name)


def _summary_area(page: dict[str, Any]) -> None:
    """The summary of the reviews the filters select: text, flag-rate plots, agreement (:data:`ReviewsSummary`)."""
    gr.Markdown("### Summary of the reviews shown")
    summary = gr.Markdown(elem_id="reviews-summary")
    with gr.Row():
        flags_plot = gr.BarPlot(
            x="label",
            y="rate",
            title="Share of reviews with each flag",
            x_title="Flag",
            y_title="Share of the reviews shown (0 to 1)",
            y_lim=[0, 1],
            x_label_angle=-30,
            elem_id="plot-flags",
        )
        by_modality, by_model = (
            gr.BarPlot(
                x=column,
                y="rate",
                color="label",
                title=f"Flags per review, by {what}",
                x_title=what.capitalize(),
                y_title=f"Share of that {what}'s reviews, stacked by flag",
                color_title="Flag",
                elem_id=f"plot-{what}",
            )
            for column, what in (("modality", "modality"), ("model_id", "model"))
        )
    agreement_note = gr.Markdown(elem_id="agreement-note")
    agreement = gr.Dataframe(
        label="Agreement between reviewers, per flag",
        interactive=False,
        elem_id="reviewer-agreement",
    )
    page.update(
        reviews_summary=summary,
        reviews_flag_rates=flags_plot,
        reviews_by_modality=by_modality,
        reviews_by_model=by_model,
        reviews_agreement_note=agreement_note,
        reviews_agreement=agreement,
    )
