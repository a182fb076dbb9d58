"""The README's screenshots, taken in headless Chromium: the Ask page at three screen sizes, a
review campaign, two models side by side (``--compare-model``) and a comparison campaign.

    python docs/take_screenshots.py    # docs/screenshots/ask-<width>x<height>.png, campaign.png, campaign-report.png,
                                       # compare.png, comparison-campaign.png

The app runs with the format-warm-started tiny test model (its answers are random text, which the
banner says); the Ask page shows example "ct head" after Ask, with the review form open. The
campaign is made of three outputs about the example DICOMs, one of whose reasoning contradicts its
answer, so the pre-check hint shows. The comparison campaign pairs those outputs with a second
model's answers to the same questions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZES = ((1280, 720), (1440, 900), (390, 844))


def main() -> None:
    from playwright.sync_api import sync_playwright

    from medvlm.tiny_model import build_tiny_checkpoint, warm_start_format

    folder = Path(tempfile.mkdtemp(prefix="medvlm-screenshots-"))
    warm_start_format(build_tiny_checkpoint(folder / "model"))
    warm_start_format(build_tiny_checkpoint(folder / "other-model"), seed=1)  # the second model of a comparison
    make_campaign(folder / "data")
    make_comparison_campaign(folder / "data")
    chromium = os.environ.get("MEDVLM_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        with serving(["--model", str(folder / "model"), "--data-dir", str(folder / "data")]) as url:
            ask_page(browser, url)
            campaign_pages(browser, url)
        compare = ["--model", str(folder / "model"), "--compare-model", str(folder / "other-model")]
        with serving([*compare, "--data-dir", str(folder / "compare-data")]) as url:
            compare_page(browser, url)
        browser.close()


@contextlib.contextmanager
def serving(arguments: list[str], port: int = 7871) -> Iterator[str]:
    """``python app.py ARGUMENTS`` until the block ends; its URL once it answers."""
    app = subprocess.Popen(
        [sys.executable, "app.py", *arguments, "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(480):
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        yield url
    finally:
        app.terminate()
        app.wait(timeout=30)


def save(page, name: str, **options) -> None:
    path = REPO / "docs" / "screenshots" / name
    page.screenshot(path=str(path), **options)
    print(path.relative_to(REPO))


def ask_page(browser, url: str) -> None:
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
        save(page, f"ask-{width}x{height}.png", full_page=width < 600)
        page.close()


def campaign_pages(browser, url: str) -> None:
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(url)
    page.get_by_role("tab", name="Campaigns").click()
    page.locator("#campaign-choice input").first.click()
    page.get_by_role("option", name="Modality round 1").click()
    page.locator("#campaign-reviewer textarea, #campaign-reviewer input").first.fill("Dr Reader")
    page.locator("button#campaign-start").click()
    page.wait_for_selector("#campaign-viewer img.picture", timeout=60_000)
    page.locator("#campaign-marking").get_by_text("Mark passages of the reasoning").click()
    time.sleep(1)
    page.evaluate("window.scrollTo(0, document.querySelector('#campaign-output').getBoundingClientRect().top - 100)")
    time.sleep(0.5)
    save(page, "campaign.png")  # the window as the reviewer sees it: Back / Submit & next / Skip along its bottom
    page.locator("#campaign-report-box").get_by_text("Campaign report").click()
    page.locator("button#campaign-report-refresh").click()
    page.locator("#campaign-report").get_by_text("outputs complete").wait_for(timeout=60_000)
    time.sleep(2)
    page.locator("#campaign-report-box").screenshot(path=str(REPO / "docs" / "screenshots" / "campaign-report.png"))
    print("docs/screenshots/campaign-report.png")
    page.locator("#campaign-choice input").first.click()
    page.get_by_role("option", name="Base vs GRPO").click()
    page.locator("button#campaign-start").click()
    page.locator("#campaign-case").get_by_text("Pair 1 of 3").wait_for(timeout=60_000)
    page.locator("#campaign-verdict").get_by_label("Answer 2 is better").check()
    time.sleep(1)
    save(page, "comparison-campaign.png", full_page=True)
    page.close()


def compare_page(browser, url: str) -> None:
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.goto(url)
    page.locator("button#example-0").click()
    page.wait_for_selector("#viewer img.picture", timeout=60_000)
    page.locator("button#ask").click()
    page.wait_for_selector("#second-answer .option.chosen", timeout=120_000)
    page.wait_for_selector("#verdict-panel", state="visible")
    page.locator("#verdict").get_by_label("Answer 1 is better").check()
    time.sleep(1)
    page.evaluate("window.scrollTo(0, 0)")
    save(page, "compare.png", full_page=True)
    page.close()


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

    return outputs


def make_comparison_campaign(data: Path) -> None:
    """The same three questions answered by a second model, paired with the first's: a blind comparison."""
    from medvlm.annotations import AnnotationStore
    from medvlm.annotations.campaigns import Campaigns
    from medvlm.annotations.comparison_campaigns import ComparisonCampaigns

    campaigns = Campaigns(AnnotationStore(data))
    first = [campaigns.store.output(output_id) for output_id in campaigns.output_ids("Modality round 1")]
    answers = [
        "<think>Dense bone of the skull vault, air in the sinuses, grey and white matter barely apart: the "
        "attenuation contrast of CT.</think><answer>A</answer>",
        "<think>Fat is bright, there is no bone signal and the fluid in the bowel is bright: a T2-weighted MRI."
        "</think><answer>B</answer>",
        "<think>Lungs dark, mediastinal fat grey, bone bright in a cross-section: CT of the chest.</think>"
        "<answer>A</answer>",
    ]
    pairs = [
        (
            dataclasses.replace(output, correct_answer="B" if index == 1 else "A"),
            dataclasses.replace(
                output,
                output_id=f"screenshot-grpo-{index}",
                completion=answer,
                reasoning=answer.split("<think>")[1].split("</think>")[0],
                letter=answer.split("<answer>")[1][0],
                answer_text=answer.split("<answer>")[1][0],
                model={"model": "my-grpo-run/checkpoint-500"},
                correct_answer="B" if index == 1 else "A",
            ),
        )
        for index, (output, answer) in enumerate(zip(first, answers, strict=True))
    ]
    ComparisonCampaigns(campaigns).create(
        "Base vs GRPO",
        pairs,
        verdicts_per_pair=2,
        guidelines="Which reasoning **reads the image**? Judge the reasoning, not only the letter.",
        blind=True,
        created_by="admin",
    )


if __name__ == "__main__":
    main()
