"""The page, top to bottom: one notice saying which model answers, then the Ask tab (the case, the
question, the answer and its review, side by side), the Campaigns tab (a shared review campaign,
one handed-out output at a time) and the Reviews tab (filters, table, one review, summary, exports).

Each tab is one function; its event wiring sits under its components. Handlers live per tab
(:mod:`~medvlm.ui.case_handlers`, :mod:`~medvlm.ui.answer_handlers`,
:mod:`~medvlm.ui.reviews_handlers`); an event's inputs come from the handler's parameter names
and its outputs from the fields of the NamedTuple it returns (:mod:`~medvlm.ui.events`), so
neither list is written twice. Every important component has a stable ``elem_id`` (the browser
tests find them by it) and every event an ``api_name`` (``gradio_client`` calls them).
"""

from __future__ import annotations

import functools
from typing import Any

import gradio as gr

from medvlm.annotations import FLAGS, SPAN_LABELS, VERDICT_CHOICES
from medvlm.prompt import PromptStyle
from medvlm.streaming import MAX_NEW_TOKENS_LIMIT
from medvlm.ui import render
from medvlm.ui.answer_handlers import AnswerHandlers
from medvlm.ui.campaign_handlers import CampaignHandlers
from medvlm.ui.case_handlers import CaseHandlers
from medvlm.ui.components import NumberField, SliderField
from medvlm.ui.events import (
    PROBE_INTRO,
    PROBE_LABEL,
    AdjudicationForm,
    AnswerMarked,
    AskUpdate,
    CampaignCreated,
    CampaignDashboard,
    CampaignExported,
    CampaignReport,
    CampaignShown,
    CampaignSourceChosen,
    CaseShown,
    ExampleShown,
    GuidelinesSaved,
    ImageRendered,
    OptionsPreviewed,
    ProbeUpdate,
    RelevanceShown,
    ReportClosed,
    ReviewFilters,
    ReviewOpened,
    ReviewSelected,
    ReviewsExported,
    ReviewsSummary,
    SampleShown,
    Stopped,
    VerdictSaved,
    inputs_of,
    outputs_of,
)
from medvlm.ui.inputs import ANY, FILE_DEFAULT, window_choices
from medvlm.ui.probe_handlers import ProbeHandlers
from medvlm.ui.reviews_handlers import ReviewsHandlers, flag_choices
from medvlm.ui.session import Session
from medvlm.ui.viewer import viewer
from medvlm.ui.workbench import Workbench
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

CAMPAIGN_KEYS = """
document.addEventListener('keydown', (event) => {
  const tab = document.querySelector('#tab-campaigns');
  if (!tab || tab.offsetParent === null) return;  // only while the Campaigns tab is on screen
  if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    document.querySelector('#campaign-submit')?.click();
    return;
  }
  const typing = event.target && (event.target.tagName === 'TEXTAREA' || event.target.tagName === 'INPUT'
    && !['checkbox', 'radio'].includes(event.target.type));
  if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
  const verdict = document.querySelector('#campaign-verdict');
  const flags = verdict && verdict.offsetParent !== null  // a comparison campaign: the keys choose the verdict
    ? verdict.querySelectorAll('input[type=radio]')
    : document.querySelectorAll('#campaign-flags input[type=checkbox]');
  const index = Number(event.key) - 1;
  if (Number.isInteger(index) && index >= 0 && index < flags.length) { event.preventDefault(); flags[index].click(); }
});
"""
"""Keyboard shortcuts of the Campaigns tab: the digits tick the flags (or choose a comparison's verdict), Ctrl+Enter
is Submit & next."""

SHOW_NEW_OUTPUT = """
(status) => {
  // Another output was handed out (not a refused save, which keeps the form where it is): show it from its top.
  const output = document.querySelector('#campaign-output');
  if (output && !String(status || '').includes('\u26a0')) {
    window.scrollTo({top: window.scrollY + output.getBoundingClientRect().top - 8});
  }
}
"""
"""After Submit & next, Skip and Back: the page scrolls to the new output's image and question."""

ANSWER_IN_VIEW = """
() => {
  // On a phone the answer sits under Ask: bring it up so the reasoning is read as it streams.
  if (window.innerWidth <= 640) document.querySelector('#output-panel')?.scrollIntoView({block: 'start'});
}
"""

CAMPAIGN_VIEWER_EMPTY = "Choose a campaign and press Start: its outputs are shown here, one at a time."

UPLOADS_KEPT_S = 3600
"""Gradio's copies of uploads and exports are deleted after an hour (they may be DICOMs with patient tags)."""


def build_demo(workbench: Workbench) -> gr.Blocks:
    """The whole app, queued with the configured number of simultaneous generations."""
    with gr.Blocks(
        title="medvlm",
        fill_width=True,
        delete_cache=(UPLOADS_KEPT_S, UPLOADS_KEPT_S),
        analytics_enabled=False,
    ) as demo:
        session = gr.State(Session(), delete_callback=Session.close)
        banner = _notice(demo, workbench)
        with gr.Tabs(elem_id="tabs"):
            with gr.Tab("Ask", id="ask", elem_id="tab-ask") as ask_tab:
                _ask_tab(demo, workbench, session)
            with gr.Tab("Campaigns", id="campaigns", elem_id="tab-campaigns") as campaigns_tab:
                _campaigns_tab(workbench, session, campaigns_tab, banner)
            with gr.Tab("Reviews", id="reviews", elem_id="tab-reviews") as reviews_tab:
                _reviews_tab(workbench, reviews_tab)
        for tab in (ask_tab, reviews_tab):  # the model named again after a blind campaign's tab hid it
            tab.select(workbench.banner, None, banner, api_visibility="private")
    return demo.queue(default_concurrency_limit=workbench.config.concurrency)


def _notice(demo: gr.Blocks, workbench: Workbench) -> gr.HTML:
    """One short coloured line: which model, whether it is the random test model; details on request."""
    banner = gr.HTML(
        workbench.banner(),
        css_template=render.BANNER_CSS,
        js_on_load=None,
        elem_id="model-banner",
    )
    demo.load(workbench.banner, None, banner, api_visibility="private")  # the fidelity check may have ended
    return banner


def _ask_tab(demo: gr.Blocks, workbench: Workbench, session: gr.State) -> None:
    cases = CaseHandlers(workbench)
    answers = AnswerHandlers(workbench, cases)
    config = workbench.config
    pair = workbench.compare is not None
    page: dict[str, Any] = {}
    with gr.Row(equal_height=False, elem_id="ask-row"):
        # The case: the image as the model sees it, its display controls, where it comes from.
        with gr.Column(scale=6, min_width=320, elem_id="case-panel"):
            with gr.Row(elem_id="case-sources"):
                page["upload"] = gr.UploadButton(
                    "Open an image or DICOM",
                    file_types=None,
                    type="filepath",
                    size="sm",
                    variant="primary",
                    scale=0,
                    min_width=150,
                    elem_id="upload",
                )
                example_buttons = [
                    gr.Button(
                        example.label.replace(" ", "\u00a0"),  # one line each: the row has room
                        size="sm",
                        scale=0,
                        min_width=60,
                        elem_id=f"example-{index}",
                    )
                    for index, example in enumerate(workbench.examples)
                ]
            page["upload_error"] = gr.Markdown(elem_id="upload-error")
            page["viewer"] = viewer(elem_id="viewer")
            page["image_info"] = gr.Markdown(elem_id="image-info")
            with gr.Row(visible=False, elem_id="dicom-controls") as page["dicom_controls"]:
                page["window"] = gr.Dropdown(
                    window_choices(hounsfield=True),
                    value=FILE_DEFAULT,
                    label="Display window",
                    elem_id="window-preset",
                )
                with gr.Row(visible=False, elem_id="custom-window") as page["custom_window"]:
                    page["center"] = NumberField(
                        label="Window centre",
                        elem_id="window-center",
                    )
                    page["width"] = NumberField(
                        label="Window width",
                        elem_id="window-width",
                    )
            page["frame"] = SliderField(
                1,
                2,
                value=1,
                step=1,
                label="Frame",
                visible=False,
                elem_id="frame",
            )
            page["window_error"] = gr.Markdown(elem_id="window-error")
            with gr.Accordion(
                "Review an evaluation run (samples.jsonl from train.evaluate)",
                open=False,
                elem_id="evaluation",
            ):
                page["evaluation_file"] = gr.File(
                    label="samples.jsonl together with the image files it names (select them all)",
                    file_count="multiple",
                    type="filepath",
                    elem_id="evaluation-file",
                )
                page["evaluation_sample"] = SliderField(
                    1,
                    2,
                    value=1,
                    step=1,
                    label="Sample",
                    visible=False,
                    elem_id="evaluation-sample",
                )
                page["evaluation_error"] = gr.Markdown(elem_id="evaluation-error")

        # The question.
        with gr.Column(scale=4, min_width=260, elem_id="question-panel"):
            page["question"] = gr.Textbox(
                label="Question",
                lines=2,
                placeholder="Which imaging modality was used?",
                elem_id="question",
            )
            page["options"] = gr.Textbox(
                label="Options, one per line (lettered A to J in order)",
                lines=4,
                placeholder="CT\nMRI\nX-Ray\nUltrasound",
                elem_id="options",
            )
            page["correct"] = gr.Dropdown(
                render.letter_choices(),
                value="",
                label="Correct answer (if known)",
                elem_id="correct-answer",
            )
            _settings(page, workbench)
            with gr.Row():
                page["ask_button"] = gr.Button(
                    "Ask",
                    variant="primary",
                    min_width=100,
                    interactive=workbench.model is not None,
                    elem_id="ask",
                )
                stop_button = gr.Button(
                    "Stop",
                    variant="stop",
                    min_width=100,
                    elem_id="stop",
                )
            page["blind"] = gr.Checkbox(
                value=True,
                label="Blind comparison: shuffle the sides and hide the models until your verdict is saved",
                visible=pair,
                elem_id="blind",
            )
            page["ask_error"] = gr.Markdown(elem_id="ask-error")

        # The model's answer, and its review once it is finished.
        with gr.Column(scale=6, min_width=320, elem_id="output-panel"):
            page["first_header"] = gr.Markdown(render.answer_header(1, None), visible=pair, elem_id="first-header")
            _answer_area(page, "")
            _probe_panel(page)
            _review_panel(page, config)
        # With --compare-model, the other model's answer beside it, and its own review.
        with gr.Column(scale=6, min_width=320, visible=pair, elem_id="second-output-panel"):
            page["second_header"] = gr.Markdown(render.answer_header(2, None), elem_id="second-header")
            _answer_area(page, "second_")
            _review_panel(page, config, second=True)
    _verdict_panel(page)

    _wire_case(demo, page, session, cases, example_buttons)
    _wire_answer(demo, page, session, answers, stop_button, config)
    _wire_probes(page, session, ProbeHandlers(workbench))


def _settings(page: dict[str, Any], workbench: Workbench) -> None:
    with gr.Accordion("Generation settings", open=False, elem_id="settings"):
        page["decoding"] = gr.Radio(
            [("Greedy (as in the paper)", "greedy"), ("Sampling", "sample")],
            value="greedy",
            label="Decoding",
            elem_id="decoding",
        )
        page["temperature"] = SliderField(
            0.05,
            2.0,
            value=1.0,
            step=0.05,
            label="Temperature (sampling only)",
            elem_id="temperature",
        )
        page["top_p"] = SliderField(
            0.05,
            1.0,
            value=1.0,
            step=0.05,
            label="Top-p (sampling only)",
            elem_id="top-p",
        )
        page["seed"] = gr.Textbox(
            label="Seed (sampling only; empty: a new random seed, recorded with the answer)",
            elem_id="seed",
        )
        page["max_new_tokens"] = NumberField(
            value=512,
            precision=0,
            label=f"Maximum new tokens (1 to {MAX_NEW_TOKENS_LIMIT:,})",
            elem_id="max-new-tokens",
        )
        page["max_pixels"] = NumberField(
            value=workbench.default_max_pixels(),
            precision=0,
            label="Image resolution (max pixels; 401408 = 512 image tokens)",
            elem_id="max-pixels",
        )
        page["style"] = gr.Dropdown(
            [(label, value.value) for value, label in STYLE_LABELS.items()],
            value=workbench.default_style().value,
            label="Prompt wording",
            elem_id="prompt-style",
        )


def _answer_area(page: dict[str, Any], prefix: str) -> None:
    """One answer: the options with the chosen one highlighted, the streaming reasoning, the timing, the raw text.

    ``prefix`` is ``""`` for the answer shown first, ``"second_"`` for a comparison's other one.
    """
    ids = prefix.replace("_", "-")
    page[f"{prefix}answer"] = gr.HTML(
        render.options_html([]),
        css_template=render.OPTIONS_CSS,
        js_on_load=None,
        elem_id=f"{ids}answer",
    )
    page[f"{prefix}reasoning"] = gr.Textbox(
        label="Reasoning",
        info="The model's <think> text, as it streams",
        lines=7,
        max_lines=14,
        interactive=False,
        autoscroll=True,
        elem_id=f"{ids}reasoning",
    )
    page[f"{prefix}timing"] = gr.Markdown(elem_id=f"{ids}timing")
    with gr.Accordion("Raw model output", open=False):
        page[f"{prefix}raw_output"] = gr.Textbox(
            show_label=False,
            lines=6,
            interactive=False,
            buttons=["copy"],
            elem_id=f"{ids}raw-output",
        )


def _probe_panel(page: dict[str, Any]) -> None:
    """Evidence beside the reasoning: probes of the finished answer, and a sentence's map over the image."""
    with gr.Group(visible=False, elem_id="probe-panel") as page["probe_panel"]:
        with gr.Row():
            page["probe_button"] = gr.Button(PROBE_LABEL, size="sm", min_width=100, elem_id="probe")
            page["probe_stop"] = gr.Button(
                "Stop probing", size="sm", variant="stop", min_width=100, elem_id="probe-stop"
            )
        page["probe_results"] = gr.Markdown(PROBE_INTRO, elem_id="probe-results")
        page["sentence"] = gr.Radio(
            [], label="Where did the model look? Select a sentence of the reasoning", elem_id="sentence"
        )
        page["relevance_status"] = gr.Markdown(elem_id="relevance-status")


def _review_panel(page: dict[str, Any], config: Any, *, second: bool = False) -> None:
    """Appears with a finished answer of the case on screen, and names it.

    The first answer's panel holds who reviews (the name, or the sign-in); a comparison's second
    panel and its verdict use the same.
    """
    prefix, ids = ("second_", "second-") if second else ("", "")
    # The id of the answer on screen: every save names it, and a save for another is refused. (Outside the
    # panel: a hidden field inside a column that is shown again would be shown with it.)
    page[f"{prefix}output_id"] = gr.Textbox(
        "",
        visible="hidden",
        interactive=False,
        elem_id=f"{ids}shown-output-id",
    )
    with gr.Column(visible=False, elem_id=f"{ids}review-panel") as page[f"{prefix}review_panel"]:
        gr.Markdown("### Review this answer")
        page[f"{prefix}review_target"] = gr.Markdown(
            render.review_target(None, None),
            elem_id=f"{ids}review-target",
        )
        if not second:
            page["reviewer_name"] = gr.Textbox(
                label="Your name",
                info=NAME_MODE_NOTE,
                max_length=MAX_NAME_CHARS,
                visible=config.reviewer_mode == "name",
                elem_id="reviewer-name",
            )
            if config.reviewer_mode == "oauth":
                gr.LoginButton(elem_id="login")
            page["identity"] = gr.Markdown(elem_id="reviewer-identity")
        page[f"{prefix}flags"] = gr.CheckboxGroup(
            [(label, key) for key, label in FLAGS.items()],
            label="Flags",
            elem_id=f"{ids}review-flags",
        )
        page[f"{prefix}comment"] = gr.Textbox(
            label="Comment",
            lines=3,
            max_length=MAX_COMMENT_CHARS,
            elem_id=f"{ids}review-comment",
        )
        with gr.Row(equal_height=True, elem_classes="review-actions"):  # the confirmation beside the button clicked
            page[f"{prefix}submit"] = gr.Button(
                "Save review",
                variant="primary",
                scale=0,
                min_width=160,
                elem_id=f"{ids}review-submit",
            )
            if not second:
                page["submit_next"] = gr.Button(
                    "Submit & next sample",
                    visible=False,
                    scale=0,
                    min_width=170,
                    elem_id="review-submit-next",
                )
            page[f"{prefix}review_status"] = gr.Markdown(elem_id=f"{ids}review-status")


def _verdict_panel(page: dict[str, Any]) -> None:
    """Under the two answers of a comparison, once both are finished: which reasoning is better."""
    with gr.Column(visible=False, elem_id="verdict-panel") as page["verdict_panel"]:
        gr.Markdown("### Which answer's reasoning is better?")
        with gr.Row(equal_height=True):
            page["verdict"] = gr.Radio(
                [(label, key) for key, label in VERDICT_CHOICES.items()],
                show_label=False,
                scale=4,
                elem_id="verdict",
            )
            page["verdict_submit"] = gr.Button(
                "Save verdict",
                variant="primary",
                scale=1,
                elem_id="verdict-submit",
            )
        page["verdict_status"] = gr.Markdown(elem_id="verdict-status")


def _wire_case(
    demo: gr.Blocks,
    page: dict[str, Any],
    session: gr.State,
    cases: CaseHandlers,
    example_buttons: list[gr.Button],
) -> None:
    """Putting a case on screen, and viewing it."""
    page["upload"].upload(
        cases.load_file,
        inputs_of(cases.load_file, page, session=session),
        outputs_of(CaseShown, page),
        api_name="load_file",
    )
    gr.on(
        [
            page["window"].input,
            page["center"].submit,
            page["width"].submit,
            page["center"].blur,
            page["width"].blur,
            page["frame"].release,
        ],
        cases.render_image,
        inputs_of(cases.render_image, page, session=session),
        outputs_of(ImageRendered, page),
        api_name="render_image",
        trigger_mode="always_last",
        show_progress="hidden",
    )
    page["viewer"].input(
        cases.view,
        inputs_of(cases.view, page, session=session),
        outputs_of(ImageRendered, page),
        api_name="view",
        trigger_mode="always_last",
        show_progress="hidden",
    )
    for index, button in enumerate(example_buttons):
        button.click(
            functools.partial(cases.load_example, index),
            [session],
            outputs_of(ExampleShown, page),
            api_name=f"load_example_{index}",
        )
    page["evaluation_file"].upload(
        cases.load_evaluation,
        inputs_of(cases.load_evaluation, page, session=session),
        outputs_of(SampleShown, page),
        api_name="load_evaluation",
    )
    page["evaluation_sample"].release(
        cases.show_evaluation_sample,
        inputs_of(cases.show_evaluation_sample, page, session=session),
        outputs_of(SampleShown, page),
        api_name="show_evaluation_sample",
    )


def _wire_answer(
    demo: gr.Blocks,
    page: dict[str, Any],
    session: gr.State,
    answers: AnswerHandlers,
    stop_button: gr.Button,
    config: Any,
) -> None:
    """The question, the generation and the review."""
    page["options"].change(
        answers.preview_options,
        inputs_of(answers.preview_options, page, session=session),
        outputs_of(OptionsPreviewed, page),
        api_visibility="private",
        queue=False,
    )
    page["correct"].input(
        answers.show_answer,
        inputs_of(answers.show_answer, page, session=session),
        outputs_of(AnswerMarked, page),
        api_visibility="private",
        queue=False,
    )
    ask_event = page["ask_button"].click(
        answers.ask,
        inputs_of(answers.ask, page, session=session),
        outputs_of(AskUpdate, page),
        api_name="ask",
    )
    page["ask_button"].click(None, js=ANSWER_IN_VIEW)
    stop_button.click(
        answers.stop,
        [session],
        outputs_of(Stopped, page),
        api_name="stop",
        cancels=[ask_event],
        queue=False,
    )
    page["submit"].click(
        answers.submit_review,
        inputs_of(answers.submit_review, page, session=session),
        [page["review_status"]],
        api_name="submit_review",
    )
    page["second_submit"].click(
        answers.submit_second_review,
        inputs_of(answers.submit_second_review, page, session=session),
        [page["second_review_status"]],
        api_name="submit_second_review",
    )
    page["verdict_submit"].click(
        answers.save_verdict,
        inputs_of(answers.save_verdict, page, session=session),
        outputs_of(VerdictSaved, page),
        api_name="save_verdict",
    )
    page["submit_next"].click(
        answers.submit_and_next,
        inputs_of(answers.submit_and_next, page, session=session),
        outputs_of(SampleShown, page),
        api_name="submit_and_next",
    )
    if config.reviewer_mode == "password":
        demo.load(answers.whoami, None, [page["identity"]], api_visibility="private")


def _wire_probes(page: dict[str, Any], session: gr.State, probes: ProbeHandlers) -> None:
    """Probe and Stop probing; a selected sentence's map in the viewer."""
    probe_event = page["probe_button"].click(
        probes.probe, inputs_of(probes.probe, page, session=session), outputs_of(ProbeUpdate, page), api_name="probe"
    )
    page["probe_stop"].click(
        probes.stop_probing,
        [session],
        outputs_of(ProbeUpdate, page),
        api_name="stop_probing",
        cancels=[probe_event],
        queue=False,
    )
    page["sentence"].change(
        probes.show_relevance,
        inputs_of(probes.show_relevance, page, session=session),
        outputs_of(RelevanceShown, page),
        api_name="relevance",
    )


GROUPED_PLOTS = (("modality", "modality"), ("question_type", "question type"), ("model_id", "model"))
"""The campaign report's flag-rate plots: the column grouped by, and its name on the plot."""


def _campaign_answer(page: dict[str, Any], prefix: str, *, header: str) -> None:
    """One stored answer under review: its heading, the options with its choice, its reasoning, its hints.

    ``prefix`` is ``"campaign_"`` for the answer shown first, ``"campaign_second_"`` for a pair's other one.
    """
    ids = prefix.replace("_", "-")
    page[header] = gr.Markdown(elem_id=header.replace("_", "-"))
    page[f"{prefix}answer"] = gr.HTML(css_template=render.OPTIONS_CSS, js_on_load=None, elem_id=f"{ids}answer")
    page[f"{prefix}reasoning"] = gr.Textbox(
        label="Reasoning",
        lines=6,
        max_lines=14,
        interactive=False,
        elem_id=f"{ids}reasoning",
    )
    page[f"{prefix}hints"] = gr.Markdown(elem_id=f"{ids}hints")


def _campaigns_tab(workbench: Workbench, session: gr.State, campaigns_tab: gr.Tab, banner: gr.HTML) -> None:
    """A shared review campaign, one handed-out output at a time (created with ``medvlm campaign create``).

    ``banner`` is the page's model notice: it names no model while a blind campaign is on screen.
    """
    handlers = CampaignHandlers(workbench)
    config = workbench.config
    page: dict[str, Any] = {}
    _campaign_review_form(page, handlers, config)
    _campaign_admin(page, handlers)
    _campaign_report(page, handlers)
    campaigns_tab.select(
        handlers.campaign_choices,
        None,
        [page["campaign"]],
        api_name="campaign_choices",
    )
    page["campaign_start_button"].click(
        handlers.start,
        inputs_of(handlers.start, page, session=session),
        outputs_of(CampaignShown, page),
        api_name="campaign_start",
    ).then(handlers.banner, [session], [banner], api_visibility="private")
    campaigns_tab.select(handlers.banner, [session], [banner], api_visibility="private")
    page["campaign_submit_button"].click(
        handlers.submit_and_next,
        inputs_of(handlers.submit_and_next, page, session=session),
        outputs_of(CampaignShown, page),
        api_name="campaign_submit",
    ).then(None, [page["campaign_status"]], None, js=SHOW_NEW_OUTPUT)
    page["campaign_back_button"].click(
        handlers.back,
        inputs_of(handlers.back, page, session=session),
        outputs_of(CampaignShown, page),
        api_name="campaign_back",
    ).then(None, [page["campaign_status"]], None, js=SHOW_NEW_OUTPUT)
    page["campaign_skip_button"].click(
        handlers.skip,
        inputs_of(handlers.skip, page, session=session),
        outputs_of(CampaignShown, page),
        api_name="campaign_skip",
    ).then(None, [page["campaign_status"]], None, js=SHOW_NEW_OUTPUT)


def _campaign_review_form(page: dict[str, Any], handlers: CampaignHandlers, config: Any) -> None:
    """The campaign chooser, the guidelines, the output handed out (or a comparison's pair) and the review form."""
    with gr.Row(equal_height=False):
        names = [campaign.name for campaign in handlers.campaigns.all()]
        page["campaign"] = gr.Dropdown(
            names,
            value=names[0] if names else None,
            allow_custom_value=True,  # one created since the page was built (the list refreshes on opening the tab)
            label="Campaign",
            scale=3,
            elem_id="campaign-choice",
        )
        page["campaign_reviewer"] = gr.Textbox(
            label="Your name",
            max_length=MAX_NAME_CHARS,
            visible=config.reviewer_mode == "name",
            scale=2,
            elem_id="campaign-reviewer",
        )
        page["campaign_start_button"] = gr.Button(
            "Start",
            variant="primary",
            scale=1,
            elem_id="campaign-start",
        )
    page["campaign_progress"] = gr.Markdown(elem_id="campaign-progress")
    with gr.Accordion("Guidelines", open=True, elem_id="campaign-guidelines-box"):
        page["campaign_guidelines"] = gr.Markdown(elem_id="campaign-guidelines")
    with gr.Row(equal_height=False, elem_id="campaign-output"):
        with gr.Column(scale=5, min_width=320):
            page["campaign_viewer"] = viewer(placeholder=CAMPAIGN_VIEWER_EMPTY, elem_id="campaign-viewer")
        with gr.Column(scale=6, min_width=320):
            page["campaign_case"] = gr.Markdown(elem_id="campaign-case")
            _campaign_answer(page, "campaign_", header="campaign_first_header")
            for name, elem_id in (("campaign_output_id", "campaign-output-id"),
                                  ("campaign_second_output_id", "campaign-second-output-id")):  # fmt: skip
                page[name] = gr.Textbox(
                    "",
                    visible="hidden",
                    interactive=False,
                    elem_id=elem_id,
                )
            with gr.Column(elem_id="campaign-review-form") as page["campaign_review_form"]:
                with gr.Accordion("Mark passages of the reasoning", open=False, elem_id="campaign-marking"):
                    page["campaign_sentences"] = gr.CheckboxGroup(
                        [],
                        label="Tick the sentences that are wrong",
                        elem_id="campaign-sentences",
                    )
                    page["campaign_span_label"] = gr.Radio(
                        [(label, key) for key, label in SPAN_LABELS.items()],
                        value="hallucination",
                        label="What is wrong with them",
                        elem_id="campaign-span-label",
                    )
                page["campaign_flags"] = gr.CheckboxGroup(
                    [(label, key) for key, label in FLAGS.items()],
                    label="Flags",
                    elem_id="campaign-flags",
                )
                page["campaign_comment"] = gr.Textbox(
                    label="Comment",
                    lines=2,
                    max_length=MAX_COMMENT_CHARS,
                    elem_id="campaign-comment",
                )
            page["campaign_verdict"] = gr.Radio(  # a comparison campaign's form
                [(label, key) for key, label in VERDICT_CHOICES.items()],
                label="Which answer's reasoning is better?",
                visible=False,
                elem_id="campaign-verdict",
            )
            with gr.Column(elem_id="campaign-actions"):  # kept on screen while the output is read
                with gr.Row():
                    page["campaign_back_button"] = gr.Button(
                        "Back",
                        scale=0,
                        min_width=80,
                        elem_id="campaign-back",
                    )
                    page["campaign_submit_button"] = gr.Button(
                        "Submit & next",
                        variant="primary",
                        elem_id="campaign-submit",
                    )
                    page["campaign_skip_reason"] = gr.Textbox(
                        show_label=False,
                        placeholder="Skip reason (e.g. unreadable)",
                        container=False,
                        elem_id="campaign-skip-reason",
                    )
                    page["campaign_skip_button"] = gr.Button(
                        "Skip",
                        elem_id="campaign-skip",
                    )
                page["campaign_status"] = gr.Markdown(elem_id="campaign-status")
            gr.HTML(
                "Keys: <kbd>1</kbd>-<kbd>5</kbd> tick the flags in order (in a comparison, <kbd>1</kbd>-<kbd>4</kbd> "
                "choose the verdict), <kbd>Ctrl</kbd>+<kbd>Enter</kbd> submits and goes to the next one.",
                js_on_load=CAMPAIGN_KEYS,
                elem_id="campaign-keys",
            )
        # A comparison campaign's second answer, beside the first.
        with gr.Column(scale=6, min_width=320, visible=False, elem_id="campaign-pair") as page["campaign_pair_panel"]:
            _campaign_answer(page, "campaign_second_", header="campaign_second_header")


def _campaign_admin(page: dict[str, Any], handlers: CampaignHandlers) -> None:
    """Set up campaigns (administrators): from a run, a dataset the served model answers, or two runs."""
    with gr.Accordion("Set up campaigns (administrators)", open=False, elem_id="campaign-admin"):
        gr.Markdown(
            "A campaign is made from a `train.evaluate` run (its samples.jsonl and the image files it names), "
            "from a dataset file and its images, answered now by the model this app serves (the questions are "
            "stored first, so an interrupted generation continues where it stopped), or from two runs of the same "
            "questions, whose answers reviewers judge side by side. Administrators are the users "
            "of `--auth`, or the Space's owner with Hugging Face sign-in."
        )
        new_source = gr.Radio(
            [
                ("An evaluation run: samples.jsonl and its images", "run"),
                ("A dataset and its images, answered now by the served model", "dataset"),
                ("Two evaluation runs of the same questions, judged side by side (a comparison)", "comparison"),
            ],
            value="run",
            label="Made from",
            elem_id="new-campaign-source",
        )
        with gr.Row(equal_height=False):
            new_files = gr.File(
                label="The samples.jsonl (of the first run, for a comparison) or dataset file, and its images "
                "(select them all)",
                file_count="multiple",
                type="filepath",
                elem_id="new-campaign-files",
            )
            new_second_run = gr.File(
                label="The second run's samples.jsonl (its questions answered by the other model)",
                file_count="single",
                type="filepath",
                visible=False,
                elem_id="new-campaign-second-run",
            )
            with gr.Column():
                new_name = gr.Textbox(
                    label="Name",
                    elem_id="new-campaign-name",
                )
                new_k = NumberField(
                    value=3,
                    precision=0,
                    label="Reviews wanted per output (k)",
                    elem_id="new-campaign-k",
                )
                new_blind = gr.Checkbox(
                    label="Blind: hide the model and the correct answer from reviewers",
                    elem_id="new-campaign-blind",
                )
                new_flips_only = gr.Checkbox(
                    label="Only the questions that flipped (one run right, the other wrong)",
                    visible=False,
                    elem_id="new-campaign-flips-only",
                )
                new_probes = gr.Checkbox(
                    label="Probe every answer as part of the generation: re-ask with a blank image, another "
                    "question's image of the same modality and the options rotated",
                    visible=False,
                    elem_id="new-campaign-probes",
                )
                new_show_probes = gr.Checkbox(
                    value=True,
                    label="Show the probes' results to reviewers, beside the hints",
                    visible=False,
                    elem_id="new-campaign-show-probes",
                )
        new_guidelines = gr.Textbox(
            label="Guidelines (Markdown)",
            lines=4,
            elem_id="new-campaign-guidelines",
        )
        with gr.Row():
            create = gr.Button(
                "Create the campaign",
                variant="primary",
                elem_id="new-campaign-create",
            )
            save_guidelines = gr.Button(
                "Save these guidelines for the chosen campaign",
                elem_id="campaign-save-guidelines",
            )
            continue_generation = gr.Button(
                "Continue generating the chosen campaign's answers",
                elem_id="campaign-continue-generation",
            )
        admin_status = gr.Markdown(elem_id="campaign-admin-status")
    page.update(
        new_campaign_files=new_files,
        new_campaign_name=new_name,
        new_campaign_k=new_k,
        new_campaign_guidelines=new_guidelines,
        new_campaign_blind=new_blind,
        new_campaign_source=new_source,
        new_campaign_second_run=new_second_run,
        new_campaign_flips_only=new_flips_only,
        new_campaign_probes=new_probes,
        new_campaign_show_probes=new_show_probes,
        campaign_admin_status=admin_status,
        guidelines_edit=new_guidelines,
    )
    new_source.change(
        handlers.source_chosen,
        inputs_of(handlers.source_chosen, page, session=None),
        outputs_of(CampaignSourceChosen, page),
        api_visibility="private",
        queue=False,
    )
    clear_status = {
        "fn": lambda: "",
        "outputs": [page["campaign_admin_status"]],
        "api_visibility": "private",
        "queue": False,
    }
    create.click(**clear_status).then(  # an earlier error never stays under the progress bar of this try
        handlers.create_campaign,
        inputs_of(handlers.create_campaign, page, session=None),
        outputs_of(CampaignCreated, page),
        api_name="campaign_create",
    )
    continue_generation.click(**clear_status).then(
        handlers.continue_generation,
        inputs_of(handlers.continue_generation, page, session=None),
        [page["campaign_admin_status"]],  # one output: the handler returns its value, which Gradio takes as it is
        api_name="campaign_continue_generation",
    )
    save_guidelines.click(
        handlers.save_guidelines,
        inputs_of(handlers.save_guidelines, page, session=None),
        outputs_of(GuidelinesSaved, page),
        api_name="campaign_guidelines",
    )


def _campaign_report(page: dict[str, Any], handlers: CampaignHandlers) -> None:
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
        _campaign_export(page, handlers)
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
        [page["adjudicate_status"]],  # one output
        api_name="campaign_adjudicate",
    ).then(  # the decision, shown
        handlers.report,
        inputs_of(handlers.report, page, session=None),
        outputs_of(CampaignReport, page),
        api_visibility="private",
    )


def _campaign_export(page: dict[str, Any], handlers: CampaignHandlers) -> None:
    """Export (administrators): the campaign as a ``datasets`` zip to download, or pushed to a private Hub dataset."""
    gr.Markdown(
        "**Export (administrators).** The campaign as a `datasets` dataset: one row per output with its "
        "image, every review, its marked passages and the aggregated and adjudicated flags, and a card "
        "with the guidelines and the agreement. Download it, or push it to a private Hub dataset with the "
        "server's token (`HF_TOKEN`, a Space secret)."
    )
    with gr.Row(equal_height=False):
        with gr.Column():
            export_download = gr.Button(
                "Download the campaign as a dataset (zip)",
                elem_id="campaign-export",
            )
            export_file = gr.File(
                label="The exported campaign",
                interactive=False,
                elem_id="campaign-export-file",
            )
        with gr.Column():
            export_repo = gr.Textbox(
                label="Hub dataset repository",
                placeholder="owner/name",
                elem_id="campaign-export-repo",
            )
            export_push = gr.Button(
                "Push to the Hub",
                elem_id="campaign-push",
            )
    export_status = gr.Markdown(elem_id="campaign-export-status")
    page.update(campaign_export_file=export_file, campaign_export_status=export_status, export_hub_repo=export_repo)
    export_download.click(
        handlers.export_campaign,
        inputs_of(handlers.export_campaign, page, session=None),
        outputs_of(CampaignExported, page),
        api_name="campaign_export",
    )
    export_push.click(
        handlers.push_campaign,
        inputs_of(handlers.push_campaign, page, session=None),
        [page["campaign_export_status"]],  # one output
        api_name="campaign_push",
    )


def _reviews_tab(workbench: Workbench, reviews_tab: gr.Tab) -> None:
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
    _reviews_summary_area(page)
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
        [page["reviews_table"]],  # one output: the handler returns its value, which Gradio takes as it is
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


def _reviews_summary_area(page: dict[str, Any]) -> None:
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
