"""The clinician-facing Gradio app: ``config`` (flags and environment), ``workbench`` (what all
users share), ``session`` (one tab's state), the handlers of each tab (``case_handlers``,
``answer_handlers``, ``reviews_handlers``), ``events`` (what each event changes), ``layout``
(the page), ``viewer`` (the image viewer), ``render`` (the HTML and Markdown it shows).

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
