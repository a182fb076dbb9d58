"""The Campaigns tab's panels for administrators: setting a campaign up (from a run, a dataset the served model
answers now, or two runs), and exporting it (a ``datasets`` zip, or a private Hub dataset).

Their events go to :class:`~medvlm.ui.campaigns.admin_handlers.CampaignAdmin`.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from medvlm.probes import PROBE_LABELS, ProbeKind
from medvlm.ui.campaigns.admin_handlers import CampaignAdmin
from medvlm.ui.components import NumberField
from medvlm.ui.events import (
    CampaignCreated,
    CampaignExported,
    CampaignSourceChosen,
    GuidelinesSaved,
    inputs_of,
    outputs_of,
)


def admin_panel(page: dict[str, Any], admin: CampaignAdmin) -> None:
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
                new_probes = gr.CheckboxGroup(
                    [(PROBE_LABELS[kind], kind.value) for kind in ProbeKind],
                    label="Probe every answer as part of the generation (none ticked: no probes): re-ask with a "
                    "blank image, another question's image of the same modality, the options rotated, or without "
                    "reasoning",
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
        admin.source_chosen,
        inputs_of(admin.source_chosen, page, session=None),
        outputs_of(CampaignSourceChosen, page),
        api_visibility="private",
        queue=False,
    )
    clear_status = {
        "fn": lambda: "",
        "outputs": outputs_of("campaign_admin_status", page),
        "api_visibility": "private",
        "queue": False,
    }
    create.click(**clear_status).then(  # an earlier error never stays under the progress bar of this try
        admin.create_campaign,
        inputs_of(admin.create_campaign, page, session=None),
        outputs_of(CampaignCreated, page),
        api_name="campaign_create",
    )
    continue_generation.click(**clear_status).then(
        admin.continue_generation,
        inputs_of(admin.continue_generation, page, session=None),
        outputs_of("campaign_admin_status", page),
        api_name="campaign_continue_generation",
    )
    save_guidelines.click(
        admin.save_guidelines,
        inputs_of(admin.save_guidelines, page, session=None),
        outputs_of(GuidelinesSaved, page),
        api_name="campaign_guidelines",
    )


def export_panel(page: dict[str, Any], admin: CampaignAdmin) -> None:
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
        admin.export_campaign,
        inputs_of(admin.export_campaign, page, session=None),
        outputs_of(CampaignExported, page),
        api_name="campaign_export",
    )
    export_push.click(
        admin.push_campaign,
        inputs_of(admin.push_campaign, page, session=None),
        outputs_of("campaign_export_status", page),
        api_name="campaign_push",
    )
