"""Build a tiny, randomly initialised Qwen2-VL checkpoint entirely offline.

Tests, CI and anyone without the 4.4 GB MedVLM-R1 weights (or without network) need a model that
goes through exactly the same code as the real one: ``from_pretrained`` on a directory holding
``config.json``, safetensors weights, a byte-level BPE tokenizer with Qwen2-VL's special tokens
and chat template, and a Qwen2-VL image processor. This module writes such a directory in a
couple of seconds. Its weights are random, so its answers are random words: everything that
shows its output must say so (``LoadedModel.is_test_model`` tells).

Two details make the random text readable instead of raw bytes: the tokenizer's merges are
learnt from a small radiology vocabulary, and the output-embedding rows of single-byte and
special tokens are zeroed, so greedy decoding picks whole words. The end-of-turn token is among
those rows, so the model practically never stops by itself and always runs to ``max_new_tokens``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import AutoModelForImageTextToText, Qwen2Tokenizer, Qwen2VLConfig, Qwen2VLForConditionalGeneration
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from medvlm.metadata import read_metadata, write_metadata
from medvlm.processor import RECIPE_MAX_PIXELS, RECIPE_MIN_PIXELS, ImageOnlyQwen2VLProcessor, save_processor

#: Qwen2-VL's special tokens, in the order of its released tokenizer.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

#: Qwen2's pre-tokenisation pattern (from its released tokenizer.json).
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

#: Qwen2-VL's chat template (identical to the one shipped with Qwen2-VL-2B-Instruct and MedVLM-R1).
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

#: Words the tokenizer learns merges from, so that random output reads as words.
_VOCABULARY_TEXT = """
<think> </think> <answer> </answer> A B C D E F G H I J A) B) C) D)
Your task: Think through the question step by step, enclose your reasoning process in tags.
Then provide the correct single-letter choice inside tags. No extra information or text outside of these tags.
What is the most likely diagnosis? Which imaging modality was used? Which organ is shown in this image?
image shows scan the a an of in on with without and or is are was no there this that likely most
MRI CT X-Ray ultrasound radiograph axial sagittal coronal plane slice contrast enhanced T1 T2 FLAIR
weighted sequence signal intensity density hyperintense hypointense hyperdense hypodense lesion mass
nodule cyst tumor tumour edema oedema hemorrhage haemorrhage infarct ischemia abscess calcification
fracture effusion pneumothorax consolidation opacity atelectasis cardiomegaly pleural pulmonary
brain skull ventricle cortex white matter grey gray cerebellum spine vertebra disc cord knee
meniscus ligament cartilage joint bone marrow shoulder hip pelvis abdomen liver kidney spleen
pancreas gallbladder bowel colon stomach bladder prostate uterus ovary breast heart aorta lung
chest thorax neck thyroid sinus orbit normal abnormal acute chronic benign malignant left right
bilateral focal diffuse small large well defined irregular margin enhancement finding findings
consistent suggests suggest appears seen visible shows showing indicates therefore answer option
"""


def _train_tokenizer(vocab_size: int) -> Qwen2Tokenizer:
    """A byte-level BPE tokenizer with Qwen2's pre-tokeniser, decoder and special tokens."""
    backend = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator([_VOCABULARY_TEXT] * 4, trainer)
    backend.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in SPECIAL_TOKENS])
    return Qwen2Tokenizer(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
        errors="replace",
    )


QWEN2_VL_TOKENS_FROM = 151646
"""Qwen2-VL's own special tokens (``<|object_ref_start|>`` ... ``<|video_pad|>``) take the ids from here."""


def qwen2_tokenizer(gguf_file: str | Path) -> Qwen2Tokenizer:
    """The real Qwen2 tokenizer (151,936 ids) from a vocab-only GGUF file, with Qwen2-VL's special tokens.

    llama.cpp's ``ggml-vocab-qwen2.gguf`` holds Qwen2's vocabulary and merges but only placeholders
    ("[PAD151655]") at Qwen2-VL's ids 151646-151656; they get their names here, so ``<|image_pad|>``
    is id 151655 as in the released Qwen2-VL. Reading the GGUF takes about 20 s: save the result
    (``save_pretrained``, or a checkpoint built with it) and load that instead.
    """
    from transformers import AutoTokenizer

    gguf_file = Path(gguf_file)
    converted = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    spec = json.loads(converted.backend_tokenizer.to_str())
    names = dict(zip(range(QWEN2_VL_TOKENS_FROM, QWEN2_VL_TOKENS_FROM + 11), SPECIAL_TOKENS[3:], strict=True))
    for added in spec["added_tokens"]:
        if added["id"] in names:
            spec["model"]["vocab"].pop(added["content"], None)
            added.update(content=names[added["id"]], special=True)
            spec["model"]["vocab"][added["content"]] = added["id"]
    return Qwen2Tokenizer(
        tokenizer_object=Tokenizer.from_str(json.dumps(spec)),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
        errors="replace",
    )


def _tiny_config(tokenizer: Qwen2Tokenizer, hidden_size: int, layers: int) -> Qwen2VLConfig:
    """A Qwen2-VL config of the real architecture's shape, shrunk (4 heads of ``hidden_size // 4``)."""
    half_head = hidden_size // 4 // 2
    mrope_section = [half_head * 2 // 8, half_head * 3 // 8, half_head * 3 // 8]  # real: [16, 24, 24] of 64
    return _qwen2_vl_config(
        tokenizer,
        text={
            "vocab_size": len(tokenizer),
            "hidden_size": hidden_size,
            "intermediate_size": hidden_size * 2,
            "num_hidden_layers": layers,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": mrope_section},
            "tie_word_embeddings": False,
        },
        vision={"depth": layers, "embed_dim": 32, "num_heads": 2, "mlp_ratio": 2, "hidden_size": hidden_size},
    )


#: Qwen2-VL-2B's architecture (``/work/shared/reference/recipe.md``; about 2.21 B parameters).
QWEN2_VL_2B_TEXT = {
    "vocab_size": 151936,
    "hidden_size": 1536,
    "intermediate_size": 8960,
    "num_hidden_layers": 28,
    "num_attention_heads": 12,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [16, 24, 24]},
    "tie_word_embeddings": True,
}
QWEN2_VL_2B_VISION = {"depth": 32, "embed_dim": 1280, "num_heads": 16, "mlp_ratio": 4, "hidden_size": 1536}


def _qwen2_vl_config(tokenizer: Qwen2Tokenizer, *, text: dict, vision: dict) -> Qwen2VLConfig:
    """A Qwen2-VL config with the given text and vision sizes and ``tokenizer``'s special-token ids."""
    token_id = tokenizer.convert_tokens_to_ids
    special_ids = {
        "bos_token_id": token_id("<|endoftext|>"),
        "eos_token_id": token_id("<|im_end|>"),
        "pad_token_id": token_id("<|endoftext|>"),
    }
    return Qwen2VLConfig(
        text_config={**text, **special_ids},
        vision_config={
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "in_channels": 3,
            **vision,
        },
        image_token_id=token_id("<|image_pad|>"),
        video_token_id=token_id("<|video_pad|>"),
        vision_start_token_id=token_id("<|vision_start|>"),
        vision_end_token_id=token_id("<|vision_end|>"),
        tie_word_embeddings=text["tie_word_embeddings"],
    )


def build_tiny_checkpoint(
    directory: str | Path,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    layers: int = 2,
    vocab_size: int = 1000,
    init_std: float = 0.3,
    tokenizer: Qwen2Tokenizer | None = None,
) -> Path:
    """Write a tiny random Qwen2-VL checkpoint to ``directory`` and return its path.

    The result loads with ``medvlm.model.load_model(directory)`` exactly like a Hub checkpoint.
    ``hidden_size`` must be a multiple of 64 (four attention heads whose rotary half splits into
    the three multimodal rotary sections in the real model's 2:3:3 ratio). ``tokenizer`` replaces
    the small trained one, e.g. the real Qwen2 vocabulary (:func:`qwen2_tokenizer`).
    """
    if hidden_size % 64:
        raise ValueError("hidden_size must be a multiple of 64")
    torch.manual_seed(seed)

    tokenizer = tokenizer or _train_tokenizer(vocab_size)
    config = _tiny_config(tokenizer, hidden_size, layers)
    config.text_config.initializer_range = init_std
    config.vision_config.initializer_range = init_std
    model = Qwen2VLForConditionalGeneration(config)
    _mute_unreadable_tokens(model, tokenizer)
    note = (
        "Tiny randomly initialised Qwen2-VL built offline by medvlm for tests and demos. Its output is random "
        "text, not medical reasoning."
    )
    return _save_checkpoint(
        model, tokenizer, directory, {"kind": "random-test-model", "random_weights": True, "note": note, "seed": seed}
    )


def build_random_checkpoint(
    directory: str | Path, *, size: str = "2b", seed: int = 0, tokenizer: Qwen2Tokenizer | None = None
) -> Path:
    """Write a randomly initialised Qwen2-VL of a real model's sizes (bf16, like the release).

    Speed and memory depend on the architecture, not on the weights' values, so benchmarks can
    measure the real Qwen2-VL-2B shape without downloading 4.4 GB. Only ``size="2b"`` exists.
    With the default tokenizer (the tiny one, a thousand tokens) the output layer keeps the real
    151936 rows, so most generated ids decode to nothing: time ``model.generate``, not text; pass
    the real one (:func:`qwen2_tokenizer`) for real prompt lengths and decoded text.
    """
    if size != "2b":
        raise ValueError(f"unknown size {size!r}; only '2b' (Qwen2-VL-2B) is known")
    torch.manual_seed(seed)
    tokenizer = tokenizer or _train_tokenizer(1000)
    config = _qwen2_vl_config(tokenizer, text=QWEN2_VL_2B_TEXT, vision=QWEN2_VL_2B_VISION)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16)
    note = (
        "Randomly initialised Qwen2-VL-2B (real sizes) built offline by medvlm for benchmarks. Its output is random."
    )
    return _save_checkpoint(
        model,
        tokenizer,
        directory,
        {"kind": "random-benchmark-model", "size": size, "random_weights": True, "note": note, "seed": seed},
    )


def _save_checkpoint(
    model: Qwen2VLForConditionalGeneration, tokenizer: Qwen2Tokenizer, directory: str | Path, metadata: dict
) -> Path:
    """Save weights, tokenizer, image processor (recipe pixel bounds) and ``medvlm.json``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.generation_config.eos_token_id = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.pad_token_id]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(directory)
    image_processor = Qwen2VLImageProcessorPil(min_pixels=RECIPE_MIN_PIXELS, max_pixels=RECIPE_MAX_PIXELS)
    processor = ImageOnlyQwen2VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=QWEN2_VL_CHAT_TEMPLATE
    )
    save_processor(processor, directory)
    write_metadata(directory, {**metadata, "parameters": sum(p.numel() for p in model.parameters())})
    return directory


#: Words the format warm-start builds its questions and options from. Questions are generated, not
#: a fixed handful, so that the format carries over to questions the model has never seen.
_QUESTION_WORDS = tuple(
    "image scan shows which most likely lesion organ left right upper lower lobe brain liver kidney chest "
    "abdomen bone fracture mass normal finding sign view plane axial sagittal coronal contrast enhanced "
    "modality used acquire patient structure seen visible abnormal diagnosis present located side region "
    "tissue density signal".split()
)
_OPTION_WORDS = tuple(
    "CT MRI X-Ray Ultrasound Liver Spleen Brain Heart Kidney Lung Yes No Normal Infarct Hemorrhage Tumor "
    "Abscess Cyst Edema Left Right Bright Dark Axial Sagittal Coronal Bone".split()
)


def _format_example(rng: random.Random) -> tuple[Image.Image, str, list[str], str]:
    """A random question on a flat grey image, answered in the format with a random letter."""
    from medvlm.prompt import LETTERS

    question, options = _warm_start_case(rng)
    letter = LETTERS[rng.randrange(len(options))]
    shade = rng.randrange(256)
    image = Image.new("RGB", (56, 56), (shade, shade, shade))
    return image, question, options, f"<think> The image shows a scan. </think>\n<answer>{letter}</answer>"


def _warm_start_case(rng: random.Random) -> tuple[str, list[str]]:
    """A random question of 3-10 words and 2-5 distinct options of 1-3 words."""
    question = " ".join(rng.choice(_QUESTION_WORDS) for _ in range(rng.randint(3, 10))).capitalize() + "?"
    options: list[str] = []
    count = rng.randint(2, 5)
    while len(options) < count:
        option = " ".join(rng.choice(_OPTION_WORDS) for _ in range(rng.randint(1, 3)))
        if option not in options:
            options.append(option)
    return question, options


WarmStartExample = Callable[[random.Random], tuple[Image.Image, str, list[str], str]]
"""Draws one supervised example: (image, question, options, the completion to teach)."""


def warm_start_format(
    directory: str | Path,
    *,
    steps: int = 300,
    seed: int = 0,
    learning_rate: float = 3e-3,
    example: WarmStartExample | None = None,
) -> Path:
    """Teach a tiny checkpoint the answer *format* by a few supervised steps, and save it in place.

    Random weights never close ``</think>`` or give an ``<answer>``, so nothing downstream of the
    parser (a highlighted option, a correct/wrong mark, a format reward above zero) could be seen
    without this. The targets are ``<think> ... </think>\n<answer>L</answer>`` with L drawn at
    random from the offered letters: the model learns the shape, not medicine. Every step asks a
    new generated question (a fixed few would teach the format for those questions only), and the
    learning rate decays linearly with clipped gradients, so the result does not depend on luck.
    The checkpoint's ``medvlm.json`` records the warm-start; it still counts as a random test model.
    ``example`` replaces the drawn cases and targets (a benchmark teaching a habit, such as
    reasoning that contradicts its answer, draws its own).
    """
    from medvlm.model import load_model
    from medvlm.streaming import prepare_inputs

    rng = random.Random(seed)
    loaded = load_model(directory, dtype="fp32", device="cpu", fast_cpu=False)  # it trains: keep plain fp32 layers
    model, tokenizer = loaded.model, loaded.processor.tokenizer
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    model.train()
    for _ in range(steps):
        image, question, options, completion = (example or _format_example)(rng)
        inputs = prepare_inputs(loaded, [image], [question], [options])
        target = tokenizer(f"{completion}<|im_end|>", return_tensors="pt")["input_ids"]
        inputs["input_ids"] = torch.cat([inputs["input_ids"], target], dim=1)
        inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
        inputs["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(target)], dim=1)
        labels = torch.full_like(inputs["input_ids"], -100)
        labels[:, -target.shape[1] :] = target
        loss = model(**inputs, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        schedule.step()
    model.eval()
    model.save_pretrained(directory)
    metadata = read_metadata(directory)
    metadata.update(
        format_warm_start={"steps": steps, "final_loss": round(loss.item(), 4)},
        note=metadata.get("note", "")
        + " It was warm-started to follow the <think>/<answer> format; the letters it picks are still random.",
    )
    write_metadata(directory, metadata)
    return Path(directory)


def _mute_unreadable_tokens(model: Qwen2VLForConditionalGeneration, tokenizer: Qwen2Tokenizer) -> None:
    """Zero the output rows of single-byte and special tokens so random greedy text is words."""
    vocab = tokenizer.get_vocab()
    muted = [index for token, index in vocab.items() if len(token) == 1 or token in SPECIAL_TOKENS]
    with torch.no_grad():
        model.lm_head.weight[muted] = 0.0
