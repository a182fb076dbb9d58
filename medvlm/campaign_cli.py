"""``medvlm campaign``: set up and follow review campaigns from the terminal.

    medvlm campaign create "Chest CT round 1" --samples run/samples.jsonl --images data/ \\
        --reviews-per-output 3 [--guidelines guidelines.md] [--blind] [--data-dir DIR] [--by NAME]
    medvlm campaign create "Chest CT round 2" --data MRI_CT_XRAY_300each_dataset.json --data-root MedVLM-R1/ \\
        --model JZPeterPan/MedVLM-R1 --reviews-per-output 3 [--batch-size 8] [--max-new-tokens 512 ...] \\
        [--probes blank,shuffle,rotate [--hide-probes]]
    medvlm campaign generate "Chest CT round 2"      # continue an interrupted generation
    medvlm campaign create "Base vs GRPO" --comparison runs/base-vs-grpo --images data/ \\
        --reviews-per-output 3 --blind [--flips-only]    # pairs from train.compare, judged side by side
    medvlm campaign export "Chest CT round 1" --to exports/round1 [--push-to-hub me/round1]
    medvlm campaign list [--data-dir DIR]
    medvlm campaign progress "Chest CT round 1" [--json] [--data-dir DIR]

A campaign is made from a ``train.evaluate`` run (``--samples``), or from a dataset in any format
:mod:`medvlm.vqa_records` reads (``--data``) whose answers the model generates now, with a progress
bar, resumable (:mod:`medvlm.campaign_generation`): either way every reviewer sees the same
completions. A comparison campaign is made from ``train.compare``'s output (``--comparison``):
each question's two answers, judged side by side (:mod:`medvlm.annotations.comparison_campaigns`).
Outputs and images go into the data folder the app serves (``--data-dir``, default
``$MEDVLM_DATA_DIR`` or ``./medvlm-data``). See :mod:`medvlm.annotations.campaigns` for how
outputs are handed out.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from medvlm.cli_options import (
    add_device_options,
    add_generation_options,
    add_model_options,
    load_model_from,
    settings_from,
)
from medvlm.errors import MedVLMError
from medvlm.probes import parse_kinds
from medvlm.vqa_records import FORMATS

if TYPE_CHECKING:
    from medvlm.annotations.campaigns import Campaigns
    from medvlm.model import LoadedModel


def add_parser(commands: argparse._SubParsersAction) -> None:
    """The ``campaign`` command and its subcommands, on ``medvlm``'s parser."""
    campaign = commands.add_parser("campaign", help="set up and follow review campaigns (many reviewers, k each)")
    actions = campaign.add_subparsers(dest="action", required=True)

    create = actions.add_parser(
        "create", help="a campaign over a train.evaluate run's outputs, or a dataset answered now by a model"
    )
    create.add_argument("name", help="the campaign's name, as reviewers will see it")
    source = create.add_mutually_exclusive_group(required=True)
    source.add_argument("--samples", type=Path, help="a train.evaluate run's samples.jsonl")
    source.add_argument(
        "--data", help="a dataset (file, folder or Hub id, in a format medvlm.vqa_records reads) to answer now"
    )
    source.add_argument(
        "--comparison",
        type=Path,
        metavar="DIR",
        help="a train.compare --output-dir: a comparison campaign, each question's two answers judged side by side",
    )
    create.add_argument(
        "--images", type=Path, help="folder the samples' image paths are relative to (default: the samples' folder)"
    )
    create.add_argument(
        "--flips-only",
        action="store_true",
        help="with --comparison: only the questions one model got right and the other wrong",
    )
    dataset = create.add_argument_group("with --data")
    dataset.add_argument("--data-root", type=Path, help="folder the dataset's image paths are relative to")
    dataset.add_argument("--format", default="auto", choices=("auto", *FORMATS), help="the dataset's layout")
    dataset.add_argument("--split", default="test", help="split of a Hub dataset (default: %(default)s)")
    dataset.add_argument("--limit", type=int, help="answer only the first N questions")
    dataset.add_argument("--batch-size", type=int, default=8, help="questions answered at once (default: %(default)s)")
    dataset.add_argument(
        "--probes",
        help="also probe every answer as part of the generation, e.g. blank,shuffle,rotate (medvlm.probes): "
        "re-ask with a black image, another question's image of the same modality, the options rotated",
    )
    dataset.add_argument(
        "--hide-probes", action="store_true", help="keep the probes' results from reviewers (they are still stored)"
    )
    add_model_options(dataset)
    add_generation_options(create)
    create.add_argument(
        "--reviews-per-output", type=int, required=True, help="k: how many reviewers should review each output"
    )
    create.add_argument("--guidelines", type=Path, help="a Markdown file of guidelines shown to reviewers")
    create.add_argument("--blind", action="store_true", help="hide the model and the correct answer from reviewers")
    create.add_argument("--by", default="admin", help="who created it (recorded; default: %(default)s)")

    generate = actions.add_parser(
        "generate", help="continue generating a campaign's answers after an interruption (same model, settings)"
    )
    generate.add_argument("name")
    generate.add_argument("--revision", help="Hub revision of the campaign's model")
    add_device_options(generate)  # the decoding settings are the campaign's

    export = actions.add_parser("export", help="write a campaign as a datasets dataset with a card (and push it)")
    export.add_argument("name")
    export.add_argument("--to", required=True, type=Path, help="the folder to write (Parquet plus README.md)")
    export.add_argument(
        "--push-to-hub", metavar="REPO", help="also upload it to this private Hub dataset (needs HF_TOKEN)"
    )
    listing = actions.add_parser("list", help="the campaigns in the data folder, with their progress")
    progress = actions.add_parser("progress", help="how far one campaign is, overall and per reviewer")
    progress.add_argument("name")
    progress.add_argument("--json", action="store_true", help="print it as one JSON object")
    for sub in (create, generate, export, listing, progress):
        sub.add_argument("--data-dir", type=Path, help="the data folder (default: $MEDVLM_DATA_DIR or ./medvlm-data)")


def run(args: argparse.Namespace, *, out: TextIO) -> int:
    """Carry out ``medvlm campaign ...``; problems raise :class:`MedVLMError` (one line, status 2)."""
    from medvlm.annotations import AnnotationStore
    from medvlm.annotations.campaigns import Campaigns

    campaigns = Campaigns(AnnotationStore(args.data_dir))
    if args.action == "create" and args.data is not None:
        return _create_generated(campaigns, args, out=out)
    if args.action == "create" and args.comparison is not None:
        return _create_comparison(campaigns, args, out=out)
    if args.action == "generate":
        campaign = campaigns.get(args.name)
        plan = campaigns.generation(campaign.name)
        if plan is None:
            raise MedVLMError(f"The campaign {campaign.name!r} was made from an evaluation run: nothing to generate.")
        if plan.done:  # said before any model is loaded (minutes, gigabytes)
            print(
                f"{campaign.name}: all {plan.planned} answers are stored already; nothing to generate, reviewers "
                "can start.",
                file=out,
            )
            return 0
        return _generate(campaigns, campaign.name, load_model_from(args, plan.model), out=out)
    if args.action == "create":
        from medvlm.evaluation_runs import run_outputs

        if not args.samples.is_file():
            raise MedVLMError(f"There is no samples file at {args.samples}.")
        guidelines = _guidelines(args)
        outputs = run_outputs(args.samples, args.images or args.samples.parent)
        campaign = campaigns.create(
            args.name,
            outputs,
            reviews_per_output=args.reviews_per_output,
            guidelines=guidelines,
            blind=args.blind,
            created_by=args.by,
        )
        print(
            f"Created campaign {campaign.name!r}: {len(outputs)} outputs, {campaign.reviews_per_output} review(s) "
            f"wanted of each{', blind' if campaign.blind else ''}, in {campaigns.store.data_dir}.",
            file=out,
        )
        return 0
    if args.action == "export":
        from medvlm.annotations.campaign_export import export_campaign, push_to_hub

        folder = export_campaign(campaigns, args.name, args.to)
        print(
            f"Wrote campaign {args.name!r} to {folder} (load it with datasets.load_dataset({str(folder)!r})).",
            file=out,
        )
        if args.push_to_hub:
            print(f"Pushed to {push_to_hub(folder, args.push_to_hub)}.", file=out)
        return 0
    if args.action == "list":
        for campaign in campaigns.all():
            print(f"{campaign.name}: {_line(_progress(campaigns, campaign.name), campaign.kind)}", file=out)
        return 0
    progress = _progress(campaigns, args.name)
    if args.json:
        print(json.dumps(asdict(progress), sort_keys=True), file=out)
    else:
        print(f"{args.name}: {_line(progress, campaigns.get(args.name).kind)}", file=out)
        for reviewer, count in progress.by_reviewer.items():
            print(f"  {reviewer}: {count}", file=out)
    return 0


def _create_comparison(campaigns: Campaigns, args: argparse.Namespace, *, out: TextIO) -> int:
    """A comparison campaign from ``train.compare``'s ``comparison.json`` and the two runs it names."""
    from medvlm.annotations.comparison_campaigns import ComparisonCampaigns
    from medvlm.evaluation_runs import identical_answers_note, paired_runs, read_evaluation_samples, samples_outputs

    report_path = args.comparison / "comparison.json"
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
        folders = [Path(folder) for folder in report["runs"].values()]
    except (OSError, ValueError, KeyError, AttributeError):
        raise MedVLMError(
            f"{report_path} is not a comparison written by python -m train.compare (it names no runs)."
        ) from None
    if len(folders) != 2 or not all((folder / "samples.jsonl").is_file() for folder in folders):
        raise MedVLMError(f"The runs {report_path} names are not both there (their samples.jsonl): {folders}.")
    runs = [read_evaluation_samples(folder / "samples.jsonl") for folder in folders]
    first, second = paired_runs(*runs, flips_only=args.flips_only)
    if note := identical_answers_note(first, second):
        print(note, file=out)
    root = args.images or folders[0]
    pairs = list(zip(samples_outputs(first, root), samples_outputs(second, root), strict=True))
    campaign = ComparisonCampaigns(campaigns).create(
        args.name,
        pairs,
        verdicts_per_pair=args.reviews_per_output,
        guidelines=_guidelines(args),
        blind=args.blind,
        created_by=args.by,
    )
    names = " vs ".join(report["runs"])
    print(
        f"Created comparison campaign {campaign.name!r} ({names}): {len(pairs)} pairs, {campaign.reviews_per_output} "
        f"verdict(s) wanted of each{', blind' if campaign.blind else ''}, in {campaigns.store.data_dir}.",
        file=out,
    )
    return 0


def _guidelines(args: argparse.Namespace) -> str:
    if args.guidelines is None:
        return ""
    try:
        return args.guidelines.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise MedVLMError(f"The guidelines file {args.guidelines} could not be read ({error}).") from None


def _create_generated(campaigns: Campaigns, args: argparse.Namespace, *, out: TextIO) -> int:
    """``create --data``: read the dataset, store its questions, then generate the answers."""
    from medvlm.campaign_generation import plan_campaign
    from medvlm.vqa_records import RecordSource, no_records_message

    campaigns.check_new(args.name, args.reviews_per_output)  # before the dataset and the model load
    try:
        probes = parse_kinds(args.probes or "")
    except ValueError as error:
        raise MedVLMError(f"--probes: {error}") from None
    guidelines = _guidelines(args)
    settings = settings_from(args)
    source = RecordSource(args.data, format=args.format, data_root=args.data_root, limit=args.limit, split=args.split)
    records, report = source.load()
    if not records:
        raise MedVLMError(
            no_records_message(args.data, args.data_root, report, purpose="review", root_flag="--data-root")
        )
    if report.skipped:
        print(f"Skipped while reading the dataset: {report.summary()}", file=out)
    loaded = load_model_from(args)
    campaign = plan_campaign(
        campaigns,
        args.name,
        records,
        loaded=loaded,
        settings=settings,
        style=args.style,
        batch_size=args.batch_size,
        reviews_per_output=args.reviews_per_output,
        guidelines=guidelines,
        blind=args.blind,
        created_by=args.by,
        probes=probes,
        show_probes=not args.hide_probes,
    )
    print(
        f"Created campaign {campaign.name!r}: {len(records)} questions, {campaign.reviews_per_output} review(s) "
        f"wanted of each{', blind' if campaign.blind else ''}, in {campaigns.store.data_dir}; "
        f"{loaded.describe()['model']} answers them now.",
        file=out,
    )
    return _generate(campaigns, campaign.name, loaded, out=out)


def _generate(campaigns: Campaigns, name: str, loaded: LoadedModel, *, out: TextIO) -> int:
    """Answer what is left, with a progress bar; an interruption says how to continue."""
    from tqdm.auto import tqdm

    from medvlm.campaign_generation import generate_answers

    probing = bool(campaigns.generation(name).probes)  # the bar counts the probes' re-asks too
    with tqdm(
        desc="Answering and probing" if probing else "Answering",
        unit="step" if probing else "question",
        file=sys.stderr,
    ) as bar:

        def progress(answered: int, planned: int) -> None:
            bar.total = planned
            bar.n = answered
            bar.refresh()

        try:
            plan = generate_answers(campaigns, name, loaded, progress=progress)
        except KeyboardInterrupt:
            plan = campaigns.generation(name)
            print(
                f"Interrupted: {plan.answered} of {plan.planned} answers"
                + (f" ({plan.probed} probed)" if plan.probes else "")
                + " are stored. "
                f"Continue with: medvlm campaign generate {shlex.quote(name)}",
                file=out,
            )
            return 130
    probed = f" and probed ({', '.join(plan.probes)})" if plan.probes else ""
    print(f"{name}: all {plan.planned} answers stored{probed}; reviewers can start.", file=out)
    return 0


def _progress(campaigns: Campaigns, name: str):
    """A campaign's progress: in outputs and reviews, or for a comparison campaign in pairs and verdicts."""
    if campaigns.get(name).kind == "comparison":
        from medvlm.annotations.comparison_campaigns import ComparisonCampaigns

        return ComparisonCampaigns(campaigns).progress(name)
    return campaigns.progress(name)


def _line(progress, kind: str = "review") -> str:
    items, given = ("pairs", "verdicts") if kind == "comparison" else ("outputs", "reviews")
    return (
        f"{progress.complete}/{progress.outputs} {items} complete, {progress.reviews}/{progress.wanted} {given}, "
        f"{len(progress.by_reviewer)} reviewer(s), {progress.skipped} skip(s)"
    )
