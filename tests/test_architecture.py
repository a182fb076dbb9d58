"""The shape the code keeps, read from the source: no import cycle, no tab importing another, every event of the
UI wired by name, no long function in the UI, and one kind lookup for campaigns.

These read the files (``ast``), so they are fast and name the offending line; each fails on the
code as it was before issue 23 (store <-> exports, the Campaigns tab importing the Ask tab's
handlers, a 380-line tab function, outputs listed by position).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UI = ROOT / "medvlm" / "ui"
TABS = ("ask", "campaigns", "reviews")
MAX_UI_FUNCTION_LINES = 150
EVENTS = {"click", "change", "input", "upload", "select", "release", "submit", "blur", "load", "then", "expand", "on"}
"""Gradio's event listeners (and ``gr.on``): their second and third arguments are the inputs and outputs."""


def _modules() -> dict[str, Path]:
    found = {}
    for package in ("medvlm", "train"):
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules ``path`` imports: at module level, in a function, or for type checking (a cycle of
    types is a cycle of design), with the packages each import runs on the way (``a.b.c`` runs ``a.b``)."""

    def walk(nodes: list[ast.stmt]) -> Iterator[str]:
        for node in nodes:
            if isinstance(node, ast.Import):
                yield from (alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                yield node.module
                yield from (f"{node.module}.{alias.name}" for alias in node.names)
            for field in ("body", "orelse", "finalbody", "handlers"):
                children = getattr(node, field, None)
                if isinstance(children, list):
                    yield from walk([child for child in children if isinstance(child, ast.stmt | ast.ExceptHandler)])

    own = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    found = set()
    for name in walk(ast.parse(path.read_text(encoding="utf-8")).body):
        parts = name.split(".")
        found.update(".".join(parts[:end]) for end in range(1, len(parts) + 1))
    # A package's own modules run its __init__ first, which is not an import of theirs.
    return {name for name in found if name in known and not own.startswith(name + ".")}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return groups


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {name: _imports(path, known) - {name} for name, path in known.items()}


def test_no_module_of_the_project_imports_itself_through_others() -> None:
    assert _cycles(_graph()) == []
    # The check finds a cycle when there is one.
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_library_never_imports_train_and_the_rewards_only_the_parser() -> None:
    """``train`` stands on ``medvlm`` for the prompt and the parsing, never the other way round; the reward
    functions read completions, not datasets."""
    graph = _graph()
    assert [f"{name} -> {dep}" for name, deps in graph.items() if name.startswith("medvlm") for dep in deps
            if dep.startswith("train")] == []  # fmt: skip
    assert "medvlm.parsing" in graph["train.rewards"]
    assert not {"train.data", "medvlm.vqa_records"} & graph["train.rewards"]


@pytest.mark.parametrize("tab", TABS)
def test_no_tab_imports_another(tab: str) -> None:
    """What tabs share lives beside them in ui/ (cases, render, viewer, events, inputs), never in another tab."""
    known = _modules()
    assert (UI / tab / "layout.py").is_file()
    others = tuple(f"medvlm.ui.{other}" for other in TABS if other != tab)
    offending = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in (UI / tab).rglob("*.py")
        for name in _imports(path, known)
        if name.startswith(others)
    }
    assert not offending


def _functions(tree: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    yield from (node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef))


def test_no_function_in_the_ui_is_over_150_lines() -> None:
    long = {
        f"{path.relative_to(ROOT)}:{function.lineno} {function.name} ({function.end_lineno - function.lineno + 1})"
        for path in UI.rglob("*.py")
        for function in _functions(ast.parse(path.read_text(encoding="utf-8")))
        if function.end_lineno - function.lineno + 1 > MAX_UI_FUNCTION_LINES
    }
    assert not long


def _event_calls(tree: ast.AST) -> Iterator[ast.Call]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in EVENTS:
            yield node


def test_every_event_in_the_ui_is_wired_by_name() -> None:
    """No inputs or outputs written as a list of components: they come from the handler's parameters
    (``inputs_of``) and the event's NamedTuple, or the one component's name (``outputs_of``)."""
    positional = set()
    calls = 0
    for path in UI.rglob("*.py"):
        for call in _event_calls(ast.parse(path.read_text(encoding="utf-8"))):
            calls += 1
            wiring = call.args[1:3] + [
                keyword.value for keyword in call.keywords if keyword.arg in ("inputs", "outputs")
            ]
            if any(isinstance(argument, ast.List | ast.Tuple) and argument.elts for argument in wiring):
                positional.add(f"{path.relative_to(ROOT)}:{call.lineno}")
    assert calls > 40  # the check reads the layouts' events (the tabs register over fifty)
    assert not positional


def test_a_campaigns_kind_is_asked_for_in_one_place() -> None:
    """The Campaigns tab's handlers look the kind up once (``CampaignHandlers.kind``), not in every handler."""
    checks = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in (UI / "campaigns").rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Compare) and "kind" in ast.unparse(node.left) and "comparison" in ast.unparse(node)
    ]
    assert checks == []
