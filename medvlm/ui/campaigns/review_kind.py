"""The Campaigns tab for a review campaign: one handed-out output at a time, reviewed with flags and marked passages.

The store decides who gets which output (:mod:`medvlm.annotations.campaigns`): this kind asks it
for the next one, shows it with the pre-check hints (:mod:`medvlm.hints`, suggestions only) and,
where the campaign shows them, its probes' verdicts (:mod:`medvlm.probes`), and submits or skips
it. The output on screen is named by its id in the page, as on the Ask tab, so a submit from a
stale page is checked by the store like any other.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import gradio as gr
import pandas as pd

from medvlm.annotations import FLAGS, Annotation, ModelOutput, Review, Span
from medvlm.annotations.campaigns import Assignment, Campaigns
from medvlm.errors import MedVLMError
from medvlm.hints import reasoning_hints, reasoning_sentences
from medvlm.probes import summarize
from medvlm.review_stats import (
    agreement_intervals,
    flag_rates,
    hint_accuracy,
    reviewer_agreement,
    reviews_over_time,
)
from medvlm.ui import render
from medvlm.ui.campaigns.kinds import NO_GUIDELINES, Adjudication, SubmittedForm
from medvlm.ui.events import (
    AdjudicationForm,
    CampaignDashboard,
    CampaignReport,
    CampaignShown,
    campaign_dashboard,
    one_output_form,
)
from medvlm.ui.inputs import as_number
from medvlm.ui.session import Session
from medvlm.ui.viewer import stored_value
from medvlm.user_text import escape_markdown


class OutputReviews:
    """Start, review and go on, skip, go back, report and adjudicate: for review campaigns."""

    def __init__(self, campaigns: Campaigns, mirror: Callable[[Annotation], bool] | None = None) -> None:
        self.campaigns = campaigns
        self.mirror = mirror
        """Copies each saved review to the Hub dataset (:meth:`~medvlm.ui.workbench.Workbench.mirror`)."""

    def start(self, session: Session, reviewer: str) -> CampaignShown:
        return self._show(session, reviewer, self.campaigns.next_output(session.campaign, reviewer), status="")

    def submit_and_next(self, session: Session, reviewer: str, form: SubmittedForm) -> CampaignShown:
        """Save the review of the output on screen (its ticked sentences as passages), then show the next one."""
        spans = tuple(_span(value, form.span_label) for value in form.sentences)
        review = Review(reviewer, form.flags, form.comment, spans=spans)
        annotation = self.campaigns.submit(
            session.campaign, reviewer, form.output_id, review, session_key=form.session_key
        )
        mirrored = self.mirror is None or self.mirror(annotation)
        assignment = self.campaigns.next_output(session.campaign, reviewer)
        status = f"Saved your review (#{annotation.id})." + ("" if mirrored else render.MIRROR_FAILED)
        return self._show(session, reviewer, assignment, status=status)

    def skip(self, session: Session, reviewer: str, output_id: str, reason: str) -> CampaignShown:
        self.campaigns.skip(session.campaign, reviewer, output_id, reason)
        assignment = self.campaigns.next_output(session.campaign, reviewer)
        return self._show(session, reviewer, assignment, status="Skipped; it will not be offered to you again.")

    def back(self, session: Session, reviewer: str, output_id: str | None) -> CampaignShown:
        found = self.campaigns.previous(session.campaign, reviewer, before=output_id or None)
        if found is None:
            raise MedVLMError("There is no earlier review of yours in this campaign.")
        assignment, annotation = found
        shown = self._show(session, reviewer, assignment, status="Your earlier review: change it and Submit & next.")
        ticked = [f"{span.start}:{span.end}" for span in annotation.spans]
        return shown._replace(
            campaign_flags=list(annotation.flags),
            campaign_comment=annotation.comment,
            campaign_sentences=gr.update(choices=shown.campaign_sentences["choices"], value=ticked),
        )

    def report(self, campaign: str) -> CampaignReport:
        """Who reviewed how much, agreement per flag, how well the hints (and probes) foresee flags, and the
        outputs whose reviewers disagree."""
        progress = self.campaigns.progress(campaign)
        annotations = self.campaigns.annotations(campaign)
        disagreements = self.campaigns.disagreements(campaign)
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
        hints = hint_accuracy(annotations, probes=self.probe_verdicts(campaign))
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
        table = agreement.drop(columns=["flag"]).rename(columns=render.AGREEMENT_HEADERS)
        return CampaignReport(
            campaign_report=summary, campaign_agreement=table, campaign_hint_table=hints, campaign_disagreements=split
        )

    def dashboard(self, campaign: str) -> CampaignDashboard:
        """Reviews over time and per reviewer, and flag rates by modality, question type and model."""
        annotations = self.campaigns.annotations(campaign)
        return campaign_dashboard(
            reviews_over_time([annotation.created_at for annotation in annotations]),
            flag_rates(annotations, by="modality"),
            flag_rates(annotations, by="question_type"),
            flag_rates(annotations, by="model_id"),
            self.campaigns.progress(campaign).by_reviewer,
            comparison=False,
        )

    def adjudicate(self, campaign: str, decision: Adjudication) -> str:
        """The flags of a disagreed output, by its number in the campaign; its reviews stay as they were."""
        number = as_number(decision.number, "The output number", whole=True)
        ids = self.campaigns.output_ids(campaign)
        if number is None or not 1 <= number <= len(ids):
            raise MedVLMError(f"Give the number of an output of the campaign, 1 to {len(ids)}.")
        self.campaigns.adjudicate(campaign, ids[number - 1], list(decision.flags), decision.adjudicator, decision.note)
        return f"Adjudicated output {number}; the individual reviews are kept as they were."

    def adjudication_form(self) -> AdjudicationForm:
        return AdjudicationForm(gr.update(visible=True), gr.update(visible=False))

    def probe_evidence(self, campaign: str, output: ModelOutput) -> str:
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

    def probe_verdicts(self, campaign: str) -> dict[str, bool | None]:
        """Each probed output's "image-invariant with visual claims" verdict, for the report's hint table."""
        store = self.campaigns.store
        found = store.probe_answers(self.campaigns.output_ids(campaign))
        return {
            output_id: summarize(store.output(output_id).completion, answers).invariant_with_visual_claims
            for output_id, answers in found.items()
        }

    def _show(self, session: Session, reviewer: str, assignment: Assignment | None, *, status: str) -> CampaignShown:
        campaign = self.campaigns.get(session.campaign)
        progress = self.campaigns.progress(campaign.name)
        shown = {
            "campaign_guidelines": campaign.guidelines or NO_GUIDELINES,
            "campaign_progress": render.campaign_progress(progress, reviewer, campaign.reviews_per_output),
            "campaign_flags": [],
            "campaign_comment": "",
            "campaign_skip_reason": "",
            "campaign_status": status,
            **one_output_form(),
        }
        if assignment is None:
            session.campaign_output_id = None
            return CampaignShown(
                **shown,
                campaign_viewer=None,
                campaign_case="Nothing is left for you in this campaign: every output has its reviews, or you "
                "have reviewed or skipped the rest. Thank you.",
                campaign_answer="",
                campaign_reasoning="",
                campaign_hints="",
                campaign_sentences=gr.update(choices=[], value=[]),
                campaign_output_id="",
            )
        output = assignment.output
        session.campaign_output_id = output.output_id
        model = "hidden (blind campaign)" if campaign.blind else output.model.get("model", "unknown")
        hints = reasoning_hints(output.completion, output.question, output.options)
        return CampaignShown(
            **shown,
            campaign_viewer=stored_value(output, case=zlib.crc32(output.output_id.encode())),
            campaign_case=(
                f"Output {assignment.position} of {progress.outputs} (reviews so far: {assignment.reviews}; model: "
                f"{escape_markdown(model)}). **{escape_markdown(output.question)}**"
            ),
            campaign_answer=render.output_html(output, None if campaign.blind else output.correct_answer),
            campaign_reasoning=output.reasoning or output.completion,
            campaign_hints=render.hints_markdown(hints) + self.probe_evidence(campaign.name, output),
            campaign_sentences=gr.update(
                choices=[(text, f"{start}:{end}") for start, end, text in reasoning_sentences(output.completion)],
                value=[],
            ),
            campaign_output_id=output.output_id,
        )


def _span(value: str, label: str) -> Span:
    """A ticked sentence ("start:end") as a marked passage with the chosen label."""
    try:
        start, end = (int(part) for part in str(value).split(":"))
    except ValueError:
        raise MedVLMError(f"A marked sentence must be given by its offsets, 'start:end' (got {value!r}).") from None
    return Span(start, end, label)
