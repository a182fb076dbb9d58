"""The pipeline with the real Qwen2 vocabulary (151,936 ids): prompt lengths, image tokens, multi-byte streaming."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from medvlm.model import load_model
from medvlm.prompt import PromptStyle, build_prompt_text
from medvlm.streaming import GenerationSettings, _TokenStreamer, prepare_inputs, stream_completion

pytestmark = pytest.mark.slow  # the vocabulary takes seconds to load

QUESTION, OPTIONS = "Which imaging modality was used to acquire this image?", ["CT", "MRI", "X-Ray", "Ultrasound"]


def test_qwen2_vl_special_tokens_have_their_released_ids(qwen2_tokenizer) -> None:
    ids = qwen2_tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|image_pad|>"])
    assert ids == [151644, 151645, 151652, 151655] and len(qwen2_tokenizer) == 151936
    assert qwen2_tokenizer.encode("<|image_pad|>") == [151655]  # one special token, never split


def test_the_prompt_has_the_real_length_and_one_image_pad_per_image_token(qwen2_vocab_model_dir: Path) -> None:
    loaded = load_model(qwen2_vocab_model_dir, max_pixels=256 * 28 * 28)
    inputs = prepare_inputs(
        loaded, [Image.new("RGB", (448, 448))], [QUESTION], [OPTIONS], style=PromptStyle.MEDVLM_EXACT
    )
    ids = inputs["input_ids"][0].tolist()
    assert ids.count(151655) == 256 == int(inputs["image_grid_thw"].prod()) // 4
    text_tokens = len(
        loaded.processor.tokenizer.encode(build_prompt_text(QUESTION, OPTIONS, style=PromptStyle.MEDVLM_EXACT))
    )
    assert 60 <= text_tokens <= 120  # the instructions and four options, in real Qwen2 tokens
    assert 15 <= len(ids) - 256 - text_tokens <= 30  # the chat template's system turn, roles and vision markers


def test_multi_byte_text_streams_whole_characters_with_the_real_vocabulary(qwen2_tokenizer) -> None:
    text = "Pulmonary nodule (肺结节) in the left lung, 12 mm ± 2 — ça va 🫁."
    ids = qwen2_tokenizer.encode(text)
    assert any("\ufffd" in qwen2_tokenizer.decode([token]) for token in ids)  # some characters span several tokens
    streamer = _TokenStreamer(qwen2_tokenizer, skip_prompt=True)
    streamer.put(_tensor([151644]))  # generate() passes the prompt first
    for token in ids:
        streamer.put(_tensor([token]))
    streamer.end()
    deltas = list(streamer.text_queue.queue)[:-1]  # the last item is the end marker
    assert "".join(deltas) == text and not any("\ufffd" in delta for delta in deltas)


def test_a_random_model_with_the_real_vocabulary_streams_valid_text(qwen2_vocab_model_dir: Path) -> None:
    loaded = load_model(qwen2_vocab_model_dir)
    updates = list(
        stream_completion(loaded, Image.new("RGB", (56, 56)), QUESTION, OPTIONS, GenerationSettings(max_new_tokens=48))
    )
    final = updates[-1]
    assert final.timing.new_tokens == 48 and "".join(update.delta for update in updates) == final.text
    # Random weights emit byte tokens in any order, so invalid UTF-8 (U+FFFD) is real output here; what
    # matters is that streaming loses and garbles nothing: the pieces are exactly the final text.


def _tensor(ids: list[int]):
    import torch

    return torch.tensor([ids])
