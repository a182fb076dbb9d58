"""The image viewer: the case as the model sees it, with what a reader expects of a viewer.

A ``gr.HTML`` component with its own template, CSS and script (Gradio's custom HTML components):

* the image fills its panel (a 224-pixel image is scaled up, never shown at stamp size), wheel or
  the +/- buttons zoom about the cursor, dragging pans, double-click fits again;
* on a greyscale DICOM, dragging changes the window as in OHIF (left/right: width, up/down:
  centre); shift-drag pans;
* on a multi-frame file, the wheel and the arrow keys step through frames (ctrl-wheel zooms);
* on a stored CT (a campaign's output: only its rendering is kept, never the file), dragging
  changes the display window in the browser over the stored grey levels (:func:`stored_value`).

Window and frame changes are rendered on the server from the original pixel values (an 8-bit
picture cannot be re-windowed): the script puts the requested centre, width or frame into the
component's value and fires its ``input`` event, which the layout sends to
:meth:`~medvlm.ui.ask.case_handlers.CaseHandlers.view`, at most one request in flight
(``trigger_mode="always_last"``). ``bench/render_latency.py`` measures that round trip.

The value is a plain dict (:func:`viewer_value`); the picture travels inside it as a PNG data URL,
rebuilt from pixels (no file name, no metadata), so no copy of it is left in a cache folder.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from medvlm.annotations import ModelOutput
from medvlm.images import LoadedImage, SafeMetadata
from medvlm.relevance import OVERLAY_COLOUR, OVERLAY_OPACITY

DISPLAY_MAX_SIDE = 2048
"""Longest side of the picture sent to the browser (the model's own input is never reduced for display)."""

TEMPLATE = """
<div class="viewer" tabindex="0" role="img" aria-label="${value && value.src ? value.alt : 'No image yet'}"
     data-windowable="${value && value.windowable ? 'true' : 'false'}"
     data-frames="${value && value.frames ? value.frames : 1}" data-case="${value ? value.case : ''}">
  ${value && value.src
    ? `<img class="picture" src="${value.src}" alt="${value.alt}" draggable="false">`
    : `<div class="placeholder">{placeholder}</div>`}
  ${value && value.src && value.overlay
    ? `<img class="overlay" src="${value.overlay}" alt="Relevance map over the image" draggable="false">` : ''}
  ${value && value.src ? `<div class="readout">${value.readout}</div>` : ''}
  ${value && value.src ? `<div class="tools">
      <button type="button" class="zoom-in" title="Zoom in (wheel up)">+</button>
      <button type="button" class="zoom-out" title="Zoom out (wheel down)">&minus;</button>
      <button type="button" class="fit" title="Fit to the panel (double-click)">Fit</button>
      <button type="button" class="actual" title="One image pixel per screen pixel">1:1</button>
    </div>` : ''}
  ${value && value.src ? `<div class="hint">${value.hint}</div>` : ''}
</div>
"""

CSS = """
.viewer { position: relative; height: var(--viewer-height, 380px); overflow: hidden; background: #000;
          border-radius: var(--radius-lg); outline: none; touch-action: none; user-select: none; }
@media (max-width: 640px) { .viewer { height: 300px; } }
.viewer:focus-visible { box-shadow: 0 0 0 3px var(--color-accent); }
.viewer .picture { position: absolute; left: 0; top: 0; transform-origin: 0 0; image-rendering: auto;
                   max-width: none; max-height: none; cursor: grab; }
.viewer[data-windowable="true"] .picture { cursor: crosshair; }
.viewer .overlay { position: absolute; left: 0; top: 0; transform-origin: 0 0; max-width: none; max-height: none;
                   pointer-events: none; image-rendering: pixelated; }
.viewer .placeholder { color: #bbb; display: flex; align-items: center; justify-content: center; height: 100%;
                       padding: 1em; text-align: center; }
.viewer .readout { position: absolute; left: 8px; bottom: 6px; color: #fff; font: 12px/1.4 monospace;
                   text-shadow: 0 0 3px #000; pointer-events: none; }
.viewer .hint { position: absolute; left: 8px; top: 6px; color: #ddd; font-size: 11px;
                text-shadow: 0 0 3px #000; pointer-events: none; max-width: calc(100% - 160px); }
.viewer .tools { position: absolute; right: 6px; top: 6px; display: flex; gap: 4px; }
.viewer .tools button { background: rgba(0,0,0,0.6); color: #fff; border: 1px solid #666; border-radius: 4px;
                        min-width: 28px; padding: 1px 6px; font-size: 13px; cursor: pointer; }
"""

SCRIPT = """
const view = {scale: 1, x: 0, y: 0, fitted: true, case: null};
let drag = null, sent = 0, timer = null;
// While a window drag waits for the server, the picture is remapped in the browser: a linear SVG
// filter turns the grey of the window shown into the grey of the window asked for (exact inside the
// old window; what it had clipped stays clipped until the server's rendering arrives).
const filterId = 'medvlm-window-' + Math.random().toString(36).slice(2);
const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
svg.setAttribute('width', '0'); svg.setAttribute('height', '0'); svg.style.position = 'absolute';
svg.innerHTML = `<filter id="${filterId}" color-interpolation-filters="sRGB"><feComponentTransfer>` +
  ['R', 'G', 'B'].map((c) => `<feFunc${c} type="linear" slope="1" intercept="0"/>`).join('') +
  '</feComponentTransfer></filter>';
document.body.appendChild(svg);
const shown = {src: null, center: null, width: null};  // what the picture on screen was rendered with
let asked = null;  // the window dragged to, while its rendering is awaited
function preview() {
  const img = picture(), readout = element.querySelector('.readout');
  if (!img || !asked || !shown.width) return;
  const slope = shown.width / asked.width;
  const intercept = (shown.center - asked.center) / asked.width + (asked.width - shown.width) / (2 * asked.width);
  svg.querySelectorAll('feFuncR, feFuncG, feFuncB').forEach((f) => {
    f.setAttribute('slope', slope); f.setAttribute('intercept', intercept);
  });
  img.style.filter = `url(#${filterId})`;
  const value = current(), unit = value.unit || '';
  const stored = `of the stored picture, rendered at W ${shown.width} / C ${shown.center}`;
  const what = value.local ? stored : 'rendering...';
  if (readout) readout.textContent = `W ${asked.width} / C ${asked.center}${unit} (${what})`;
}
const box = () => element.querySelector('.viewer');
const picture = () => element.querySelector('.picture');
const current = () => props.value || {};

function place() {
  const img = picture(), layer = element.querySelector('.overlay');
  if (img) img.style.transform = `translate(${view.x}px, ${view.y}px) scale(${view.scale})`;
  if (img && layer) {  // a relevance map: one pixel per block, stretched over the picture, moved with it
    layer.style.width = `${img.naturalWidth}px`; layer.style.height = `${img.naturalHeight}px`;
    layer.style.transform = img.style.transform;
  }
}
function fit() {
  const img = picture(), panel = box();
  if (!img || !panel || !img.naturalWidth) return;
  const scale = Math.min(panel.clientWidth / img.naturalWidth, panel.clientHeight / img.naturalHeight);
  Object.assign(view, {scale, fitted: true,
    x: (panel.clientWidth - img.naturalWidth * scale) / 2, y: (panel.clientHeight - img.naturalHeight * scale) / 2});
  place();
}
function zoom(factor, cx, cy) {
  const panel = box();
  if (!picture() || !panel) return;
  if (cx === undefined) { cx = panel.clientWidth / 2; cy = panel.clientHeight / 2; }
  const scale = Math.min(Math.max(view.scale * factor, 0.05), 40);
  view.x = cx - (cx - view.x) * scale / view.scale;
  view.y = cy - (cy - view.y) * scale / view.scale;
  view.scale = scale; view.fitted = false;
  place();
}
function request(changes) {
  // One request in flight at a time (the listener is always_last); a drag sends every ~80 ms.
  props.value = Object.assign({}, current(), changes, {request: (current().request || 0) + 1});
  trigger('input');
}
function throttled(changes) {
  const now = performance.now();
  clearTimeout(timer);
  if (now - sent > 80) { sent = now; request(changes); }
  else timer = setTimeout(() => { sent = performance.now(); request(changes); }, 80);
}
function stepFrame(delta) {
  const value = current(), frames = value.frames || 1;
  if (frames < 2) return false;
  const frame = Math.min(Math.max((value.frame || 1) + delta, 1), frames);
  if (frame !== value.frame) request({frame});
  return true;
}
function arrived() {
  const img = picture(), value = current();
  if (!img) { view.case = null; return; }
  if (value.src !== shown.src) {  // a new rendering (not our own request re-drawing the old one)
    Object.assign(shown, {src: value.src, center: value.center, width: value.width});
    asked = null;
  }
  preview();
  const again = () => {
    if (view.case !== current().case || view.fitted) { view.case = current().case; fit(); } else place();
  };
  if (img.complete && img.naturalWidth) again(); else img.addEventListener('load', again, {once: true});
}

element.addEventListener('wheel', (event) => {
  if (!picture()) return;
  event.preventDefault();
  if (!event.ctrlKey && stepFrame(event.deltaY > 0 ? 1 : -1)) return;
  const rect = box().getBoundingClientRect();
  zoom(Math.exp(-event.deltaY * 0.0015), event.clientX - rect.left, event.clientY - rect.top);
}, {passive: false});
element.addEventListener('pointerdown', (event) => {
  if (!picture() || event.target.closest('.tools')) return;
  const value = current();
  const windowing = value.windowable && event.button === 0 && !event.shiftKey;
  drag = {windowing, x: event.clientX, y: event.clientY, vx: view.x, vy: view.y,
          center: value.center, width: value.width, step: Math.max(value.width || 1, 1) / 256};
  box().setPointerCapture(event.pointerId);
});
element.addEventListener('pointermove', (event) => {
  if (!drag) return;
  const dx = event.clientX - drag.x, dy = event.clientY - drag.y;
  if (drag.windowing) {
    const width = Math.max(1, Math.round(drag.width + dx * drag.step));
    const center = Math.round(drag.center - dy * drag.step);
    asked = {center, width};
    preview();
    if (!current().local) throttled({center, width});  // a stored picture has no file to render again
  } else {
    view.x = drag.vx + dx; view.y = drag.vy + dy; view.fitted = false; place();
  }
});
const release = () => { drag = null; };
element.addEventListener('pointerup', release);
element.addEventListener('pointercancel', release);
element.addEventListener('dblclick', () => {
  fit();
  if (current().local && asked) {  // back to the window the picture was stored with
    asked = null;
    const img = picture(), readout = element.querySelector('.readout');
    if (img) img.style.filter = '';
    if (readout) readout.textContent = current().readout;
  }
});
element.addEventListener('keydown', (event) => {
  const steps = {ArrowUp: -1, ArrowLeft: -1, ArrowDown: 1, ArrowRight: 1, PageUp: -1, PageDown: 1};
  if (event.key in steps && stepFrame(steps[event.key])) event.preventDefault();
  else if (event.key === '+' || event.key === '=') zoom(1.25);
  else if (event.key === '-') zoom(0.8);
  else if (event.key === '0') fit();
});
element.addEventListener('click', (event) => {
  if (event.target.closest('.zoom-in')) zoom(1.25);
  else if (event.target.closest('.zoom-out')) zoom(0.8);
  else if (event.target.closest('.fit')) fit();
  else if (event.target.closest('.actual')) zoom(1 / view.scale);
});
new ResizeObserver(() => { if (view.fitted) fit(); }).observe(element);
watch('value', arrived);
arrived();
"""


ASK_PLACEHOLDER = "Upload an image or a DICOM, or choose an example."


def viewer(*, placeholder: str = ASK_PLACEHOLDER, **kwargs: Any) -> gr.HTML:
    """The viewer component (its value: :func:`viewer_value`, or None before any image); ``placeholder`` is what
    it says while empty (what to do to fill it, which differs per tab)."""
    return gr.HTML(
        None,
        html_template=TEMPLATE.replace("{placeholder}", html.escape(placeholder)),
        css_template=CSS,
        js_on_load=SCRIPT,
        apply_default_css=False,
        **kwargs,
    )


def viewer_value(image: LoadedImage | None, *, case: int, note: str = "") -> dict[str, Any] | None:
    """What the viewer shows: the picture, what can be done with it, and a one-line readout.

    ``case`` changes when another case is shown (the viewer then fits the new picture; a new
    window or frame of the same case keeps the zoom). ``note`` is appended to the readout (for
    instance the window the model's answer was given with, when another one is on screen).
    """
    if image is None:
        return None
    metadata = image.metadata
    windowable = metadata.window_name is not None
    frames = metadata.frame_count
    readout = [f"{metadata.width}\u00d7{metadata.height}"]
    if windowable and metadata.window_center is not None and metadata.window_width is not None:
        unit = " HU" if metadata.hounsfield else ""
        readout.append(f"W {metadata.window_width:g} / C {metadata.window_center:g}{unit}")
    if frames > 1:
        readout.append(f"frame {metadata.frame_index + 1} of {frames}")
    if note:
        readout.append(note)
    hints = ["wheel: zoom" if frames < 2 else "wheel or arrow keys: frames, ctrl-wheel: zoom"]
    hints.append("drag: window, shift-drag: pan" if windowable else "drag: pan")
    return {
        "src": _data_url(image.image, grey=windowable),
        "alt": f"The image as the model sees it ({metadata.width} by {metadata.height} pixels)",
        "readout": " \u00b7 ".join(readout),
        "hint": ", ".join(hints),
        "windowable": windowable,
        "center": metadata.window_center,
        "width": metadata.window_width,
        "frame": metadata.frame_index + 1,
        "frames": frames,
        "case": case,
        "unit": " HU" if metadata.hounsfield else "",
    }


def _data_url(image: Image.Image, *, grey: bool) -> str:
    """The picture as a PNG data URL: greyscale as one channel (a third of the bytes), large ones reduced."""
    shown = image.convert("L") if grey else image
    if max(shown.size) > DISPLAY_MAX_SIDE:
        shown = shown.copy()
        shown.thumbnail((DISPLAY_MAX_SIDE, DISPLAY_MAX_SIDE), Image.Resampling.BOX)
    buffer = io.BytesIO()
    shown.save(buffer, format="PNG", compress_level=1)  # speed over size: this is re-sent on every window drag
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def stored_value(output: ModelOutput, *, case: int) -> dict[str, Any] | None:
    """What the viewer shows of a stored output (a campaign's): its picture, and on a CT a window to drag.

    Only the rendering is stored (never the file), so another window cannot be rendered from the
    original values; but a CT's rendering records its window in Hounsfield units, so each grey level
    maps back to HU, and dragging remaps them in the browser (``local``): exact inside the stored
    window, with what it clipped staying clipped. Double-click goes back to the stored window.
    """
    image = stored_picture(output)
    metadata = image.metadata
    windowable = metadata.hounsfield and metadata.window_center is not None and metadata.window_width is not None
    if not windowable:
        return viewer_value(image, case=case)
    stored = LoadedImage(image.image, dataclasses.replace(metadata, window_name="stored"))  # one grey encoding
    value = viewer_value(stored, case=case)
    value["local"] = True
    value["hint"] = "wheel: zoom, drag: window (of the stored picture), shift-drag: pan, double-click: reset"
    return value


def with_overlay(value: dict[str, Any], relevance: np.ndarray, index: int) -> dict[str, Any]:
    """``value`` with reasoning sentence ``index``'s relevance map drawn over the picture (and said in the readout)."""
    return {
        **value,
        "overlay": overlay_url(relevance),
        "readout": f"{value['readout']} \u00b7 map: sentence {index + 1}",
    }


def overlay_url(relevance: np.ndarray) -> str:
    """A relevance map as a transparent PNG, one pixel per 28-pixel block (the viewer stretches it over the image)."""
    rows, cols = relevance.shape
    alpha = np.uint8(np.clip(relevance, 0, 1) * 255 * OVERLAY_OPACITY)
    rgba = np.zeros((rows, cols, 4), dtype=np.uint8)
    rgba[..., :3] = OVERLAY_COLOUR
    rgba[..., 3] = alpha
    buffer = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def picture(value: dict[str, Any] | None) -> Image.Image | None:
    """The picture inside a viewer value, decoded (what a test or an API client checks)."""
    if not value or not value.get("src"):
        return None
    encoded = value["src"].split(",", 1)[1]
    with Image.open(io.BytesIO(base64.b64decode(encoded))) as image:
        return image.convert("RGB")


def stored_picture(output: ModelOutput) -> LoadedImage:
    """A stored output's picture and its safe metadata, as the viewer takes them (a campaign's outputs)."""
    known = SafeMetadata.__dataclass_fields__
    fields = {key: value for key, value in (output.image_metadata or {}).items() if key in known}
    fields.update(
        source_format=fields.get("source_format") or "PNG",
        width=output.image.width,
        height=output.image.height,
        window_name=None,  # the stored picture is all there is: no file to render another window from
        frame_count=1,
        frame_index=0,
    )
    return LoadedImage(output.image, SafeMetadata(**fields))
