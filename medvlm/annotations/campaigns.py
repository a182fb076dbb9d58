"""Review campaigns: many reviewers, one fixed set of model outputs, every output reviewed k times.

A campaign is a name, guidelines, the number of reviews wanted per output (k), a blind switch
(hide the model and the correct answer from reviewers) and an ordered set of stored outputs, for
instance a ``train.evaluate`` run's samples, so every reviewer sees the same completion.

**Who reviews what.** :meth:`Campaigns.next_output` hands a reviewer an output they have neither
reviewed nor skipped and that is *taken* fewer than k times, least-taken first, then in the
campaign's order. *Taken* counts the output's reviews plus the live claims of other reviewers: a
claim is a lease of :data:`LEASE_S` seconds, renewed each time the reviewer asks again, so a
reviewer who walks away frees their output after the lease, and two reviewers working at once
never hold the same output when it has one review left to give. A reviewer holds at most one
claim per campaign. Both the choice and the claim happen in one ``BEGIN IMMEDIATE`` transaction,
so concurrent reviewers (threads or processes) are served one after the other.

**Submitting.** :meth:`Campaigns.submit` stores the review through
:meth:`~medvlm.annotations.store.AnnotationStore.add`, whose transaction first checks the claim
(``within``): the review counts only while the output is still the reviewer's, or while it has
room left (a lease that ran out but was not taken over). So no output ever gets more than k
reviews, and a review once submitted is durable like every other one. A reviewer editing their
own earlier review of an output is always allowed (it adds no review).

Reviews are the store's: an output that is in two campaigns, or was also reviewed outside one,
counts every review of it once.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from PIL import Image

from medvlm.annotations.records import (
    FLAGS,
    Annotation,
    AnnotationError,
    ModelOutput,
    Review,
    filter_metadata,
    image_relpath,
    image_sha256,
)
from medvlm.annotations.store import AnnotationStore
from medvlm.user_text import name_key, normalize_name

LEASE_S = 30 * 60
"""How long a handed-out output stays the reviewer's without their asking again."""
MAX_REVIEWS_PER_OUTPUT = 50


@dataclass(frozen=True)
class Campaign:
    """A campaign's settings (its outputs are listed by :meth:`Campaigns.output_ids`)."""

    id: int
    name: str
    guidelines: str
    reviews_per_output: int
    blind: bool
    created_by: str
    created_at: str
    kind: str = "review"
    """``"review"`` (outputs, reviewed k times) or ``"comparison"`` (pairs of outputs, judged k times:
    :mod:`medvlm.annotations.comparison_campaigns`)."""


@dataclass(frozen=True)
class Assignment:
    """An output handed to a reviewer: what to show, and where it stands."""

    campaign: Campaign
    output: ModelOutput
    """The output with the campaign's correct answer (hide both it and the model when ``campaign.blind``)."""
    position: int
    """Its place in the campaign, from 1."""
    reviews: int
    """Reviews it has so far (not counting this reviewer's, which it has none of)."""


@dataclass(frozen=True)
class Disagreement:
    """An output whose reviewers did not all set the same flags: one to adjudicate."""

    output_id: str
    position: int
    question: str
    reviews: int
    votes: dict[str, int]
    """Flag -> how many of the output's reviewers set it (only the flags some, but not all, set)."""
    adjudicated: tuple[str, ...] | None
    """The flags an adjudicator decided, once one has."""


@dataclass(frozen=True)
class Progress:
    """How far a campaign is, overall and per reviewer."""

    outputs: int
    complete: int
    """Outputs with k reviews."""
    reviews: int
    """Reviews counted towards k (at most k per output)."""
    wanted: int
    """outputs x k."""
    by_reviewer: dict[str, int]
    """Reviews per reviewer in this campaign."""
    skipped: int


@dataclass(frozen=True)
class PlannedQuestion:
    """A dataset's question in a campaign whose answers medvlm generates (:meth:`Campaigns.plan`)."""

    source_id: str
    """The dataset row's id (kept in the export, so a row can be traced back)."""
    image: Image.Image
    """The rendered, de-identified image, as the model will see it."""
    image_metadata: dict[str, Any]
    """``SafeMetadata.to_dict()`` (the dataset's modality where the image names none)."""
    question: str
    options: list[str]
    correct_answer: str | None
    question_type: str | None = None
    position: int = 0
    """Its place in the campaign, from 1 (set when read back; ignored by :meth:`Campaigns.plan`)."""


@dataclass(frozen=True)
class Generation:
    """Who answers a generated campaign's questions, with what settings, and how far they are."""

    model: str
    """The model's ``describe()["model"]``: only that model continues the campaign."""
    settings: dict[str, Any]
    """``GenerationSettings.to_dict()``."""
    prompt_style: str
    batch_size: int
    planned: int
    answered: int
    probes: tuple[str, ...] = ()
    """The probes run on every answer (:mod:`medvlm.probes`), as part of the generation."""
    show_probes: bool = True
    """Whether reviewers see the probes' results beside the reasoning."""
    probed: int = 0
    """Answers whose probes are stored."""

    @property
    def done(self) -> bool:
        return self.answered >= self.planned and (not self.probes or self.probed >= self.planned)


class Campaigns:
    """The campaigns of one data folder, over its :class:`AnnotationStore`."""

    def __init__(self, store: AnnotationStore) -> None:
        self.store = store

    # -- setting up --------------------------------------------------------------------------------

    def create(
        self,
        name: str,
        outputs: Sequence[ModelOutput],
        *,
        reviews_per_output: int,
        guidelines: str = "",
        blind: bool = False,
        created_by: str,
    ) -> Campaign:
        """A new campaign over ``outputs`` (stored once; their correct answers are kept per campaign)."""
        name = _checked_name(name, reviews_per_output)
        if not outputs:
            raise AnnotationError("A campaign needs at least one model output to review.")
        ids = [output.output_id for output in outputs]
        if len(set(ids)) != len(ids):
            raise AnnotationError("The same model output appears twice in the campaign's set.")
        with self.store.connection(write=True) as conn:
            self.store.add_outputs(outputs, conn)
            campaign_id = _insert_campaign(conn, name, guidelines, reviews_per_output, blind, created_by)
            conn.executemany(
                "INSERT INTO campaign_outputs (campaign_id, output_id, position, correct_answer) VALUES (?, ?, ?, ?)",
                [
                    (campaign_id, output.output_id, position, output.correct_answer or None)
                    for position, output in enumerate(outputs, start=1)
                ],
            )
        return self.get(name)

    def plan(
        self,
        name: str,
        questions: Iterable[PlannedQuestion],
        *,
        model: str,
        settings: dict[str, Any],
        prompt_style: str,
        batch_size: int,
        reviews_per_output: int,
        guidelines: str = "",
        blind: bool = False,
        created_by: str,
        probes: Sequence[str] = (),
        show_probes: bool = True,
    ) -> Campaign:
        """A new campaign over a dataset's questions, whose answers ``model`` will generate.

        The questions and their images are stored now, in one transaction, so that generating
        the answers (:func:`medvlm.campaign_generation.generate_answers`, which adds them with
        :meth:`add_answers`) can stop at any point and resume from the store alone. Reviewers are
        handed nothing until every question has its answer: the set they review is fixed.
        ``questions`` may be a generator: each image is stored (by content hash, outside the
        transaction) as it comes, so a large dataset's images are never all in memory at once.
        """
        name = _checked_name(name, reviews_per_output)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise AnnotationError(f"The batch size must be a whole number of at least 1 (got {batch_size!r}).")
        rows = []
        for position, question in enumerate(questions, start=1):
            sha = image_sha256(question.image)
            self.store.save_image(question.image, sha)
            rows.append(
                (
                    position,
                    str(question.source_id),
                    question.question,
                    json.dumps(list(question.options), ensure_ascii=False),
                    question.correct_answer or None,
                    sha,
                    json.dumps(filter_metadata(question.image_metadata), sort_keys=True),
                    question.question_type,
                )
            )
        if not rows:
            raise AnnotationError("A campaign needs at least one question to answer and review.")
        with self.store.connection(write=True) as conn:
            campaign_id = _insert_campaign(conn, name, guidelines, reviews_per_output, blind, created_by)
            conn.executemany(
                "INSERT INTO campaign_questions (campaign_id, position, source_id, question, options, correct_answer,"
                " image_sha256, image_metadata, question_type) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(campaign_id, *row) for row in rows],
            )
            conn.execute(
                "INSERT INTO campaign_generation (campaign_id, model, settings, prompt_style, batch_size, probes,"
                " show_probes) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    campaign_id,
                    model,
                    json.dumps(settings, sort_keys=True),
                    prompt_style,
                    batch_size,
                    json.dumps(list(probes)),
                    int(show_probes),
                ),
            )
        return self.get(name)

    def check_new(self, name: str, reviews_per_output: int) -> str:
        """The name a new campaign would get, after checking it, k and that no campaign has it yet.

        For callers about to do something long first (load a model, read a dataset's images):
        :meth:`create` and :meth:`plan` check again in their own transaction.
        """
        name = _checked_name(name, reviews_per_output)
        with self.store.connection() as conn:
            _refuse_taken(conn, name)
        return name

    def generation(self, name: str) -> Generation | None:
        """How a generated campaign's answers are made and how many exist; None for a campaign made from a run."""
        return self._generation(self.get(name))

    def _generation(self, campaign: Campaign) -> Generation | None:
        with self.store.connection() as conn:
            row = conn.execute(
                "SELECT g.model, g.settings, g.prompt_style, g.batch_size,"
                " (SELECT count(*) FROM campaign_questions q WHERE q.campaign_id = g.campaign_id),"
                " (SELECT count(*) FROM campaign_outputs co WHERE co.campaign_id = g.campaign_id),"
                " g.probes, g.show_probes,"
                " (SELECT count(*) FROM campaign_outputs co WHERE co.campaign_id = g.campaign_id"
                "  AND EXISTS (SELECT 1 FROM probe_answers p WHERE p.output_id = co.output_id))"
                " FROM campaign_generation g WHERE g.campaign_id = ?",
                (campaign.id,),
            ).fetchone()
        if row is None:
            return None
        model, settings, prompt_style, batch_size, planned, answered, probes, show, probed = row
        return Generation(
            model, json.loads(settings), prompt_style, batch_size, planned, answered, tuple(json.loads(probes)),
            bool(show), probed,
        )  # fmt: skip

    def unprobed_outputs(self, name: str) -> list[ModelOutput]:
        """The campaign's answers that have no probe answers stored yet, in the campaign's order."""
        campaign = self.get(name)
        with self.store.connection() as conn:
            rows = conn.execute(
                "SELECT co.output_id FROM campaign_outputs co WHERE co.campaign_id = ? AND NOT EXISTS"
                " (SELECT 1 FROM probe_answers p WHERE p.output_id = co.output_id) ORDER BY co.position",
                (campaign.id,),
            ).fetchall()
        return [self.store.output(output_id) for (output_id,) in rows]

    def output_images(self, name: str) -> list[tuple[str, str, str | None]]:
        """Each answer's (output id, image hash, modality): the pool its shuffled-image probes draw partners from."""
        campaign = self.get(name)
        with self.store.connection() as conn:
            return [
                tuple(row)
                for row in conn.execute(
                    "SELECT o.output_id, o.image_sha256, o.modality FROM campaign_outputs co"
                    " JOIN outputs o ON o.output_id = co.output_id WHERE co.campaign_id = ? ORDER BY co.position",
                    (campaign.id,),
                )
            ]

    def pending_questions(self, name: str) -> list[PlannedQuestion]:
        """The questions of a generated campaign that have no answer yet, in the campaign's order."""
        campaign = self.get(name)
        with self.store.connection() as conn:
            rows = conn.execute(
                "SELECT q.position, q.source_id, q.question, q.options, q.correct_answer, q.image_sha256,"
                " q.image_metadata, q.question_type FROM campaign_questions q WHERE q.campaign_id = ?"
                " AND NOT EXISTS (SELECT 1 FROM campaign_outputs co WHERE co.campaign_id = q.campaign_id"
                " AND co.position = q.position) ORDER BY q.position",
                (campaign.id,),
            ).fetchall()
        pending = []
        for position, source_id, question, options, correct, sha, metadata, question_type in rows:
            with Image.open(self.store.data_dir / image_relpath(sha)) as image:
                picture = image.convert("RGB")
            pending.append(
                PlannedQuestion(
                    source_id,
                    picture,
                    json.loads(metadata),
                    question,
                    json.loads(options),
                    correct,
                    question_type,
                    position,
                )
            )
        return pending

    def add_answers(self, name: str, answers: Sequence[tuple[int, ModelOutput]]) -> None:
        """Store generated outputs as the answers to the questions at these positions, in one transaction.

        A position already answered is refused (nothing is stored): two generators working on
        one campaign at once would otherwise give a question two answers.
        """
        campaign = self.get(name)
        with self.store.connection(write=True) as conn:
            for position, output in answers:
                planned = conn.execute(
                    "SELECT correct_answer FROM campaign_questions WHERE campaign_id = ? AND position = ?",
                    (campaign.id, position),
                ).fetchone()
                if planned is None:
                    raise AnnotationError(f"The campaign {campaign.name!r} has no question {position} to answer.")
                if conn.execute(
                    "SELECT 1 FROM campaign_outputs WHERE campaign_id = ? AND position = ?", (campaign.id, position)
                ).fetchone():
                    raise AnnotationError(
                        f"Question {position} of {campaign.name!r} is already answered (is another generation "
                        "of this campaign running?)."
                    )
                self.store.add_outputs([output], conn)
                conn.execute(
                    "INSERT INTO campaign_outputs (campaign_id, output_id, position, correct_answer)"
                    " VALUES (?, ?, ?, ?)",
                    (campaign.id, output.output_id, position, planned[0]),
                )

    def get(self, name: str) -> Campaign:
        with self.store.connection() as conn:
            row = conn.execute(f"SELECT {_CAMPAIGN_COLUMNS} FROM campaigns WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise AnnotationError(f"There is no campaign called {name!r}.")
        return _campaign(row)

    def all(self) -> list[Campaign]:
        """Every campaign, newest first."""
        with self.store.connection() as conn:
            rows = conn.execute(f"SELECT {_CAMPAIGN_COLUMNS} FROM campaigns ORDER BY id DESC").fetchall()
        return [_campaign(row) for row in rows]

    def set_guidelines(self, name: str, guidelines: str) -> Campaign:
        with self.store.connection(write=True) as conn:
            changed = conn.execute("UPDATE campaigns SET guidelines = ? WHERE name = ?", (guidelines, name)).rowcount
        if not changed:
            raise AnnotationError(f"There is no campaign called {name!r}.")
        return self.get(name)

    def output_ids(self, name: str) -> list[str]:
        campaign = self.get(name)
        with self.store.connection() as conn:
            rows = conn.execute(
                "SELECT output_id FROM campaign_outputs WHERE campaign_id = ? ORDER BY position", (campaign.id,)
            ).fetchall()
        return [output_id for (output_id,) in rows]

    # -- the reviewer's loop -----------------------------------------------------------------------

    def next_output(self, name: str, reviewer: str, *, now: float | None = None) -> Assignment | None:
        """Claim (or keep) an output for ``reviewer``; None when nothing is left for them to review.

        Refused while a generated campaign still has questions without an answer.
        """
        campaign = self.get(name)
        if campaign.kind == "comparison":
            raise AnnotationError(
                f"{campaign.name!r} is a comparison campaign: its pairs of answers are judged side by side, "
                "not reviewed one by one."
            )
        generation = self._generation(campaign)
        if generation is not None and not generation.done:
            so_far = (
                f"{generation.answered} of {generation.planned}"
                + (f" answered, {generation.probed} probed" if generation.probes else "")
                + " so far"
            )
            raise AnnotationError(
                f"The campaign {campaign.name!r} is not ready: its answers are still being generated "
                f"({so_far}). An administrator continues the "
                f"generation (medvlm campaign generate {campaign.name!r}, or the set-up panel)."
            )
        key = _reviewer_key(reviewer)
        now = time.time() if now is None else now
        with self.store.connection(write=True) as conn:
            _with_name_key(conn)
            conn.execute("DELETE FROM campaign_claims WHERE campaign_id = ? AND expires_at <= ?", (campaign.id, now))
            held = conn.execute(
                "SELECT output_id FROM campaign_claims WHERE campaign_id = ? AND reviewer_key = ?",
                (campaign.id, key),
            ).fetchone()
            if held is not None and _reviewed_by(conn, held[0], key):
                conn.execute(  # reviewed outside the loop since: the claim is spent
                    "DELETE FROM campaign_claims WHERE campaign_id = ? AND reviewer_key = ?", (campaign.id, key)
                )
                held = None
            if held is None:
                chosen = conn.execute(
                    f"""SELECT co.output_id FROM campaign_outputs co
                        WHERE co.campaign_id = :campaign
                          AND NOT EXISTS (SELECT 1 FROM annotations a
                                          WHERE a.output_id = co.output_id AND name_key(a.reviewer) = :key)
                          AND NOT EXISTS (SELECT 1 FROM campaign_skips s WHERE s.campaign_id = co.campaign_id
                                          AND s.output_id = co.output_id AND s.reviewer_key = :key)
                          AND {_TAKEN} < :wanted
                        ORDER BY {_TAKEN}, co.position LIMIT 1""",
                    {"campaign": campaign.id, "key": key, "now": now, "wanted": campaign.reviews_per_output},
                ).fetchone()
                if chosen is None:
                    return None
                output_id = chosen[0]
            else:
                output_id = held[0]
            conn.execute(
                "INSERT INTO campaign_claims (campaign_id, reviewer_key, output_id, expires_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (campaign_id, reviewer_key) DO UPDATE SET output_id = excluded.output_id,"
                " expires_at = excluded.expires_at",
                (campaign.id, key, output_id, now + LEASE_S),
            )
            position, correct, reviews = conn.execute(
                "SELECT co.position, co.correct_answer,"
                " (SELECT count(*) FROM annotations a WHERE a.output_id = co.output_id)"
                " FROM campaign_outputs co WHERE co.campaign_id = ? AND co.output_id = ?",
                (campaign.id, output_id),
            ).fetchone()
        output = replace(self.store.output(output_id), correct_answer=correct)
        return Assignment(campaign=campaign, output=output, position=position, reviews=reviews)

    def previous(self, name: str, reviewer: str, before: str | None = None) -> tuple[Assignment, Annotation] | None:
        """The output this reviewer reviewed last in the campaign before ``before`` (to look at or change).

        Going back claims nothing: the output is already theirs to edit (an edit adds no review),
        and the output they were handed stays held for them.
        """
        campaign = self.get(name)
        key = _reviewer_key(reviewer)
        mine = [annotation for annotation in self.annotations(name) if name_key(annotation.reviewer) == key]
        mine.sort(key=lambda annotation: (annotation.updated_at, annotation.id))
        if before is not None and any(annotation.output_id == before for annotation in mine):
            mine = mine[: [annotation.output_id for annotation in mine].index(before)]
        if not mine:
            return None
        last = mine[-1]
        with self.store.connection() as conn:
            position, correct = conn.execute(
                "SELECT position, correct_answer FROM campaign_outputs WHERE campaign_id = ? AND output_id = ?",
                (campaign.id, last.output_id),
            ).fetchone()
            reviews = conn.execute(
                "SELECT count(*) FROM annotations WHERE output_id = ?", (last.output_id,)
            ).fetchone()
        output = replace(self.store.output(last.output_id), correct_answer=correct)
        return Assignment(campaign=campaign, output=output, position=position, reviews=reviews[0] - 1), last

    def submit(
        self,
        name: str,
        reviewer: str,
        output_id: str,
        review: Review,
        *,
        now: float | None = None,
        session_key: str = "",
    ) -> Annotation:
        """Store ``review`` of ``output_id`` for the campaign, if the output is still the reviewer's to review.

        ``session_key`` is the store's (:meth:`AnnotationStore.add`): in name mode a namesake's review is
        never changed from another browser tab; outputs are still handed out by name (a name reviews each once).

        Refused (:class:`AnnotationError`, nothing stored) when the output is not in the campaign,
        or when the reviewer's claim ran out and the output has since been given its k reviews.
        """
        campaign = self.get(name)
        key = _reviewer_key(reviewer)
        now = time.time() if now is None else now
        if _reviewer_key(review.reviewer) != key:
            raise AnnotationError("A review in a campaign is saved by the reviewer it was handed to.")

        with self.store.connection() as conn:
            in_campaign = conn.execute(
                "SELECT correct_answer FROM campaign_outputs WHERE campaign_id = ? AND output_id = ?",
                (campaign.id, output_id),
            ).fetchone()
        if in_campaign is None:
            raise AnnotationError(f"That model output is not part of the campaign {campaign.name!r}.")

        def still_theirs(conn: sqlite3.Connection) -> None:
            _with_name_key(conn)
            held = conn.execute(
                "SELECT 1 FROM campaign_claims WHERE campaign_id = ? AND reviewer_key = ? AND output_id = ?"
                " AND expires_at > ?",
                (campaign.id, key, output_id, now),
            ).fetchone()
            if held is None and not _reviewed_by(conn, output_id, key):
                taken = conn.execute(
                    f"SELECT {_TAKEN} FROM campaign_outputs co WHERE co.campaign_id = :campaign"
                    " AND co.output_id = :output",
                    {"campaign": campaign.id, "output": output_id, "key": key, "now": now},
                ).fetchone()[0]
                if taken >= campaign.reviews_per_output:
                    raise AnnotationError(
                        "This review was not saved: your hold on this output ran out and it has since received "
                        f"its {campaign.reviews_per_output} review(s). Ask for the next output."
                    )
            conn.execute("DELETE FROM campaign_claims WHERE campaign_id = ? AND reviewer_key = ?", (campaign.id, key))

        output = replace(self.store.output(output_id), correct_answer=in_campaign[0])  # the run's, not the reader's
        annotation, _ = self.store.add(output, review, within=still_theirs, session_key=session_key)
        return annotation

    def skip(self, name: str, reviewer: str, output_id: str, reason: str) -> None:
        """The reviewer passes on this output (with a reason): it is not offered to them again."""
        campaign = self.get(name)
        key = _reviewer_key(reviewer)
        reason = " ".join(str(reason or "").split())
        if not reason:
            raise AnnotationError("Say why you skip this output (for instance: image unreadable).")
        with self.store.connection(write=True) as conn:
            if not conn.execute(
                "SELECT 1 FROM campaign_outputs WHERE campaign_id = ? AND output_id = ?", (campaign.id, output_id)
            ).fetchone():
                raise AnnotationError(f"That model output is not part of the campaign {campaign.name!r}.")
            conn.execute(
                "INSERT INTO campaign_skips (campaign_id, output_id, reviewer_key, reason, skipped_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET reason = excluded.reason",
                (campaign.id, output_id, key, reason, _now()),
            )
            conn.execute(
                "DELETE FROM campaign_claims WHERE campaign_id = ? AND reviewer_key = ? AND output_id = ?",
                (campaign.id, key, output_id),
            )

    # -- adjudication ------------------------------------------------------------------------------

    def disagreements(self, name: str) -> list[Disagreement]:
        """The outputs reviewed by two or more people who did not all set the same flags, in campaign order."""
        campaign = self.get(name)
        decided = self.adjudications(name)
        with self.store.connection() as conn:
            positions = dict(
                conn.execute(
                    "SELECT output_id, position FROM campaign_outputs WHERE campaign_id = ?", (campaign.id,)
                ).fetchall()
            )
        by_output: dict[str, list[Annotation]] = {}
        for annotation in self.annotations(name):
            by_output.setdefault(annotation.output_id, []).append(annotation)
        found = []
        for output_id, reviews in by_output.items():
            if len(reviews) < 2:
                continue
            votes = {flag: sum(flag in review.flags for review in reviews) for flag in FLAGS}
            split = {flag: count for flag, count in votes.items() if 0 < count < len(reviews)}
            if split:
                found.append(
                    Disagreement(
                        output_id,
                        positions[output_id],
                        reviews[0].question,
                        len(reviews),
                        split,
                        decided.get(output_id),
                    )
                )
        return sorted(found, key=lambda disagreement: disagreement.position)

    def adjudicate(self, name: str, output_id: str, flags: Sequence[str], adjudicator: str, note: str = "") -> None:
        """Store the adjudicated flags of an output beside its individual reviews (which stay as they are)."""
        campaign = self.get(name)
        chosen = Review(adjudicator, tuple(flags), note or "").flags or ()  # the same checks as a review's flags
        adjudicator = normalize_name(adjudicator, error=AnnotationError)
        with self.store.connection(write=True) as conn:
            if not conn.execute(
                "SELECT 1 FROM campaign_outputs WHERE campaign_id = ? AND output_id = ?", (campaign.id, output_id)
            ).fetchone():
                raise AnnotationError(f"That model output is not part of the campaign {campaign.name!r}.")
            conn.execute(
                "INSERT INTO campaign_adjudications (campaign_id, output_id, flags, note, adjudicator, decided_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (campaign_id, output_id) DO UPDATE SET flags = excluded.flags,"
                " note = excluded.note, adjudicator = excluded.adjudicator, decided_at = excluded.decided_at",
                (campaign.id, output_id, json.dumps(list(chosen)), note or "", adjudicator, _now()),
            )

    def adjudications(self, name: str) -> dict[str, tuple[str, ...]]:
        """Output id -> the flags its adjudicator decided."""
        campaign = self.get(name)
        with self.store.connection() as conn:
            rows = conn.execute(
                "SELECT output_id, flags FROM campaign_adjudications WHERE campaign_id = ?", (campaign.id,)
            ).fetchall()
        return {output_id: tuple(json.loads(flags)) for output_id, flags in rows}

    # -- progress ----------------------------------------------------------------------------------

    def annotations(self, name: str) -> list[Annotation]:
        """Every review of the campaign's outputs, in the campaign's order, then oldest first."""
        return self.store.reviews_of(self.output_ids(name))

    def progress(self, name: str) -> Progress:
        """How far a review campaign is (a comparison campaign's: :meth:`ComparisonCampaigns.progress`)."""
        campaign = self.get(name)
        wanted = campaign.reviews_per_output
        with self.store.connection() as conn:
            counts = [
                count
                for (count,) in conn.execute(
                    "SELECT (SELECT count(*) FROM annotations a WHERE a.output_id = co.output_id)"
                    " FROM campaign_outputs co WHERE co.campaign_id = ?",
                    (campaign.id,),
                )
            ]
            by_reviewer = dict(
                conn.execute(
                    "SELECT a.reviewer, count(*) FROM annotations a JOIN campaign_outputs co"
                    " ON co.output_id = a.output_id WHERE co.campaign_id = ? GROUP BY a.reviewer ORDER BY a.reviewer",
                    (campaign.id,),
                ).fetchall()
            )
            skipped = conn.execute(
                "SELECT count(*) FROM campaign_skips WHERE campaign_id = ?", (campaign.id,)
            ).fetchone()[0]
        return Progress(
            outputs=len(counts),
            complete=sum(count >= wanted for count in counts),
            reviews=sum(min(count, wanted) for count in counts),
            wanted=len(counts) * wanted,
            by_reviewer=by_reviewer,
            skipped=skipped,
        )


_CAMPAIGN_COLUMNS = "id, name, guidelines, reviews_per_output, blind, created_by, created_at, kind"

_TAKEN = """((SELECT count(*) FROM annotations a WHERE a.output_id = co.output_id)
           + (SELECT count(*) FROM campaign_claims c WHERE c.campaign_id = co.campaign_id
              AND c.output_id = co.output_id AND c.reviewer_key <> :key AND c.expires_at > :now))"""
"""How many of its k an output has given away: its reviews, plus the live claims of other reviewers."""


def _checked_name(name: str, reviews_per_output: int) -> str:
    """The campaign's name, spaces collapsed, after checking it and k."""
    name = " ".join(str(name).split())
    if not name:
        raise AnnotationError("Give the campaign a name.")
    if not isinstance(reviews_per_output, int) or not 1 <= reviews_per_output <= MAX_REVIEWS_PER_OUTPUT:
        raise AnnotationError(
            f"The reviews wanted per output must be a whole number from 1 to {MAX_REVIEWS_PER_OUTPUT} "
            f"(got {reviews_per_output!r})."
        )
    return name


def _refuse_taken(conn: sqlite3.Connection, name: str) -> None:
    if conn.execute("SELECT 1 FROM campaigns WHERE name = ?", (name,)).fetchone():
        raise AnnotationError(f"There is already a campaign called {name!r}.")


def _insert_campaign(
    conn: sqlite3.Connection,
    name: str,
    guidelines: str,
    reviews_per_output: int,
    blind: bool,
    created_by: str,
    kind: str = "review",
) -> int:
    _refuse_taken(conn, name)
    return conn.execute(
        "INSERT INTO campaigns (name, guidelines, reviews_per_output, blind, created_by, created_at, kind)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (name, guidelines, reviews_per_output, int(blind), created_by, _now(), kind),
    ).lastrowid


def _campaign(row: Sequence) -> Campaign:
    campaign_id, name, guidelines, reviews, blind, created_by, created_at, kind = row
    return Campaign(campaign_id, name, guidelines, reviews, bool(blind), created_by, created_at, kind)


def _reviewer_key(reviewer: str) -> str:
    return name_key(normalize_name(reviewer))


def _with_name_key(conn: sqlite3.Connection) -> None:
    """``name_key(reviewer)`` in SQL: the store compares reviewer names case-blind, so must a campaign."""
    conn.create_function("name_key", 1, name_key, deterministic=True)


def _reviewed_by(conn: sqlite3.Connection, output_id: str, key: str) -> bool:
    return (
        conn.execute(
            "SELECT 1 FROM annotations WHERE output_id = ? AND name_key(reviewer) = ?", (output_id, key)
        ).fetchone()
        is not None
    )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
