"""Number fields and sliders whose values reach the handlers as sent, so every bad value gets the app's own message.

``gr.Number`` and ``gr.Slider`` check their range and convert the value before the handler runs;
anything they reject (0 new tokens typed in the browser, ``"abc"`` or ``2**70`` from an API
client) becomes Gradio's generic "Error" badge or "upstream app raised an exception". These are
the same components (``is_template``: the browser renders the parent) with that step left to the
handlers, which check each value with a sentence naming the field (``medvlm.ui.inputs.as_number``).

Gradio writes a ``components.pyi`` stub beside this file the first time the classes are created
(as for any component subclass; a read-only install only skips it); it is a build artefact,
ignored by git.
"""

from __future__ import annotations

from typing import Any

import gradio as gr


class NumberField(gr.Number):
    """``gr.Number`` whose value the handler validates (minimum and maximum still guide the browser)."""

    is_template = True

    def preprocess(self, payload: Any) -> Any:
        return payload


class SliderField(gr.Slider):
    """``gr.Slider`` whose value the handler validates."""

    is_template = True

    def preprocess(self, payload: Any) -> Any:
        return payload
