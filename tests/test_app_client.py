"""The launched app driven through ``gradio_client``, the way a person (or a script) uses it:
upload, ask, watch the stream, stop, review, browse the reviews, export; two users at once;
bad input followed by good; and a DICOM full of patient identity that must leave no trace.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from itertools import pairwise
from pathlib import Path

import datasets
import pytest
from PIL import Image

from helpers import (
    REPO,
    SECRETS,
    answered,
    ask,
    client,
    generation_threads,
    identified_ct,
    launch,
    named,
    review,
    running_app,
    upload,
)
from medvlm.annotations import AnnotationStore
from medvlm.hub_sync import HubSync
from medvlm.model import load_model
from medvlm.ui import AppConfig, Workbench
from medvlm.ui.events import AskUpdate, ExampleShown, Stopped
from medvlm.ui.viewer import picture

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def app(formatted_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The app with the format-warm-started tiny model; two generations may run at once."""
    config = AppConfig(
        model=str(formatted_model_dir),
        data_dir=tmp_path_factory.mktemp("data"),
        concurrency=2,
        examples_file=REPO / "assets" / "examples.json",
    )
    with running_app(config) as app:
        yield app


@pytest.fixture(scope="module")
def png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("upload") / "scan.png"
    Image.radial_gradient("L").resize((96, 80)).save(path)
    return path


def test_answer_streams_in_several_updates_and_ends_highlighted(app, png: Path) -> None:
    user = client(app.url)
    shown = upload(user, png)
    assert (
        shown["upload_error"] == ""
        and shown["image_info"] == "PNG \u00b7 96\u00d780 px"
        and picture(shown["viewer"]).size == (96, 80)
    )
    job = ask(user, "Which imaging modality was used?", ["CT", "MRI", "X-Ray", "Ultrasound"])
    seen = [update for update in job]
    outputs = job.outputs()
    assert len(outputs) >= 4 and len(seen) >= 2
    reasonings = [update[1] for update in outputs[1:]]
    assert len(reasonings[-1]) > len(reasonings[0]) and all(
        later.startswith(earlier) for earlier, later in pairwise(reasonings)
    )
    final = named(outputs[-1], AskUpdate)
    assert len(final["output_id"]) == 32 and "Reviewing the model's answer" in final["review_target"]
    assert 'class="option chosen"' in final["answer"] and final["reasoning"] == "The image shows a scan."
    assert "<answer>" in final["raw_output"] and "tokens/s" in final["timing"] and final["ask_error"] == ""


def test_review_is_stored_and_read_back_through_the_reviews_api(app, png: Path) -> None:
    user = client(app.url)
    assert "no answer to review yet" in user.predict(["sound"], "", None, "Dr API", "", api_name="/submit_review")
    upload(user, png)
    shown = answered(ask(user, "Which organ is shown?", ["Liver", "Brain", "Knee"], correct="B"))
    saved = user.predict(
        flags=["superficial"],
        comment="restates the question",
        correct="B",
        reviewer_name="Dr API",
        output_id=shown["output_id"],
        api_name="/submit_review",
    )
    assert saved.startswith("Saved your review (#")
    updated = review(user, shown, ["superficial", "wrong_answer"], "restates the question", "B")
    assert updated.startswith("Updated your review (#")

    table = user.predict(
        flag_filter="Any", modality_filter="Any", reviewer_filter="Dr API", model_filter="Any", api_name="/reviews"
    )
    assert len(table["data"]) == 1
    row = dict(zip(table["headers"], table["data"][0], strict=True))
    assert row["Flags"] == "Superficial reasoning; Wrong answer" and row["Question"] == "Which organ is shown?"
    image, detail = user.predict(row["Review id"], api_name="/open_review")
    assert Image.open(image).size == (96, 80)
    assert "restates the question" in detail and 'class="option' in detail and 'data-letter="B"' in detail
    summary, *_ = user.predict("Any", "Any", "Dr API", "Any", api_name="/review_summary")
    assert "**1** annotation(s)" in summary


def test_exports_load_with_datasets(app, png: Path) -> None:
    user = client(app.url)
    upload(user, png)
    shown = answered(ask(user, "Is there a fracture?", ["Yes", "No"]))
    assert review(user, shown, ["hallucination"], name="Dr Export").startswith("Saved")
    count = app.workbench.store.count()

    path, status = user.predict(api_name="/export_jsonl")
    rows = datasets.load_dataset("json", data_files=path, split="train")
    assert len(rows) == count and "Dr Export" in rows["reviewer"] and "Exported" in status
    path, _ = user.predict(api_name="/export_parquet")
    rows = datasets.load_dataset("parquet", data_files=path, split="train")
    assert len(rows) == count and isinstance(rows[0]["image"], Image.Image)


def test_two_users_each_get_their_own_stream(app, png: Path) -> None:
    first, second = client(app.url), client(app.url)
    upload(first, png)
    upload(second, png)
    organs, bones = ["Liver", "Spleen", "Kidney"], ["Femur", "Tibia"]
    jobs = [ask(first, "Which organ?", organs), ask(second, "Which bone?", bones)]
    results = [job.result() for job in jobs]
    for (panel, *_), mine, theirs in zip(results, (organs, bones), (bones, organs), strict=True):
        assert all(option in panel for option in mine) and not any(option in panel for option in theirs)
        assert 'class="option chosen"' in panel


def test_bad_input_gets_a_message_and_the_app_keeps_serving(app, png: Path, tmp_path: Path) -> None:
    user = client(app.url)
    fake = tmp_path / "scan.png"
    fake.write_text("Patient list\nnot an image\n")
    shown = upload(user, fake)
    assert shown["viewer"] is None and "This file is not a DICOM or image file" in shown["upload_error"]
    assert shown["upload"] is None  # the refused file is not left in the upload box
    assert "Please upload an image or DICOM file first." in answered(ask(user, "Which?", ["CT", "MRI"]))["ask_error"]

    upload(user, png)
    assert "Please type a question." in answered(ask(user, "   ", ["CT", "MRI"]))["ask_error"]
    assert "Options A and B are the same" in answered(ask(user, "Which?", ["CT", "ct"]))["ask_error"]
    final = answered(ask(user, "Which modality?", ["CT", "MRI"]))
    assert final["ask_error"] == "" and 'class="option chosen"' in final["answer"]


def test_an_example_case_loads_and_can_be_asked(app) -> None:
    user = client(app.url)
    example = named(user.predict(api_name="/load_example_0"), ExampleShown)
    assert (
        example["upload_error"] == ""
        and example["window"]["value"] == "brain"
        and example["correct"]["value"] == "A"
        and "CT" in example["image_info"]
    )
    final = answered(ask(user, example["question"], example["options"].splitlines()))
    assert final["ask_error"] == "" and 'class="option chosen' in final["answer"]


def test_stop_ends_the_generation(tiny_model_dir: Path, tmp_path: Path, png: Path) -> None:
    """The random model never stops by itself: only Stop ends its 4000 tokens."""
    workbench = Workbench.start(AppConfig(model=str(tiny_model_dir), data_dir=tmp_path))
    demo, url = launch(workbench)
    try:
        user = client(url)
        upload(user, png)
        job = ask(user, "Which?", ["CT", "MRI"], max_new_tokens=4000)
        deadline = time.monotonic() + 60
        while len(job.outputs()) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert generation_threads()
        stopped = named(user.predict(api_name="/stop"), Stopped)
        assert stopped["timing"] == "Stopped by you."
        panel, _, _, final_timing, *_ = job.result(timeout=60)
        assert "stopped the generation" in panel and "stopped by you" in final_timing
        deadline = time.monotonic() + 10
        while generation_threads() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not generation_threads()
    finally:
        demo.close()
        workbench.close()


# -- patient identity ----------------------------------------------------------------------------


class FakeScheduler:
    """Stands in for huggingface_hub.CommitScheduler: the Hub folder is written, nothing is uploaded."""

    def __init__(self, **kwargs):
        self.lock = threading.Lock()

    def trigger(self) -> concurrent.futures.Future:
        done: concurrent.futures.Future = concurrent.futures.Future()
        done.set_result(None)
        return done

    def stop(self) -> None:
        pass


def test_patient_identity_leaves_no_trace(
    formatted_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    data_dir, downloads = tmp_path / "data", tmp_path / "downloads"
    # The file name names the patient too: it must not be logged or stored either.
    dicom = identified_ct(tmp_path / "Doe_Jane_SECRETNAME.dcm")
    store = AnnotationStore(data_dir)
    workbench = Workbench(
        AppConfig(model=str(formatted_model_dir), data_dir=data_dir),
        model=load_model(formatted_model_dir),
        store=store,
        hub_sync=HubSync(store, "someone/reviews", scheduler_factory=FakeScheduler),
    )
    demo, url = launch(workbench)
    responses = []
    try:
        user = client(url, download_files=str(downloads))
        responses.append(upload(user, dicom))
        assert responses[-1]["upload_error"] == "" and "CT \u00b7 CHEST" in responses[-1]["image_info"]
        responses.append(user.predict("lung", None, None, 1, api_name="/render_image"))
        job = ask(user, "Which modality?", ["CT", "MRI"], correct="A")
        shown = answered(job)
        responses.extend(job.outputs())
        responses.append(review(user, shown, ["sound"], "clear lungs", "A", "Dr Privacy"))
        assert responses[-1].startswith("Saved")
        responses.append(user.predict("Any", "Any", "Any", "Any", api_name="/reviews"))
        annotation_id = responses[-1]["data"][0][-1]
        responses.append(user.predict(annotation_id, api_name="/open_review"))
        responses.append(user.predict("Any", "Any", "Any", "Any", api_name="/review_summary"))
        responses.append(user.predict(api_name="/review_filters"))
        jsonl, _ = user.predict(api_name="/export_jsonl")
        parquet, _ = user.predict(api_name="/export_parquet")
        responses += [jsonl, parquet]
    finally:
        demo.close()
        workbench.close()

    written = [path for folder in (data_dir, downloads) for path in folder.rglob("*") if path.is_file()]
    assert any(path.suffix == ".jsonl" for path in written) and any(path.suffix == ".parquet" for path in written)
    assert (data_dir / "hub" / "images").is_dir() and list((data_dir / "hub" / "annotations").glob("*.jsonl"))
    texts = {
        "API responses": repr(responses),
        "logs": caplog.text,
        "server output": "".join(capfd.readouterr()),
    }
    for secret in SECRETS:
        for where, text in texts.items():
            assert secret not in text, f"{secret!r} found in {where}"
        for path in written:
            assert secret.encode() not in path.read_bytes(), f"{secret!r} found in {path}"
            assert secret not in str(path)
