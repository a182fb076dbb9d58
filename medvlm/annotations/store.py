"""The annotation store: reviewers' flags on model outputs in one data folder, never lost, never identifying.

See :mod:`medvlm.annotations` for the layout of a data folder, the durability rules and the
privacy rules; the schema and its migrations are in :mod:`medvlm.annotations.schema`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager, nullcontext
from datetime import datetime, timezone
from io import BytesIO
from pathlib import Path
from typing import Any

from PIL import Image

import medvlm
from medvlm.annotations.exports import export_jsonl, export_parquet
from medvlm.annotations.records import (
    FLAGS,
    IMAGES_DIR,
    JSON_COLUMNS,
    OUTPUT_COLUMNS,
    Annotation,
    AnnotationError,
    ModelOutput,
    Review,
    ReviewVersion,
    Span,
    Verdict,
    check_flag,
    filter_metadata,
    image_relpath,
    image_sha256,
    ordered_flags,
    to_json,
)
from medvlm.annotations.schema import migrate, set_wal, transaction
from medvlm.atomic import PARTIAL_SUFFIX, atomic_write_bytes
from medvlm.pixels import bare_image
from medvlm.probes import ProbeAnswer, ProbeKind
from medvlm.prompt import LETTERS
from medvlm.user_text import name_key

logger = logging.getLogger("medvlm.annotations")

DATA_DIR_ENV = "MEDVLM_DATA_DIR"
DB_NAME = "annotations.sqlite3"


def default_data_dir() -> Path:
    """``$MEDVLM_DATA_DIR`` if set, else ``./medvlm-data`` (relative to the working directory)."""
    configured = os.environ.get(DATA_DIR_ENV, "").strip()
    return Path(configured).expanduser() if configured else Path("medvlm-data")


_SELECT_ANNOTATIONS = f"""
    SELECT a.id, a.reviewer, a.comment, a.correct_answer, a.app_version, a.created_at, a.updated_at,
           (SELECT group_concat(f.flag) FROM annotation_flags f WHERE f.annotation_id = a.id) AS flags,
           (SELECT max(v.version) FROM annotation_versions v WHERE v.annotation_id = a.id) AS revision,
           (SELECT json_group_array(json_array(s.start, s."end", s.label))
              FROM annotation_spans s WHERE s.annotation_id = a.id) AS spans,
           {", ".join(f"o.{column}" for column in OUTPUT_COLUMNS)}
    FROM annotations a JOIN outputs o ON o.output_id = a.output_id
"""

_FLAG_FILTER = "a.id IN (SELECT annotation_id FROM annotation_flags WHERE flag = ?)"
"""Filtering by flag: a search of the ``annotation_flags_flag`` index, not a scan of every annotation."""

_DISTINCT_COLUMNS = {"reviewer": "a.reviewer", "modality": "o.modality", "model_id": "o.model_id"}


# -- the store ---------------------------------------------------------------------------------


class AnnotationStore:
    """The annotations in one data folder. Safe to share between threads and processes."""

    def __init__(self, data_dir: str | Path | None = None) -> None:
        self.data_dir: Path = Path(data_dir if data_dir is not None else default_data_dir()).expanduser().resolve()
        self.images_dir = self.data_dir / IMAGES_DIR
        self.db_path = self.data_dir / DB_NAME
        self._closed = False
        try:
            self.images_dir.mkdir(parents=True, exist_ok=True)
            with closing(self._connect()) as conn:
                conn.execute("PRAGMA foreign_keys = OFF")  # a migration may rebuild a table; migrate() checks them
                mode = set_wal(conn)
                if mode != "wal":  # e.g. some network file systems; the rollback journal is still safe
                    logger.warning("SQLite WAL mode unavailable for %s; using journal mode %r.", self.db_path, mode)
                with transaction(conn):
                    migrate(conn)
                    conn.executemany(
                        "INSERT INTO flags (name, label) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET label = "
                        "excluded.label",
                        FLAGS.items(),
                    )
        except (OSError, sqlite3.Error) as error:
            raise AnnotationError(f"The annotation store in {self.data_dir} could not be opened: {error}.") from error
        remove_stale_partials(self.images_dir)

    def __enter__(self) -> AnnotationStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------------

    def add(
        self,
        output: ModelOutput,
        review: Review,
        *,
        within: Callable[[sqlite3.Connection], None] | None = None,
        session_key: str = "",
    ) -> tuple[Annotation, bool]:
        """Store a review of an output; ``(annotation, True)`` when new.

        The same (``output_id``, reviewer, ``session_key``) again (a changed mind) updates that
        row's flags, comment, correct answer and ``updated_at`` and returns ``(annotation, False)``:
        never a duplicate row, and never a lost one, because every save is also kept as a
        :class:`ReviewVersion` (an identical save, such as a double click, adds none).
        ``session_key`` is, in name mode (anyone can type any name), an opaque key of the browser
        session saving: someone else typing the same name saves a review of their own, never a
        version of the namesake's; signed-in reviewers pass ``""`` (the account is who they are).
        Reviewer names are compared case-blind: "ALICE" saves
        as the "alice" already in the store. An ``output_id`` already stored with different
        content raises :class:`AnnotationError`: attaching a review to a completion the reviewer
        did not see would corrupt the data.

        ``within(conn)`` runs first inside the same transaction (a review campaign checks there
        that the reviewer still holds the output): if it raises, nothing is written.
        """
        row = _output_row(output)
        correct_answer = _correct_answer(output)
        beyond = [span for span in review.spans if span.end > len(output.completion)]
        if beyond:
            raise AnnotationError(
                f"A marked passage ({beyond[0].start}-{beyond[0].end}) runs past the end of the completion "
                f"({len(output.completion)} characters)."
            )
        spans = to_json([[span.start, span.end, span.label] for span in review.spans])
        self.save_image(output.image, row["image_sha256"])
        now = _now()
        with self.connection(write=True) as conn:
            if within is not None:
                within(conn)
            _insert_output(conn, row)
            reviewer = _known_spelling(conn, review.reviewer)
            existing = conn.execute(
                "SELECT id FROM annotations WHERE output_id = ? AND reviewer = ? AND session_key = ?",
                (row["output_id"], reviewer, session_key),
            ).fetchone()
            if existing is None:
                annotation_id = conn.execute(
                    "INSERT INTO annotations (output_id, reviewer, session_key, comment, correct_answer, app_version,"
                    " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        row["output_id"],
                        reviewer,
                        session_key,
                        review.comment,
                        correct_answer,
                        medvlm.__version__,
                        now,
                        now,
                    ),
                ).lastrowid
                version = 1
            else:
                annotation_id = existing[0]
                latest = conn.execute(
                    "SELECT version, flags, comment, correct_answer, spans FROM annotation_versions"
                    " WHERE annotation_id = ? ORDER BY version DESC LIMIT 1",
                    (annotation_id,),
                ).fetchone()
                unchanged = latest is not None and tuple(latest[1:]) == (
                    to_json(list(review.flags)),
                    review.comment,
                    correct_answer,
                    spans,
                )
                version = None if unchanged else (latest[0] if latest else 0) + 1
                if version is not None:
                    conn.execute(
                        "UPDATE annotations SET comment = ?, correct_answer = ?, app_version = ?, updated_at = ? "
                        "WHERE id = ?",
                        (review.comment, correct_answer, medvlm.__version__, now, annotation_id),
                    )
            if version is not None:
                _write_flags(conn, annotation_id, review.flags)
                conn.execute("DELETE FROM annotation_spans WHERE annotation_id = ?", (annotation_id,))
                conn.executemany(
                    'INSERT INTO annotation_spans (annotation_id, start, "end", label) VALUES (?, ?, ?, ?)',
                    [(annotation_id, span.start, span.end, span.label) for span in review.spans],
                )
                conn.execute(
                    "INSERT INTO annotation_versions (annotation_id, version, flags, comment, correct_answer,"
                    " app_version, saved_at, spans) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        annotation_id,
                        version,
                        to_json(list(review.flags)),
                        review.comment,
                        correct_answer,
                        medvlm.__version__,
                        now,
                        spans,
                    ),
                )
            annotation = self._fetch_one(conn, annotation_id)
        return annotation, existing is None

    def add_outputs(self, outputs: Sequence[ModelOutput], conn: sqlite3.Connection) -> None:
        """Store outputs without any review (a campaign's set), inside the caller's transaction ``conn``.

        The images are written first, as :meth:`add` does; an output id already stored must hold
        the same output.
        """
        rows = [_output_row(output) for output in outputs]
        for output, row in zip(outputs, rows, strict=True):
            self.save_image(output.image, row["image_sha256"])
        for row in rows:
            _insert_output(conn, row)

    def add_probe_answers(self, output: ModelOutput, answers: Sequence[ProbeAnswer], probed_by: str) -> None:
        """Store probe answers of ``output`` (and the output itself, once), all or none.

        A probe asked again (the same kind and variant) replaces its earlier answer: probing is
        greedy, so the answer is the same unless the model changed, and then the newer one counts.
        """
        row = _output_row(output)
        self.save_image(output.image, row["image_sha256"])
        now = _now()
        with self.connection(write=True) as conn:
            _insert_output(conn, row)
            conn.executemany(
                "INSERT OR REPLACE INTO probe_answers (output_id, kind, variant, options, completion, letter, changed,"
                " seconds, probed_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        output.output_id,
                        answer.kind.value,
                        answer.variant,
                        to_json(list(answer.options)),
                        answer.completion,
                        answer.letter,
                        None if answer.changed is None else int(answer.changed),
                        answer.seconds,
                        probed_by,
                        now,
                    )
                    for answer in answers
                ],
            )

    def stored_images(self) -> list[tuple[str, str | None]]:
        """Every stored image's hash with the modality of its outputs: the pool a shuffled-image probe draws from."""
        with self.connection() as conn:
            return [tuple(row) for row in conn.execute("SELECT DISTINCT image_sha256, modality FROM outputs")]

    def stored_image(self, sha256: str) -> Image.Image:
        """A stored image by its hash (what :meth:`stored_images` lists), as RGB."""
        with Image.open(self.data_dir / image_relpath(sha256)) as image:
            return image.convert("RGB")

    def probe_answers(self, output_ids: Sequence[str]) -> dict[str, list[ProbeAnswer]]:
        """The stored probe answers of each output that has any, in the order they were asked."""
        found: dict[str, list[ProbeAnswer]] = {}
        with self.connection() as conn:
            for output_id in output_ids:
                rows = conn.execute(
                    "SELECT kind, variant, options, completion, letter, changed, seconds FROM probe_answers"
                    " WHERE output_id = ? ORDER BY created_at, rowid",
                    (output_id,),
                ).fetchall()
                if rows:
                    found[output_id] = [
                        ProbeAnswer(ProbeKind(kind), variant, tuple(json.loads(options)), completion, letter,
                                    None if changed is None else bool(changed), seconds)
                        for kind, variant, options, completion, letter, changed, seconds in rows
                    ]  # fmt: skip
        return found

    def add_verdict(
        self,
        first: ModelOutput,
        second: ModelOutput,
        verdict: Verdict,
        *,
        within: Callable[[sqlite3.Connection], None] | None = None,
    ) -> tuple[Verdict, bool]:
        """Store a pairwise verdict on two answers to the same case, and the two outputs; ``(verdict, True)`` when new.

        ``first`` and ``second`` are the answers as shown (left, right); ``verdict`` names them
        (:meth:`Verdict.from_sides`). The same reviewer judging the same pair again updates their
        verdict (their latest judgement counts; the sides may have been shuffled differently) and
        keeps the earlier one as a version (:meth:`verdict_history`).
        Two answers to different cases (another image, question or options) are refused: such a
        verdict would compare nothing. ``within(conn)`` runs first in the same transaction, as in
        :meth:`add`.
        """
        rows = [_output_row(first), _output_row(second)]
        if {first.output_id, second.output_id} != {verdict.output_a, verdict.output_b}:
            raise AnnotationError("This verdict is about another pair of answers than the two given.")
        case = ("image_sha256", "question", "options")
        if [rows[0][column] for column in case] != [rows[1][column] for column in case]:
            raise AnnotationError(
                "A verdict compares two answers to the same case; these two differ in image, question or options."
            )
        now = _now()
        with self.connection(write=True) as conn:
            if within is not None:
                within(conn)
            self.add_outputs([first, second], conn)
            reviewer = _known_spelling(conn, verdict.reviewer)
            existing = conn.execute(
                "SELECT id FROM verdicts WHERE output_a = ? AND output_b = ? AND reviewer = ?",
                (verdict.output_a, verdict.output_b, reviewer),
            ).fetchone()
            values = (verdict.shown_first, verdict.outcome, verdict.preferred, int(verdict.blind), medvlm.__version__)
            if existing is None:
                verdict_id = conn.execute(
                    "INSERT INTO verdicts (output_a, output_b, shown_first, outcome, preferred, blind, app_version,"
                    " reviewer, decided_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (verdict.output_a, verdict.output_b, *values, reviewer, now),
                ).lastrowid
            else:
                verdict_id = existing[0]
                conn.execute(
                    "UPDATE verdicts SET shown_first = ?, outcome = ?, preferred = ?, blind = ?, app_version = ?,"
                    " decided_at = ? WHERE id = ?",
                    (*values, now, verdict_id),
                )
            conn.execute(
                "INSERT INTO verdict_versions SELECT id, (SELECT coalesce(max(version), 0) + 1 FROM verdict_versions"
                " WHERE verdict_id = ?1), shown_first, outcome, preferred, blind, app_version, decided_at"
                " FROM verdicts WHERE id = ?1",
                (verdict_id,),
            )
        stored = dataclasses.replace(verdict, reviewer=reviewer, decided_at=now, id=verdict_id)
        return stored, existing is None

    def verdicts(self, output_ids: Sequence[str] | None = None) -> list[Verdict]:
        """The stored verdicts, oldest first; with ``output_ids``, those on a pair of which either is one."""
        sql = (
            "SELECT id, output_a, output_b, shown_first, outcome, preferred, blind, reviewer, decided_at FROM verdicts"
        )
        params: tuple[Any, ...] = ()
        if output_ids is not None:
            ids = "(SELECT value FROM json_each(?1))"
            sql += f" WHERE output_a IN {ids} OR output_b IN {ids}"
            params = (json.dumps(list(output_ids)),)
        with self.connection() as conn:
            rows = conn.execute(f"{sql} ORDER BY id", params).fetchall()
        return [Verdict.from_row(row) for row in rows]

    def verdict_history(self, verdict_id: int) -> list[Verdict]:
        """Every saved version of one verdict, oldest first (the last is what :meth:`verdicts` gives)."""
        with self.connection() as conn:
            rows = conn.execute(
                "SELECT v.output_a, v.output_b, h.shown_first, h.outcome, h.preferred, h.blind, v.reviewer,"
                " h.decided_at FROM verdict_versions h JOIN verdicts v ON v.id = h.verdict_id"
                " WHERE h.verdict_id = ? ORDER BY h.version",
                (verdict_id,),
            ).fetchall()
        if not rows:
            raise AnnotationError(f"No verdict has the id {verdict_id}.")
        return [Verdict.from_row((verdict_id, *row)) for row in rows]

    def output(self, output_id: str) -> ModelOutput:
        """A stored output, with its image, as it was when it was stored (no correct answer: that is a review's)."""
        with self.connection() as conn:
            row = conn.execute(
                f"SELECT {', '.join(OUTPUT_COLUMNS)} FROM outputs WHERE output_id = ?", (output_id,)
            ).fetchone()
        if row is None:
            raise AnnotationError(f"There is no stored model output with id {output_id}.")
        fields = _output_fields(row)
        with Image.open(self.data_dir / image_relpath(fields.pop("image_sha256"))) as image:
            picture = image.convert("RGB")
        fields.pop("modality")
        fields.pop("model_id")
        return ModelOutput(image=picture, correct_answer=None, **fields)

    def save_image(self, image: Image.Image, sha256: str) -> None:
        """Write ``images/<sha>.png`` once, from the pixels alone (no metadata chunk can follow).

        Campaigns store a question's image this way before its output exists.
        """
        path = self.data_dir / image_relpath(sha256)
        if path.exists():
            return
        buffer = BytesIO()
        bare_image(image).save(buffer, format="PNG")
        try:
            atomic_write_bytes(path, buffer.getvalue())
        except OSError as error:  # disk full, permissions: say so, and store no row naming it
            raise AnnotationError(
                f"The image could not be saved ({error.strerror or error}); the review was not stored."
            ) from error

    # -- reading ---------------------------------------------------------------------------------

    def get(self, annotation_id: int) -> Annotation:
        """The annotation with this id; :class:`AnnotationError` if there is none (or the id is no id at all)."""
        annotation_id = _check_id(annotation_id)
        with self.connection() as conn:
            return self._fetch_one(conn, annotation_id)

    def history(self, annotation_id: int) -> list[ReviewVersion]:
        """Every saved version of one review, oldest first (the last is what :meth:`get` shows)."""
        annotation_id = _check_id(annotation_id)
        with self.connection() as conn:
            self._fetch_one(conn, annotation_id)  # an unknown id is an error, not an empty history
            rows = conn.execute(
                "SELECT version, flags, comment, correct_answer, app_version, saved_at FROM annotation_versions"
                " WHERE annotation_id = ? ORDER BY version",
                (annotation_id,),
            ).fetchall()
        return [
            ReviewVersion(
                version=version,
                flags=ordered_flags(",".join(json.loads(flags))),
                comment=comment,
                correct_answer=correct,
                app_version=app,
                saved_at=saved,
            )
            for version, flags, comment, correct, app, saved in rows
        ]

    def reviews_of(self, output_ids: Sequence[str]) -> list[Annotation]:
        """Every review of these outputs, in the order the ids are given, then oldest first (a campaign's set)."""
        order = {output_id: index for index, output_id in enumerate(output_ids)}
        with self.connection() as conn:
            rows = conn.execute(
                f"{_SELECT_ANNOTATIONS} WHERE a.output_id IN (SELECT value FROM json_each(?)) ORDER BY a.id",
                (json.dumps(list(order)),),
            ).fetchall()
        found = [self._annotation(row) for row in rows]
        return sorted(found, key=lambda annotation: order[annotation.output_id])

    def query(
        self,
        *,
        flag: str | None = None,
        modality: str | None = None,
        reviewer: str | None = None,
        model_id: str | None = None,
        limit: int | None = None,
    ) -> list[Annotation]:
        """Annotations matching every filter given (None: any), newest first (by id)."""
        if flag is not None:
            check_flag(flag)
        if limit is not None and limit < 1:
            raise AnnotationError(f"The limit must be at least 1 (got {limit}).")
        filters = {
            _FLAG_FILTER: flag,
            "o.modality = ?": modality,
            "a.reviewer = ?": reviewer,
            "o.model_id = ?": model_id,
        }
        clauses = [clause for clause, value in filters.items() if value is not None]
        params: list[Any] = [value for value in filters.values() if value is not None]
        sql = f"{_SELECT_ANNOTATIONS}{' WHERE ' + ' AND '.join(clauses) if clauses else ''} ORDER BY a.id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self.connection() as conn:
            return [self._annotation(row) for row in conn.execute(sql, params)]

    def distinct(self, column: str) -> list[str]:
        """Sorted distinct values of ``"reviewer"``, ``"modality"`` or ``"model_id"``, for filter dropdowns."""
        if column not in _DISTINCT_COLUMNS:
            raise AnnotationError(f"Cannot list values of {column!r}; choose from: {', '.join(_DISTINCT_COLUMNS)}.")
        expression = _DISTINCT_COLUMNS[column]
        with self.connection() as conn:
            rows = conn.execute(
                f"SELECT DISTINCT {expression} FROM annotations a JOIN outputs o ON o.output_id = a.output_id"
                f" WHERE {expression} IS NOT NULL ORDER BY 1"
            )
            return [value for (value,) in rows]

    def count(self) -> int:
        """The number of annotations (reviews), not of outputs."""
        with self.connection() as conn:
            return conn.execute("SELECT count(*) FROM annotations").fetchone()[0]

    # -- exports ---------------------------------------------------------------------------------

    def export_jsonl(self, path: str | Path) -> Path:
        """Every annotation as JSON Lines with its probes (:func:`medvlm.annotations.exports.export_jsonl`)."""
        annotations = self.query()[::-1]
        return export_jsonl(annotations, path, self._probes_of(annotations))

    def export_parquet(self, path: str | Path) -> Path:
        """Every annotation with its image as one Parquet file (:func:`medvlm.annotations.exports.export_parquet`)."""
        annotations = self.query()[::-1]
        return export_parquet(annotations, path, self._probes_of(annotations))

    def _probes_of(self, annotations: Sequence[Annotation]) -> dict[str, list[ProbeAnswer]]:
        return self.probe_answers(list(dict.fromkeys(annotation.output_id for annotation in annotations)))

    def close(self) -> None:
        """Fold the WAL into the database file (so a copy of the ``.sqlite3`` alone is complete), then close."""
        if self._closed:
            return
        with self.connection() as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._closed = True

    # -- connections -----------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._closed:
            raise AnnotationError("The annotation store is closed.")
        # timeout=30 is SQLite's busy timeout: a writer waits up to 30 s for another to finish.
        # Autocommit mode: transactions are opened explicitly (BEGIN IMMEDIATE) by _transaction.
        conn = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = FULL")
        return conn

    @contextmanager
    def connection(self, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        """A fresh connection (one per call: threads never share one), closed afterwards.

        ``write=True`` wraps it in one transaction: all of it commits, or none. SQLite errors
        become :class:`AnnotationError` with a readable message. Public, as datasette's
        ``execute_fn``/``execute_write_fn`` are, so campaigns and comparisons built on the store
        run their own queries through it (and its error handling) instead of reaching inside.
        """
        try:
            with closing(self._connect()) as conn, transaction(conn) if write else nullcontext():
                yield conn
        except sqlite3.Error as error:
            raise AnnotationError(
                f"The annotation store could not be {'written' if write else 'read'}: {error}."
            ) from error

    def _fetch_one(self, conn: sqlite3.Connection, annotation_id: int) -> Annotation:
        row = conn.execute(f"{_SELECT_ANNOTATIONS} WHERE a.id = ?", (annotation_id,)).fetchone()
        if row is None:
            raise AnnotationError(f"There is no annotation with id {annotation_id}.")
        return self._annotation(row)

    def _annotation(self, row: tuple[Any, ...]) -> Annotation:
        (
            annotation_id,
            reviewer,
            comment,
            correct_answer,
            app_version,
            created_at,
            updated_at,
            flags,
            revision,
            spans,
            *rest,
        ) = row
        output = _output_fields(rest)
        return Annotation(
            id=annotation_id,
            reviewer=reviewer,
            flags=ordered_flags(flags),
            comment=comment,
            image_path=self.data_dir / image_relpath(output["image_sha256"]),
            correct_answer=correct_answer,
            app_version=app_version,
            created_at=created_at,
            updated_at=updated_at,
            is_correct=None if correct_answer is None else output["letter"] == correct_answer,
            revision=revision or 1,
            spans=tuple(sorted(Span.from_json(span) for span in json.loads(spans or "[]"))),
            **output,
        )


# -- helpers -------------------------------------------------------------------------------------


PARTIAL_MAX_AGE_S = 15 * 60
"""A ``*.partial`` file older than this is a killed writer's leftover (an image write takes milliseconds)."""


def remove_stale_partials(folder: Path, max_age_s: float = PARTIAL_MAX_AGE_S) -> int:
    """Delete the temporary files that writers killed mid-write left in ``folder``; return how many.

    Only files older than ``max_age_s`` go: a younger one may belong to a live writer in another
    process, whose ``os.replace`` would fail if its file vanished.
    """
    removed = 0
    cutoff = time.time() - max_age_s
    for path in folder.glob(f".*{PARTIAL_SUFFIX}"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:  # another process cleaned it first
            continue
    if removed:
        logger.info("Removed %d unfinished image file(s) left by interrupted saves.", removed)
    return removed


def _known_spelling(conn: sqlite3.Connection, reviewer: str) -> str:
    """The spelling of ``reviewer`` already in the store, compared case-blind; ``reviewer`` if new.

    Runs inside the write transaction, so two first saves of "Alice" and "alice" cannot both win.
    """
    key = name_key(reviewer)
    for (known,) in conn.execute("SELECT reviewer FROM annotations UNION SELECT reviewer FROM verdicts"):
        if name_key(known) == key:
            return known
    return reviewer


def _check_id(annotation_id: Any) -> int:
    """A review id as SQLite can look it up; anything else is "no such review", in words."""
    if (
        isinstance(annotation_id, bool)
        or not isinstance(annotation_id, (int, float))
        or not math.isfinite(annotation_id)
        or annotation_id != int(annotation_id)
    ):
        raise AnnotationError(f"Review ids are whole numbers (got {annotation_id!r}).")
    if not 1 <= int(annotation_id) <= 2**63 - 1:
        raise AnnotationError(f"There is no annotation with id {int(annotation_id)}.")
    return int(annotation_id)


def _write_flags(conn: sqlite3.Connection, annotation_id: int, flags: Sequence[str]) -> None:
    """Replace the annotation's flags with ``flags``."""
    conn.execute("DELETE FROM annotation_flags WHERE annotation_id = ?", (annotation_id,))
    conn.executemany(
        "INSERT INTO annotation_flags (annotation_id, flag) VALUES (?, ?)", [(annotation_id, flag) for flag in flags]
    )


def _output_fields(row: Sequence[Any]) -> dict[str, Any]:
    """An ``outputs`` row as Python values (JSON columns decoded)."""
    output = dict(zip(OUTPUT_COLUMNS, row, strict=True))
    for column in JSON_COLUMNS:
        output[column] = json.loads(output[column]) if output[column] is not None else None
    output["format_ok"] = bool(output["format_ok"])
    return output


def _insert_output(conn: sqlite3.Connection, row: dict[str, Any]) -> None:
    """The output's row, once: an id already stored must hold the same output."""
    inserted = conn.execute(
        f"INSERT INTO outputs ({', '.join(OUTPUT_COLUMNS)}) VALUES ({', '.join('?' * len(OUTPUT_COLUMNS))})"
        " ON CONFLICT (output_id) DO NOTHING",
        [row[column] for column in OUTPUT_COLUMNS],
    ).rowcount
    if not inserted:
        _check_same_output(conn, row)


def _check_same_output(conn: sqlite3.Connection, row: dict[str, Any]) -> None:
    stored = conn.execute(
        f"SELECT {', '.join(OUTPUT_COLUMNS)} FROM outputs WHERE output_id = ?", (row["output_id"],)
    ).fetchone()
    different = [column for column, value in zip(OUTPUT_COLUMNS, stored, strict=True) if row[column] != value]
    if different:
        raise AnnotationError(
            f"A different model output is already stored under id {row['output_id']} (differs in: "
            f"{', '.join(different)}). Each generation needs its own output id."
        )


def _output_row(output: ModelOutput) -> dict[str, Any]:
    """The ``outputs`` row for ``output``, validated; JSON columns serialised deterministically."""
    if not isinstance(output.output_id, str) or not output.output_id.strip():
        raise AnnotationError("The model output has no id; generate an answer before saving a review.")
    if not isinstance(output.image, Image.Image):
        raise AnnotationError("The model output has no image.")
    options = list(output.options)
    if not options or not all(isinstance(option, str) for option in options):
        raise AnnotationError("The model output's options must be a non-empty list of texts.")
    model_id = output.model.get("model")
    if not model_id:
        raise AnnotationError("The model description has no 'model' entry (use LoadedModel.describe()).")
    metadata = filter_metadata(output.image_metadata)
    modality = metadata.get("modality")
    row: dict[str, Any] = {column: getattr(output, column) for column in OUTPUT_COLUMNS if hasattr(output, column)}
    row.update(
        image_sha256=image_sha256(output.image),
        image_metadata=metadata,
        modality=modality if isinstance(modality, str) and modality else None,
        options=options,
        format_ok=int(bool(output.format_ok)),
        model_id=str(model_id),
        prompt_style=str(output.prompt_style),
    )
    for column in JSON_COLUMNS:
        row[column] = None if row[column] is None else to_json(row[column])
    return row


def _correct_answer(output: ModelOutput) -> str | None:
    """The reviewer's correct letter, upper-cased; "" counts as unknown (an empty dropdown)."""
    answer = (output.correct_answer or "").strip().upper()
    if not answer:
        return None
    offered = LETTERS[: len(output.options)]
    if len(answer) != 1 or answer not in offered:
        raise AnnotationError(
            f"The correct answer must be one of the option letters {', '.join(offered)} (got {answer!r})."
        )
    return answer


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")
