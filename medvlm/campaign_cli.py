"""``medvlm campaign``: set up and follow review campaigns from the terminal.

    medvlm campaign create "Chest CT round 1" --samples run/samples.jsonl --images data/ \\
        --reviews-per-output 3 [--guidelines guidelines.md] [--blind] [--data-dir DIR] [--by NAME]
    medvlm campaign export "Chest CT round 1" --to exports/round1 [--push-to-hub me/round1]
    medvlm campaign list [--data-dir DIR]
    medvlm campaign progress "Chest CT round 1" [--json] [--data-dir DIR]

A campaign is made from a ``train.evaluate`` run, so every reviewer sees the same completions;
its outputs and images go into the data folder the app serves (``--data-dir``, default
``$MEDVLM_DATA_DIR`` or ``./medvlm-data``). See :mod:`medvlm.annotations.campaigns` for how
outputs are handed out.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import TextIO

from medvlm.errors import MedVLMError


def add_parser(commands: argparse._SubParsersAction) -> None:
    """The ``campaign`` command and its subcommands, on ``medvlm``'s parser."""
    campaign = commands.add_parser("campaign", help="set up and follow review campaigns (many reviewers, k each)")
    actions = campaign.add_subparsers(dest="action", required=True)

    create = actions.add_parser("create", help="a campaign over the outputs of a train.evaluate run")
    create.add_argument("name", help="the campaign's name, as reviewers will see it")
    create.add_argument("--samples", required=True, type=Path, help="the run's samples.jsonl")
    create.add_argument(
        "--images", type=Path, help="folder the samples' image paths are relative to (default: the samples' folder)"
    )
    create.add_argument(
        "--reviews-per-output", type=int, required=True, help="k: how many reviewers should review each output"
    )
    create.add_argument("--guidelines", type=Path, help="a Markdown file of guidelines shown to reviewers")
    create.add_argument("--blind", action="store_true", help="hide the model and the correct answer from reviewers")
    create.add_argument("--by", default="admin", help="who created it (recorded; default: %(default)s)")

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
    for sub in (create, export, listing, progress):
        sub.add_argument("--data-dir", type=Path, help="the data folder (default: $MEDVLM_DATA_DIR or ./medvlm-data)")


def run(args: argparse.Namespace, *, out: TextIO) -> int:
    """Carry out ``medvlm campaign ...``; problems raise :class:`MedVLMError` (one line, status 2)."""
    from medvlm.annotations import AnnotationStore
    from medvlm.annotations.campaigns import Campaigns

    campaigns = Campaigns(AnnotationStore(args.data_dir))
    if args.action == "create":
        from medvlm.evaluation_runs import run_outputs

        if not args.samples.is_file():
            raise MedVLMError(f"There is no samples file at {args.samples}.")
        guidelines = ""
        if args.guidelines is not None:
            try:
                guidelines = args.guidelines.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                raise MedVLMError(f"The guidelines file {args.guidelines} could not be read ({error}).") from None
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
            print(f"{campaign.name}: {_line(campaigns.progress(campaign.name))}", file=out)
        return 0
    progress = campaigns.progress(args.name)
    if args.json:
        print(json.dumps(asdict(progress), sort_keys=True), file=out)
    else:
        print(f"{args.name}: {_line(progress)}", file=out)
        for reviewer, count in progress.by_reviewer.items():
            print(f"  {reviewer}: {count}", file=out)
    return 0


def _line(progress) -> str:
    return (
        f"{progress.complete}/{progress.outputs} outputs complete, {progress.reviews}/{progress.wanted} reviews, "
        f"{len(progress.by_reviewer)} reviewer(s), {progress.skipped} skip(s)"
    )
