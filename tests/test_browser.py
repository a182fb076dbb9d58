"""The app in a real headless browser, launched the way a user launches it (``python app.py``).

Debian's Chromium driven by Playwright (``executable_path``: Playwright's own browser download
cannot run here). A missing browser fails the test with the command that installs it: these
tests are never skipped.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import free_port

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


def chromium_path() -> str:
    path = os.environ.get("MEDVLM_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("Chromium is needed for the browser tests: apt-get install chromium (or set MEDVLM_CHROMIUM)")
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The launched app's data folder (the tests read its SQLite file, as a maintainer would)."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def app_url(formatted_model_dir: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python app.py`` with the format-warm-started tiny model, in its own process."""
    port = free_port()
    log = tmp_path_factory.mktemp("app-log") / "app.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "app.py",
                "--model",
                str(formatted_model_dir),
                "--data-dir",
                str(data_dir),
                "--port",
                str(port),
            ],
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
    const reasoning = document.querySelector('#reasoning textarea');
    if (reasoning && reasoning.value.trim() && !window.__seen.reasoning) window.__seen.reasoning = now();
    if (document.querySelector('#answer .option.chosen') && !window.__seen.answer) window.__seen.answer = now();
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
    page.locator("#upload input[type=file]").set_input_files(str(REPO / "assets" / "ct_head.dcm"))
    expect(page.locator("#preview img")).to_be_visible(timeout=60_000)
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
    expect(page.locator("#preview img")).to_be_visible(timeout=60_000)
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
    expect(page.locator("#review-comment textarea")).to_have_value("")
    expect(page.locator("#review-flags").get_by_label("Superficial reasoning")).not_to_be_checked()
    expect(page.locator("#review-target")).to_contain_text("No answer to review yet")

    # Ticking a flag and saving now stores nothing: there is no answer about the chest.
    page.locator("#review-flags").get_by_label("Superficial reasoning").check()
    page.locator("button#review-submit").click()
    expect(page.locator("#review-status")).to_contain_text("no answer to review yet", timeout=30_000)
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
    expect(page.locator("#preview img")).to_be_visible(timeout=60_000)
    page.locator("#settings").get_by_text("Generation settings").click()
    page.locator("#decoding").get_by_label("Sampling").check()
    page.locator("#seed textarea, #seed input").first.fill(INJECTED_NAMES[1])
    page.locator("button#ask").click()
    error = page.locator("#ask-error")
    expect(error).to_contain_text("The seed must be a whole number", timeout=30_000)
    expect(error).to_contain_text("[Session expired: sign in again]")
    assert error.locator("a").count() == 0
    page.close()
