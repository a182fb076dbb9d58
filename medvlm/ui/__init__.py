"""The clinician-facing Gradio app: ``config`` (flags and environment), ``workbench`` (what all
users share), ``session`` (one tab's state), ``layout`` (the page), one folder per tab with its
layout and handlers (``ask``, ``campaigns``, ``reviews``), and what the tabs share: ``events``
(what each event changes), ``viewer`` (the image viewer), ``render`` (the HTML and Markdown it
shows), ``cases`` and ``inputs``.

The names below load on first use (PEP 562), so ``medvlm.ui.config`` (all ``app.py --help``
needs) imports without Gradio or torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["AppConfig", "Session", "Workbench", "build_demo"]

_HOMES = {
    "AppConfig": "medvlm.ui.config",
    "Session": "medvlm.ui.session",
    "Workbench": "medvlm.ui.workbench",
    "build_demo": "medvlm.ui.layout",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
