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


def _import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere (lazily too; typing-only imports excepted)."""
    import ast

    modules = {}
    for path in [*ROOT.glob("medvlm/**/*.py"), *ROOT.glob("train/**/*.py")]:
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path

    def imported(path: Path) -> set[str]:
        found: set[str] = set()

        class Visitor(ast.NodeVisitor):
            def visit_If(self, node: ast.If) -> None:
                if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                    self.generic_visit(node)

            def visit_Import(self, node: ast.Import) -> None:
                found.update(alias.name for alias in node.names)

            def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
                if node.module:
                    found.add(node.module)
                    found.update(f"{node.module}.{alias.name}" for alias in node.names)

        Visitor().visit(ast.parse(path.read_text()))
        return found

    return {
        name: {dep for dep in imported(path) if dep in modules and dep != name and not dep.startswith(name + ".")}
        for name, path in modules.items()
    }


def test_no_import_cycles_and_the_library_never_imports_train() -> None:
    graph = _import_graph()
    cycles = []

    def walk(start: str, node: str, path: list[str]) -> None:
        for dep in graph[node]:
            if dep == start:
                cycles.append(" -> ".join([*path, dep]))
            elif dep > start and dep not in path:
                walk(start, dep, [*path, dep])

    for module in sorted(graph):
        walk(module, module, [module])
    assert cycles == []
    assert not [
        f"{name} -> {dep}"
        for name, deps in graph.items()
        if name.startswith("medvlm")
        for dep in deps
        if dep.startswith("train")
    ]
    assert not {"train.data", "medvlm.vqa_records"} & set(graph["train.rewards"])  # the parser, not the loaders
