"""A campaign as a ``datasets`` dataset: one row per output, every reviewer's review, aggregated labels, a card.

    folder/
        data/train-00000-of-00001.parquet   image, question, options, correct answer, completion, reviews, labels
        README.md                           the dataset card: guidelines, k, reviewers, agreement, how to load

``datasets.load_dataset(str(folder))`` loads it (the card names the Parquet file), and so does
``medvlm.vqa_records.load_records(folder / "data")``: a row carries ``correct_answer``, ``completion`` and
the aggregated ``flags``, the fields of the app's ``annotations`` format. With a repository id
and a token it is pushed to the Hub as a private dataset (:func:`push_to_hub`).

Aggregated labels: a flag is in ``flags`` when at least half of the output's reviewers set it
(ties count as set: a reasoning failure half the readers saw is worth a look); ``flag_<key>``
holds the share of reviewers who set it, so stricter rules can be applied later.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medvlm.annotations.campaigns import Campaigns
from medvlm.annotations.records import FLAGS, Annotation, AnnotationError
from medvlm.probes import ProbeAnswer, probe_record
from medvlm.review_stats import reviewer_agreement

PARQUET_NAME = "data/train-00000-of-00001.parquet"


def export_campaign(campaigns: Campaigns, name: str, folder: str | Path) -> Path:
    """Write campaign ``name`` to ``folder`` (Parquet plus dataset card) and return the folder."""
    import datasets

    campaign = campaigns.get(name)
    if campaign.kind == "comparison":
        raise AnnotationError(
            f"{name!r} is a comparison campaign: export its verdicts as preference pairs with "
            f"python -m train.preferences --campaign {name!r} --output-dir DIR."
        )
    annotations = campaigns.annotations(name)
    if not annotations:
        raise AnnotationError(f"The campaign {name!r} has no reviews to export yet.")
    by_output: dict[str, list[Annotation]] = {}
    for annotation in annotations:
        by_output.setdefault(annotation.output_id, []).append(annotation)
    decided = campaigns.adjudications(name)
    probed = campaigns.store.probe_answers(list(by_output))
    rows = [
        {
            **_row(reviews, campaign.reviews_per_output),
            "adjudicated_flags": list(decided.get(output_id, ())),
            "probes": _probes(reviews[0], probed.get(output_id)),
        }
        for output_id, reviews in by_output.items()
    ]
    folder = Path(folder)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    dataset = datasets.Dataset.from_list(rows).cast_column("image", datasets.Image())
    dataset.to_parquet(str(folder / PARQUET_NAME))
    (folder / "README.md").write_text(_card(campaign, rows, annotations), encoding="utf-8")
    return folder


def push_to_hub(folder: str | Path, repo_id: str, *, token: str | None = None, api: Any = None) -> str:
    """Upload an exported campaign to a private Hub dataset repository; returns its URL.

    The token is ``token``, else huggingface_hub's own (``HF_TOKEN``, a Space secret, or a saved
    ``hf auth login``). A missing token, a malformed repository id, a refusal by the Hub or no
    network each raise :class:`AnnotationError` with a sentence: the export on disk stays as it is.
    huggingface_hub's HTTP client changes between versions (requests, then httpx); its
    ``HfHubHTTPError`` derives from that client's own error class, which is how a transport error
    (no network, a timeout) is recognised without naming the client.
    """
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError
    from huggingface_hub.utils import validate_repo_id

    repo_id = (repo_id or "").strip()
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise AnnotationError(
            f"{repo_id!r} is not a Hub dataset repository id: give it as owner/name, e.g. me/round1."
        ) from None
    if "/" not in repo_id:
        raise AnnotationError(f"Give the Hub repository with its owner, as owner/name (e.g. me/{repo_id}).")
    if api is None:
        from huggingface_hub import HfApi, get_token

        if not (token or get_token()):
            raise AnnotationError(
                "No Hugging Face token, so nothing was pushed: set HF_TOKEN (on a Space, as a secret) or run "
                "`hf auth login` on the server."
            )
        api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="dataset", private=True, exist_ok=True)
        api.upload_folder(
            folder_path=str(folder), repo_id=repo_id, repo_type="dataset", commit_message="medvlm campaign"
        )
    except HfHubHTTPError as error:
        status = getattr(error.response, "status_code", None)
        raise AnnotationError(
            f"The Hub refused the push to {repo_id} (HTTP {status}): check that the token may write there."
        ) from None
    except (OSError, *HfHubHTTPError.__bases__) as error:  # no network: the Hub client's transport errors
        raise AnnotationError(f"The Hub could not be reached to push {repo_id} ({type(error).__name__}).") from None
    return f"https://huggingface.co/datasets/{repo_id}"


def _row(reviews: list[Annotation], wanted: int) -> dict[str, Any]:
    first = reviews[0]
    shares = {flag: sum(flag in review.flags for review in reviews) / len(reviews) for flag in FLAGS}
    return {
        "output_id": first.output_id,
        "image": {"bytes": first.image_path.read_bytes(), "path": f"{first.image_sha256}.png"},  # self-contained
        "question": first.question,
        "options": list(first.options),
        "correct_answer": first.correct_answer,
        "modality": first.modality,
        "question_type": first.question_type,
        "model_id": first.model_id,
        "completion": first.completion,
        "reasoning": first.reasoning,
        "letter": first.letter,
        "format_ok": first.format_ok,
        "reviews_wanted": wanted,
        "reviews": [
            {
                "made_by": "person",
                "reviewer": review.reviewer,
                "flags": list(review.flags),
                "comment": review.comment,
                "spans": [{"start": span.start, "end": span.end, "label": span.label} for span in review.spans],
            }
            for review in reviews
        ],
        "flags": [flag for flag, share in shares.items() if share >= 0.5],
        **{f"flag_{flag}": share for flag, share in shares.items()},
    }


def _probes(first: Annotation, answers: list[ProbeAnswer] | None) -> str | None:
    """The output's probes as JSON (:func:`~medvlm.probes.probe_record`), or None if it has none.

    JSON text, not an Arrow struct: the verdicts hold lists of mixed types that a Parquet column cannot.
    """
    record = probe_record(first.completion, first.correct_answer, first.letter, answers or ())
    return None if record is None else json.dumps(record)


def _card(campaign, rows: list[dict[str, Any]], annotations: list[Annotation]) -> str:
    agreement = reviewer_agreement(annotations)
    reviewers = sorted({annotation.reviewer for annotation in annotations})
    complete = sum(len(row["reviews"]) >= campaign.reviews_per_output for row in rows)
    lines = [
        "---",
        "configs:",
        "- config_name: default",
        "  data_files:",
        "  - split: train",
        f"    path: {PARQUET_NAME}",
        "tags:",
        "- medical",
        "- reasoning-review",
        "- medvlm",
        "---",
        "",
        f"# Review campaign: {campaign.name}",
        "",
        f"Reviews of the reasoning of a medical vision-language model, collected with medvlm: {len(rows)} "
        f"model outputs, {len(annotations)} reviews by {len(reviewers)} reviewer(s); "
        f"{campaign.reviews_per_output} review(s) wanted per output, {complete} output(s) have them"
        f"{'; reviewers did not see the model or the correct answer (blind)' if campaign.blind else ''}.",
        "",
        "Each row is one output: the image, question, options, correct answer and completion, every "
        "reviewer's flags, comment and marked passages (`reviews`; `spans` are character offsets into "
        "`completion`), the share of reviewers who set each flag (`flag_<key>`), the flags at least half "
        "of them set (`flags`) and, where reviewers disagreed and an adjudicator decided, the decision "
        "(`adjudicated_flags`). Every review is a person's (`made_by: person`); where the campaign probed its "
        "answers, `probes` (JSON, `made_by: probe`) holds the model's answers to the same question with a blank "
        "image, another case's image and the options rotated, and the verdicts drawn from them (medvlm.probes).",
        "",
        "## Guidelines given to the reviewers",
        "",
        campaign.guidelines or "None were written.",
        "",
        "## Agreement between reviewers",
        "",
    ]
    if agreement.empty:
        lines.append("No output was reviewed by two or more reviewers.")
    else:
        lines += ["| flag | outputs | observed agreement | Fleiss' kappa |", "| --- | --- | --- | --- |"]
        for _, row in agreement.iterrows():
            kappa = "undefined" if row["fleiss_kappa"] != row["fleiss_kappa"] else f"{row['fleiss_kappa']:.2f}"
            lines.append(f"| {row['label']} | {row['outputs']} | {row['observed_agreement']:.2f} | {kappa} |")
    lines += [
        "",
        "## Loading",
        "",
        "```python",
        "import datasets",
        'rows = datasets.load_dataset("path/or/hub-id", split="train")',
        "```",
        "",
        "`medvlm.vqa_records.load_records` reads the Parquet file as this project's `annotations` format.",
        "",
    ]
    return "\n".join(lines)
