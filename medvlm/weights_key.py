"""One name for "these weights, converted this way, by this torch": what the CPU fast path's stored results are
keyed by (the fidelity guard's verdicts, GPTQ's int8 weights), so a new revision or torch never reuses them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def model_key(source: str, revision: str | None, scheme: str) -> str:
    """What a stored result is about: the weights (Hub commit, or a local folder's files), the scheme, torch."""
    import torch

    path = Path(source).expanduser()
    if path.is_dir():
        files = sorted(child for child in path.iterdir() if child.is_file())
        weights = [f"{child.name}:{child.stat().st_size}:{int(child.stat().st_mtime)}" for child in files]
        identity = [str(path.resolve()), *weights]
    else:
        identity = [source, revision or "unknown revision"]
    digest = hashlib.sha256(json.dumps([identity, scheme, torch.__version__]).encode()).hexdigest()[:16]
    return f"{path.name if path.is_dir() else source.replace('/', '--')}-{scheme}-{digest}"
