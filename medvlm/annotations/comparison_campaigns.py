"""Comparison campaigns: pairs of answers to the same questions by two models, each pair judged k times.

The pairs come from two evaluation runs on the same questions (the base model's and the GRPO
model's ``train.evaluate`` runs, matched by question id: :func:`medvlm.evaluation_runs.paired_runs`).
A reviewer is handed one pair at a time and gives a pairwise verdict (:class:`Verdict`): which
reasoning is better, a tie, or both poor.

**Who judges what** is the rule of review campaigns (:mod:`medvlm.annotations.campaigns`), over
pairs: :meth:`ComparisonCampaigns.next_pair` hands a reviewer a pair they have neither judged
nor skipped and that is *taken* fewer than k times (its verdicts plus other reviewers' live
claims), least-taken first, then in the campaign's order; the claim is the same 30-minute lease,
one per reviewer, chosen and claimed in one ``BEGIN IMMEDIATE``; a verdict is checked against the
claim inside its own transaction. A pair is named by its first run's output id (unique in a
campaign: each run answers each question once).

**Sides.** In a blind campaign each reviewer sees the pair's sides in their own fixed order
(drawn from their name and the pair, so going Back shows the same sides) and no model names;
the verdict is stored in terms of outputs with the output shown first, so the shuffle can be
audited. Not blind: the first run on the left, named.
"""

from __future__ import annotations

import sqlite3
import time
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

from medvlm.annotations.campaigns import (
    LEASE_S,
    Campaign,
    Campaigns,
    Progress,
    _checked_name,
    _insert_campaign,
    _now,
    _reviewer_key,
    _with_name_key,
)
from medvlm.annotations.records import AnnotationError, ModelOutput, Verdict, image_sha256
from medvlm.user_text import name_key

_PAIR_TAKEN = """((SELECT count(*) FROM verdicts v
              WHERE v.output_a = min(p.first_output, p.second_output)
                AND v.output_b = max(p.first_output, p.second_output))
           + (SELECT count(*) FROM campaign_claims c WHERE c.campaign_id = p.campaign_id
              AND c.output_id = p.first_output AND c.reviewer_key <> :key AND c.expires_at > :now))"""
"""How many of its k a pair has given away: its verdicts, plus the live claims of other reviewers."""

_JUDGED_BY = """EXISTS (SELECT 1 FROM verdicts v
              WHERE v.output_a = min(p.first_output, p.second_output)
                AND v.output_b = max(p.first_output, p.second_output) AND name_key(v.reviewer) = :key)"""


@dataclass(frozen=True)
class PairAssignment:
    """A pair handed to a reviewer, in the order this reviewer sees its sides."""

    campaign: Campaign
    first: ModelOutput
    """The answer shown first (left), with the campaign's correct answer (hide it and the models when blind)."""
    second: ModelOutput
    position: int
    """The pair's place in the campaign, from 1."""
    verdicts: int
    """Verdicts the pair has so far (not counting this reviewer's)."""
    pair: str
    """The pair's name in the campaign (its first run's output id): what a skip names."""


@dataclass(frozen=True)
class PairTally:
    """A comparison campaign's verdicts, per model: what the reviewers preferred."""

    models: tuple[str, str]
    """The first and the second run's models."""
    preferred: dict[str, int]
    """Model -> verdicts preferring its answer."""
    ties: int
    both_poor: int

    @property
    def verdicts(self) -> int:
        return sum(self.preferred.values()) + self.ties + self.both_poor


class ComparisonCampaigns:
    """The comparison campaigns of one data folder (a view of :class:`Campaigns` over pairs)."""

    def __init__(self, campaigns: Campaigns) -> None:
        self.campaigns = campaigns
        self.store = campaigns.store

    def create(
        self,
        name: str,
        pairs: Sequence[tuple[ModelOutput, ModelOutput]],
        *,
        verdicts_per_pair: int,
        guidelines: str = "",
        blind: bool = True,
        created_by: str,
    ) -> Campaign:
        """A new comparison campaign over ``pairs`` (the first run's answer, the second's), stored once."""
        name = _checked_name(name, verdicts_per_pair)
        if not pairs:
            raise AnnotationError("A comparison campaign needs at least one pair of answers to judge.")
        ids = [output.output_id for pair in pairs for output in pair]
        if len(set(ids)) != len(ids):
            raise AnnotationError("The same model output appears twice in the campaign's pairs.")
        for position, (first, second) in enumerate(pairs, start=1):
            same_case = (image_sha256(first.image), first.question, list(first.options)) == (
                image_sha256(second.image),
                second.question,
                list(second.options),
            )
            if not same_case:
                raise AnnotationError(
                    f"Pair {position}: the two answers are to different cases (image, question or options differ)."
                )
        with self.store.connection(write=True) as conn:
            self.store.add_outputs([output for pair in pairs for output in pair], conn)
            campaign_id = _insert_campaign(
                conn, name, guidelines, verdicts_per_pair, blind, created_by, kind="comparison"
            )
            conn.executemany(
                "INSERT INTO campaign_pairs (campaign_id, position, first_output, second_output, correct_answer)"
                " VALUES (?, ?, ?, ?, ?)",
                [
                    (campaign_id, position, first.output_id, second.output_id, first.correct_answer or None)
                    for position, (first, second) in enumerate(pairs, start=1)
                ],
            )
        return self.campaigns.get(name)

    def get(self, name: str) -> Campaign:
        campaign = self.campaigns.get(name)
        if campaign.kind != "comparison":
            raise AnnotationError(f"{campaign.name!r} reviews single outputs; it is not a comparison campaign.")
        return campaign

    def pairs(self, name: str) -> list[tuple[str, str]]:
        """The campaign's pairs as (first run's output id, second's), in order."""
        campaign = self.get(name)
        with self.store.connection() as conn:
            return conn.execute(
                "SELECT first_output, second_output FROM campaign_pairs WHERE campaign_id = ? ORDER BY position",
                (campaign.id,),
            ).fetchall()

    # -- the reviewer's loop -----------------------------------------------------------------------

    def next_pair(self, name: str, reviewer: str, *, now: float | None = None) -> PairAssignment | None:
        """Claim (or keep) a pair for ``reviewer``; None when nothing is left for them to judge."""
        campaign = self.get(name)
        key = _reviewer_key(reviewer)
        now = time.time() if now is None else now
        values = {"campaign": campaign.id, "key": key, "now": now, "wanted": campaign.reviews_per_output}
        with self.store.connection(write=True) as conn:
            _with_name_key(conn)
            conn.execute("DELETE FROM campaign_claims WHERE campaign_id = ? AND expires_at <= ?", (campaign.id, now))
            held = conn.execute(
                f"""SELECT c.output_id FROM campaign_claims c JOIN campaign_pairs p
                    ON p.campaign_id = c.campaign_id AND p.first_output = c.output_id
                    WHERE c.campaign_id = :campaign AND c.reviewer_key = :key AND NOT {_JUDGED_BY}""",
                values,
            ).fetchone()
            if held is None:
                held = conn.execute(
                    f"""SELECT p.first_output FROM campaign_pairs p
                        WHERE p.campaign_id = :campaign AND NOT {_JUDGED_BY}
                          AND NOT EXISTS (SELECT 1 FROM campaign_skips s WHERE s.campaign_id = p.campaign_id
                                          AND s.output_id = p.first_output AND s.reviewer_key = :key)
                          AND {_PAIR_TAKEN} < :wanted
                        ORDER BY {_PAIR_TAKEN}, p.position LIMIT 1""",
                    values,
                ).fetchone()
                if held is None:
                    conn.execute(
                        "DELETE FROM campaign_claims WHERE campaign_id = ? AND reviewer_key = ?", (campaign.id, key)
                    )
                    return None
            pair = held[0]
            conn.execute(
                "INSERT INTO campaign_claims (campaign_id, reviewer_key, output_id, expires_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (campaign_id, reviewer_key) DO UPDATE SET output_id = excluded.output_id,"
                " expires_at = excluded.expires_at",
                (campaign.id, key, pair, now + LEASE_S),
            )
        return self._assignment(campaign, pair, key)

    def submit(
        self, name: str, reviewer: str, first: str, second: str, choice: str, *, now: float | None = None
    ) -> tuple[Verdict, bool]:
        """Store the verdict ``choice`` on the pair shown as ``first`` (left) and ``second``, if still theirs.

        Refused (:class:`AnnotationError`, nothing stored) when the two are not a pair of the
        campaign, or when the reviewer's claim ran out and the pair has since been given its k
        verdicts. Changing one's own verdict is always allowed. Returns (verdict, whether new).
        """
        campaign = self.get(name)
        key = _reviewer_key(reviewer)
        now = time.time() if now is None else now
        with self.store.connection() as conn:
            found = conn.execute(
                "SELECT first_output, correct_answer FROM campaign_pairs WHERE campaign_id = ?"
                " AND ((first_output = ? AND second_output = ?) OR (first_output = ? AND second_output = ?))",
                (campaign.id, first, second, second, first),
            ).fetchone()
        if found is None:
            raise AnnotationError(f"Those two answers are not a pair of the campaign {campaign.name!r}.")
        pair, correct = found
        verdict = Verdict.from_sides(first, second, choice, reviewer=reviewer, blind=campaign.blind)
        values = {"campaign": campaign.id, "key": key, "now": now, "pair": pair}

        def still_theirs(conn: sqlite3.Connection) -> None:
            _with_name_key(conn)
            held = conn.execute(
                "SELECT 1 FROM campaign_claims WHERE campaign_id = :campaign AND reviewer_key = :key"
                " AND output_id = :pair AND expires_at > :now",
                values,
            ).fetchone()
            if held is None:
                taken, judged = conn.execute(
                    f"SELECT {_PAIR_TAKEN}, {_JUDGED_BY} FROM campaign_pairs p"
                    " WHERE p.campaign_id = :campaign AND p.first_output = :pair",
                    values,
                ).fetchone()
                if not judged and taken >= campaign.reviews_per_output:
                    raise AnnotationError(
                        "This verdict was not saved: your hold on this pair ran out and it has since received "
                        f"its {campaign.reviews_per_output} verdict(s). Ask for the next pair."
                    )
            conn.execute("DELETE FROM campaign_claims WHERE campaign_id = ? AND reviewer_key = ?", (campaign.id, key))

        shown = [replace(self.store.output(output_id), correct_answer=correct) for output_id in (first, second)]
        return self.store.add_verdict(*shown, verdict, within=still_theirs)

    def pair_of(self, name: str, output_id: str) -> str | None:
        """The pair (its name, :attr:`PairAssignment.pair`) that ``output_id``, either side, belongs to."""
        campaign = self.get(name)
        with self.store.connection() as conn:
            found = conn.execute(
                "SELECT first_output FROM campaign_pairs WHERE campaign_id = ? AND ? IN (first_output, second_output)",
                (campaign.id, output_id),
            ).fetchone()
        return found[0] if found else None

    def skip(self, name: str, reviewer: str, output_id: str, reason: str) -> None:
        """The reviewer passes on the pair of ``output_id`` (either side), with a reason; it is not offered again."""
        campaign = self.get(name)
        key = _reviewer_key(reviewer)
        reason = " ".join(str(reason or "").split())
        if not reason:
            raise AnnotationError("Say why you skip this pair (for instance: image unreadable).")
        pair = self.pair_of(name, output_id)
        if pair is None:
            raise AnnotationError(f"That pair is not part of the campaign {campaign.name!r}.")
        with self.store.connection(write=True) as conn:
            conn.execute(
                "INSERT INTO campaign_skips (campaign_id, output_id, reviewer_key, reason, skipped_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET reason = excluded.reason",
                (campaign.id, pair, key, reason, _now()),
            )
            conn.execute(
                "DELETE FROM campaign_claims WHERE campaign_id = ? AND reviewer_key = ? AND output_id = ?",
                (campaign.id, key, pair),
            )

    def previous(self, name: str, reviewer: str, before: str | None = None) -> tuple[PairAssignment, Verdict] | None:
        """The pair this reviewer judged last before the pair of ``before`` (either side), with their verdict."""
        campaign = self.get(name)
        key = _reviewer_key(reviewer)
        mine = [verdict for verdict in self.verdicts(name) if name_key(verdict.reviewer) == key]
        mine.sort(key=lambda verdict: (verdict.decided_at, verdict.id))
        pair_named = {frozenset(pair): pair[0] for pair in self.pairs(name)}
        keys = [pair_named[frozenset(_sides(verdict))] for verdict in mine]
        before = self.pair_of(name, before) if before is not None else None
        if before is not None and before in keys:
            mine = mine[: keys.index(before)]
        if not mine:
            return None
        last = mine[-1]
        pair = keys[len(mine) - 1]
        assignment = self._assignment(campaign, pair, key)
        return replace(assignment, verdicts=assignment.verdicts - 1), last

    # -- what it found -----------------------------------------------------------------------------

    def verdicts(self, name: str) -> list[Verdict]:
        """Every verdict on the campaign's pairs, oldest first."""
        pairs = self.pairs(name)
        wanted = {frozenset(pair) for pair in pairs}
        candidates = self.store.verdicts([first for first, _ in pairs])
        return [verdict for verdict in candidates if frozenset(_sides(verdict)) in wanted]

    def progress(self, name: str) -> Progress:
        """As a review campaign's progress, counting pairs and verdicts."""
        campaign = self.get(name)
        wanted = campaign.reviews_per_output
        verdicts = self.verdicts(name)
        counts = Counter(frozenset(_sides(verdict)) for verdict in verdicts)
        pairs = [frozenset(pair) for pair in self.pairs(name)]
        with self.store.connection() as conn:
            skipped = conn.execute(
                "SELECT count(*) FROM campaign_skips WHERE campaign_id = ?", (campaign.id,)
            ).fetchone()[0]
        return Progress(
            outputs=len(pairs),
            complete=sum(counts[pair] >= wanted for pair in pairs),
            reviews=sum(min(counts[pair], wanted) for pair in pairs),
            wanted=len(pairs) * wanted,
            by_reviewer=dict(sorted(Counter(verdict.reviewer for verdict in verdicts).items())),
            skipped=skipped,
        )

    def tally(self, name: str) -> PairTally:
        """How often each run's model was preferred, tied or both poor, over every verdict of the campaign."""
        models = self.models(name)
        totals: Counter[str] = Counter()
        for _, _, outcomes in self.outcomes(name):
            totals.update(outcomes)
        return PairTally(models, {model: totals[model] for model in models}, totals["tie"], totals["both poor"])

    def outcomes(self, name: str) -> list[tuple[int, str, Counter[str]]]:
        """Per pair, in order: its position, its question, and how many verdicts preferred each run's model
        (by name), or found a ``"tie"`` or ``"both poor"``: the categories agreement is measured over."""
        pairs = self.pairs(name)
        models = self.models(name)
        side = {output_id: index for pair in pairs for index, output_id in enumerate(pair)}
        by_pair: dict[frozenset, Counter[str]] = {frozenset(pair): Counter() for pair in pairs}
        for verdict in self.verdicts(name):
            outcome = models[side[verdict.preferred]] if verdict.preferred else verdict.outcome.replace("_", " ")
            by_pair[frozenset(_sides(verdict))][outcome] += 1
        questions = [self.store.output(first).question for first, _ in pairs]
        return [
            (position, question, by_pair[frozenset(pair)])
            for position, (pair, question) in enumerate(zip(pairs, questions, strict=True), start=1)
        ]

    # -- adjudication ------------------------------------------------------------------------------

    def adjudicate(self, name: str, position: int, choice: str, adjudicator: str, note: str = "") -> Verdict:
        """Decide pair ``position`` (from 1) of a campaign its reviewers split on, beside their verdicts.

        ``choice`` is a key of :data:`VERDICT_CHOICES` with the first run's answer as answer 1 (an
        adjudicator sees the models). Deciding again replaces the decision. Returns it as a verdict.
        """
        campaign = self.get(name)
        pairs = self.pairs(name)
        if not 1 <= position <= len(pairs):
            raise AnnotationError(f"Give the number of a pair of the campaign, 1 to {len(pairs)}.")
        first, second = pairs[position - 1]
        decided = replace(
            Verdict.from_sides(first, second, choice, reviewer=adjudicator, blind=False), decided_at=_now()
        )
        with self.store.connection(write=True) as conn:
            conn.execute(
                "INSERT INTO campaign_pair_adjudications (campaign_id, first_output, outcome, preferred, note,"
                " adjudicator, decided_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (campaign_id, first_output)"
                " DO UPDATE SET outcome = excluded.outcome, preferred = excluded.preferred, note = excluded.note,"
                " adjudicator = excluded.adjudicator, decided_at = excluded.decided_at",
                (
                    campaign.id,
                    first,
                    decided.outcome,
                    decided.preferred,
                    note or "",
                    decided.reviewer,
                    decided.decided_at,
                ),
            )
        return decided

    def adjudications(self, name: str) -> dict[str, Verdict]:
        """The pair's name (its first run's output id) -> its adjudicator's verdict (the first run's answer first)."""
        campaign = self.get(name)
        with self.store.connection() as conn:
            rows = conn.execute(
                "SELECT NULL, min(a.first_output, p.second_output), max(a.first_output, p.second_output),"
                " a.first_output, a.outcome, a.preferred, 0, a.adjudicator, a.decided_at"
                " FROM campaign_pair_adjudications a JOIN campaign_pairs p"
                " ON p.campaign_id = a.campaign_id AND p.first_output = a.first_output WHERE a.campaign_id = ?",
                (campaign.id,),
            ).fetchall()
        return {row[3]: Verdict.from_row(row) for row in rows}

    def models(self, name: str) -> tuple[str, str]:
        """The two runs' models by name (told apart when both runs named the same model)."""
        first, second = self.pairs(name)[0]
        first_model = self.store.output(first).model.get("model", "first run")
        second_model = self.store.output(second).model.get("model", "second run")
        if first_model == second_model:
            return f"{first_model} (first run)", f"{second_model} (second run)"
        return first_model, second_model

    def _assignment(self, campaign: Campaign, pair: str, key: str) -> PairAssignment:
        with self.store.connection() as conn:
            position, second, correct = conn.execute(
                "SELECT position, second_output, correct_answer FROM campaign_pairs"
                " WHERE campaign_id = ? AND first_output = ?",
                (campaign.id, pair),
            ).fetchone()
        judged = [
            verdict
            for verdict in self.store.verdicts([pair])
            if {pair, second} == _sides(verdict) and name_key(verdict.reviewer) != key
        ]
        shown = [replace(self.store.output(output_id), correct_answer=correct) for output_id in (pair, second)]
        if campaign.blind and zlib.crc32(f"{key}\n{pair}".encode()) % 2:
            shown.reverse()
        return PairAssignment(campaign, shown[0], shown[1], position, len(judged), pair)


def _sides(verdict: Verdict) -> set[str]:
    return {verdict.output_a, verdict.output_b}
