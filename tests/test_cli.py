"""The ``medvlm`` command as a user runs it: streamed text, a parsed result, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from medvlm.cli import main

QUESTION = ["--question", "Which modality is this?", "--option", "CT", "--option", "MRI", "--option", "X-Ray"]


def test_png_question_streams_and_prints_parsed_result(
    tiny_model_dir: Path, sample_png: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(
        ["ask", "--model", str(tiny_model_dir), "--image", str(sample_png), *QUESTION, "--max-new-tokens", "16"]
    )
    captured = capsys.readouterr()
    assert status == 0
    assert "Answer: none." in captured.out  # random weights never produce a well-formed answer
    assert "Format followed: no" in captured.out
    assert "Time to first token:" in captured.out and "16 new tokens" in captured.out
    assert "random test model" in captured.err


def test_json_output_describes_answer_model_and_safe_image_metadata(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ct = get_testdata_file("CT_small.dcm")
    status = main(
        [
            "ask",
            "--model",
            str(tiny_model_dir),
            "--image",
            ct,
            *QUESTION,
            "--max-new-tokens",
            "8",
            "--window",
            "lung",
            "--json",
        ]
    )
    result = json.loads(capsys.readouterr().out)
    assert status == 0
    assert result["letter"] is None and result["format_ok"] is False
    assert result["timing"]["new_tokens"] == 8
    assert result["model"]["random_weights"] is True
    assert result["image"]["modality"] == "CT" and result["image"]["window_name"] == "lung"
    assert "CompressedSamples^CT1" not in json.dumps(result)  # CT_small's patient name


def test_ct_dicom_from_a_shell(tiny_model_dir: Path) -> None:
    """The installed entry point, in a subprocess, on pydicom's CT sample."""
    ct = get_testdata_file("CT_small.dcm")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "medvlm",
            "ask",
            "--model",
            str(tiny_model_dir),
            "--image",
            ct,
            *QUESTION,
            "--max-new-tokens",
            "12",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert "Answer: none." in result.stdout and "12 new tokens" in result.stdout
    assert "CT" in result.stderr  # "Image: 128x128 (DICOM, CT, ...)"


def test_bad_file_is_one_line_error_and_nonzero_exit(tiny_model_dir: Path, tmp_path: Path) -> None:
    fake = tmp_path / "scan.png"
    fake.write_text("this is not an image\n")
    result = subprocess.run(
        [sys.executable, "-m", "medvlm", "ask", "--model", str(tiny_model_dir), "--image", str(fake), *QUESTION],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert result.stderr.startswith("error: This file is not a DICOM or image file")
    assert "Traceback" not in result.stderr and result.stdout == ""


def ask_in_a_fresh_process(image: Path, prelude: str = "") -> subprocess.CompletedProcess[str]:
    """``medvlm ask`` on ``image`` in a new interpreter (after ``prelude``), printing whether torch was imported."""
    code = (
        f"{prelude}\nimport sys; from medvlm.cli import main; status = main(sys.argv[1:]); "
        "print('torch imported' if 'torch' in sys.modules else 'torch not imported'); sys.exit(status)"
    )
    return subprocess.run(
        [sys.executable, "-c", code, "ask", "--image", str(image), *QUESTION],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_missing_image_is_named_at_once_before_torch_is_imported(tmp_path: Path) -> None:
    missing = tmp_path / "scans" / "head.dcm"
    result = ask_in_a_fresh_process(missing)
    assert result.returncode == 2 and result.stdout.strip() == "torch not imported", result
    assert result.stderr.strip() == f"error: There is no file at {missing} (check the path)."
    folder = ask_in_a_fresh_process(tmp_path)
    assert folder.returncode == 2 and f"{tmp_path} is a folder, not a file" in folder.stderr


def test_an_image_that_cannot_be_read_is_named_before_torch_is_imported(tmp_path: Path, sample_png: Path) -> None:
    """No read permission (simulated: the tests run as root, whom chmod does not stop): the path and the reason."""
    locked = tmp_path / "locked.png"
    locked.write_bytes(sample_png.read_bytes())
    prelude = (
        "import errno, pathlib\n"
        "opened = pathlib.Path.open\n"
        "def refused(self, *args, **kwargs):\n"
        "    if self.name == 'locked.png':\n"
        "        raise PermissionError(errno.EACCES, 'Permission denied', str(self))\n"
        "    return opened(self, *args, **kwargs)\n"
        "pathlib.Path.open = refused"
    )
    result = ask_in_a_fresh_process(locked, prelude)
    assert result.returncode == 2 and result.stdout.strip() == "torch not imported", result
    assert result.stderr.strip() == f"error: The file {locked} cannot be read (Permission denied)."


@pytest.mark.parametrize(
    ("image", "window", "message"),
    [
        ("MR_small.dcm", ["--window", "lung"], "The lung window is a CT preset in Hounsfield units, and this image"),
        ("png", ["--window", "bone"], "Only a DICOM file can be shown with another window"),
        ("png", ["--window-center", "40", "--window-width", "400"], "Only a DICOM file can be shown with another"),
        ("examples_rgb_color.dcm", ["--window", "lung"], "Only a greyscale DICOM can be shown with another window"),
    ],
)
def test_a_window_the_image_cannot_take_is_refused_before_the_model_loads(
    image: str, window: list[str], message: str, sample_png: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pydicom.data import get_testdata_file

    path = sample_png if image == "png" else get_testdata_file(image, download=False)
    status = main(["ask", "--model", "/nonexistent/model/dir", "--image", str(path), *window, *QUESTION])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith(f"error: {message}") and "Loading" not in err, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--question", " ", "--option", "a", "--option", "b"], "question"),
        (["--question", "Which?", "--option", "only"], "option"),
    ],
)
def test_bad_question_fails_before_loading_the_model(
    sample_png: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["ask", "--model", "/nonexistent/model/dir", "--image", str(sample_png), *args])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("error: ") and message in err.lower()
    assert "Loading" not in err


def test_missing_model_is_a_clear_error(sample_png: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["ask", "--model", str(tmp_path / "missing" / "model"), "--image", str(sample_png), *QUESTION])
    assert status == 2
    assert "No model directory at" in capsys.readouterr().err


def test_tiny_model_command_writes_a_loadable_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tiny-model", str(tmp_path / "tiny")]) == 0
    assert "random" in capsys.readouterr().out
    assert (tmp_path / "tiny" / "model.safetensors").is_file()


def test_tiny_model_never_replaces_another_model_without_force(
    tmp_path: Path, formatted_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's app section builds the warm-started model: building the plain one over it is refused."""
    import shutil

    from medvlm.cli import tiny_model_main

    target = tmp_path / "tiny-model"
    shutil.copytree(formatted_model_dir, target)
    weights = (target / "model.safetensors").read_bytes()
    assert tiny_model_main([str(target)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {target} already holds the format-warm-started tiny test model (seed 0)")
    assert "Pass --force" in err and (target / "model.safetensors").read_bytes() == weights
    assert tiny_model_main([str(target), "--format-warm-start"]) == 0  # the very model asked for: left as it is
    assert "already holds the format-warm-started tiny test model (seed 0); nothing written" in capsys.readouterr().out
    assert (target / "model.safetensors").read_bytes() == weights
    assert tiny_model_main([str(target), "--force"]) == 0
    assert "format_warm_start" not in json.loads((target / "medvlm.json").read_text())
    assert (target / "model.safetensors").read_bytes() != weights

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    assert tiny_model_main([str(notes), "--force"]) == 2  # not a model: never deleted
    assert "holds files that are not a model" in capsys.readouterr().err and (notes / "todo.txt").exists()


def test_an_elongated_image_is_one_error_line_before_the_model_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    strip = tmp_path / "strip.png"
    Image.new("L", (10000, 1)).save(strip)
    status = main(["ask", "--model", str(tmp_path / "no-model-needed"), "--image", str(strip), *QUESTION])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and "Traceback" not in "\n".join(err)
    assert err[-1].startswith("error: This image is 10,000 x 1 pixels: one side is more than 200 times the other")


HEAVY = ("torch", "gradio", "trl")
ENTRY_POINTS = [
    ("medvlm", ["ask", "--help"]),
    ("medvlm-tiny-model", ["--help"]),
    ("train.evaluate", ["--help"]),
    ("train.grpo", ["--help"]),
    ("app", ["--help"]),
]


@pytest.mark.parametrize(("module", "arguments"), ENTRY_POINTS, ids=[module for module, _ in ENTRY_POINTS])
def test_help_answers_before_torch_gradio_or_trl_are_imported(module: str, arguments: list[str]) -> None:
    """``--help`` must not cost the 5-10 s of importing torch and friends: the modules are checked, not the clock."""
    if module == "medvlm-tiny-model":  # the console script
        code = "import sys; from medvlm.cli import tiny_model_main; sys.exit(tiny_model_main(sys.argv[1:]))"
    else:
        code = f"import runpy, sys; runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
    probe = (
        f"import atexit, sys; atexit.register(lambda: print('LOADED', [m for m in {HEAVY!r} if m in sys.modules], "
        f"file=sys.stderr)); {code}"
    )
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", probe, *arguments], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout
    assert "LOADED []" in result.stderr, result.stderr[-500:]


def offline_env(tmp_path: Path) -> dict[str, str]:
    """A Hub endpoint that refuses connections (port 9) and an empty cache of our own."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("HF_")}
    return {**env, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf-home"), "PYTHONUNBUFFERED": "1"}


def test_without_network_a_hub_model_fails_at_once_with_what_to_do(tmp_path: Path, sample_png: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "medvlm", "ask", "--model", "someorg/somemodel", "--image", str(sample_png), *QUESTION],
        capture_output=True,
        text=True,
        timeout=120,
        env=offline_env(tmp_path),
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "Retrying" not in result.stderr and len(lines) <= 3, result.stderr[-1500:]
    assert lines[-1].startswith("error: The Hugging Face Hub (http://127.0.0.1:9) cannot be reached from this machine")
    assert "HF_HUB_OFFLINE=1" in lines[-1] and "hf download someorg/somemodel" in lines[-1]


def app_started_offline(tmp_path: Path, model_id: str) -> tuple[str, str]:
    """The app started with ``HF_HUB_OFFLINE=1`` on ``model_id`` (its cache in ``tmp_path``): its error and banner."""
    code = (
        "from medvlm.ui import AppConfig, Workbench; "
        "bench = Workbench.start(AppConfig(model={model!r}, data_dir={data!r})); "
        "print(bench.load_error); print(bench.banner())"
    ).format(model=model_id, data=str(tmp_path / "data"))
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**offline_env(tmp_path), "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    error, banner = result.stdout.strip().splitlines()[-2:]
    assert "offline mode is on" in banner and "your network" not in banner and "Check the model id" not in banner
    assert f"hf download {model_id}" in error and "unset HF_HUB_OFFLINE" in error
    return error, banner


def test_in_offline_mode_a_model_not_cached_is_said_to_be_missing_because_of_offline_mode(tmp_path: Path) -> None:
    """HF_HUB_OFFLINE=1 and a model never downloaded: the app's banner names offline mode, not the id or network."""
    error, _ = app_started_offline(tmp_path, "someorg/somemodel")
    assert error.startswith("The Hugging Face Hub's offline mode is on (HF_HUB_OFFLINE=1), and someorg/somemodel is")
    assert "not in the local cache" in error


def test_in_offline_mode_a_model_only_partly_cached_is_blamed_on_offline_mode_not_the_network(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """A download cut short (only config.json cached): the cache was all there was to read, so no "your network"."""
    repo = tmp_path / "hf-home" / "hub" / "models--someorg--partial"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_bytes((tiny_model_dir / "config.json").read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    error, _ = app_started_offline(tmp_path, "someorg/partial")
    assert error.startswith("Could not load someorg/partial: ")
    assert "The Hugging Face Hub's offline mode is on (HF_HUB_OFFLINE=1), so only the local cache (" in error
    assert "where someorg/partial may be incomplete" in error


def test_without_network_a_cached_hub_model_loads_from_the_cache(
    tmp_path: Path, tiny_model_dir: Path, sample_png: Path
) -> None:
    import shutil

    commit = "0" * 40
    repo = tmp_path / "hf-home" / "hub" / "models--someorg--tiny"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "medvlm",
            "ask",
            "--model",
            "someorg/tiny",
            "--image",
            str(sample_png),
            *QUESTION,
            "--max-new-tokens",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=offline_env(tmp_path),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Retrying" not in result.stderr and "using the copy of someorg/tiny in the local cache" in result.stderr
    assert "4 new tokens" in result.stdout
