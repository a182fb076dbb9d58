"""How quickly the viewer answers a window drag or a frame step: the server-side re-render, through the app.

    python -m bench.render_latency [--repeats 30]

The viewer's script sends the dragged window (or the next frame) to the ``/view`` endpoint and
shows the picture that comes back, so the latency a reader feels is that round trip. Measured on
the launched app (tiny test model) through ``gradio_client``, on the 512 x 512 CT head of
``assets/`` (window drags) and on a synthetic 512 x 512 CT of 20 frames (frame steps), against
the same client's round trip to an endpoint that does nothing (``/stop`` with nothing running),
interleaved. The handler alone (:meth:`CaseHandlers.view`, no HTTP) is timed too, and the whole
loop in headless Chromium: a drag step dispatched on the viewer until the new picture is shown
(Debian's ``chromium`` through Playwright, as in the browser tests). Target: under 150 ms at
512 x 512.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from bench._common import CT_HEAD, interleaved, median, print_report, quiet, tiny_checkpoint

TARGET_MS = 150


def multiframe_ct(path: Path, frames: int = 20, size: int = 512) -> Path:
    """A 512 x 512 CT series of ``frames`` frames in Hounsfield units (12-bit, rescaled)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.Modality = "CT"
    ramp = np.linspace(-1000, 1000, size * size).reshape(size, size)
    volume = np.stack([np.roll(ramp, 7 * index, axis=0) for index in range(frames)]) + 1024
    ds.set_pixel_data(volume.astype(np.uint16), "MONOCHROME2", 12)
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.save_as(path, enforce_file_format=True)
    return path


@contextlib.contextmanager
def browser_page(url: str):
    """The app in headless Chromium with the CT head loaded (Debian's chromium, as the browser tests use)."""
    import shutil

    from playwright.sync_api import sync_playwright

    executable = os.environ.get("MEDVLM_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(url)
        page.locator("#case-sources input[type=file]").set_input_files(str(CT_HEAD))
        page.wait_for_selector("#viewer img.picture", timeout=60_000)
        yield page
        browser.close()


BROWSER_DRAG = """
async () => {
  const box = document.querySelector('#viewer .viewer'), before = document.querySelector('#viewer img.picture').src;
  const rect = box.getBoundingClientRect(), x = rect.left + rect.width / 2, y = rect.top + rect.height / 2;
  const at = (type, dx) => box.dispatchEvent(new PointerEvent(type, {clientX: x + dx, clientY: y, button: 0,
    bubbles: true, pointerId: 1}));
  window.__dx = (window.__dx || 0) === 40 ? -40 : 40;
  const frame = () => new Promise((resolve) => requestAnimationFrame(resolve));
  const started = performance.now();
  at('pointerdown', 0); at('pointermove', window.__dx); at('pointerup', window.__dx);
  let previewed = null;
  while (true) {
    const img = document.querySelector('#viewer img.picture');
    if (previewed === null && img && img.style.filter.includes('url(')) previewed = performance.now() - started;
    if (img && img.src !== before && img.complete) return [previewed, performance.now() - started];
    await frame();
  }
}
"""
"""One drag step: the time from the pointer move to the remapped preview, and to the server's picture shown."""


def browser_drag(page, seen: list[float]) -> float:
    previewed, rendered = page.evaluate(BROWSER_DRAG)
    seen.append(previewed / 1000 if previewed is not None else float("nan"))
    return rendered / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    quiet()
    from gradio_client import Client, handle_file

    from medvlm.ui import AppConfig, Workbench, build_demo
    from medvlm.ui.ask.case_handlers import CaseHandlers
    from medvlm.ui.events import CaseShown
    from medvlm.ui.session import Session

    folder = Path(tempfile.mkdtemp(prefix="medvlm-bench-render-"))
    series = multiframe_ct(folder / "series.dcm")
    workbench = Workbench.start(AppConfig(model=str(tiny_checkpoint()), data_dir=folder / "data"))
    demo = build_demo(workbench)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True)
    try:
        viewer_at = CaseShown._fields.index("viewer")  # no layout block (which the API leaves out) before it
        windowing, stepping = Client(url, verbose=False), Client(url, verbose=False)
        idle = Client(url, verbose=False)
        head = windowing.predict(handle_file(str(CT_HEAD)), api_name="/load_file")[viewer_at]
        frames = stepping.predict(handle_file(str(series)), api_name="/load_file")[viewer_at]
        state = {"width": head["width"], "frame": frames["frame"]}

        def drag() -> float:
            state["width"] = 80 if state["width"] != 80 else 120  # another window each time
            started = time.perf_counter()
            windowing.predict({**head, "width": state["width"]}, api_name="/view")
            return time.perf_counter() - started

        def step() -> float:
            state["frame"] = state["frame"] % frames["frames"] + 1
            started = time.perf_counter()
            stepping.predict({**frames, "frame": state["frame"]}, api_name="/view")
            return time.perf_counter() - started

        def nothing() -> float:
            started = time.perf_counter()
            idle.predict(api_name="/stop")
            return time.perf_counter() - started

        session, cases = Session(), CaseHandlers(workbench)
        shown = cases.load_file(session, str(CT_HEAD)).viewer

        def handler() -> float:
            state["width"] = 80 if state["width"] != 80 else 120
            started = time.perf_counter()
            cases.view(session, {**shown, "width": state["width"]})
            return time.perf_counter() - started

        variants = {"empty round trip": nothing, "window drag": drag, "frame step": step, "handler only": handler}
        previews: list[float] = []
        with browser_page(url) as page:
            variants["window drag in Chromium: server picture shown"] = lambda: browser_drag(page, previews)
            results = interleaved(variants, args.repeats)
        results["window drag in Chromium: preview shown"] = previews
    finally:
        demo.close()
        workbench.close()
    base = median(results["empty round trip"])
    rows = [
        [
            name,
            f"{1000 * median(times):.0f}",
            f"{1000 * min(times):.0f}-{1000 * max(times):.0f}",
            f"{median(times) / base:.2f}x",
            "yes" if 1000 * median(times) < TARGET_MS else "no",
        ]
        for name, times in results.items()
    ]
    print_report(
        "Viewer re-render latency, 512 x 512 CT, through the launched app",
        rows,
        ["request", "median ms", "range ms", "vs empty round trip", f"under {TARGET_MS} ms"],
        [f"{args.repeats} interleaved repeats; gradio_client on the same machine (no network)"],
    )


if __name__ == "__main__":
    main()
