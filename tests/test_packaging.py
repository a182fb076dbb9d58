"""Packaging facts that break silently: the Space's requirements and the README's promises."""

from __future__ import annotations

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent


def _requirements() -> list[str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_space_requirements_match_pyproject_dependencies() -> None:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert _requirements() == dependencies


def test_torchvision_is_not_a_dependency() -> None:
    assert not any(requirement.startswith("torchvision") for requirement in _requirements())


def test_readme_opens_with_the_two_setup_commands_and_ci_runs_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text()
    body = readme.split("---", 2)[2] if readme.startswith("---") else readme  # skip a Space card's front matter
    first_block = body.split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert len(commands) == 2
    assert commands[0].endswith("python app.py")
    test_command = commands[1]
    assert test_command.endswith("python -m pytest")
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command in ci


def test_ci_lints_with_the_ruff_version_the_tests_install() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pinned = next(item for item in pyproject["project"]["optional-dependencies"]["test"] if item.startswith("ruff"))
    ci = (ROOT / ".ci" / "run").read_text()
    assert f'pip install -q "{pinned}"' in ci
    assert ci.index("ruff check .") < ci.index("python -m pytest") and "ruff format --check ." in ci
