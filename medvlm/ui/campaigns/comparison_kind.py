"""The Campaigns tab for a comparison campaign: one pair of answers at a time, judged with a pairwise verdict.

The same loop as a review campaign (Start, Submit & next, Skip with a reason, Back), over the
pairs :class:`~medvlm.annotations.comparison_campaigns.ComparisonCampaigns` hands out. The two
answers stand side by side; in a blind campaign without model names, which are revealed in the
status line once the verdict is saved. It is the comparison :class:`~medvlm.ui.campaigns.kinds.CampaignKind`.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable

import gradio as gr
import pandas as pd

from medvlm.annotations import VERDICT_CHOICES, Verdict
from medvlm.annotations.campaigns import Campaigns
from medvlm.annotations.comparison_campaigns import ComparisonCampaigns, PairAssignment
from medvlm.errors import MedVLMError
from medvlm.hints import reasoning_hints
from medvlm.review_stats import MIN_INTERVAL_OUTPUTS, fleiss_kappa, reviews_over_time, verdict_rates
from medvlm.ui import render
from medvlm.ui.campaigns.kinds import NO_GUIDELINES, Adjudication, SubmittedForm
from medvlm.ui.events import AdjudicationForm, CampaignDashboard, CampaignReport, CampaignShown, campaign_dashboard
from medvlm.ui.inputs import as_number
from medvlm.ui.session import Session
from medvlm.ui.viewer import stored_value
from medvlm.user_text import escape_markdown


class PairVerdicts:
    """Start, submit a verdict and go on, skip, go back, report and adjudicate: for comparison campaigns."""

    def __init__(self, campaigns: Campaigns, mirror: Callable[..., bool] | None = None) -> None:
        self.comparisons = ComparisonCampaigns(campaigns)
        self.mirror = mirror
        """Copies each saved verdict to the Hub dataset (:meth:`~medvlm.ui.workbench.Workbench.mirror_verdict`)."""

    def start(self, session: Session, reviewer: str) -> CampaignShown:
        assignment = self.comparisons.next_pair(session.campaign, reviewer)
        return self._show(session, reviewer, assignment, status="")

    def submit_and_next(self, session: Session, reviewer: str, form: SubmittedForm) -> CampaignShown:
        """Store the verdict on the pair shown (``form.output_id`` left, ``form.second_output_id`` right), reveal
        the models, show the next pair."""
        if not form.verdict:
            raise MedVLMError("Choose which answer's reasoning is better (or a tie, or both poor) first.")
        first, second = form.output_id, form.second_output_id
        saved, created = self.comparisons.submit(session.campaign, reviewer, first, second, form.verdict)
        outputs = [self.comparisons.store.output(output_id) for output_id in (first, second)]
        mirrored = self.mirror is None or self.mirror(saved, *outputs, session.campaign)
        assignment = self.comparisons.next_pair(session.campaign, reviewer)
        action = "Saved" if created else "Changed"
        status = (
            f"{action} your verdict (#{saved.id}): {VERDICT_CHOICES[form.verdict].lower()}. "
            f"{render.revealed_pair(*(output.model.get('model', '?') for output in outputs))}"
            + ("" if mirrored else render.MIRROR_FAILED)
        )
        return self._show(session, reviewer, assignment, status=status)

    def skip(self, session: Session, reviewer: str, output_id: str, reason: str) -> CampaignShown:
        self.comparisons.skip(session.campaign, reviewer, output_id, reason)
        assignment = self.comparisons.next_pair(session.campaign, reviewer)
        return self._show(session, reviewer, assignment, status="Skipped; it will not be offered to you again.")

    def back(self, session: Session, reviewer: str, output_id: str | None) -> CampaignShown:
        found = self.comparisons.previous(session.campaign, reviewer, before=output_id or None)
        if found is None:
            raise MedVLMError("There is no earlier verdict of yours in this campaign.")
        assignment, verdict = found
        shown = self._show(session, reviewer, assignment, status="Your earlier verdict: change it and Submit & next.")
        earlier = verdict.choice(assignment.first.output_id)  # in terms of the sides as shown again
        return shown._replace(campaign_verdict=gr.update(visible=True, value=earlier))

    def report(self, campaign: str) -> CampaignReport:
        """A comparison campaign's report: which model the verdicts preferred, how far reviewers agree, and the
        pairs they split on (no hint table: hints read one answer's reasoning)."""
        comparisons = self.comparisons
        progress, tally, outcomes = (
            comparisons.progress(campaign),
            comparisons.tally(campaign),
            comparisons.outcomes(campaign),
        )
        reviewers = ", ".join(f"{escape_markdown(name)} {count}" for name, count in progress.by_reviewer.items())
        preferred = "; ".join(f"**{escape_markdown(model)}** {count}" for model, count in tally.preferred.items())
        summary = (
            f"{progress.complete} of {progress.outputs} pairs complete, {progress.reviews} of {progress.wanted} "
            f"verdicts, {progress.skipped} skip(s). Preferred: {preferred}; tie {tally.ties}; both poor "
            f"{tally.both_poor} ({tally.verdicts} verdicts). Verdicts per reviewer: {reviewers or 'none yet'}."
        )
        judged_twice = [counts for _, _, counts in outcomes if sum(counts.values()) >= 2]
        observed, kappa = fleiss_kappa(judged_twice)
        enough = len(judged_twice) >= MIN_INTERVAL_OUTPUTS
        agreement = pd.DataFrame(
            [
                {
                    "question": "which reasoning is better",
                    "pairs judged by two or more": len(judged_twice),
                    "observed_agreement": "n/a" if not judged_twice else f"{observed:.2f}",
                    "fleiss_kappa": "n/a" if not judged_twice or math.isnan(kappa) else f"{kappa:.2f}",
                    "note": "" if enough else f"too few pairs (fewer than {MIN_INTERVAL_OUTPUTS} judged twice)",
                }
            ]
        )
        models, decided = comparisons.models(campaign), comparisons.adjudications(campaign)
        split = pd.DataFrame(
            [
                {
                    "pair": position,
                    "question": question,
                    "verdicts": sum(counts.values()),
                    "split votes": "; ".join(f"{outcome} {count}" for outcome, count in sorted(counts.items())),
                    "adjudicated": _decision(decided.get(first), first, models),
                }
                for (position, question, counts), (first, _) in zip(outcomes, comparisons.pairs(campaign), strict=True)
                if len(counts) > 1
            ],
            columns=["pair", "question", "verdicts", "split votes", "adjudicated"],
        )
        return CampaignReport(
            campaign_report=summary,
            campaign_agreement=agreement,
            campaign_hint_table=pd.DataFrame(),
            campaign_disagreements=split,
        )

    def adjudicate(self, campaign: str, decision: Adjudication) -> str:
        """An administrator's verdict on a split pair (by its number; answer 1 is the first run's)."""
        position = as_number(decision.number, "The pair number", whole=True)
        if position is None:
            raise MedVLMError("Give the number of the pair to adjudicate (the first column of the split pairs).")
        if not decision.verdict:
            raise MedVLMError("Choose the adjudicated verdict.")
        decided = self.comparisons.adjudicate(
            campaign, position, decision.verdict, decision.adjudicator, decision.note
        )
        first = self.comparisons.pairs(campaign)[position - 1][0]
        models = self.comparisons.models(campaign)
        return (
            f"Adjudicated pair {position}: {escape_markdown(_decision(decided, first, models))}; "
            "the reviewers' verdicts are kept as they were."
        )

    def adjudication_form(self) -> AdjudicationForm:
        return AdjudicationForm(gr.update(visible=False), gr.update(visible=True))

    def dashboard(self, campaign: str) -> CampaignDashboard:
        """A comparison campaign's dashboard: its verdicts over time (by their latest save) and per reviewer,
        and how they fell (each model preferred, tie, both poor) by modality, by question type and overall."""
        comparisons = self.comparisons
        models = " vs ".join(comparisons.models(campaign))
        cases = [comparisons.store.output(first) for first, _ in comparisons.pairs(campaign)]
        outcomes = [counts for _, _, counts in comparisons.outcomes(campaign)]
        return campaign_dashboard(
            reviews_over_time([verdict.decided_at for verdict in comparisons.verdicts(campaign)]),
            verdict_rates(
                [(case.image_metadata.get("modality"), counts) for case, counts in zip(cases, outcomes, strict=True)],
                "modality",
            ),
            verdict_rates(
                [(case.question_type, counts) for case, counts in zip(cases, outcomes, strict=True)], "question_type"
            ),
            verdict_rates([(models, counts) for counts in outcomes], "model_id"),
            comparisons.progress(campaign).by_reviewer,
            comparison=True,
        )

    def _show(
        self, session: Session, reviewer: str, assignment: PairAssignment | None, *, status: str
    ) -> CampaignShown:
        campaign = self.comparisons.get(session.campaign)
        progress = self.comparisons.progress(campaign.name)
        overall = render.campaign_progress(progress, reviewer, campaign.reviews_per_output, comparison=True)
        guidelines = campaign.guidelines or NO_GUIDELINES
        if assignment is None:
            session.campaign_output_id = None
            empty = {field: "" for field in CampaignShown._fields}
            return CampaignShown(
                **{
                    **empty,
                    "campaign_guidelines": guidelines,
                    "campaign_progress": overall,
                    "campaign_viewer": None,
                    "campaign_case": "Nothing is left for you in this campaign: every pair has its verdicts, or "
                    "you have judged or skipped the rest. Thank you.",
                    "campaign_sentences": gr.update(choices=[], value=[]),
                    "campaign_flags": [],
                    "campaign_status": status,
                    "campaign_review_form": gr.update(visible=False),
                    "campaign_verdict": gr.update(visible=False, value=None),
                    "campaign_pair_panel": gr.update(visible=False),
                }
            )
        first, second = assignment.first, assignment.second
        session.campaign_output_id = first.output_id
        names = (None, None) if campaign.blind else (first.model.get("model"), second.model.get("model"))
        correct = None if campaign.blind else first.correct_answer
        return CampaignShown(
            campaign_guidelines=guidelines,
            campaign_progress=overall,
            campaign_viewer=stored_value(first, case=zlib.crc32(assignment.pair.encode())),
            campaign_case=(
                f"Pair {assignment.position} of {progress.outputs} (verdicts so far: {assignment.verdicts}"
                f"{'; models hidden until you submit' if campaign.blind else ''}). "
                f"**{escape_markdown(first.question)}**"
            ),
            campaign_answer=render.output_html(first, correct),
            campaign_reasoning=first.reasoning or first.completion,
            campaign_hints=render.hints_markdown(reasoning_hints(first.completion, first.question, first.options)),
            campaign_sentences=gr.update(choices=[], value=[]),
            campaign_flags=[],
            campaign_comment="",
            campaign_skip_reason="",
            campaign_output_id=first.output_id,
            campaign_status=status,
            campaign_review_form=gr.update(visible=False),
            campaign_verdict=gr.update(visible=True, value=None),
            campaign_first_header=render.answer_header(1, names[0]),
            campaign_pair_panel=gr.update(visible=True),
            campaign_second_header=render.answer_header(2, names[1]),
            campaign_second_answer=render.output_html(second, correct),
            campaign_second_reasoning=second.reasoning or second.completion,
            campaign_second_hints=render.hints_markdown(
                reasoning_hints(second.completion, second.question, second.options)
            ),
            campaign_second_output_id=second.output_id,
        )


def _decision(verdict: Verdict | None, first: str, models: tuple[str, str]) -> str:
    """An adjudicated verdict in the report's words: the preferred run's model, or tie / both poor."""
    if verdict is None:
        return ""
    if verdict.preferred is None:
        return verdict.outcome.replace("_", " ")
    return f"{models[0] if verdict.preferred == first else models[1]} better"
