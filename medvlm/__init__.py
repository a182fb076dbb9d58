"""medvlm: a workbench for reasoning medical vision-language models (MedVLM-R1 and kin)."""

from __future__ import annotations

__version__ = "0.1.0"
