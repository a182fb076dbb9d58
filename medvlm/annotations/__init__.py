"""The annotation store: reviewers' flags on model outputs, kept safe on disk for later training.

A package of four modules: ``records`` (the record types, no I/O), ``schema`` (the SQLite schema
and its migrations), ``store`` (:class:`AnnotationStore`) and ``exports`` (JSONL and Parquet). The
names below are its public API.

A radiologist's flags ("superficial", "hallucinated finding"...) are the product's data, so this
module is built to never lose or corrupt one and to never keep anything that identifies a patient.

Layout of a data folder (``$MEDVLM_DATA_DIR``, default ``./medvlm-data``)::

    annotations.sqlite3        the rows (SQLite, WAL journal; -wal/-shm files sit beside it)
    images/<sha256>.png        each image once, named by its content hash

**Schema** (version in ``PRAGMA user_version``; :data:`_MIGRATIONS` upgrades older files):

* ``outputs``: one row per model output (``output_id``): the image hash, whitelisted image
  metadata (JSON), question, options (JSON list), completion and its parse, model description,
  generation settings, timing (JSON), prompt style, ``generated_at``. An output is immutable.
* ``annotations``: one row per (``output_id``, ``reviewer``, ``session_key``), unique: comment, the reviewer's
  correct answer, ``app_version``, ``created_at``, ``updated_at``. Several reviewers of one output
  share its ``outputs`` row, which is what reviewer agreement is computed over.
* ``annotation_flags(annotation_id, flag)``: the flags, one row each, indexed by flag, so that
  filtering by flag is a SQL query; ``flag`` references ``flags(name, label)``, which mirrors
  :data:`FLAGS` (kept in step on every open, so a new flag needs no migration).
* ``annotation_versions(annotation_id, version)`` (schema 2): every save of a review (flags as a
  JSON list, comment, correct answer, app version, time). ``annotations`` holds the latest; a
  later click never erases an earlier one.
* ``campaigns``, ``campaign_outputs``, ``campaign_claims``, ``campaign_skips`` (schema 3): review
  campaigns and who holds which output (:mod:`medvlm.annotations.campaigns`).
* ``annotation_spans(annotation_id, start, end, label)`` (schema 4): passages of the completion a
  reviewer marked; each version of a review keeps its spans too.
* ``campaign_adjudications(campaign_id, output_id)`` (schema 5): an adjudicator's flags for an
  output its reviewers disagreed on, beside (never instead of) their reviews.
* ``campaign_questions``, ``campaign_generation`` (schema 6): campaigns answered by medvlm from a
  dataset; ``outputs.question_type``.
* ``verdicts`` (schema 7): pairwise verdicts on two outputs for the same case (which reasoning is
  better, a tie, or both poor), one per (pair, reviewer), in terms of outputs, never of sides.
* ``verdict_versions(verdict_id, version)`` (schema 8): every save of a verdict; ``verdicts``
  holds the latest, which is the one that counts.
* ``campaign_pair_adjudications(campaign_id, first_output)`` (schema 9): an adjudicator's verdict
  on a comparison campaign's pair, beside (never instead of) its reviewers' verdicts.
* ``annotations.session_key`` (schema 10): in name mode, an opaque random key of the browser tab
  that saved the review, so a namesake typing the same name in another tab saves a review of
  their own instead of a version of someone else's; ``''`` for signed-in reviewers and older rows.
  It is never exported.

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

from medvlm.annotations.exports import copy_image, export_jsonl, export_parquet
from medvlm.annotations.records import (
    FLAGS,
    IMAGES_DIR,
    OUTPUT_COLUMNS,
    REASONING_FAULTS,
    SAFE_METADATA_KEYS,
    SAMPLE_FIELDS,
    SPAN_LABELS,
    VERDICT_CHOICES,
    Annotation,
    AnnotationError,
    ModelOutput,
    Review,
    ReviewVersion,
    Span,
    Verdict,
    filter_metadata,
    image_relpath,
    image_sha256,
)
from medvlm.annotations.schema import MIGRATIONS, SCHEMA_VERSION
from medvlm.annotations.store import (
    DATA_DIR_ENV,
    DB_NAME,
    PARTIAL_MAX_AGE_S,
    AnnotationStore,
    default_data_dir,
    remove_stale_partials,
)
from medvlm.atomic import PARTIAL_SUFFIX

__all__ = [
    "DATA_DIR_ENV",
    "DB_NAME",
    "FLAGS",
    "IMAGES_DIR",
    "MIGRATIONS",
    "OUTPUT_COLUMNS",
    "PARTIAL_MAX_AGE_S",
    "PARTIAL_SUFFIX",
    "REASONING_FAULTS",
    "SAFE_METADATA_KEYS",
    "SAMPLE_FIELDS",
    "SCHEMA_VERSION",
    "SPAN_LABELS",
    "VERDICT_CHOICES",
    "Annotation",
    "AnnotationError",
    "AnnotationStore",
    "ModelOutput",
    "Review",
    "ReviewVersion",
    "Span",
    "Verdict",
    "copy_image",
    "default_data_dir",
    "export_jsonl",
    "export_parquet",
    "filter_metadata",
    "image_relpath",
    "image_sha256",
    "remove_stale_partials",
]
