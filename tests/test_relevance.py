"""Relevance maps: the pure computation on activations with a known answer, then the model path
(the right hidden states, the right positions, raster order of the blocks) on the tiny checkpoint."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from medvlm.relevance import OVERLAY_COLOUR, OVERLAY_OPACITY, relevance_maps, sentence_relevance
from medvlm.streaming import prepare_inputs

COMPLETION = "<think>Lungs are clear. A mass sits at the right apex.</think><answer>B</answer>"
QUESTION, OPTIONS = "Is there a mass?", ["No", "Yes"]


def test_a_sentences_map_peaks_where_its_tokens_activate_and_ignores_what_every_token_shares():
    rows, cols = 2, 3
    # Tokens 0-1 are sentence one, tokens 2-4 sentence two; patch 0 is high for every token.
    activations = np.zeros((rows * cols, 5))
    activations[0, :] = 9.0
    activations[1, 0:2] = 4.0
    activations[5, 2:5] = 6.0
    spans = [(0, 3), (3, 6), (7, 10), (10, 12), (12, 15)]
    sentences = [(0, 6, "one"), (7, 15, "two"), (20, 25, "no tokens")]
    maps = sentence_relevance(activations, spans, sentences, (rows, cols))
    assert maps.shape == (3, 2, 3) and maps.min() >= 0 and maps.max() == 1
    assert np.unravel_index(maps[0].argmax(), (rows, cols)) == (0, 1)
    assert np.unravel_index(maps[1].argmax(), (rows, cols)) == (1, 2)
    assert maps[0][0, 0] < 0.1 and maps[1][0, 0] == 0  # high for every token: not "where"
    assert not maps[2].any()


def test_the_overlay_washes_the_relevant_blocks_and_leaves_the_rest_clear():
    """The viewer's layer: one pixel per 28-pixel block, in the overlay's hue, as opaque as the block is relevant."""
    import base64
    import io

    from medvlm.ui.viewer import overlay_url

    url = overlay_url(np.array([[1.0, 0.0], [0.5, 2.0]]))
    layer = Image.open(io.BytesIO(base64.b64decode(url.removeprefix("data:image/png;base64,"))))
    assert layer.mode == "RGBA" and layer.size == (2, 2)
    assert layer.getpixel((0, 0)) == (*OVERLAY_COLOUR, int(255 * OVERLAY_OPACITY))
    assert layer.getpixel((1, 0))[3] == 0 and layer.getpixel((0, 1))[3] == int(255 * 0.5 * OVERLAY_OPACITY)
    assert layer.getpixel((1, 1))[3] == int(255 * OVERLAY_OPACITY)  # clipped to 1


def test_the_model_path_reads_the_image_tokens_final_states_through_the_output_layer(tiny_model):
    image = Image.radial_gradient("L").resize((112, 84)).convert("RGB")
    result = relevance_maps(tiny_model, image, QUESTION, OPTIONS, COMPLETION)
    assert [text for _, _, text in result.sentences] == ["Lungs are clear.", "A mass sits at the right apex."]
    assert result.grid == (3, 4) and result.maps.shape == (2, 3, 4)
    # The same maps from the full model's logits at the image positions: the right states and positions.
    inputs = prepare_inputs(tiny_model, [image], [QUESTION], [OPTIONS])
    tokenizer = tiny_model.processor.tokenizer
    encoded = tokenizer(COMPLETION, add_special_tokens=False, return_offsets_mapping=True)
    with torch.inference_mode():
        logits = tiny_model.model(**inputs).logits[0]
    image_rows = logits[inputs["input_ids"][0] == tiny_model.model.config.image_token_id]
    expected = sentence_relevance(
        image_rows[:, encoded["input_ids"]].float().numpy(), encoded["offset_mapping"], result.sentences, (3, 4)
    )
    np.testing.assert_allclose(result.maps, expected, atol=1e-4)


def test_image_tokens_are_in_raster_order_of_the_28_pixel_blocks(tiny_model):
    """Change one block of the image: the image token whose state changes most is that block's."""
    base = Image.new("RGB", (112, 84), (90, 90, 90))
    inputs = prepare_inputs(tiny_model, [base], [QUESTION], [OPTIONS])
    image_positions = inputs["input_ids"][0] == tiny_model.model.config.image_token_id
    with torch.inference_mode():
        before = tiny_model.model.model(**inputs).last_hidden_state[0][image_positions]
    for row, col in [(0, 3), (2, 1)]:
        changed = base.copy()
        changed.paste((255, 255, 255), (col * 28, row * 28, col * 28 + 28, row * 28 + 28))
        changed_inputs = prepare_inputs(tiny_model, [changed], [QUESTION], [OPTIONS])
        with torch.inference_mode():
            after = tiny_model.model.model(**changed_inputs).last_hidden_state[0][image_positions]
        assert int((after - before).norm(dim=1).argmax()) == row * 4 + col
