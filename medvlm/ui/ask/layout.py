"""The Ask tab, left to right: the case (an upload, an example or an evaluation sample, with its display window),
the question and the generation settings, the model's answer streaming in, its probes and its review
(and, with ``--compare-model``, the other model's answer and the pairwise verdict under both).

The layout comes first, one function per area; the wiring under it, per kind of event. The
handlers are :mod:`~medvlm.ui.ask.case_handlers` (the case), :mod:`~medvlm.ui.ask.answer_handlers`
(the question, the answer, the review) and :mod:`~medvlm.ui.ask.probe_handlers` (the evidence).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import gradio as gr

from medvlm.annotations import FLAGS, VERDICT_CHOICES
from medvlm.probes import DEFAULT_KINDS, PROBE_LABELS, ProbeKind
from medvlm.prompt import PromptStyle
from medvlm.streaming import MAX_NEW_TOKENS_LIMIT
from medvlm.ui import render
from medvlm.ui.ask.answer_handlers import AnswerHandlers
from medvlm.ui.ask.case_handlers import CaseHandlers
from medvlm.ui.ask.probe_handlers import ProbeHandlers
from medvlm.ui.components import NumberField, SliderField
from medvlm.ui.events import (
    PROBE_INTRO,
    PROBE_LABEL,
    AnswerMarked,
    AskUpdate,
    CaseShown,
    ExampleShown,
    ImageRendered,
    OptionsPreviewed,
    ProbeUpdate,
    RelevanceShown,
    SampleShown,
    Stopped,
    VerdictSaved,
    inputs_of,
    outputs_of,
)
from medvlm.ui.inputs import FILE_DEFAULT, window_choices
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

ANSWER_IN_VIEW = """
() => {
  // On a phone the answer sits under Ask: bring it up so the reasoning is read as it streams.
  if (window.innerWidth <= 640) document.querySelector('#output-panel')?.scrollIntoView({block: 'start'});
}
"""


def ask_tab(demo: gr.Blocks, workbench: Workbench, session: gr.State) -> None:
    """The case, the question, the answer and its review, side by side (and a second answer with --compare-model)."""
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
                page["stop"] = gr.Button(
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
    _wire_answer(demo, page, session, answers, config)
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
        page["probe_kinds"] = gr.CheckboxGroup(
            [(PROBE_LABELS[kind], kind.value) for kind in ProbeKind],
            value=[kind.value for kind in DEFAULT_KINDS],
            label="Probes to run",
            elem_id="probe-kinds",
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
            example := functools.partial(cases.load_example, index),
            inputs_of(example, page, session=session),
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
    _wire_stoppable(page, session, answers.ask, AskUpdate, answers.stop, Stopped, start="ask_button", stop="stop")
    page["ask_button"].click(None, js=ANSWER_IN_VIEW)
    page["submit"].click(
        answers.submit_review,
        inputs_of(answers.submit_review, page, session=session),
        outputs_of("review_status", page),
        api_name="submit_review",
    )
    page["second_submit"].click(
        answers.submit_second_review,
        inputs_of(answers.submit_second_review, page, session=session),
        outputs_of("second_review_status", page),
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
        demo.load(answers.whoami, None, outputs_of("identity", page), api_visibility="private")


def _wire_probes(page: dict[str, Any], session: gr.State, probes: ProbeHandlers) -> None:
    """Probe and Stop probing; a selected sentence's map in the viewer."""
    _wire_stoppable(
        page,
        session,
        probes.probe,
        ProbeUpdate,
        probes.stop_probing,
        ProbeUpdate,
        start="probe_button",
        stop="probe_stop",
    )
    page["sentence"].change(
        probes.show_relevance,
        inputs_of(probes.show_relevance, page, session=session),
        outputs_of(RelevanceShown, page),
        api_name="relevance",
    )


def _wire_stoppable(
    page: dict[str, Any],
    session: gr.State,
    run: Callable[..., Any],
    running: type[tuple],
    halt: Callable[..., Any],
    halted: type[tuple],
    *,
    start: str,
    stop: str,
) -> None:
    """A long run (a generation, the probes) and the button that stops it: the stop cancels the run and, unqueued,
    tidies the page at once. Each event's API name is its handler's."""
    event = page[start].click(
        run, inputs_of(run, page, session=session), outputs_of(running, page), api_name=run.__name__
    )
    page[stop].click(
        halt,
        inputs_of(halt, page, session=session),
        outputs_of(halted, page),
        api_name=halt.__name__,
        cancels=[event],
        queue=False,
    )
