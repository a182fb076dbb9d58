"""Loading a vision-language model and its processor from the Hub, a directory, or a LoRA adapter.

One entry point, ``load_model``, serves the app, the CLI and evaluation, so a checkpoint that
works in one works in all: the published ``JZPeterPan/MedVLM-R1``, a base ``Qwen/Qwen2-VL-2B-
Instruct``, a directory written by ``train.grpo`` (full model or LoRA adapter), or the tiny
offline test checkpoint. Device and dtype follow the hardware (bf16 on CUDA, fp32 on CPU, where
bf16 decodes about half as fast) unless the caller says otherwise.

On a CPU the loader also takes the fast path of ``medvlm.fast_cpu`` (int8 language-model weights,
one thread per available core, a smaller image budget for a large vision encoder), because a
free 2-vCPU Space or a laptop is where most users meet the model; ``fast_cpu=False`` turns it off.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import constants as hub_constants
from transformers import AutoModelForImageTextToText, PreTrainedModel

from medvlm.errors import ModelLoadError
from medvlm.fast_cpu import FastCpuReport, apply_fast_cpu, calibrates, configure_threads, cpu_max_pixels
from medvlm.fast_cpu import load_dtype as fast_cpu_load_dtype
from medvlm.gptq import VERSION as GPTQ_VERSION
from medvlm.gptq import cache_file, calibration_inputs
from medvlm.hub_access import hub_source, offline_mode_note
from medvlm.metadata import read_metadata
from medvlm.processor import ImageOnlyQwen2VLProcessor, load_processor, pixel_bounds
from medvlm.prompt import PromptStyle
from medvlm.published import DEFAULT_MODEL_ID, looks_like_local_path, model_prompt_style
from medvlm.weights_key import model_key

logger = logging.getLogger(__name__)


_DTYPES = {
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "float32": torch.float32,
    "fp32": torch.float32,
}


@dataclass
class LoadedModel:
    """A model ready to generate, with what a user (and an annotation) needs to know about it."""

    model: PreTrainedModel
    processor: ImageOnlyQwen2VLProcessor
    source: str
    """The Hub id or directory it was loaded from, as given."""
    revision: str | None
    """The Hub commit it was loaded at, when known (``None`` for local directories)."""
    device: torch.device
    dtype: torch.dtype
    max_pixels: int
    base_model: str | None = None
    """For a LoRA adapter: the base model it was merged onto."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """The checkpoint's ``medvlm.json`` (training recipe and metrics, or the test-model marker)."""
    fast_cpu: FastCpuReport | None = None
    """What the CPU fast path did (``None`` when it was off: switched off, not on a CPU, or still to come)."""
    fast_path_pending: bool = False
    """The fast path's GPTQ has not run for this model yet and the load was asked not to wait for it
    (``load_model(..., calibrate_now=False)``): this is the checkpoint in its own bf16, faithful and slower."""

    @property
    def prompt_style(self) -> PromptStyle:
        """The wording to ask this model in by default (see :func:`medvlm.published.model_prompt_style`)."""
        return model_prompt_style(self.source, self.metadata)[0]

    @property
    def prompt_style_reason(self) -> str:
        return model_prompt_style(self.source, self.metadata)[1]

    @property
    def is_test_model(self) -> bool:
        """True for the tiny random checkpoint, whose output is random text."""
        return bool(self.metadata.get("random_weights"))

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary stored with annotations and evaluation reports."""
        return {
            "model": self.source,
            "revision": self.revision,
            "base_model": self.base_model,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "max_pixels": self.max_pixels,
            "random_weights": self.is_test_model,
            "attention": self.model.config._attn_implementation,
            "fast_cpu": self.fast_cpu is not None,
            "quantization": self.fast_cpu.quantization
            if self.fast_cpu
            else "none (bf16 while GPTQ prepares the int8 fast path)"
            if self.fast_path_pending
            else "none",
            "threads": torch.get_num_threads() if self.device.type == "cpu" else None,
        }


def default_device() -> torch.device:
    """CUDA when present, then Apple's MPS, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA (as the model was trained), fp32 elsewhere (bf16 is slower on CPUs)."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    if device.type in ("cuda", "mps"):
        return torch.float16
    return torch.float32


def default_attention(device: torch.device, dtype: torch.dtype) -> str:
    """Flash-attention 2 on CUDA in half precision where the ``flash_attn`` package is installed, else SDPA."""
    if (
        device.type == "cuda"
        and dtype in (torch.bfloat16, torch.float16)
        and importlib.util.find_spec("flash_attn") is not None
    ):
        return "flash_attention_2"
    return "sdpa"


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """Turn ``"bf16"``/``"float32"``/``torch.float16``/``None`` (auto) into a torch dtype."""
    if dtype is None or dtype == "auto":
        return default_dtype(device)
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype.lower()]
    except KeyError:
        raise ModelLoadError(f"Unknown dtype {dtype!r}; use one of: auto, {', '.join(sorted(_DTYPES))}.") from None


def adapter_base(directory: Path) -> str | None:
    """The base model named by a PEFT adapter directory, or ``None`` if it is not an adapter."""
    config = directory / "adapter_config.json"
    if not config.is_file():
        return None
    base = json.loads(config.read_text()).get("base_model_name_or_path")
    if not base:
        raise ModelLoadError(
            f"The adapter in {directory} does not say which base model it belongs to (adapter_config.json has no "
            "base_model_name_or_path)."
        )
    return base


def load_model(
    source: str | Path = DEFAULT_MODEL_ID,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    max_pixels: int | None = None,
    min_pixels: int | None = None,
    revision: str | None = None,
    image_backend: str | None = None,
    attn_implementation: str | None = None,
    fast_cpu: bool | None = None,
    calibrate_now: bool = True,
    **hub_kwargs: Any,
) -> LoadedModel:
    """Load a model and its processor, ready for ``medvlm.streaming.stream_completion``.

    ``source`` is a Hub id, a checkpoint directory, or a LoRA adapter directory (recognised by its
    ``adapter_config.json``; the adapter is merged into its base model, so generation runs at full
    speed). ``max_pixels`` bounds the image tokens (default: the checkpoint's own setting, which
    for MedVLM-R1 is the recipe's 401408; on the CPU fast path a large vision encoder gets 200704).
    ``attn_implementation`` defaults to flash-attention 2 on CUDA where ``flash_attn`` is installed,
    SDPA elsewhere. ``fast_cpu`` (``None``: on when the device is the CPU) applies
    ``medvlm.fast_cpu``; it has no effect on other devices, and a failing quantization backend only
    leaves the model in fp32 (``describe()`` says so). Any failure raises ``ModelLoadError`` with
    a message that says what to do. A Hub id is checked against the Hub once first
    (:func:`medvlm.hub_access.hub_source`): without network a cached copy loads at once.

    Where the fast path is ``bf16-int8``, its int8 weights are chosen by GPTQ on calibration prompts
    the first time a model revision loads (minutes on a 2B model; :mod:`medvlm.gptq`) and read from a
    cache afterwards. ``calibrate_now=False`` does not wait for that: without a cached choice the
    model comes back in its own bf16 with ``fast_path_pending`` set (the app serves it and builds the
    fast path in the background).

    Args:
        source: Hub id, checkpoint directory or LoRA adapter directory.
        device, dtype: where and in what precision (default: CUDA and bf16 where there is a GPU,
            else the CPU in fp32, with the fast path).
        max_pixels, min_pixels: image-size bounds, overriding the checkpoint's.
        revision: Hub revision (branch, tag or commit).

    Returns:
        A :class:`LoadedModel`: the model, its processor, and what it is (``describe()``).

    Example:
        >>> import tempfile
        >>> from medvlm.tiny_model import build_tiny_checkpoint
        >>> loaded = load_model(build_tiny_checkpoint(tempfile.mkdtemp()))
        >>> loaded.is_test_model, loaded.device.type, loaded.prompt_style.value
        (True, 'cpu', 'medvlm')
    """
    source_str = str(source)
    path = Path(source_str).expanduser()
    resolved_device = torch.device(device) if device is not None else default_device()
    resolved_dtype = resolve_dtype(dtype, resolved_device)
    # The CPU fast path loads the checkpoint in its own bf16 and converts layer by layer (never a full
    # fp32 copy); an explicit dtype asks for plain inference in that dtype instead.
    use_fast_cpu = resolved_device.type == "cpu" and fast_cpu is not False and dtype in (None, "auto")
    load_dtype = fast_cpu_load_dtype() if use_fast_cpu else resolved_dtype
    if revision is not None:
        hub_kwargs["revision"] = revision
    is_local = path.is_dir()
    if not is_local and looks_like_local_path(source_str):
        raise ModelLoadError(
            f"No model directory at {source_str}. Check the path, or pass a Hugging Face Hub id such as "
            f"{DEFAULT_MODEL_ID}."
        )

    base = adapter_base(path) if is_local else None
    if is_local and base is None and not (path / "config.json").is_file():
        raise ModelLoadError(
            f"The directory {source_str} holds no model: config.json is missing. A checkpoint directory holds "
            "config.json, the weights (*.safetensors) and the tokenizer and processor files; a LoRA adapter directory "
            "holds adapter_config.json."
        )
    weights_source = base if base else source_str
    if not Path(weights_source).expanduser().is_dir():  # a Hub id (the model's, or an adapter's base)
        weights_source = hub_source(weights_source, hub_kwargs.get("revision"))
    processor_source = source_str if (is_local and _has_tokenizer(path)) else weights_source
    try:
        processor = load_processor(
            processor_source,
            max_pixels=max_pixels,
            min_pixels=min_pixels,
            backend=image_backend,
            **({} if is_local else hub_kwargs),
        )
        model = AutoModelForImageTextToText.from_pretrained(
            weights_source,
            dtype=load_dtype,
            attn_implementation=attn_implementation or default_attention(resolved_device, resolved_dtype),
            **({} if base is None and is_local else hub_kwargs),
        )
        if base is not None:
            model = _merge_adapter(model, path)
    except ModelLoadError:
        raise
    except torch.OutOfMemoryError as error:
        raise ModelLoadError(
            f"Not enough memory to load {source_str} on {resolved_device}. Try a smaller dtype (--dtype bf16 on GPU), "
            "a smaller model, or a machine with more memory."
        ) from error
    except (OSError, ValueError, KeyError, ImportError, RuntimeError) as error:
        raise ModelLoadError(_explain_load_failure(source_str, is_local, error)) from error

    model.to(resolved_device)
    model.eval()
    fast_report, fast_path_pending = None, False
    if use_fast_cpu:
        if max_pixels is None:
            processor.image_processor.size = pixel_bounds(
                processor, max_pixels=cpu_max_pixels(_effective_max_pixels(processor), model)
            )
        cache = cache_file(model_key(source_str, getattr(model.config, "_commit_hash", None), GPTQ_VERSION))
        if not calibrate_now and calibrates(model) and not cache.is_file():
            configure_threads()
            fast_path_pending = True
        else:
            fast_report = apply_fast_cpu(
                model, calibration=calibration_inputs(processor, dtype=load_dtype), cache=cache
            )
        resolved_dtype = next(model.get_input_embeddings().parameters()).dtype
    metadata = read_metadata(path) if is_local else {}
    if base is not None and Path(base).is_dir():
        metadata = {**read_metadata(base), **metadata}
    return LoadedModel(
        model=model,
        processor=processor,
        source=source_str,
        revision=None if is_local else getattr(model.config, "_commit_hash", None),
        device=resolved_device,
        dtype=resolved_dtype,
        max_pixels=_effective_max_pixels(processor),
        base_model=base,
        metadata=metadata,
        fast_cpu=fast_report,
        fast_path_pending=fast_path_pending,
    )


def _merge_adapter(model: PreTrainedModel, adapter_dir: Path) -> PreTrainedModel:
    """Apply a PEFT (LoRA) adapter and fold it into the weights."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()


def _has_tokenizer(directory: Path) -> bool:
    return (directory / "tokenizer_config.json").is_file()


def _effective_max_pixels(processor: ImageOnlyQwen2VLProcessor) -> int:
    return pixel_bounds(processor)["longest_edge"]


def _explain_load_failure(source: str, is_local: bool, error: Exception) -> str:
    """A one-paragraph message for a failed load: what happened and what to try."""
    text = str(error).strip()
    detail = text.splitlines()[0].split(". ")[0].rstrip(".") if text else type(error).__name__
    if is_local:
        return (
            f"Could not load a model from the directory {source}: {detail}. It should hold config.json, the "
            "weights (*.safetensors) and the tokenizer and processor files, or be a LoRA adapter directory."
        )
    if hub_constants.HF_HUB_OFFLINE:  # only the cache was read: the id and the network are not the question
        cache = hub_constants.HF_HUB_CACHE
        return f"Could not load {source}: {detail}. " + offline_mode_note(
            source, f"so only the local cache ({cache}) was looked in, where {source} may be incomplete"
        )
    return (
        f"Could not load {source} from the Hugging Face Hub: {detail}. Check the model id and your network; "
        "without network, download it beforehand (hf download MODEL_ID) or point --model at a local directory. "
        "To try the app without any weights, build the tiny test model: "
        "medvlm-tiny-model --format-warm-start ./tiny-model"
    )
