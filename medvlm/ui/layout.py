"""The page, top to bottom: the model banner, then the Ask tab (case, question, answer, review)
and the Reviews tab (filters, table, one review, summary, exports).

Event wiring sits right under the components it connects. Every handler is a method of the
:class:`~medvlm.ui.handlers.Workbench`; every important component has a stable ``elem_id`` (the
browser tests find them by it) and every event an ``api_name`` (``gradio_client`` calls them).
"""

from __future__ import annotations

import functools

import gradio as gr

from medvlm.annotations import FLAGS
from medvlm.prompt import PromptStyle
from medvlm.streaming import MAX_NEW_TOKENS_LIMIT
from medvlm.ui import render
from medvlm.ui.components import NumberField, SliderField
from medvlm.ui.handlers import (
    ANY,
    FILE_DEFAULT,
    WINDOW_CHOICES,
    AskUpdate,
    CaseShown,
    EvaluationLoaded,
    ExampleShown,
    ImageRendered,
    SampleShown,
    Session,
    Workbench,
    flag_choices,
)
from medvlm.user_text import MAX_COMMENT_CHARS, MAX_NAME_CHARS

STYLE_LABELS = {
    PromptStyle.MEDVLM: "MedVLM-R1 instructions (clean)",
    PromptStyle.MEDVLM_EXACT: "MedVLM-R1 instructions (byte-exact original)",
    PromptStyle.MEDR1: "Med-R1 wording",
    PromptStyle.NO_THINK: "No reasoning (answer only)",
}

NAME_MODE_NOTE = (
    "Name mode is for a trusted team: anyone can type any name. Start the app with --auth, or on a Space "
    "with Hugging Face sign-in, to know who reviewed."
)

UPLOADS_KEPT_S = 3600
"""Gradio's copies of uploads and exports are deleted after an hour (they may be DICOMs with patient tags)."""


def outputs_of(event: type[tuple], page: dict[str, gr.components.Component]) -> list[gr.components.Component]:
    """The outputs list of an event, in the order of its NamedTuple's fields (each names a component)."""
    return [page[name] for name in event._fields]


def build_demo(workbench: Workbench) -> gr.Blocks:
    """The whole app, queued with the configured number of simultaneous generations."""
    config = workbench.config
    with gr.Blocks(title="medvlm", delete_cache=(UPLOADS_KEPT_S, UPLOADS_KEPT_S), analytics_enabled=False) as demo:
        session = gr.State(Session(), delete_callback=Session.close)
        gr.Markdown("# medvlm: watch a medical vision-language model reason, then review it")
        banner = gr.Markdown(workbench.banner(), elem_id="model-banner")
        demo.load(workbench.banner, None, banner, api_visibility="private")  # the fidelity check may have ended

        with gr.Tabs(elem_id="tabs"):
            # ------------------------------------------------------------------ Ask
            with gr.Tab("Ask", id="ask", elem_id="tab-ask"):
                with gr.Row(equal_height=False):
                    # The case: image, question, options, settings.
                    with gr.Column(scale=4, elem_id="case-panel"):
                        upload = gr.File(
                            label="Image or DICOM (PNG, JPEG, TIFF, BMP, WebP, .dcm or no extension)",
                            file_types=None,
                            type="filepath",
                            elem_id="upload",
                        )
                        example_buttons = []
                        if workbench.examples:
                            gr.Markdown("Or try an example:")
                            with gr.Row(elem_id="examples"):
                                example_buttons = [
                                    gr.Button(example.label, size="sm", elem_id=f"example-{index}")
                                    for index, example in enumerate(workbench.examples)
                                ]
                        with gr.Accordion(
                            "Review an evaluation run (samples.jsonl from train.evaluate)",
                            open=False,
                            elem_id="evaluation",
                        ):
                            evaluation_file = gr.File(
                                label="samples.jsonl together with the image files it names (select them all)",
                                file_count="multiple",
                                type="filepath",
                                elem_id="evaluation-file",
                            )
                            evaluation_sample = SliderField(
                                1, 2, value=1, step=1, label="Sample", visible=False, elem_id="evaluation-sample"
                            )
                        preview = gr.Image(
                            label="What the model sees", type="pil", format="png", interactive=False, elem_id="preview"
                        )
                        image_info = gr.Markdown(label="Image facts", elem_id="image-info")
                        with gr.Group(visible=False, elem_id="dicom-controls") as dicom_controls:
                            window = gr.Dropdown(
                                WINDOW_CHOICES, value=FILE_DEFAULT, label="Display window", elem_id="window-preset"
                            )
                            with gr.Row(visible=False, elem_id="custom-window") as custom_window:
                                center = NumberField(label="Window centre", elem_id="window-center")
                                width = NumberField(label="Window width", elem_id="window-width", minimum=0)
                        frame = SliderField(0, 1, value=0, step=1, label="Frame", visible=False, elem_id="frame")
                        question = gr.Textbox(
                            label="Question",
                            lines=2,
                            placeholder="Which imaging modality was used?",
                            elem_id="question",
                        )
                        options = gr.Textbox(
                            label="Options, one per line (lettered A to J in order)",
                            lines=4,
                            placeholder="CT\nMRI\nX-Ray\nUltrasound",
                            elem_id="options",
                        )
                        correct = gr.Dropdown(
                            render.letter_choices(),
                            value="",
                            label="Correct answer (if known)",
                            elem_id="correct-answer",
                        )
                        with gr.Accordion("Generation settings", open=False, elem_id="settings"):
                            decoding = gr.Radio(
                                [("Greedy (as in the paper)", "greedy"), ("Sampling", "sample")],
                                value="greedy",
                                label="Decoding",
                                elem_id="decoding",
                            )
                            temperature = SliderField(
                                0.05,
                                2.0,
                                value=1.0,
                                step=0.05,
                                label="Temperature (sampling only)",
                                elem_id="temperature",
                            )
                            top_p = SliderField(
                                0.05, 1.0, value=1.0, step=0.05, label="Top-p (sampling only)", elem_id="top-p"
                            )
                            seed = gr.Textbox(
                                label="Seed (sampling only; empty: a new random seed, recorded with the answer)",
                                elem_id="seed",
                            )
                            max_new_tokens = NumberField(
                                value=512,
                                precision=0,
                                minimum=1,
                                maximum=MAX_NEW_TOKENS_LIMIT,
                                label="Maximum new tokens",
                                elem_id="max-new-tokens",
                            )
                            max_pixels = NumberField(
                                value=workbench.default_max_pixels(),
                                precision=0,
                                label="Image resolution (max pixels; 401408 = 512 image tokens)",
                                elem_id="max-pixels",
                            )
                            style = gr.Dropdown(
                                [(label, value.value) for value, label in STYLE_LABELS.items()],
                                value=workbench.default_style().value,
                                label="Prompt wording",
                                elem_id="prompt-style",
                            )
                        with gr.Row():
                            ask_button = gr.Button("Ask", variant="primary", elem_id="ask")
                            stop_button = gr.Button("Stop", variant="stop", elem_id="stop")
                        ask_error = gr.Markdown(label="Problem", elem_id="ask-error")

                    # The model's answer.
                    with gr.Column(scale=5, elem_id="output-panel"):
                        gr.Markdown("### Answer")
                        answer = gr.HTML(
                            render.options_html([]),
                            label="Answer",
                            css_template=render.OPTIONS_CSS,
                            js_on_load=None,
                            elem_id="answer",
                        )
                        reasoning = gr.Textbox(
                            label="Reasoning",
                            info="The model's <think> text, as it streams",
                            lines=10,
                            max_lines=30,
                            interactive=False,
                            autoscroll=True,
                            elem_id="reasoning",
                        )
                        timing = gr.Markdown(label="Timing", elem_id="timing")
                        with gr.Accordion("Raw model output", open=False):
                            raw_output = gr.Textbox(
                                label="Raw output",
                                show_label=False,
                                lines=6,
                                interactive=False,
                                buttons=["copy"],
                                elem_id="raw-output",
                            )

                    # The review of that answer.
                    with gr.Column(scale=3, elem_id="review-panel"):
                        gr.Markdown("### Review this answer")
                        review_target = gr.Markdown(render.review_target(None, None), elem_id="review-target")
                        # The id of the answer on screen: every save names it, and a save for another is refused.
                        shown_output = gr.Textbox("", visible="hidden", interactive=False, elem_id="shown-output-id")
                        reviewer_name = gr.Textbox(
                            label="Your name",
                            info=NAME_MODE_NOTE,
                            max_length=MAX_NAME_CHARS,
                            visible=config.reviewer_mode == "name",
                            elem_id="reviewer-name",
                        )
                        if config.reviewer_mode == "oauth":
                            gr.LoginButton(elem_id="login")
                        identity = gr.Markdown(label="Reviewer", elem_id="reviewer-identity")
                        flags = gr.CheckboxGroup(
                            [(label, key) for key, label in FLAGS.items()], label="Flags", elem_id="review-flags"
                        )
                        comment = gr.Textbox(
                            label="Comment", lines=3, max_length=MAX_COMMENT_CHARS, elem_id="review-comment"
                        )
                        submit = gr.Button("Save review", variant="primary", elem_id="review-submit")
                        review_status = gr.Markdown(label="Review status", elem_id="review-status")

                # Each handler returns a NamedTuple whose fields name these components, in order.
                # Loading another case empties the answer and the review form with it.
                page = dict(
                    upload=upload, preview=preview, image_info=image_info, dicom_controls=dicom_controls, frame=frame,
                    error=ask_error, window=window, custom_window=custom_window, center=center, width=width,
                    question=question, options=options, correct=correct, answer=answer, reasoning=reasoning,
                    raw_output=raw_output, timing=timing, flags=flags, comment=comment, review_status=review_status,
                    output_id=shown_output, review_target=review_target, evaluation_sample=evaluation_sample,
                )  # fmt: skip
                upload.upload(
                    workbench.load_file,
                    [session, upload, window, center, width],
                    outputs_of(CaseShown, page),
                    api_name="load_file",
                )
                upload.clear(workbench.clear_file, [session], outputs_of(CaseShown, page), api_name="clear_file")
                gr.on(
                    [window.input, center.submit, width.submit, center.blur, width.blur, frame.release],
                    workbench.render_image,
                    [session, window, center, width, frame],
                    outputs_of(ImageRendered, page),
                    api_name="render_image",
                    trigger_mode="always_last",
                )
                for index, button in enumerate(example_buttons):
                    button.click(
                        functools.partial(workbench.load_example, index),
                        [session],
                        outputs_of(ExampleShown, page),
                        api_name=f"load_example_{index}",
                    )
                evaluation_file.upload(
                    workbench.load_evaluation,
                    [session, evaluation_file],
                    outputs_of(EvaluationLoaded, page),
                    api_name="load_evaluation",
                )
                evaluation_sample.release(
                    workbench.show_evaluation_sample,
                    [session, evaluation_sample],
                    outputs_of(SampleShown, page),
                    api_name="show_evaluation_sample",
                )
                options.change(
                    workbench.preview_options,
                    [session, options, correct],
                    [answer, correct],
                    api_visibility="private",
                    queue=False,
                )
                correct.input(
                    workbench.show_answer, [session, correct], [answer], api_visibility="private", queue=False
                )

                ask_event = ask_button.click(
                    workbench.ask,
                    [
                        session,
                        question,
                        options,
                        correct,
                        decoding,
                        temperature,
                        top_p,
                        seed,
                        max_new_tokens,
                        max_pixels,
                        style,
                    ],
                    outputs_of(AskUpdate, page),
                    api_name="ask",
                )
                ask_button.click(
                    lambda: ([], "", ""), None, [flags, comment, review_status], api_visibility="private", queue=False
                )
                stop_button.click(
                    workbench.stop, [session], [answer, timing], api_name="stop", cancels=[ask_event], queue=False
                )

                submit.click(
                    workbench.submit_review,
                    [session, flags, comment, correct, reviewer_name, shown_output],
                    [review_status],
                    api_name="submit_review",
                )
                if config.reviewer_mode == "password":
                    demo.load(workbench.whoami, None, [identity], api_visibility="private")

            # ------------------------------------------------------------------ Reviews
            with gr.Tab("Reviews", id="reviews", elem_id="tab-reviews") as reviews_tab:
                with gr.Row():
                    flag_filter = gr.Dropdown(flag_choices(), value=ANY, label="Flag", elem_id="reviews-flag")
                    modality_filter = gr.Dropdown(
                        [ANY], value=ANY, label="Modality", allow_custom_value=True, elem_id="reviews-modality"
                    )
                    reviewer_filter = gr.Dropdown(
                        [ANY], value=ANY, label="Reviewer", allow_custom_value=True, elem_id="reviews-reviewer"
                    )
                    model_filter = gr.Dropdown(
                        [ANY], value=ANY, label="Model", allow_custom_value=True, elem_id="reviews-model"
                    )
                    refresh = gr.Button("Refresh", size="sm", elem_id="reviews-refresh")
                table = gr.Dataframe(
                    render.reviews_frame([]), interactive=False, wrap=True, max_height=400, elem_id="reviews-table"
                )
                with gr.Row():
                    review_id = NumberField(label="Review id (or click a row)", precision=0, elem_id="review-id")
                    open_button = gr.Button("Open", elem_id="review-open")
                with gr.Row(equal_height=False):
                    review_image = gr.Image(
                        label="Image", type="pil", format="png", interactive=False, elem_id="review-image"
                    )
                    review_detail = gr.HTML(
                        label="Review", css_template=render.OPTIONS_CSS, js_on_load=None, elem_id="review-detail"
                    )
                gr.Markdown("### Summary of the reviews shown")
                summary = gr.Markdown(label="Summary", elem_id="reviews-summary")
                with gr.Row():
                    flags_plot = gr.BarPlot(
                        x="label",
                        y="rate",
                        title="Share of reviews with each flag",
                        y_lim=[0, 1],
                        x_label_angle=-30,
                        elem_id="plot-flags",
                    )
                    stacked = "Each colour is the share of reviews with that flag, stacked."
                    by_modality = gr.BarPlot(
                        x="modality",
                        y="rate",
                        color="label",
                        title="Flags per review, by modality",
                        caption=stacked,
                        elem_id="plot-modality",
                    )
                    by_model = gr.BarPlot(
                        x="model_id",
                        y="rate",
                        color="label",
                        title="Flags per review, by model",
                        caption=stacked,
                        elem_id="plot-model",
                    )
                agreement = gr.Dataframe(
                    label="Agreement between reviewers (outputs reviewed by two or more)",
                    interactive=False,
                    elem_id="reviewer-agreement",
                )
                with gr.Row():
                    export_jsonl = gr.Button("Export JSONL", elem_id="export-jsonl")
                    export_parquet = gr.Button("Export Parquet (with images)", elem_id="export-parquet")
                export_file = gr.File(label="Download", interactive=False, elem_id="export-file")
                export_status = gr.Markdown(label="Export status", elem_id="export-status")

                filters = [flag_filter, modality_filter, reviewer_filter, model_filter]
                triggers = [reviews_tab.select, refresh.click, *(dropdown.input for dropdown in filters)]
                gr.on(
                    [reviews_tab.select, refresh.click],
                    workbench.review_filters,
                    None,
                    [modality_filter, reviewer_filter, model_filter],
                    api_name="review_filters",
                )
                gr.on(triggers, workbench.reviews_table, filters, [table], api_name="reviews")
                gr.on(
                    triggers,
                    workbench.reviews_summary,
                    filters,
                    [summary, flags_plot, by_modality, by_model, agreement],
                    api_name="review_summary",
                )
                table.select(
                    workbench.select_review, None, [review_id, review_image, review_detail], api_visibility="private"
                )
                gr.on(
                    [open_button.click, review_id.submit],
                    workbench.open_review,
                    [review_id],
                    [review_image, review_detail],
                    api_name="open_review",
                )
                export_jsonl.click(workbench.export_jsonl, None, [export_file, export_status], api_name="export_jsonl")
                export_parquet.click(
                    workbench.export_parquet, None, [export_file, export_status], api_name="export_parquet"
                )

    return demo.queue(default_concurrency_limit=config.concurrency)
