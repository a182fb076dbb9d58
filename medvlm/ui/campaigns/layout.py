"""The Campaigns tab: a shared review campaign, one handed-out output (or a comparison's pair) at a time.

Top to bottom: the campaign chooser and the review form (here), the set-up panel for
administrators (:mod:`~medvlm.ui.campaigns.admin_layout`) and the report with its adjudication
and export (:mod:`~medvlm.ui.campaigns.report_layout`). The reviewing events go to
:class:`~medvlm.ui.campaigns.handlers.CampaignHandlers`, which hands each to the campaign's kind.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from medvlm.annotations import FLAGS, SPAN_LABELS, VERDICT_CHOICES
from medvlm.ui import render
from medvlm.ui.campaigns.admin_handlers import CampaignAdmin
from medvlm.ui.campaigns.admin_layout import admin_panel
from medvlm.ui.campaigns.handlers import CampaignHandlers
from medvlm.ui.campaigns.report_layout import report_panel
from medvlm.ui.events import CampaignShown, inputs_of, outputs_of
from medvlm.ui.viewer import viewer
from medvlm.ui.workbench import Workbench
from medvlm.user_text import MAX_COMMENT_CHARS, MAX_NAME_CHARS

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

CAMPAIGN_VIEWER_EMPTY = "Choose a campaign and press Start: its outputs are shown here, one at a time."


def campaigns_tab(workbench: Workbench, session: gr.State, campaigns_tab: gr.Tab, banner: gr.HTML) -> None:
    """A shared review campaign, one handed-out output at a time (created with ``medvlm campaign create``).

    ``banner`` is the page's model notice: it names no model while a blind campaign is on screen.
    """
    handlers = CampaignHandlers(workbench)
    admin = CampaignAdmin(workbench, handlers.campaigns)
    page: dict[str, Any] = {}
    _review_form(page, handlers, workbench.config)
    admin_panel(page, admin)
    report_panel(page, handlers, admin)
    campaigns_tab.select(
        handlers.campaign_choices,
        None,
        outputs_of("campaign", page),
        api_name="campaign_choices",
    )
    page["campaign_start_button"].click(
        handlers.start,
        inputs_of(handlers.start, page, session=session),
        outputs_of(CampaignShown, page),
        api_name="campaign_start",
    ).then(handlers.banner, inputs_of(handlers.banner, page, session=session), banner, api_visibility="private")
    campaigns_tab.select(
        handlers.banner, inputs_of(handlers.banner, page, session=session), banner, api_visibility="private"
    )
    for button, handler, api_name in (
        ("campaign_submit_button", handlers.submit_and_next, "campaign_submit"),
        ("campaign_back_button", handlers.back, "campaign_back"),
        ("campaign_skip_button", handlers.skip, "campaign_skip"),
    ):
        page[button].click(
            handler,
            inputs_of(handler, page, session=session),
            outputs_of(CampaignShown, page),
            api_name=api_name,
        ).then(None, page["campaign_status"], None, js=SHOW_NEW_OUTPUT)  # the script reads the status


def _review_form(page: dict[str, Any], handlers: CampaignHandlers, config: Any) -> None:
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
            _stored_answer(page, "campaign_", header="campaign_first_header")
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
            _stored_answer(page, "campaign_second_", header="campaign_second_header")


def _stored_answer(page: dict[str, Any], prefix: str, *, header: str) -> None:
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
