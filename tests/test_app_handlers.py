"""The app's handlers called directly, as the page calls them: upload, ask, stream, stop, review, browse.

No server and no browser: each handler is an ordinary method of its tab's handlers over a workbench, so every
message a reader can see is checked here (``tests/test_app_client.py`` drives the launched app).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import types
from itertools import pairwise
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from pydicom.data import get_testdata_file

from helpers import Page, dicom_without_pixels, error_of, samples_file
from medvlm import fast_cpu
from medvlm.annotations import AnnotationStore
from medvlm.errors import ImageLoadError, QuestionError
from medvlm.images import NOT_AN_IMAGE, load_image
from medvlm.model import DEFAULT_MODEL_ID
from medvlm.parsing import NEVER_CLOSED_THINK
from medvlm.prompt import PromptStyle, validate_question
from medvlm.ui import build_demo, render
from medvlm.ui.cases import load_examples
from medvlm.ui.config import AppConfig, ConfigError
from medvlm.ui.inputs import AUTOMATIC, CUSTOM, FILE_DEFAULT
from medvlm.ui.session import Session
from medvlm.ui.viewer import picture
from medvlm.ui.workbench import Workbench, on_zero_gpu

REPO = Path(__file__).resolve().parents[1]
QUESTION = "Which imaging modality was used?"
OPTIONS = "CT\nMRI\nX-Ray\nUltrasound"


def sample(name: str) -> str:
    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} is not bundled with this pydicom"
    return path


def generation_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "medvlm-generate"]


def wait_for_no_generation_thread(timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while generation_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not generation_threads(), "a generation thread is still running"


@pytest.fixture(scope="module")
def workbench(formatted_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Workbench:
    """The app's shared state with the format-warm-started tiny model (its answers parse)."""
    config = AppConfig(
        model=str(formatted_model_dir),
        data_dir=tmp_path_factory.mktemp("data"),
        examples_file=REPO / "assets" / "examples.json",
    )
    bench = Workbench.start(config)
    yield Page(bench)
    bench.close()


@pytest.fixture(scope="module")
def random_workbench(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Workbench:
    """The random tiny model: it never follows the format and never stops by itself."""
    bench = Workbench.start(AppConfig(model=str(tiny_model_dir), data_dir=tmp_path_factory.mktemp("random-data")))
    yield Page(bench)
    bench.close()


def uploaded(bench: Workbench, path: str | Path) -> Session:
    session = Session()
    outputs = Page(bench).load_file(session, str(path))
    assert error_of(outputs) == "", error_of(outputs)
    return session


def submit(
    bench: Workbench, session: Session, flags, comment="", correct=None, name=None, profile=None, request=None
) -> str:
    """Save a review as the page does: naming the output on screen (the id the last update showed)."""
    shown = session.last_output.output_id if session.last_output is not None else ""
    return Page(bench).submit_review(session, flags, comment, correct, name, shown, profile, request)


def ask(
    bench: Workbench, session: Session, question: str = QUESTION, options: str = OPTIONS, **settings
) -> list[tuple]:
    settings.setdefault("max_new_tokens", 48)
    return list(Page(bench).ask(session, question, options, **settings))


# -- the image -----------------------------------------------------------------------------------


def test_png_upload_shows_exactly_what_the_model_sees(workbench: Workbench, sample_png: Path) -> None:
    session = Session()
    shown = workbench.load_file(session, str(sample_png))
    assert error_of(shown) == "" and shown.upload_error == ""
    assert np.array_equal(np.asarray(picture(shown.viewer)), np.asarray(load_image(sample_png).image))
    assert shown.viewer["windowable"] is False and shown.viewer["frames"] == 1
    assert shown.image_info == "PNG \u00b7 160\u00d7128 px"
    assert shown.dicom_controls["visible"] is False and shown.frame["visible"] is False
    assert session.file_bytes is None  # a plain PNG is never rendered again, so its bytes are not kept


def test_dicom_upload_shows_safe_tags_and_window_controls(workbench: Workbench) -> None:
    session = Session()
    shown = workbench.load_file(session, sample("CT_small.dcm"))
    assert error_of(shown) == "" and picture(shown.viewer).size == (128, 128)
    assert "DICOM \u00b7 CT \u00b7 128\u00d7128 px" in shown.image_info and "window:" in shown.image_info
    assert "CompressedSamples" not in shown.image_info + str(shown.viewer)  # CT_small's patient name
    assert shown.dicom_controls["visible"] is True and shown.frame["visible"] is False
    assert "lung" in shown.window["choices"]  # a CT gets the Hounsfield presets

    rendered = workbench.render_image(session, "lung")
    assert error_of(rendered) == "" and "window: lung (centre -600 HU, width 1500 HU)" in rendered.image_info
    assert rendered.custom_window["visible"] is False
    assert "W 1500 / C -600 HU" in rendered.viewer["readout"]

    # "Custom" starts from the window on screen, so there is something to adjust (a browser sends
    # the empty numbers as 0).
    for empty in (None, 0):
        rendered = workbench.render_image(session, CUSTOM, empty, empty)
        assert error_of(rendered) == "" and rendered.custom_window["visible"] is True
        assert (rendered.center, rendered.width) == (-600, 1500)
    rendered = workbench.render_image(session, CUSTOM, 40, 400)
    assert error_of(rendered) == "" and "window: custom (centre 40 HU, width 400 HU)" in rendered.image_info
    # The fields keep what is typed in them while this render runs (they are not written back).
    assert rendered.center == gr.skip() and rendered.width == gr.skip()
    rendered = workbench.render_image(session, CUSTOM, 40, -5)
    assert "The window width must be greater than 0" in rendered.window_error
    assert rendered.viewer == gr.skip()  # the image on screen stays
    assert session.image.metadata.window_width == 400


def test_mr_gets_no_hounsfield_presets_but_an_automatic_window(workbench: Workbench) -> None:
    session = Session()
    shown = workbench.load_file(session, sample("MR_small.dcm"))
    assert shown.window["choices"] == [FILE_DEFAULT, AUTOMATIC, CUSTOM]
    rendered = workbench.render_image(session, AUTOMATIC)
    assert error_of(rendered) == "" and "window: automatic" in rendered.image_info


def test_dragging_the_window_in_the_viewer_renders_it_and_keeps_the_answer(workbench: Workbench) -> None:
    """The viewer's script writes the dragged centre and width into its value; the server renders them."""
    session = Session()
    shown = workbench.load_file(session, sample("CT_small.dcm"))
    ask(workbench, session)
    answered = session.last_output
    assert answered is not None
    dragged = workbench.view(session, {**shown.viewer, "center": 40, "width": 80})
    assert error_of(dragged) == "" and (dragged.center, dragged.width, dragged.window) == (40, 80, CUSTOM)
    assert "W 80 / C 40 HU" in dragged.viewer["readout"]
    assert "answer given with" in dragged.viewer["readout"]  # the model saw another window
    assert dragged.answer == gr.skip() and session.last_output is answered  # same pixels: the answer stays
    bad = workbench.view(session, {**dragged.viewer, "width": -3})
    assert "The window width must be greater than 0" in bad.window_error and session.image.metadata.window_width == 80


def test_multiframe_dicom_steps_frames_numbered_from_one(workbench: Workbench) -> None:
    session = Session()
    shown = workbench.load_file(session, sample("rtdose.dcm"))
    assert error_of(shown) == ""
    frame = shown.frame
    assert frame["visible"] is True and (frame["minimum"], frame["maximum"], frame["value"]) == (1, 15, 8)
    assert "frame 8 of 15" in shown.image_info and shown.viewer["frame"] == 8 and shown.viewer["frames"] == 15
    rendered = workbench.render_image(session, FILE_DEFAULT, None, None, 3)
    assert "frame 3 of 15" in rendered.image_info and session.image.metadata.frame_index == 2
    stepped = workbench.view(session, {**rendered.viewer, "frame": 4})  # the wheel or an arrow key
    assert "frame 4 of 15" in stepped.image_info and stepped.viewer["frame"] == 4
    assert (
        "There is no frame 16: this file has 15 frames, numbered 1 to 15."
        in workbench.render_image(session, FILE_DEFAULT, None, None, 16).window_error
    )


def test_a_refused_upload_after_a_good_one_leaves_no_case_on_screen(
    workbench: Workbench, sample_png: Path, tmp_path: Path
) -> None:
    """Nothing may be mistaken for the refused file: the earlier image and its answer go too."""
    session = uploaded(workbench, sample_png)
    ask(workbench, session)
    (tmp_path / "scan.png").write_text("not an image")
    shown = workbench.load_file(session, str(tmp_path / "scan.png"))
    assert NOT_AN_IMAGE in shown.upload_error and shown.upload is None
    assert shown.viewer is None and shown.image_info == "" and session.image is None and session.last_output is None
    assert shown.review_panel["visible"] is False and shown.output_id == ""


@pytest.mark.parametrize(
    "make_file",
    [
        pytest.param(lambda: b"patient list, not an image\n" * 20, id="text-renamed-png"),
        pytest.param(lambda: Path(sample("CT_small.dcm")).read_bytes()[:3000], id="truncated-dicom"),
        pytest.param(lambda: Path(sample("MR_truncated.dcm")).read_bytes(), id="dicom-with-truncated-pixels"),
        pytest.param(dicom_without_pixels, id="dicom-without-pixels"),
        pytest.param(lambda: b"", id="empty-file"),
    ],
)
def test_bad_files_get_their_specific_message(workbench: Workbench, tmp_path: Path, make_file) -> None:
    path = tmp_path / "upload.png"
    path.write_bytes(make_file())
    with pytest.raises(ImageLoadError) as expected:
        load_image(path)
    session = Session()
    shown = workbench.load_file(session, str(path))
    assert shown.upload_error == render.error_markdown(str(expected.value))
    assert shown.upload is None  # the refused file does not stay in the upload box as if accepted
    assert shown.viewer is None and shown.image_info == "" and session.image is None and session.file_bytes is None
    assert "Traceback" not in shown.upload_error


def test_text_file_named_png_says_it_is_not_an_image(workbench: Workbench, tmp_path: Path) -> None:
    path = tmp_path / "scan.png"
    path.write_text("not an image")
    assert NOT_AN_IMAGE in error_of(workbench.load_file(Session(), str(path)))


def test_oversize_image_is_refused(workbench: Workbench, sample_png: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("medvlm.pixels.MAX_PIXELS", 10_000)
    assert "This image is too large: 160 x 128 = 20,480 pixels, over the limit of 10,000 pixels." in error_of(
        workbench.load_file(Session(), str(sample_png))
    )


# -- asking --------------------------------------------------------------------------------------


def question_error(question: str, options: list[str]) -> str:
    with pytest.raises(QuestionError) as error:
        validate_question(question, options)
    return str(error.value)


@pytest.mark.parametrize(
    ("question", "options", "expected"),
    [
        ("  ", OPTIONS, question_error("  ", ["CT", "MRI"])),
        (QUESTION, "CT", question_error(QUESTION, ["CT"])),
        (QUESTION, "", question_error(QUESTION, [])),
        (QUESTION, "CT\nct \nMRI", question_error(QUESTION, ["CT", "ct", "MRI"])),
        (
            QUESTION,
            "\n".join(f"Option {index}" for index in range(11)),
            question_error(QUESTION, [f"Option {index}" for index in range(11)]),
        ),
    ],
    ids=["empty-question", "one-option", "no-options", "duplicate-options", "eleven-options"],
)
def test_bad_questions_get_their_specific_message_and_nothing_runs(
    workbench: Workbench, sample_png: Path, question: str, options: str, expected: str
) -> None:
    session = uploaded(workbench, sample_png)
    updates = ask(workbench, session, question, options)
    assert len(updates) == 1
    assert error_of(updates[0]) == render.error_markdown(expected)
    assert not generation_threads() and not session.generating and session.last_output is None


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"correct": "E"}, "The correct answer E is not one of the options (A to D)."),
        ({"max_new_tokens": 0}, "Maximum new tokens must be between 1 and 4096 (got 0)."),
        ({"max_new_tokens": None}, "Please give the maximum number of new tokens."),
        ({"decoding": "sample", "temperature": 0}, "Temperature must be above 0 when sampling (got 0.0)."),
        (
            {"max_pixels": 10},
            "Image resolution (max_pixels) must be between 3,136 and 12,845,056, Qwen2-VL's ceiling (got 10).",
        ),
        (
            {"decoding": "sample", "seed": "abc"},
            "The seed must be a whole number, or empty for a random one (got 'abc').",
        ),
        ({"style": "poetic"}, "Unknown prompt style 'poetic'."),
    ],
)
def test_bad_settings_get_their_specific_message(
    workbench: Workbench, sample_png: Path, settings: dict, message: str
) -> None:
    updates = ask(workbench, uploaded(workbench, sample_png), **settings)
    assert error_of(updates[0]) == render.error_markdown(message)


def test_sampling_records_the_seed_it_used(workbench: Workbench, sample_png: Path) -> None:
    session = uploaded(workbench, sample_png)
    ask(workbench, session, decoding="sample", seed="", max_new_tokens=4)
    drawn = session.last_output.settings["seed"]
    assert isinstance(drawn, int) and session.last_output.settings["do_sample"] is True
    ask(workbench, session, decoding="sample", seed=" 1234 ", max_new_tokens=4)
    assert session.last_output.settings["seed"] == 1234
    ask(workbench, session, seed="", max_new_tokens=4)
    assert session.last_output.settings["seed"] is None  # greedy needs none


def test_asking_without_an_image_says_to_upload_one(workbench: Workbench) -> None:
    updates = ask(workbench, Session())
    assert error_of(updates[0]) == render.error_markdown("Please upload an image or DICOM file first.")


def test_answer_streams_then_highlights_the_chosen_option(workbench: Workbench, sample_png: Path) -> None:
    session = uploaded(workbench, sample_png)
    updates = ask(workbench, session)
    assert len(updates) >= 4
    assert all(error_of(update) == "" for update in updates)
    reasonings = [update[1] for update in updates[1:]]
    assert all(later.startswith(earlier) for earlier, later in pairwise(reasonings))
    assert len(reasonings[-1]) > len(reasonings[0])
    assert "Thinking..." in updates[1][0]

    final_panel, final_reasoning, raw, timing, *_ = updates[-1]
    output = session.last_output
    assert output is not None and output.letter in "ABCD" and output.format_ok
    assert f'class="option chosen" data-letter="{output.letter}"' in final_panel
    assert final_panel.count("chosen") == 1 and 'class="warning"' not in final_panel
    assert final_reasoning == output.reasoning == "The image shows a scan."
    assert raw == output.completion
    assert "Time to first token" in timing and "tokens/s" in timing
    assert output.image is session.image.image and output.image_metadata == session.image.metadata.to_dict()
    assert output.prompt_style == PromptStyle.MEDVLM.value  # not MedVLM-R1: the clean wording
    assert not session.generating
    wait_for_no_generation_thread()


def test_a_known_correct_answer_marks_right_or_wrong_in_words(workbench: Workbench, sample_png: Path) -> None:
    session = uploaded(workbench, sample_png)
    final_panel = ask(workbench, session, correct="B")[-1][0]
    letter = session.last_output.letter
    if letter == "B":
        assert (
            'class="option chosen correct" data-letter="B"' in final_panel and "Model's answer: correct" in final_panel
        )
    else:
        assert (
            f'class="option chosen wrong" data-letter="{letter}"' in final_panel
            and "Model's answer: wrong" in final_panel
        )
        assert 'class="option correct" data-letter="B"' in final_panel and "Correct answer" in final_panel
    # Changing the correct answer afterwards re-marks the same answer.
    other = "A" if letter != "A" else "C"
    assert f'class="option chosen wrong" data-letter="{letter}"' in workbench.show_answer(session, other)[0]


def test_render_marks_correct_and_wrong_with_text_not_colour_alone() -> None:
    options = ["CT", "MRI", "X-Ray"]
    right = render.answer_html(options, letter="B", correct="B", format_ok=True, problem=None, stop_reason="eos")
    assert 'class="option chosen correct" data-letter="B"' in right and "\u2713 Model's answer: correct" in right
    assert "Answer: B) MRI: correct" in right
    wrong = render.answer_html(options, letter="A", correct="C", format_ok=True, problem=None, stop_reason="eos")
    assert 'class="option chosen wrong" data-letter="A"' in wrong and "\u2717 Model's answer: wrong" in wrong
    assert 'class="option correct" data-letter="C"' in wrong and "Answer: A) CT: wrong (correct: C)" in wrong
    unknown = render.answer_html(options, letter="C", correct=None, format_ok=True, problem=None, stop_reason="eos")
    assert 'class="option chosen" data-letter="C"' in unknown and "correct" not in unknown.replace(
        "Correct answer", ""
    )


def test_broken_format_is_a_warning_never_a_silent_answer() -> None:
    options = ["CT", "MRI"]
    cut_off = render.answer_html(
        options, letter=None, correct=None, format_ok=False, problem=NEVER_CLOSED_THINK, stop_reason="max_new_tokens"
    )
    assert "No answer" in cut_off and "chosen" not in cut_off
    assert "never closed its reasoning (&lt;think&gt; without &lt;/think&gt;)" in cut_off
    assert render.CUT_OFF_HINT in cut_off and 'role="alert"' in cut_off
    sloppy = render.answer_html(options, letter="A", correct=None, format_ok=False, problem=None, stop_reason="eos")
    assert 'class="option chosen"' in sloppy and "did not follow the required format" in sloppy
    escaped = render.options_html(["<b>CT</b>", "MRI"])
    assert "<b>CT</b>" not in escaped and "&lt;b&gt;CT&lt;/b&gt;" in escaped


def test_random_model_output_streams_visibly_and_ends_in_a_warning(
    random_workbench: Workbench, sample_png: Path
) -> None:
    session = uploaded(random_workbench, sample_png)
    updates = ask(random_workbench, session, max_new_tokens=12)
    assert updates[-2][1]  # no <think> tag: the raw text streams in the reasoning box
    final_panel, _, _, timing, *_ = updates[-1]
    assert "No answer" in final_panel and "chosen" not in final_panel and 'role="alert"' in final_panel
    assert "stopped at the token limit" in timing
    assert session.last_output is not None and session.last_output.letter is None  # still reviewable


def test_stop_ends_the_generation_thread(random_workbench: Workbench, sample_png: Path) -> None:
    session = uploaded(random_workbench, sample_png)
    stream = random_workbench.ask(session, QUESTION, OPTIONS, max_new_tokens=4000)
    for _ in range(4):
        next(stream)
    assert session.generating and generation_threads()
    # A review while the answer streams is refused.
    assert "still being generated" in submit(random_workbench, session, ["superficial"], "", None, "Dr Grey")
    assert "still being generated" in error_of(next(iter(random_workbench.ask(session, QUESTION, OPTIONS))))

    stopped = random_workbench.stop(session)
    assert "Stopped" in stopped.answer and stopped.timing == "Stopped by you." and stopped.ask_button["interactive"]
    assert stopped.second_answer == gr.skip()  # no comparison: the hidden second answer is left alone
    rest = list(stream)  # an API client that only pressed Stop still gets the end of the stream
    final_panel, _, _, final_timing, *_ = rest[-1]
    assert render.STOPPED in final_panel and "stopped by you" in final_timing
    wait_for_no_generation_thread()
    assert not session.generating and session.last_output is None
    assert "no answer to review" in submit(random_workbench, session, ["superficial"], "", None, "Dr Grey")
    # Stop pressed again, after the end: the page keeps what it shows (the timing is not replaced).
    assert random_workbench.stop(session)[:2] == (gr.skip(), gr.skip())


def test_closing_the_stream_stops_generation_as_gradio_cancels_do(
    random_workbench: Workbench, sample_png: Path
) -> None:
    session = uploaded(random_workbench, sample_png)
    stream = random_workbench.ask(session, QUESTION, OPTIONS, max_new_tokens=4000)
    for _ in range(4):
        next(stream)
    stream.close()
    wait_for_no_generation_thread()
    assert not session.generating


def test_closing_a_tab_stops_its_generation(random_workbench: Workbench, sample_png: Path) -> None:
    session = uploaded(random_workbench, sample_png)
    stream = random_workbench.ask(session, QUESTION, OPTIONS, max_new_tokens=4000)
    for _ in range(3):
        next(stream)
    session.close()  # what gr.State's delete_callback does when the tab's state is dropped
    assert "stopped by you" in list(stream)[-1][3]
    wait_for_no_generation_thread()


def test_options_preview_letters_them_and_follows_the_correct_answer(workbench: Workbench) -> None:
    panel, dropdown, second = workbench.preview_options(Session(), "CT\n\n MRI \nX-Ray", "C")
    assert 'data-letter="B"><span class="letter">B)</span><span class="text">MRI</span>' in panel
    assert dropdown["choices"] == [("Not known", ""), ("A) CT", "A"), ("B) MRI", "B"), ("C) X-Ray", "C")]
    assert dropdown["value"] == "C"
    assert second == panel  # the second answer of a comparison shows the same lettered options
    assert workbench.preview_options(Session(), "CT\nMRI", "C")[1]["value"] == ""


# -- reviewing -----------------------------------------------------------------------------------


def test_review_is_saved_once_and_updated_on_a_second_click(workbench: Workbench, sample_png: Path) -> None:
    session = uploaded(workbench, sample_png)
    assert "no answer to review yet" in submit(workbench, session, ["superficial"], "", None, "Dr Grey")
    ask(workbench, session, correct="A")
    before = workbench.store.count()
    assert "Please enter your name" in submit(workbench, session, ["superficial"], "", "A", "  ")
    first = submit(workbench, session, ["superficial"], "too short", "A", "Dr Grey")
    assert first.startswith("Saved your review (#")
    second = submit(workbench, session, ["superficial", "wrong_answer"], "too short, and wrong", "A", "Dr Grey")
    assert (
        second.startswith("Updated your review (#")
        and first[len("Saved your review (#") :].rstrip(").") == second[len("Updated your review (#") :].split(",")[0]
    )
    assert "version 2; earlier versions are kept" in second
    assert workbench.store.count() == before + 1
    stored = workbench.store.query(reviewer="Dr Grey")[0]
    assert stored.flags == ("superficial", "wrong_answer") and stored.correct_answer == "A"
    assert stored.output_id == session.last_output.output_id
    assert "cannot be combined" in submit(workbench, session, ["sound", "hallucination"], "", "A", "Dr Grey")
    # A new answer is a new output: the same reviewer's review of it is a new annotation.
    ask(workbench, session)
    assert submit(workbench, session, [], "fine", None, "Dr Grey").startswith("Saved your review")


def test_reviewer_identity_follows_the_login_mode(
    formatted_model_dir: Path, tmp_path: Path, sample_png: Path, workbench: Workbench
) -> None:
    def bench(**config) -> Workbench:
        return Page(
            Workbench(
                AppConfig(model=str(formatted_model_dir), **config),
                model=workbench.model,
                store=AnnotationStore(tmp_path),
            )
        )

    password = bench(users=(("alice", "pw"),))
    session = uploaded(password, sample_png)
    ask(password, session)
    assert "Please sign in" in submit(
        password, session, ["sound"], "", None, "typed name", None, types.SimpleNamespace(username=None)
    )
    assert submit(
        password, session, ["sound"], "", None, "typed name", None, types.SimpleNamespace(username="alice")
    ).startswith("Saved")
    assert password.whoami(types.SimpleNamespace(username="alice")) == "Reviewing as **alice**."

    oauth = bench(oauth=True)
    session = uploaded(oauth, sample_png)
    ask(oauth, session)
    assert "sign in with Hugging Face" in submit(oauth, session, ["sound"], "", None, "typed name", None, None)
    profile = gr.OAuthProfile({"name": "Bob", "preferred_username": "bob-hf", "profile": "", "picture": ""})
    assert submit(oauth, session, ["sound"], "", None, "typed name", profile, None).startswith("Saved")
    assert {annotation.reviewer for annotation in AnnotationStore(tmp_path).query()} == {"alice", "bob-hf"}


def test_saved_reviews_are_recorded_to_the_hub_sync(workbench: Workbench, sample_png: Path) -> None:
    recorded = []
    workbench.workbench.hub_sync = types.SimpleNamespace(record=lambda *args: recorded.append(args))
    try:
        session = uploaded(workbench, sample_png)
        ask(workbench, session)
        saved = submit(workbench, session, ["hallucination"], "", None, "Dr Sync")
    finally:
        workbench.workbench.hub_sync = None
    assert saved.startswith("Saved") and "failed" not in saved
    assert [(annotation.reviewer, probes) for annotation, probes in recorded] == [("Dr Sync", {})]  # never probed


def test_a_campaigns_reviews_go_to_the_hub_sync_too_and_a_failed_copy_is_said(workbench: Workbench) -> None:
    """On a Space without persistent storage the Hub copy is what survives a restart: campaign reviews included."""
    from helpers import model_output
    from medvlm.annotations.campaigns import Campaigns
    from medvlm.ui.campaigns.handlers import CampaignHandlers

    bench = workbench.workbench
    Campaigns(bench.store).create("Synced", [model_output(0), model_output(1)], reviews_per_output=1, created_by="a")
    handlers, session, recorded = CampaignHandlers(bench), Session(), []

    def record(annotation, probes):
        if recorded:
            raise OSError("the Hub is unreachable")
        recorded.append(annotation)

    bench.hub_sync = types.SimpleNamespace(record=record)
    try:
        shown = handlers.start(session, "Synced", "Dr Sync")
        first = shown.campaign_output_id
        shown = handlers.submit_and_next(session, ["sound"], "", "Dr Sync", first)
        assert shown.campaign_status.startswith("Saved your review") and "failed" not in shown.campaign_status
        assert [(annotation.output_id, annotation.flags) for annotation in recorded] == [(first, ("sound",))]
        second = shown.campaign_output_id
        shown = handlers.submit_and_next(session, ["superficial"], "", "Dr Sync", second)
    finally:
        bench.hub_sync = None
    assert shown.campaign_status.endswith(render.MIRROR_FAILED)  # saved here, and the page says the copy failed
    assert [a.flags for a in bench.store.query(reviewer="Dr Sync") if a.output_id == second] == [("superficial",)]


def test_pairwise_verdicts_go_to_the_hub_sync_from_a_comparison_campaign(workbench: Workbench) -> None:
    """A comparison campaign's verdict is copied with both answers; a failed copy is said, the verdict kept."""
    import dataclasses

    from helpers import model_output
    from medvlm.annotations.campaigns import Campaigns
    from medvlm.annotations.comparison_campaigns import ComparisonCampaigns
    from medvlm.ui.campaigns.handlers import CampaignHandlers

    bench = workbench.workbench
    made = []
    for index in (7, 8):
        base = model_output(index)
        made.append((base, dataclasses.replace(base, output_id=f"{index + 2000:032x}", model={"model": "grpo"})))
    campaigns = Campaigns(bench.store)
    ComparisonCampaigns(campaigns).create("Pairs synced", made, verdicts_per_pair=1, blind=True, created_by="a")
    handlers, session, recorded = CampaignHandlers(bench, campaigns), Session(), []

    def record_verdict(verdict, first, second, campaign):
        if recorded:
            raise OSError("the Hub is unreachable")
        recorded.append((verdict.reviewer, verdict.preferred, first.output_id, second.output_id, campaign))

    bench.hub_sync = types.SimpleNamespace(record_verdict=record_verdict)
    try:
        shown = handlers.start(session, "Pairs synced", "Dr Pair")
        first, second = shown.campaign_output_id, shown.campaign_second_output_id
        shown = handlers.submit_and_next(session, [], "", "Dr Pair", first, [], None, "second", second)
        assert shown.campaign_status.startswith("Saved your verdict") and "failed" not in shown.campaign_status
        assert recorded == [("Dr Pair", second, first, second, "Pairs synced")]
        pair = shown.campaign_output_id, shown.campaign_second_output_id
        shown = handlers.submit_and_next(session, [], "", "Dr Pair", pair[0], [], None, "tie", pair[1])
    finally:
        bench.hub_sync = None
    assert shown.campaign_status.endswith(render.MIRROR_FAILED)
    assert len(ComparisonCampaigns(campaigns).verdicts("Pairs synced")) == 2  # both kept here


# -- the Reviews tab -----------------------------------------------------------------------------


def test_reviews_tab_filters_opens_summarises_and_exports(workbench: Workbench, sample_png: Path) -> None:
    session = Session()
    workbench.load_file(session, sample("CT_small.dcm"))
    ask(workbench, session)
    assert submit(workbench, session, ["hallucination"], "sees a fracture", None, "Dr Filter").startswith("Saved")

    modality, reviewer, model = workbench.review_filters()
    assert (
        "CT" in modality["choices"]
        and "Dr Filter" in reviewer["choices"]
        and workbench.config.model in model["choices"]
    )
    table = workbench.reviews_table("hallucination", "CT", "Dr Filter", "Any")
    assert list(table.columns) == render.REVIEW_COLUMNS and len(table) == 1
    assert list(table.columns[:6]) == ["Review id", "Question", "Model's answer", "Flags", "Comment", "Reviewer"]
    row = table.iloc[0]
    assert (row["Modality"], row["Flags"], row["Comment"]) == ("CT", "Hallucinated finding", "sees a fracture")
    output = session.last_output
    assert row["Model's answer"] == f"{output.letter}) {output.options['ABCD'.index(output.letter)]}"
    assert workbench.reviews_table("sound", "CT", "Dr Filter", "Any").empty

    image, detail = workbench.open_review(int(row["Review id"]))
    assert image.size == session.image.image.size
    assert "Hallucinated finding" in detail and "sees a fracture" in detail and 'class="option chosen' in detail
    selected = workbench.select_review(gr.SelectData(None, {"index": [0, 1], "value": "x", "row_value": list(row)}))
    assert selected.review_id == row["Review id"] and selected.review_detail == detail
    assert workbench.open_review(99999) == (None, render.error_html("There is no annotation with id 99999."))
    assert "**" not in render.error_html("There is no annotation with id 99999.")  # HTML, not raw Markdown

    text, rates, by_modality, by_model, caution, agreement = workbench.reviews_summary(
        "Any", "Any", "Dr Filter", "Any"
    )
    assert "No output has been reviewed by two or more people" in caution
    assert "**1** annotation(s)" in text
    assert rates.set_index("flag").loc["hallucination", "rate"] == 1.0
    assert list(by_modality["modality"].unique()) == ["CT"] and list(by_model["model_id"].unique()) == [
        workbench.config.model
    ]
    assert isinstance(agreement, pd.DataFrame)

    path, status = workbench.export_jsonl()
    records = [json.loads(line) for line in Path(path).read_text().splitlines()]
    assert len(records) == workbench.store.count() and "Exported" in status
    path, status = workbench.export_parquet()
    assert Path(path).stat().st_size > 0 and path.endswith(".parquet")


def test_export_with_no_reviews_says_so(random_workbench: Workbench, tmp_path: Path) -> None:
    empty = Page(Workbench(random_workbench.config, model=None, store=AnnotationStore(tmp_path)))
    assert empty.export_jsonl() == (None, render.error_markdown("There are no annotations to export yet."))


# -- start-up ------------------------------------------------------------------------------------


def test_model_that_cannot_load_leaves_a_working_app(tmp_path: Path, sample_png: Path) -> None:
    bench = Page(Workbench.start(AppConfig(model=str(tmp_path / "no-such-model"), data_dir=tmp_path / "data")))
    assert bench.model is None
    banner = bench.banner()
    assert "No model is loaded" in banner and "No model directory at" in banner and "medvlm-tiny-model" in banner
    session = uploaded(bench, sample_png)
    updates = ask(bench, session)
    assert len(updates) == 1 and "No model is loaded, so questions cannot be answered" in error_of(updates[0])
    assert not generation_threads()
    assert bench.reviews_table("Any", "Any", "Any", "Any").empty
    assert bench.reviews_summary("Any", "Any", "Any", "Any")[0] == "No annotations yet."
    bench.close()


def test_any_load_failure_is_shown_not_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB\nlong details")

    monkeypatch.setattr("medvlm.ui.workbench.load_model", out_of_memory)
    bench = Workbench.start(AppConfig(model="some/model", data_dir=tmp_path))
    assert "Could not load some/model (RuntimeError: CUDA out of memory. Tried to allocate 2 GiB)." in bench.banner()
    assert "long details" not in bench.banner()
    bench.close()


def test_test_model_banner_says_its_output_is_random(workbench: Workbench) -> None:
    assert "its output is random text" in workbench.banner()


@pytest.mark.parametrize(
    ("fast", "shown"),
    [
        (True, f"CPU fast path: {render.FAST_PATH_WEIGHTS[fast_cpu.choose_scheme()]} in 15 layers, "),
        (
            False,
            "CPU fast path off: plain fp32, images up to 401,408 pixels (512 image tokens; the recipe uses 401,408 = "
            "512",
        ),
    ],
)
def test_banner_says_what_the_cpu_fast_path_did(
    fast: bool, shown: str, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads = torch.get_num_threads()
    monkeypatch.setattr(
        fast_cpu, "MIN_QUANTIZED_WEIGHTS", 0
    )  # the tiny model's layers are too small to quantize otherwise
    bench = Workbench.start(AppConfig(model=str(tiny_model_dir), data_dir=tmp_path, fast_cpu=fast))
    try:
        if bench.fast_path_builder is not None:  # bf16-int8: GPTQ's first run prepares it in the background
            bench.fast_path_builder.join(120)
        assert shown in bench.banner()
        assert bench.model is not None and (bench.model.fast_cpu is not None) is fast
    finally:
        bench.close()
        torch.set_num_threads(threads)


def test_banner_says_why_the_fast_path_kept_fp32(workbench: Workbench) -> None:
    # the tiny model's layers are below the size where int8 pays off; its own image budget stays
    assert "CPU fast path without int8 (no linear layer in the language model is large enough" in workbench.banner()
    assert f"images up to {workbench.model.max_pixels:,} pixels" in workbench.banner()


def test_medvlm_r1_gets_its_exact_prompt_by_default(workbench: Workbench) -> None:
    assert (
        Workbench(AppConfig(model=DEFAULT_MODEL_ID), model=None, store=workbench.store).default_style()
        is PromptStyle.MEDVLM_EXACT
    )
    assert workbench.default_style() is PromptStyle.MEDVLM


def test_examples_load_from_the_assets_file(workbench: Workbench) -> None:
    assert [example.label for example in workbench.examples] == ["ct head", "mr abdomen", "ct chest"]
    session = Session()
    shown = workbench.load_example(0, session)
    assert error_of(shown) == "" and shown.upload is None
    assert np.array_equal(np.asarray(picture(shown.viewer)), np.asarray(session.image.image))
    assert (
        shown.image_info.startswith("Example: ct head \u00b7 DICOM \u00b7 CT") and "window: brain" in shown.image_info
    )
    assert shown.window["value"] == "brain" and shown.question == workbench.examples[0].question
    assert shown.options == "CT\nMRI\nX-Ray\nUltrasound" and shown.correct["value"] == "A"


def test_an_upload_after_an_example_carries_none_of_the_examples_answer(
    workbench: Workbench, sample_png: Path
) -> None:
    """The "mr abdomen" example (correct answer B) then an upload: the correct answer is the example's no longer."""
    session = Session()
    example = workbench.load_example(1, session)
    assert example.correct["value"] == "B"
    shown = workbench.load_file(session, str(sample_png), example.question, example.options)
    assert shown.correct["value"] == "" and shown.question == "" and shown.options == ""
    assert shown.correct["choices"] == render.letter_choices()  # no options yet: any letter, as on a fresh page
    # New options typed under it, and asked: nothing chose a correct answer, so none is stored.
    panel, dropdown, _ = workbench.preview_options(session, "Haemorrhage\nInfarct", shown.correct["value"])
    assert dropdown["value"] == "" and "Haemorrhage" in panel
    ask(workbench, session, options="Haemorrhage\nInfarct", correct=dropdown["value"])
    assert "Saved" in submit(workbench, session, ["superficial"], "", dropdown["value"], "Dr Carry")
    [stored] = workbench.store.query(reviewer="Dr Carry")
    assert stored.correct_answer is None and stored.is_correct is None


def test_what_the_person_typed_stays_over_an_upload_and_the_correct_answer_never_does(
    workbench: Workbench, sample_png: Path
) -> None:
    session = Session()
    example = workbench.load_example(1, session)
    edited = example.question + " Answer briefly."
    shown = workbench.load_file(session, str(sample_png), edited, example.options)
    assert shown.question == edited and shown.options == "" and shown.correct["value"] == ""
    typed = workbench.load_file(session, str(sample_png), "Which side?", "Left\nRight")
    assert (typed.question, typed.options, typed.correct["value"]) == ("Which side?", "Left\nRight", "")


def test_the_correct_answer_is_kept_only_while_its_option_reads_the_same(workbench: Workbench) -> None:
    session = Session()
    workbench.load_example(1, session)  # B) Liver
    options = "Spleen\nLiver\nHeart\nUrinary bladder"
    assert workbench.preview_options(session, options, "B")[1]["value"] == "B"  # the example's own options
    assert workbench.preview_options(session, options + "\nKidney", "B")[1]["value"] == "B"  # one added
    assert workbench.preview_options(session, "Spleen\nHaemorrhage\nHeart", "B")[1]["value"] == ""  # retyped
    assert workbench.preview_options(session, "Spleen\nHaemorrhage", "A")[1]["value"] == "A"


def test_examples_file_absent_or_partly_missing(tmp_path: Path) -> None:
    assert load_examples(tmp_path / "examples.json") == []
    (tmp_path / "assets").mkdir()
    listing = tmp_path / "assets" / "examples.json"
    Image.new("RGB", (8, 8)).save(tmp_path / "assets" / "present.png")
    listing.write_text(
        json.dumps(
            [
                {"file": "assets/present.png", "question": "Q?", "options": ["A", "B"], "answer": "B", "window": None},
                {"file": "assets/missing.dcm", "question": "Q?", "options": ["A", "B"]},
            ]
        )
    )
    [example] = load_examples(listing)
    assert example.file == tmp_path / "assets" / "present.png" and example.answer == "B"
    listing.write_text("{ not json")
    assert load_examples(listing) == []


def test_zero_gpu_wraps_generation_only_where_spaces_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    def generate():
        yield 1

    monkeypatch.setitem(sys.modules, "spaces", None)  # import spaces -> ImportError
    assert on_zero_gpu(generate) is generate

    calls = []
    fake = types.ModuleType("spaces")

    def gpu(duration):
        calls.append(duration)
        return lambda fn: ("wrapped", fn)

    fake.GPU = gpu
    monkeypatch.setitem(sys.modules, "spaces", fake)
    assert on_zero_gpu(generate, duration=90) == ("wrapped", generate) and calls == [90]


# -- configuration -------------------------------------------------------------------------------


def test_config_defaults_flags_and_environment() -> None:
    local = AppConfig.from_args([], env={})
    assert (local.model, local.host, local.port, local.users, local.reviewer_mode) == (
        DEFAULT_MODEL_ID,
        "127.0.0.1",
        7860,
        (),
        "name",
    )
    assert local.launch_kwargs()["auth"] is None

    space = AppConfig.from_args(
        [],
        env={
            "SPACE_ID": "me/app",
            "OAUTH_CLIENT_ID": "x",
            "MEDVLM_MODEL": "./tiny",
            "MEDVLM_DATA_DIR": "/data/reviews",
            "MEDVLM_CONCURRENCY": "3",
        },
    )
    assert (space.host, space.model, space.data_dir, space.concurrency, space.reviewer_mode) == (
        "0.0.0.0",
        "./tiny",
        Path("/data/reviews"),
        3,
        "oauth",
    )

    env = {
        "MEDVLM_USERS": "alice:pw1, bob:p:w2",
        "GRADIO_SERVER_NAME": "10.0.0.5",
        "GRADIO_SERVER_PORT": "8080",
        "MEDVLM_MODEL": "from/env",
    }
    configured = AppConfig.from_args([], env=env)
    assert configured.users == (("alice", "pw1"), ("bob", "p:w2")) and configured.reviewer_mode == "password"
    assert (configured.host, configured.port) == ("10.0.0.5", 8080)
    assert configured.launch_kwargs()["auth"] == [("alice", "pw1"), ("bob", "p:w2")]

    assert local.fast_cpu and not AppConfig.from_args(["--no-fast-cpu"], env={}).fast_cpu
    assert (
        not AppConfig.from_args([], env={"MEDVLM_FAST_CPU": "0"}).fast_cpu
        and AppConfig.from_args([], env={"MEDVLM_FAST_CPU": "on"}).fast_cpu
    )

    flags = AppConfig.from_args(
        [
            "--model",
            "m/flag",
            "--port",
            "9000",
            "--host",
            "0.0.0.0",
            "--auth",
            "carol:pw",
            "--concurrency",
            "2",
            "--share",
            "--data-dir",
            "d",
        ],
        env=env,
    )
    assert (flags.model, flags.port, flags.host, flags.users, flags.concurrency, flags.share, flags.data_dir) == (
        "m/flag",
        9000,
        "0.0.0.0",
        (("carol", "pw"),),
        2,
        True,
        Path("d"),
    )


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--auth", "alice"], {}, "--auth must be 'user:password' pairs"),
        ([], {"MEDVLM_USERS": ":pw"}, "MEDVLM_USERS must be 'user:password' pairs"),
        ([], {"MEDVLM_CONCURRENCY": "many"}, "MEDVLM_CONCURRENCY must be a whole number"),
        (["--concurrency", "0"], {}, "--concurrency must be at least 1"),
        ([], {"MEDVLM_FAST_CPU": "maybe"}, "MEDVLM_FAST_CPU must be 1 or 0"),
    ],
)
def test_config_errors_name_the_setting(argv: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        AppConfig.from_args(argv, env=env)


# -- the page and the entry point ----------------------------------------------------------------

ELEM_IDS = {
    "model-banner",
    "tab-ask",
    "tab-reviews",
    "upload",
    "case-sources",
    "example-0",
    "viewer",
    "image-info",
    "upload-error",
    "window-error",
    "dicom-controls",
    "window-preset",
    "custom-window",
    "window-center",
    "window-width",
    "frame",
    "question",
    "options",
    "correct-answer",
    "settings",
    "decoding",
    "temperature",
    "top-p",
    "seed",
    "max-new-tokens",
    "max-pixels",
    "prompt-style",
    "ask",
    "stop",
    "ask-error",
    "answer",
    "reasoning",
    "timing",
    "raw-output",
    "review-panel",
    "reviewer-name",
    "reviewer-identity",
    "review-flags",
    "review-comment",
    "review-submit",
    "review-submit-next",
    "review-status",
    "reviews-flag",
    "reviews-modality",
    "reviews-reviewer",
    "reviews-model",
    "reviews-refresh",
    "reviews-table",
    "review-id",
    "review-open",
    "review-image",
    "review-detail",
    "reviews-summary",
    "plot-flags",
    "plot-modality",
    "plot-model",
    "reviewer-agreement",
    "export-jsonl",
    "export-parquet",
    "export-file",
    "export-status",
    "evaluation",
    "evaluation-file",
    "evaluation-sample",
    "evaluation-error",
    "agreement-note",
}
API_NAMES = {
    "load_file",
    "render_image",
    "view",
    "load_example_0",
    "ask",
    "stop",
    "submit_review",
    "submit_and_next",
    "review_filters",
    "reviews",
    "review_summary",
    "open_review",
    "export_jsonl",
    "export_parquet",
    "load_evaluation",
    "show_evaluation_sample",
}


def test_page_keeps_its_element_ids_and_api_names(workbench: Workbench) -> None:
    """Browser tests find components by elem_id and scripts call api_names: both are a contract."""
    demo = build_demo(workbench)
    elem_ids = {block.elem_id for block in demo.blocks.values() if getattr(block, "elem_id", None)}
    assert ELEM_IDS <= elem_ids
    assert API_NAMES <= {fn.api_name for fn in demo.fns.values() if fn.api_name}


@pytest.mark.slow
def test_app_py_reports_a_bad_setting_in_one_line() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "app.py"), "--concurrency", "0"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "error: --concurrency must be at least 1 (got 0)."


def test_hub_sync_that_cannot_start_is_shown_and_reviews_stay_local(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medvlm.annotations import AnnotationError

    def refuse(store):
        raise AnnotationError("Could not start syncing annotations to the Hub dataset 'me/reviews': 401 Unauthorized.")

    monkeypatch.setattr("medvlm.ui.workbench.hub_sync_from_env", refuse)
    bench = Workbench.start(AppConfig(model=str(tiny_model_dir), data_dir=tmp_path))
    assert bench.hub_sync is None
    assert (
        "Reviews are saved locally only: Could not start syncing annotations to the Hub dataset 'me/reviews'"
        in bench.banner()
    )
    bench.close()


# -- reviewing an evaluation run -------------------------------------------------------------------


def test_evaluation_samples_are_reviewed_like_fresh_answers(workbench: Workbench, tmp_path: Path) -> None:
    """``train.evaluate``'s samples.jsonl, imported: each sample shows highlighted and saves one review."""
    from medvlm.vqa_records import load_records
    from train.evaluate import evaluate, write_outputs

    image = tmp_path / "scan.png"
    Image.radial_gradient("L").resize((64, 64)).save(image)
    rows = [
        {
            "id": f"q{i}",
            "image": image.name,
            "question": "Which modality?",
            "options": ["CT", "MRI", "X-Ray"],
            "answer": "B",
            "modality": "CT",
        }
        for i in range(2)
    ]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    records, _ = load_records(tmp_path / "data.jsonl", format="jsonl")
    result = evaluate(workbench.model, records, batch_size=2, progress=False)
    samples = write_outputs(result, tmp_path / "run")["samples.jsonl"]

    session = Session()
    outputs = workbench.load_evaluation(session, [str(samples), str(image)])  # the run and the image it names
    facts, question, options, correct = outputs.image_info, outputs.question, outputs.options, outputs.correct
    panel, raw, slider = outputs.answer, outputs.raw_output, outputs.evaluation_sample
    assert error_of(outputs) == "" and slider["maximum"] == 2 and slider["minimum"] == 1
    assert outputs.review_panel["visible"] is True and outputs.submit_next["visible"] is True  # 2 samples
    assert question == "Which modality?" and options == "CT\nMRI\nX-Ray" and correct["value"] == "B"
    assert "Evaluation sample 1 of 2" in facts
    letter = result.samples[0].parsed.letter
    assert raw == result.samples[0].completion
    if letter is not None:
        assert 'class="option chosen' in panel and f'data-letter="{letter}"' in panel
    # The options box changing (as it does when the sample is shown) keeps the highlight.
    assert workbench.preview_options(session, options, "B")[0] == workbench.show_answer(session, "B")[0]

    before = workbench.store.count()
    assert "Saved" in submit(workbench, session, ["superficial"], "", "B", "Dr Eval")
    workbench.show_evaluation_sample(session, 1)  # shown again: the same output
    assert "Updated" in submit(workbench, session, ["superficial", "wrong_answer"], "", "B", "Dr Eval")
    assert workbench.store.count() == before + 1
    stored = workbench.store.query(reviewer="Dr Eval")[0]
    assert stored.completion == result.samples[0].completion and stored.correct_answer == "B"
    assert stored.model["model"] == workbench.model.describe()["model"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json\n", "Line 1 of the evaluation file is not JSON"),
        ('{"question": "Q?"}\n', "lacks image, options, completion"),
        ("\n", "holds no samples"),
    ],
)
def test_a_bad_evaluation_file_is_explained(workbench: Workbench, tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "samples.jsonl"
    path.write_text(content)
    outputs = workbench.load_evaluation(Session(), str(path))
    assert message in outputs.evaluation_error and outputs.evaluation_sample["visible"] is False


def test_name_mode_says_it_is_for_a_trusted_team(workbench: Workbench) -> None:
    from medvlm.ui.ask.layout import NAME_MODE_NOTE

    demo = build_demo(workbench)
    (name_box,) = [block for block in demo.blocks.values() if getattr(block, "elem_id", None) == "reviewer-name"]
    assert name_box.info == NAME_MODE_NOTE and "trusted team" in NAME_MODE_NOTE and "--auth" in NAME_MODE_NOTE
    ids = {getattr(block, "elem_id", None) for block in demo.blocks.values()}
    assert {"review-target", "shown-output-id"} <= ids


def test_generation_for_a_case_no_longer_shown_is_dropped(random_workbench: Workbench, sample_png: Path) -> None:
    """An upload while an answer streams stops it, and its answer is never kept or shown."""
    session = uploaded(random_workbench, sample_png)
    stream = random_workbench.ask(session, QUESTION, OPTIONS, max_new_tokens=4000)
    for _ in range(3):
        next(stream)
    random_workbench.load_file(session, sample("CT_small.dcm"))  # another case while generating
    rest = list(stream)  # nothing more reaches the page but Ask made ready again
    assert len(rest) == 1 and rest[0].ask_button["interactive"] is True
    assert all(value == gr.skip() for name, value in rest[0]._asdict().items() if name != "ask_button")
    wait_for_no_generation_thread()
    assert session.last_output is None and not session.generating


def test_submit_and_next_saves_then_shows_the_next_sample_with_a_fresh_form(
    workbench: Workbench, tmp_path: Path
) -> None:
    image = tmp_path / "scan.png"
    Image.radial_gradient("L").resize((64, 64)).save(image)
    samples = samples_file(tmp_path, [image.name] * 2, questions=["Question 0?", "Question 1?"])
    session = Session()
    first = workbench.load_evaluation(session, [str(samples), str(image)])
    assert first.submit_next["visible"] is True and "Evaluation sample 1 of 2" in first.review_target
    refused = workbench.submit_and_next(session, ["superficial"], "", None, "Dr Next", "not-the-shown-id")
    assert "no longer on screen" in refused.review_status and refused.question == gr.skip()  # stays on sample 1
    shown_id = first.output_id
    moved = workbench.submit_and_next(session, ["superficial"], "too short", None, "Dr Next", shown_id)
    assert moved.review_status.startswith("Saved your review (#") and "This is the next sample." in moved.review_status
    assert moved.question == "Question 1?" and moved.evaluation_sample == 2
    assert moved.flags == [] and moved.comment == "" and moved.output_id not in ("", shown_id)
    assert "Evaluation sample 2 of 2" in moved.review_target and moved.submit_next["visible"] is False  # the last
    (stored,) = workbench.store.query(reviewer="Dr Next")
    assert stored.output_id == shown_id and stored.question == "Question 0?"
