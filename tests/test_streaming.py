"""Streaming a completion: chunks, the final parsed result, timing, sampling and cancellation."""

from __future__ import annotations

import threading
import time
from itertools import pairwise

import pytest
import torch
from PIL import Image

from medvlm.errors import MedVLMError, QuestionError
from medvlm.model import LoadedModel
from medvlm.streaming import GenerationError, GenerationSettings, _TokenStreamer, stream_completion

OPTIONS = ["CT", "MRI", "X-Ray", "Ultrasound"]
IMAGE = Image.radial_gradient("L").convert("RGB").resize((112, 112))


def run(loaded: LoadedModel, settings: GenerationSettings, **kwargs):
    return list(stream_completion(loaded, IMAGE, "Which modality is this?", OPTIONS, settings, **kwargs))


def test_stream_yields_several_chunks_that_join_to_the_final_text(tiny_model: LoadedModel) -> None:
    updates = run(tiny_model, GenerationSettings(max_new_tokens=24))
    pieces = [update for update in updates if not update.done]
    assert len(pieces) > 1
    final = updates[-1]
    assert final.done and sum(not update.done for update in updates) == len(updates) - 1
    assert "".join(update.delta for update in pieces) == final.text
    assert all(later.text.startswith(earlier.text) for earlier, later in pairwise(updates))
    assert final.stop_reason == "max_new_tokens"
    assert final.timing is not None and final.timing.new_tokens == 24
    assert (
        final.timing.time_to_first_token_s is not None
        and 0 < final.timing.time_to_first_token_s < final.timing.total_s
    )
    assert final.timing.tokens_per_second and final.timing.tokens_per_second > 0
    assert final.parsed.raw == final.text


def test_every_token_reaches_the_consumer_at_once_without_broken_characters(tiny_model: LoadedModel) -> None:
    tokenizer = tiny_model.processor.tokenizer
    text = "<think> The lesión shows 🫁 edema.\nNo mass. </think>"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    streamer = _TokenStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    streamer.put(torch.tensor([[1, 2, 3]]))  # the prompt, which generate() passes first
    pieces = []
    for token in ids:
        streamer.put(torch.tensor([token]))
        pieces.append(drain(streamer))
    streamer.end()
    assert "".join(pieces) == text and streamer.new_tokens == len(ids)
    assert all("\ufffd" not in piece for piece in pieces)
    # a token that completes visible text is passed on with that token, not a word later
    split_bytes = sum(tokenizer.decode(ids[: index + 1]).endswith("\ufffd") for index in range(len(ids)))
    assert split_bytes > 0  # the emoji is split over tokens: its first bytes wait for the rest
    assert sum(bool(piece) for piece in pieces) == len(ids) - split_bytes
    assert pieces[0] == tokenizer.decode(ids[:1])


def drain(streamer: _TokenStreamer) -> str:
    pieces = []
    while not streamer.text_queue.empty():
        pieces.append(streamer.text_queue.get_nowait())
    return "".join(piece for piece in pieces if piece is not streamer.stop_signal)


def test_random_text_is_reported_as_no_answer(tiny_model: LoadedModel) -> None:
    final = run(tiny_model, GenerationSettings(max_new_tokens=16))[-1]
    assert final.parsed.letter is None and not final.parsed.format_ok
    assert final.parsed.problem


def test_greedy_is_deterministic_and_seeded_sampling_reproducible(tiny_model: LoadedModel) -> None:
    greedy = [run(tiny_model, GenerationSettings(max_new_tokens=12))[-1].text for _ in range(2)]
    assert greedy[0] == greedy[1]
    sampled = [
        run(tiny_model, GenerationSettings(max_new_tokens=12, do_sample=True, temperature=1.5, seed=7))[-1].text
        for _ in range(2)
    ]
    assert sampled[0] == sampled[1]
    other_seed = run(tiny_model, GenerationSettings(max_new_tokens=12, do_sample=True, temperature=1.5, seed=8))[
        -1
    ].text
    assert other_seed != sampled[0] or sampled[0] != greedy[0]


def test_cancel_from_another_thread_stops_generation_early(tiny_model: LoadedModel) -> None:
    cancel = threading.Event()
    settings = GenerationSettings(max_new_tokens=2000)
    updates = []
    for update in stream_completion(tiny_model, IMAGE, "Which modality?", OPTIONS, settings, cancel=cancel):
        updates.append(update)
        if len(updates) == 3:
            threading.Thread(target=cancel.set).start()
    final = updates[-1]
    assert final.done and final.stop_reason == "cancelled"
    assert final.timing.new_tokens < 100


def test_closing_the_stream_stops_the_worker(tiny_model: LoadedModel) -> None:
    stream = stream_completion(tiny_model, IMAGE, "Which modality?", OPTIONS, GenerationSettings(max_new_tokens=4000))
    next(stream)
    stream.close()
    deadline = time.monotonic() + 10
    while any(thread.name == "medvlm-generate" for thread in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(thread.name == "medvlm-generate" for thread in threading.enumerate())


def test_invalid_question_fails_before_generation(tiny_model: LoadedModel) -> None:
    with pytest.raises(QuestionError):
        run_single = stream_completion(tiny_model, IMAGE, "  ", OPTIONS)
        next(run_single)
    with pytest.raises(QuestionError):
        next(stream_completion(tiny_model, IMAGE, "Which?", ["only one"]))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (GenerationSettings(max_new_tokens=0), "Maximum new tokens"),
        (GenerationSettings(do_sample=True, temperature=0), "Temperature"),
        (GenerationSettings(top_p=0), "top-p"),
        (GenerationSettings(max_pixels=10), "max_pixels"),
    ],
)
def test_bad_settings_are_explained(tiny_model: LoadedModel, settings: GenerationSettings, message: str) -> None:
    with pytest.raises(MedVLMError, match=message):
        next(stream_completion(tiny_model, IMAGE, "Which?", OPTIONS, settings))


def test_generation_failure_surfaces_as_project_error(
    tiny_model: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(tiny_model.model, "generate", broken)
    with pytest.raises(GenerationError, match="kernel exploded"):
        run(tiny_model, GenerationSettings(max_new_tokens=4))


def test_smaller_max_pixels_means_fewer_image_tokens_and_still_streams(tiny_model: LoadedModel) -> None:
    big = Image.new("RGB", (800, 800), "gray")
    small = list(
        stream_completion(
            tiny_model, big, "Which?", OPTIONS, GenerationSettings(max_new_tokens=4, max_pixels=16 * 28 * 28)
        )
    )
    assert small[-1].done and small[-1].timing.new_tokens == 4
