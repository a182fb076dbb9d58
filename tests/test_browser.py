"""The app in a real headless browser, launched the way a user launches it (``python app.py``).

Debian's Chromium driven by Playwright (``executable_path``: Playwright's own browser download
cannot run here). A missing browser stops the run before the first test with the command that installs
it (``tests/conftest.py``): these tests are never skipped.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import chromium_path, free_port, running_app, samples_file
from medvlm.annotations import FLAGS, AnnotationStore
from medvlm.annotations.campaigns import Campaigns

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The launched app's data folder (the tests read its SQLite file, as a maintainer would)."""
    return tmp_path_factory.mktemp("data")


@contextlib.contextmanager
def serving(arguments: list[str], log: Path) -> Iterator[str]:
    """``python app.py ARGUMENTS`` in its own process, on a free port, until the block ends; its URL."""
    port = free_port()
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "app.py", *arguments, "--port", str(port)],
            cwd=REPO,
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"},
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 240
        while True:
            if process.poll() is not None:
                pytest.fail(f"app.py exited early:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"app.py did not start within 240 s:\n{log.read_text()}")
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def app_url(formatted_model_dir: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python app.py`` with the format-warm-started tiny model, in its own process."""
    log = tmp_path_factory.mktemp("app-log") / "app.log"
    with serving(["--model", str(formatted_model_dir), "--data-dir", str(data_dir)], log) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        yield instance
        instance.close()


# Installed before Ask is clicked: records when the reasoning first shows text and when an option
# is first highlighted, so the order can be asserted after a fast model has finished.
RECORD_ORDER = """
() => {
  window.__seen = {};
  const now = () => performance.now();
  const check = () => {
    for (const [key, id] of [['', ''], ['second_', 'second-']]) {  // the answer, and a comparison's second one
      const reasoning = document.querySelector(`#${id}reasoning textarea`);
      if (reasoning && reasoning.value.trim() && !window.__seen[key + 'reasoning']) {
        window.__seen[key + 'reasoning'] = now();
      }
      if (document.querySelector(`#${id}answer .option.chosen`) && !window.__seen[key + 'answer']) {
        window.__seen[key + 'answer'] = now();
      }
    }
  };
  const watched = {subtree: true, childList: true, characterData: true, attributes: true};
  new MutationObserver(check).observe(document.body, watched);
  document.addEventListener('input', check, true);
  setInterval(check, 10);
}
"""


def test_dicom_question_stream_highlight_review_and_reviews_tab(browser, app_url: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    page.goto(app_url)
    expect(page.locator("#model-banner")).to_contain_text("random", timeout=60_000)  # the test model says so

    # Upload a DICOM from assets/ and see it rendered with its safe tags.
    page.locator("#case-sources input[type=file]").set_input_files(str(REPO / "assets" / "ct_head.dcm"))
    expect(page.locator("#viewer img.picture")).to_be_visible(timeout=60_000)
    expect(page.locator("#image-info")).to_contain_text("CT", timeout=30_000)
    expect(page.locator("#window-preset").first).to_be_visible()  # DICOM display controls appear

    # Ask.
    page.locator("#question textarea").fill("Which imaging modality was used?")
    page.locator("#options textarea").fill("CT\nMRI\nX-Ray\nUltrasound")
    expect(page.locator("#answer .option")).to_have_count(4, timeout=30_000)
    page.evaluate(RECORD_ORDER)
    page.locator("button#ask").click()

    # Reasoning text appears, then the chosen option is highlighted.
    chosen = page.locator("#answer .option.chosen")
    expect(chosen).to_have_count(1, timeout=120_000)
    expect(page.locator("#reasoning textarea")).not_to_have_value("", timeout=10_000)
    seen = page.evaluate("window.__seen")
    assert "reasoning" in seen and "answer" in seen, seen
    assert seen["reasoning"] <= seen["answer"], seen
    expect(page.locator("#timing")).to_contain_text("tokens", timeout=30_000)
    page.screenshot(path=str(tmp_path / "answer.png"))

    # Flag the reasoning as superficial and save the review.
    page.locator("#reviewer-name textarea, #reviewer-name input").first.fill("Dr Browser")
    page.locator("#review-flags").get_by_label("Superficial reasoning").check()
    page.locator("#review-comment textarea").fill("Says nothing about the image.")
    page.locator("button#review-submit").click()
    expect(page.locator("#review-status")).to_contain_text("Saved", timeout=30_000)

    # Find it in the Reviews tab.
    page.get_by_role("tab", name="Reviews").click()
    table = page.locator("#reviews-table")
    expect(table).to_contain_text("Dr Browser", timeout=60_000)
    expect(table).to_contain_text("Superficial", timeout=30_000)
    table.get_by_text("Dr Browser").filter(visible=True).first.click()
    expect(page.locator("#review-detail")).to_contain_text("Says nothing about the image.", timeout=30_000)
    page.screenshot(path=str(tmp_path / "reviews.png"), full_page=True)
    page.close()


def reviews_in(data_dir: Path, reviewer: str) -> int:
    with sqlite3.connect(data_dir / "annotations.sqlite3") as conn:
        return conn.execute("SELECT count(*) FROM annotations WHERE reviewer = ?", (reviewer,)).fetchone()[0]


def test_a_review_cannot_be_saved_against_a_case_no_longer_on_screen(browser, app_url: str, data_dir: Path) -> None:
    """Ask on "ct head", load "ct chest" without asking: the answer and the form go, and Save stores nothing."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    page.goto(app_url)
    page.locator("button#example-0").click()  # ct head
    expect(page.locator("#viewer img.picture")).to_be_visible(timeout=60_000)
    expect(page.locator("#question textarea")).not_to_have_value("", timeout=30_000)
    page.locator("button#ask").click()
    expect(page.locator("#answer .option.chosen")).to_have_count(1, timeout=120_000)
    expect(page.locator("#review-target")).to_contain_text("ct head", timeout=30_000)
    page.locator("#reviewer-name textarea, #reviewer-name input").first.fill("Dr Stale Browser")
    page.locator("#review-flags").get_by_label("Superficial reasoning").check()
    page.locator("#review-comment textarea").fill("about the head")

    page.locator("button#example-2").click()  # ct chest, not asked
    expect(page.locator("#image-info")).to_contain_text("ct chest", timeout=60_000)
    expect(page.locator("#answer .option.chosen")).to_have_count(0, timeout=30_000)
    expect(page.locator("#reasoning textarea")).to_have_value("", timeout=30_000)
    # The review form leaves with the answer: there is nothing about the chest to review, so no form
    # to save the head's flags from; the page names no answer (an old page's save is refused: see
    # test_app_hostile.py).
    expect(page.locator("#review-panel")).to_be_hidden()
    assert page.locator("#shown-output-id textarea, #shown-output-id input").first.input_value() == ""

    # Asking about the chest opens a fresh form: nothing of the head's review is carried over.
    page.locator("button#ask").click()
    expect(page.locator("#answer .option.chosen")).to_have_count(1, timeout=120_000)
    expect(page.locator("#review-target")).to_contain_text("ct chest", timeout=30_000)
    expect(page.locator("#review-comment textarea")).to_have_value("")
    expect(page.locator("#review-flags").get_by_label("Superficial reasoning")).not_to_be_checked()
    assert reviews_in(data_dir, "Dr Stale Browser") == 0
    page.close()


INJECTED_NAMES = (
    '<img src=x onerror="window.__pwned=1">',
    "[Session expired: sign in again](http://evil.example/login)",
)


def test_user_strings_are_shown_as_text_never_as_markup(browser, app_url: str, data_dir: Path) -> None:
    """Reviewer names from an older store (written before names were checked) and a typed seed render literally."""
    from playwright.sync_api import expect

    from helpers import model_output
    from medvlm.annotations import AnnotationStore, Review

    store = AnnotationStore(data_dir)
    for index, name in enumerate(INJECTED_NAMES):
        annotation, _ = store.add(model_output(index), Review(f"legacy reviewer {index}", ("sound",)))
        with sqlite3.connect(store.db_path) as conn:  # what an older medvlm stored, unchecked
            conn.execute("UPDATE annotations SET reviewer = ? WHERE id = ?", (name, annotation.id))

    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    page.goto(app_url)
    page.get_by_role("tab", name="Reviews").click()
    summary = page.locator("#reviews-summary")
    expect(summary).to_contain_text("Session expired: sign in again", timeout=60_000)
    expect(summary).to_contain_text('<img src=x onerror="window.__pwned=1">')  # shown as the text it is
    assert summary.locator("img").count() == 0 and summary.locator("a").count() == 0
    table = page.locator("#reviews-table")
    expect(table).to_contain_text("Session expired", timeout=30_000)
    assert table.locator("img").count() == 0 and table.locator("a[href*='evil']").count() == 0
    assert page.evaluate("window.__pwned") is None

    # A typed value quoted back in an error message stays text too.
    page.get_by_role("tab", name="Ask").click()
    page.locator("button#example-0").click()
    expect(page.locator("#viewer img.picture")).to_be_visible(timeout=60_000)
    page.locator("#settings").get_by_text("Generation settings").click()
    page.locator("#decoding").get_by_label("Sampling").check()
    page.locator("#seed textarea, #seed input").first.fill(INJECTED_NAMES[1])
    page.locator("button#ask").click()
    error = page.locator("#ask-error")
    expect(error).to_contain_text("The seed must be a whole number", timeout=30_000)
    expect(error).to_contain_text("[Session expired: sign in again]")
    assert error.locator("a").count() == 0
    page.close()


# -- the Ask page as a reader's workstation (issue 13) ------------------------------------------------

RECORD_GENERATIONS = """
() => {
  window.__generations = 0;
  let last = '';
  const check = () => {
    const timing = (document.querySelector('#timing') || {}).textContent || '';
    if (timing.includes('Generating') && !last.includes('Generating')) window.__generations += 1;
    last = timing;
  };
  new MutationObserver(check).observe(document.body, {subtree: true, childList: true, characterData: true});
}
"""


def gradio_error_badges(page) -> int:
    """Gradio's own generic error display: a red "Error" badge on a component, or an error toast."""
    return page.get_by_text("Error", exact=True).count() + page.locator(".toast-body.error").count()


def inside(box: dict, width: int, height: int) -> bool:
    return box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= width and box["y"] + box["height"] <= height


@pytest.mark.parametrize("size", [(1280, 720), (1440, 900)], ids=["1280x720", "1440x900"])
def test_image_question_ask_and_answer_fit_the_screen(browser, app_url: str, size: tuple[int, int]) -> None:
    from playwright.sync_api import expect

    width, height = size
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(app_url)
    page.locator("button#example-0").click()
    expect(page.locator("#viewer img.picture")).to_be_visible(timeout=60_000)
    expect(page.locator("#review-panel")).to_be_hidden()  # no answer yet: no review form
    page.evaluate("window.scrollTo(0, 0)")
    page.locator("button#ask").click()
    expect(page.locator("#answer .option.chosen")).to_have_count(1, timeout=120_000)
    page.evaluate("window.scrollTo(0, 0)")
    for selector in ("#viewer", "#question", "#options", "button#ask", "#answer", "#reasoning"):
        box = page.locator(selector).first.bounding_box()
        assert box is not None and inside(box, width, height), (selector, box)
    expect(page.locator("#review-panel")).to_be_visible()  # with the finished answer of this case
    expect(page.locator("#review-target")).to_contain_text("ct head")
    page.close()


def test_phone_width_puts_the_answer_under_ask(browser, app_url: str) -> None:
    """390x844: the answer under Ask, brought to the top of the screen once asked; the viewer's hint clear of its
    buttons; the Reviews table readable column by column."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 390, "height": 844})
    page.goto(app_url)
    page.locator("button#example-0").click()
    expect(page.locator("#viewer img.picture")).to_be_visible(timeout=60_000)
    hint, tools = page.locator("#viewer .hint").bounding_box(), page.locator("#viewer .tools").bounding_box()
    assert hint["x"] + hint["width"] <= tools["x"], (hint, tools)  # side by side, never on top of each other
    page.locator("button#ask").click()
    expect(page.locator("#answer .option.chosen")).to_have_count(1, timeout=120_000)
    ask, answer = page.locator("button#ask").bounding_box(), page.locator("#answer").bounding_box()
    assert ask["x"] + ask["width"] <= 390 and answer["x"] + answer["width"] <= 390
    assert 0 <= answer["y"] - (ask["y"] + ask["height"]) < 150, (ask, answer)
    assert -2 <= answer["y"] < 200, answer  # on screen from its first line, not at the bottom edge
    page.get_by_role("tab", name="Reviews").click()
    headers = page.locator("#reviews-table th")
    expect(headers.first).to_be_visible(timeout=60_000)
    boxes = (
        "() => [...document.querySelectorAll('#reviews-table th')].map(th => { const r = th.getBoundingClientRect(); "
        "return [r.x, r.y, r.width, r.height]; })"
    )
    shown = f"({boxes})().filter(([x, y, w, h]) => x >= 0 && y >= 0 && x + w <= 390 && y + h <= 844).length"
    try:  # the id and the question at least, the rest a swipe away, once the table has laid out its column widths
        page.wait_for_function(f"() => {shown} >= 2", timeout=15_000)
    except PlaywrightTimeout:
        pytest.fail(f"under two Reviews columns fit a phone's screen (x, y, width, height): {page.evaluate(boxes)}")
    page.close()


def test_a_correct_answer_never_carries_over_to_the_next_case(
    browser, app_url: str, data_dir: Path, tmp_path: Path
) -> None:
    """The "mr abdomen" example (B, Liver) then an uploaded image with new options: nothing is marked correct,
    and the saved review stores no correct answer."""
    from PIL import Image
    from playwright.sync_api import expect

    Image.radial_gradient("L").resize((80, 64)).save(tmp_path / "head.png")
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    page.goto(app_url)
    page.locator("button#example-1").click()
    correct = page.locator("#correct-answer input").first
    expect(correct).to_have_value("B) Liver", timeout=60_000)
    page.locator("#case-sources input[type=file]").set_input_files(str(tmp_path / "head.png"))
    expect(page.locator("#image-info")).to_contain_text("PNG", timeout=60_000)
    expect(correct).to_have_value("Not known")
    expect(page.locator("#question textarea")).to_have_value("")  # the example's question went with it
    page.locator("#question textarea").fill("What is shown?")
    page.locator("#options textarea").fill("Infarct\nHaemorrhage")
    expect(page.locator("#answer .option")).to_have_count(2, timeout=30_000)
    expect(correct).to_have_value("Not known")
    page.locator("button#ask").click()
    expect(page.locator("#answer .option.chosen")).to_have_count(1, timeout=120_000)
    expect(page.locator("#answer")).not_to_contain_text("correct")
    page.locator("#reviewer-name textarea, #reviewer-name input").first.fill("Dr Carried")
    page.locator("#review-flags").get_by_label("Sound reasoning").check()
    page.evaluate("document.querySelector('#review-submit').scrollIntoView({block: 'end'})")  # as far as needed
    page.locator("button#review-submit").click()
    status = page.locator("#review-status")
    expect(status).to_contain_text("Saved your review", timeout=30_000)
    assert inside(status.bounding_box(), 1280, 720)  # the confirmation where the click was
    with sqlite3.connect(data_dir / "annotations.sqlite3") as conn:
        stored = conn.execute("SELECT correct_answer FROM annotations WHERE reviewer = 'Dr Carried'").fetchall()
    assert stored == [(None,)]
    page.close()


def test_any_typed_value_gets_the_apps_own_message_and_the_page_keeps_working(browser, app_url: str) -> None:
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(app_url)
    page.locator("button#example-0").click()
    expect(page.locator("#viewer img.picture")).to_be_visible(timeout=60_000)
    page.locator("#window-preset input").first.click()
    page.get_by_role("option", name="Custom").click()
    expect(page.locator("#custom-window")).to_be_visible(timeout=30_000)
    # Choosing Custom fills in the window shown; wait for it as a person would, or it overwrites the typing.
    # The fields may already hold the file's window, so the sign that Custom's render came back is the caption.
    expect(page.locator("#image-info")).to_contain_text("window: custom", timeout=30_000)
    expect(page.locator("#window-width input").first).to_have_value(re.compile(r"^[1-9][0-9.]*$"), timeout=30_000)
    page.locator("#window-width input").first.fill("-5")
    page.locator("#window-width input").first.press("Enter")
    expect(page.locator("#window-error")).to_contain_text("The window width must be greater than 0", timeout=30_000)
    assert gradio_error_badges(page) == 0

    page.locator("#settings").get_by_text("Generation settings").click()
    page.locator("#max-new-tokens input").first.fill("0")
    page.locator("button#ask").click()
    expect(page.locator("#ask-error")).to_contain_text("Maximum new tokens must be between 1 and", timeout=30_000)
    assert gradio_error_badges(page) == 0

    # Another case still loads and renders: nothing was left broken.
    page.locator("button#example-2").click()
    expect(page.locator("#image-info")).to_contain_text("ct chest", timeout=60_000)
    expect(page.locator("#window-error")).to_have_text("")
    page.locator("#max-new-tokens input").first.fill("48")
    page.locator("button#ask").click()
    expect(page.locator("#answer .option.chosen")).to_have_count(1, timeout=120_000)
    assert gradio_error_badges(page) == 0
    page.close()


def test_double_click_asks_once_and_a_late_stop_keeps_the_timing(browser, app_url: str) -> None:
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(app_url)
    page.locator("button#example-0").click()
    expect(page.locator("#viewer img.picture")).to_be_visible(timeout=60_000)
    page.locator("#options textarea").fill("A) CT\nB) MRI\nC) X-Ray")  # pasted with their letters
    expect(page.locator("#answer .option")).to_have_count(3, timeout=30_000)
    expect(page.locator("#answer .option").first).to_have_text("A)CT", timeout=30_000)  # lettered once
    page.evaluate(RECORD_GENERATIONS)
    page.locator("button#ask").dblclick()
    expect(page.locator("#answer .option.chosen")).to_have_count(1, timeout=120_000)
    expect(page.locator("#timing")).to_contain_text("tokens/s", timeout=30_000)
    time.sleep(2)  # a second generation would have started by now
    assert page.evaluate("window.__generations") == 1
    timing = page.locator("#timing").text_content()
    page.locator("button#stop").click()  # just after the answer finished
    time.sleep(1)
    expect(page.locator("#timing")).to_have_text(timing)
    expect(page.locator("#answer .option.chosen")).to_have_count(1)
    page.close()


def test_a_refused_upload_is_explained_beside_the_upload_and_not_shown(browser, app_url: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    fake = tmp_path / "scan.png"
    fake.write_text("patient list, not an image\n")
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(app_url)
    page.locator("button#example-0").click()
    expect(page.locator("#viewer img.picture")).to_be_visible(timeout=60_000)
    page.locator("#case-sources input[type=file]").set_input_files(str(fake))
    message = page.locator("#upload-error")
    expect(message).to_contain_text("not a DICOM or image file", timeout=60_000)
    expect(page.locator("#viewer img.picture")).to_have_count(0)  # nothing on screen passes for the file
    upload, error = page.locator("#upload").bounding_box(), message.bounding_box()
    assert 0 <= error["y"] - (upload["y"] + upload["height"]) < 80, (upload, error)
    assert page.locator("#ask-error").text_content().strip() == ""
    page.close()


def test_dragging_sets_the_window_and_the_wheel_and_arrows_step_frames_from_one(browser, app_url: str) -> None:
    from playwright.sync_api import expect
    from pydicom.data import get_testdata_file

    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(app_url)
    page.locator("button#example-0").click()
    readout = page.locator("#viewer .readout")
    expect(readout).to_contain_text("W 80 / C 40 HU", timeout=60_000)
    box = page.locator("#viewer .viewer").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    for step in range(1, 11):
        page.mouse.move(x + 8 * step, y - 4 * step)
        time.sleep(0.02)
    page.mouse.up()
    expect(readout).not_to_contain_text("rendering", timeout=30_000)
    expect(readout).not_to_contain_text("W 80 / C 40 HU")
    expect(page.locator("#image-info")).to_contain_text("window: custom", timeout=30_000)
    expect(page.locator("#custom-window")).to_be_visible()  # the numbers can be typed too

    page.locator("#case-sources input[type=file]").set_input_files(get_testdata_file("rtdose.dcm"))
    expect(readout).to_contain_text("frame 8 of 15", timeout=60_000)
    expect(page.locator("#frame")).to_contain_text("1 to 15")
    page.locator("#viewer .viewer").focus()
    page.keyboard.press("ArrowDown")
    expect(readout).to_contain_text("frame 9 of 15", timeout=30_000)
    page.mouse.move(x, y)
    page.mouse.wheel(0, 120)
    expect(readout).to_contain_text("frame 10 of 15", timeout=30_000)
    expect(page.locator("#image-info")).to_contain_text("frame 10 of 15")
    page.close()


def test_without_a_model_ask_is_disabled_and_the_notice_says_so_once(browser, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    arguments = ["--model", str(tmp_path / "no-model"), "--data-dir", str(tmp_path / "data")]
    with serving(arguments, tmp_path / "app.log") as url:
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        page.goto(url)
        expect(page.locator("#model-banner")).to_contain_text("No model is loaded", timeout=60_000)
        expect(page.locator("button#ask")).to_be_disabled()
        assert page.get_by_text("No model is loaded").count() == 1
        page.locator("button#example-0").click()
        expect(page.locator("#viewer img.picture")).to_be_visible(timeout=60_000)  # cases still open
        expect(page.locator("button#ask")).to_be_disabled()
        page.close()


def test_a_small_image_fills_the_viewer_and_the_wheel_zooms(browser, app_url: str) -> None:
    from playwright.sync_api import expect
    from pydicom.data import get_testdata_file

    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(app_url)
    page.locator("#case-sources input[type=file]").set_input_files(get_testdata_file("CT_small.dcm"))  # 128 px
    picture = page.locator("#viewer img.picture")
    expect(picture).to_be_visible(timeout=60_000)
    panel = page.locator("#viewer .viewer").bounding_box()
    page.wait_for_function("() => document.querySelector('#viewer img.picture').style.transform.includes('scale')")
    fitted = picture.bounding_box()
    assert fitted["height"] > 0.95 * panel["height"] and fitted["width"] > 2.5 * 128, (panel, fitted)
    page.mouse.move(panel["x"] + panel["width"] / 2, panel["y"] + panel["height"] / 2)
    page.mouse.wheel(0, -400)  # one image: the wheel zooms
    page.wait_for_timeout(300)
    assert picture.bounding_box()["width"] > 1.5 * fitted["width"]
    page.locator("#viewer .viewer").dblclick()  # fit again
    page.wait_for_timeout(300)
    assert abs(picture.bounding_box()["width"] - fitted["width"]) < 2
    page.close()


def test_reviews_tab_reads_as_a_reviewer_expects(browser, app_url: str) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(app_url)
    page.get_by_role("tab", name="Reviews").click()
    table = page.locator("#reviews-table")
    expect(table).to_contain_text("Model's answer", timeout=60_000)
    headers = [text.strip() for text in table.locator("th").all_inner_texts() if text.strip()]
    assert headers[:6] == ["Review id", "Question", "Model's answer", "Flags", "Comment", "Reviewer"], headers
    sizes = (
        "() => { const t = document.querySelector('#reviews-table table'); return [t.scrollWidth, "
        "document.querySelector('#reviews-table').clientWidth]; }"
    )
    try:  # every column in the panel of a 1440-pixel window, once the table has laid out its column widths
        page.wait_for_function(f"() => {{ const [wide, room] = ({sizes})(); return wide <= room; }}", timeout=15_000)
    except PlaywrightTimeout:
        pytest.fail(f"the Reviews table stays wider than its panel (table, panel): {page.evaluate(sizes)}")
    assert page.locator("#review-id textarea, #review-id input").first.input_value() == ""  # no "0" while empty
    page.locator("#review-id textarea, #review-id input").first.fill("999999")
    page.locator("button#review-open").click()
    detail = page.locator("#review-detail")
    expect(detail).to_contain_text("There is no annotation with id 999999", timeout=30_000)
    assert "**" not in detail.inner_text()  # a sentence, not raw Markdown
    expect(page.locator("#agreement-note")).to_contain_text("reviewed by two or more people", timeout=30_000)
    page.close()


def test_submit_and_next_steps_through_an_evaluation_run(
    browser, app_url: str, tmp_path: Path, data_dir: Path
) -> None:
    from PIL import Image
    from playwright.sync_api import expect

    image = tmp_path / "scan.png"
    Image.radial_gradient("L").resize((64, 64)).save(image)
    samples = samples_file(tmp_path, [image.name] * 2, questions=["Browser sample 0?", "Browser sample 1?"])
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(app_url)
    page.locator("#evaluation").get_by_text("Review an evaluation run").click()
    page.locator("#evaluation-file input[type=file]").set_input_files([str(samples), str(image)])
    expect(page.locator("#review-target")).to_contain_text("Evaluation sample 1 of 2", timeout=60_000)
    page.locator("#reviewer-name textarea, #reviewer-name input").first.fill("Dr Next Browser")
    page.locator("#review-flags").get_by_label("Superficial reasoning").check()
    page.locator("button#review-submit-next").click()
    expect(page.locator("#review-target")).to_contain_text("Evaluation sample 2 of 2", timeout=60_000)
    expect(page.locator("#review-status")).to_contain_text("Saved your review")
    expect(page.locator("#question textarea")).to_have_value("Browser sample 1?")
    expect(page.locator("#review-flags").get_by_label("Superficial reasoning")).not_to_be_checked()  # a fresh form
    expect(page.locator("button#review-submit-next")).to_be_hidden()  # the last sample
    assert reviews_in(data_dir, "Dr Next Browser") == 1
    page.close()


@pytest.mark.parametrize("size", [(1280, 720), (1440, 900)], ids=["1280x720", "1440x900"])
def test_the_campaign_buttons_stay_on_screen_and_the_next_output_is_shown_from_its_top(
    browser, app_url: str, data_dir: Path, size: tuple[int, int]
) -> None:
    from playwright.sync_api import expect

    from helpers import model_output

    width, height = size
    name = f"Scroll round {width}"
    outputs = [model_output(700 + width + index, question=f"Question {index + 1} at {width}?") for index in range(2)]
    Campaigns(AnnotationStore(data_dir)).create(name, outputs, reviews_per_output=1, created_by="admin")
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(app_url)
    start_campaign(page, name, f"Dr Scroll {width}")
    expect(page.locator("#campaign-case")).to_contain_text(f"Question 1 at {width}?", timeout=60_000)
    for button in ("#campaign-back", "#campaign-submit", "#campaign-skip"):  # on screen before any scrolling
        assert inside(page.locator(f"button{button}").bounding_box(), width, height), button
    page.locator("#campaign-flags").get_by_label("Sound reasoning").check()  # Playwright scrolls down to it
    assert page.evaluate("window.scrollY") > 200
    assert inside(page.locator("button#campaign-submit").bounding_box(), width, height)
    page.locator("button#campaign-submit").click()
    expect(page.locator("#campaign-case")).to_contain_text(f"Question 2 at {width}?", timeout=30_000)
    top = "() => Math.abs(document.querySelector('#campaign-output').getBoundingClientRect().top - 8) < 2"
    page.wait_for_function(top)  # scrolled back up to the new output, a little below the window's edge
    for shown in ("#campaign-viewer", "#campaign-case", "#campaign-status"):  # the new image, its question, "Saved"
        assert inside(page.locator(shown).bounding_box(), width, height), shown
    expect(page.locator("#campaign-status")).to_contain_text("Saved your review")
    page.close()


def test_a_blind_campaign_names_no_model_and_its_ct_can_be_windowed(browser, app_url: str, data_dir: Path) -> None:
    """The banner names no model while a blind campaign is on screen (and does again on the Ask tab); a stored CT's
    window is dragged over its stored grey levels."""
    from playwright.sync_api import expect

    from medvlm.annotations import ModelOutput
    from medvlm.images import load_image
    from medvlm.parsing import parse_completion

    ct = load_image(REPO / "assets" / "ct_head.dcm")
    output = ModelOutput.answered(
        parse_completion("<think>Bone bright, air dark.</think><answer>A</answer>", 4, final=True),
        output_id="blind-ct-head",
        image=ct.image,
        image_metadata=ct.metadata.to_dict(),
        question="Which modality?",
        options=["CT", "MRI", "X-Ray", "Ultrasound"],
        correct_answer="A",
        stop_reason="eos",
        model={"model": "hidden-lab/grpo-run-7"},
        settings={},
        prompt_style="medvlm",
        timing=None,
        generated_at="2026-12-01T00:00:00+00:00",
    )
    Campaigns(AnnotationStore(data_dir)).create("Blind CT", [output], reviews_per_output=1, blind=True, created_by="a")
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(app_url)
    banner = page.locator("#model-banner")
    expect(banner).to_contain_text("random", timeout=60_000)  # the served test model, named
    start_campaign(page, "Blind CT", "Dr Blind")
    expect(page.locator("#campaign-case")).to_contain_text("hidden (blind campaign)", timeout=60_000)
    expect(banner).to_contain_text("blind campaign", timeout=30_000)
    served = page.evaluate("document.querySelector('#model-banner').innerText")
    assert "Model:" not in served and "random" not in served and "grpo-run-7" not in page.content()
    readout = page.locator("#campaign-viewer .readout")
    expect(readout).to_contain_text(f"W {ct.metadata.window_width:g} / C {ct.metadata.window_center:g} HU")
    box = page.locator("#campaign-viewer .viewer").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 - 60, box["y"] + box["height"] / 2 + 30, steps=4)
    page.mouse.up()
    expect(readout).to_contain_text("of the stored picture")
    assert "url(" in page.evaluate("document.querySelector('#campaign-viewer .picture').style.filter")
    page.locator("#campaign-viewer .viewer").dblclick()  # back to the stored window
    expect(readout).not_to_contain_text("of the stored picture")
    page.get_by_role("tab", name="Ask").click()
    expect(banner).to_contain_text("random", timeout=30_000)
    page.close()


def start_campaign(page, campaign: str, reviewer: str) -> None:
    """Open the Campaigns tab, choose ``campaign`` and start reviewing it as ``reviewer``, as a person does."""
    page.get_by_role("tab", name="Campaigns").click()
    page.locator("#campaign-choice input").first.click()
    page.get_by_role("option", name=campaign).click()
    page.locator("#campaign-reviewer textarea, #campaign-reviewer input").first.fill(reviewer)
    page.locator("button#campaign-start").click()


def test_a_reviewer_works_through_a_campaign_and_sees_hints_and_progress(
    browser, app_url: str, data_dir: Path
) -> None:
    from playwright.sync_api import expect

    from helpers import model_output
    from medvlm.annotations import AnnotationStore
    from medvlm.annotations.campaigns import Campaigns

    contradicting = "<think>Air-filled lobes on both sides: this is the brain.</think><answer>B</answer>"
    outputs = [model_output(500 + index, completion=contradicting) for index in range(2)]
    Campaigns(AnnotationStore(data_dir)).create(
        "Browser round", outputs, reviews_per_output=1, guidelines="Mark **contradictions**.", created_by="admin"
    )
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(app_url)
    start_campaign(page, "Browser round", "Dr Campaign")
    expect(page.locator("#campaign-guidelines")).to_contain_text("Mark contradictions", timeout=60_000)
    expect(page.locator("#campaign-case")).to_contain_text("Output 1 of 2", timeout=30_000)
    expect(page.locator("#campaign-viewer img.picture")).to_be_visible()
    expect(page.locator("#campaign-hints")).to_contain_text("reasoning contradicts the answer")
    page.locator("#campaign-flags").get_by_label("Reasoning contradicts the answer").check()
    page.locator("#campaign-marking").get_by_text("Mark passages of the reasoning").click()
    page.locator("#campaign-sentences").get_by_label("Air-filled lobes on both sides: this is the brain.").check()
    page.locator("#campaign-span-label").get_by_label("Contradicts the answer").check()
    page.locator("button#campaign-submit").click()
    expect(page.locator("#campaign-status")).to_contain_text("Saved your review", timeout=30_000)
    (marked,) = [a for a in AnnotationStore(data_dir).query(reviewer="Dr Campaign")]
    assert [(marked.completion[span.start : span.end], span.label) for span in marked.spans] == [
        ("Air-filled lobes on both sides: this is the brain.", "contradiction")
    ]
    expect(page.locator("#campaign-case")).to_contain_text("Output 2 of 2")
    expect(page.locator("#campaign-flags").get_by_label("Reasoning contradicts the answer")).not_to_be_checked()
    expect(page.locator("#campaign-progress")).to_contain_text("1 of 2")
    page.locator("button#campaign-submit").click()  # no flag and no comment: refused, the output stays
    expect(page.locator("#campaign-status")).not_to_contain_text("Saved your review", timeout=30_000)
    expect(page.locator("#campaign-case")).to_contain_text("Output 2 of 2")
    page.locator("#campaign-case").click()  # off the text boxes: the keys drive the form
    page.keyboard.press("5")  # the fifth flag, "Sound reasoning"
    expect(page.locator("#campaign-flags").get_by_label("Sound reasoning")).to_be_checked()
    page.keyboard.press("Control+Enter")  # Submit & next
    expect(page.locator("#campaign-case")).to_contain_text("Nothing is left for you", timeout=30_000)
    expect(page.locator("#campaign-progress")).to_contain_text("2 of 2")
    assert reviews_in(data_dir, "Dr Campaign") == 2

    # The campaign's report, loaded by opening it: progress, agreement (too few outputs for an interval), plots.
    page.locator("#campaign-report-box").get_by_text("Campaign report").click()
    expect(page.locator("#campaign-report")).to_contain_text("2 of 2 outputs complete", timeout=30_000)
    expect(page.locator("#campaign-report")).to_contain_text("Dr Campaign 2")
    expect(page.locator("#campaign-agreement")).to_contain_text("95% interval of kappa")
    expect(page.locator("#campaign-progress-plot")).to_contain_text("Reviews submitted so far")
    expect(page.locator("#campaign-plot-modality")).to_contain_text("Flags in this campaign, by modality")
    legend = page.evaluate(  # the labels drawn inside the plot's own box, not cut off at its edge
        """(selector) => { const plot = document.querySelector(selector), right = plot.getBoundingClientRect().right;
          return [...plot.querySelectorAll('svg text')].filter((text) => text.getBoundingClientRect().right <= right)
            .map((text) => text.textContent); }""",
        "#campaign-plot-modality",
    )
    assert set(FLAGS.values()) <= set(legend), legend  # all five flags, not three

    # Back: the last review, filled in, to change.
    page.locator("button#campaign-back").click()
    expect(page.locator("#campaign-case")).to_contain_text("Output 2 of 2", timeout=30_000)
    expect(page.locator("#campaign-flags").get_by_label("Sound reasoning")).to_be_checked()
    page.locator("button#campaign-back").click()
    expect(page.locator("#campaign-case")).to_contain_text("Output 1 of 2", timeout=30_000)
    expect(page.locator("#campaign-flags").get_by_label("Reasoning contradicts the answer")).to_be_checked()
    page.close()


def test_an_administrator_makes_a_campaign_from_a_dataset_the_model_answers(
    browser, formatted_model_dir: Path, tmp_path: Path
) -> None:
    """Signed in, the set-up panel takes a dataset and its images (a taken name refused, then the same uploads
    used again); the served model answers them; a review follows, the report's export downloads the campaign as a
    dataset, and an adjudication shows in the report as soon as it is saved."""
    import json
    import zipfile

    import datasets
    from PIL import Image
    from playwright.sync_api import expect

    rows = []
    for index in range(3):
        Image.new("L", (48, 40 + 4 * index), 70 * index).save(tmp_path / f"scan{index}.png")
        rows.append({"id": f"r{index}", "image": f"scans/scan{index}.png", "question": f"Finding {index}?",
                     "options": ["Effusion", "Normal"], "answer": "A", "question_type": "Lesion Grading"})  # fmt: skip
    (tmp_path / "questions.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    from helpers import model_output
    from medvlm.annotations import Review

    taken = Campaigns(AnnotationStore(tmp_path / "data"))
    taken.create("Taken round", [model_output(900)], reviews_per_output=2, created_by="bob")
    for reviewer, flags in (("Dr One", ("sound",)), ("Dr Two", ("superficial",))):  # a split to adjudicate
        given = taken.next_output("Taken round", reviewer)
        taken.submit("Taken round", reviewer, given.output.output_id, Review(reviewer, flags))
    arguments = ["--model", str(formatted_model_dir), "--data-dir", str(tmp_path / "data"), "--auth", "alice:pw"]
    with serving(arguments, tmp_path / "app.log") as url:
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(url)
        page.get_by_label("username").fill("alice")
        page.get_by_label("password").fill("pw")
        page.get_by_role("button", name="Login").click()
        page.get_by_role("tab", name="Campaigns").click()
        page.locator("#campaign-admin").get_by_text("Set up campaigns (administrators)").click()
        source = page.locator("#new-campaign-source")
        source.get_by_label("Two evaluation runs of the same questions, judged side by side (a comparison)").check()
        expect(page.locator("#new-campaign-flips-only")).to_be_visible()  # a comparison's own choices show
        expect(page.locator("#new-campaign-second-run")).to_be_visible()
        source.get_by_label("A dataset and its images, answered now by the served model").check()
        expect(page.locator("#new-campaign-flips-only")).to_be_hidden()
        expect(page.locator("#new-campaign-second-run")).to_be_hidden()
        page.locator("#new-campaign-files input[type=file]").set_input_files(
            [str(tmp_path / "questions.jsonl"), *(str(tmp_path / f"scan{index}.png") for index in range(3))]
        )
        # Gradio lays each name out as stem and extension ("scan2 .png"); the row's accessible name is whole.
        uploaded = page.locator("#new-campaign-files").get_by_role("row", name=re.compile(r"^scan2\.png"))
        expect(uploaded).to_be_visible(timeout=30_000)
        name = page.locator("#new-campaign-name textarea, #new-campaign-name input").first
        status = page.locator("#campaign-admin-status")
        name.fill("Taken round")
        page.locator("button#new-campaign-create").click()
        expect(status).to_contain_text("There is already a campaign called 'Taken round'", timeout=60_000)
        name.fill("Answered in the browser")  # the name fixed, the files as they were uploaded
        page.locator("button#new-campaign-create").click()
        expect(status).not_to_contain_text("already", timeout=10_000)  # the old error goes at once
        expect(status).to_contain_text(
            "Created campaign Answered in the browser: all 3 questions answered by", timeout=120_000
        )
        page.locator("button#campaign-start").click()
        expect(page.locator("#campaign-case")).to_contain_text("Output 1 of 3", timeout=60_000)
        expect(page.locator("#campaign-viewer img.picture")).to_be_visible()
        page.locator("#campaign-flags").get_by_label("Sound reasoning").check()
        page.locator("button#campaign-submit").click()
        expect(page.locator("#campaign-status")).to_contain_text("Saved your review", timeout=30_000)

        # The administrator downloads the campaign as a dataset from the report.
        page.locator("#campaign-report-box").get_by_text("Campaign report").click()
        page.locator("button#campaign-export").click()
        expect(page.locator("#campaign-export-status")).to_contain_text("Exported Answered in the browser")
        exported_row = page.locator("#campaign-export-file").get_by_role(
            "row", name=re.compile(r"^Answered-in-the-browser\.zip")
        )
        link = exported_row.get_by_role("link")  # the size and an arrow: Gradio's download link
        with page.expect_download() as download:
            link.click()
        download.value.save_as(tmp_path / "exported.zip")

        # Another campaign: its report opens without a Refresh, and an adjudication shows as soon as it is saved.
        page.locator("#campaign-choice input").first.click()
        page.get_by_role("option", name="Taken round").click()
        page.locator("#campaign-report-box").get_by_text("Campaign report").click()
        disagreements = page.locator("#campaign-disagreements")
        expect(disagreements).to_contain_text("Superficial reasoning 1/2", timeout=60_000)
        page.locator("#adjudicate-output textarea, #adjudicate-output input").first.fill("1")
        page.locator("#adjudicate-flags").get_by_label("Superficial reasoning").check()
        page.locator("button#adjudicate-save").click()
        expect(page.locator("#adjudicate-status")).to_contain_text("Adjudicated output 1", timeout=30_000)
        decided = disagreements.locator("tbody tr").first.locator("td").last  # the "adjudicated" column
        expect(decided).to_have_text("Superficial reasoning", timeout=30_000)
        page.close()
    with zipfile.ZipFile(tmp_path / "exported.zip") as zipped:
        zipped.extractall(tmp_path / "exported")
    exported = datasets.load_dataset(str(tmp_path / "exported"), split="train", cache_dir=str(tmp_path / "cache"))
    assert [(row["question"], [review["reviewer"] for review in row["reviews"]]) for row in exported] == [
        ("Finding 0?", ["alice"])
    ]
    campaigns = Campaigns(AnnotationStore(tmp_path / "data"))
    assert campaigns.generation("Answered in the browser").done
    stored = [campaigns.store.output(output_id) for output_id in campaigns.output_ids("Answered in the browser")]
    assert [output.question for output in stored] == ["Finding 0?", "Finding 1?", "Finding 2?"]
    assert all(output.question_type == "Lesion Grading" and output.completion for output in stored)


def test_two_models_answer_side_by_side_and_a_blind_verdict_reveals_them(
    browser, formatted_model_dir: Path, second_formatted_model_dir: Path, tmp_path: Path
) -> None:
    """``--compare-model``: both answers stream (on a CPU one after the other), each is highlighted, the sides
    carry no names until the verdict is saved, and the stored verdict names the output the reviewer chose."""
    from PIL import Image
    from playwright.sync_api import expect

    Image.radial_gradient("L").resize((96, 80)).save(tmp_path / "scan.png")
    models = {str(formatted_model_dir), str(second_formatted_model_dir)}
    arguments = ["--model", str(formatted_model_dir), "--compare-model", str(second_formatted_model_dir)]
    with serving([*arguments, "--data-dir", str(tmp_path / "data")], tmp_path / "app.log") as url:
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(url)
        expect(page.locator("#model-banner")).to_contain_text("Comparing", timeout=60_000)
        expect(page.locator("#blind input")).to_be_checked()
        page.locator("#case-sources input[type=file]").set_input_files(str(tmp_path / "scan.png"))
        expect(page.locator("#viewer img.picture")).to_be_visible(timeout=60_000)
        page.locator("#question textarea").fill("Which imaging modality was used?")
        page.locator("#options textarea").fill("CT\nMRI\nX-Ray\nUltrasound")
        expect(page.locator("#second-answer .option")).to_have_count(4, timeout=30_000)
        page.evaluate(RECORD_ORDER)
        page.locator("button#ask").click()

        expect(page.locator("#answer .option.chosen")).to_have_count(1, timeout=120_000)
        expect(page.locator("#second-answer .option.chosen")).to_have_count(1, timeout=120_000)
        expect(page.locator("#second-timing")).to_contain_text("tokens", timeout=30_000)
        seen = page.evaluate("window.__seen")
        assert seen["reasoning"] <= seen["answer"] <= seen["second_reasoning"] <= seen["second_answer"], seen
        for header, position in (("#first-header", 1), ("#second-header", 2)):
            expect(page.locator(header)).to_have_text(f"Answer {position}")  # blind: no model named yet
        assert not any(model in page.locator("#ask-row").inner_text() for model in models)

        page.locator("#reviewer-name textarea, #reviewer-name input").first.fill("Dr Pair")
        expect(page.locator("#verdict-panel")).to_be_visible()
        page.locator("#verdict").get_by_label("Answer 2 is better").check()
        page.locator("button#verdict-submit").click()
        expect(page.locator("#verdict-status")).to_contain_text("Saved your verdict", timeout=30_000)
        expect(page.locator("#second-header")).to_contain_text("Answer 2: ", timeout=10_000)
        revealed = page.locator("#second-header").inner_text().split("Answer 2: ", 1)[1].strip()
        page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)
        page.close()
    with sqlite3.connect(tmp_path / "data" / "annotations.sqlite3") as conn:
        ((preferred, shown_first, reviewer, blind),) = conn.execute(
            "SELECT preferred, shown_first, reviewer, blind FROM verdicts"
        ).fetchall()
        (model,) = conn.execute("SELECT model_id FROM outputs WHERE output_id = ?", (preferred,)).fetchone()
    assert preferred != shown_first and reviewer == "Dr Pair" and blind == 1  # the right-hand answer won
    assert model == revealed and model in models  # and the name revealed over it is the model that wrote it


def test_a_reviewer_judges_a_blind_comparison_campaign_with_the_keys_and_goes_back(
    browser, app_url: str, data_dir: Path, tmp_path: Path
) -> None:
    """A comparison campaign in the Campaigns tab: both answers side by side, no model named, the verdict chosen
    with a digit and submitted with Ctrl+Enter, the models revealed, and Back shows the verdict again."""
    import dataclasses

    from playwright.sync_api import expect

    from helpers import model_output
    from medvlm.annotations import AnnotationStore
    from medvlm.annotations.campaigns import Campaigns
    from medvlm.annotations.comparison_campaigns import ComparisonCampaigns

    pairs = []
    for index in range(2):
        base = model_output(700 + index, model={"model": "base-model"})
        grpo = dataclasses.replace(
            base,
            output_id=f"{700 + index:031x}f",
            completion="<think>Dark lobes full of air: the lungs.</think><answer>B</answer>",
            reasoning="Dark lobes full of air: the lungs.",
            model={"model": "grpo-model"},
        )
        pairs.append((base, grpo))
    comparisons = ComparisonCampaigns(Campaigns(AnnotationStore(data_dir)))
    comparisons.create("Browser pairs", pairs, verdicts_per_pair=1, blind=True, created_by="admin")
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.goto(app_url)
    start_campaign(page, "Browser pairs", "Dr Pairs")
    expect(page.locator("#campaign-case")).to_contain_text("Pair 1 of 2", timeout=60_000)
    expect(page.locator("#campaign-pair")).to_be_visible()
    expect(page.locator("#campaign-flags")).to_be_hidden()  # a verdict, not a review, is asked for
    expect(page.locator("#campaign-first-header")).to_have_text("Answer 1")
    expect(page.locator("#campaign-second-header")).to_have_text("Answer 2")
    expect(page.locator("#campaign-second-answer .option.chosen")).to_have_count(1)
    assert "model" not in page.locator("#campaign-case").inner_text().replace("models hidden", "")
    first_shown = page.locator("#campaign-output-id textarea, #campaign-output-id input").first.input_value()
    page.locator("#campaign-case").click()  # off the text boxes: the keys drive the form
    page.keyboard.press("2")  # "Answer 2 is better"
    expect(page.locator("#campaign-verdict").get_by_label("Answer 2 is better")).to_be_checked()
    page.screenshot(path=str(tmp_path / "comparison-campaign.png"), full_page=True)
    page.keyboard.press("Control+Enter")
    expect(page.locator("#campaign-status")).to_contain_text("Saved your verdict", timeout=30_000)
    expect(page.locator("#campaign-status")).to_contain_text("base-model")
    expect(page.locator("#campaign-case")).to_contain_text("Pair 2 of 2")
    expect(page.locator("#campaign-verdict").get_by_label("Answer 2 is better")).not_to_be_checked()
    (verdict,) = AnnotationStore(data_dir).verdicts([pair[0].output_id for pair in pairs])
    assert verdict.shown_first == first_shown and verdict.preferred != first_shown and verdict.reviewer == "Dr Pairs"
    page.locator("button#campaign-back").click()
    expect(page.locator("#campaign-case")).to_contain_text("Pair 1 of 2", timeout=30_000)
    expect(page.locator("#campaign-verdict").get_by_label("Answer 2 is better")).to_be_checked()
    # The report of a comparison asks an adjudicator for a verdict on a pair, not for flags.
    page.locator("#campaign-report-box").get_by_text("Campaign report").click()
    page.locator("button#campaign-report-refresh").click()
    expect(page.locator("#campaign-report")).to_contain_text("1 of 2 pairs complete", timeout=30_000)
    expect(page.locator("#adjudicate-verdict")).to_be_visible()
    expect(page.locator("#adjudicate-flags")).to_be_hidden()
    page.close()


def test_the_page_says_answers_are_slower_while_gptq_prepares_the_fast_path(
    browser, formatted_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first start on a CPU with fast bf16: the page serves at once, tells the reviewer why answers are slow
    for now, answers (from bf16), and after the switch a reload names the int8 fast path instead."""
    import threading

    import torch
    from playwright.sync_api import expect

    from medvlm import fast_cpu
    from medvlm.ui.config import AppConfig
    from medvlm.ui.workbench import PREPARING_FAST_PATH

    monkeypatch.setenv("MEDVLM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fast_cpu, "MIN_QUANTIZED_WEIGHTS", 0)  # the tiny model's layers are too small otherwise
    monkeypatch.setattr(fast_cpu, "choose_scheme", lambda flags=None: fast_cpu.BF16_INT8)
    release, calibrate = threading.Event(), fast_cpu.quantize_with_calibration

    def held_back(*args, **kwargs) -> None:
        release.wait(60)
        calibrate(*args, **kwargs)

    monkeypatch.setattr(fast_cpu, "quantize_with_calibration", held_back)
    threads = torch.get_num_threads()
    config = AppConfig(model=str(formatted_model_dir), data_dir=tmp_path / "data", fidelity_check=False)
    try:
        with running_app(config) as app:
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            page.goto(app.url)
            banner = page.locator("#model-banner")
            expect(banner).to_contain_text(PREPARING_FAST_PATH, timeout=60_000)
            page.locator("button#example-0").click()
            expect(page.locator("#viewer img.picture")).to_be_visible(timeout=60_000)
            page.locator("button#ask").click()
            expect(page.locator("#answer .option.chosen")).to_have_count(1, timeout=120_000)  # answered meanwhile
            release.set()
            app.workbench.fast_path_builder.join(120)
            page.reload()
            expect(banner).to_contain_text("CPU fast path: int8 weights", timeout=60_000)
            expect(banner).not_to_contain_text("Answers are slower")
            page.close()
    finally:
        release.set()
        torch.set_num_threads(threads)


def test_probe_shows_each_probe_and_a_sentence_draws_its_map_over_the_image(
    browser, looking_model_dir: Path, tmp_path: Path
) -> None:
    """The model answers the square task from the pixels: Probe finds the answer changes without the image,
    and the selected sentence's map lies exactly over the picture, zoomed with it."""
    import random

    from playwright.sync_api import expect

    from medvlm.square_task import QUESTION, square_image

    scan = tmp_path / "square.png"
    square_image(random.Random(4), True).save(scan)
    data = tmp_path / "data"
    with serving(["--model", str(looking_model_dir), "--data-dir", str(data)], tmp_path / "app.log") as url:
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        page.goto(url)
        page.locator("#case-sources input[type=file]").set_input_files(str(scan))
        expect(page.locator("#viewer img.picture")).to_be_visible(timeout=60_000)
        page.locator("#question textarea").fill(QUESTION)
        page.locator("#options textarea").fill("Bright\nDark")
        page.locator("button#ask").click()
        expect(page.locator("#answer .option.chosen")).to_contain_text("Bright", timeout=120_000)

        page.locator("button#probe").click()
        results = page.locator("#probe-results")
        expect(results).to_contain_text("Image-dependent: the answer changed with the blank image.", timeout=120_000)
        expect(results).to_contain_text("Options rotated")
        with sqlite3.connect(data / "annotations.sqlite3") as conn:
            stored = conn.execute("SELECT kind, letter, changed FROM probe_answers ORDER BY kind").fetchall()
        assert stored == [("blank", "B", 1), ("rotate", "A", 0)]

        page.locator("#sentence").get_by_label("The square is bright.").check()
        overlay = page.locator("#viewer img.overlay")
        expect(overlay).to_be_visible(timeout=60_000)
        expect(page.locator("#relevance-status")).to_contain_text("2\u00d72 blocks")
        page.wait_for_function(
            "() => { const o = document.querySelector('#viewer img.overlay');"
            " return o && o.style.transform && o.style.transform.includes('scale'); }"
        )
        picture = page.locator("#viewer img.picture")

        def aligned() -> None:
            a, b = picture.bounding_box(), overlay.bounding_box()
            assert all(abs(a[key] - b[key]) < 1.5 for key in ("x", "y", "width", "height")), (a, b)

        aligned()
        page.screenshot(path=str(tmp_path / "probe.png"))
        box = page.locator("#viewer .viewer").bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.wheel(0, -400)
        page.wait_for_timeout(300)
        aligned()  # zoomed together
        page.locator("#sentence").get_by_label("(no map)").check()
        expect(overlay).to_have_count(0, timeout=30_000)
        page.close()
