"""``medvlm.json``: what the project records about a checkpoint it wrote.

The tiny test model marks itself as random there, and training writes its recipe, base model,
data and final metrics there, so the app can tell a user what they are looking at. A checkpoint
from the Hub simply has no such file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medvlm.atomic import atomic_write_text

METADATA_FILE = "medvlm.json"


def write_metadata(directory: str | Path, metadata: dict[str, Any]) -> Path:
    """Write ``metadata`` as ``medvlm.json`` in ``directory`` (atomically: a crash leaves the old file)."""
    text = json.dumps(metadata, indent=2, sort_keys=True, default=str) + "\n"
    return atomic_write_text(Path(directory) / METADATA_FILE, text)


def read_metadata(directory: str | Path) -> dict[str, Any]:
    """The ``medvlm.json`` of a local checkpoint directory, or ``{}`` when it has none."""
    path = Path(directory) / METADATA_FILE
    if not path.is_file():
        return {}
    return json.loads(path.read_text())
