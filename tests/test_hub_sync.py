"""Hub sync with a fake CommitScheduler: folder layout, JSON lines, images, kwargs, privacy. No network."""

from __future__ import annotations

import inspect
import json
import logging
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import CommitScheduler
from huggingface_hub.hf_api import DEFAULT_IGNORE_PATTERNS
from huggingface_hub.utils import filter_repo_objects
from PIL import Image, PngImagePlugin

import medvlm.hub_sync as hub_sync_module
from helpers import model_output
from medvlm.annotations import AnnotationError, AnnotationStore, ModelOutput, Review
from medvlm.hub_sync import DATASET_CARD, HUB_DATASET_ENV, HUB_DIR, TOKEN_ENV, HubSync, hub_sync_from_env

MARKER = "DOE^JANE-PATIENT-4471"


class FakeScheduler:
    """Stands in for CommitScheduler: records its kwargs, its triggers and whether it was stopped."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.lock = threading.Lock()
        self.triggers = 0
        self.stopped = False
        self.push_error: Exception | None = None

    def trigger(self) -> Future:
        self.triggers += 1
        future: Future = Future()
        if self.push_error is not None:
            future.set_exception(self.push_error)
        else:
            future.set_result(None)
        return future

    def stop(self) -> None:
        self.stopped = True


def make_output(index: int, image: Image.Image | None = None, **metadata: Any) -> ModelOutput:
    """A small PNG output (24 x 16, its shade set by ``index``) with extra image metadata."""
    return model_output(
        index,
        image=image or Image.new("RGB", (24, 16), (index, 0, 0)),
        image_metadata={"source_format": "PNG", "width": 24, "height": 16, **metadata},
    )


@pytest.fixture
def store(tmp_path: Path) -> AnnotationStore:
    return AnnotationStore(tmp_path / "data")


@pytest.fixture
def sync(store: AnnotationStore) -> HubSync:
    return HubSync(store, "someone/annotations", token="hf_test", every_minutes=2.5, scheduler_factory=FakeScheduler)


def lines(sync: HubSync) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for path in sorted((sync.folder / "annotations").glob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]


def test_the_scheduler_gets_real_commit_scheduler_arguments(sync: HubSync, store: AnnotationStore) -> None:
    kwargs = sync.scheduler.kwargs
    accepted = inspect.signature(CommitScheduler).parameters
    assert set(kwargs) <= set(accepted), set(kwargs) - set(accepted)
    assert kwargs["repo_id"] == "someone/annotations"
    assert kwargs["repo_type"] == "dataset"
    assert Path(kwargs["folder_path"]) == store.data_dir / "hub"
    assert kwargs["every"] == 2.5
    assert kwargs["private"] is True
    assert kwargs["token"] == "hf_test"


def test_record_appends_a_line_and_places_the_image_once(sync: HubSync, store: AnnotationStore) -> None:
    first, _ = store.add(make_output(1), Review("Dr Grey", ("superficial",)))
    sync.record(first)
    updated, _ = store.add(make_output(1), Review("Dr Grey", ("sound",), "on second thought"))
    sync.record(updated)
    other, _ = store.add(make_output(2), Review("Dr House", ("hallucination",)))
    sync.record(other)

    records = lines(sync)
    assert [record["flags"] for record in records] == [["superficial"], ["sound"], ["hallucination"]]
    unprobed = {"probes": None}  # what the exports write for an output never probed
    assert records[0] == {**first.to_record(), **unprobed} and records[1] == {**updated.to_record(), **unprobed}
    assert records[1]["updated_at"] >= records[0]["updated_at"]  # consumers keep the latest per (output_id, reviewer)
    assert len(list((sync.folder / "annotations").glob("*.jsonl"))) == 1  # one file per process
    images = sorted((sync.folder / "images").iterdir())
    assert [path.name for path in images] == sorted({f"{first.image_sha256}.png", f"{other.image_sha256}.png"})
    for record in records:
        with Image.open(sync.folder / record["image"]) as image:  # record paths resolve in the repo
            assert image.size == (24, 16)
    assert "data_files: annotations/*.jsonl" in (sync.folder / "README.md").read_text()


def test_a_card_an_earlier_version_wrote_is_brought_up_to_date_and_the_current_one_left_alone(
    store: AnnotationStore,
) -> None:
    """A folder kept on persistent storage has the card an earlier version wrote (before the verdicts
    configuration): started again, the sync rewrites it, or the verdicts stay invisible to the viewer."""
    card = store.data_dir / HUB_DIR / "README.md"
    card.parent.mkdir(parents=True)
    card.write_text("---\nconfigs:\n- config_name: default\n  data_files: annotations/*.jsonl\n---\n# old\n")
    HubSync(store, "someone/annotations", token="hf_test", scheduler_factory=FakeScheduler)
    assert card.read_text() == DATASET_CARD and "data_files: verdicts/*.jsonl" in DATASET_CARD
    written = card.stat().st_mtime_ns
    HubSync(store, "someone/annotations", token="hf_test", scheduler_factory=FakeScheduler)
    assert card.stat().st_mtime_ns == written  # unchanged: not uploaded again
    assert [path.name for path in card.parent.iterdir() if path.name.endswith(".partial")] == []


def test_a_probed_outputs_review_syncs_with_its_probes(sync: HubSync, store: AnnotationStore) -> None:
    """The Ask page probes an answer, then its review is saved: the Hub line carries the probes, marked as a
    machine's, as the exports write them."""
    from medvlm.probes import ProbeAnswer, ProbeKind

    output = make_output(1)
    blank = ProbeAnswer(ProbeKind.BLANK, "black", tuple(output.options), "<answer>B</answer>", "B", True, 0.5)
    store.add_probe_answers(output, [blank], probed_by="Dr Grey")
    annotation, _ = store.add(output, Review("Dr Grey", ("sound",)))
    sync.record(annotation, store.probe_answers([annotation.output_id]))
    (record,) = lines(sync)
    assert record["probes"]["made_by"] == "probe" and record["probes"]["answers"] == [blank.to_dict()]
    assert record["probes"]["summary"]["image_invariant"] is False
    assert "probes" in (sync.folder / "README.md").read_text()


def test_a_verdict_syncs_as_one_line_with_both_answers_and_the_image_once(
    sync: HubSync, store: AnnotationStore
) -> None:
    """Pairwise verdicts go to their own configuration (``verdicts/``): each line stands alone."""
    import dataclasses

    from datasets import load_dataset

    from medvlm.annotations import Verdict

    base = make_output(3)
    other = dataclasses.replace(base, output_id="f" * 32, completion="<think>x</think><answer>B</answer>", letter="B",
                                model={**base.model, "model": "grpo-run"})  # fmt: skip
    verdict = Verdict.from_sides(other.output_id, base.output_id, "first", reviewer="Dr Grey", blind=True)
    stored, _ = store.add_verdict(base, other, verdict)
    sync.record_verdict(stored, base, other, "base vs grpo")
    sync.record_verdict(stored, base, other, "base vs grpo")
    (verdicts_file,) = (sync.folder / "verdicts").glob("*.jsonl")
    assert verdicts_file.stem == sync.lines_path.stem  # one pair of files per process
    first, again = [json.loads(line) for line in verdicts_file.read_text().splitlines()]
    assert first == again and first["preferred"] == other.output_id and first["shown_first"] == other.output_id
    assert first["campaign"] == "base vs grpo" and first["reviewer"] == "Dr Grey" and first["blind"] is True
    assert first["answers"][other.output_id] == {
        "completion": other.completion, "letter": "B", "format_ok": other.format_ok, "model": "grpo-run"
    }  # fmt: skip
    assert first["answers"][base.output_id]["model"] == base.model["model"]
    assert [path.name for path in (sync.folder / "images").iterdir()] == [Path(first["image"]).name]
    with Image.open(sync.folder / first["image"]) as image:
        assert image.size == (24, 16)
    card = (sync.folder / "README.md").read_text()
    assert "config_name: verdicts" in card and "data_files: verdicts/*.jsonl" in card
    rows = load_dataset("json", data_files=str(verdicts_file), split="train", cache_dir=str(sync.folder.parent / "c"))
    assert rows[0]["outcome"] == "preferred" and rows[0]["question"] == base.question


def test_record_writes_only_under_the_scheduler_lock(sync: HubSync, store: AnnotationStore) -> None:
    annotation, _ = store.add(make_output(1), Review("Dr Grey", ("sound",)))
    with sync.scheduler.lock:  # a commit is listing files
        writer = threading.Thread(target=sync.record, args=(annotation,))
        writer.start()
        time.sleep(0.1)
        assert lines(sync) == [] and not (sync.folder / "images").exists()
    writer.join(5)
    assert len(lines(sync)) == 1


def test_files_being_written_are_never_uploaded(sync: HubSync) -> None:
    (sync.folder / "images").mkdir()
    names = ["README.md", "annotations/a.jsonl", "images/abc.png", "images/.abc.png.0123.partial"]
    patterns = sync.scheduler.kwargs["ignore_patterns"] + DEFAULT_IGNORE_PATTERNS  # as CommitScheduler combines them
    assert list(filter_repo_objects(names, ignore_patterns=patterns)) == names[:3]


def test_stop_pushes_then_stops_once(sync: HubSync) -> None:
    sync.stop()
    sync.stop()
    assert (sync.scheduler.triggers, sync.scheduler.stopped) == (1, True)


def test_a_failed_final_push_is_logged_and_still_stops(sync: HubSync, caplog: pytest.LogCaptureFixture) -> None:
    sync.scheduler.push_error = OSError("network unreachable")
    with caplog.at_level(logging.WARNING, logger="medvlm.hub_sync"):
        sync.stop()
    assert sync.scheduler.stopped
    assert "network unreachable" in caplog.text


def test_a_scheduler_that_cannot_start_raises_a_clear_error(store: AnnotationStore) -> None:
    def refuse(**kwargs: Any) -> None:
        raise PermissionError("401 Unauthorized")

    with pytest.raises(AnnotationError, match=f"401 Unauthorized.*unset {HUB_DATASET_ENV}"):
        HubSync(store, "someone/annotations", scheduler_factory=refuse)


def test_hub_sync_from_env(store: AnnotationStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        hub_sync_module,
        "HubSync",
        lambda store, repo_id, **kw: HubSync(store, repo_id, scheduler_factory=FakeScheduler, **kw),
    )
    monkeypatch.delenv(HUB_DATASET_ENV, raising=False)
    assert hub_sync_from_env(store) is None
    monkeypatch.setenv(HUB_DATASET_ENV, "  ")
    assert hub_sync_from_env(store) is None
    monkeypatch.setenv(HUB_DATASET_ENV, "someone/annotations")
    monkeypatch.setenv(TOKEN_ENV, "hf_env")
    sync = hub_sync_from_env(store)
    assert sync is not None
    assert (sync.scheduler.kwargs["repo_id"], sync.scheduler.kwargs["token"]) == ("someone/annotations", "hf_env")


def test_patient_identity_never_reaches_the_sync_folder(sync: HubSync, store: AnnotationStore, tmp_path: Path) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("PatientName", MARKER)
    Image.new("RGB", (24, 16), (9, 9, 9)).save(tmp_path / "tagged.png", pnginfo=info)
    with Image.open(tmp_path / "tagged.png") as tagged:
        tagged.load()
        assert tagged.info["PatientName"] == MARKER
        annotation, _ = store.add(make_output(3, image=tagged, PatientName=MARKER), Review("Dr Grey", ("sound",)))
    sync.record(annotation)
    files = [path for path in sync.folder.rglob("*") if path.is_file()]
    assert len(files) == 3  # card, lines, image
    for path in files:
        data = path.read_bytes()
        assert MARKER.encode() not in data and b"PatientName" not in data, path
