"""The launched app under hostile or careless input, through ``gradio_client``: each test is one defect
of the hostile-input campaign (issue 9) that must stay fixed.

The review belongs to the case on screen; Gradio's copies of uploads and the previews it serves
carry no identity; server paths named in an uploaded file are never opened; every bad number,
overlong text and control character gets a sentence of its own; one person is one reviewer.
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import pytest
from gradio.utils import get_upload_folder
from gradio_client import handle_file
from PIL import Image, PngImagePlugin

from helpers import (
    REPO,
    SECRETS,
    Page,
    answered,
    ask,
    client,
    identified_ct,
    named,
    review,
    running_app,
    samples_file,
    upload,
)
from medvlm.ui import AppConfig, Workbench
from medvlm.ui.events import ExampleShown, ImageRendered, SampleShown

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def app(formatted_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    config = AppConfig(
        model=str(formatted_model_dir),
        data_dir=tmp_path_factory.mktemp("data"),
        examples_file=REPO / "assets" / "examples.json",
    )
    with running_app(config) as app:
        yield app


def assert_answer_cleared(shown: dict) -> None:
    assert 'class="option chosen' not in shown["answer"] and shown["reasoning"] == "" and shown["raw_output"] == ""
    assert shown["output_id"] == "" and shown["flags"] == [] and shown["comment"] == ""
    assert "No answer to review yet" in shown["review_target"]


# -- the review belongs to what is on screen --------------------------------------------------------


def test_loading_another_example_clears_the_answer_and_a_stale_save_is_refused(app) -> None:
    user = client(app.url)
    head = named(user.predict(api_name="/load_example_0"), ExampleShown)
    asked = answered(ask(user, head["question"], head["options"].splitlines()))
    assert len(asked["output_id"]) == 32 and "ct head" in asked["review_target"]

    chest = named(user.predict(api_name="/load_example_2"), ExampleShown)
    assert_answer_cleared(chest)
    before = app.workbench.store.count()
    refused = review(user, asked, ["superficial"], "about the head", name="Dr Stale")  # the old page's id
    assert "not saved: the answer it is for is no longer on screen" in refused
    assert app.workbench.store.count() == before and app.workbench.store.query(reviewer="Dr Stale") == []

    # Asked about the chest, the review is saved against the chest's answer, with the chest's image.
    chest_answer = answered(ask(user, chest["question"], chest["options"].splitlines()))
    assert review(user, chest_answer, ["sound"], name="Dr Stale").startswith("Saved")
    (stored,) = app.workbench.store.query(reviewer="Dr Stale")
    assert stored.output_id == chest_answer["output_id"] and stored.question == chest["question"]


def test_an_upload_or_another_frame_after_an_answer_clears_it_another_window_does_not(app, sample_png: Path) -> None:
    user = client(app.url)
    user.predict(api_name="/load_example_0")
    asked = answered(ask(user, "Which modality?", ["CT", "MRI"]))
    assert_answer_cleared(upload(user, sample_png))
    assert "no longer on screen" in review(user, asked, ["sound"], name="Dr Stale Upload")
    assert app.workbench.store.query(reviewer="Dr Stale Upload") == []

    # Another display window shows the same pixels: the answer about them stays, and can be reviewed.
    user.predict(api_name="/load_example_0")
    asked = answered(ask(user, "Which modality?", ["CT", "MRI"]))
    rendered = named(user.predict("lung", None, None, None, api_name="/render_image"), ImageRendered)
    assert rendered["window_error"] == "" and "answer given with brain window" in rendered["viewer"]["readout"]
    assert review(user, asked, ["sound"], name="Dr Window").startswith("Saved")
    (stored,) = app.workbench.store.query(reviewer="Dr Window")
    assert stored.image_metadata["window_name"] == "brain"  # the image the model was asked about


# -- no identity in what Gradio keeps or serves -----------------------------------------------------


def upload_folder_files() -> list[Path]:
    return [path for path in Path(get_upload_folder()).rglob("*") if path.is_file()]


def test_gradios_copy_of_an_uploaded_dicom_is_deleted_once_read(app, tmp_path: Path) -> None:
    dicom = identified_ct(tmp_path / "Doe_Jane_SECRETNAME.dcm")
    user = client(app.url)
    shown = upload(user, dicom)
    assert shown["upload_error"] == "" and "CT" in shown["image_info"]
    for path in upload_folder_files():
        assert "SECRETNAME" not in str(path)
        data = path.read_bytes()
        assert not any(secret.encode() in data for secret in SECRETS), path
    # The same file again: Gradio stores uploads by content, so the second copy must work and go too.
    assert upload(user, dicom)["upload_error"] == ""
    assert not [path for path in upload_folder_files() if "SECRETNAME" in str(path)]


def test_png_text_chunks_never_reach_the_picture_the_viewer_gets(app, tmp_path: Path) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("PatientName", "Doe^Jane-SECRETNAME")
    info.add_text("PatientID", "PID-SECRET-4711")
    info.add_itxt("InstitutionName", "SECRET Institution of Radiology")
    path = tmp_path / "scan.png"
    Image.radial_gradient("L").resize((64, 64)).save(path, pnginfo=info)
    downloads = tmp_path / "downloads"
    user = client(app.url, download_files=str(downloads))
    shown = upload(user, path)
    assert shown["upload_error"] == ""
    png = base64.b64decode(shown["viewer"]["src"].split(",", 1)[1])  # the picture, as the browser gets it
    assert png.startswith(b"\x89PNG") and b"tEXt" not in png and b"iTXt" not in png
    assert "SECRET" not in repr(shown)
    served = [
        *(p for p in downloads.rglob("*") if p.is_file()),
        *(p for p in Path(app.workbench.store.data_dir).rglob("*") if p.is_file()),
        *upload_folder_files(),
    ]
    for file in served:
        data = file.read_bytes()
        assert b"PID-SECRET-4711" not in data and b"SECRETNAME" not in data, file


# -- numbers, limits and control characters ---------------------------------------------------------


def test_numbers_the_components_would_reject_get_the_apps_own_sentence(app, sample_png: Path) -> None:
    user = client(app.url)
    user.predict(api_name="/load_example_0")
    rendered = named(user.predict("Custom", "abc", 400, None, api_name="/render_image"), ImageRendered)
    assert "The window centre must be a number (got 'abc')" in rendered["window_error"]
    upload(user, sample_png)
    cases = [
        ({"max_new_tokens": "abc"}, "Maximum new tokens must be a number (got 'abc')"),
        ({"max_new_tokens": 0}, "Maximum new tokens must be between 1 and 4096 (got 0)"),
        ({"max_new_tokens": 1.5}, "Maximum new tokens must be a whole number"),
        ({"temperature": "abc", "decoding": "sample"}, "The temperature must be a number (got 'abc')"),
        ({"decoding": "sample", "seed": str(2**70)}, "The seed must be a whole number from 0 to 4,294,967,295"),
        ({"max_pixels": 10**20}, "Image resolution (max_pixels) must be between"),
    ]
    for settings, message in cases:
        assert message in answered(ask(user, "Which?", ["CT", "MRI"], **settings))["ask_error"], settings
    image, detail = user.predict(10**20, api_name="/open_review")
    assert image is None and "There is no annotation with id 100000000000000000000" in detail
    assert "A review id must be a number (got 'abc')" in user.predict("abc", api_name="/open_review")[1]
    assert (
        "Import a samples.jsonl first"
        in named(user.predict("abc", api_name="/show_evaluation_sample"), SampleShown)["evaluation_error"]
    )
    # And the app still answers.
    assert answered(ask(user, "Which?", ["CT", "MRI"]))["ask_error"] == ""


def test_overlong_text_and_control_characters_are_refused_fast(app, sample_png: Path) -> None:
    user = client(app.url)
    upload(user, sample_png)
    started = time.monotonic()
    assert (
        "The question is too long: 100,000 characters, and the limit is 2,000"
        in answered(ask(user, "x" * 100_000, ["CT", "MRI"]))["ask_error"]
    )
    assert time.monotonic() - started < 10  # refused before the model is touched
    assert (
        "Option B contains a control character (U+0000)"
        in answered(ask(user, "Which?", ["CT", "MR\x00I"]))["ask_error"]
    )
    asked = answered(ask(user, "Which?", ["CT", "MRI"]))
    assert "Your comment is too long: 1,000,000 characters" in review(
        user, asked, ["sound"], "y" * 1_000_000, name="Dr Limit"
    )
    assert "Your comment contains a control character (U+0000)" in review(
        user, asked, ["sound"], "fine\x00", name="Dr Limit"
    )
    assert app.workbench.store.query(reviewer="Dr Limit") == []


def test_one_person_is_one_reviewer_in_name_mode(app, sample_png: Path) -> None:
    user = client(app.url)
    upload(user, sample_png)
    asked = answered(ask(user, "Which?", ["CT", "MRI"]))
    assert review(user, asked, ["superficial"], name="dana").startswith("Saved")
    for spelling in ("DANA", "da\u200bna", "\uff44\uff41\uff4e\uff41"):
        assert review(user, asked, ["sound"], f"as {spelling}", name=spelling).startswith("Updated")
    assert "letters, digits, spaces" in review(user, asked, ["sound"], name="<b>dana</b>")
    assert "at most 64 characters" in review(user, asked, ["sound"], name="d" * 5000)
    (stored,) = app.workbench.store.query(reviewer="dana")
    assert stored.revision == 4 and [version.comment for version in app.workbench.store.history(stored.id)][0] == ""


# -- the evaluation import never opens a server path --------------------------------------------------


def test_paths_named_in_an_uploaded_samples_file_are_never_opened(app, sample_png: Path, tmp_path: Path) -> None:
    user = client(app.url)
    # Make sure the store holds an image: a server file the attacker would like to see.
    assert upload(user, sample_png)["upload_error"] == ""
    assert review(user, answered(ask(user, "Which?", ["CT", "MRI"])), ["sound"], name="Dr Owner").startswith("Saved")
    stored_image = str(app.workbench.store.query(reviewer="Dr Owner")[0].image_path)
    targets = [stored_image, "/etc/passwd", str(tmp_path / "missing.png"), str(sample_png), "../../etc/hostname"]
    jsonl = samples_file(tmp_path, targets)
    messages = []
    for number in range(1, len(targets) + 1):
        if number == 1:
            shown = named(user.predict([handle_file(str(jsonl))], api_name="/load_evaluation"), SampleShown)
        else:
            shown = named(user.predict(number, api_name="/show_evaluation_sample"), SampleShown)
        unchanged = {"__type__": "update"}  # gr.skip(): the page keeps what it showed
        nothing_shown = shown["viewer"] is None or "src" not in shown["viewer"]
        assert nothing_shown and shown["raw_output"] in (None, unchanged)  # nothing rendered
        messages.append(
            shown["evaluation_error"]
            .replace(Path(targets[number - 1]).name, "NAME")
            .replace(f"Sample {number}:", "Sample N:")
        )
    assert len(set(messages)) == 1, messages  # missing, forbidden and existing files are indistinguishable
    assert "was not uploaded with the samples" in messages[0]


def test_in_name_mode_a_namesake_in_another_session_saves_a_review_of_their_own(
    app, sample_png: Path, tmp_path: Path
) -> None:
    """Two people both typing "alice" on the same output: two reviews, and each edit changes only its own."""
    jsonl = samples_file(tmp_path, ["scan.png"], id="namesakes", completion="<think>Left.</think><answer>A</answer>")
    mine, theirs = client(app.url), client(app.url)
    shown = {
        user: named(
            user.predict([handle_file(str(jsonl)), handle_file(str(sample_png))], api_name="/load_evaluation"),
            SampleShown,
        )
        for user in (mine, theirs)
    }
    assert shown[mine]["output_id"] == shown[theirs]["output_id"]
    assert review(mine, shown[mine], ["superficial"], "mine", name="alice").startswith("Saved")
    assert review(theirs, shown[theirs], ["sound"], "theirs", name="alice").startswith("Saved")  # not "Updated"
    assert review(mine, shown[mine], ["hallucination"], "mine, changed", name="Alice").startswith("Updated")
    reviews = app.workbench.store.query(reviewer="alice")
    by_comment = {review.comment: review for review in reviews if review.output_id == shown[mine]["output_id"]}
    assert set(by_comment) == {"mine, changed", "theirs"}
    assert by_comment["theirs"].flags == ("sound",) and by_comment["theirs"].revision == 1
    history = app.workbench.store.history(by_comment["mine, changed"].id)
    assert [version.comment for version in history] == ["mine", "mine, changed"]


def test_a_one_sample_run_without_correct_answers_is_reviewed_by_two_people(
    app, sample_png: Path, tmp_path: Path
) -> None:
    jsonl = samples_file(tmp_path, ["images/scan.png"])  # the run's own relative path; the file comes in the upload
    first, second = client(app.url), client(app.url)
    shown = {}
    for user in (first, second):
        loaded = named(
            user.predict([handle_file(str(jsonl)), handle_file(str(sample_png))], api_name="/load_evaluation"),
            SampleShown,
        )
        assert (
            loaded["evaluation_error"] == ""
            and loaded["output_id"]
            and loaded["evaluation_sample"]["visible"] is False
        )
        shown[user] = loaded
    assert shown[first]["output_id"] == shown[second]["output_id"]
    assert review(first, shown[first], ["superficial"], name="Dr One").startswith("Saved")
    assert review(second, shown[second], ["sound"], name="Dr Two").startswith("Saved")  # the same stored output
    ones, twos = app.workbench.store.query(reviewer="Dr One"), app.workbench.store.query(reviewer="Dr Two")
    assert ones[0].output_id == twos[0].output_id and ones[0].correct_answer is None


def test_the_configured_image_folder_is_the_only_other_place_images_come_from(
    formatted_model_dir: Path, tmp_path: Path, sample_png: Path
) -> None:
    folder = tmp_path / "eval-images"
    (folder / "ct").mkdir(parents=True)
    Image.open(sample_png).save(folder / "ct" / "inside.png")
    outside = tmp_path / "outside.png"
    Image.open(sample_png).save(outside)
    os.symlink(outside, folder / "ct" / "link.png")  # a link that leads out of the folder
    workbench = Page(
        Workbench.start(
            AppConfig(model=str(formatted_model_dir), data_dir=tmp_path / "data", evaluation_images=folder)
        )
    )
    from medvlm.ui.session import Session

    try:
        session = Session()
        jsonl = samples_file(
            tmp_path,
            ["ct/inside.png", str(folder / "ct" / "inside.png"), "ct/../../outside.png", "ct/link.png", str(outside)],
        )
        assert workbench.load_evaluation(session, [str(jsonl)]).evaluation_error == ""
        assert workbench.show_evaluation_sample(session, 2).evaluation_error == ""  # absolute, but inside the folder
        for number in (3, 4, 5):
            error = workbench.show_evaluation_sample(session, number).evaluation_error
            assert "was not uploaded with the samples or in the image folder this app was started with" in error, (
                number
            )
    finally:
        workbench.close()


def test_evaluation_samples_written_by_train_evaluate_carry_their_time(
    tmp_path: Path, formatted_model_dir: Path
) -> None:
    from medvlm.model import load_model
    from medvlm.vqa_records import load_records
    from train.evaluate import evaluate, write_outputs

    image = tmp_path / "scan.png"
    Image.radial_gradient("L").resize((64, 64)).save(image)
    (tmp_path / "data.jsonl").write_text(
        json.dumps({"id": "q", "image": image.name, "question": "Which?", "options": ["CT", "MRI"], "answer": "A"})
        + "\n"
    )
    records, _ = load_records(tmp_path / "data.jsonl", format="jsonl")
    result = evaluate(load_model(formatted_model_dir), records, batch_size=1, progress=False, settings=None)
    sample = json.loads(write_outputs(result, tmp_path / "run")["samples.jsonl"].read_text())
    assert sample["generated_at"] == result.generated_at and sample["generated_at"].endswith("+00:00")
