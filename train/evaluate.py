"""Evaluate a model on multiple-choice medical VQA with the papers' protocol; write a report.

    python -m train.evaluate --model JZPeterPan/MedVLM-R1 --data MRI_CT_XRAY_300each_dataset.json \\
        --data-root ./MedVLM-R1 --output-dir outputs/eval-medvlm-r1
    python -m train.evaluate --model ./outputs/my-grpo-run \\
        --data "Splits/modality/test/CT(Computed Tomography)_test.json" \\
        --data-root ./OmniMedVQA --max-new-tokens 256 --batch-size 64          # Med-R1's settings

**Protocol** (MedVLM-R1 and Med-R1): greedy decoding, 512 new tokens (Med-R1: 256; ``--max-new-tokens``),
the answer read from the completion with :mod:`medvlm.parsing` (``final=True``), the same reader the
app and the ``accuracy`` reward use; an unreadable answer counts as wrong; accuracy = correct / number of
questions evaluated, overall, per modality and per question type. Rows the loader skips (missing image,
answer not among the options...) are *not* in that denominator: they are listed in the report with their
reasons, and ``accuracy_with_skipped_as_wrong`` gives the figure as if each had been answered wrongly.

**Generation** runs in batches (``--batch-size``), left-padded by :func:`medvlm.streaming.prepare_inputs`,
so every row's new tokens start at the same position; ``--batch-size 1`` is the same code with batches of
one (the original MedVLM-R1 evaluation). ``--sample --temperature T --top-p P --seed S`` switch to sampling,
and the values given are the values used: they go to ``generate`` through
:meth:`GenerationSettings.generate_kwargs` and nothing overrides them (the original script passed a
``generation_config`` *and* hard-coded ``do_sample=False``, so its sampling flags did nothing).

Outputs in ``--output-dir``: ``report.json`` (every number, the model's description, the data summary, the
settings, the timing), ``report.md`` (the same as tables) and ``samples.jsonl`` (one line per question, with
the field names of ``medvlm.annotations.ModelOutput`` so the app's Reviews tab can import it).
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image
from transformers import HfArgumentParser

from medvlm.annotations import ModelOutput
from medvlm.errors import MedVLMError
from medvlm.hints import HINT_FLAGS, reasoning_hints
from medvlm.parsing import ParsedCompletion
from medvlm.probes import (
    RATE_COLUMNS,
    ProbeAnswer,
    ProbeCase,
    ProbedSample,
    ProbeKind,
    ask_in_batches,
    parse_kinds,
    partner_for,
    probe_rates,
    probes_to_dict,
    summarize,
)
from medvlm.prompt import PromptStyle, as_style
from medvlm.published import DEFAULT_MODEL_ID
from medvlm.vqa_records import FORMATS, LoadReport, RecordSource, VQARecord, no_records_message

if TYPE_CHECKING:  # torch and the model code load when evaluating, not for --help
    from medvlm.model import LoadedModel
    from medvlm.streaming import GenerationSettings

EXIT_ERROR = 2
UNKNOWN_GROUP = "unknown"
"""Group label for records without a modality or question type."""


# -- results ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleResult:
    """The model's answer to one question, parsed."""

    record: VQARecord
    completion: str
    parsed: ParsedCompletion
    stop_reason: str
    """``"eos"`` (the model ended its turn) or ``"max_new_tokens"`` (cut off)."""
    new_tokens: int
    probes: tuple[ProbeAnswer, ...] = ()
    """The probes' answers (``--probes``), mapped back to the original letters."""

    @property
    def correct(self) -> bool:
        return self.parsed.letter == self.record.answer

    @property
    def probed(self) -> ProbedSample:
        """This sample as :func:`medvlm.probes.probe_rates` counts it."""
        return ProbedSample(
            self.record.answer, self.parsed.letter, self.probes, summarize(self.completion, self.probes)
        )

    @property
    def hints(self) -> list[str]:
        """The kinds of :func:`medvlm.hints.reasoning_hints` this completion raises (candidates for review)."""
        return [hint.kind for hint in reasoning_hints(self.completion, self.record.question, self.record.options)]

    def to_dict(
        self, *, model: dict[str, Any], settings: dict[str, Any], prompt_style: str, generated_at: str = ""
    ) -> dict[str, Any]:
        """One ``samples.jsonl`` line: :meth:`medvlm.annotations.ModelOutput.to_sample` owns the format."""
        record = self.record
        output = ModelOutput.answered(
            self.parsed,
            output_id="",
            image=None,
            image_metadata={},
            question=record.question,
            options=list(record.options),
            correct_answer=record.answer,
            stop_reason=self.stop_reason,
            model=model,
            settings=settings,
            prompt_style=prompt_style,
            timing=None,
            generated_at=generated_at,
            question_type=record.question_type,
        )
        return output.to_sample(
            image=str(record.image_path),
            id=record.id,
            solution=record.answer,
            correct=self.correct,
            modality=record.modality,
            new_tokens=self.new_tokens,
            hints=self.hints,
            **({"probes": probes_to_dict(self.probed)} if self.probes else {}),
        )


@dataclass(frozen=True)
class Score:
    """Accuracy and format compliance over a group of samples."""

    n: int
    correct: int
    format_ok: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def format_compliance(self) -> float:
        return self.format_ok / self.n if self.n else 0.0

    @classmethod
    def of(cls, samples: Sequence[SampleResult]) -> Score:
        return cls(
            n=len(samples), correct=sum(s.correct for s in samples), format_ok=sum(s.parsed.format_ok for s in samples)
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "accuracy": self.accuracy, "format_compliance": self.format_compliance}


@dataclass
class EvaluationResult:
    """Every sample's result, with what produced it and how long it took."""

    samples: list[SampleResult]
    model: dict[str, Any]
    """``LoadedModel.describe()``."""
    settings: GenerationSettings
    prompt_style: str
    batch_size: int
    elapsed_s: float
    generated_at: str = ""
    """When the run started (ISO-8601 UTC); every sample carries it, so the app stores one output per sample."""
    probe_kinds: tuple[str, ...] = ()
    probe_s: float = 0.0
    """Time spent on the probes (included in ``elapsed_s``)."""

    @property
    def overall(self) -> Score:
        return Score.of(self.samples)

    @property
    def by_modality(self) -> dict[str, Score]:
        return {name: Score.of(group) for name, group in self._groups("modality").items()}

    @property
    def by_question_type(self) -> dict[str, Score]:
        return {name: Score.of(group) for name, group in self._groups("question_type").items()}

    def _groups(self, attribute: str) -> dict[str, list[SampleResult]]:
        groups: dict[str, list[SampleResult]] = defaultdict(list)
        for sample in self.samples:
            groups[getattr(sample.record, attribute) or UNKNOWN_GROUP].append(sample)
        return dict(sorted(groups.items()))

    def probe_report(self) -> dict[str, Any]:
        """The probes' rates overall, per modality and per question type (``report.json``'s ``probes``)."""
        grouped = {
            key: {name: probe_rates([s.probed for s in group]) for name, group in self._groups(attribute).items()}
            for key, attribute in (("by_modality", "modality"), ("by_question_type", "question_type"))
        }
        return {
            "kinds": list(self.probe_kinds),
            "overall": probe_rates([sample.probed for sample in self.samples]),
            **grouped,
            "seconds": self.probe_s,
            "protocol": "each probe re-asks greedily with the run's token and pixel budgets; answers are mapped back "
            "to the original letters; 'changed' counts answers that differ from the model's own, among those where "
            "both name an option (one that names none is wrong in every accuracy and decides nothing)",
        }

    @property
    def hint_counts(self) -> dict[str, int]:
        """How many completions raise each pre-check hint: where reviewers should look first."""
        counts = dict.fromkeys(HINT_FLAGS, 0)
        for sample in self.samples:
            for kind in set(sample.hints):
                counts[kind] += 1
        return counts

    @property
    def timing(self) -> dict[str, Any]:
        new_tokens = sum(sample.new_tokens for sample in self.samples)
        rate = lambda count: count / self.elapsed_s if self.elapsed_s > 0 else None  # noqa: E731
        return {
            "total_s": self.elapsed_s,
            "samples_per_s": rate(len(self.samples)),
            "new_tokens": new_tokens,
            "new_tokens_per_s": rate(new_tokens),
            "batch_size": self.batch_size,
        }

    def to_report(self, data: dict[str, Any] | None = None, load_report: LoadReport | None = None) -> dict[str, Any]:
        """The ``report.json`` content. ``data`` describes the data source; ``load_report`` its skipped rows."""
        score = self.overall
        overall = score.to_dict()
        if load_report is not None:
            overall["skipped_rows"] = sum(load_report.skipped.values())
            evaluated_and_skipped = score.n + overall["skipped_rows"]
            overall["accuracy_with_skipped_as_wrong"] = (
                score.correct / evaluated_and_skipped if evaluated_and_skipped else 0.0
            )
        return {
            "protocol": "accuracy = correct / questions evaluated; an unreadable answer counts as wrong; rows skipped "
            "while loading are listed under data.load_report and not in the denominator",
            "model": self.model,
            "data": {**(data or {}), **({"load_report": load_report.to_dict()} if load_report is not None else {})},
            "settings": {**self.settings.to_dict(), "prompt_style": self.prompt_style, "batch_size": self.batch_size},
            "overall": overall,
            "by_modality": {name: score.to_dict() for name, score in self.by_modality.items()},
            "by_question_type": {name: score.to_dict() for name, score in self.by_question_type.items()},
            "format_compliance": score.format_compliance,
            "unreadable_answers": sum(sample.parsed.letter is None for sample in self.samples),
            "reasoning_hints": self.hint_counts,
            "stopped_at_max_new_tokens": sum(sample.stop_reason == "max_new_tokens" for sample in self.samples),
            "timing": self.timing,
            **({"probes": self.probe_report()} if self.probe_kinds else {}),
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }


# -- generation ------------------------------------------------------------------------------------


def evaluate(
    loaded: LoadedModel,
    records: Sequence[VQARecord],
    *,
    batch_size: int = 16,
    settings: GenerationSettings | None = None,
    style: PromptStyle | str | None = None,
    progress: bool = True,
    probes: Sequence[ProbeKind | str] = (),
) -> EvaluationResult:
    """Generate an answer for every record, in batches, and parse it; nothing is written to disk.

    ``settings`` default to the paper's (greedy, 512 new tokens). With ``settings.seed`` the random
    generator is seeded once, before the first batch. ``progress`` shows a tqdm bar on stderr.
    ``probes`` (:mod:`medvlm.probes`) re-ask each batch's questions after its answers, on the same decoded images.
    """
    import torch
    from tqdm.auto import tqdm

    from medvlm.streaming import GenerationSettings

    settings = (settings or GenerationSettings()).validate()
    style = loaded.prompt_style if style is None else as_style(style)
    if batch_size < 1:
        raise MedVLMError(f"The batch size must be at least 1 (got {batch_size}).")
    if settings.seed is not None:
        torch.manual_seed(settings.seed)
    generated_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    started = time.perf_counter()
    samples: list[SampleResult] = []
    kinds = tuple(map(ProbeKind, probes))
    prober = _Prober(loaded, records, kinds, settings, style, batch_size) if kinds else None
    desc = "Evaluating and probing" if kinds else "Evaluating"
    with tqdm(total=len(records), desc=desc, unit="question", file=sys.stderr, disable=not progress) as bar:
        for start in range(0, len(records), batch_size):
            batch = records[start : start + batch_size]
            images = [_image(record) for record in batch]  # decoded once, for the answers and their probes
            answered = _answer_batch(loaded, batch, images, settings, style)
            samples.extend(prober.probe(answered, images) if prober else answered)
            bar.update(len(batch))
    return EvaluationResult(
        samples=samples,
        model=loaded.describe(),
        settings=settings,
        prompt_style=style.value,
        batch_size=batch_size,
        elapsed_s=time.perf_counter() - started,
        generated_at=generated_at,
        probe_kinds=tuple(kind.value for kind in kinds),
        probe_s=prober.seconds if prober else 0.0,
    )


def _image(record: VQARecord) -> Image.Image:
    from medvlm.images import load_image

    try:
        return load_image(record.image_path).image
    except MedVLMError as error:
        raise MedVLMError(f"Question {record.id}: the image {record.image_path} could not be read: {error}") from error


def _answer_batch(
    loaded: LoadedModel,
    batch: Sequence[VQARecord],
    images: Sequence[Image.Image],
    settings: GenerationSettings,
    style: PromptStyle,
) -> list[SampleResult]:
    from medvlm.streaming import answer_batch

    answers = answer_batch(
        loaded, images, [r.question for r in batch], [list(r.options) for r in batch], settings, style=style
    )
    return [
        SampleResult(record, answer.completion, answer.parsed, answer.stop_reason, answer.new_tokens)
        for record, answer in zip(batch, answers, strict=True)
    ]


class _Prober:
    """Each batch's probes right after its answers, on the images decoded for them
    (:func:`medvlm.probes.ask_in_batches`, in batches of ``batch_size``).

    The shuffled image is another record's of the same modality (:func:`medvlm.probes.partner_for`),
    chosen from the whole dataset and decoded when it is needed.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        records: Sequence[VQARecord],
        kinds: Sequence[ProbeKind],
        settings: GenerationSettings,
        style: PromptStyle,
        batch_size: int,
    ) -> None:
        self.loaded = loaded
        self.kinds = kinds
        self.settings = settings
        self.style = style
        self.batch_size = batch_size
        self.by_id = {record.id: record for record in records}
        self.pool = [(record.id, record.modality) for record in self.by_id.values()]
        self.seconds = 0.0
        """Time spent on the probes (part of the run's ``elapsed_s``)."""

    def probe(self, samples: Sequence[SampleResult], images: Sequence[Image.Image]) -> list[SampleResult]:
        """``samples`` with their probes' answers; ``images`` are theirs, in order."""
        from dataclasses import replace

        started = time.perf_counter()
        cases = []
        for sample, image in zip(samples, images, strict=True):
            record = sample.record
            partner = partner_for(record.id, record.modality, self.pool) if ProbeKind.SHUFFLE in self.kinds else None
            cases.append(
                ProbeCase(
                    image,
                    record.question,
                    record.options,
                    sample.completion,
                    self.style,
                    partner=_image(self.by_id[partner]) if partner is not None else None,
                    partner_id=partner,
                )
            )
        answers = ask_in_batches(self.loaded, cases, self.kinds, self.settings, self.batch_size)
        self.seconds += time.perf_counter() - started
        return [replace(sample, probes=found) for sample, found in zip(samples, answers, strict=True)]


# -- outputs ---------------------------------------------------------------------------------------


def write_outputs(
    result: EvaluationResult,
    output_dir: str | Path,
    *,
    data: dict[str, Any] | None = None,
    load_report: LoadReport | None = None,
) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and ``samples.jsonl`` into ``output_dir``; return their paths."""
    folder = Path(output_dir).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    report = result.to_report(data, load_report)
    paths = {
        "report.json": folder / "report.json",
        "report.md": folder / "report.md",
        "samples.jsonl": folder / "samples.jsonl",
    }
    paths["report.json"].write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    paths["report.md"].write_text(render_markdown(report), encoding="utf-8")
    settings = result.settings.to_dict()
    with paths["samples.jsonl"].open("w", encoding="utf-8") as handle:
        for sample in result.samples:
            line = sample.to_dict(
                model=result.model,
                settings=settings,
                prompt_style=result.prompt_style,
                generated_at=result.generated_at,
            )
            handle.write(json.dumps(line, ensure_ascii=False) + "\n")
    return paths


def render_markdown(report: dict[str, Any]) -> str:
    """``report.md``: the report's numbers as Markdown tables."""
    model, settings, timing = report["model"], report["settings"], report["timing"]
    decoding = (
        "greedy"
        if not settings["do_sample"]
        else f"sampling (temperature {settings['temperature']}, top-p {settings['top_p']}, seed {settings['seed']})"
    )
    lines = [
        f"# Evaluation of {model['model']}",
        "",
        f"- Model: `{model['model']}`"
        + (f" at `{model['revision']}`" if model.get("revision") else "")
        + (" (**random test weights**)" if model.get("random_weights") else ""),
        f"- Data: `{report['data'].get('source', '?')}`"
        + (f" -- {report['data']['load_report']['summary']}" if "load_report" in report["data"] else ""),
        f"- Decoding: {decoding}, at most {settings['max_new_tokens']} new tokens, prompt style "
        f"`{settings['prompt_style']}`, batch size {settings['batch_size']}",
        f"- {report['protocol']}.",
        "",
        "| group | n | correct | accuracy | format OK |",
        "| --- | ---: | ---: | ---: | ---: |",
        _row("**overall**", report["overall"]),
    ]
    for title, key in (("Modality", "by_modality"), ("Question type", "by_question_type")):
        lines += [
            "",
            f"## By {title.lower()}",
            "",
            f"| {title.lower()} | n | correct | accuracy | format OK |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        lines += [_row(name, score) for name, score in report[key].items()]
    overall = report["overall"]
    lines += [
        "",
        "## Notes",
        "",
        f"- Unreadable answers (counted wrong): {report['unreadable_answers']}; cut off at the token limit: "
        f"{report['stopped_at_max_new_tokens']}.",
        "- Pre-check hints (medvlm.hints; candidates for a reviewer, not verdicts): "
        + ", ".join(f"{kind.replace('_', ' ')} {count}" for kind, count in report["reasoning_hints"].items())
        + ".",
    ]
    if "skipped_rows" in overall:
        lines.append(
            f"- Rows skipped while loading: {overall['skipped_rows']}; accuracy counting them as wrong: "
            f"{overall['accuracy_with_skipped_as_wrong']:.2%}."
        )
    if "probes" in report:
        lines += _probe_tables(report["probes"])
    rate = timing["samples_per_s"]
    lines.append(
        f"- Time: {timing['total_s']:.1f} s"
        + (f", {rate:.2f} questions/s, {timing['new_tokens_per_s']:.1f} new tokens/s" if rate else "")
        + "."
    )
    return "\n".join(lines) + "\n"


def _probe_tables(probes: dict[str, Any]) -> list[str]:
    """The probes section of ``report.md``: one table, overall then per modality and question type."""

    def cell(rates: dict[str, Any], key: str, sub: str | None) -> str:
        value = rates[key][sub] if sub else rates[key]
        return "-" if value is None else f"{value:.2%}"

    lines = [
        "",
        f"## Probes ({', '.join(probes['kinds'])})",
        "",
        "Each question re-asked greedily: with a black image, another question's image of the same modality, the "
        "options rotated (answers mapped back). Evidence beside the reasoning, not verdicts on it.",
        "",
        "| group | n | " + " | ".join(title for *_, title in RATE_COLUMNS) + " |",
        "| --- | ---: |" + " ---: |" * len(RATE_COLUMNS),
    ]
    groups = [("**overall**", probes["overall"])]
    groups += [(f"modality: {name}", rates) for name, rates in probes["by_modality"].items()]
    groups += [(f"question type: {name}", rates) for name, rates in probes["by_question_type"].items()]
    for name, rates in groups:
        lines.append(
            f"| {name} | {rates['n']} | " + " | ".join(cell(rates, key, sub) for key, sub, _ in RATE_COLUMNS) + " |"
        )
    lines += ["", f"- Probe time: {probes['seconds']:.1f} s."]
    return lines


def _row(name: str, score: dict[str, Any]) -> str:
    return (
        f"| {name} | {score['n']} | {score['correct']} | {score['accuracy']:.2%} | {score['format_compliance']:.2%} |"
    )


# -- command line ----------------------------------------------------------------------------------


@dataclass
class EvaluateArguments:
    """``python -m train.evaluate --help`` lists these."""

    data: str = field(metadata={"help": "Data: a .json/.jsonl/.parquet file, a folder of them, or a Hub dataset id."})
    model: str = field(
        default=DEFAULT_MODEL_ID, metadata={"help": "Hub id, checkpoint directory or LoRA adapter directory."}
    )
    revision: str | None = field(default=None, metadata={"help": "Hub revision (branch, tag or commit) of --model."})
    format: str = field(default="auto", metadata={"help": "Data format.", "choices": ["auto", *FORMATS]})
    data_root: str | None = field(
        default=None,
        metadata={"help": "Folder that relative image paths start from; the data file's folder when not given."},
    )
    subset: str | None = field(
        default=None,
        metadata={"help": "Keep rows of this subset only, e.g. 'MR (Mag-netic Resonance Imaging)' (sic)."},
    )
    modality: str | None = field(
        default=None, metadata={"help": "Keep rows of this modality only (MR, CT, X-Ray, ...; any common spelling)."}
    )
    split: str = field(default="test", metadata={"help": "Split of a Hub dataset."})
    limit: int | None = field(default=None, metadata={"help": "Evaluate at most this many questions."})
    check_images: bool = field(
        default=True, metadata={"help": "Decode every image before the run, and skip and count the unreadable ones."}
    )
    batch_size: int = field(
        default=16, metadata={"help": "Questions per generate call (1 = one at a time, as MedVLM-R1 did)."}
    )
    max_new_tokens: int = field(default=512, metadata={"help": "New-token limit (MedVLM-R1: 512, Med-R1: 256)."})
    style: str | None = field(
        default=None,
        metadata={
            "help": "Prompt wording; by default the model's own: what its medvlm.json records, medvlm-exact for "
            "JZPeterPan/MedVLM-R1 (the wording of its paper's evaluation), else medvlm.",
            "choices": [s.value for s in PromptStyle],
        },
    )
    sample: bool = field(
        default=False, metadata={"help": "Sample instead of greedy decoding (the papers decode greedily)."}
    )
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (with --sample)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling top-p (with --sample)."})
    seed: int | None = field(default=None, metadata={"help": "Random seed, set once before the first batch."})
    max_pixels: int | None = field(
        default=None,
        metadata={
            "help": "Image-token budget in pixels (the recipe: 401408 = 512 tokens); the checkpoint's own when not "
            "given."
        },
    )
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, cuda:1, mps; automatic when not given."})
    dtype: str | None = field(
        default=None, metadata={"help": "bf16, fp16 or fp32; bf16 on CUDA and fp32 elsewhere when not given."}
    )
    output_dir: str = field(
        default="outputs/evaluation", metadata={"help": "Where report.json, report.md and samples.jsonl are written."}
    )
    probes: str | None = field(
        default=None,
        metadata={
            "help": "Also re-ask every question with these probes, comma-separated (medvlm.probes): blank (a black "
            "image), shuffle (another question's image of the same modality), rotate (the options rotated), no_think "
            "(without the reasoning instruction). E.g. --probes blank,shuffle,rotate."
        },
    )
    compare_model: str | None = field(
        default=None,
        metadata={
            "help": "Also evaluate this model on the same questions, one model in memory at a time: the runs go to "
            "<output_dir>/<model name>/ and their comparison (train.compare) to <output_dir>/comparison.md."
        },
    )

    def probe_kinds(self) -> tuple[ProbeKind, ...]:
        """``--probes`` read; an unknown name is a ``MedVLMError``."""
        try:
            return parse_kinds(self.probes or "")
        except ValueError as error:
            raise MedVLMError(f"--probes: {error}") from None

    def generation_settings(self) -> GenerationSettings:
        """The decoding settings; sampling values without ``--sample`` are refused, never silently ignored."""
        from medvlm.streaming import GenerationSettings

        return GenerationSettings.from_options(
            max_new_tokens=self.max_new_tokens,
            sample=self.sample,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            strict=True,
        )


def run(args: EvaluateArguments) -> EvaluationResult:
    """Load the data (first: a data mistake costs seconds, not a model load), the model, evaluate, write."""
    settings = args.generation_settings()
    args.probe_kinds()
    source = RecordSource(
        args.data,
        format=args.format,
        data_root=args.data_root,
        subset=args.subset,
        modality=args.modality,
        limit=args.limit,
        split=args.split,
        check_images=args.check_images,
    )
    records, load_report = source.load()
    print(load_report.summary(), file=sys.stderr, flush=True)
    if not records:
        raise MedVLMError(no_records_message(args.data, args.data_root, load_report, purpose="evaluate"))
    data = {**source.describe(), "source": args.data, "formats": sorted({record.source for record in records})}
    if args.compare_model is None:
        return _evaluate_model(args, args.model, records, settings, args.output_dir, data, load_report)
    from train.compare import Run, compare, write_comparison

    names = _run_names(args.model, args.compare_model)
    results = [
        _evaluate_model(args, model, records, settings, Path(args.output_dir) / name, data, load_report)
        for model, name in zip((args.model, args.compare_model), names, strict=True)
    ]
    report = compare(*(Run.read(Path(args.output_dir) / name, name) for name in names))
    print(f"Comparison in {write_comparison(report, args.output_dir)['comparison.md']}", flush=True)
    return results[0]


def _evaluate_model(
    args: EvaluateArguments,
    model: str,
    records: Sequence[VQARecord],
    settings: GenerationSettings,
    output_dir: str | Path,
    data: dict[str, Any],
    load_report: LoadReport,
) -> EvaluationResult:
    """Load one model, answer every record, write its report; the model is let go afterwards."""
    from medvlm.model import load_model

    loaded = load_model(
        model, revision=args.revision, device=args.device, dtype=args.dtype, max_pixels=args.max_pixels
    )
    if loaded.is_test_model:
        print("Note: this is the tiny random test model; its answers are random.", file=sys.stderr, flush=True)
    if args.style is None:
        print(
            f"Prompt wording: {loaded.prompt_style.value}, {loaded.prompt_style_reason} (--style changes it).",
            file=sys.stderr,
            flush=True,
        )
    result = evaluate(
        loaded, records, batch_size=args.batch_size, settings=settings, style=args.style, probes=args.probe_kinds()
    )
    paths = write_outputs(result, output_dir, data=data, load_report=load_report)
    overall = result.overall
    print(
        f"Accuracy {overall.accuracy:.2%} ({overall.correct}/{overall.n}), format compliance "
        f"{overall.format_compliance:.2%}; "
        f"report in {paths['report.md']}",
        flush=True,
    )
    if result.probe_kinds:
        print(probe_line(result.probe_report()["overall"]), flush=True)
    return result


def probe_line(rates: dict[str, Any]) -> str:
    """The probes' headline numbers in one line (the console, the report's notes)."""
    accuracy, changed = rates["accuracy"], rates["changed"]
    parts = [
        f"{name} {accuracy[key]:.2%}"
        for key, name in (("blank", "blank image"), ("shuffle", "shuffled image"), ("circular", "all rotations"))
        if accuracy.get(key) is not None
    ]
    line = "Probes: accuracy with " + ", ".join(parts) if parts else "Probes:"
    if changed["image"] is not None:
        line += f"; the answer changed without its image for {changed['image']:.2%}"
    if rates["rotation_consistency"] is not None:
        line += f"; rotation consistency {rates['rotation_consistency']:.2%}"
    if rates["invariant_with_visual_claims"] is not None:
        line += f"; image-invariant with visual claims {rates['invariant_with_visual_claims']:.2%}"
    return line + "."


def _run_names(first: str, second: str) -> tuple[str, str]:
    """Folder names for two models' runs: the last part of each id or path, made distinct."""
    names = [Path(model.rstrip("/")).name or "model" for model in (first, second)]
    if names[0] == names[1]:
        names = [f"{names[0]}-1", f"{names[1]}-2"]
    return names[0], names[1]


def build_parser() -> HfArgumentParser:
    """The command line of ``python -m train.evaluate``: one option per field of :class:`EvaluateArguments`."""
    parser = HfArgumentParser(EvaluateArguments, prog="python -m train.evaluate", description=__doc__.split("\n\n")[0])
    for action in parser._actions:  # HfArgumentParser gives the negative flag the positive one's help
        if "--no_check_images" in action.option_strings:
            action.help = (
                "Only check that each image file exists, without decoding it first: a faster start, but an "
                "unreadable image then stops the run at its batch instead of being skipped and counted."
            )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    (args,) = build_parser().parse_args_into_dataclasses(args=None if argv is None else list(argv))
    try:
        run(args)
    except MedVLMError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
