"""The annotation store: reviewers' flags on model outputs, kept safe on disk for later training.

A radiologist's flags ("superficial", "hallucinated finding"...) are the product's data, so this
module is built to never lose or corrupt one and to never keep anything that identifies a patient.

Layout of a data folder (``$MEDVLM_DATA_DIR``, default ``./medvlm-data``)::

    annotations.sqlite3        the rows (SQLite, WAL journal; -wal/-shm files sit beside it)
    images/<sha256>.png        each image once, named by its content hash

**Schema** (version in ``PRAGMA user_version``; :data:`_MIGRATIONS` upgrades older files):

* ``outputs``: one row per model output (``output_id``): the image hash, whitelisted image
  metadata (JSON), question, options (JSON list), completion and its parse, model description,
  generation settings, timing (JSON), prompt style, ``generated_at``. An output is immutable.
* ``annotations``: one row per (``output_id``, ``reviewer``), unique: comment, the reviewer's
  correct answer, ``app_version``, ``created_at``, ``updated_at``. Several reviewers of one output
  share its ``outputs`` row, which is what reviewer agreement is computed over.
* ``annotation_flags(annotation_id, flag)``: the flags, one row each, indexed by flag, so that
  filtering by flag is a SQL query; ``flag`` references ``flags(name, label)``, which mirrors
  :data:`FLAGS` (kept in step on every open, so a new flag needs no migration).
* ``annotation_versions(annotation_id, version)`` (schema 2): every save of a review (flags as a
  JSON list, comment, correct answer, app version, time). ``annotations`` holds the latest; a
  later click, or in name mode another person typing the same name, never erases an earlier one.

Reviewer names are normalised (NFKC, no invisible characters, at most 64 characters) and compared
case-blind, so "ALICE", "ali\u200bce" and "alice" are one reviewer.

**Durability.** Every write is one ``BEGIN IMMEDIATE`` transaction on its own connection (Gradio
calls from a thread pool; sqlite3 connections must not be shared across threads). IMMEDIATE takes
the write lock up front, so concurrent writers queue on the 30 s busy timeout instead of failing
with "database is locked" when a read turns into a write. ``synchronous=FULL``: in WAL mode,
NORMAL never corrupts the file but may lose the last commits on power loss; FULL fsyncs the WAL
at each commit, so a click the reviewer saw succeed is on disk. One fsync per human click costs
nothing noticeable. The image file is written (atomically: temporary file, fsync, ``os.replace``,
directory fsync) *before* the row that names it is committed, so a committed row never points at
a missing image; a crash in between leaves at most an unreferenced image, which the next add of
the same image simply reuses, and a writer killed mid-write leaves a ``.*.partial`` file, which
the next open removes once it is old enough not to belong to a live writer.

**Privacy.** Only the :class:`~medvlm.images.SafeMetadata` keys of ``image_metadata`` with scalar
values are kept, and the PNG is re-encoded from the raw pixels alone, so no text chunk, EXIF or
ICC profile carried by the PIL image reaches the disk.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from io import BytesIO
from pathlib import Path
from typing import Any

from PIL import Image

import medvlm
from medvlm.errors import MedVLMError
from medvlm.images import SafeMetadata
from medvlm.pixels import bare_image
from medvlm.prompt import LETTERS
from medvlm.user_text import MAX_COMMENT_CHARS, check_text, name_key, normalize_name

logger = logging.getLogger(__name__)

FLAGS: dict[str, str] = {
    "superficial": "Superficial reasoning",
    "contradiction": "Reasoning contradicts the answer",
    "hallucination": "Hallucinated finding",
    "wrong_answer": "Wrong answer",
    "sound": "Sound reasoning",
}
"""Flag key -> label shown to the reviewer. Keys are what is stored and exported."""

DATA_DIR_ENV = "MEDVLM_DATA_DIR"
DB_NAME = "annotations.sqlite3"
IMAGES_DIR = "images"

SAFE_METADATA_KEYS: frozenset[str] = frozenset(field.name for field in dataclasses.fields(SafeMetadata))
"""The only image-metadata keys ever stored: those of SafeMetadata, so the two cannot drift apart."""

PARTIAL_SUFFIX = ".partial"
"""Suffix of files being written; never referenced by a row, and ignored by the Hub sync."""


class AnnotationError(MedVLMError):
    """An annotation cannot be stored or read (invalid review, unknown id, ...); shown as is."""


def default_data_dir() -> Path:
    """``$MEDVLM_DATA_DIR`` if set, else ``./medvlm-data`` (relative to the working directory)."""
    configured = os.environ.get(DATA_DIR_ENV, "").strip()
    return Path(configured).expanduser() if configured else Path("medvlm-data")


def image_relpath(sha256: str) -> str:
    """Where an image lives relative to a data, export or sync folder: ``images/<sha256>.png``."""
    return f"{IMAGES_DIR}/{sha256}.png"


def image_sha256(image: Image.Image) -> str:
    """The content hash naming an image: sha256 of ``b"<width>x<height>:"`` + its raw RGB bytes.

    Hashing pixels rather than the PNG file keeps the name stable across Pillow and zlib versions
    (PNG bytes for the same pixels may differ), so the same image is stored once for good. To
    verify a stored file: ``image_sha256(Image.open(path))`` equals its name.
    """
    rgb = image.convert("RGB")
    digest = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode())
    digest.update(rgb.tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelOutput:
    """One model answer to one case, exactly as shown to the reviewer."""

    output_id: str
    """uuid4 hex made by the app per generation; with the reviewer, the idempotency key."""
    image: Image.Image
    """The rendered, de-identified RGB image the model saw."""
    image_metadata: dict[str, Any]
    """``SafeMetadata.to_dict()``; filtered again to the whitelisted keys before storing."""
    question: str
    options: list[str]
    correct_answer: str | None
    """Letter A..J if the reviewer knows it (stored per reviewer: reviewers may differ)."""
    completion: str
    reasoning: str
    answer_text: str | None
    letter: str | None
    format_ok: bool
    problem: str | None
    stop_reason: str | None
    model: dict[str, Any]
    """``LoadedModel.describe()``; its ``"model"`` entry becomes ``model_id``."""
    settings: dict[str, Any]
    """``GenerationSettings.to_dict()``."""
    prompt_style: str
    timing: dict[str, Any] | None
    generated_at: str
    """ISO-8601 UTC."""


#: Flags that say the reasoning itself is faulty, so they contradict "sound". ("wrong_answer" does
#: not: sound reasoning can still end on the wrong option, and that is worth recording.)
REASONING_FAULTS = ("superficial", "contradiction", "hallucination")


@dataclass(frozen=True)
class Review:
    """What a reviewer said about one output. Validated and normalised on creation.

    ``reviewer`` is normalised (:func:`medvlm.user_text.normalize_name`: NFKC, no invisible
    characters, at most 64 characters); ``comment`` is stripped and limited; ``flags`` are
    de-duplicated and put in :data:`FLAGS` order (a single string counts as one flag, as a
    checkbox group may send one).
    """

    reviewer: str
    flags: tuple[str, ...]
    comment: str = ""

    def __post_init__(self) -> None:
        reviewer = normalize_name(self.reviewer or "", error=AnnotationError)
        given = (self.flags,) if isinstance(self.flags, str) else tuple(self.flags or ())
        for flag in given:
            _check_flag(flag)
        comment = check_text(
            (self.comment or "").strip(), what="Your comment", limit=MAX_COMMENT_CHARS, error=AnnotationError
        )
        if not given and not comment:
            raise AnnotationError("Choose at least one flag or write a comment.")
        clashing = [FLAGS[flag] for flag in REASONING_FAULTS if flag in given]
        if "sound" in given and clashing:
            raise AnnotationError(
                f"'{FLAGS['sound']}' cannot be combined with {' / '.join(repr(label) for label in clashing)}: untick "
                "one of them."
            )
        object.__setattr__(self, "reviewer", reviewer)
        object.__setattr__(self, "flags", tuple(flag for flag in FLAGS if flag in given))
        object.__setattr__(self, "comment", comment)


@dataclass(frozen=True)
class Annotation:
    """A stored row, as read back: one reviewer's review of one model output."""

    id: int
    output_id: str
    reviewer: str
    flags: tuple[str, ...]
    comment: str
    image_sha256: str
    image_path: Path
    """Absolute path of the stored PNG (``<data_dir>/images/<sha256>.png``)."""
    image_metadata: dict[str, Any]
    modality: str | None
    question: str
    options: list[str]
    correct_answer: str | None
    completion: str
    reasoning: str
    answer_text: str | None
    letter: str | None
    format_ok: bool
    problem: str | None
    stop_reason: str | None
    model_id: str
    model: dict[str, Any]
    settings: dict[str, Any]
    prompt_style: str
    timing: dict[str, Any] | None
    app_version: str
    """The medvlm version that last wrote this review."""
    generated_at: str
    created_at: str
    updated_at: str
    is_correct: bool | None
    """``letter == correct_answer`` when the reviewer gave the correct answer, else None."""
    revision: int = 1
    """How many versions this review has had (1: never edited); :meth:`AnnotationStore.history` lists them."""

    def to_record(self) -> dict[str, Any]:
        """A JSON-able dict for exports and the Hub sync.

        The image is the relative path ``images/<sha256>.png`` (relative to the folder holding
        the export); ``flags`` is a list, and each flag also gets a boolean column
        ``flag_<key>`` so that training code can select rows without parsing lists.
        """
        record: dict[str, Any] = {
            "id": self.id,
            "output_id": self.output_id,
            "reviewer": self.reviewer,
            "flags": list(self.flags),
            **{f"flag_{key}": key in self.flags for key in FLAGS},
            "comment": self.comment,
            "image": image_relpath(self.image_sha256),
        }
        for field in dataclasses.fields(self):
            if field.name not in record and field.name not in ("image_path", "flags"):
                record[field.name] = getattr(self, field.name)
        return record

    def to_json_line(self) -> str:
        """:meth:`to_record` as one JSON line: the format of the JSONL export and of the Hub dataset."""
        return json.dumps(self.to_record(), ensure_ascii=False) + "\n"


@dataclass(frozen=True)
class ReviewVersion:
    """One saved version of a review: every save is kept, so a later click never loses an earlier one."""

    version: int
    """1 for the first save, then 2, 3... (the highest is what :class:`Annotation` shows)."""
    flags: tuple[str, ...]
    comment: str
    correct_answer: str | None
    app_version: str
    saved_at: str


#: Annotation fields holding dictionaries whose keys vary (by model, app version, input type).
_FREE_FORM_FIELDS = ("image_metadata", "model", "settings", "timing")


# -- schema --------------------------------------------------------------------------------------


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
            (id_, _json(_ordered_flags(flags)), comment, correct, version, saved)
            for id_, comment, correct, version, saved, flags in rows
        ],
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


_MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_create_schema_v1, _add_review_versions_v2)
"""``_MIGRATIONS[n]`` upgrades a database from version n to n + 1 (version 0: empty file).

To change the schema, append a function; never edit a released one. All pending steps and the
new version number run in one ``BEGIN IMMEDIATE`` transaction (statements run one by one, never
through ``executescript``, which would commit half-way), so an interrupted upgrade leaves the
previous version intact and concurrent openers of a fresh folder wait for the first one.
"""

SCHEMA_VERSION = len(_MIGRATIONS)

_OUTPUT_COLUMNS = (
    "output_id", "image_sha256", "image_metadata", "modality", "question", "options", "completion",
    "reasoning", "answer_text", "letter", "format_ok", "problem", "stop_reason", "model_id", "model",
    "settings", "prompt_style", "timing", "generated_at",
)  # fmt: skip

_SELECT_ANNOTATIONS = f"""
    SELECT a.id, a.reviewer, a.comment, a.correct_answer, a.app_version, a.created_at, a.updated_at,
           (SELECT group_concat(f.flag) FROM annotation_flags f WHERE f.annotation_id = a.id) AS flags,
           (SELECT max(v.version) FROM annotation_versions v WHERE v.annotation_id = a.id) AS revision,
           {", ".join(f"o.{column}" for column in _OUTPUT_COLUMNS)}
    FROM annotations a JOIN outputs o ON o.output_id = a.output_id
"""

_FLAG_FILTER = "a.id IN (SELECT annotation_id FROM annotation_flags WHERE flag = ?)"
"""Filtering by flag: a search of the ``annotation_flags_flag`` index, not a scan of every annotation."""

_DISTINCT_COLUMNS = {"reviewer": "a.reviewer", "modality": "o.modality", "model_id": "o.model_id"}


# -- the store -----------------------------------------------------------------------------------


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
                mode = _set_wal(conn)
                if mode != "wal":  # e.g. some network file systems; the rollback journal is still safe
                    logger.warning("SQLite WAL mode unavailable for %s; using journal mode %r.", self.db_path, mode)
                with _transaction(conn):
                    _migrate(conn)
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

    def add(self, output: ModelOutput, review: Review) -> tuple[Annotation, bool]:
        """Store a review of an output; ``(annotation, True)`` when new.

        The same (``output_id``, reviewer) again (a changed mind, or in name mode someone else
        typing the same name) updates that row's flags, comment, correct answer and
        ``updated_at`` and returns ``(annotation, False)``: never a duplicate row, and never a
        lost one, because every save is also kept as a :class:`ReviewVersion` (an identical save,
        such as a double click, adds none). Reviewer names are compared case-blind: "ALICE" saves
        as the "alice" already in the store. An ``output_id`` already stored with different
        content raises :class:`AnnotationError`: attaching a review to a completion the reviewer
        did not see would corrupt the data.
        """
        row = _output_row(output)
        correct_answer = _correct_answer(output)
        self._save_image(output.image, row["image_sha256"])
        now = _now()
        with self._connection(write=True) as conn:
            inserted = conn.execute(
                f"INSERT INTO outputs ({', '.join(_OUTPUT_COLUMNS)}) VALUES ({', '.join('?' * len(_OUTPUT_COLUMNS))})"
                " ON CONFLICT (output_id) DO NOTHING",
                [row[column] for column in _OUTPUT_COLUMNS],
            ).rowcount
            if not inserted:
                _check_same_output(conn, row)
            reviewer = _known_spelling(conn, review.reviewer)
            existing = conn.execute(
                "SELECT id FROM annotations WHERE output_id = ? AND reviewer = ?", (row["output_id"], reviewer)
            ).fetchone()
            if existing is None:
                annotation_id = conn.execute(
                    "INSERT INTO annotations (output_id, reviewer, comment, correct_answer, app_version, created_at, "
                    "updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (row["output_id"], reviewer, review.comment, correct_answer, medvlm.__version__, now, now),
                ).lastrowid
                version = 1
            else:
                annotation_id = existing[0]
                latest = conn.execute(
                    "SELECT version, flags, comment, correct_answer FROM annotation_versions WHERE annotation_id = ?"
                    " ORDER BY version DESC LIMIT 1",
                    (annotation_id,),
                ).fetchone()
                unchanged = latest is not None and tuple(latest[1:]) == (
                    _json(list(review.flags)),
                    review.comment,
                    correct_answer,
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
                conn.execute(
                    "INSERT INTO annotation_versions VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        annotation_id,
                        version,
                        _json(list(review.flags)),
                        review.comment,
                        correct_answer,
                        medvlm.__version__,
                        now,
                    ),
                )
            annotation = self._fetch_one(conn, annotation_id)
        return annotation, existing is None

    def _save_image(self, image: Image.Image, sha256: str) -> None:
        """Write ``images/<sha>.png`` once, from the pixels alone (no metadata chunk can follow)."""
        path = self.data_dir / image_relpath(sha256)
        if path.exists():
            return
        buffer = BytesIO()
        bare_image(image).save(buffer, format="PNG")
        try:
            _atomic_write(path, lambda tmp: tmp.write_bytes(buffer.getvalue()))
        except OSError as error:  # disk full, permissions: say so, and store no row naming it
            raise AnnotationError(
                f"The image could not be saved ({error.strerror or error}); the review was not stored."
            ) from error

    # -- reading ---------------------------------------------------------------------------------

    def get(self, annotation_id: int) -> Annotation:
        """The annotation with this id; :class:`AnnotationError` if there is none (or the id is no id at all)."""
        annotation_id = _check_id(annotation_id)
        with self._connection() as conn:
            return self._fetch_one(conn, annotation_id)

    def history(self, annotation_id: int) -> list[ReviewVersion]:
        """Every saved version of one review, oldest first (the last is what :meth:`get` shows)."""
        annotation_id = _check_id(annotation_id)
        with self._connection() as conn:
            self._fetch_one(conn, annotation_id)  # an unknown id is an error, not an empty history
            rows = conn.execute(
                "SELECT version, flags, comment, correct_answer, app_version, saved_at FROM annotation_versions"
                " WHERE annotation_id = ? ORDER BY version",
                (annotation_id,),
            ).fetchall()
        return [
            ReviewVersion(
                version=version,
                flags=_ordered_flags(",".join(json.loads(flags))),
                comment=comment,
                correct_answer=correct,
                app_version=app,
                saved_at=saved,
            )
            for version, flags, comment, correct, app, saved in rows
        ]

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
            _check_flag(flag)
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
        with self._connection() as conn:
            return [self._annotation(row) for row in conn.execute(sql, params)]

    def distinct(self, column: str) -> list[str]:
        """Sorted distinct values of ``"reviewer"``, ``"modality"`` or ``"model_id"``, for filter dropdowns."""
        if column not in _DISTINCT_COLUMNS:
            raise AnnotationError(f"Cannot list values of {column!r}; choose from: {', '.join(_DISTINCT_COLUMNS)}.")
        expression = _DISTINCT_COLUMNS[column]
        with self._connection() as conn:
            rows = conn.execute(
                f"SELECT DISTINCT {expression} FROM annotations a JOIN outputs o ON o.output_id = a.output_id"
                f" WHERE {expression} IS NOT NULL ORDER BY 1"
            )
            return [value for (value,) in rows]

    def count(self) -> int:
        """The number of annotations (reviews), not of outputs."""
        with self._connection() as conn:
            return conn.execute("SELECT count(*) FROM annotations").fetchone()[0]

    # -- exports ---------------------------------------------------------------------------------

    def export_jsonl(self, path: str | Path) -> Path:
        """Write every annotation (oldest first) as one JSON object per line; return the path.

        Image paths in the records are relative to the file's folder: images not already there
        are copied to ``<folder>/images/``, so the file and that
        folder travel together. Written atomically: a reader never sees half a file.
        """
        target, annotations = self._export_target(path)
        for annotation in annotations:
            copy_image(annotation, target.parent)
        lines = "".join(annotation.to_json_line() for annotation in annotations)
        _atomic_write(target, lambda tmp: tmp.write_text(lines, encoding="utf-8"))
        return target

    def export_parquet(self, path: str | Path) -> Path:
        """Write every annotation (oldest first) as a self-contained Parquet file; return the path.

        The ``image`` column is a ``datasets.Image()`` feature holding the PNG bytes, so
        ``datasets.load_dataset("parquet", data_files=...)`` or ``Dataset.from_parquet`` decode
        it to PIL with no other file. The free-form dictionaries (``image_metadata``, ``model``,
        ``settings``, ``timing``) are JSON strings here: as Arrow structs, an empty one cannot be
        written at all and rows from different app versions would disagree on the schema. Holds
        every image in memory while writing.
        """
        import datasets  # slow to import; only exports need it

        target, annotations = self._export_target(path)
        records = [
            {
                **annotation.to_record(),
                **{key: json.dumps(getattr(annotation, key), sort_keys=True) for key in _FREE_FORM_FIELDS},
                "image": {"bytes": annotation.image_path.read_bytes(), "path": image_relpath(annotation.image_sha256)},
            }
            for annotation in annotations
        ]
        dataset = datasets.Dataset.from_list(records).cast_column("image", datasets.Image())
        _atomic_write(target, lambda tmp: dataset.to_parquet(str(tmp)))
        return target

    def _export_target(self, path: str | Path) -> tuple[Path, list[Annotation]]:
        """The resolved export path (its folder created) and all annotations, oldest first."""
        annotations = self.query()[::-1]
        if not annotations:
            raise AnnotationError("There are no annotations to export yet.")
        target = Path(path).expanduser().resolve()
        target.parent.mkdir(parents=True, exist_ok=True)
        return target, annotations

    def close(self) -> None:
        """Fold the WAL into the database file (so a copy of the ``.sqlite3`` alone is complete), then close."""
        if self._closed:
            return
        with self._connection() as conn:
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
    def _connection(self, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        """A fresh connection (one per call: threads never share one), closed afterwards.

        ``write=True`` wraps it in one transaction: all of it commits, or none. SQLite errors
        become :class:`AnnotationError` with a readable message.
        """
        try:
            with closing(self._connect()) as conn, _transaction(conn) if write else nullcontext():
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
            *rest,
        ) = row
        output = dict(zip(_OUTPUT_COLUMNS, rest, strict=True))
        return Annotation(
            id=annotation_id,
            output_id=output["output_id"],
            reviewer=reviewer,
            flags=_ordered_flags(flags),
            comment=comment,
            image_sha256=output["image_sha256"],
            image_path=self.data_dir / image_relpath(output["image_sha256"]),
            image_metadata=json.loads(output["image_metadata"]),
            modality=output["modality"],
            question=output["question"],
            options=json.loads(output["options"]),
            correct_answer=correct_answer,
            completion=output["completion"],
            reasoning=output["reasoning"],
            answer_text=output["answer_text"],
            letter=output["letter"],
            format_ok=bool(output["format_ok"]),
            problem=output["problem"],
            stop_reason=output["stop_reason"],
            model_id=output["model_id"],
            model=json.loads(output["model"]),
            settings=json.loads(output["settings"]),
            prompt_style=output["prompt_style"],
            timing=json.loads(output["timing"]) if output["timing"] is not None else None,
            app_version=app_version,
            generated_at=output["generated_at"],
            created_at=created_at,
            updated_at=updated_at,
            is_correct=None if correct_answer is None else output["letter"] == correct_answer,
            revision=revision or 1,
        )


def copy_image(annotation: Annotation, folder: str | Path) -> Path:
    """Make ``<folder>/images/<sha256>.png`` exist, so a record's relative image path resolves there.

    A real (atomic) copy, not a hard link: whoever edits an exported image in place must not
    change the stored original. Used by the JSONL export and the Hub sync.
    """
    target = Path(folder) / image_relpath(annotation.image_sha256)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(target, lambda tmp: shutil.copyfile(annotation.image_path, tmp))
    return target


# -- helpers -------------------------------------------------------------------------------------


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` ... COMMIT, or ROLLBACK on any exception (``with conn`` semantics)."""
    conn.execute("BEGIN IMMEDIATE")
    with conn:  # commits on success, rolls back on an exception
        yield


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring the schema to :data:`SCHEMA_VERSION`, inside the caller's transaction."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise AnnotationError(
            f"This annotation store was written by a newer medvlm (schema {version}, this one reads up to "
            f"{SCHEMA_VERSION}); upgrade medvlm to use it."
        )
    for step in _MIGRATIONS[version:]:
        step(conn)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


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


def _set_wal(conn: sqlite3.Connection, timeout_s: float = 30.0) -> str:
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


def _known_spelling(conn: sqlite3.Connection, reviewer: str) -> str:
    """The spelling of ``reviewer`` already in the store, compared case-blind; ``reviewer`` if new.

    Runs inside the write transaction, so two first saves of "Alice" and "alice" cannot both win.
    """
    key = name_key(reviewer)
    for (known,) in conn.execute("SELECT DISTINCT reviewer FROM annotations"):
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


def _ordered_flags(stored: str | None) -> tuple[str, ...]:
    """Flags as stored (comma-joined), in :data:`FLAGS` order."""
    present = set((stored or "").split(","))
    return tuple(flag for flag in FLAGS if flag in present)


def _check_flag(flag: str) -> None:
    if flag not in FLAGS:
        raise AnnotationError(f"Unknown flag {flag!r}; choose from: {', '.join(FLAGS)}.")


def _write_flags(conn: sqlite3.Connection, annotation_id: int, flags: Sequence[str]) -> None:
    """Replace the annotation's flags with ``flags``."""
    conn.execute("DELETE FROM annotation_flags WHERE annotation_id = ?", (annotation_id,))
    conn.executemany(
        "INSERT INTO annotation_flags (annotation_id, flag) VALUES (?, ?)", [(annotation_id, flag) for flag in flags]
    )


def _check_same_output(conn: sqlite3.Connection, row: dict[str, Any]) -> None:
    stored = conn.execute(
        f"SELECT {', '.join(_OUTPUT_COLUMNS)} FROM outputs WHERE output_id = ?", (row["output_id"],)
    ).fetchone()
    different = [column for column, value in zip(_OUTPUT_COLUMNS, stored, strict=True) if row[column] != value]
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
    return {
        "output_id": output.output_id,
        "image_sha256": image_sha256(output.image),
        "image_metadata": _json(metadata),
        "modality": modality if isinstance(modality, str) and modality else None,
        "question": output.question,
        "options": _json(options),
        "completion": output.completion,
        "reasoning": output.reasoning,
        "answer_text": output.answer_text,
        "letter": output.letter,
        "format_ok": int(bool(output.format_ok)),
        "problem": output.problem,
        "stop_reason": output.stop_reason,
        "model_id": str(model_id),
        "model": _json(output.model),
        "settings": _json(output.settings),
        "prompt_style": str(output.prompt_style),
        "timing": None if output.timing is None else _json(output.timing),
        "generated_at": output.generated_at,
    }


def filter_metadata(metadata: dict[str, Any] | None) -> dict[str, Any]:
    """Only the SafeMetadata keys, and only scalar values: nothing else about a file is kept."""
    scalar = (str, int, float, bool, type(None))
    return {
        key: value
        for key, value in (metadata or {}).items()
        if key in SAFE_METADATA_KEYS and isinstance(value, scalar)
    }


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


def _json(value: Any) -> str:
    """Deterministic, strict JSON: non-finite floats become null (NaN is not JSON and breaks loaders)."""
    return json.dumps(_finite(value), sort_keys=True, ensure_ascii=False, allow_nan=False, default=str)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(key): _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Write ``path`` through ``write(tmp)`` on a temporary sibling, fsync, then ``os.replace``.

    Readers (and a crash) see the old file or the complete new one, never a torn one.
    """
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}{PARTIAL_SUFFIX}")
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); Windows cannot open folders and does not need it."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
