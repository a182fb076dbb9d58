"""Optional mirror of the annotations to a (private) Hugging Face Hub dataset repository.

The local :class:`~medvlm.annotations.AnnotationStore` is the source of truth; this copies each
saved annotation into ``<data_dir>/hub/`` and ``huggingface_hub.CommitScheduler`` uploads that
folder in the background every few minutes, following the append-only pattern of its
documentation (one JSONL file per process, written under ``scheduler.lock``)::

    README.md                       dataset card: the viewer and load_dataset read annotations/*.jsonl
    annotations/<process uuid>.jsonl  one review per line (its output's probes with it, as the exports write it)
    verdicts/<process uuid>.jsonl     one pairwise verdict per line, with both answers it compares
    images/<sha256>.png             each image once; records name it "images/<sha256>.png"

The folder is the root of the repository (not a sub-folder) so that the card's ``configs`` apply,
and ``load_dataset(repo_id)`` loads the annotations rather than guessing an image folder.

**Updates are appended, never rewritten**: a re-submitted review adds a new line. Consumers keep,
per (``output_id``, ``reviewer``), the line with the greatest ``updated_at`` (within one file that
is the last line; lines of several processes live in several files).

Enable it with ``MEDVLM_HUB_DATASET=<user>/<repo>`` (and ``HF_TOKEN`` or a saved login). If an
upload fails the files stay in the folder; every new process uploads the whole folder on its first
commit, so nothing is missed for good.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from huggingface_hub import CommitScheduler

from medvlm.annotations import (
    PARTIAL_SUFFIX,
    Annotation,
    AnnotationError,
    AnnotationStore,
    ModelOutput,
    Verdict,
    copy_image,
    image_relpath,
    image_sha256,
)
from medvlm.annotations.exports import Probes, copy_stored_image, export_record, verdict_record
from medvlm.atomic import atomic_write_text

logger = logging.getLogger(__name__)

HUB_DATASET_ENV = "MEDVLM_HUB_DATASET"
TOKEN_ENV = "HF_TOKEN"
HUB_DIR = "hub"

DATASET_CARD = """---
configs:
- config_name: default
  data_files: annotations/*.jsonl
- config_name: verdicts
  data_files: verdicts/*.jsonl
---
# medvlm annotations

Reviewers' flags on the reasoning of a medical vision-language model, written by the medvlm
workbench. One JSON object per line in `annotations/`; `image` is the path of the de-identified
image in this repository. A re-submitted review is a new line: per (`output_id`, `reviewer`) keep
the line with the greatest `updated_at`. Where the output was probed before the review was saved,
`probes` holds the model's answers to the same question with a blank image, another case's image
and the options rotated, and the verdicts drawn from them (`made_by: probe`, evidence beside a
person's flags); otherwise it is null. The `verdicts` configuration holds the pairwise verdicts
(which of two answers to the same case reasons better, in terms of their output ids), one per
line with both answers; a changed verdict is a new line, so keep the latest `decided_at` per
(`output_a`, `output_b`, `reviewer`).
"""


def _write_card(card: Path) -> None:
    """Write the dataset card unless it is already this version's.

    A folder kept on persistent storage holds the card an earlier version wrote, and a card that
    lacks a configuration (``verdicts`` was added later) hides those files from the viewer and from
    ``load_dataset(repo_id, name)``. Written atomically, so the scheduler of another process sharing
    the folder never uploads half of it.
    """
    if not card.exists() or card.read_text(encoding="utf-8") != DATASET_CARD:
        atomic_write_text(card, DATASET_CARD)


class HubSync:
    """Appends saved annotations to a folder that a ``CommitScheduler`` pushes to the Hub."""

    def __init__(
        self,
        store: AnnotationStore,
        repo_id: str,
        *,
        token: str | None = None,
        every_minutes: float = 5,
        private: bool = True,
        scheduler_factory: Callable[..., Any] = CommitScheduler,
    ) -> None:
        self.folder: Path = store.data_dir / HUB_DIR
        for part in ("annotations", "verdicts"):
            (self.folder / part).mkdir(parents=True, exist_ok=True)
        _write_card(self.folder / "README.md")
        process = uuid.uuid4().hex
        self.lines_path: Path = self.folder / "annotations" / f"{process}.jsonl"
        self.verdicts_path: Path = self.folder / "verdicts" / f"{process}.jsonl"
        self.store = store
        try:  # CommitScheduler creates the repository now: a bad token or no network fails here
            self.scheduler = scheduler_factory(
                repo_id=repo_id,
                repo_type="dataset",
                folder_path=self.folder,
                every=every_minutes,
                private=private,
                token=token,
                ignore_patterns=[f"*{PARTIAL_SUFFIX}"],  # an image copy in progress
            )
        except Exception as error:  # noqa: BLE001 - HTTP, auth and validation errors alike
            raise AnnotationError(
                f"Could not start syncing annotations to the Hub dataset {repo_id!r}: {error}. "
                f"Check the repository id and token, or unset {HUB_DATASET_ENV} to run without syncing."
            ) from error
        self._stopped = False

    def record(self, annotation: Annotation, probes: Probes | None = None) -> None:
        """Queue one saved annotation for upload: its image (once) and one JSON line, with the output's ``probes``
        (by output id) as they stand now.

        Done under ``scheduler.lock`` so that a commit never lists a half-written file.
        """
        line = json.dumps(export_record(annotation, probes), ensure_ascii=False) + "\n"
        with self.scheduler.lock:
            copy_image(annotation, self.folder)
            with self.lines_path.open("a", encoding="utf-8") as handle:
                handle.write(line)

    def record_verdict(
        self, verdict: Verdict, first: ModelOutput, second: ModelOutput, campaign: str | None = None
    ) -> None:
        """Queue one saved pairwise verdict for upload: the case's image (once) and one JSON line holding the
        verdict and both answers (:func:`~medvlm.annotations.exports.verdict_record`)."""
        sha = image_sha256(first.image)  # hashed once: the line names the image, the copy is of it
        line = json.dumps(verdict_record(verdict, first, second, campaign, sha), ensure_ascii=False) + "\n"
        with self.scheduler.lock:
            copy_stored_image(self.store.data_dir / image_relpath(sha), sha, self.folder)
            with self.verdicts_path.open("a", encoding="utf-8") as handle:
                handle.write(line)

    def stop(self) -> None:
        """Push what is pending, then stop the scheduler. A failed push is logged, not raised:
        the annotations are safe locally and the next start uploads them."""
        if self._stopped:
            return
        self._stopped = True
        try:
            self.scheduler.trigger().result()
        except Exception as error:  # noqa: BLE001 - network, auth or Hub errors alike
            logger.warning(
                "Final upload of annotations to the Hub failed (%s); they remain in %s.", error, self.folder
            )
        finally:
            self.scheduler.stop()


def hub_sync_from_env(store: AnnotationStore) -> HubSync | None:
    """A :class:`HubSync` to ``$MEDVLM_HUB_DATASET`` (token: ``$HF_TOKEN`` or the saved login); None when unset."""
    repo_id = os.environ.get(HUB_DATASET_ENV, "").strip()
    if not repo_id:
        return None
    return HubSync(store, repo_id, token=os.environ.get(TOKEN_ENV) or None)
