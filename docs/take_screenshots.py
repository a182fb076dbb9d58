"""The README's screenshots of the Ask page, taken in headless Chromium at three screen sizes.

    python docs/take_screenshots.py            # writes docs/screenshots/ask-<width>x<height>.png

The app runs with the format-warm-started tiny test model (its answers are random text, which the
banner says); the page shows example "ct head" after Ask, with the review form open.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZES = ((1280, 720), (1440, 900), (390, 844))


def main() -> None:
    from playwright.sync_api import sync_playwright

    from medvlm.tiny_model import build_tiny_checkpoint, warm_start_format

    folder = Path(tempfile.mkdtemp(prefix="medvlm-screenshots-"))
    warm_start_format(build_tiny_checkpoint(folder / "model"))
    port = 7871
    app = subprocess.Popen(
        [sys.executable, "app.py", "--model", str(folder / "model"), "--data-dir", str(folder / "data"),
         "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(480):
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        chromium = os.environ.get("MEDVLM_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            for width, height in SIZES:
                page = browser.new_page(viewport={"width": width, "height": height})
                page.goto(url)
                page.locator("button#example-0").click()
                page.wait_for_selector("#viewer img.picture", timeout=60_000)
                page.locator("button#ask").click()
                page.wait_for_selector("#answer .option.chosen", timeout=120_000)
                page.wait_for_selector("#review-panel", state="visible")
                time.sleep(1)
                page.evaluate("window.scrollTo(0, 0)")
                path = REPO / "docs" / "screenshots" / f"ask-{width}x{height}.png"
                page.screenshot(path=str(path), full_page=width < 600)
                print(path.relative_to(REPO))
                page.close()
            browser.close()
    finally:
        app.terminate()


if __name__ == "__main__":
    main()
