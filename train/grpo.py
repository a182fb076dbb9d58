"""GRPO fine-tuning of a vision-language model on multiple-choice medical VQA (MedVLM-R1).

The RL loop is TRL's ``GRPOTrainer``; this script only wires the project's pieces into it: the
prompt (``medvlm.prompt``), the data loaders (``medvlm.vqa_records``, ``train.data``), the rewards (``train.rewards``,
picked by name) and a torchvision-free processor (``medvlm.processor``). The output directory
loads unchanged in the app, the CLI and ``medvlm.model.load_model``: the weights (or a LoRA
adapter), the processor and ``medvlm.json`` with the recipe, the data and the final metrics.

Every run is a recipe under ``train/recipes/`` plus command-line overrides (any field of
``GRPOScriptArguments``, ``trl.GRPOConfig`` or ``trl.ModelConfig``)::

    # The paper's run: full fine-tune of Qwen2-VL-2B on 600 MRI questions, DeepSpeed ZeRO-3
    accelerate launch --config_file train/accelerate/zero3.yaml --num_processes 2 \\
        -m train.grpo --config train/recipes/medvlm_r1_qwen2vl_2b.yaml

    # The same with ZeRO-2 (as Med-R1), or plain DDP on GPUs with memory to spare
    accelerate launch --config_file train/accelerate/zero2.yaml \\
        -m train.grpo --config train/recipes/medvlm_r1_qwen2vl_2b.yaml
    accelerate launch --config_file train/accelerate/ddp.yaml \\
        -m train.grpo --config train/recipes/medvlm_r1_qwen2vl_2b.yaml

    # LoRA on one 24 GB GPU
    python -m train.grpo --config train/recipes/medvlm_r1_lora_single_gpu.yaml

    # Med-R1's no-think variant (answer only)
    accelerate launch --config_file train/accelerate/zero2.yaml \\
        -m train.grpo --config train/recipes/medvlm_r1_no_think.yaml

    # A CPU smoke run on the tiny offline model (two processes: add the accelerate launcher)
    medvlm-tiny-model --format-warm-start ./tiny-model
    python -m train.grpo --config train/recipes/tiny_cpu_smoke.yaml \\
        --model_name_or_path ./tiny-model --dataset_name assets/questions.json
    accelerate launch --config_file train/accelerate/cpu_2proc.yaml -m train.grpo \\
        --config train/recipes/tiny_cpu_smoke.yaml --model_name_or_path ./tiny-model \\
        --dataset_name assets/questions.json

A run resumes by itself from the last ``checkpoint-*`` in ``output_dir``;
``--resume_from_checkpoint PATH`` picks one, ``--resume_from_checkpoint false`` starts afresh.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

import medvlm
from medvlm.errors import MedVLMError
from medvlm.metadata import read_metadata, write_metadata
from medvlm.pixels import RECIPE_MAX_PIXELS, RECIPE_MIN_PIXELS
from medvlm.prompt import PromptStyle
from medvlm.published import looks_like_local_path
from medvlm.vqa_records import LoadReport, RecordSource, no_records_message
from train.data import to_grpo_dataset
from train.rewards import REWARDS, get_rewards

if TYPE_CHECKING:  # torch, transformers and TRL load when training starts, so --help answers at once
    from trl import GRPOConfig, ModelConfig

RECIPES = Path(__file__).resolve().parent / "recipes"
EXIT_ERROR = 2

# One name whether imported or run with `python -m` (where __name__ is "__main__"): train/trainer.py logs
# under it too, at the level _setup_logging sets.
logger = logging.getLogger("train.grpo")

MODEL_CARD_TAGS = ["medvlm", "medvlm-r1", "grpo", "medical-vqa"]


@dataclass
class GRPOScriptArguments:
    """What to train on and how to ask and score: everything that is not a GRPO or model setting."""

    dataset_name: str = field(
        metadata={
            "help": "Where the questions are: a Hub dataset id (e.g. "
            "FreedomIntelligence/Medical_Multimodal_Evaluation_Data), a JSON/JSONL file, or a directory."
        }
    )
    dataset_format: str = field(
        default="auto", metadata={"help": "Record layout load_records reads ('auto' detects it)."}
    )
    data_root: str | None = field(
        default=None,
        metadata={
            "help": "Directory that relative image paths in the records are resolved against (default: next to the "
            "data)."
        },
    )
    dataset_split: str = field(
        default="test", metadata={"help": "Split of a Hub dataset (the MedVLM-R1 training questions are in 'test')."}
    )
    dataset_subset: str | None = field(
        default=None,
        metadata={"help": "Keep only records of this subset, e.g. 'MR (Mag-netic Resonance Imaging)' (sic)."},
    )
    modality: str | None = field(default=None, metadata={"help": "Keep only records of this imaging modality."})
    dataset_limit: int | None = field(
        default=None, metadata={"help": "Use at most this many records (after filtering), in file order."}
    )
    prompt_style: str = field(
        default=PromptStyle.MEDVLM.value,
        metadata={
            "help": "Wording of the instructions (medvlm.prompt.PromptStyle).",
            "choices": [style.value for style in PromptStyle],
        },
    )
    reward_funcs: list[str] = field(
        default_factory=lambda: ["accuracy", "format"],
        metadata={"help": f"Rewards by name, summed (train.rewards.REWARDS: {', '.join(REWARDS)})."},
    )
    max_pixels: int = field(
        default=RECIPE_MAX_PIXELS,
        metadata={"help": "Largest image in pixels (401408 = at most 512 image tokens of 28x28)."},
    )
    min_pixels: int = field(default=RECIPE_MIN_PIXELS, metadata={"help": "Smallest image in pixels."})
    image_backend: str | None = field(
        default=None,
        metadata={"help": "Image processor backend, 'pil' or 'torchvision' (default: torchvision where it works)."},
    )
    recipe_file: str | None = field(
        default=None, init=False, metadata={"help": "The --config file (set by parse_args, recorded in medvlm.json)."}
    )

    def record_source(self) -> RecordSource:
        """The training questions' source, as :func:`medvlm.vqa_records.load_records` reads it."""
        return RecordSource(
            self.dataset_name,
            format=self.dataset_format,
            data_root=self.data_root,
            subset=self.dataset_subset,
            modality=self.modality,
            limit=self.dataset_limit,
            split=self.dataset_split,
        )


def recipes() -> dict[str, str]:
    """The recipe files beside this script, each with the title of its opening comment (up to the first colon)."""
    found = {}
    for path in sorted(RECIPES.glob("*.yaml")):
        first = next((line for line in path.read_text().splitlines() if line.startswith("#")), "# ")
        found[str(path.relative_to(RECIPES.parents[1]))] = first.lstrip("# ").split(": ")[0].strip()
    return found


def short_help() -> str:
    """``--help``: how to run, the recipes, this script's own options, and where TRL's are."""
    lines = [
        "usage: python -m train.grpo --config RECIPE.yaml [--OPTION VALUE ...]",
        "       accelerate launch --config_file train/accelerate/zero3.yaml -m train.grpo --config RECIPE.yaml [...]",
        "",
        "GRPO fine-tuning with TRL's GRPOTrainer and this project's prompt, data loaders and rewards.",
        "A run is a recipe plus command-line overrides of any of its settings; it resumes from the last",
        "checkpoint in --output_dir by itself and leaves a finished run alone.",
        "",
        "recipes:",
        *(f"  {name:<45} {summary}" for name, summary in recipes().items()),
        "",
        "the options most runs change:",
        "  --model_name_or_path ID|DIR   the model to train (a Hub id, a checkpoint or the tiny test model)",
        "  --dataset_name PATH|ID        the questions: a JSON/JSONL file, a folder, or a Hub dataset",
        "  --output_dir DIR              where checkpoints, the trained model and medvlm.json go",
        "  --max_steps N, --num_train_epochs N, --learning_rate LR, --per_device_train_batch_size N",
        "  --use_peft true --lora_r R    train a LoRA adapter instead of every weight",
        "  --resume_from_checkpoint PATH|false   resume from PATH, or start afresh",
        "",
        "this script's own options:",
    ]
    for item in dataclasses.fields(GRPOScriptArguments):
        if item.init:
            lines.append(f"  --{item.name:<26} {item.metadata.get('help', '')}")
    lines += [
        "",
        "Every option of trl.GRPOConfig and trl.ModelConfig is accepted too: python -m train.grpo --help-all lists "
        "them.",
        "Details: train/README.md.",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> tuple[GRPOScriptArguments, GRPOConfig, ModelConfig]:
    """``--config RECIPE.yaml`` plus command-line overrides, parsed by TRL's parser.

    ``--help`` is answered here, before TRL and torch are imported; a missing recipe is a
    :class:`MedVLMError` naming the recipes there are.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(short_help())
        raise SystemExit(0)
    if "--config" in argv:
        index = argv.index("--config") + 1
        recipe = argv[index] if index < len(argv) else ""
        if not Path(recipe).is_file():
            raise MedVLMError(
                f"No recipe file at {recipe or '(nothing after --config)'}. The recipes are: {', '.join(recipes())}."
            )
    from trl import GRPOConfig, ModelConfig, TrlParser

    parser = TrlParser((GRPOScriptArguments, GRPOConfig, ModelConfig), prog="python -m train.grpo")
    if "--help-all" in argv:
        parser.print_help()
        raise SystemExit(0)
    script_args, training_args, model_args = parser.parse_args_and_config(argv)
    if "--config" in argv:
        script_args.recipe_file = argv[argv.index("--config") + 1]
    return script_args, training_args, model_args


def main(script_args: GRPOScriptArguments, training_args: GRPOConfig, model_args: ModelConfig) -> None:
    """One training run; every problem a person can fix raises :class:`MedVLMError` before the model loads."""
    from transformers import AutoModelForImageTextToText, set_seed
    from trl import get_peft_config

    from medvlm.hub_access import hub_source
    from medvlm.processor import load_processor, save_processor
    from train.trainer import ResumableGRPOTrainer

    set_seed(training_args.seed)
    _setup_logging(training_args)
    if not model_args.model_name_or_path:
        raise MedVLMError("No model: pass --model_name_or_path (a Hub id or a checkpoint directory).")
    if not Path(model_args.model_name_or_path).is_dir() and looks_like_local_path(model_args.model_name_or_path):
        raise MedVLMError(
            f"No model directory at {model_args.model_name_or_path}. Check the path, or pass a Hub id such as "
            "Qwen/Qwen2-VL-2B-Instruct (build the offline test model with: medvlm-tiny-model --format-warm-start "
            "./tiny-model)."
        )
    if Path(model_args.model_name_or_path).is_dir():
        # An absolute path, so that a LoRA adapter's adapter_config.json finds its base from anywhere.
        model_args.model_name_or_path = str(Path(model_args.model_name_or_path).resolve())
    logger.info(
        "Process %d/%d, device %s, bf16 %s | model %s | data %s (subset %s, limit %s) | rewards %s | output %s",
        training_args.process_index,
        training_args.world_size,
        training_args.device,
        training_args.bf16,
        model_args.model_name_or_path,
        script_args.dataset_name,
        script_args.dataset_subset,
        script_args.dataset_limit,
        script_args.reward_funcs,
        training_args.output_dir,
    )
    checkpoint = _checkpoint_to_resume(training_args)
    finished = _finished_at(checkpoint, training_args)
    if finished is not None:
        logger.info(
            "Nothing to train: %s already reached step %d of %d. Pass a higher --max_steps to train on, "
            "or a new --output_dir (or --resume_from_checkpoint false) to start afresh.",
            checkpoint,
            finished,
            finished,
        )
        return

    ################
    # Rewards
    ################
    # (rewards and data first: a typo or bad data stops the run before a model is downloaded)
    reward_funcs = get_rewards(script_args.reward_funcs)

    ################
    # Dataset
    ################
    records, report = script_args.record_source().load()
    logger.info("Training data from %s:\n%s", script_args.dataset_name, report.summary())
    if not records:
        raise MedVLMError(
            no_records_message(script_args.dataset_name, script_args.data_root, report, purpose="train on")
        )
    train_dataset = to_grpo_dataset(records, style=PromptStyle(script_args.prompt_style))

    ################
    # Model
    ################
    weights = model_args.model_name_or_path
    if not Path(weights).is_dir():  # one quick check of the Hub instead of minutes of retries without network
        weights = hub_source(weights, model_args.model_revision)
    model = AutoModelForImageTextToText.from_pretrained(
        weights,
        revision=model_args.model_revision,
        dtype=model_args.dtype,
        attn_implementation=model_args.attn_implementation,
    )
    processor = load_processor(
        weights,
        max_pixels=script_args.max_pixels,
        min_pixels=script_args.min_pixels,
        backend=script_args.image_backend,
        revision=model_args.model_revision,
    )
    processor.tokenizer.padding_side = "left"  # what GRPOTrainer expects of a processing class

    ################
    # Training
    ################
    trainer = ResumableGRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=train_dataset,
        processing_class=processor,
        peft_config=get_peft_config(model_args),
    )
    if checkpoint is not None:
        logger.info("Resuming training from %s (--resume_from_checkpoint false starts afresh)", checkpoint)
    with warnings.catch_warnings():
        # The recipes name activation_checkpointing, as transformers >= 5.23 wants, so our settings raise no
        # FutureWarning. TRL (1.16, the newest) itself still reads `model.is_gradient_checkpointing` at every
        # generation: a warning about TRL's code that no setting of ours can avoid, so only that one is silenced,
        # and only while training.
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
    metrics = {**train_result.metrics, "train_samples": len(train_dataset)}
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()

    ###################################
    # Save model, processor, medvlm.json
    ###################################
    # The processor is saved by save_processor, in the published Qwen2-VL layout, not by the
    # Trainer: save_pretrained writes a processor_config.json naming our torchvision-free class,
    # which takes precedence and which plain AutoProcessor cannot load.
    trainer.processing_class = None
    trainer.save_model(training_args.output_dir)
    if trainer.is_world_process_zero():
        save_processor(processor, training_args.output_dir)
        write_metadata(
            training_args.output_dir,
            _run_metadata(script_args, training_args, model_args, report, metrics, trainer.state.log_history),
        )
        trainer.create_model_card(dataset_name=script_args.dataset_name, tags=MODEL_CARD_TAGS)
        logger.info("Model, processor and medvlm.json saved to %s", training_args.output_dir)
    trainer.accelerator.wait_for_everyone()  # the other processes wait for the files, then all leave together
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name, tags=MODEL_CARD_TAGS)
        logger.info("Pushed to https://huggingface.co/%s", trainer.hub_model_id)
    trainer.end()


def _setup_logging(training_args: GRPOConfig) -> None:
    """Our own messages on the main process; library verbosity as ``--log_level`` says."""
    import datasets
    import transformers

    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    logger.setLevel(logging.INFO if training_args.should_log else logging.WARNING)
    library_level = training_args.get_process_log_level()
    datasets.utils.logging.set_verbosity(library_level)
    transformers.utils.logging.set_verbosity(library_level)


def _checkpoint_to_resume(training_args: GRPOConfig) -> str | None:
    """open-r1's rule: the checkpoint asked for, else the last one in ``output_dir``; ``false`` starts afresh."""
    from transformers.trainer_utils import get_last_checkpoint

    requested = training_args.resume_from_checkpoint
    last = get_last_checkpoint(training_args.output_dir) if os.path.isdir(training_args.output_dir) else None
    if requested is None:
        return last
    if requested.lower() in ("false", "no", "none"):
        return None
    if requested.lower() in ("true", "yes", "last"):
        if last is None:
            raise MedVLMError(
                f"--resume_from_checkpoint {requested}, but {training_args.output_dir} holds no checkpoint-* "
                "directory."
            )
        return last
    if not os.path.isdir(requested):
        raise MedVLMError(f"No checkpoint directory at {requested}.")
    return requested


def _finished_at(checkpoint: str | None, training_args: GRPOConfig) -> int | None:
    """The step a finished run ended at, when ``checkpoint`` is its end; None when there is training left.

    Resuming at the last step would run one step past ``max_steps`` and overwrite the saved model:
    a finished run is left as it is. A run with a higher ``--max_steps`` than it reached trains on.
    """
    if checkpoint is None:
        return None
    try:
        state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return None
    done, planned = int(state.get("global_step", 0)), int(state.get("max_steps", 0))
    target = training_args.max_steps if training_args.max_steps > 0 else planned
    return done if target > 0 and done >= target else None


def _run_metadata(
    script_args: GRPOScriptArguments,
    training_args: GRPOConfig,
    model_args: ModelConfig,
    report: LoadReport,
    metrics: dict[str, Any],
    log_history: list[dict[str, Any]],
) -> dict[str, Any]:
    """``medvlm.json`` of the trained model: how it was made, from what, and how training ended."""
    base_metadata = (
        read_metadata(model_args.model_name_or_path) if Path(model_args.model_name_or_path).is_dir() else {}
    )
    recipe_file = script_args.recipe_file
    last_logged = next((entry for entry in reversed(log_history) if "reward" in entry), {})
    return {
        "kind": "grpo-lora-adapter" if model_args.use_peft else "grpo-checkpoint",
        "base_model": model_args.model_name_or_path,
        "random_weights": bool(base_metadata.get("random_weights", False)),
        "base_model_metadata": base_metadata,
        "medvlm_version": medvlm.__version__,
        "recipe": {
            "file": recipe_file,
            "config": yaml.safe_load(Path(recipe_file).read_text()) if recipe_file else None,
            "script_args": dataclasses.asdict(script_args),
            "model_args": dataclasses.asdict(model_args),
            "training_args": training_args.to_dict(),
        },
        "data": {
            **script_args.record_source().describe(),
            "prompt_style": script_args.prompt_style,
            "load_report": report.to_dict(),
        },
        "metrics": {"train": metrics, "last_logged_step": last_logged},
    }


def cli(argv: list[str] | None = None) -> int:
    """``python -m train.grpo``: a problem a person can fix is one ``error:`` line and exit status 2."""
    try:
        main(*parse_args(argv))
    except MedVLMError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(cli())
