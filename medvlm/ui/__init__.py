"""The clinician-facing Gradio app: ``config`` (flags and environment), ``handlers`` (what each
button does), ``layout`` (the page), ``render`` (the HTML and Markdown it shows).

The names below load on first use (PEP 562), so ``medvlm.ui.config`` (all ``app.py --help``
needs) imports without Gradio or torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["AppConfig", "Session", "Workbench", "build_demo"]

_HOMES = {
    "AppConfig": "medvlm.ui.config",
    "Session": "medvlm.ui.handlers",
    "Workbench": "medvlm.ui.handlers",
    "build_demo": "medvlm.ui.layout",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
