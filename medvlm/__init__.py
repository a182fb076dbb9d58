"""medvlm: a workbench for reasoning medical vision-language models (MedVLM-R1 and kin)."""

__version__ = "0.1.0"
