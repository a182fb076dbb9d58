"""The Campaigns tab's set-up events (administrators): make a campaign from an uploaded run, from a dataset the
served model answers now, or from two runs judged side by side; edit its guidelines; export it.

Administrators are the users of ``--auth``, or the Space's owner with Hugging Face sign-in
(:meth:`~medvlm.ui.workbench.Workbench.is_admin`); on the server, ``medvlm campaign`` does the same.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr

from medvlm.annotations.campaign_export import export_campaign, push_to_hub
from medvlm.annotations.campaigns import Campaign, Campaigns
from medvlm.annotations.comparison_campaigns import ComparisonCampaigns
from medvlm.campaign_generation import generate_answers, plan_campaign
from medvlm.errors import MedVLMError
from medvlm.evaluation_runs import identical_answers_note, paired_runs, read_evaluation_samples, uploaded_outputs
from medvlm.model import LoadedModel
from medvlm.probes import parse_kinds
from medvlm.ui import render
from medvlm.ui.campaigns.kinds import NO_GUIDELINES
from medvlm.ui.cases import discard_upload, file_name, read_run_uploads
from medvlm.ui.events import CampaignCreated, CampaignExported, CampaignSourceChosen, GuidelinesSaved
from medvlm.ui.inputs import as_number
from medvlm.ui.workbench import Workbench
from medvlm.user_text import escape_markdown
from medvlm.vqa_records import load_records

NOT_UPLOADED = "image not uploaded"
"""The reason :func:`load_records` gives a row whose image is not among the uploads."""
DATASET_SUFFIXES = (".json", ".jsonl", ".parquet")
"""The dataset files an administrator may upload (the formats :func:`load_records` reads)."""


class CampaignAdmin:
    """Create a campaign (from a run, a dataset or two runs), continue its generation, edit guidelines, export."""

    def __init__(self, workbench: Workbench, campaigns: Campaigns) -> None:
        self.workbench = workbench
        self.campaigns = campaigns
        self.comparisons = ComparisonCampaigns(campaigns)

    @staticmethod
    def source_chosen(new_campaign_source: str | None) -> CampaignSourceChosen:
        """The set-up panel asks for a second run (a comparison) or for probes (a dataset) only when they apply."""
        comparison, dataset = new_campaign_source == "comparison", new_campaign_source == "dataset"
        return CampaignSourceChosen(
            new_campaign_second_run=gr.update(visible=comparison),
            new_campaign_flips_only=gr.update(visible=comparison),
            new_campaign_probes=gr.update(visible=dataset),
            new_campaign_show_probes=gr.update(visible=dataset),
        )

    def create_campaign(
        self,
        new_campaign_files: list[str] | None,
        new_campaign_name: str | None,
        new_campaign_k: Any = 3,
        new_campaign_guidelines: str | None = "",
        new_campaign_blind: bool = False,
        new_campaign_source: str | None = "run",
        new_campaign_second_run: str | None = None,
        new_campaign_flips_only: bool = False,
        new_campaign_probes: list[str] | None = None,
        new_campaign_show_probes: bool = True,
        profile: gr.OAuthProfile | None = None,
        request: gr.Request | None = None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - Gradio's way to ask for a progress bar
    ) -> CampaignCreated:
        """An administrator's new campaign, from an uploaded run or from a dataset the served model answers now.

        ``new_campaign_source`` is ``"run"`` (samples.jsonl and its images: the run's answers),
        ``"dataset"`` (a dataset file and its images: the questions are stored, then answered with
        a progress bar; an interruption is continued with :meth:`continue_generation`) or
        ``"comparison"`` (a comparison campaign: the first run's samples.jsonl and images, and the
        second run's samples.jsonl as ``new_campaign_second_run``, paired by question id; with
        ``new_campaign_flips_only``, only the questions one run got right and the other wrong).
        A dataset's answers are probed as part of the generation with the kinds ticked in ``new_campaign_probes``
        (:mod:`medvlm.probes`), their results shown to reviewers with ``new_campaign_show_probes``.

        The name and k are checked before any file is read. Gradio's copies of the uploads are
        deleted once the campaign is made (or refused to a non-administrator); after a problem the
        administrator can fix (a name taken, a missing image) they are kept, so Create works
        again without uploading them again (Gradio deletes them within the hour either way).
        """
        paths = list(new_campaign_files or [])
        second_run = [new_campaign_second_run] if new_campaign_second_run else []
        try:
            self._check_admin(profile, request, "create a campaign")
        except MedVLMError as error:
            _discard(paths + second_run)
            return CampaignCreated(campaign=gr.skip(), campaign_admin_status=render.error_markdown(str(error)))
        try:
            reviews = as_number(new_campaign_k, "The reviews wanted per output", whole=True)
            self.campaigns.check_new(new_campaign_name or "", reviews if reviews is not None else 0)
            settings = {
                "reviews_per_output": reviews if reviews is not None else 0,
                "guidelines": new_campaign_guidelines or "",
                "blind": bool(new_campaign_blind),
                "created_by": getattr(request, "username", None) or getattr(profile, "username", None) or "admin",
            }
            if new_campaign_source == "dataset":
                probes = parse_kinds(new_campaign_probes or ())  # Gradio lets only the offered kinds through
                settings.update(probes=probes, show_probes=bool(new_campaign_show_probes))
                campaign = self._plan_from_upload(paths, new_campaign_name or "", settings)
            elif new_campaign_source == "comparison":
                campaign, identical = self._compare_uploads(
                    paths, second_run, new_campaign_name or "", settings, flips_only=bool(new_campaign_flips_only)
                )
            else:
                if not paths:
                    raise MedVLMError("Upload the run's samples.jsonl together with the image files it names.")
                samples, images = read_run_uploads(paths)
                outputs = uploaded_outputs(samples, images)
                campaign = self.campaigns.create(new_campaign_name or "", outputs, **settings)
        except MedVLMError as error:
            return CampaignCreated(campaign=gr.skip(), campaign_admin_status=render.error_markdown(str(error)))
        _discard(paths + second_run)
        names = [known.name for known in self.campaigns.all()]
        status = f"Created campaign {escape_markdown(campaign.name)}"
        if new_campaign_source == "dataset":
            status += ": " + self._generate(campaign.name, progress)
        elif new_campaign_source == "comparison":
            pairs = len(self.comparisons.pairs(campaign.name))
            status = (
                f"Created comparison campaign {escape_markdown(campaign.name)}: {pairs} pairs, {reviews} verdict(s) "
                f"each. {render.error_markdown(identical)}"
            ).strip()
        else:
            status += f": {len(self.campaigns.output_ids(campaign.name))} outputs, {reviews} review(s) each."
        return CampaignCreated(campaign=gr.update(choices=names, value=campaign.name), campaign_admin_status=status)

    def continue_generation(
        self,
        campaign: str | None,
        profile: gr.OAuthProfile | None = None,
        request: gr.Request | None = None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> str:
        """Answer the questions of a generated campaign that have none yet (after an interruption)."""
        try:
            self._check_admin(profile, request, "generate a campaign's answers")
            if not campaign:
                raise MedVLMError("Choose the campaign to continue.")
            if self.campaigns.generation(campaign) is None:
                raise MedVLMError(f"{campaign} was made from an evaluation run: its answers are fixed.")
        except MedVLMError as error:
            return render.error_markdown(str(error))
        return f"{escape_markdown(campaign)}: " + self._generate(campaign, progress)

    def _check_admin(self, profile: gr.OAuthProfile | None, request: gr.Request | None, action: str) -> None:
        if not self.workbench.is_admin(profile, request):
            raise MedVLMError(
                f"Only an administrator can {action} here (a user of --auth, or the Space's owner); "
                "on the server, the `medvlm campaign` command can."
            )

    def _plan_from_upload(self, paths: list[str], name: str, settings: dict[str, Any]) -> Campaign:
        """Store an uploaded dataset's questions and images as a campaign the served model will answer."""
        loaded = self._served_model()
        tables = [path for path in paths if file_name(path).lower().endswith(DATASET_SUFFIXES)]
        if len(tables) != 1:
            raise MedVLMError(
                "Choose one dataset file (.json, .jsonl or .parquet, in a published format), together with "
                "the image files it names."
            )
        images = {file_name(path): path for path in paths if path != tables[0]}
        try:
            records, report = load_records(tables[0], image_files=images)
        except (OSError, UnicodeDecodeError):
            raise MedVLMError("The dataset file could not be read.") from None
        if missing := report.skipped.get(NOT_UPLOADED):
            names = ", ".join(detail for _, detail in report.examples[NOT_UPLOADED]) + (", ..." if missing > 3 else "")
            raise MedVLMError(
                f"{missing} question(s) name an image that was not uploaded ({names}). "
                "Upload the dataset file together with every image file it names."
            )
        if not records:
            raise MedVLMError(f"No question in the dataset could be used. {report.summary()}")
        return plan_campaign(self.campaigns, name, records, loaded=loaded, **settings)

    def _compare_uploads(
        self, paths: list[str], second: list[str], name: str, settings: dict[str, Any], *, flips_only: bool
    ) -> tuple[Campaign, str]:
        """A comparison campaign from two uploaded runs on the same questions (the images uploaded with the first),
        and the warning when some pairs hold the same answer twice (:func:`identical_answers_note`), or ""."""
        if not paths or not second:
            raise MedVLMError(
                "Upload the first run's samples.jsonl with its image files, and the second run's samples.jsonl "
                "in the box for it."
            )
        first_samples, images = read_run_uploads(paths)
        try:
            second_samples = read_evaluation_samples(second[0])
        except (OSError, UnicodeDecodeError):
            raise MedVLMError("The second run's samples.jsonl could not be read as text.") from None
        first_samples, second_samples = paired_runs(first_samples, second_samples, flips_only=flips_only)
        outputs = [uploaded_outputs(samples, images) for samples in (first_samples, second_samples)]
        pairs = list(zip(*outputs, strict=True))
        campaign = self.comparisons.create(
            name,
            pairs,
            verdicts_per_pair=settings["reviews_per_output"],
            guidelines=settings["guidelines"],
            blind=settings["blind"],
            created_by=settings["created_by"],
        )
        return campaign, identical_answers_note(first_samples, second_samples)

    def _served_model(self) -> LoadedModel:
        if self.workbench.model is None:
            raise MedVLMError(
                "No model is loaded, so nothing can answer the dataset's questions; the banner says why. "
                "Upload an evaluation run's samples.jsonl instead."
            )
        return self.workbench.model

    def _generate(self, campaign: str, progress: gr.Progress) -> str:
        """Generate what is left, with Gradio's progress bar; the outcome as a sentence."""

        def advance(done: int, total: int) -> None:
            progress((done, total), desc="Answering (and probing) the questions", unit="steps")

        try:
            plan = generate_answers(
                self.campaigns, campaign, self._served_model(), progress=advance, answer=self.workbench.answer_batch
            )
        except MedVLMError as error:
            return render.error_markdown(str(error))
        probed = f" and probed ({', '.join(plan.probes)})" if plan.probes else ""
        return f"all {plan.planned} questions answered{probed} by {escape_markdown(plan.model)}; reviewers can start."

    def save_guidelines(
        self,
        campaign: str | None,
        guidelines_edit: str | None,
        profile: gr.OAuthProfile | None = None,
        request: gr.Request | None = None,
    ) -> GuidelinesSaved:
        """An administrator changes the selected campaign's guidelines."""
        try:
            if not self.workbench.is_admin(profile, request):
                raise MedVLMError("Only an administrator can change the guidelines (a user of --auth, or the owner).")
            if not campaign:
                raise MedVLMError("Choose a campaign first.")
            updated = self.campaigns.set_guidelines(campaign, guidelines_edit or "")
        except MedVLMError as error:
            return GuidelinesSaved(gr.skip(), render.error_markdown(str(error)))
        return GuidelinesSaved(updated.guidelines or NO_GUIDELINES, "Guidelines saved.")

    def export_campaign(
        self, campaign: str | None, profile: gr.OAuthProfile | None = None, request: gr.Request | None = None
    ) -> CampaignExported:
        """An administrator downloads the campaign as a ``datasets`` dataset: a zip of its Parquet file and card.

        Administrators only: the export holds every reviewer's review and, for a blind campaign,
        the model and the correct answers its reviewers must not see.
        """
        try:
            folder = self._exported(campaign, profile, request)
        except MedVLMError as error:
            return CampaignExported(None, render.error_markdown(str(error)))
        archive = shutil.make_archive(str(folder), "zip", root_dir=folder)
        return CampaignExported(
            archive,
            f"Exported {escape_markdown(campaign or '')}: unzip it and load the folder with "
            "`datasets.load_dataset(folder)`.",
        )

    def push_campaign(
        self,
        campaign: str | None,
        export_hub_repo: str | None,
        profile: gr.OAuthProfile | None = None,
        request: gr.Request | None = None,
    ) -> str:
        """An administrator pushes the campaign's export to a private Hub dataset (with the server's token)."""
        try:
            url = push_to_hub(self._exported(campaign, profile, request), export_hub_repo or "")
        except MedVLMError as error:
            return render.error_markdown(str(error))
        return f"Pushed {escape_markdown(campaign or '')} to {url} (a private dataset)."

    def _exported(self, campaign: str | None, profile: gr.OAuthProfile | None, request: gr.Request | None) -> Path:
        """The campaign exported into a new folder of the app's temporary exports."""
        self._check_admin(profile, request, "export a campaign")
        if not campaign:
            raise MedVLMError("Choose a campaign first.")
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", campaign).strip("-.") or "campaign"
        folder = Path(tempfile.mkdtemp(dir=self.workbench.exports.name)) / stem
        return export_campaign(self.campaigns, campaign, folder)


def _discard(paths: list[str]) -> None:
    for path in paths:
        discard_upload(path)
