"""What a kind of campaign does with the Campaigns tab's events, so the tab asks the campaign's kind once.

A review campaign (:class:`~medvlm.ui.campaigns.review_kind.OutputReviews`) hands out one output
at a time and stores flags and marked passages; a comparison campaign
(:class:`~medvlm.ui.campaigns.comparison_kind.PairVerdicts`) hands out a pair of answers and
stores a pairwise verdict. Both run the same loop (Start, Submit & next, Skip, Back) and fill the
same report, dashboard and adjudication form, so the tab's handlers
(:class:`~medvlm.ui.campaigns.handlers.CampaignHandlers`) look the kind up by the campaign's name
and hand it the event; a third kind is one more class, not a branch in every handler.
A kind raises :class:`~medvlm.errors.MedVLMError` for what the reviewer or administrator can fix;
the handlers show it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from medvlm.ui.events import AdjudicationForm, CampaignDashboard, CampaignReport, CampaignShown
from medvlm.ui.session import Session

NO_GUIDELINES = "No guidelines were written for this campaign."
"""What the guidelines panel says for a campaign without any."""


@dataclass(frozen=True)
class SubmittedForm:
    """The form under the output on screen when Submit & next is pressed: a review or a pair's verdict.

    ``sentences`` are the ticked sentences of the reasoning, as ``"start:end"`` offsets into the
    completion, marked with ``span_label``; ``verdict`` is a comparison's choice on the pair shown
    (``output_id`` first, ``second_output_id`` second). Each kind reads the fields it has a form for.
    ``session_key`` tells one person's saves from a namesake's (:meth:`~medvlm.ui.workbench.Workbench.session_key`).
    """

    output_id: str
    second_output_id: str = ""
    flags: tuple[str, ...] = ()
    comment: str = ""
    sentences: tuple[str, ...] = ()
    span_label: str = ""
    verdict: str | None = None
    session_key: str = ""


@dataclass(frozen=True)
class Adjudication:
    """An administrator's decision on a disagreement: the output (or pair) by its number in the report's table,
    the flags decided (a review campaign) or the verdict (a comparison), a note, and who decided."""

    number: Any
    flags: tuple[str, ...]
    verdict: str | None
    note: str
    adjudicator: str


class CampaignKind(Protocol):
    """The Campaigns tab's events for one kind of campaign (``Campaign.kind``)."""

    def start(self, session: Session, reviewer: str) -> CampaignShown:
        """The output (or pair) handed to ``reviewer`` in ``session.campaign``."""
        ...

    def submit_and_next(self, session: Session, reviewer: str, form: SubmittedForm) -> CampaignShown:
        """Save the form for the output on screen, then show the next one."""
        ...

    def skip(self, session: Session, reviewer: str, output_id: str, reason: str) -> CampaignShown:
        """Pass on the output on screen with a reason; it is not offered to this reviewer again."""
        ...

    def back(self, session: Session, reviewer: str, output_id: str | None) -> CampaignShown:
        """The one this reviewer did before ``output_id`` (or their latest), their answer filled in to change."""
        ...

    def report(self, campaign: str) -> CampaignReport:
        """The report's summary and tables."""
        ...

    def dashboard(self, campaign: str) -> CampaignDashboard:
        """The report's plots."""
        ...

    def adjudicate(self, campaign: str, decision: Adjudication) -> str:
        """Store an administrator's decision; what was decided, as a sentence."""
        ...

    def adjudication_form(self) -> AdjudicationForm:
        """The adjudication form this kind asks for (flags, or a verdict)."""
        ...
