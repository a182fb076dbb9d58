"""The SQLite schema of the annotation store and its migrations, each all or nothing.

``MIGRATIONS[n]`` upgrades a database from version n to n + 1 (version 0: an empty file); the
version is SQLite's ``PRAGMA user_version``. To change the schema, append a function and never
edit a released one: a data folder written by any earlier medvlm opens with every row.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from medvlm.annotations.records import AnnotationError, ordered_flags, to_json


def _create_schema_v1(conn: sqlite3.Connection) -> None:
    _execute_script(
        conn,
        """
        CREATE TABLE flags (
            name  TEXT PRIMARY KEY,
            label TEXT NOT NULL
        );
        CREATE TABLE outputs (
            output_id      TEXT PRIMARY KEY CHECK (output_id <> ''),
            image_sha256   TEXT NOT NULL CHECK (length(image_sha256) = 64),
            image_metadata TEXT NOT NULL,
            modality       TEXT,
            question       TEXT NOT NULL,
            options        TEXT NOT NULL,
            completion     TEXT NOT NULL,
            reasoning      TEXT NOT NULL,
            answer_text    TEXT,
            letter         TEXT,
            format_ok      INTEGER NOT NULL CHECK (format_ok IN (0, 1)),
            problem        TEXT,
            stop_reason    TEXT,
            model_id       TEXT NOT NULL,
            model          TEXT NOT NULL,
            settings       TEXT NOT NULL,
            prompt_style   TEXT NOT NULL,
            timing         TEXT,
            generated_at   TEXT NOT NULL
        );
        CREATE INDEX outputs_modality ON outputs (modality);
        CREATE INDEX outputs_model_id ON outputs (model_id);
        CREATE TABLE annotations (
            id             INTEGER PRIMARY KEY AUTOINCREMENT,
            output_id      TEXT NOT NULL REFERENCES outputs (output_id),
            reviewer       TEXT NOT NULL CHECK (reviewer <> ''),
            comment        TEXT NOT NULL,
            correct_answer TEXT,
            app_version    TEXT NOT NULL,
            created_at     TEXT NOT NULL,
            updated_at     TEXT NOT NULL,
            UNIQUE (output_id, reviewer)
        );
        CREATE INDEX annotations_reviewer ON annotations (reviewer);
        CREATE TABLE annotation_flags (
            annotation_id INTEGER NOT NULL REFERENCES annotations (id) ON DELETE CASCADE,
            flag          TEXT NOT NULL REFERENCES flags (name),
            PRIMARY KEY (annotation_id, flag)
        ) WITHOUT ROWID;
        CREATE INDEX annotation_flags_flag ON annotation_flags (flag, annotation_id);
        """,
    )


def _add_review_versions_v2(conn: sqlite3.Connection) -> None:
    """Every save of a review is kept as a version; existing reviews become their version 1."""
    _execute_script(
        conn,
        """
        CREATE TABLE annotation_versions (
            annotation_id  INTEGER NOT NULL REFERENCES annotations (id) ON DELETE CASCADE,
            version        INTEGER NOT NULL CHECK (version >= 1),
            flags          TEXT NOT NULL,
            comment        TEXT NOT NULL,
            correct_answer TEXT,
            app_version    TEXT NOT NULL,
            saved_at       TEXT NOT NULL,
            PRIMARY KEY (annotation_id, version)
        ) WITHOUT ROWID;
        """,
    )
    rows = conn.execute(
        "SELECT a.id, a.comment, a.correct_answer, a.app_version, a.updated_at,"
        " (SELECT group_concat(f.flag) FROM annotation_flags f WHERE f.annotation_id = a.id) FROM annotations a"
    ).fetchall()
    conn.executemany(
        "INSERT INTO annotation_versions VALUES (?, 1, ?, ?, ?, ?, ?)",
        [
            (id_, to_json(list(ordered_flags(flags))), comment, correct, version, saved)
            for id_, comment, correct, version, saved, flags in rows
        ],
    )


def _add_campaigns_v3(conn: sqlite3.Connection) -> None:
    """Review campaigns: a fixed set of outputs, k reviews wanted of each, handed out by lease."""
    _execute_script(
        conn,
        """
        CREATE TABLE campaigns (
            id                 INTEGER PRIMARY KEY AUTOINCREMENT,
            name               TEXT NOT NULL UNIQUE CHECK (name <> ''),
            guidelines         TEXT NOT NULL,
            reviews_per_output INTEGER NOT NULL CHECK (reviews_per_output >= 1),
            blind              INTEGER NOT NULL CHECK (blind IN (0, 1)),
            created_by         TEXT NOT NULL,
            created_at         TEXT NOT NULL
        );
        CREATE TABLE campaign_outputs (
            campaign_id    INTEGER NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
            output_id      TEXT NOT NULL REFERENCES outputs (output_id),
            position       INTEGER NOT NULL,
            correct_answer TEXT,
            PRIMARY KEY (campaign_id, output_id)
        ) WITHOUT ROWID;
        CREATE TABLE campaign_claims (
            campaign_id  INTEGER NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
            reviewer_key TEXT NOT NULL,
            output_id    TEXT NOT NULL,
            expires_at   REAL NOT NULL,
            PRIMARY KEY (campaign_id, reviewer_key)
        ) WITHOUT ROWID;
        CREATE INDEX campaign_claims_output ON campaign_claims (campaign_id, output_id);
        CREATE TABLE campaign_skips (
            campaign_id  INTEGER NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
            output_id    TEXT NOT NULL,
            reviewer_key TEXT NOT NULL,
            reason       TEXT NOT NULL,
            skipped_at   TEXT NOT NULL,
            PRIMARY KEY (campaign_id, output_id, reviewer_key)
        ) WITHOUT ROWID;
        """,
    )


def _add_marked_passages_v4(conn: sqlite3.Connection) -> None:
    """Passages of a completion a reviewer marked (spans), kept with every version of a review."""
    _execute_script(
        conn,
        """
        CREATE TABLE annotation_spans (
            annotation_id INTEGER NOT NULL REFERENCES annotations (id) ON DELETE CASCADE,
            start         INTEGER NOT NULL CHECK (start >= 0),
            "end"         INTEGER NOT NULL CHECK ("end" > start),
            label         TEXT NOT NULL,
            PRIMARY KEY (annotation_id, start, "end", label)
        ) WITHOUT ROWID;
        ALTER TABLE annotation_versions ADD COLUMN spans TEXT NOT NULL DEFAULT '[]';
        """,
    )


def _add_adjudications_v5(conn: sqlite3.Connection) -> None:
    """An adjudicator's decision on an output whose campaign reviewers disagreed, beside their reviews."""
    _execute_script(
        conn,
        """
        CREATE TABLE campaign_adjudications (
            campaign_id INTEGER NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
            output_id   TEXT NOT NULL,
            flags       TEXT NOT NULL,
            note        TEXT NOT NULL,
            adjudicator TEXT NOT NULL,
            decided_at  TEXT NOT NULL,
            PRIMARY KEY (campaign_id, output_id)
        ) WITHOUT ROWID;
        """,
    )


def _add_generated_campaigns_v6(conn: sqlite3.Connection) -> None:
    """Question types on outputs; campaigns whose answers are generated in medvlm from a dataset.

    ``campaign_questions`` holds a generated campaign's questions (their images are stored like
    an output's) from the start, so generation resumes from the store alone after an interruption;
    a question is answered once ``campaign_outputs`` has a row at its position.
    ``campaign_generation`` says which model and settings answer them.
    """
    _execute_script(
        conn,
        """
        ALTER TABLE outputs ADD COLUMN question_type TEXT;
        CREATE TABLE campaign_questions (
            campaign_id    INTEGER NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
            position       INTEGER NOT NULL CHECK (position >= 1),
            source_id      TEXT NOT NULL,
            question       TEXT NOT NULL,
            options        TEXT NOT NULL,
            correct_answer TEXT,
            image_sha256   TEXT NOT NULL,
            image_metadata TEXT NOT NULL,
            question_type  TEXT,
            PRIMARY KEY (campaign_id, position)
        ) WITHOUT ROWID;
        CREATE TABLE campaign_generation (
            campaign_id  INTEGER PRIMARY KEY REFERENCES campaigns (id) ON DELETE CASCADE,
            model        TEXT NOT NULL,
            settings     TEXT NOT NULL,
            prompt_style TEXT NOT NULL,
            batch_size   INTEGER NOT NULL CHECK (batch_size >= 1)
        );
        """,
    )


def _add_verdicts_v7(conn: sqlite3.Connection) -> None:
    """Pairwise verdicts: which of two answers to the same case a reviewer found better; comparison campaigns.

    A pair is unordered (``output_a < output_b``), so a verdict counts for the pair however the
    sides were shuffled; ``shown_first`` records which output was on the left. The verdict is
    kept in terms of outputs (``preferred``), never of sides, so it cannot be misread later.
    A comparison campaign (``campaigns.kind``) hands out ``campaign_pairs`` (the first run's
    output against the second's, on one question) instead of single outputs; its claims and
    skips name a pair by its first output.
    """
    _execute_script(
        conn,
        """
        CREATE TABLE verdicts (
            id          INTEGER PRIMARY KEY,
            output_a    TEXT NOT NULL REFERENCES outputs (output_id),
            output_b    TEXT NOT NULL REFERENCES outputs (output_id),
            shown_first TEXT NOT NULL,
            outcome     TEXT NOT NULL CHECK (outcome IN ('preferred', 'tie', 'both_poor')),
            preferred   TEXT,
            blind       INTEGER NOT NULL CHECK (blind IN (0, 1)),
            reviewer    TEXT NOT NULL,
            app_version TEXT NOT NULL,
            decided_at  TEXT NOT NULL,
            UNIQUE (output_a, output_b, reviewer),
            CHECK (output_a < output_b),
            CHECK (shown_first IN (output_a, output_b)),
            CHECK ((outcome = 'preferred') = (preferred IS NOT NULL)),
            CHECK (preferred IS NULL OR preferred IN (output_a, output_b))
        );
        CREATE INDEX verdicts_output_b ON verdicts (output_b);
        ALTER TABLE campaigns ADD COLUMN kind TEXT NOT NULL DEFAULT 'review' CHECK (kind IN ('review', 'comparison'));
        CREATE TABLE campaign_pairs (
            campaign_id    INTEGER NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
            position       INTEGER NOT NULL CHECK (position >= 1),
            first_output   TEXT NOT NULL REFERENCES outputs (output_id),
            second_output  TEXT NOT NULL REFERENCES outputs (output_id),
            correct_answer TEXT,
            PRIMARY KEY (campaign_id, first_output),
            UNIQUE (campaign_id, position),
            CHECK (first_output <> second_output)
        ) WITHOUT ROWID;
        """,
    )


def _add_verdict_versions_v8(conn: sqlite3.Connection) -> None:
    """Every save of a verdict is kept as a version, as reviews are; existing verdicts become their version 1.

    ``verdicts`` holds a reviewer's latest judgement of a pair (what counts); a changed mind never
    erases the earlier one.
    """
    _execute_script(
        conn,
        """
        CREATE TABLE verdict_versions (
            verdict_id  INTEGER NOT NULL REFERENCES verdicts (id),
            version     INTEGER NOT NULL CHECK (version >= 1),
            shown_first TEXT NOT NULL,
            outcome     TEXT NOT NULL CHECK (outcome IN ('preferred', 'tie', 'both_poor')),
            preferred   TEXT,
            blind       INTEGER NOT NULL CHECK (blind IN (0, 1)),
            app_version TEXT NOT NULL,
            decided_at  TEXT NOT NULL,
            PRIMARY KEY (verdict_id, version)
        ) WITHOUT ROWID;
        INSERT INTO verdict_versions
            SELECT id, 1, shown_first, outcome, preferred, blind, app_version, decided_at FROM verdicts;
        """,
    )


def _add_pair_adjudications_v9(conn: sqlite3.Connection) -> None:
    """An adjudicator's verdict on a comparison campaign's pair its reviewers split on, beside their verdicts.

    Kept in terms of outputs as verdicts are (``preferred``: NULL for a tie or both poor).
    """
    _execute_script(
        conn,
        """
        CREATE TABLE campaign_pair_adjudications (
            campaign_id  INTEGER NOT NULL,
            first_output TEXT NOT NULL,
            outcome      TEXT NOT NULL CHECK (outcome IN ('preferred', 'tie', 'both_poor')),
            preferred    TEXT,
            note         TEXT NOT NULL,
            adjudicator  TEXT NOT NULL,
            decided_at   TEXT NOT NULL,
            PRIMARY KEY (campaign_id, first_output),
            FOREIGN KEY (campaign_id, first_output) REFERENCES campaign_pairs (campaign_id, first_output)
                ON DELETE CASCADE,
            CHECK ((outcome = 'preferred') = (preferred IS NOT NULL))
        ) WITHOUT ROWID;
        """,
    )


def _reviews_per_session_v10(conn: sqlite3.Connection) -> None:
    """A review is one per (output, reviewer, ``session_key``): in name mode the key of the browser session that
    saved it, so someone typing a name already used elsewhere saves a review of their own instead of a version
    of the namesake's; ``''`` for signed-in reviewers and for every review stored before.

    SQLite cannot change a UNIQUE constraint in place, so ``annotations`` is rebuilt the documented way
    (new table, copy, drop, rename), keeping every id and the AUTOINCREMENT counter. The store runs this step
    with foreign keys off (a DROP with them on would cascade to the flags) and checks them afterwards.
    """
    (last_id,) = conn.execute(
        "SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'annotations'"
    ).fetchone()
    _execute_script(
        conn,
        """
        CREATE TABLE annotations_v10 (
            id             INTEGER PRIMARY KEY AUTOINCREMENT,
            output_id      TEXT NOT NULL REFERENCES outputs (output_id),
            reviewer       TEXT NOT NULL CHECK (reviewer <> ''),
            session_key    TEXT NOT NULL DEFAULT '',
            comment        TEXT NOT NULL,
            correct_answer TEXT,
            app_version    TEXT NOT NULL,
            created_at     TEXT NOT NULL,
            updated_at     TEXT NOT NULL,
            UNIQUE (output_id, reviewer, session_key)
        );
        INSERT INTO annotations_v10 (id, output_id, reviewer, comment, correct_answer, app_version, created_at,
                                     updated_at)
            SELECT id, output_id, reviewer, comment, correct_answer, app_version, created_at, updated_at
            FROM annotations;
        DROP TABLE annotations;
        ALTER TABLE annotations_v10 RENAME TO annotations;
        CREATE INDEX annotations_reviewer ON annotations (reviewer);
        """,
    )
    conn.execute("DELETE FROM sqlite_sequence WHERE name = 'annotations'")
    conn.execute(
        "INSERT INTO sqlite_sequence (name, seq) SELECT 'annotations', max(?, coalesce(max(id), 0)) FROM annotations",
        (last_id,),
    )


def _add_probe_answers_v11(conn: sqlite3.Connection) -> None:
    """Probes (:mod:`medvlm.probes`) re-ask an output's question; each answer is a machine annotation of it.

    Kept apart from ``annotations`` (a person's review): ``probed_by`` names the model that answered,
    never a person, so no failure rate counts a probe as a reviewer. A generated campaign may probe
    its outputs (``campaign_generation.probes``, the kinds as JSON) and show the results to its
    reviewers or not (``show_probes``).
    """
    _execute_script(
        conn,
        """
        CREATE TABLE probe_answers (
            output_id  TEXT NOT NULL REFERENCES outputs (output_id),
            kind       TEXT NOT NULL CHECK (kind IN ('blank', 'shuffle', 'rotate', 'no_think')),
            variant    TEXT NOT NULL,
            options    TEXT NOT NULL,
            completion TEXT NOT NULL,
            letter     TEXT,
            changed    INTEGER NOT NULL CHECK (changed IN (0, 1)),
            seconds    REAL NOT NULL,
            probed_by  TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (output_id, kind, variant)
        );
        ALTER TABLE campaign_generation ADD COLUMN probes TEXT NOT NULL DEFAULT '[]';
        ALTER TABLE campaign_generation ADD COLUMN show_probes INTEGER NOT NULL DEFAULT 1
            CHECK (show_probes IN (0, 1));
        """,
    )


def _probe_answers_unread_v12(conn: sqlite3.Connection) -> None:
    """``probe_answers.changed`` may be NULL: the probe's answer or the output's names no option, so it decides
    nothing (:func:`medvlm.probes.answer_changed`). Before, two unreadable answers were stored as "the same" (0).

    SQLite cannot drop a NOT NULL or CHECK constraint in place, so the table is rebuilt (new table, copy in rowid
    order, which keeps the order the probes were asked in, drop, rename); the copy writes NULL where either
    letter is missing and keeps every other row as it was.
    """
    _execute_script(
        conn,
        """
        CREATE TABLE probe_answers_v12 (
            output_id  TEXT NOT NULL REFERENCES outputs (output_id),
            kind       TEXT NOT NULL CHECK (kind IN ('blank', 'shuffle', 'rotate', 'no_think')),
            variant    TEXT NOT NULL,
            options    TEXT NOT NULL,
            completion TEXT NOT NULL,
            letter     TEXT,
            changed    INTEGER CHECK (changed IS NULL OR (changed IN (0, 1) AND letter IS NOT NULL)),
            seconds    REAL NOT NULL,
            probed_by  TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (output_id, kind, variant)
        );
        INSERT INTO probe_answers_v12
            SELECT p.output_id, p.kind, p.variant, p.options, p.completion, p.letter,
                   CASE WHEN p.letter IS NULL OR o.letter IS NULL THEN NULL ELSE p.changed END,
                   p.seconds, p.probed_by, p.created_at
            FROM probe_answers AS p LEFT JOIN outputs AS o USING (output_id)
            ORDER BY p.rowid;
        DROP TABLE probe_answers;
        ALTER TABLE probe_answers_v12 RENAME TO probe_answers;
        """,
    )


def _execute_script(conn: sqlite3.Connection, script: str) -> None:
    """Run each statement of ``script`` inside the caller's transaction.

    Not ``executescript``: it commits the open transaction first, so a crash or a concurrent
    opener could see half a schema (tables without the version that says they exist).
    """
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            conn.execute(statement)
            statement = ""
    if statement.strip():
        raise ValueError(f"Incomplete SQL statement in a migration: {statement.strip()[:60]}")


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    _create_schema_v1,
    _add_review_versions_v2,
    _add_campaigns_v3,
    _add_marked_passages_v4,
    _add_adjudications_v5,
    _add_generated_campaigns_v6,
    _add_verdicts_v7,
    _add_verdict_versions_v8,
    _add_pair_adjudications_v9,
    _reviews_per_session_v10,
    _add_probe_answers_v11,
    _probe_answers_unread_v12,
)
"""``MIGRATIONS[n]`` upgrades a database from version n to n + 1 (version 0: empty file).

To change the schema, append a function; never edit a released one. All pending steps and the
new version number run in one ``BEGIN IMMEDIATE`` transaction (statements run one by one, never
through ``executescript``, which would commit half-way), so an interrupted upgrade leaves the
previous version intact and concurrent openers of a fresh folder wait for the first one.
"""

SCHEMA_VERSION = len(MIGRATIONS)


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` ... COMMIT, or ROLLBACK on any exception (``with conn`` semantics)."""
    conn.execute("BEGIN IMMEDIATE")
    with conn:  # commits on success, rolls back on an exception
        yield


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the schema to :data:`SCHEMA_VERSION`, inside the caller's transaction.

    The caller turns foreign keys off first (a step may rebuild a table: dropping the old one with
    them on would cascade), and this checks them once every step has run: a violation rolls it all back.
    """
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise AnnotationError(
            f"This annotation store was written by a newer medvlm (schema {version}, this one reads up to "
            f"{SCHEMA_VERSION}); upgrade medvlm to use it."
        )
    for step in MIGRATIONS[version:]:
        step(conn)
    broken = conn.execute("PRAGMA foreign_key_check").fetchone()
    if broken is not None:
        raise AnnotationError(f"Upgrading the annotation store would break a reference ({broken}); nothing changed.")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def set_wal(conn: sqlite3.Connection, timeout_s: float = 30.0) -> str:
    """``PRAGMA journal_mode=WAL``, retried while another process holds the lock.

    Switching a fresh file to WAL needs an exclusive lock, and SQLite answers "database is locked"
    at once instead of waiting on the busy timeout when several processes open a new folder together.
    """
    deadline = time.monotonic() + timeout_s
    delay = 0.01
    while True:
        try:
            return conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) and "busy" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
