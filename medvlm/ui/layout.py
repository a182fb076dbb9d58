"""The page, top to bottom: one notice saying which model answers, then the Ask tab (the case, the
question, the answer and its review, side by side), the Campaigns tab (a shared review campaign,
one handed-out output at a time) and the Reviews tab (filters, table, one review, summary, exports).

Each tab is a folder with its layout and its handlers (:mod:`medvlm.ui.ask`,
:mod:`medvlm.ui.campaigns`, :mod:`medvlm.ui.reviews`); no tab imports another, and what they
share lives beside them (``cases``, ``render``, ``viewer``, ``events``, ``inputs``). An event's
inputs come from its handler's parameter names and its outputs from the fields of the NamedTuple
it returns (:mod:`~medvlm.ui.events`), so neither list is written twice. Every important
component has a stable ``elem_id`` (the browser tests find them by it) and every event an
``api_name`` (``gradio_client`` calls them).
"""

from __future__ import annotations

import gradio as gr

from medvlm.ui import render
from medvlm.ui.ask.layout import ask_tab
from medvlm.ui.campaigns.layout import campaigns_tab
from medvlm.ui.reviews.layout import reviews_tab
from medvlm.ui.session import Session
from medvlm.ui.workbench import Workbench

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
            with gr.Tab("Ask", id="ask", elem_id="tab-ask") as ask:
                ask_tab(demo, workbench, session)
            with gr.Tab("Campaigns", id="campaigns", elem_id="tab-campaigns") as campaigns:
                campaigns_tab(workbench, session, campaigns, banner)
            with gr.Tab("Reviews", id="reviews", elem_id="tab-reviews") as reviews:
                reviews_tab(workbench, reviews)
        for tab in (ask, reviews):  # the model named again after a blind campaign's tab hid it
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
