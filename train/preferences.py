"""Reviews back into training: preference pairs for TRL's ``DPOTrainer``, sound outputs for ``SFTTrainer``.

    python -m train.preferences --data-dir ./reviews --output-dir exports/prefs [--campaign "Chest CT round 1"]
    python -m train.preferences --data-dir ./reviews --output-dir exports/prefs --campaign "Base vs GRPO"

Reviewers' flags say which answers to a case are good and which are not. An output is **sound**
when at least half of its reviewers flagged it ``sound`` and no failure flag (superficial,
contradiction, hallucination, wrong answer) reached half; it **fails** when a failure flag did.
Within a campaign an adjudicator's decision replaces the reviewers' vote for that output.

* ``dpo/``: every (sound, failing) pair of outputs to the *same case* (the same image, question and
  options) as one row: ``prompt`` (the question as the model was asked it, :func:`medvlm.prompt.build_messages`
  in the output's own prompt style, with its image placeholder), ``image``, ``chosen`` and ``rejected``
  (assistant turns), the format ``DPOTrainer`` reads for vision-language models.
  Pairwise verdicts add pairs too: two answers to one case, one of which more than half of the
  pair's verdicts preferred (ties and "both poor" add none; a pair both the flags and the verdicts
  give appears once). In a comparison campaign an adjudicator's verdict on a pair decides it instead.
  A pair whose chosen and rejected answers are the same text is left out (and counted): it teaches nothing.
* ``sft/``: every sound output as ``prompt`` / ``image`` / ``completion`` (prompt-completion,
  conversational), the format ``SFTTrainer`` reads.

Both are Parquet with the images embedded, loadable with ``datasets.load_dataset(folder)``.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medvlm.annotations import FLAGS, Annotation, AnnotationStore, ModelOutput, Verdict, image_sha256
from medvlm.errors import MedVLMError
from medvlm.prompt import build_messages

if TYPE_CHECKING:
    import datasets

Answer = Annotation | ModelOutput
"""A reviewed answer (its review carries the output), or a stored output a verdict names."""

FAILURE_FLAGS: tuple[str, ...] = tuple(flag for flag in FLAGS if flag != "sound")
EXIT_ERROR = 2


@dataclass(frozen=True)
class JudgedOutput:
    """One reviewed output and what its reviewers (or its adjudicator) made of it."""

    review: Annotation
    """One of its reviews (the output's fields: image, question, completion...)."""
    flags: tuple[str, ...]
    """The flags at least half its reviewers set, or the adjudicated ones."""

    @property
    def sound(self) -> bool:
        return "sound" in self.flags and not self.failed

    @property
    def failed(self) -> bool:
        return any(flag in self.flags for flag in FAILURE_FLAGS)

    @property
    def case(self) -> tuple[str, str, tuple[str, ...]]:
        """What makes two outputs answers to the same case: the image, the question, the options."""
        return self.review.image_sha256, self.review.question, tuple(self.review.options)


def judged_outputs(
    annotations: Sequence[Annotation], adjudicated: Mapping[str, Sequence[str]] | None = None
) -> list[JudgedOutput]:
    """Each reviewed output with its majority flags (or the adjudicated ones), in the order first reviewed."""
    by_output: dict[str, list[Annotation]] = defaultdict(list)
    for annotation in annotations:
        by_output[annotation.output_id].append(annotation)
    judged = []
    for output_id, reviews in by_output.items():
        if adjudicated is not None and output_id in adjudicated:
            flags = tuple(adjudicated[output_id])
        else:
            flags = tuple(
                flag for flag in FLAGS if 2 * sum(flag in review.flags for review in reviews) >= len(reviews)
            )
        judged.append(JudgedOutput(reviews[0], flags))
    return judged


def preference_pairs(judged: Sequence[JudgedOutput]) -> list[tuple[JudgedOutput, JudgedOutput]]:
    """(chosen, rejected): every sound output against every failing one of the same case.

    Two outputs with the same text judged differently make a pair too; :func:`export` leaves out and counts every
    pair of identical texts, from reviews and from verdicts alike, so none is dropped unsaid.
    """
    cases: dict[tuple, list[JudgedOutput]] = defaultdict(list)
    for output in judged:
        cases[output.case].append(output)
    return [
        (chosen, rejected)
        for outputs in cases.values()
        for chosen in outputs
        if chosen.sound
        for rejected in outputs
        if rejected.failed
    ]


def verdict_pairs(verdicts: Sequence[Verdict], adjudicated: Sequence[Verdict] = ()) -> list[tuple[str, str]]:
    """(chosen, rejected) output ids: each pair of answers more than half of whose verdicts preferred one.

    An ``adjudicated`` verdict (a comparison campaign's adjudicator's) decides its pair alone: a
    preference makes the pair, a tie or "both poor" drops it.
    """
    by_pair: dict[tuple[str, str], list[Verdict]] = defaultdict(list)
    for verdict in verdicts:
        by_pair[(verdict.output_a, verdict.output_b)].append(verdict)
    for decision in adjudicated:
        by_pair[(decision.output_a, decision.output_b)] = [decision]
    pairs = []
    for (output_a, output_b), judged in by_pair.items():
        preferred = Counter(verdict.preferred for verdict in judged)
        for chosen, rejected in ((output_a, output_b), (output_b, output_a)):
            if 2 * preferred[chosen] > len(judged):
                pairs.append((chosen, rejected))
    return pairs


def to_dpo_dataset(pairs: Sequence[tuple[Answer, Answer]]) -> datasets.Dataset:
    """The pairs in ``DPOTrainer``'s vision format (conversational prompt, ``image``, ``chosen``, ``rejected``)."""
    import datasets

    rows = [
        {
            **_prompt_and_image(chosen),
            "chosen": _assistant(chosen.completion),
            "rejected": _assistant(rejected.completion),
            "chosen_output_id": chosen.output_id,
            "rejected_output_id": rejected.output_id,
        }
        for chosen, rejected in pairs
    ]
    return datasets.Dataset.from_list(rows).cast_column("image", datasets.Image())


def to_sft_dataset(judged: Sequence[JudgedOutput]) -> datasets.Dataset:
    """The sound outputs in ``SFTTrainer``'s prompt-completion format, with their images."""
    import datasets

    rows = [
        {**_prompt_and_image(output.review), "completion": _assistant(output.review.completion),
         "output_id": output.review.output_id}
        for output in judged
        if output.sound
    ]  # fmt: skip
    return datasets.Dataset.from_list(rows).cast_column("image", datasets.Image())


def _prompt_and_image(answer: Answer) -> dict[str, Any]:
    """The prompt the answer's model was given, and the image as PNG bytes (a stored output's own file)."""
    if isinstance(answer, Annotation):
        picture, name = answer.image_path.read_bytes(), f"{answer.image_sha256}.png"
    else:
        buffer = io.BytesIO()
        answer.image.save(buffer, format="PNG")
        picture, name = buffer.getvalue(), f"{image_sha256(answer.image)}.png"
    return {
        "prompt": build_messages(answer.question, answer.options, style=answer.prompt_style or "medvlm"),
        "image": {"bytes": picture, "path": name},
    }


def _assistant(text: str) -> list[dict[str, Any]]:
    return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]


def export(
    annotations: Sequence[Annotation],
    output_dir: str | Path,
    adjudicated: Mapping[str, Sequence[str]] | None = None,
    *,
    verdicts: Sequence[Verdict] = (),
    adjudicated_verdicts: Sequence[Verdict] = (),
    store: AnnotationStore | None = None,
) -> dict[str, int]:
    """Write ``dpo/`` and ``sft/`` under ``output_dir`` (each only when it has rows); return how many rows each
    has, and how many pairs were left out as ``identical`` (the same completion chosen and rejected).

    ``verdicts`` (pairwise, read with their outputs from ``store``) add preference pairs; an
    adjudicated verdict decides its pair instead of the majority (:func:`verdict_pairs`).
    """
    judged = judged_outputs(annotations, adjudicated)
    pairs: dict[tuple[str, str], tuple[Answer, Answer]] = {
        (chosen.review.output_id, rejected.review.output_id): (chosen.review, rejected.review)
        for chosen, rejected in preference_pairs(judged)
    }
    for chosen_id, rejected_id in verdict_pairs(verdicts, adjudicated_verdicts):
        if (chosen_id, rejected_id) not in pairs and store is not None:
            pairs[(chosen_id, rejected_id)] = (store.output(chosen_id), store.output(rejected_id))
    identical = [key for key, (chosen, rejected) in pairs.items() if chosen.completion == rejected.completion]
    for key in identical:  # e.g. two runs that answered alike: "prefer this text to itself" trains nothing
        del pairs[key]
    sound = [output for output in judged if output.sound]
    if not pairs and not sound:
        raise MedVLMError(_nothing_to_train_on(len(judged), len(verdicts), len(identical)))
    folder = Path(output_dir)
    counts = {}
    for name, rows in (("dpo", pairs), ("sft", sound)):
        if rows:
            dataset = to_dpo_dataset(list(pairs.values())) if name == "dpo" else to_sft_dataset(judged)
            (folder / name).mkdir(parents=True, exist_ok=True)
            dataset.to_parquet(str(folder / name / "train.parquet"))
        counts[name] = len(rows)
    return {**counts, "identical": len(identical)}


def _nothing_to_train_on(reviewed: int, verdicts: int, identical: int) -> str:
    """Why neither folder can be written, naming only what there was (reviews, verdicts), in one sentence."""
    reasons = []
    if reviewed:
        reasons.append(f"none of the {reviewed} reviewed outputs is judged sound")
    if verdicts:
        reasons.append(f"no pair among the {verdicts} verdicts has a majority for one of two different answers")
    if identical:
        reasons.append(f"{identical} pair(s) chose and rejected the same text, which teaches nothing")
    why = "; ".join(reasons) if reasons else "there are no reviews and no verdicts"
    return f"Nothing to train on yet ({why}): no dpo/ or sft/ is written."


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.preferences", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-dir", type=Path, help="the app's data folder (default: $MEDVLM_DATA_DIR or ./medvlm-data)"
    )
    parser.add_argument(
        "--campaign",
        help="only this campaign's reviews (its adjudications count), or a comparison campaign's verdicts",
    )
    parser.add_argument("--output-dir", type=Path, required=True, help="where dpo/ and sft/ are written")
    args = parser.parse_args(argv)
    from medvlm.annotations.campaigns import Campaigns
    from medvlm.annotations.comparison_campaigns import ComparisonCampaigns

    try:
        store = AnnotationStore(args.data_dir)
        verdicts: Sequence[Verdict] = ()
        decided: Sequence[Verdict] = ()
        if args.campaign and Campaigns(store).get(args.campaign).kind == "comparison":
            annotations, adjudicated = [], None
            comparisons = ComparisonCampaigns(Campaigns(store))
            verdicts = comparisons.verdicts(args.campaign)
            decided = list(comparisons.adjudications(args.campaign).values())
        elif args.campaign:
            campaigns = Campaigns(store)
            annotations, adjudicated = campaigns.annotations(args.campaign), campaigns.adjudications(args.campaign)
        else:
            annotations, adjudicated, verdicts = store.query(), None, store.verdicts()
        counts = export(
            annotations, args.output_dir, adjudicated, verdicts=verdicts, adjudicated_verdicts=decided, store=store
        )
    except MedVLMError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    for line in _written(counts, args.output_dir):
        print(line)
    return 0


def _written(counts: Mapping[str, int], output_dir: Path) -> list[str]:
    """What the export wrote, folder by folder, and what it left out (never a write of nothing)."""
    lines = [
        f"Wrote {counts['dpo']} preference pair(s) to {output_dir / 'dpo'}."
        if counts["dpo"]
        else "No preference pair (no sound and failing answers to one case, no verdict majority between two "
        "different answers): dpo/ is not written.",
        f"Wrote {counts['sft']} sound output(s) to {output_dir / 'sft'}."
        if counts["sft"]
        else "No output was judged sound: sft/ is not written.",
    ]
    if counts["identical"]:
        lines.append(
            f"Left out {counts['identical']} pair(s) whose chosen and rejected answers are the same text: they "
            "teach nothing (the two answers were identical)."
        )
    return lines


if __name__ == "__main__":
    sys.exit(main())
