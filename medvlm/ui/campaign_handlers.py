"""The Campaigns tab: a reviewer works through a shared review campaign, one handed-out output at a time.

The store decides who gets which output (:mod:`medvlm.annotations.campaigns`): this tab asks it
for the next one, shows it with the pre-check hints (:mod:`medvlm.hints`, suggestions only),
and submits or skips it. The output on screen is named by its id in the page, as on the Ask tab,
so a submit from a stale page is checked by the store like any other.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from medvlm.annotations import FLAGS, Review, Span
from medvlm.annotations.campaign_export import export_campaign, push_to_hub
from medvlm.annotations.campaigns import Assignment, Campaign, Campaigns
from medvlm.campaign_generation import generate_answers, plan_campaign
from medvlm.errors import MedVLMError
from medvlm.evaluation_runs import identical_answers_note, paired_runs, read_evaluation_samples, uploaded_outputs
from medvlm.hints import reasoning_hints, reasoning_sentences
from medvlm.model import LoadedModel
from medvlm.probes import DEFAULT_KINDS, summarize
from medvlm.review_stats import (
    agreement_intervals,
    flag_rates,
    hint_accuracy,
    reviewer_agreement,
    reviews_over_time,
)
from medvlm.ui import render
from medvlm.ui.case_handlers import read_run_uploads
from medvlm.ui.cases import discard_upload, file_name
from medvlm.ui.events import (
    AdjudicationForm,
    CampaignCreated,
    CampaignDashboard,
    CampaignExported,
    CampaignReport,
    CampaignShown,
    CampaignSourceChosen,
    GuidelinesSaved,
    ReportClosed,
    campaign_dashboard,
    campaign_message,
    one_output_form,
)
from medvlm.ui.inputs import as_number
from medvlm.ui.pair_handlers import PairHandlers
from medvlm.ui.reviews_handlers import AGREEMENT_HEADERS
from medvlm.ui.session import Session
from medvlm.ui.viewer import stored_value
from medvlm.ui.workbench import Workbench
from medvlm.user_text import escape_markdown
from medvlm.vqa_records import load_records

NOT_UPLOADED = "image not uploaded"
"""The reason :func:`load_records` gives a row whose image is not among the uploads."""
DATASET_SUFFIXES = (".json", ".jsonl", ".parquet")
"""The dataset files an administrator may upload (the formats :func:`load_records` reads)."""


class CampaignHandlers:
    """Choose a campaign, take the next output, submit and go on, or skip with a reason."""

    def __init__(self, workbench: Workbench) -> None:
        self.workbench = workbench
        self.campaigns = Campaigns(workbench.store)
        self.pairs = PairHandlers(self.campaigns)

    def banner(self, session: Session) -> str:
        """The notice at the top while this tab is on screen: no model named in it while the campaign is blind
        (the served model may be the one that answered; its reviewers must not know)."""
        try:
            blind = bool(session.campaign) and self.campaigns.get(session.campaign).blind
        except MedVLMError:
            blind = False
        return render.blind_banner() if blind else self.workbench.banner()

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

    @staticmethod
    def report_closed() -> ReportClosed:
        """Another campaign chosen: its report is loaded when opened, never the last one's left on show."""
        return ReportClosed(campaign_report_box=gr.update(open=False), campaign_report="")

    def campaign_choices(self) -> dict[str, Any]:
        """The campaigns to choose from (refreshed whenever the tab opens)."""
        names = [campaign.name for campaign in self.campaigns.all()]
        return gr.update(choices=names, value=names[0] if names else None)

    def start(
        self,
        session: Session,
        campaign: str | None,
        campaign_reviewer: str | None = None,
        profile: gr.OAuthProfile | None = None,
        request: gr.Request | None = None,
    ) -> CampaignShown:
        """Work on ``campaign``: its guidelines, and the output handed to this reviewer."""
        if not campaign:
            return campaign_message("Choose a campaign first (an administrator creates them: medvlm campaign create).")
        try:
            reviewer = self.workbench.reviewer(campaign_reviewer, profile, request)
            if self.campaigns.get(campaign).kind == "comparison":
                session.campaign = campaign
                return self.pairs.start(session, reviewer)
            assignment = self.campaigns.next_output(campaign, reviewer)
        except MedVLMError as error:
            return campaign_message(str(error))
        session.campaign = campaign
        return self._show(session, reviewer, assignment, status="")

    def submit_and_next(
        self,
        session: Session,
        campaign_flags: list[str] | None,
        campaign_comment: str | None = None,
        campaign_reviewer: str | None = None,
        campaign_output_id: str | None = None,
        campaign_sentences: list[str] | None = None,
        campaign_span_label: str | None = None,
        campaign_verdict: str | None = None,
        campaign_second_output_id: str | None = None,
        profile: gr.OAuthProfile | None = None,
        request: gr.Request | None = None,
    ) -> CampaignShown:
        """Save the review of the output on screen, then show the next one (the form kept if the save fails).

        ``campaign_sentences`` are the ticked sentences of the reasoning ("start:end" offsets into
        the completion), stored as passages marked with ``campaign_span_label``. In a comparison
        campaign, the verdict on the pair on screen (``campaign_output_id`` shown first,
        ``campaign_second_output_id`` second) is saved instead.
        """
        if not session.campaign or not campaign_output_id:
            return campaign_message("There is nothing to review yet: choose a campaign and press Start.")
        try:
            reviewer = self.workbench.reviewer(campaign_reviewer, profile, request)
            if self._comparison(session):
                return self.pairs.submit_and_next(
                    session, reviewer, campaign_output_id, campaign_second_output_id, campaign_verdict
                )
            spans = tuple(_span(value, campaign_span_label) for value in campaign_sentences or ())
            review = Review(reviewer, tuple(campaign_flags or ()), campaign_comment or "", spans=spans)
            annotation = self.campaigns.submit(
                session.campaign, reviewer, campaign_output_id, review, session_key=self.workbench.session_key(session)
            )
            assignment = self.campaigns.next_output(session.campaign, reviewer)
        except MedVLMError as error:
            return campaign_message(str(error))
        return self._show(session, reviewer, assignment, status=f"Saved your review (#{annotation.id}).")

    def skip(
        self,
        session: Session,
        campaign_skip_reason: str | None,
        campaign_reviewer: str | None = None,
        campaign_output_id: str | None = None,
        profile: gr.OAuthProfile | None = None,
        request: gr.Request | None = None,
    ) -> CampaignShown:
        """Pass on the output on screen, with a reason; it is not offered to this reviewer again."""
        if not session.campaign or not campaign_output_id:
            return campaign_message("There is nothing to skip: choose a campaign and press Start.")
        try:
            reviewer = self.workbench.reviewer(campaign_reviewer, profile, request)
            if self._comparison(session):
                return self.pairs.skip(session, reviewer, campaign_output_id, campaign_skip_reason)
            self.campaigns.skip(session.campaign, reviewer, campaign_output_id, campaign_skip_reason or "")
            assignment = self.campaigns.next_output(session.campaign, reviewer)
        except MedVLMError as error:
            return campaign_message(str(error))
        return self._show(session, reviewer, assignment, status="Skipped; it will not be offered to you again.")

    def back(
        self,
        session: Session,
        campaign_reviewer: str | None = None,
        campaign_output_id: str | None = None,
        profile: gr.OAuthProfile | None = None,
        request: gr.Request | None = None,
    ) -> CampaignShown:
        """Back: the output this reviewer reviewed before the one on screen, with their review filled in to change."""
        if not session.campaign:
            return campaign_message("Choose a campaign and press Start first.")
        try:
            reviewer = self.workbench.reviewer(campaign_reviewer, profile, request)
            if self._comparison(session):
                return self.pairs.back(session, reviewer, campaign_output_id)
            found = self.campaigns.previous(session.campaign, reviewer, before=campaign_output_id or None)
        except MedVLMError as error:
            return campaign_message(str(error))
        if found is None:
            return campaign_message("There is no earlier review of yours in this campaign.")
        assignment, annotation = found
        shown = self._show(session, reviewer, assignment, status="Your earlier review: change it and Submit & next.")
        ticked = [f"{span.start}:{span.end}" for span in annotation.spans]
        return shown._replace(
            campaign_flags=list(annotation.flags),
            campaign_comment=annotation.comment,
            campaign_sentences=gr.update(choices=shown.campaign_sentences["choices"], value=ticked),
        )

    def _comparison(self, session: Session) -> bool:
        return self.campaigns.get(session.campaign).kind == "comparison"

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
        new_campaign_probes: bool = False,
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
        A dataset's answers are probed as part of the generation with ``new_campaign_probes``
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
                probes = DEFAULT_KINDS if new_campaign_probes else ()
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
            pairs = len(self.pairs.comparisons.pairs(campaign.name))
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
        campaign = self.pairs.comparisons.create(
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
        return GuidelinesSaved(
            updated.guidelines or "No guidelines were written for this campaign.", "Guidelines saved."
        )

    def report(self, campaign: str | None) -> CampaignReport:
        """The campaign's report: who reviewed how much, agreement per flag, and how well the hints foresee flags."""
        if not campaign:
            return CampaignReport(render.error_markdown("Choose a campaign first."), None, None, None)
        try:
            if self.campaigns.get(campaign).kind == "comparison":
                return self.pairs.report(campaign)
            progress = self.campaigns.progress(campaign)
            annotations = self.campaigns.annotations(campaign)
            disagreements = self.campaigns.disagreements(campaign)
        except MedVLMError as error:
            return CampaignReport(render.error_markdown(str(error)), None, None, None)
        reviewers = ", ".join(f"{escape_markdown(name)} {count}" for name, count in progress.by_reviewer.items())
        summary = (
            f"{progress.complete} of {progress.outputs} outputs complete, {progress.reviews} of {progress.wanted} "
            f"reviews, {progress.skipped} skip(s). Reviews per reviewer: {reviewers or 'none yet'}."
        )
        agreement = reviewer_agreement(annotations)
        intervals = agreement_intervals(annotations).set_index("flag")
        agreement["95% interval of kappa"] = [
            intervals.loc[flag, "note"] or f"{intervals.loc[flag, 'low']:.2f} to {intervals.loc[flag, 'high']:.2f}"
            for flag in agreement["flag"]
        ]
        hints = hint_accuracy(annotations, probes=self._probe_verdicts(campaign))
        for frame, columns in ((agreement, ("observed_agreement", "fleiss_kappa")), (hints, ("precision", "recall"))):
            for column in columns:
                frame[column] = ["n/a" if pd.isna(value) else f"{value:.2f}" for value in frame[column]]
        split = pd.DataFrame(
            [
                {
                    "output": item.position,
                    "question": item.question,
                    "reviews": item.reviews,
                    "split votes": "; ".join(
                        f"{FLAGS[flag]} {count}/{item.reviews}" for flag, count in item.votes.items()
                    ),
                    "adjudicated": "; ".join(FLAGS[flag] for flag in item.adjudicated) if item.adjudicated else "",
                }
                for item in disagreements
            ],
            columns=["output", "question", "reviews", "split votes", "adjudicated"],
        )
        table = agreement.drop(columns=["flag"]).rename(
            columns={
                **AGREEMENT_HEADERS,
                "ratings": "Reviews of them",
                "95% interval of kappa": "95% interval of kappa",
            }
        )
        return CampaignReport(
            campaign_report=summary, campaign_agreement=table, campaign_hint_table=hints, campaign_disagreements=split
        )

    def dashboard(self, campaign: str | None) -> CampaignDashboard:
        """The campaign's progress over time and its flag rates by modality, question type and model
        (a comparison's: its verdicts by modality and question type, :meth:`PairHandlers.dashboard`).
        """
        empty = pd.DataFrame()
        if not campaign:
            return CampaignDashboard(empty, empty, empty, empty, empty)
        try:
            if self.campaigns.get(campaign).kind == "comparison":
                return self.pairs.dashboard(campaign)
            annotations = self.campaigns.annotations(campaign)
            progress = self.campaigns.progress(campaign)
        except MedVLMError:
            return CampaignDashboard(empty, empty, empty, empty, empty)
        return campaign_dashboard(
            reviews_over_time([annotation.created_at for annotation in annotations]),
            flag_rates(annotations, by="modality"),
            flag_rates(annotations, by="question_type"),
            flag_rates(annotations, by="model_id"),
            progress.by_reviewer,
            comparison=False,
        )

    def adjudicate(
        self,
        campaign: str | None,
        adjudicate_output: Any,
        adjudicate_flags: list[str] | None,
        adjudicate_note: str | None = "",
        adjudicate_verdict: str | None = None,
        profile: gr.OAuthProfile | None = None,
        request: gr.Request | None = None,
    ) -> str:
        """An administrator decides the flags of a disagreed output (by its number in the campaign), or in a
        comparison campaign the verdict on a split pair (``adjudicate_verdict``; answer 1 is the first run's)."""
        try:
            if not self.workbench.is_admin(profile, request):
                raise MedVLMError("Only an administrator can adjudicate (a user of --auth, or the Space's owner).")
            if not campaign:
                raise MedVLMError("Choose a campaign first.")
            adjudicator = getattr(request, "username", None) or getattr(profile, "username", None) or "admin"
            if self.campaigns.get(campaign).kind == "comparison":
                return self.pairs.adjudicate(
                    campaign, adjudicate_output, adjudicate_verdict, adjudicator, adjudicate_note or ""
                )
            number = as_number(adjudicate_output, "The output number", whole=True)
            ids = self.campaigns.output_ids(campaign)
            if number is None or not 1 <= number <= len(ids):
                raise MedVLMError(f"Give the number of an output of the campaign, 1 to {len(ids)}.")
            self.campaigns.adjudicate(
                campaign, ids[number - 1], adjudicate_flags or [], adjudicator, adjudicate_note or ""
            )
        except MedVLMError as error:
            return render.error_markdown(str(error))
        return f"Adjudicated output {number}; the individual reviews are kept as they were."

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

    def adjudication_form(self, campaign: str | None) -> AdjudicationForm:
        """The adjudication form for the campaign reported on: flags for outputs, a verdict for a pair."""
        try:
            comparison = bool(campaign) and self.campaigns.get(campaign).kind == "comparison"
        except MedVLMError:
            comparison = False
        return AdjudicationForm(gr.update(visible=not comparison), gr.update(visible=comparison))

    def _show(self, session: Session, reviewer: str, assignment: Assignment | None, *, status: str) -> CampaignShown:
        campaign = self.campaigns.get(session.campaign)
        progress = self.campaigns.progress(campaign.name)
        overall = render.campaign_progress(progress, reviewer, campaign.reviews_per_output)
        if assignment is None:
            session.campaign_output_id = None
            return CampaignShown(
                campaign_guidelines=campaign.guidelines or "No guidelines were written for this campaign.",
                campaign_progress=overall,
                campaign_viewer=None,
                campaign_case="Nothing is left for you in this campaign: every output has its reviews, or you "
                "have reviewed or skipped the rest. Thank you.",
                campaign_answer="",
                campaign_reasoning="",
                campaign_hints="",
                campaign_sentences=gr.update(choices=[], value=[]),
                campaign_flags=[],
                campaign_comment="",
                campaign_skip_reason="",
                campaign_output_id="",
                campaign_status=status,
                **one_output_form(),
            )
        output = assignment.output
        session.campaign_output_id = output.output_id
        shown_correct = None if campaign.blind else output.correct_answer
        model = "hidden (blind campaign)" if campaign.blind else output.model.get("model", "unknown")
        hints = reasoning_hints(output.completion, output.question, output.options)
        return CampaignShown(
            campaign_guidelines=campaign.guidelines or "No guidelines were written for this campaign.",
            campaign_progress=overall,
            campaign_viewer=stored_value(output, case=zlib.crc32(output.output_id.encode())),
            campaign_case=(
                f"Output {assignment.position} of {progress.outputs} (reviews so far: {assignment.reviews}; model: "
                f"{escape_markdown(model)}). **{escape_markdown(output.question)}**"
            ),
            campaign_answer=render.output_html(output, shown_correct),
            campaign_reasoning=output.reasoning or output.completion,
            campaign_hints=render.hints_markdown(hints) + self._probe_evidence(campaign.name, output),
            campaign_sentences=gr.update(
                choices=[(text, f"{start}:{end}") for start, end, text in reasoning_sentences(output.completion)],
                value=[],
            ),
            campaign_flags=[],
            campaign_comment="",
            campaign_skip_reason="",
            campaign_output_id=output.output_id,
            campaign_status=status,
            **one_output_form(),
        )

    def _probe_evidence(self, campaign: str, output: Any) -> str:
        """The output's probe verdicts for its reviewer, unless the campaign hides them (or has none)."""
        generation = self.campaigns.generation(campaign)
        if generation is None or not generation.show_probes:
            return ""
        answers = self.campaigns.store.probe_answers([output.output_id]).get(output.output_id)
        if not answers:
            return ""
        lines = summarize(output.completion, answers).lines()
        return "\n\n**Probes** (the model asked again; evidence, not a flag):\n" + "\n".join(
            f"- {line}" for line in lines
        )

    def _probe_verdicts(self, campaign: str) -> dict[str, bool | None]:
        """Each probed output's "image-invariant with visual claims" verdict, for the report."""
        outputs = {output_id: None for output_id in self.campaigns.output_ids(campaign)}
        found = self.campaigns.store.probe_answers(list(outputs))
        return {
            output_id: summarize(
                self.campaigns.store.output(output_id).completion, answers
            ).invariant_with_visual_claims
            for output_id, answers in found.items()
        }


def _discard(paths: list[str]) -> None:
    for path in paths:
        discard_upload(path)


def _span(value: str, label: str | None) -> Span:
    """A ticked sentence ("start:end") as a marked passage with the chosen label."""
    try:
        start, end = (int(part) for part in str(value).split(":"))
    except ValueError:
        raise MedVLMError(f"A marked sentence must be given by its offsets, 'start:end' (got {value!r}).") from None
    return Span(start, end, label or "")
