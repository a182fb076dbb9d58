"""Loading checkpoints: the tiny one as a real one, dtype/max_pixels overrides, LoRA adapters, failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from medvlm.errors import ModelLoadError
from medvlm.model import LoadedModel, load_model
from medvlm.processor import ImageOnlyQwen2VLProcessor, load_processor, save_processor, torchvision_usable
from medvlm.streaming import prepare_inputs


def test_tiny_checkpoint_has_the_layout_of_a_published_one(tiny_model_dir: Path) -> None:
    names = {path.name for path in tiny_model_dir.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "preprocessor_config.json",
        "chat_template.json",
    } <= names
    assert (
        json.loads((tiny_model_dir / "preprocessor_config.json").read_text())["processor_class"] == "Qwen2VLProcessor"
    )
    assert json.loads((tiny_model_dir / "config.json").read_text())["model_type"] == "qwen2_vl"


def test_tiny_model_loads_through_the_ordinary_path(tiny_model: LoadedModel) -> None:
    assert type(tiny_model.model).__name__ == "Qwen2VLForConditionalGeneration"
    assert isinstance(tiny_model.processor, ImageOnlyQwen2VLProcessor)
    assert tiny_model.device.type == "cpu"
    assert tiny_model.dtype == torch.float32 == next(tiny_model.model.parameters()).dtype
    assert tiny_model.is_test_model
    assert tiny_model.max_pixels == 401408
    described = tiny_model.describe()
    assert described["random_weights"] is True and described["dtype"] == "float32"


def test_chat_template_is_qwen2_vl_with_default_system_turn(tiny_model: LoadedModel) -> None:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q?"}]}]
    text = tiny_model.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Q?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_image_backend_follows_torchvision_availability(tiny_model: LoadedModel) -> None:
    expected = "Pil" if not torchvision_usable() else ""
    assert type(tiny_model.processor.image_processor).__name__.endswith(expected)


def test_dtype_and_max_pixels_are_overridable(tiny_model_dir: Path) -> None:
    loaded = load_model(tiny_model_dir, dtype="bf16", max_pixels=64 * 28 * 28)
    assert next(loaded.model.parameters()).dtype == torch.bfloat16
    assert loaded.max_pixels == 64 * 28 * 28
    inputs = prepare_inputs(loaded, [Image.new("RGB", (1024, 1024))], ["Q?"], [["a", "b"]])
    image_tokens = int(inputs["image_grid_thw"].prod()) // 4
    assert image_tokens <= 64
    assert inputs["pixel_values"].dtype == torch.bfloat16


def test_unknown_dtype_is_a_clear_error(tiny_model_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="Unknown dtype 'int3'"):
        load_model(tiny_model_dir, dtype="int3")


def test_lora_adapter_directory_is_detected_and_merged(tiny_model_dir: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    base = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(base, config)
    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(adapter_dir)
    assert json.loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        tiny_model_dir
    )

    loaded = load_model(adapter_dir)
    plain = load_model(tiny_model_dir)
    assert loaded.base_model == str(tiny_model_dir)
    assert type(loaded.model).__name__ == "Qwen2VLForConditionalGeneration"  # merged, not a PeftModel
    name = "model.language_model.layers.0.self_attn.q_proj.weight"
    merged_weight = dict(loaded.model.named_parameters())[name]
    assert not torch.allclose(merged_weight, dict(plain.model.named_parameters())[name])
    assert loaded.is_test_model  # the base model's medvlm.json travels with it


def test_adapter_without_base_model_is_refused(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    with pytest.raises(ModelLoadError, match="which base model"):
        load_model(tmp_path)


def test_missing_directory_says_so(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="No model directory at"):
        load_model(tmp_path / "nope" / "model")


def test_directory_without_a_model_explains_the_expected_files(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="config.json is missing"):
        load_model(tmp_path)


def test_unreachable_hub_model_explains_what_to_do() -> None:
    with pytest.raises(ModelLoadError) as caught:
        load_model("medvlm-tests/no-such-model", local_files_only=True)
    message = str(caught.value)
    assert "medvlm-tests/no-such-model" in message and "medvlm-tiny-model" in message


def test_saved_processor_round_trips(tiny_model: LoadedModel, tmp_path: Path) -> None:
    save_processor(tiny_model.processor, tmp_path)
    again = load_processor(tmp_path)
    assert again.chat_template == tiny_model.processor.chat_template
    assert again.tokenizer.get_vocab() == tiny_model.processor.tokenizer.get_vocab()
    assert again.image_token_id == tiny_model.processor.image_token_id


def test_format_warm_start_makes_answers_parse(formatted_model_dir: Path) -> None:
    from medvlm.streaming import GenerationSettings, stream_completion

    loaded = load_model(formatted_model_dir)
    assert loaded.is_test_model and loaded.metadata["format_warm_start"]["steps"] > 0
    image = Image.radial_gradient("L").convert("RGB").resize((120, 90))
    # questions the warm-start never asked, with words it never saw among the options
    for question, options in [
        ("Which modality?", ["CT", "MRI", "X-Ray"]),
        ("Is the square bright or dark?", ["Bright", "Dark"]),
        (
            "Which structure is centred in this axial slice?",
            ["A vertebral body", "The liver", "The orbit", "The femoral head"],
        ),
    ]:
        final = list(stream_completion(loaded, image, question, options, GenerationSettings(max_new_tokens=40)))[-1]
        assert final.parsed.format_ok and final.parsed.letter in "ABCD"[: len(options)], (question, final.text)
        assert final.stop_reason == "eos"
