"""GRPO training (``train.grpo``): recipes, a CPU run on the tiny model, LoRA, resuming, two processes.

The end-to-end runs train the format-warm-started tiny checkpoint (``formatted_model_dir``), whose
answers parse, so the format reward and the logged metrics mean something, on a few synthetic
questions written in MedVLM-R1's published evaluation format and read through ``medvlm.vqa_records``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from PIL import Image

from helpers import free_port
from medvlm.errors import MedVLMError
from medvlm.model import load_model
from medvlm.streaming import GenerationSettings, stream_completion
from train.grpo import cli, main, parse_args, short_help
from train.rewards import REWARDS

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "train" / "recipes"
SMOKE = RECIPES / "tiny_cpu_smoke.yaml"
QUESTION, OPTIONS = "Is the square bright or dark?", ["Bright", "Dark"]


@pytest.fixture(scope="module")
def questions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight questions (plus one row whose image is missing) in MedVLM-R1's evaluation JSON format."""
    root = tmp_path_factory.mktemp("vqa")
    (root / "images").mkdir()
    rows = []
    for index in range(9):
        bright = index % 2 == 0
        name = f"images/square{index}.png"
        if index < 8:
            shade = 230 if bright else 25
            Image.new("RGB", (56, 56), (shade, shade, shade)).save(root / name)
        rows.append(
            {
                "image": [name],
                "problem": f"{QUESTION}\nA) {OPTIONS[0]}\nB) {OPTIONS[1]}",
                "solution": "A" if bright else "B",
                "question": QUESTION,
                "options": OPTIONS,
                "answer": OPTIONS[0] if bright else OPTIONS[1],
                "dataset": "synthetic",
                "subset": "MR (Mag-netic Resonance Imaging)",
            }
        )
    path = root / "questions.json"
    path.write_text(json.dumps(rows))
    return path


def run_grpo(model_dir: Path, data: Path, output_dir: Path, *overrides: str) -> None:
    """Run ``python -m train.grpo`` in this process with the smoke recipe."""
    argv = [
        "--config",
        str(SMOKE),
        "--model_name_or_path",
        str(model_dir),
        "--dataset_name",
        str(data),
        "--output_dir",
        str(output_dir),
        *overrides,
    ]
    main(*parse_args(argv))


def log_history(output_dir: Path) -> list[dict]:
    return json.loads((output_dir / "trainer_state.json").read_text())["log_history"]


def streamed_answer(directory: Path):
    loaded = load_model(directory)
    image = Image.new("RGB", (56, 56), (230, 230, 230))
    updates = list(stream_completion(loaded, image, QUESTION, OPTIONS, GenerationSettings(max_new_tokens=40)))
    return loaded, updates


# -- recipes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("recipe", sorted(RECIPES.glob("*.yaml")), ids=lambda path: path.stem)
def test_every_recipe_parses_into_a_valid_grpo_config(recipe: Path, tmp_path: Path) -> None:
    # use_cpu: the GPU recipes ask for bf16, which GRPOConfig refuses on a machine without a GPU otherwise
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # e.g. a setting transformers renamed (gradient_checkpointing)
        script_args, training_args, model_args = parse_args(
            ["--config", str(recipe), "--dataset_name", "x", "--output_dir", str(tmp_path), "--use_cpu", "true"]
        )
    assert set(script_args.reward_funcs) <= set(REWARDS)
    assert training_args.generation_batch_size % training_args.num_generations == 0
    assert training_args.logging_steps >= 1 and training_args.save_steps >= 1
    assert script_args.recipe_file == str(recipe)


def test_the_paper_recipe_keeps_the_published_settings(tmp_path: Path) -> None:
    script_args, args, model_args = parse_args(
        ["--config", str(RECIPES / "medvlm_r1_qwen2vl_2b.yaml"), "--output_dir", str(tmp_path), "--use_cpu", "true"]
    )
    assert model_args.model_name_or_path == "Qwen/Qwen2-VL-2B-Instruct" and not model_args.use_peft
    assert (script_args.dataset_name, script_args.dataset_subset, script_args.dataset_limit) == (
        "FreedomIntelligence/Medical_Multimodal_Evaluation_Data",
        "MR (Mag-netic Resonance Imaging)",
        600,
    )
    assert script_args.max_pixels == 401408 and script_args.reward_funcs == ["accuracy", "format"]
    assert (
        args.num_generations,
        args.max_completion_length,
        args.learning_rate,
        args.beta,
        args.temperature,
        args.top_k,
    ) == (4, 512, 1e-6, 0.04, 1.0, 50)
    # one prompt (its 4 completions) per device and micro-step, 2 accumulation steps: 2 prompts per update
    assert args.per_device_train_batch_size // args.num_generations == 1 and args.gradient_accumulation_steps == 2
    assert (args.num_train_epochs, args.save_steps, args.num_iterations) == (2, 50, 1)
    assert (args.scale_rewards, args.loss_type, args.use_bias_correction_kl) == ("group", "grpo", False)
    assert args.bf16


def test_command_line_overrides_the_recipe(tmp_path: Path) -> None:
    script_args, args, _ = parse_args(
        [
            "--config",
            str(SMOKE),
            "--dataset_name",
            "x",
            "--output_dir",
            str(tmp_path),
            "--reward_funcs",
            "accuracy_paper",
            "format",
            "--max_steps",
            "7",
        ]
    )
    assert script_args.reward_funcs == ["accuracy_paper", "format"] and args.max_steps == 7


def test_an_unknown_reward_stops_the_run_before_any_loading(tmp_path: Path) -> None:
    with pytest.raises(MedVLMError, match="Unknown reward function 'acuracy'"):
        run_grpo(Path("some/model"), Path("questions.json"), tmp_path / "run", "--reward_funcs", "acuracy", "format")


def test_data_without_a_usable_row_stops_the_run_before_the_model_loads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "questions.jsonl"
    data.write_text(
        json.dumps({"image": "missing.png", "question": QUESTION, "options": OPTIONS, "answer": "A"}) + "\n"
    )
    with (
        caplog.at_level(logging.INFO, logger="train.grpo"),
        pytest.raises(MedVLMError, match="No question left to train on"),
    ):
        run_grpo(Path("some/model"), data, tmp_path / "run")
    assert "skipped 1: missing image file (1)" in caplog.text


def test_resume_true_without_a_checkpoint_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(MedVLMError, match="holds no checkpoint"):  # before anything is loaded
        run_grpo(Path("some/model"), Path("questions.json"), tmp_path / "run", "--resume_from_checkpoint", "true")


# -- end-to-end runs -------------------------------------------------------------------------------


@pytest.mark.slow
def test_smoke_recipe_trains_saves_and_the_app_loads_the_result(
    formatted_model_dir: Path, questions: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    output_dir = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="train.grpo"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_grpo(
            formatted_model_dir, questions, output_dir, "--dataset_limit", "16"
        )  # read every row, the bad one too
        left = [entry for entry in warnings.filters if entry[1] and "checkpointing" in entry[1].pattern]
    assert "Loaded 8 of 9 rows; skipped 1: missing image file (1)" in caplog.text
    deprecated = [str(w.message) for w in caught if w.category is FutureWarning and "checkpointing" in str(w.message)]
    assert deprecated == []  # the recipes name activation_checkpointing, as transformers now does
    assert left == []  # TRL's own notice is silenced while training only, not for whatever the process does next

    history = log_history(output_dir)
    steps = [entry for entry in history if "reward" in entry]
    assert [entry["step"] for entry in steps] == [1, 2, 3, 4]
    for key in (
        "rewards/accuracy_reward/mean",
        "rewards/format_reward/mean",
        "completions/mean_length",
        "kl",
        "reward",
    ):
        assert all(key in entry for entry in steps), key
    for entry in steps:  # each logged reward is the sum of its functions' means (sampling decides their values)
        parts = entry["rewards/accuracy_reward/mean"] + entry["rewards/format_reward/mean"]
        assert 0.0 <= entry["rewards/format_reward/mean"] <= 1.0 and entry["reward"] == pytest.approx(parts, abs=1e-5)
    assert (output_dir / "checkpoint-2").is_dir() and (output_dir / "checkpoint-4").is_dir()
    assert json.loads((output_dir / "train_results.json").read_text())["train_samples"] == 8

    # What the app needs: weights, the processor in the published layout (no file naming our class)
    for name in (
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "chat_template.json",
        "tokenizer.json",
    ):
        assert (output_dir / name).is_file(), name
    assert not (output_dir / "processor_config.json").exists()

    metadata = json.loads((output_dir / "medvlm.json").read_text())
    assert metadata["random_weights"] is True and metadata["base_model"] == str(formatted_model_dir.resolve())
    assert metadata["recipe"]["file"] == str(SMOKE) and metadata["recipe"]["config"]["num_generations"] == 4
    assert metadata["recipe"]["training_args"]["max_steps"] == 4
    assert metadata["data"]["load_report"]["skipped"] == {"missing image file": 1}
    assert metadata["metrics"]["train"]["train_samples"] == 8
    assert "rewards/format_reward/mean" in metadata["metrics"]["last_logged_step"]

    loaded, updates = streamed_answer(output_dir)
    assert loaded.is_test_model and loaded.max_pixels == 12544
    final = updates[-1]
    assert len(updates) > 2 and final.done and final.parsed.format_ok and final.parsed.letter in ("A", "B")


@pytest.mark.slow
def test_lora_run_saves_an_adapter_that_loads_merged(
    formatted_model_dir: Path, questions: Path, tmp_path: Path
) -> None:
    output_dir = tmp_path / "lora"
    run_grpo(
        formatted_model_dir,
        questions,
        output_dir,
        "--use_peft",
        "true",
        "--lora_target_modules",
        "q_proj",
        "v_proj",
        "--max_steps",
        "2",
    )
    adapter = json.loads((output_dir / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(formatted_model_dir.resolve())
    assert sorted(adapter["target_modules"]) == ["q_proj", "v_proj"]
    assert (output_dir / "adapter_model.safetensors").is_file() and not (output_dir / "model.safetensors").exists()
    assert json.loads((output_dir / "medvlm.json").read_text())["kind"] == "grpo-lora-adapter"

    loaded, updates = streamed_answer(output_dir)
    assert loaded.base_model == str(formatted_model_dir.resolve()) and loaded.is_test_model
    assert not hasattr(loaded.model, "peft_config")  # merged into the weights
    # Two GRPO steps on LoRA may well unlearn the tiny model's format: it must load and stream, not answer well.
    assert updates[-1].done and updates[-1].text and updates[-1].timing.new_tokens > 0


@pytest.mark.slow
def test_a_second_run_resumes_from_the_last_checkpoint(
    formatted_model_dir: Path, questions: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    output_dir = tmp_path / "run"
    run_grpo(formatted_model_dir, questions, output_dir, "--max_steps", "2")
    checkpoint = output_dir / "checkpoint-2"
    assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == 2

    with caplog.at_level(logging.INFO, logger="train.grpo"):
        run_grpo(formatted_model_dir, questions, output_dir, "--max_steps", "4")
    assert f"Resuming training from {checkpoint}" in caplog.text
    assert json.loads((output_dir / "trainer_state.json").read_text())["global_step"] == 4
    assert [entry["step"] for entry in log_history(output_dir) if "reward" in entry] == [1, 2, 3, 4]
    assert (output_dir / "checkpoint-4").is_dir()


@pytest.mark.slow
def test_two_cpu_processes_with_accelerate_launch(formatted_model_dir: Path, questions: Path, tmp_path: Path) -> None:
    output_dir = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(ROOT / "train" / "accelerate" / "cpu_2proc.yaml"),
        "--main_process_port", str(free_port()),
        "-m", "train.grpo",
        "--config", str(SMOKE),
        "--model_name_or_path", str(formatted_model_dir),
        "--dataset_name", str(questions),
        "--output_dir", str(output_dir),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = run_or_show_stacks(command, env, timeout_s=420)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Process 0/2, device cpu" in result.stdout
    # the DDP wrapper was freed before the process group, so no process can hang on exit (ResumableGRPOTrainer.end)
    assert "Freed the DistributedDataParallel wrapper before the process group" in result.stdout
    steps = [entry for entry in log_history(output_dir) if "reward" in entry]
    # each step took one prompt (a group of 4 completions) on each process: the 8 questions in 4 steps
    assert [entry["step"] for entry in steps] == [1, 2, 3, 4] and steps[-1]["epoch"] == 1.0
    loaded, updates = streamed_answer(output_dir)
    assert loaded.is_test_model and updates[-1].done


def run_or_show_stacks(command: list[str], env: dict[str, str], timeout_s: float) -> subprocess.CompletedProcess:
    """``subprocess.run`` whose timeout says where each process was stuck, not only that it was.

    Every process runs with faulthandler on; at the timeout each one still alive is sent SIGABRT,
    which prints its threads' Python stacks into the captured stderr, and the test fails with them.
    """
    import psutil

    env = {**env, "PYTHONFAULTHANDLER": "1"}
    launcher = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = launcher.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        for process in psutil.Process(launcher.pid).children(recursive=True):
            process.send_signal(signal.SIGABRT)
        time.sleep(5)  # time to print the stacks
        os.killpg(launcher.pid, signal.SIGKILL)
        stdout, stderr = launcher.communicate()
        pytest.fail(f"still running after {timeout_s} s; stacks and output:\n{stderr[-8000:]}\n{stdout[-2000:]}")
    return subprocess.CompletedProcess(command, launcher.returncode, stdout, stderr)


def resume_and_record(monkeypatch: pytest.MonkeyPatch, *run, stop_after: int | None = None) -> dict:
    """Run ``run_grpo(*run)`` and return copies of the weights, optimizer state and learning rate as
    training (re)starts; ``stop_after`` interrupts the run after that many steps (as a kill would,
    but with its checkpoint written)."""
    import copy

    from transformers import TrainerCallback

    import train.trainer

    seen: dict = {}

    class Recorder(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, optimizer=None, lr_scheduler=None, **kwargs):
            seen.update(
                step=state.global_step,
                weights={name: tensor.detach().clone() for name, tensor in model.state_dict().items()},
                optimizer=copy.deepcopy(optimizer.state_dict()),  # the live state is updated in place by later steps
                lr=list(lr_scheduler.get_last_lr()),
            )

        def on_step_end(self, args, state, control, **kwargs):
            if stop_after is not None and state.global_step >= stop_after:
                control.should_training_stop = True

    base = train.trainer.ResumableGRPOTrainer

    class Recording(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(Recorder())

    monkeypatch.setattr(train.trainer, "ResumableGRPOTrainer", Recording)
    try:
        run_grpo(*run)
    finally:
        monkeypatch.setattr(train.trainer, "ResumableGRPOTrainer", base)
    return seen


def saved_weights(checkpoint: Path, *, lora: bool = False) -> dict:
    """The checkpoint's weights as the model holds them at run time (through from_pretrained's conversion)."""
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText

    if lora:
        return load_file(str(checkpoint / "adapter_model.safetensors"))
    return AutoModelForImageTextToText.from_pretrained(checkpoint).state_dict()


@pytest.mark.slow
def test_resuming_continues_from_the_checkpoints_weights_optimizer_and_schedule(
    formatted_model_dir: Path, questions: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    output_dir = tmp_path / "run"
    run = (formatted_model_dir, questions, output_dir, "--max_steps", "4", "--learning_rate", "1e-3")
    first = resume_and_record(monkeypatch, *run, stop_after=2)  # interrupted after its step-2 checkpoint
    checkpoint = output_dir / "checkpoint-2"
    resumed = resume_and_record(monkeypatch, *run)
    assert resumed["step"] == 2
    expected = saved_weights(checkpoint)
    assert resumed["weights"].keys() == expected.keys()
    changed = [name for name in expected if not torch.equal(first["weights"][name], expected[name])]
    assert changed, "two steps at lr 1e-3 must have changed the weights, or this test proves nothing"
    assert all(torch.equal(resumed["weights"][name], expected[name]) for name in expected)
    saved_optimizer = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    assert resumed["optimizer"]["state"].keys() == saved_optimizer["state"].keys() and saved_optimizer["state"]
    assert all(
        torch.equal(resumed["optimizer"]["state"][k]["exp_avg"], saved_optimizer["state"][k]["exp_avg"])
        for k in saved_optimizer["state"]
    )
    assert (
        resumed["lr"] == torch.load(checkpoint / "scheduler.pt", weights_only=True)["_last_lr"]
        and resumed["lr"][0] > 0
    )
    assert json.loads((output_dir / "trainer_state.json").read_text())["global_step"] == 4


@pytest.mark.slow
def test_resuming_a_lora_run_continues_from_its_adapter(
    formatted_model_dir: Path, questions: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    output_dir = tmp_path / "lora"
    lora = (
        "--use_peft",
        "true",
        "--lora_r",
        "4",
        "--lora_alpha",
        "8",
        "--lora_target_modules",
        "q_proj",
        "v_proj",
        "--learning_rate",
        "1e-2",
    )
    resume_and_record(monkeypatch, formatted_model_dir, questions, output_dir, "--max_steps", "4", *lora, stop_after=2)
    resumed = resume_and_record(monkeypatch, formatted_model_dir, questions, output_dir, "--max_steps", "4", *lora)
    assert resumed["step"] == 2
    adapter = saved_weights(output_dir / "checkpoint-2", lora=True)
    live = {name: tensor for name, tensor in resumed["weights"].items() if "lora_" in name}
    assert adapter and len(live) == len(adapter)
    by_suffix = {
        name.split("base_model.model.", 1)[-1].replace(".default", ""): tensor for name, tensor in live.items()
    }
    for name, tensor in adapter.items():
        key = name.split("base_model.model.", 1)[-1]
        match = [value for suffix, value in by_suffix.items() if suffix.endswith(key.split("model.", 1)[-1])]
        assert match and torch.equal(match[0], tensor), name


@pytest.mark.slow
def test_a_finished_run_is_not_trained_again(
    formatted_model_dir: Path, questions: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    output_dir = tmp_path / "done"
    run_grpo(formatted_model_dir, questions, output_dir, "--max_steps", "2")
    before = {path.name: path.stat().st_mtime_ns for path in output_dir.iterdir() if path.is_file()}
    with caplog.at_level(logging.INFO, logger="train.grpo"):
        run_grpo(formatted_model_dir, questions, output_dir, "--max_steps", "2")
    assert "Nothing to train" in caplog.text and "already reached step 2 of 2" in caplog.text
    assert {path.name: path.stat().st_mtime_ns for path in output_dir.iterdir() if path.is_file()} == before
    assert not (output_dir / "checkpoint-3").exists()


# -- the command line ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["--config", "train/recipes/nope.yaml"],
            "No recipe file at train/recipes/nope.yaml. The recipes are: train/recipes/medvlm_r1_lora_single_gpu.yaml",
        ),
        (
            [
                "--config",
                str(SMOKE),
                "--model_name_or_path",
                "M",
                "--dataset_name",
                "q.json",
                "--reward_funcs",
                "formatt",
            ],
            "Unknown reward function 'formatt'; choose from: format, accuracy",
        ),
        (
            ["--config", str(SMOKE), "--model_name_or_path", "M", "--dataset_name", "/nowhere/questions.json"],
            "No data file or folder at /nowhere/questions.json",
        ),
        (
            ["--config", str(SMOKE), "--model_name_or_path", "./no/such/model", "--dataset_name", "q.json"],
            "No model directory at ./no/such/model",
        ),
    ],
)
def test_a_mistake_is_one_error_line_and_status_2(
    arguments: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = cli([*arguments, "--output_dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and err[-1].startswith(f"error: {message}"), err[-3:]
    assert "Traceback" not in "\n".join(err)


def test_help_is_short_names_the_recipes_and_points_to_the_rest(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        parse_args(["--help"])
    text = capsys.readouterr().out
    assert done.value.code == 0 and text == short_help() + "\n"
    assert len(text.splitlines()) < 60 and "--config RECIPE.yaml" in text and "--help-all" in text
    for recipe in RECIPES.glob("*.yaml"):
        assert f"train/recipes/{recipe.name}" in text
