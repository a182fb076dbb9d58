"""What changed between two models: two ``train.evaluate`` runs on the same questions, compared.

    python -m train.evaluate --model Qwen/Qwen2-VL-2B-Instruct --data test.json --output-dir runs/base
    python -m train.evaluate --model JZPeterPan/MedVLM-R1 --data test.json --output-dir runs/grpo
    python -m train.compare runs/base runs/grpo --output-dir runs/base-vs-grpo

The questions are matched by their ``id`` (questions in only one run are listed and left out).
For each model: accuracy overall, per modality and per question type, format compliance, mean
reasoning length (words), and how often each pre-check hint fires (:func:`medvlm.hints.reasoning_hints`:
how often a model's reasoning contradicts its own answer, or is superficial). Between them: the
questions that flipped (right to wrong, wrong to right), each with both completions, and McNemar's
exact test on the flips (are the two models' accuracies different beyond chance, on these questions?).

Outputs in ``--output-dir``: ``comparison.json`` (every number and every flip) and ``comparison.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medvlm.errors import MedVLMError
from medvlm.evaluation_runs import read_evaluation_samples
from medvlm.hints import HINT_FLAGS, reasoning_hints
from medvlm.probes import RATE_COLUMNS, probe_rates, probed_from_dict

EXIT_ERROR = 2
UNKNOWN_GROUP = "unknown"


@dataclass(frozen=True)
class Run:
    """One evaluation run: its name in the comparison and its samples by question id."""

    name: str
    samples: dict[str, dict[str, Any]]
    model: str
    folder: str = ""
    """The run's folder, recorded in ``comparison.json`` so that the app can import the comparison."""

    @classmethod
    def read(cls, folder: str | Path, name: str | None = None) -> Run:
        """The run written by ``train.evaluate --output-dir folder`` (its ``samples.jsonl``)."""
        path = Path(folder) / "samples.jsonl"
        if not path.is_file():
            raise MedVLMError(f"There is no samples.jsonl in {folder}: pass the --output-dir of a train.evaluate run.")
        samples: dict[str, dict[str, Any]] = {}
        for number, sample in enumerate(read_evaluation_samples(path), start=1):
            if "id" not in sample or "correct" not in sample:
                raise MedVLMError(f"Line {number} of {path} has no id or correct field: is it from train.evaluate?")
            if str(sample["id"]) in samples:
                raise MedVLMError(f"Question {sample['id']} appears twice in {path}.")
            samples[str(sample["id"])] = sample
        model = str((next(iter(samples.values())).get("model") or {}).get("model") or folder)
        return cls(name or Path(folder).name, samples, model, str(Path(folder).resolve()))


def mcnemar_exact(right_to_wrong: int, wrong_to_right: int) -> float:
    """Two-sided exact McNemar p-value: the flips as a fair coin's tosses (binomial, p = 1/2).

    >>> mcnemar_exact(0, 0), round(mcnemar_exact(1, 9), 4), mcnemar_exact(5, 5)
    (1.0, 0.0215, 1.0)
    """
    flips = right_to_wrong + wrong_to_right
    if flips == 0:
        return 1.0
    tail = sum(math.comb(flips, k) for k in range(min(right_to_wrong, wrong_to_right) + 1)) / 2**flips
    return min(1.0, 2 * tail)


def compare(first: Run, second: Run) -> dict[str, Any]:
    """The comparison of two runs on the questions they share (``comparison.json``'s content)."""
    shared = [question for question in first.samples if question in second.samples]
    if not shared:
        raise MedVLMError(f"{first.name} and {second.name} share no question id: were they run on the same data?")
    flips: dict[str, list[dict[str, Any]]] = {"right_to_wrong": [], "wrong_to_right": []}
    for question in shared:
        before, after = first.samples[question], second.samples[question]
        if bool(before["correct"]) == bool(after["correct"]):
            continue
        flips["right_to_wrong" if before["correct"] else "wrong_to_right"].append(
            {
                "id": question,
                "question": before["question"],
                "options": before["options"],
                "correct_answer": before.get("solution") or before.get("correct_answer"),
                "modality": before.get("modality"),
                "question_type": before.get("question_type"),
                first.name: {"letter": before.get("letter"), "completion": before["completion"]},
                second.name: {"letter": after.get("letter"), "completion": after["completion"]},
            }
        )
    return {
        "models": {run.name: run.model for run in (first, second)},
        "runs": {run.name: run.folder for run in (first, second)},
        "questions": len(shared),
        "only_in": {
            run.name: sorted(set(run.samples) - set(other.samples))
            for run, other in ((first, second), (second, first))
        },
        "per_model": {run.name: _summary([run.samples[question] for question in shared]) for run in (first, second)},
        "flips": flips,
        "mcnemar": {
            "right_to_wrong": len(flips["right_to_wrong"]),
            "wrong_to_right": len(flips["wrong_to_right"]),
            "p_value": mcnemar_exact(len(flips["right_to_wrong"]), len(flips["wrong_to_right"])),
            "test": "exact (binomial) McNemar, two-sided, on the questions answered right by exactly one model",
        },
    }


def _summary(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    hints: dict[str, int] = dict.fromkeys(HINT_FLAGS, 0)
    for sample in samples:
        for kind in {
            hint.kind for hint in reasoning_hints(sample["completion"], sample["question"], sample["options"])
        }:
            hints[kind] += 1
    return {
        **_score(samples),
        "format_compliance": sum(bool(sample.get("format_ok")) for sample in samples) / len(samples),
        "mean_reasoning_words": sum(len(str(sample.get("reasoning") or "").split()) for sample in samples)
        / len(samples),
        "hint_rates": {kind: count / len(samples) for kind, count in hints.items()},
        "by_modality": _grouped(samples, "modality"),
        "by_question_type": _grouped(samples, "question_type"),
        **_probes(samples),
    }


def _probes(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The probes' rates (``train.evaluate --probes``), overall and per modality, when the run has them."""
    probed = [sample for sample in samples if sample.get("probes")]
    if not probed:
        return {}

    def rates(group: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return probe_rates(
            [
                probed_from_dict(
                    sample["probes"],
                    sample.get("solution") or sample.get("correct_answer"),
                    sample.get("letter"),
                    sample["completion"],
                )
                for sample in group
            ]
        )

    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for sample in probed:
        groups[sample.get("modality") or UNKNOWN_GROUP].append(sample)
    return {
        "probes": {"overall": rates(probed), "by_modality": {name: rates(groups[name]) for name in sorted(groups)}}
    }


def _score(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    correct = sum(bool(sample["correct"]) for sample in samples)
    return {"n": len(samples), "correct": correct, "accuracy": correct / len(samples)}


def _grouped(samples: Sequence[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for sample in samples:
        groups[sample.get(key) or UNKNOWN_GROUP].append(sample)
    return {name: _score(groups[name]) for name in sorted(groups)}


def render_markdown(report: dict[str, Any]) -> str:
    """``comparison.md``: the same numbers as tables, and every flip with both completions."""
    first, second = report["models"]
    per = report["per_model"]
    test = report["mcnemar"]
    lines = [
        f"# {first} vs {second}",
        "",
        f"{report['questions']} questions in both runs ("
        + ", ".join(f"{name}: {model}" for name, model in report["models"].items())
        + ").",
        "",
        f"| | {first} | {second} |",
        "| --- | ---: | ---: |",
        f"| accuracy | {per[first]['accuracy']:.2%} | {per[second]['accuracy']:.2%} |",
        f"| format compliance | {per[first]['format_compliance']:.2%} | {per[second]['format_compliance']:.2%} |",
        f"| mean reasoning length (words) | {per[first]['mean_reasoning_words']:.1f} | "
        f"{per[second]['mean_reasoning_words']:.1f} |",
        *(
            f"| hint: {kind.replace('_', ' ')} | {per[first]['hint_rates'][kind]:.2%} | "
            f"{per[second]['hint_rates'][kind]:.2%} |"
            for kind in HINT_FLAGS
        ),
        "",
        f"Flips: {test['right_to_wrong']} right to wrong, {test['wrong_to_right']} wrong to right; "
        f"McNemar's exact test p = {test['p_value']:.4g}.",
    ]
    lines += _probe_rows(first, second, per)
    for key, title in (("by_modality", "modality"), ("by_question_type", "question type")):
        groups = sorted(set(per[first][key]) | set(per[second][key]))
        lines += ["", f"## By {title}", "", f"| {title} | n | {first} | {second} |", "| --- | ---: | ---: | ---: |"]
        for group in groups:
            one, two = per[first][key].get(group), per[second][key].get(group)
            lines.append(
                f"| {group} | {(one or two)['n']} | {one['accuracy'] if one else 0:.2%} | "
                f"{two['accuracy'] if two else 0:.2%} |"
            )
    for key, title in (("right_to_wrong", "Right to wrong"), ("wrong_to_right", "Wrong to right")):
        lines += ["", f"## {title} ({len(report['flips'][key])})"]
        for flip in report["flips"][key]:
            lines += [
                "",
                f"### {flip['id']}: {flip['question']} (correct: {flip['correct_answer']})",
                "",
                *(f"- **{name}** ({flip[name]['letter'] or 'no answer'}): `{_one_line(flip[name]['completion'])}`"
                  for name in (first, second)),
            ]  # fmt: skip
    return "\n".join(lines) + "\n"


def _probe_rows(first: str, second: str, per: dict[str, Any]) -> list[str]:
    """The probes table: did the second model use the image more or less than the first?"""
    if "probes" not in per[first] and "probes" not in per[second]:
        return []

    def cell(name: str, group: str | None, key: str, sub: str | None) -> str:
        probes = per[name].get("probes")
        rates = probes and (probes["overall"] if group is None else probes["by_modality"].get(group))
        value = rates and (rates[key][sub] if sub else rates[key])
        return "-" if value is None else f"{value:.2%}"

    lines = ["", "## Probes", "", "| | " + f"{first} | {second} |", "| --- | ---: | ---: |"]
    lines += [
        f"| {title} | {cell(first, None, key, sub)} | {cell(second, None, key, sub)} |"
        for key, sub, title in RATE_COLUMNS
    ]
    modalities = sorted(set().union(*(per[name].get("probes", {}).get("by_modality", {}) for name in (first, second))))
    if modalities:
        lines += ["", "| answer changed without its image | " + f"{first} | {second} |", "| --- | ---: | ---: |"]
        lines += [
            f"| modality: {group} | "
            + " | ".join(cell(name, group, "changed", "image") for name in (first, second))
            + " |"
            for group in modalities
        ]
    return lines


def write_comparison(report: dict[str, Any], output_dir: str | Path) -> dict[str, Path]:
    """Write ``comparison.json`` and ``comparison.md`` into ``output_dir``; return their paths."""
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"comparison.json": folder / "comparison.json", "comparison.md": folder / "comparison.md"}
    paths["comparison.json"].write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    paths["comparison.md"].write_text(render_markdown(report), encoding="utf-8")
    return paths


def _one_line(text: str) -> str:
    return " ".join(text.split()).replace("`", "'")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("first", type=Path, help="the first run's --output-dir (e.g. the base model)")
    parser.add_argument("second", type=Path, help="the second run's --output-dir (e.g. the GRPO model)")
    parser.add_argument("--output-dir", type=Path, required=True, help="where comparison.json and .md go")
    parser.add_argument("--names", nargs=2, metavar=("FIRST", "SECOND"), help="names in the report (default: folders)")
    args = parser.parse_args(argv)
    names = args.names or [None, None]
    try:
        first, second = Run.read(args.first, names[0]), Run.read(args.second, names[1])
        if first.name == second.name:
            raise MedVLMError(f"Both runs are called {first.name!r}; give them names with --names.")
        report = compare(first, second)
    except MedVLMError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    paths = write_comparison(report, args.output_dir)
    test = report["mcnemar"]
    print(
        f"{first.name} {report['per_model'][first.name]['accuracy']:.2%} vs {second.name} "
        f"{report['per_model'][second.name]['accuracy']:.2%} on {report['questions']} questions; "
        f"{test['right_to_wrong']} right to wrong, {test['wrong_to_right']} wrong to right (McNemar p = "
        f"{test['p_value']:.4g}); report in {paths['comparison.md']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
