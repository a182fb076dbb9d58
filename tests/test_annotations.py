"""The annotation store: round trips, idempotency, durability under threads and crashes, privacy, exports."""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import struct
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

import medvlm

# "from medvlm import annotations" would get the package's __future__ feature, not the module:
import medvlm.annotations as annotations_module
import medvlm.annotations.schema as schema_module
import medvlm.annotations.store as store_module
from helpers import make_image, undo_schema_11
from helpers import model_output as make_output
from medvlm.annotations import (
    DATA_DIR_ENV,
    FLAGS,
    SCHEMA_VERSION,
    AnnotationError,
    AnnotationStore,
    Review,
    default_data_dir,
    image_sha256,
)
from medvlm.errors import MedVLMError
from medvlm.images import SafeMetadata

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(tmp_path: Path) -> AnnotationStore:
    return AnnotationStore(tmp_path / "data")


def table_counts(store: AnnotationStore) -> dict[str, int]:
    with sqlite3.connect(store.db_path) as conn:
        return {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("outputs", "annotations", "annotation_flags")
        }


# -- round trip ------------------------------------------------------------------------------


def test_add_then_get_round_trips_every_field(store: AnnotationStore) -> None:
    output = make_output()
    annotation, created = store.add(
        output, Review("  Dr Grey ", ("wrong_answer", "superficial", "wrong_answer"), " odd ")
    )
    assert created
    assert store.get(annotation.id) == annotation
    assert annotation.reviewer == "Dr Grey"
    assert annotation.flags == ("superficial", "wrong_answer")  # FLAGS order, de-duplicated
    assert annotation.comment == "odd"
    for field in (
        "output_id",
        "question",
        "options",
        "completion",
        "reasoning",
        "answer_text",
        "letter",
        "format_ok",
        "problem",
        "stop_reason",
        "model",
        "settings",
        "prompt_style",
        "timing",
        "generated_at",
    ):
        assert getattr(annotation, field) == getattr(output, field), field
    assert annotation.image_metadata == output.image_metadata
    assert annotation.modality == "CT"
    assert annotation.model_id == "JZPeterPan/MedVLM-R1"
    assert annotation.correct_answer == "B" and annotation.is_correct is True
    assert annotation.app_version == medvlm.__version__
    assert annotation.created_at == annotation.updated_at
    assert annotation.image_path == store.data_dir / "images" / f"{annotation.image_sha256}.png"
    with Image.open(annotation.image_path) as stored:
        assert stored.size == output.image.size
        assert image_sha256(stored) == annotation.image_sha256  # the name is the pixels' hash


def test_store_creates_its_folder_and_schema(tmp_path: Path) -> None:
    store = AnnotationStore(tmp_path / "a" / "b")
    assert (store.data_dir / "images").is_dir()
    with sqlite3.connect(store.db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert dict(conn.execute("SELECT name, label FROM flags")) == FLAGS


def test_default_data_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    assert default_data_dir() == Path("medvlm-data")
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "elsewhere"))
    assert default_data_dir() == tmp_path / "elsewhere"
    assert AnnotationStore().data_dir == tmp_path / "elsewhere"


@pytest.mark.parametrize(
    ("reviewer", "flags", "comment", "message"),
    [
        ("  ", ("sound",), "", "enter your name"),
        ("Dr Grey", ("brilliant",), "", "Unknown flag 'brilliant'"),
        ("Dr Grey", (), "  ", "Choose at least one flag, mark a passage or write a comment."),
        ("Dr Grey", ("sound", "hallucination"), "", "cannot be combined with 'Hallucinated finding'"),
    ],
)
def test_invalid_reviews_are_refused_with_a_clear_message(
    reviewer: str, flags: tuple[str, ...], comment: str, message: str
) -> None:
    with pytest.raises(AnnotationError, match=message) as raised:
        Review(reviewer, flags, comment)
    assert isinstance(raised.value, MedVLMError)


def test_review_accepts_a_comment_alone_and_a_single_flag_string() -> None:
    assert Review("r", (), "looks fine").flags == ()
    assert Review("r", "hallucination").flags == ("hallucination",)  # type: ignore[arg-type]
    assert Review("r", ["wrong_answer", "superficial"]).flags == ("superficial", "wrong_answer")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"output_id": " "}, "no id"),
        ({"correct_answer": "D"}, "option letters A, B, C"),
        ({"model": {"dtype": "float32"}}, "no 'model' entry"),
        ({"options": []}, "non-empty list"),
    ],
)
def test_invalid_outputs_are_refused_before_anything_is_written(
    store: AnnotationStore, changes: dict, message: str
) -> None:
    with pytest.raises(AnnotationError, match=message):
        store.add(make_output(**changes), Review("r", ("sound",)))
    assert store.count() == 0


def test_correct_answer_is_normalised_and_scored(store: AnnotationStore) -> None:
    right, _ = store.add(make_output(1, correct_answer=" b "), Review("r", ("sound",)))
    wrong, _ = store.add(make_output(2, correct_answer="A"), Review("r", ("wrong_answer",)))
    unknown, _ = store.add(make_output(3, correct_answer=""), Review("r", ("sound",)))
    no_letter, _ = store.add(make_output(4, letter=None), Review("r", ("sound",)))
    assert (right.correct_answer, right.is_correct) == ("B", True)
    assert wrong.is_correct is False
    assert (unknown.correct_answer, unknown.is_correct) == (None, None)
    assert no_letter.is_correct is False


def test_non_finite_numbers_are_stored_as_null(store: AnnotationStore) -> None:
    timing = {"time_to_first_token_s": None, "total_s": 1.0, "new_tokens": 1, "tokens_per_second": float("nan")}
    annotation, _ = store.add(make_output(timing=timing), Review("r", ("sound",)))
    assert annotation.timing == {**timing, "tokens_per_second": None}


# -- idempotency and sharing -----------------------------------------------------------------


def test_duplicate_click_updates_the_row_in_place(store: AnnotationStore) -> None:
    output = make_output()
    first, created_first = store.add(output, Review("Dr Grey", ("superficial",)))
    second, created_second = store.add(
        output, Review("Dr Grey ", ("hallucination", "wrong_answer"), "missed the nodule")
    )
    assert (created_first, created_second) == (True, False)
    assert store.count() == 1
    assert second.id == first.id
    assert second.flags == ("hallucination", "wrong_answer") and second.comment == "missed the nodule"
    assert second.created_at == first.created_at and second.updated_at >= first.updated_at
    assert table_counts(store) == {"outputs": 1, "annotations": 1, "annotation_flags": 2}
    assert store.query(flag="superficial") == []


def test_reviewers_share_one_output_and_images_are_stored_once(store: AnnotationStore) -> None:
    output = make_output()
    store.add(output, Review("Dr Grey", ("sound",)))
    store.add(output, Review("Dr House", ("superficial",)))
    store.add(make_output(9, image=output.image.copy()), Review("Dr Grey", ("sound",)))  # same pixels, new output
    assert store.count() == 3
    assert table_counts(store)["outputs"] == 2
    assert len(list((store.data_dir / "images").iterdir())) == 1


def test_an_output_id_reused_for_different_content_is_refused(store: AnnotationStore) -> None:
    store.add(make_output(), Review("Dr Grey", ("sound",)))
    with pytest.raises(AnnotationError, match="differs in: completion"):
        store.add(make_output(completion="<think>other</think><answer>A</answer>"), Review("Dr House", ("sound",)))
    assert store.count() == 1


# -- queries ---------------------------------------------------------------------------------


def test_query_filters_in_sql_and_returns_newest_first(store: AnnotationStore) -> None:
    mr = {**make_output().image_metadata, "modality": "MR"}
    a, _ = store.add(make_output(1), Review("Dr Grey", ("superficial",)))
    b, _ = store.add(make_output(2, image_metadata=mr), Review("Dr House", ("superficial", "hallucination")))
    c, _ = store.add(make_output(3, model={"model": "Qwen/Qwen2-VL-2B-Instruct"}), Review("Dr Grey", ("sound",)))
    ids = lambda annotations: [annotation.id for annotation in annotations]  # noqa: E731
    assert ids(store.query()) == [c.id, b.id, a.id]
    assert ids(store.query(flag="superficial")) == [b.id, a.id]
    assert ids(store.query(flag="superficial", modality="MR")) == [b.id]
    assert ids(store.query(reviewer="Dr Grey")) == [c.id, a.id]
    assert ids(store.query(model_id="Qwen/Qwen2-VL-2B-Instruct")) == [c.id]
    assert ids(store.query(limit=1)) == [c.id]
    assert store.query(flag="contradiction") == []
    assert store.distinct("reviewer") == ["Dr Grey", "Dr House"]
    assert store.distinct("modality") == ["CT", "MR"]
    assert store.distinct("model_id") == ["JZPeterPan/MedVLM-R1", "Qwen/Qwen2-VL-2B-Instruct"]


def test_filtering_by_flag_searches_the_flag_index(store: AnnotationStore) -> None:
    sql = f"EXPLAIN QUERY PLAN {store_module._SELECT_ANNOTATIONS} WHERE {store_module._FLAG_FILTER}"
    with sqlite3.connect(store.db_path) as conn:
        plan = [row[-1] for row in conn.execute(sql, ("sound",))]
    assert any("annotation_flags_flag (flag=?)" in step for step in plan), plan
    assert not any(step.startswith("SCAN") for step in plan), plan


def test_bad_lookups_raise_annotation_errors(store: AnnotationStore) -> None:
    with pytest.raises(AnnotationError, match="no annotation with id 42"):
        store.get(42)
    with pytest.raises(AnnotationError, match="Unknown flag"):
        store.query(flag="nope")
    with pytest.raises(AnnotationError, match="choose from: reviewer, modality, model_id"):
        store.distinct("question")
    with pytest.raises(AnnotationError, match="at least 1"):
        store.query(limit=0)


# -- durability ------------------------------------------------------------------------------


def test_reopening_sees_every_row(tmp_path: Path) -> None:
    with AnnotationStore(tmp_path) as store:
        added = [store.add(make_output(i), Review("r", ("sound",)))[0] for i in range(5)]
    assert (
        not (tmp_path / "annotations.sqlite3-wal").exists()
        or (tmp_path / "annotations.sqlite3-wal").stat().st_size == 0
    )
    with pytest.raises(AnnotationError, match="closed"):
        store.count()
    reopened = AnnotationStore(tmp_path)
    assert reopened.query()[::-1] == added


def test_a_store_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    AnnotationStore(tmp_path)
    with sqlite3.connect(tmp_path / "annotations.sqlite3") as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(AnnotationError, match="newer medvlm"):
        AnnotationStore(tmp_path)


def test_concurrent_adds_from_eight_threads(store: AnnotationStore) -> None:
    start = threading.Barrier(8)

    def worker(thread: int) -> list[bool]:
        start.wait()
        created = []
        for i in range(6):
            created.append(store.add(make_output(thread * 100 + i), Review(f"r{thread}", ("sound",)))[1])
            created.append(store.add(make_output(7777), Review("same", ("superficial",)))[1])  # a shared double click
        return created

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(worker, range(8)))  # re-raises any 'database is locked'
    assert store.count() == 8 * 6 + 1
    assert sum(created for result in results for created in result[1::2]) == 1  # exactly one insert of the shared row
    assert table_counts(store) == {"outputs": 8 * 6 + 1, "annotations": 8 * 6 + 1, "annotation_flags": 8 * 6 + 1}


def test_a_crash_inside_the_transaction_leaves_nothing_behind(
    store: AnnotationStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept, _ = store.add(make_output(1), Review("Dr Grey", ("sound",)))

    def crash(*args: object) -> None:
        raise RuntimeError("power cut")

    with monkeypatch.context() as patch:
        patch.setattr(store_module, "_write_flags", crash)  # runs after the row inserts, before commit
        with pytest.raises(RuntimeError, match="power cut"):
            store.add(make_output(2), Review("Dr Grey", ("superficial",)))
        with pytest.raises(RuntimeError, match="power cut"):  # an update of an existing row, too
            store.add(make_output(1), Review("Dr Grey", ("hallucination",), "changed"))
    assert table_counts(store) == {"outputs": 1, "annotations": 1, "annotation_flags": 1}
    assert store.get(kept.id) == kept
    again, created = store.add(make_output(2), Review("Dr Grey", ("superficial",)))  # the same add now succeeds
    assert created and again.flags == ("superficial",)
    assert store.count() == 2


def test_an_image_that_cannot_be_written_stores_no_row(
    store: AnnotationStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_module, "atomic_write_bytes", disk_full)
    with pytest.raises(AnnotationError, match="No space left on device.*review was not stored"):
        store.add(make_output(), Review("Dr Grey", ("sound",)))
    assert store.count() == 0


def test_a_killed_writer_process_loses_no_committed_row(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(REPO_ROOT / "tests")!r})
        from test_annotations import make_output
        from medvlm.annotations import AnnotationStore, Review
        store = AnnotationStore({str(tmp_path)!r})
        i = 0
        while True:
            annotation, _ = store.add(make_output(i), Review("writer", ("sound",), "x" * 5000))
            print(annotation.output_id, flush=True)  # printed only after the commit
            i += 1
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    committed = []
    try:
        while len(committed) < 25:
            line = process.stdout.readline()
            assert line, "the writer process died on its own"
            committed.append(line.strip())
    finally:
        process.kill()  # SIGKILL on POSIX: no cleanup, possibly mid-transaction
        process.wait()
        process.stdout.close()
    with sqlite3.connect(tmp_path / "annotations.sqlite3") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    store = AnnotationStore(tmp_path)
    stored = {annotation.output_id for annotation in store.query()}
    assert set(committed) <= stored
    assert all(annotation.image_path.is_file() for annotation in store.query())
    assert store.add(make_output(10_000), Review("after", ("sound",)))[1]


# -- privacy ---------------------------------------------------------------------------------

MARKERS = ("DOE^JANE-PATIENT", "MRN-99887766", "ICC-SECRET-4411", "EXIF-SECRET-2233")


def image_with_identity(tmp_path: Path) -> Image.Image:
    """An RGB PIL image whose ``info`` carries identity: PNG tEXt chunks, an ICC profile, EXIF."""
    info = PngImagePlugin.PngInfo()
    info.add_text("PatientName", MARKERS[0])
    info.add_text("PatientID", MARKERS[1])
    path = tmp_path / "tagged.png"
    make_image(77).save(path, pnginfo=info)
    image = Image.open(path)
    image.load()
    image.info["icc_profile"] = MARKERS[2].encode() * 4
    image.info["exif"] = b"Exif\x00\x00" + MARKERS[3].encode()
    assert image.mode == "RGB" and image.info["PatientName"] == MARKERS[0]
    return image


def png_chunk_types(data: bytes) -> list[str]:
    types, position = [], 8
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        types.append(kind.decode())
        position += 12 + length
    return types


def assert_no_marker_in_files(folder: Path) -> None:
    files = [path for path in folder.rglob("*") if path.is_file()]
    assert files
    for path in files:
        data = path.read_bytes()
        for marker in (*MARKERS, "PatientName", "PatientID"):
            assert marker.encode() not in data, f"{marker} found in {path}"


def test_patient_identity_never_reaches_the_disk_or_the_exports(tmp_path: Path) -> None:
    store = AnnotationStore(tmp_path / "data")
    metadata = {
        **SafeMetadata(source_format="DICOM", width=48, height=32, modality="CT").to_dict(),
        "PatientName": MARKERS[0],
        "PatientID": MARKERS[1],
        "body_part": {"PatientName": MARKERS[0]},  # a whitelisted key with a smuggled value
    }
    annotation, _ = store.add(
        make_output(image=image_with_identity(tmp_path), image_metadata=metadata), Review("Dr Grey", ("sound",))
    )
    assert set(annotation.image_metadata) <= {field.name for field in dataclasses.fields(SafeMetadata)}
    assert "body_part" not in annotation.image_metadata
    assert png_chunk_types(annotation.image_path.read_bytes()) == ["IHDR", "IDAT", "IEND"]

    exports = tmp_path / "exports"
    store.export_jsonl(exports / "annotations.jsonl")
    parquet = store.export_parquet(exports / "annotations.parquet")
    assert_no_marker_in_files(store.data_dir)  # the database, its WAL, the images
    assert_no_marker_in_files(exports)
    import pyarrow.parquet as pq  # Parquet pages may be compressed: check the decoded values too

    decoded = json.dumps(pq.read_table(parquet).drop_columns(["image"]).to_pylist())
    assert not any(marker in decoded for marker in MARKERS)


# -- exports ---------------------------------------------------------------------------------


@pytest.fixture
def filled_store(store: AnnotationStore) -> AnnotationStore:
    store.add(make_output(1), Review("Dr Grey", ("superficial", "hallucination"), "thin"))
    store.add(make_output(2, timing=None, correct_answer=None), Review("Dr House", (), "comment only"))
    store.add(make_output(3, image=make_image(3, size=(20, 64)), settings={}), Review("Dr Grey", ("sound",)))
    return store


def assert_round_trip(rows: list[dict], store: AnnotationStore) -> None:
    expected = [annotation.to_record() for annotation in store.query()[::-1]]
    assert [row["output_id"] for row in rows] == [record["output_id"] for record in expected]
    for row, record in zip(rows, expected, strict=True):
        assert row["flags"] == record["flags"]
        assert row["options"] == record["options"]
        assert {key: row[key] for key in row if key.startswith("flag_")} == {
            f"flag_{key}": key in record["flags"] for key in FLAGS
        }
        for key in (
            "reviewer",
            "comment",
            "question",
            "completion",
            "letter",
            "correct_answer",
            "format_ok",
            "is_correct",
            "model_id",
            "updated_at",
        ):
            assert row[key] == record[key], key


def test_jsonl_export_loads_with_datasets_and_its_images_resolve(
    filled_store: AnnotationStore, tmp_path: Path
) -> None:
    import datasets

    path = filled_store.export_jsonl(tmp_path / "out" / "annotations.jsonl")
    rows = list(datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "cache")))
    assert_round_trip(rows, filled_store)
    for row, annotation in zip(rows, filled_store.query()[::-1], strict=True):
        exported = path.parent / row["image"]  # relative to the export's folder
        with Image.open(exported) as image, Image.open(annotation.image_path) as original:
            assert image.size == original.size
        assert not exported.samefile(annotation.image_path)  # a copy: editing it cannot touch the store
        assert row["image_metadata"]["modality"] == "CT"
    assert not list(path.parent.rglob("*.partial"))


def test_parquet_export_is_self_contained(filled_store: AnnotationStore, tmp_path: Path) -> None:
    import datasets

    path = filled_store.export_parquet(tmp_path / "out" / "annotations.parquet")
    assert sorted(p.name for p in path.parent.iterdir()) == ["annotations.parquet"]  # no image files needed
    loaded = datasets.load_dataset("parquet", data_files=str(path), split="train", cache_dir=str(tmp_path / "cache"))
    direct = datasets.Dataset.from_parquet(str(path), cache_dir=str(tmp_path / "cache2"))
    for dataset in (loaded, direct):
        assert isinstance(dataset.features["image"], datasets.Image)
        rows = list(dataset)
        assert_round_trip(rows, filled_store)
        assert [row["image"].size for row in rows] == [(48, 32), (48, 32), (20, 64)]
        assert all(isinstance(row["image"], Image.Image) for row in rows)
    assert json.loads(rows[1]["timing"]) is None and json.loads(rows[0]["timing"])["new_tokens"] == 40
    assert json.loads(rows[2]["settings"]) == {}  # an empty dict cannot be an Arrow struct: JSON text instead
    assert json.loads(rows[0]["model"])["model"] == "JZPeterPan/MedVLM-R1"


def test_a_probed_outputs_reviews_carry_its_probes_in_both_exports(
    filled_store: AnnotationStore, tmp_path: Path
) -> None:
    """The probes travel with the reviews (marked as a machine's); an output never probed gets null."""
    import datasets

    from medvlm.probes import ProbeAnswer, ProbeKind

    probed = filled_store.query()[-1]  # the first output: its model answered A
    blank = ProbeAnswer(ProbeKind.BLANK, "black", tuple(probed.options), "<answer>A</answer>", "A", False, 0.5)
    filled_store.add_probe_answers(make_output(1), [blank], probed_by="test")
    jsonl = filled_store.export_jsonl(tmp_path / "out" / "annotations.jsonl")
    parquet = filled_store.export_parquet(tmp_path / "out" / "annotations.parquet")
    by_jsonl = {row["output_id"]: row["probes"] for row in map(json.loads, jsonl.read_text().splitlines())}
    by_parquet = {
        row["output_id"]: row["probes"] and json.loads(row["probes"])
        for row in datasets.Dataset.from_parquet(str(parquet), cache_dir=str(tmp_path / "cache"))
    }
    for found in (by_jsonl, by_parquet):
        assert found[probed.output_id]["made_by"] == "probe"
        assert found[probed.output_id]["answers"] == [blank.to_dict()]
        assert found[probed.output_id]["summary"]["image_invariant"] is True  # the blank image gave the same answer
        assert [value for key, value in found.items() if key != probed.output_id] == [None, None]


def test_exporting_nothing_is_refused(store: AnnotationStore, tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match="no annotations to export"):
        store.export_jsonl(tmp_path / "x.jsonl")
    assert not (tmp_path / "x.jsonl").exists()


def test_an_export_into_the_data_folder_reuses_its_images(filled_store: AnnotationStore) -> None:
    before = sorted((filled_store.data_dir / "images").iterdir())
    path = filled_store.export_jsonl(filled_store.data_dir / "annotations.jsonl")
    assert sorted((filled_store.data_dir / "images").iterdir()) == before
    assert len(path.read_text().splitlines()) == filled_store.count()
    assert os.path.getsize(path) > 0


# -- schema, concurrency, leftovers, history (the hostile-input campaign) ----------------------


def open_and_save(data_dir: str, index: int, start: float) -> str:
    """One of several processes opening a fresh data folder at the same instant, then saving."""
    import time

    time.sleep(max(0.0, start - time.time()))
    try:
        store = AnnotationStore(data_dir)
        store.add(make_output(index), Review(f"reviewer {index}", ("sound",)))
    except Exception as error:  # noqa: BLE001 - reported to the parent
        return f"{type(error).__name__}: {error}"
    return "ok"


@pytest.mark.slow
def test_eight_processes_opening_a_fresh_folder_at_once_all_succeed(tmp_path: Path) -> None:
    import multiprocessing
    import time

    context = multiprocessing.get_context("spawn")  # fresh interpreters, as separate app processes are
    with context.Pool(8, initializer=sys.path.insert, initargs=(0, str(REPO_ROOT / "tests"))) as pool:
        for trial in range(6):
            folder = str(tmp_path / f"trial-{trial}")
            start = time.time() + 1.5
            results = pool.starmap(open_and_save, [(folder, index, start) for index in range(8)])
            assert results == ["ok"] * 8, results
            store = AnnotationStore(folder)
            assert store.count() == 8
            with sqlite3.connect(store.db_path) as conn:
                assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_crash_between_creating_the_tables_and_recording_the_version_leaves_a_store_that_opens(
    tmp_path: Path,
) -> None:
    script = textwrap.dedent(
        f"""
        import os
        import medvlm.annotations.schema as schema
        create = schema._create_schema_v1
        def create_then_die(conn):
            create(conn)
            os._exit(9)  # killed after the tables exist, before the schema version is written
        schema.MIGRATIONS = (create_then_die, *schema.MIGRATIONS[1:])
        from medvlm.annotations import AnnotationStore
        AnnotationStore({str(tmp_path)!r})
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 9, done.stderr
    store = AnnotationStore(tmp_path)  # today: "table flags already exists", forever
    assert store.add(make_output(), Review("after the crash", ("sound",)))[1]
    with sqlite3.connect(store.db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_failing_migration_step_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def half_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half_done (x)")
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(schema_module, "MIGRATIONS", (half_then_fail,))
    with pytest.raises(AnnotationError, match="could not be opened"):
        AnnotationStore(tmp_path)
    with sqlite3.connect(tmp_path / "annotations.sqlite3") as conn:
        assert conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall() == []
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 0


def test_a_version_1_store_migrates_without_loss(tmp_path: Path) -> None:
    """A database written by the previous release (schema 1) opens with every review, now with its history."""
    conn = sqlite3.connect(tmp_path / "annotations.sqlite3", isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    schema_module._create_schema_v1(conn)
    conn.execute("PRAGMA user_version = 1")
    conn.executemany("INSERT INTO flags VALUES (?, ?)", FLAGS.items())
    row = store_module._output_row(make_output())
    columns = [column for column in annotations_module.OUTPUT_COLUMNS if column != "question_type"]  # from v6
    conn.execute(
        f"INSERT INTO outputs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
        [row[c] for c in columns],
    )
    conn.execute(
        "INSERT INTO annotations (output_id, reviewer, comment, correct_answer, app_version, created_at, updated_at)"
        " VALUES (?, 'Dr Old', 'from v1', 'B', '0.1.0', '2026-01-01T00:00:00+00:00', '2026-01-02T00:00:00+00:00')",
        (row["output_id"],),
    )
    conn.executemany("INSERT INTO annotation_flags VALUES (1, ?)", [("superficial",), ("wrong_answer",)])
    conn.execute("COMMIT")
    conn.close()
    (tmp_path / "images").mkdir()
    make_output().image.save(tmp_path / "images" / f"{row['image_sha256']}.png")

    store = AnnotationStore(tmp_path)
    (old,) = store.query()
    assert (old.reviewer, old.flags, old.comment, old.correct_answer, old.revision) == (
        "Dr Old",
        ("superficial", "wrong_answer"),
        "from v1",
        "B",
        1,
    )
    (version,) = store.history(old.id)
    assert (version.version, version.flags, version.comment, version.saved_at) == (
        1,
        ("superficial", "wrong_answer"),
        "from v1",
        "2026-01-02T00:00:00+00:00",
    )
    updated, created = store.add(make_output(), Review("Dr Old", ("sound",), "changed my mind"))
    assert (
        not created
        and updated.revision == 2
        and [v.comment for v in store.history(old.id)] == ["from v1", "changed my mind"]
    )


def test_leftover_partial_files_of_killed_writers_are_removed_on_open(tmp_path: Path) -> None:
    import time

    AnnotationStore(tmp_path)
    images = tmp_path / "images"
    stale = images / f".{'a' * 64}.png.deadbeef.partial"
    fresh = images / f".{'b' * 64}.png.cafef00d.partial"
    for path in (stale, fresh):
        path.write_bytes(b"half a png")
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))
    AnnotationStore(tmp_path)
    assert not stale.exists()
    assert fresh.exists()  # it may belong to a writer in another process right now


def test_every_save_is_kept_as_a_version_and_the_latest_is_shown(store: AnnotationStore) -> None:
    first, created = store.add(make_output(), Review("alice", ("superficial",), "restates the question"))
    assert created and first.revision == 1
    same, _ = store.add(make_output(), Review("alice", ("superficial",), "restates the question"))  # a double click
    assert same.revision == 1
    second, created = store.add(make_output(), Review("alice", ("sound",), "on reflection it is fine"))
    assert not created and second.id == first.id and second.revision == 2 and second.flags == ("sound",)
    history = store.history(first.id)
    assert [(v.version, v.flags, v.comment) for v in history] == [
        (1, ("superficial",), "restates the question"),
        (2, ("sound",), "on reflection it is fine"),
    ]
    assert store.count() == 1 and store.get(first.id).comment == "on reflection it is fine"


def test_a_namesake_in_another_session_saves_a_review_of_their_own(store: AnnotationStore) -> None:
    """Name mode: "alice" in two browser tabs is two reviews; each tab's edits version only its own."""
    hers, created = store.add(make_output(), Review("alice", ("superficial",), "hers"), session_key="tab-1")
    assert created
    theirs, created = store.add(make_output(), Review("ALICE", ("sound",), "the namesake's"), session_key="tab-2")
    assert created and theirs.id != hers.id and theirs.reviewer == "alice"
    again, created = store.add(
        make_output(), Review("alice", ("hallucination",), "hers, changed"), session_key="tab-1"
    )
    assert not created and again.id == hers.id
    assert [version.comment for version in store.history(hers.id)] == ["hers", "hers, changed"]
    assert [version.comment for version in store.history(theirs.id)] == ["the namesake's"]
    assert store.get(theirs.id).flags == ("sound",) and store.count() == 2


def test_the_schema_10_rebuild_keeps_every_review_its_flags_and_its_ids(tmp_path: Path) -> None:
    """The store of schema 9 (reviews, flags, versions, spans) rebuilt for schema 10 loses nothing, and the ids
    of deleted reviews are not given out again."""
    old = AnnotationStore(tmp_path)
    first, _ = old.add(make_output(), Review("Dr Nine", ("superficial", "hallucination"), "kept"))
    with sqlite3.connect(old.db_path, isolation_level=None) as conn:  # back to schema 9, as 0.1 wrote it
        conn.execute("BEGIN")
        conn.execute("PRAGMA foreign_keys = OFF")
        conn.execute(
            "CREATE TABLE nine AS SELECT id, output_id, reviewer, comment, correct_answer, app_version, created_at,"
            " updated_at FROM annotations"
        )
        conn.execute("DROP TABLE annotations")
        conn.execute(
            "CREATE TABLE annotations (id INTEGER PRIMARY KEY AUTOINCREMENT, output_id TEXT NOT NULL"
            " REFERENCES outputs (output_id), reviewer TEXT NOT NULL CHECK (reviewer <> ''), comment TEXT"
            " NOT NULL, correct_answer TEXT, app_version TEXT NOT NULL, created_at TEXT NOT NULL,"
            " updated_at TEXT NOT NULL, UNIQUE (output_id, reviewer))"
        )
        conn.execute("INSERT INTO annotations SELECT * FROM nine")
        conn.execute("DROP TABLE nine")
        conn.execute("UPDATE sqlite_sequence SET seq = 41 WHERE name = 'annotations'")  # reviews 2-41 deleted
        undo_schema_11(conn)
        conn.execute("PRAGMA user_version = 9")
        conn.execute("COMMIT")
    upgraded = AnnotationStore(tmp_path)
    kept = upgraded.get(first.id)
    assert (kept.flags, kept.comment, kept.revision) == (("superficial", "hallucination"), "kept", 1)
    with sqlite3.connect(upgraded.db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 12
        assert conn.execute("SELECT count(*) FROM probe_answers").fetchone() == (0,)
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    new, _ = upgraded.add(make_output(), Review("Dr Ten", (), "after"), session_key="tab")
    assert new.id == 42


def test_a_schema_11_store_stops_counting_unread_probe_answers_as_the_same(tmp_path: Path) -> None:
    """Schema 11 stored "changed" as 0 or 1, so an unreadable probe answer to an unreadable output read as "the
    same answer" (image-invariant). Upgraded, every answer with a missing letter decides nothing (NULL); the
    others keep what they said, in the order they were asked."""
    from medvlm.probes import ProbeAnswer, ProbeKind

    old = AnnotationStore(tmp_path)
    answered, cut_off = make_output(1), make_output(2, letter=None, completion="<think>The lobes are")
    old.add_probe_answers(answered, [], probed_by="test")
    old.add_probe_answers(cut_off, [], probed_by="test")
    options = tuple(answered.options)
    schema_11_rows = [  # (output, kind, variant, letter, changed as schema 11 stored it)
        (answered, "blank", "black", "B", 0),
        (answered, "rotate", "shift 1", None, 1),  # the probe named no option
        (answered, "rotate", "shift 2", "C", 1),
        (cut_off, "blank", "black", None, 0),  # neither named one: stored as "the same"
        (cut_off, "no_think", "no think", "A", 1),
    ]
    with sqlite3.connect(old.db_path, isolation_level=None) as conn:  # back to schema 11, as 0.2 wrote it
        conn.execute("BEGIN")
        conn.execute("DROP TABLE probe_answers")
        conn.execute(
            "CREATE TABLE probe_answers (output_id TEXT NOT NULL REFERENCES outputs (output_id), kind TEXT NOT NULL,"
            " variant TEXT NOT NULL, options TEXT NOT NULL, completion TEXT NOT NULL, letter TEXT,"
            " changed INTEGER NOT NULL CHECK (changed IN (0, 1)), seconds REAL NOT NULL, probed_by TEXT NOT NULL,"
            " created_at TEXT NOT NULL, PRIMARY KEY (output_id, kind, variant))"
        )
        conn.executemany(
            "INSERT INTO probe_answers VALUES (?, ?, ?, ?, ?, ?, ?, 0.5, 'test', '2026-01-01T00:00:00+00:00')",
            [
                (output.output_id, kind, variant, json.dumps(list(options)), "probe", letter, changed)
                for output, kind, variant, letter, changed in schema_11_rows
            ],
        )
        conn.execute("PRAGMA user_version = 11")
        conn.execute("COMMIT")

    upgraded = AnnotationStore(tmp_path)
    found = upgraded.probe_answers([answered.output_id, cut_off.output_id])
    assert [(a.kind, a.variant, a.letter, a.changed) for a in found[answered.output_id]] == [
        (ProbeKind.BLANK, "black", "B", False),
        (ProbeKind.ROTATE, "shift 1", None, None),
        (ProbeKind.ROTATE, "shift 2", "C", True),
    ]
    assert [a.changed for a in found[cut_off.output_id]] == [None, None]
    with sqlite3.connect(upgraded.db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        with pytest.raises(sqlite3.IntegrityError):  # a "changed" without the letter it was read from
            conn.execute(
                "UPDATE probe_answers SET changed = 1 WHERE output_id = ? AND kind = 'blank'", (cut_off.output_id,)
            )
    again = ProbeAnswer(ProbeKind.BLANK, "black", options, "<think>", None, None, 0.2)
    upgraded.add_probe_answers(cut_off, [again], probed_by="test")  # a new unread answer is stored as such
    assert upgraded.probe_answers([cut_off.output_id])[cut_off.output_id][-1] == again


@pytest.mark.parametrize(
    "spelling", ["ALICE", "ali\u200bce", "\uff41\uff4c\uff49\uff43\uff45", "  alice  ", "Alice\u2060"]
)
def test_one_person_is_one_reviewer_whatever_the_spelling(store: AnnotationStore, spelling: str) -> None:
    first, _ = store.add(make_output(), Review("alice", ("superficial",)))
    again, created = store.add(make_output(), Review(spelling, ("sound",)))
    assert not created and again.id == first.id and again.reviewer == "alice"
    assert store.distinct("reviewer") == ["alice"] and store.history(first.id)[0].flags == ("superficial",)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("<b>alice</b>", "may hold letters, digits, spaces and . ' @ - _ only"),
        ("a" * 5000, "at most 64 characters (got 5,000)"),
        ("\u200b\u200b", "Please enter your name"),
        ("[Session expired: sign in again](http://evil.example)", "may hold letters, digits"),
    ],
)
def test_reviewer_names_that_are_not_names_are_refused(name: str, message: str) -> None:
    with pytest.raises(AnnotationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Review(name, ("sound",))


def test_names_keep_their_letters_accents_and_punctuation() -> None:
    assert Review("Dr. Zoë O'Brien-Smith", ("sound",)).reviewer == "Dr. Zoë O'Brien-Smith"
    assert Review("bob@example.org", ("sound",)).reviewer == "bob@example.org"


def test_comments_have_a_limit_and_no_control_characters() -> None:
    with pytest.raises(
        AnnotationError, match="^Your comment is too long: 1,000,000 characters, and the limit is 5,000"
    ):
        Review("alice", ("sound",), "x" * 1_000_000)
    with pytest.raises(AnnotationError, match=r"^Your comment contains a control character \(U\+0000\)"):
        Review("alice", ("sound",), "fine\x00")
    assert Review("alice", (), "line one\nline two").comment == "line one\nline two"


@pytest.mark.parametrize(
    ("annotation_id", "message"),
    [
        (10**20, "There is no annotation with id 100000000000000000000"),
        (0, "no annotation with id 0"),
        ("abc", "Review ids are whole numbers"),
        (1.5, "whole numbers"),
        (float("inf"), "whole numbers"),
    ],
)
def test_lookups_of_ids_sqlite_cannot_hold_say_so(store: AnnotationStore, annotation_id: object, message: str) -> None:
    with pytest.raises(AnnotationError, match=message):
        store.get(annotation_id)  # type: ignore[arg-type]
