"""The clinician-facing Gradio app: ``config`` (flags and environment), ``handlers`` (what each
button does), ``layout`` (the page), ``render`` (the HTML and Markdown it shows)."""

from __future__ import annotations

from medvlm.ui.config import AppConfig
from medvlm.ui.handlers import Session, Workbench
from medvlm.ui.layout import build_demo

__all__ = ["AppConfig", "Session", "Workbench", "build_demo"]
