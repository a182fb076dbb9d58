"""Review campaigns in the store: every output reviewed exactly k times, by k different people, under concurrency."""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import sqlite3
from pathlib import Path

import pytest
from PIL import Image

from helpers import model_output, samples_file
from medvlm.annotations import (
    FLAGS,
    OUTPUT_COLUMNS,
    AnnotationError,
    AnnotationStore,
    Review,
    Span,
    image_relpath,
)
from medvlm.annotations import store as store_module
from medvlm.annotations.campaigns import LEASE_S, Campaigns
from medvlm.annotations.schema import MIGRATIONS, SCHEMA_VERSION
from medvlm.cli import main


def outputs(count: int) -> list:
    return [
        model_output(index, correct_answer="B" if index % 2 else "A", question_type="Anatomy Identification")
        for index in range(count)
    ]


def work_through(campaigns: Campaigns, name: str, reviewer: str, *, flags=("sound",)) -> list[str]:
    """A reviewer's loop: next, submit, until nothing is left for them; the outputs they reviewed."""
    done = []
    while (assignment := campaigns.next_output(name, reviewer)) is not None:
        campaigns.submit(name, reviewer, assignment.output.output_id, Review(reviewer, flags))
        done.append(assignment.output.output_id)
    return done


def reviews_per_output(store: AnnotationStore, ids: list[str]) -> dict[str, list[str]]:
    with sqlite3.connect(store.db_path) as conn:
        rows = conn.execute("SELECT output_id, reviewer FROM annotations").fetchall()
    return {output_id: sorted(reviewer for found, reviewer in rows if found == output_id) for output_id in ids}


def test_every_output_gets_exactly_k_reviews_from_different_reviewers(tmp_path: Path) -> None:
    store = AnnotationStore(tmp_path)
    campaigns = Campaigns(store)
    campaign = campaigns.create(
        "chest CT round 1", outputs(5), reviews_per_output=2, guidelines="Flag **any** invented finding.",
        created_by="admin",
    )  # fmt: skip
    assert (campaign.reviews_per_output, campaign.blind, campaign.guidelines) == (
        2,
        False,
        "Flag **any** invented finding.",
    )
    first = campaigns.next_output(campaign.name, "Dr A")
    assert first.position == 1 and first.reviews == 0 and first.output.correct_answer == "A"
    assert campaigns.next_output(campaign.name, "dr a").output.output_id == first.output.output_id  # kept, case-blind
    active = ["Dr A", "Dr B", "Dr C"]
    while active:  # taking turns, as people working side by side do
        for reviewer in list(active):
            assignment = campaigns.next_output(campaign.name, reviewer)
            if assignment is None:
                active.remove(reviewer)
            else:
                campaigns.submit(campaign.name, reviewer, assignment.output.output_id, Review(reviewer, ("sound",)))
    ids = campaigns.output_ids(campaign.name)
    counts = reviews_per_output(store, ids)
    assert all(len(reviewers) == 2 == len(set(reviewers)) for reviewers in counts.values()), counts
    progress = campaigns.progress(campaign.name)
    assert (progress.outputs, progress.complete, progress.reviews, progress.wanted) == (5, 5, 10, 10)
    assert sum(progress.by_reviewer.values()) == 10 and set(progress.by_reviewer) == {"Dr A", "Dr B", "Dr C"}
    # The campaign's correct answer is the one stored with each review, not a reader's guess.
    stored = {annotation.output_id: annotation.correct_answer for annotation in store.query()}
    assert stored == {output.output_id: output.correct_answer for output in outputs(5)}
    assert campaigns.next_output(campaign.name, "Dr D") is None  # all done


def test_least_reviewed_first_and_a_walked_away_claim_returns_after_its_lease(tmp_path: Path) -> None:
    campaigns = Campaigns(AnnotationStore(tmp_path))
    campaigns.create("leases", outputs(2), reviews_per_output=1, created_by="admin")
    start = 1_000_000.0
    held = campaigns.next_output("leases", "Dr Away", now=start)
    other = campaigns.next_output("leases", "Dr Here", now=start)
    assert other.output.output_id != held.output.output_id  # a claimed output is not handed out again
    assert campaigns.next_output("leases", "Dr Third", now=start + 10) is None  # both outputs taken
    later = start + LEASE_S + 1
    given = campaigns.next_output("leases", "Dr Third", now=later)
    assert given.output.output_id == held.output.output_id  # the lease ran out: it goes to someone else
    campaigns.submit("leases", "Dr Third", given.output.output_id, Review("Dr Third", ("sound",)), now=later)
    with pytest.raises(AnnotationError, match="your hold on this output ran out"):
        campaigns.submit("leases", "Dr Away", held.output.output_id, Review("Dr Away", ("sound",)), now=later)
    # A late submit is still welcome while the output has room.
    campaigns.submit("leases", "Dr Here", other.output.output_id, Review("Dr Here", ("sound",)), now=later)
    assert campaigns.progress("leases").complete == 2


def test_skipped_outputs_are_not_offered_again_and_bad_requests_are_refused(tmp_path: Path) -> None:
    campaigns = Campaigns(AnnotationStore(tmp_path))
    campaigns.create("skips", outputs(2), reviews_per_output=1, created_by="admin")
    first = campaigns.next_output("skips", "Dr Skip")
    with pytest.raises(AnnotationError, match="Say why you skip"):
        campaigns.skip("skips", "Dr Skip", first.output.output_id, "  ")
    campaigns.skip("skips", "Dr Skip", first.output.output_id, "image unreadable")
    second = campaigns.next_output("skips", "Dr Skip")
    assert second.output.output_id != first.output.output_id
    campaigns.submit("skips", "Dr Skip", second.output.output_id, Review("Dr Skip", ("sound",)))
    assert campaigns.next_output("skips", "Dr Skip") is None
    assert campaigns.next_output("skips", "Dr Other").output.output_id == first.output.output_id  # still wanted
    assert campaigns.progress("skips").skipped == 1

    with pytest.raises(AnnotationError, match="not part of the campaign"):
        campaigns.submit("skips", "Dr Skip", model_output(99).output_id, Review("Dr Skip", ("sound",)))
    with pytest.raises(AnnotationError, match="saved by the reviewer it was handed to"):
        campaigns.submit("skips", "Dr Other", first.output.output_id, Review("Dr Skip", ("sound",)))
    with pytest.raises(AnnotationError, match="already a campaign called 'skips'"):
        campaigns.create("skips", outputs(1), reviews_per_output=1, created_by="admin")
    with pytest.raises(AnnotationError, match="from 1 to 50"):
        campaigns.create("zero", outputs(1), reviews_per_output=0, created_by="admin")
    with pytest.raises(AnnotationError, match="no campaign called 'nope'"):
        campaigns.next_output("nope", "Dr Skip")
    assert campaigns.set_guidelines("skips", "New rules.").guidelines == "New rules."


def _reviewer_process(folder: str, reviewer: str, queue) -> None:
    campaigns = Campaigns(AnnotationStore(folder))
    queue.put((reviewer, work_through(campaigns, "shared", reviewer)))


@pytest.mark.slow
def test_eight_reviewers_in_eight_processes_leave_every_output_with_exactly_k(tmp_path: Path) -> None:
    store = AnnotationStore(tmp_path)
    campaigns = Campaigns(store)
    campaigns.create("shared", outputs(24), reviews_per_output=3, created_by="admin")
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [
        context.Process(target=_reviewer_process, args=(str(tmp_path), f"Reviewer {index}", queue))
        for index in range(8)
    ]
    for worker in workers:
        worker.start()
    done = dict(queue.get(timeout=300) for _ in workers)
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    counts = reviews_per_output(store, campaigns.output_ids("shared"))
    assert all(len(reviewers) == 3 == len(set(reviewers)) for reviewers in counts.values()), counts
    assert sum(len(reviewed) for reviewed in done.values()) == 24 * 3
    assert all(len(set(reviewed)) == len(reviewed) for reviewed in done.values())  # nobody reviewed one twice
    assert campaigns.progress("shared").complete == 24


def test_a_database_of_the_previous_schema_migrates_without_loss(tmp_path: Path) -> None:
    """A data folder as medvlm wrote it before campaigns (schema 2), built by its own migrations and rows,
    opens at the newest schema with every row (schemas 3 to 7 add campaigns, marked passages, adjudications,
    question types, generated campaigns and pairwise verdicts)."""
    output = model_output(0)
    row = store_module._output_row(output)
    columns = [column for column in OUTPUT_COLUMNS if column != "question_type"]  # schema 6 added it
    with sqlite3.connect(tmp_path / "annotations.sqlite3", isolation_level=None) as conn:
        conn.execute("BEGIN")
        for step in MIGRATIONS[:2]:
            step(conn)
        conn.execute("PRAGMA user_version = 2")
        conn.executemany("INSERT INTO flags VALUES (?, ?)", FLAGS.items())
        conn.execute(
            f"INSERT INTO outputs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            [row[column] for column in columns],
        )
        conn.execute(
            "INSERT INTO annotations VALUES (1, ?, 'Dr Old', 'before campaigns', 'B', '0.1', ?, ?)",
            (output.output_id, "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:00+00:00"),
        )
        conn.execute("INSERT INTO annotation_flags VALUES (1, 'superficial')")
        conn.execute(
            "INSERT INTO annotation_versions VALUES (1, 1, ?, 'before campaigns', 'B', '0.1', ?)",
            ('["superficial"]', "2026-01-01T00:00:00+00:00"),
        )
        conn.execute("COMMIT")
    (tmp_path / "images").mkdir()
    output.image.save(tmp_path / image_relpath(row["image_sha256"]))

    reopened = AnnotationStore(tmp_path)
    with sqlite3.connect(reopened.db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 12
    assert reopened.verdicts() == []
    (kept,) = reopened.query()
    assert (kept.id, kept.flags, kept.comment, kept.spans) == (1, ("superficial",), "before campaigns", ())
    assert kept.question_type is None and kept.completion == output.completion
    assert [version.comment for version in reopened.history(1)] == ["before campaigns"]
    Campaigns(reopened).create("after", [output, model_output(1)], reviews_per_output=2, created_by="a")
    assert Campaigns(reopened).progress("after").reviews == 1  # the old review of output 0 counts


def test_marked_passages_are_stored_versioned_and_exported(tmp_path: Path) -> None:
    store = AnnotationStore(tmp_path)
    output = model_output(0)  # "<think>Air-filled lobes.</think><answer>B</answer>"
    start = output.completion.index("Air-filled")
    span = Span(start, start + len("Air-filled lobes."), "unsupported")
    annotation, _ = store.add(output, Review("Dr Span", (), "", spans=(span, span)))  # a span alone is a review
    assert annotation.spans == (span,) and output.completion[span.start : span.end] == "Air-filled lobes."
    updated, _ = store.add(output, Review("Dr Span", ("hallucination",), "", spans=()))
    assert updated.spans == () and updated.revision == 2
    with pytest.raises(AnnotationError, match="runs past the end of the completion"):
        store.add(output, Review("Dr Span", (), "", spans=(Span(0, 10_000, "irrelevant"),)))
    with pytest.raises(AnnotationError, match="Unknown label"):
        Span(0, 3, "silly")
    store.add(output, Review("Dr Span", (), "", spans=(span,)))
    record = store.get(annotation.id).to_record()
    assert record["spans"] == [{"start": span.start, "end": span.end, "label": "unsupported"}]


# -- the command line ---------------------------------------------------------------------------------


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


def test_a_campaign_is_made_from_a_run_on_the_command_line_and_followed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    images = tmp_path / "dataset" / "images"
    images.mkdir(parents=True)
    Image.radial_gradient("L").resize((64, 64)).save(images / "scan.png")
    run = tmp_path / "run"
    run.mkdir()
    samples = samples_file(
        run, ["images/scan.png"] * 2, questions=["First?", "Second?"], modality="MR", question_type="Lesion Grading"
    )
    (tmp_path / "guidelines.md").write_text("Flag **any** finding the image does not show.")
    status, out, err = run_cli(
        "campaign", "create", "Round 1", "--samples", str(samples), "--images", str(tmp_path / "dataset"),
        "--reviews-per-output", "2", "--guidelines", str(tmp_path / "guidelines.md"), "--blind",
        "--data-dir", str(data),
    )  # fmt: skip
    assert status == 0, err
    assert "Created campaign 'Round 1': 2 outputs, 2 review(s) wanted of each, blind" in out
    campaigns = Campaigns(AnnotationStore(data))
    assert campaigns.get("Round 1").guidelines.startswith("Flag **any**") and campaigns.get("Round 1").blind
    assignment = campaigns.next_output("Round 1", "Dr CLI")
    assert assignment.output.question == "First?" and assignment.output.completion.endswith("<answer>A</answer>")
    # The run's labels travel: a PNG names no modality, so the dataset's stands in; the question type is kept.
    assert assignment.output.image_metadata["modality"] == "MR" and assignment.output.question_type == "Lesion Grading"
    campaigns.submit("Round 1", "Dr CLI", assignment.output.output_id, Review("Dr CLI", ("sound",)))

    status, out, _ = run_cli("campaign", "progress", "Round 1", "--json", "--data-dir", str(data))
    assert status == 0 and json.loads(out) == {
        "by_reviewer": {"Dr CLI": 1}, "complete": 0, "outputs": 2, "reviews": 1, "skipped": 0, "wanted": 4,
    }  # fmt: skip
    status, out, _ = run_cli("campaign", "list", "--data-dir", str(data))
    assert out.strip() == "Round 1: 0/2 outputs complete, 1/4 reviews, 1 reviewer(s), 0 skip(s)"


@pytest.mark.parametrize(
    ("images", "message"),
    [
        ("missing.png", "Sample 1: its image 'missing.png' is not a file inside"),
        ("../outside.png", "Sample 1: its image '../outside.png' is not a file inside"),
    ],
)
def test_a_run_whose_images_cannot_be_found_is_refused_in_one_line(tmp_path: Path, images: str, message: str) -> None:
    (tmp_path / "run").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "outside.png")
    samples = samples_file(tmp_path / "run", [images])
    status, out, err = run_cli(
        "campaign", "create", "Bad", "--samples", str(samples), "--reviews-per-output", "1",
        "--data-dir", str(tmp_path / "data"),
    )  # fmt: skip
    assert status == 2 and err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    status, _, err = run_cli("campaign", "progress", "Bad", "--data-dir", str(tmp_path / "data"))
    assert status == 2 and "There is no campaign called 'Bad'." in err


def test_a_reopened_review_quotes_its_marked_passages(tmp_path: Path) -> None:
    from medvlm.ui import render

    store = AnnotationStore(tmp_path)
    output = model_output(0)
    start = output.completion.index("Air-filled")
    annotation, _ = store.add(
        output, Review("Dr Span", ("hallucination",), "", spans=(Span(start, start + 10, "hallucination"),))
    )
    html = render.annotation_html(store.get(annotation.id))
    assert "<b>Marked passages:</b>" in html and "<q>Air-filled</q>: Hallucinated finding" in html


def test_a_campaign_exports_as_a_dataset_with_a_card_that_datasets_and_train_read(tmp_path: Path) -> None:
    import datasets

    from medvlm.annotations.campaign_export import push_to_hub
    from medvlm.vqa_records import load_records
    from train.data import to_grpo_dataset

    store = AnnotationStore(tmp_path / "data")
    campaigns = Campaigns(store)
    campaigns.create(
        "Export round", outputs(2), reviews_per_output=2, guidelines="Mark **contradictions**.", created_by="admin"
    )
    for reviewer, flags in (("Dr A", ("contradiction",)), ("Dr B", ("contradiction", "superficial"))):
        while (assignment := campaigns.next_output("Export round", reviewer)) is not None:
            output = assignment.output
            start = output.completion.index("Air-filled")
            review = Review(reviewer, flags, "", spans=(Span(start, start + 10, "hallucination"),))
            campaigns.submit("Export round", reviewer, output.output_id, review)
    status, out, err = run_cli(
        "campaign", "export", "Export round", "--to", str(tmp_path / "export"), "--data-dir", str(tmp_path / "data")
    )
    assert status == 0, err
    status, out, err = run_cli(
        "campaign", "export", "Export round", "--to", str(tmp_path / "again"), "--push-to-hub", "me/a b",
        "--data-dir", str(tmp_path / "data"),
    )  # fmt: skip
    refused = "error: 'me/a b' is not a Hub dataset repository id: give it as owner/name, e.g. me/round1."
    assert status != 0 and err.strip().splitlines()[-1] == refused
    assert "Wrote campaign 'Export round'" in out  # the export itself is on disk
    rows = datasets.load_dataset(str(tmp_path / "export"), split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert len(rows) == 2 and rows.features["image"].__class__.__name__ == "Image"
    row = rows[0]
    assert row["flags"] == ["superficial", "contradiction"] or row["flags"] == ["contradiction", "superficial"]
    assert row["flag_contradiction"] == 1.0 and row["flag_superficial"] == 0.5 and row["flag_sound"] == 0.0
    assert (row["modality"], row["question_type"]) == ("CT", "Anatomy Identification")
    assert sorted(review["reviewer"] for review in row["reviews"]) == ["Dr A", "Dr B"]
    assert row["reviews"][0]["spans"] == [{"start": 7, "end": 17, "label": "hallucination"}]
    card = (tmp_path / "export" / "README.md").read_text()
    assert "# Review campaign: Export round" in card and "Mark **contradictions**." in card
    assert "| Reasoning contradicts the answer | 2 | 1.00 |" in card

    calls = []

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            calls.append(("create", repo_id, kwargs["repo_type"], kwargs["private"]))

        def upload_folder(self, folder_path, repo_id, **kwargs):
            calls.append(("upload", repo_id, sorted(p.name for p in Path(folder_path).rglob("*") if p.is_file())))

    url = push_to_hub(tmp_path / "export", "me/round", api=FakeApi())
    assert url == "https://huggingface.co/datasets/me/round"
    assert calls == [
        ("create", "me/round", "dataset", True),
        ("upload", "me/round", ["README.md", "train-00000-of-00001.parquet"]),
    ]
    records, _ = load_records(tmp_path / "export")  # the folder as exported (it writes the images beside the Parquet)
    assert len(records) == 2 and {record.answer for record in records} == {"A", "B"}
    assert all(record.image_path.is_file() and tmp_path / "export" in record.image_path.parents for record in records)
    training = to_grpo_dataset(records)  # train.data turns it into GRPO prompts
    assert sorted(training["solution"]) == ["A", "B"] and training[0]["modality"] == "CT"


def test_a_push_the_hub_refuses_or_cannot_reach_is_one_sentence_and_the_export_stays(tmp_path: Path) -> None:
    """huggingface_hub's real client against a local server that refuses, and against a closed port."""
    import http.server
    import threading

    from huggingface_hub import HfApi

    from helpers import free_port
    from medvlm.annotations.campaign_export import push_to_hub

    class Refusing(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # create_repo
            self.send_response(403)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"error": "You do not have write access to me/round"}')

        def log_message(self, *args):
            pass

    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "README.md").write_text("# Review campaign")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        refused = HfApi(endpoint=f"http://127.0.0.1:{server.server_port}", token="hf_reader_only")
        with pytest.raises(AnnotationError, match=r"^The Hub refused the push to me/round \(HTTP 403\)"):
            push_to_hub(folder, "me/round", api=refused)
    finally:
        server.shutdown()
    closed = HfApi(endpoint=f"http://127.0.0.1:{free_port()}", token="hf_x")  # nothing listens there
    with pytest.raises(AnnotationError, match=r"^The Hub could not be reached to push me/round \("):
        push_to_hub(folder, "me/round", api=closed)
    assert (folder / "README.md").read_text() == "# Review campaign"


def test_back_returns_the_reviewers_earlier_reviews_without_claiming(tmp_path: Path) -> None:
    campaigns = Campaigns(AnnotationStore(tmp_path))
    campaigns.create("back", outputs(3), reviews_per_output=1, created_by="admin")
    assert campaigns.previous("back", "Dr Back") is None
    first = campaigns.next_output("back", "Dr Back")
    campaigns.submit("back", "Dr Back", first.output.output_id, Review("Dr Back", ("superficial",), "first"))
    second = campaigns.next_output("back", "Dr Back")
    campaigns.submit("back", "Dr Back", second.output.output_id, Review("Dr Back", ("sound",)))
    held = campaigns.next_output("back", "Dr Back")  # the third, now held
    assignment, annotation = campaigns.previous("back", "Dr Back", before=held.output.output_id)
    assert assignment.output.output_id == second.output.output_id and annotation.flags == ("sound",)
    assignment, annotation = campaigns.previous("back", "Dr Back", before=second.output.output_id)
    assert assignment.output.output_id == first.output.output_id and annotation.comment == "first"
    assert campaigns.previous("back", "Dr Back", before=first.output.output_id) is None
    # Changing an earlier review adds no review and keeps the held output.
    campaigns.submit("back", "Dr Back", first.output.output_id, Review("Dr Back", ("hallucination",)))
    assert campaigns.progress("back").reviews == 2
    assert campaigns.next_output("back", "Dr Back").output.output_id == held.output.output_id


def test_disagreements_are_listed_and_adjudicated_beside_the_reviews(tmp_path: Path) -> None:
    import datasets

    from medvlm.annotations.campaign_export import export_campaign

    campaigns = Campaigns(AnnotationStore(tmp_path / "data"))
    campaigns.create("adjudicate", outputs(3), reviews_per_output=2, created_by="admin")
    verdicts = {
        "Dr A": [("contradiction",), ("sound",), ("sound",)],
        "Dr B": [("sound",), ("sound",), ("superficial",)],
    }
    for reviewer, flags in verdicts.items():
        for position, chosen in enumerate(flags):
            output_id = campaigns.output_ids("adjudicate")[position]
            campaigns.next_output("adjudicate", reviewer)  # (any claim: a submit with room left is accepted)
            campaigns.submit("adjudicate", reviewer, output_id, Review(reviewer, chosen))
    found = campaigns.disagreements("adjudicate")
    assert [(item.position, item.votes, item.adjudicated) for item in found] == [
        (1, {"contradiction": 1, "sound": 1}, None),
        (3, {"superficial": 1, "sound": 1}, None),
    ]
    campaigns.adjudicate("adjudicate", found[0].output_id, ["contradiction"], "Dr Chief", "it names the brain")
    assert campaigns.disagreements("adjudicate")[0].adjudicated == ("contradiction",)
    with pytest.raises(AnnotationError, match="not part of the campaign"):
        campaigns.adjudicate("adjudicate", "elsewhere", ["sound"], "Dr Chief")
    stored = {annotation.reviewer: annotation.flags for annotation in campaigns.annotations("adjudicate")[:2]}
    assert stored == {"Dr A": ("contradiction",), "Dr B": ("sound",)}  # the individual reviews stay as they were
    export_campaign(campaigns, "adjudicate", tmp_path / "export")
    rows = datasets.load_dataset(str(tmp_path / "export"), split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert [row["adjudicated_flags"] for row in rows] == [["contradiction"], [], []]


def test_kappa_comes_with_an_interval_or_says_there_are_too_few_outputs() -> None:
    from medvlm.review_stats import agreement_intervals

    def reviews(count: int, agreeing: int) -> list:
        made = []
        for index in range(count):
            output = model_output(index)
            flags = [("superficial",), ("superficial",)] if index < agreeing else [("superficial",), ("sound",)]
            for reviewer, chosen in zip(("Dr A", "Dr B"), flags, strict=True):
                made.append(_annotation(output, reviewer, chosen))
        return made

    few = agreement_intervals(reviews(4, 3)).set_index("flag")
    assert few.loc["superficial", "outputs"] == 4 and "too few outputs" in few.loc["superficial", "note"]
    many = agreement_intervals(reviews(30, 20), resamples=300).set_index("flag")
    row = many.loc["superficial"]
    assert row["note"] == "" and row["low"] <= row["kappa"] <= row["high"] and row["high"] - row["low"] > 0


def _annotation(output, reviewer: str, flags: tuple[str, ...]):
    """An Annotation as the store returns one (only the fields agreement reads matter)."""
    from medvlm.annotations import Annotation

    return Annotation(
        id=0, output_id=output.output_id, reviewer=reviewer, flags=flags, comment="", image_sha256="0" * 64,
        image_path=Path("x.png"), image_metadata={}, modality="CT", question=output.question,
        options=output.options, correct_answer=None, completion=output.completion, reasoning=output.reasoning,
        answer_text=output.answer_text, letter=output.letter, format_ok=True, problem=None, stop_reason="eos",
        model_id="m", model={}, settings={}, prompt_style="medvlm", timing=None, app_version="0",
        generated_at="", created_at="", updated_at="", is_correct=None,
    )  # fmt: skip


def test_a_run_whose_samples_name_no_model_is_refused_with_the_line(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "run" / "scan.png")
    samples = samples_file(tmp_path / "run", ["scan.png"], model={})
    status, _, err = run_cli(
        "campaign", "create", "No model", "--samples", str(samples), "--reviews-per-output", "1",
        "--data-dir", str(tmp_path / "data"),
    )  # fmt: skip
    assert status == 2 and "error: Sample 1: it does not name the model that wrote it" in err
