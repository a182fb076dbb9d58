"""The README's commands, run as written: the ones that need no weights, no GPU and no network.

Each command below must appear verbatim in README.md or train/README.md (code blocks, with line
continuations joined and comments dropped), so the README cannot drift from the code: change a
command there and this test fails until it is changed here too, and runs again.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
READMES = (ROOT / "README.md", ROOT / "train" / "README.md")

RUNNABLE = [
    "medvlm-tiny-model --format-warm-start ./tiny-model",
    'medvlm ask --model ./tiny-model --image assets/ct_head.dcm --question "Which?" --option A --option B',
    "python -m train.grpo --config train/recipes/tiny_cpu_smoke.yaml --model_name_or_path ./tiny-model --dataset_name "
    "assets/questions.json",
    "python -m train.evaluate --model ./tiny-model --data assets/questions.json --output_dir outputs/eval-tiny",
]


def readme_commands() -> list[str]:
    """Every command in the READMEs' bash blocks: continuations joined, comments and prompts dropped."""
    commands = []
    for readme in READMES:
        for block in re.findall(r"```bash\n(.*?)```", readme.read_text(), re.DOTALL):
            for command in re.sub(r"\\\n\s*", " ", block).splitlines():
                words = shlex.split(command, comments=True)
                if words:
                    commands.append(shlex.join(words))
    return commands


def test_every_runnable_command_is_in_a_readme() -> None:
    documented = readme_commands()
    for command in RUNNABLE:
        assert shlex.join(shlex.split(command)) in documented, f"not in the README any more: {command}"


def test_every_mention_of_the_tiny_model_command_is_the_readmes_one() -> None:
    """One spelling builds the tiny model in the READMEs, hints and docstrings alike, so following any of them
    never builds another model over the one the app section built (the plain random model answered 0/6)."""
    listed = subprocess.run(["git", "ls-files", "*.py", "*.md", "*.yaml"], cwd=ROOT, capture_output=True, text=True)
    found: dict[str, list[str]] = {}
    for name in listed.stdout.split():
        for match in re.finditer(r"medvlm[- ]tiny-model[^\n`\"']*?\./tiny-model", (ROOT / name).read_text()):
            found.setdefault(match.group().replace("medvlm tiny-model", "medvlm-tiny-model"), []).append(name)
    assert "README.md" in found.get(RUNNABLE[0], []), found
    assert set(found) == {RUNNABLE[0]}, found


OUTPUT_FLAGS = ("--data-dir", "--to", "--output_dir", "--output-dir")


def test_what_the_readme_commands_write_into_the_checkout_is_ignored_by_git() -> None:
    """Reviews, test models, runs and exports made by following the README never show up as changes to commit."""
    written = {"medvlm-data"}  # the app's default data folder
    for command in readme_commands():
        words = shlex.split(command)
        written.update(after for flag, after in zip(words, words[1:], strict=False) if flag in OUTPUT_FLAGS)
        if words[0] == "medvlm-tiny-model":
            written.update(word for word in words[1:] if not word.startswith("-"))
    assert {"./reviews", "./tiny-model", "exports/round1", "runs/r1"} <= written  # what the README writes today
    for folder in sorted(written):
        path = f"{folder.removeprefix('./').rstrip('/')}/some-file"
        done = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT, capture_output=True)
        assert done.returncode == 0, f"{folder} (written by a README command) is not in .gitignore"


@pytest.mark.parametrize(
    ("named", "sentence"),
    [
        (
            "",
            "The browser tests need Chromium and none was found: install it (Debian/Ubuntu: apt-get install chromium)",
        ),
        (
            "/opt/no-such/chromium",
            "MEDVLM_CHROMIUM names /opt/no-such/chromium, which is not a program that can be run",
        ),
    ],
    ids=["none-installed", "a-wrong-MEDVLM_CHROMIUM"],
)
def test_the_test_command_without_chromium_stops_once_saying_how_to_get_it(named: str, sentence: str) -> None:
    """On a machine without Chromium: one sentence before any test, not one failure per browser test."""
    env = {**os.environ, "PATH": str(Path(sys.executable).parent), "MEDVLM_CHROMIUM": named}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_browser.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    said = done.stdout + done.stderr
    assert done.returncode == 4, said
    assert sentence in said and "MEDVLM_CHROMIUM" in said, said
    assert "no tests ran" in said and "FAILED" not in said and "ERROR" not in said


def test_without_the_package_registry_the_vocabulary_fetch_says_what_to_do_in_one_sentence(tmp_path: Path) -> None:
    """pip cannot reach any index: a sentence naming the package and MEDVLM_QWEN2_VOCAB, not pip's traceback."""
    unreachable = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    unreachable |= {"PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_RETRIES": "0"}
    code = (
        "import sys; from pathlib import Path; from bench.qwen2_vocab import VocabularyUnavailable, fetch\n"
        "try:\n    fetch(Path(sys.argv[1]))\nexcept VocabularyUnavailable as error:\n    print(error)"
    )
    target = tmp_path / "ggml-vocab-qwen2.gguf"
    done = subprocess.run(
        [sys.executable, "-c", code, str(target)],
        cwd=ROOT,
        env=unreachable,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and done.stdout.count("\n") == 1, done.stdout + done.stderr
    assert done.stdout.startswith(
        "The real Qwen2 vocabulary the tests need could not be fetched (pip download llama-cpp-python==0.3.36: ERROR: "
    )
    assert done.stdout.rstrip().endswith(
        "run the tests once where the package registry can be reached, or set MEDVLM_QWEN2_VOCAB to a local copy of "
        "ggml-vocab-qwen2.gguf."
    )
    assert (
        "fetching ggml-vocab-qwen2.gguf from the llama-cpp-python==0.3.36 source distribution on PyPI" in done.stderr
    )
    assert "Traceback" not in done.stderr and not target.exists()


@pytest.mark.slow
def test_the_vocabulary_the_tests_need_is_prepared_before_them_saying_so(tmp_path: Path) -> None:
    """No silent download or conversion inside a test: the run says where the vocabulary comes from, first."""
    from bench.qwen2_vocab import vocab_file

    env = {**os.environ, "MEDVLM_BENCH_CACHE": str(tmp_path / "cache"), "MEDVLM_QWEN2_VOCAB": str(vocab_file())}
    test = "tests/test_real_vocab.py::test_qwen2_vl_special_tokens_have_their_released_ids"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    said = done.stdout.index("The real Qwen2 vocabulary for the tests: found at")
    assert said < done.stdout.index("Qwen2 vocabulary ready in") < done.stdout.index("1 passed")
    assert (tmp_path / "cache" / "qwen2-vl-tokenizer" / "tokenizer.json").is_file()


@pytest.mark.slow
def test_the_readme_commands_run_as_written(tmp_path: Path) -> None:
    for folder in ("assets", "train"):  # what the commands name by relative path, as in a checkout
        (tmp_path / folder).symlink_to(ROOT / folder)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2", "TOKENIZERS_PARALLELISM": "false"}
    outputs = {}
    for command in RUNNABLE:
        words = shlex.split(command)
        if words[0] == "python":
            words[0] = sys.executable
        else:
            words[0] = shutil.which(words[0]) or pytest.fail(f"{words[0]} is not installed (pip install -e .)")
        done = subprocess.run(words, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        outputs[command] = done.stdout + done.stderr
    assert (tmp_path / "tiny-model" / "config.json").is_file()
    assert "Format followed:" in outputs[RUNNABLE[1]]
    assert (
        "Loaded 6 of 6 rows" in outputs[RUNNABLE[2]]
        and (tmp_path / "outputs" / "tiny-cpu-smoke" / "medvlm.json").is_file()
    )
    assert (tmp_path / "outputs" / "eval-tiny" / "report.md").is_file() and "Accuracy" in outputs[RUNNABLE[3]]
