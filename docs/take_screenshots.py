"""The README's screenshots, taken in headless Chromium: the Ask page at three screen sizes, and a
review campaign.

    python docs/take_screenshots.py    # docs/screenshots/ask-<width>x<height>.png, campaign.png, campaign-report.png

The app runs with the format-warm-started tiny test model (its answers are random text, which the
banner says); the Ask page shows example "ct head" after Ask, with the review form open. The
campaign is made of three outputs about the example DICOMs, one of whose reasoning contradicts its
answer, so the pre-check hint shows.
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
    make_campaign(folder / "data")
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
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.goto(url)
            page.get_by_role("tab", name="Campaigns").click()
            page.locator("#campaign-reviewer textarea, #campaign-reviewer input").first.fill("Dr Reader")
            page.locator("button#campaign-start").click()
            page.wait_for_selector("#campaign-viewer img.picture", timeout=60_000)
            page.locator("#campaign-marking").get_by_text("Mark passages of the reasoning").click()
            time.sleep(1)
            path = REPO / "docs" / "screenshots" / "campaign.png"
            page.screenshot(path=str(path), full_page=True)
            print(path.relative_to(REPO))
            page.locator("#campaign-report-box").get_by_text("Campaign report").click()
            page.locator("button#campaign-report-refresh").click()
            page.locator("#campaign-report").get_by_text("outputs complete").wait_for(timeout=60_000)
            time.sleep(2)
            path = REPO / "docs" / "screenshots" / "campaign-report.png"
            page.locator("#campaign-report-box").screenshot(path=str(path))
            print(path.relative_to(REPO))
            browser.close()
    finally:
        app.terminate()


def make_campaign(data: Path) -> None:
    """A three-output campaign about the example DICOMs, k = 2, with guidelines."""
    from medvlm.annotations import AnnotationStore, ModelOutput, Review
    from medvlm.annotations.campaigns import Campaigns
    from medvlm.images import load_image

    completions = [
        "<think>Bone is bright and air is dark, with soft-tissue contrast between: a cross-sectional X-ray "
        "reconstruction. This is an MRI.</think><answer>A</answer>",
        "<think>Signal intensities vary with tissue water; no bone artefact, fluid bright on this sequence, typical "
        "of magnetic resonance.</think><answer>B</answer>",
        "<think>It is a CT.</think><answer>A</answer>",
    ]
    outputs = []
    for index, (name, completion) in enumerate(zip(("ct_head", "mr_abdomen", "ct_chest"), completions, strict=True)):
        image = load_image(REPO / "assets" / f"{name}.dcm")
        outputs.append(
            ModelOutput(
                output_id=f"screenshot-{index}",
                image=image.image,
                image_metadata=image.metadata.to_dict(),
                question="Which imaging modality was used to acquire this image?",
                options=["CT", "MRI", "X-Ray", "Ultrasound"],
                correct_answer="B" if name.startswith("mr") else "A",
                completion=completion,
                reasoning=completion.split("<think>")[1].split("</think>")[0],
                answer_text=completion.split("<answer>")[1].split("</answer>")[0],
                letter=completion.split("<answer>")[1][0],
                format_ok=True,
                problem=None,
                stop_reason="eos",
                model={"model": "JZPeterPan/MedVLM-R1"},
                settings={},
                prompt_style="medvlm-exact",
                timing=None,
                generated_at="2026-12-01T00:00:00+00:00",
                question_type="Modality Recognition",
            )
        )
    campaigns = Campaigns(AnnotationStore(data))
    campaigns.create(
        "Modality round 1",
        outputs,
        reviews_per_output=2,
        guidelines="Flag reasoning that **contradicts** its answer or says nothing about the image. Mark the "
        "sentence at fault.",
        created_by="admin",
    )
    verdicts = {"Dr A": [("contradiction",), ("sound",), ("superficial",)], "Dr B": [("sound",), ("sound",)]}
    for reviewer, flags in verdicts.items():  # two colleagues went first: the report has something to show
        for chosen in flags:
            given = campaigns.next_output("Modality round 1", reviewer)
            campaigns.submit("Modality round 1", reviewer, given.output.output_id, Review(reviewer, chosen))


if __name__ == "__main__":
    main()
