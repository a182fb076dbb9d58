"""Exports of the annotation store: JSON Lines with images beside it, and self-contained Parquet.

Both are what ``datasets.load_dataset`` reads and ``train.data`` trains on; both are written
atomically (:func:`medvlm.atomic.atomic_write`), so a reader never sees half a file. Each review's
row carries its output's probes where it was probed (``probes``, marked ``made_by: probe``:
a machine's evidence beside a person's flags; :func:`medvlm.probes.probe_record`), else null.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medvlm.annotations.records import (
    FREE_FORM_FIELDS,
    Annotation,
    AnnotationError,
    ModelOutput,
    Verdict,
    image_relpath,
)
from medvlm.atomic import atomic_write, atomic_write_text
from medvlm.probes import ProbeAnswer, probe_record

Probes = Mapping[str, Sequence[ProbeAnswer]]
"""The stored probe answers of the exported outputs, by output id (:meth:`AnnotationStore.probe_answers`)."""


def export_jsonl(annotations: Sequence[Annotation], path: str | Path, probes: Probes | None = None) -> Path:
    """Write ``annotations`` (the store's, oldest first) as one JSON object per line; return the path.

    Image paths in the records are relative to the file's folder: images not already there are
    copied to ``<folder>/images/``, so the file and that folder travel together.
    """
    target = _export_target(annotations, path)
    for annotation in annotations:
        copy_image(annotation, target.parent)
    lines = (json.dumps(export_record(annotation, probes), ensure_ascii=False) + "\n" for annotation in annotations)
    return atomic_write_text(target, "".join(lines))


def export_parquet(annotations: Sequence[Annotation], path: str | Path, probes: Probes | None = None) -> Path:
    """Write ``annotations`` (the store's, oldest first) as a self-contained Parquet file; return the path.

    The ``image`` column is a ``datasets.Image()`` feature holding the PNG bytes, so
    ``datasets.load_dataset("parquet", data_files=...)`` or ``Dataset.from_parquet`` decode it to
    PIL with no other file. The free-form dictionaries (``image_metadata``, ``model``,
    ``settings``, ``timing``) and ``probes`` are JSON strings here: as Arrow structs, an empty one cannot be
    written at all and rows from different app versions would disagree on the schema. Holds every
    image in memory while writing.
    """
    import datasets  # slow to import; only exports need it

    target = _export_target(annotations, path)
    records = [
        {
            **(record := export_record(annotation, probes)),
            **{key: json.dumps(getattr(annotation, key), sort_keys=True) for key in FREE_FORM_FIELDS},
            "probes": None if record["probes"] is None else json.dumps(record["probes"], sort_keys=True),
            "image": {"bytes": annotation.image_path.read_bytes(), "path": image_relpath(annotation.image_sha256)},
        }
        for annotation in annotations
    ]
    dataset = datasets.Dataset.from_list(records).cast_column("image", datasets.Image())
    return atomic_write(target, lambda tmp: dataset.to_parquet(str(tmp)))


def export_record(annotation: Annotation, probes: Probes | None = None) -> dict[str, Any]:
    """One review as the exports and the Hub sync write it: :meth:`Annotation.to_record` and its output's probes."""
    answers = (probes or {}).get(annotation.output_id, ())
    found = probe_record(annotation.completion, annotation.correct_answer, annotation.letter, answers)
    return {**annotation.to_record(), "probes": found}


def verdict_record(
    verdict: Verdict, first: ModelOutput, second: ModelOutput, campaign: str | None, image_sha: str
) -> dict[str, Any]:
    """One pairwise verdict as the Hub sync writes it, standing alone: the judgement in terms of outputs (which one
    was preferred, which was shown first), the question, the image's path (``image_sha``: the case's stored image,
    :func:`image_sha256`) and both answers with their models."""
    answers = {
        output.output_id: {
            "completion": output.completion,
            "letter": output.letter,
            "format_ok": output.format_ok,
            "model": output.model.get("model"),
        }
        for output in (first, second)
    }
    return {
        **dataclasses.asdict(verdict),
        "campaign": campaign,
        "question": first.question,
        "options": list(first.options),
        "image": image_relpath(image_sha),
        "answers": answers,
    }


def _export_target(annotations: Sequence[Annotation], path: str | Path) -> Path:
    """The resolved export path, its folder created; refused when there is nothing to export."""
    if not annotations:
        raise AnnotationError("There are no annotations to export yet.")
    target = Path(path).expanduser().resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def copy_image(annotation: Annotation, folder: str | Path) -> Path:
    """Make ``<folder>/images/<sha256>.png`` exist, so a record's relative image path resolves there.

    Used by the JSONL export and the Hub sync (:func:`copy_stored_image`).
    """
    return copy_stored_image(annotation.image_path, annotation.image_sha256, folder)


def copy_stored_image(source: Path, sha256: str, folder: str | Path) -> Path:
    """Make ``<folder>/images/<sha256>.png`` exist as a copy of the stored ``source``.

    A real (atomic) copy, not a hard link: whoever edits an exported image in place must not
    change the stored original.
    """
    target = Path(folder) / image_relpath(sha256)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))
    return target
