"""Gradio components whose values reach the handlers as sent, so every bad value gets the app's own message.

``gr.Number`` and ``gr.Slider`` check their range and convert the value before the handler runs;
anything they reject (0 new tokens from the browser, ``"abc"`` or ``2**70`` from an API client)
becomes Gradio's generic "Error" badge or "upstream app raised an exception". These templates
render exactly as the originals (``is_template``: the browser gets the parent's component) and
leave the checks to the handlers, which answer with a sentence that names the field.
"""

from __future__ import annotations

from typing import Any

import gradio as gr


class NumberField(gr.Number):
    """``gr.Number`` that passes its value through unchecked; the handler validates it."""

    is_template = True

    def preprocess(self, payload: Any) -> Any:
        return payload


class SliderField(gr.Slider):
    """``gr.Slider`` that passes its value through unchecked; the handler validates it."""

    is_template = True

    def preprocess(self, payload: Any) -> Any:
        return payload
