"""The Campaigns tab's reviewing and report events: a reviewer works through a shared campaign, one handed-out
output (or pair) at a time, and anyone reads its report.

Each event names the campaign; its kind (:mod:`medvlm.ui.campaigns.kinds`) is looked up once,
in :meth:`CampaignHandlers.kind`, and does the work: a review campaign's outputs are reviewed
with flags (:class:`~medvlm.ui.campaigns.review_kind.OutputReviews`), a comparison's pairs judged
with a verdict (:class:`~medvlm.ui.campaigns.comparison_kind.PairVerdicts`). Here is what both
share: who the reviewer is, the blind banner, the campaign list, and the messages for what went
wrong. Setting campaigns up is :mod:`medvlm.ui.campaigns.admin_handlers`.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd

from medvlm.annotations.campaigns import Campaigns
from medvlm.errors import MedVLMError
from medvlm.ui import render
from medvlm.ui.campaigns.comparison_kind import PairVerdicts
from medvlm.ui.campaigns.kinds import Adjudication, CampaignKind, SubmittedForm
from medvlm.ui.campaigns.review_kind import OutputReviews
from medvlm.ui.events import (
    AdjudicationForm,
    CampaignDashboard,
    CampaignReport,
    CampaignShown,
    ReportClosed,
    campaign_message,
)
from medvlm.ui.session import Session
from medvlm.ui.workbench import Workbench


class CampaignHandlers:
    """Choose a campaign, take the next output, submit and go on, skip with a reason, go back; read its report."""

    def __init__(self, workbench: Workbench, campaigns: Campaigns | None = None) -> None:
        self.workbench = workbench
        self.campaigns = campaigns or Campaigns(workbench.store)
        self.kinds: dict[str, CampaignKind] = {
            "review": OutputReviews(self.campaigns, mirror=workbench.mirror),
            "comparison": PairVerdicts(self.campaigns, mirror=workbench.mirror_verdict),
        }

    def kind(self, campaign: str) -> CampaignKind:
        """What handles ``campaign``'s events: its kind, the one place it is asked for."""
        return self.kinds[self.campaigns.get(campaign).kind]

    def banner(self, session: Session) -> str:
        """The notice at the top while this tab is on screen: no model named in it while the campaign is blind
        (the served model may be the one that answered; its reviewers must not know)."""
        try:
            blind = bool(session.campaign) and self.campaigns.get(session.campaign).blind
        except MedVLMError:
            blind = False
        return render.blind_banner() if blind else self.workbench.banner()

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
        """Work on ``campaign``: its guidelines, and the output (or pair) handed to this reviewer."""
        if not campaign:
            return campaign_message("Choose a campaign first (an administrator creates them: medvlm campaign create).")
        try:
            reviewer = self.workbench.reviewer(campaign_reviewer, profile, request)
            kind = self.kind(campaign)
        except MedVLMError as error:
            return campaign_message(str(error))
        previous, session.campaign = session.campaign, campaign
        try:
            return kind.start(session, reviewer)
        except MedVLMError as error:
            session.campaign = previous  # the campaign on screen is still the one its page shows
            return campaign_message(str(error))

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
        """Save the review (or a comparison's verdict) of what is on screen, then show the next one; the form is
        kept if the save fails.

        ``campaign_sentences`` are the ticked sentences of the reasoning ("start:end" offsets into
        the completion), stored as passages marked with ``campaign_span_label``. In a comparison
        campaign, the verdict on the pair on screen (``campaign_output_id`` shown first,
        ``campaign_second_output_id`` second) is saved instead.
        """
        if not session.campaign or not campaign_output_id:
            return campaign_message("There is nothing to review yet: choose a campaign and press Start.")
        form = SubmittedForm(
            output_id=campaign_output_id,
            second_output_id=campaign_second_output_id or "",
            flags=tuple(campaign_flags or ()),
            comment=campaign_comment or "",
            sentences=tuple(campaign_sentences or ()),
            span_label=campaign_span_label or "",
            verdict=campaign_verdict or None,
            session_key=self.workbench.session_key(session),
        )
        try:
            reviewer = self.workbench.reviewer(campaign_reviewer, profile, request)
            return self.kind(session.campaign).submit_and_next(session, reviewer, form)
        except MedVLMError as error:
            return campaign_message(str(error))

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
            return self.kind(session.campaign).skip(session, reviewer, campaign_output_id, campaign_skip_reason or "")
        except MedVLMError as error:
            return campaign_message(str(error))

    def back(
        self,
        session: Session,
        campaign_reviewer: str | None = None,
        campaign_output_id: str | None = None,
        profile: gr.OAuthProfile | None = None,
        request: gr.Request | None = None,
    ) -> CampaignShown:
        """Back: what this reviewer reviewed before the output on screen, with their review filled in to change."""
        if not session.campaign:
            return campaign_message("Choose a campaign and press Start first.")
        try:
            reviewer = self.workbench.reviewer(campaign_reviewer, profile, request)
            return self.kind(session.campaign).back(session, reviewer, campaign_output_id)
        except MedVLMError as error:
            return campaign_message(str(error))

    def report(self, campaign: str | None) -> CampaignReport:
        """The campaign's report: who reviewed how much, how far reviewers agree, what to adjudicate (and, for a
        review campaign, how well the hints foresee flags)."""
        if not campaign:
            return CampaignReport(render.error_markdown("Choose a campaign first."), None, None, None)
        try:
            return self.kind(campaign).report(campaign)
        except MedVLMError as error:
            return CampaignReport(render.error_markdown(str(error)), None, None, None)

    def dashboard(self, campaign: str | None) -> CampaignDashboard:
        """The campaign's progress over time, and its flag (or verdict) rates by modality, question type and model."""
        empty = pd.DataFrame()
        if not campaign:
            return CampaignDashboard(empty, empty, empty, empty, empty)
        try:
            return self.kind(campaign).dashboard(campaign)
        except MedVLMError:
            return CampaignDashboard(empty, empty, empty, empty, empty)

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
            decision = Adjudication(
                number=adjudicate_output,
                flags=tuple(adjudicate_flags or ()),
                verdict=adjudicate_verdict or None,
                note=adjudicate_note or "",
                adjudicator=getattr(request, "username", None) or getattr(profile, "username", None) or "admin",
            )
            return self.kind(campaign).adjudicate(campaign, decision)
        except MedVLMError as error:
            return render.error_markdown(str(error))

    def adjudication_form(self, campaign: str | None) -> AdjudicationForm:
        """The adjudication form for the campaign reported on: flags for outputs, a verdict for a pair."""
        try:
            return self.kind(campaign or "").adjudication_form()
        except MedVLMError:
            return self.kinds["review"].adjudication_form()

    @staticmethod
    def report_closed() -> ReportClosed:
        """Another campaign chosen: its report is loaded when opened, never the last one's left on show."""
        return ReportClosed(campaign_report_box=gr.update(open=False), campaign_report="")
