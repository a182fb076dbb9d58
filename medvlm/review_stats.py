"""What the reviews say, in numbers: flag rates, agreement between reviewers, a short summary.

Everything here takes the annotations themselves (``AnnotationStore.query(...)``), so the same
filters the app offers apply to the statistics.

**Agreement** is computed per flag, treating "flagged / not flagged" as each reviewer's rating of
an output, over the outputs that at least two distinct reviewers reviewed. The kappa is Fleiss'
(1971), implemented here (a few lines) rather than taken from ``statsmodels``, for two reasons:
statsmodels' ``fleiss_kappa`` assumes every output has the same number of raters, which
double-review data rarely has (some outputs get a third look), and it would add a large
dependency for one formula. For output *i* with ``n_i`` reviewers of whom ``k_i`` set the flag::

    P_i   = (k_i (k_i - 1) + (n_i - k_i)(n_i - k_i - 1)) / (n_i (n_i - 1))   # agreeing pairs / pairs
    P_bar = mean of P_i                                                      # observed agreement
    p     = sum k_i / sum n_i                                                # share of "flagged"
    P_e   = p^2 + (1 - p)^2                                                  # chance agreement
    kappa = (P_bar - P_e) / (1 - P_e)

With the same number of reviewers on every output this is exactly Fleiss' kappa (and what
statsmodels returns). Kappa is undefined (NaN) when every rating is the same (``P_e = 1``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from medvlm.annotations import FLAGS, Annotation, AnnotationError
from medvlm.user_text import escape_markdown

GROUPS: tuple[str, ...] = ("modality", "question_type", "model_id", "reviewer")
"""The columns :func:`flag_rates` can group by."""

UNKNOWN_GROUP = "unknown"
"""Group label for annotations without a value (a raster image has no modality)."""

AGREEMENT_COLUMNS: tuple[str, ...] = ("flag", "label", "outputs", "ratings", "observed_agreement", "fleiss_kappa")


def flag_rates(annotations: Sequence[Annotation], by: str | None = None) -> pd.DataFrame:
    """How often each flag was set: ``flag, label, count, rate`` (rate: share of annotations).

    With ``by`` ("modality", "question_type", "model_id" or "reviewer") the frame is long, one row per group and
    flag, rates within the group, ready for ``gr.BarPlot(x="label", y="rate", color=by)``.
    Every flag appears (with count 0) so bars line up across groups. No annotations: an empty
    frame with the same columns.
    """
    if by is not None and by not in GROUPS:
        raise AnnotationError(f"Cannot group flag rates by {by!r}; choose from: {', '.join(GROUPS)}.")
    groups: dict[str | None, list[Annotation]] = defaultdict(list)
    for annotation in annotations:
        groups[_group_value(annotation, by) if by else None].append(annotation)
    rows = [
        {
            **({by: group} if by else {}),
            "flag": flag,
            "label": label,
            "count": (count := sum(flag in annotation.flags for annotation in members)),
            "rate": count / len(members),
        }
        for group, members in sorted(groups.items())
        for flag, label in FLAGS.items()
    ]
    columns = [*([by] if by else []), "flag", "label", "count", "rate"]
    return pd.DataFrame(rows, columns=columns)


def verdict_rates(pairs: Sequence[tuple[str | None, Mapping[str, int]]], by: str) -> pd.DataFrame:
    """How a comparison's verdicts fell, per group: ``by, label, count, rate`` (rate: share of the group's verdicts).

    ``pairs`` are (the pair's group, such as its modality; its verdicts counted by outcome: a model's
    name, ``"tie"`` or ``"both poor"``). The frame has the shape of :func:`flag_rates`, the outcomes in
    the place of the flags, so one stacked bar plot shows either. Pairs without verdicts count nowhere.

    >>> frame = verdict_rates([("CT", {"grpo": 2, "tie": 1}), ("MRI", {}), (None, {"base": 1})], "modality")
    >>> frame[["modality", "label", "count"]].values.tolist()
    [['CT', 'grpo', 2], ['CT', 'tie', 1], ['unknown', 'base', 1]]
    >>> frame["rate"].round(2).tolist()
    [0.67, 0.33, 1.0]
    """
    groups: dict[str, Counter[str]] = defaultdict(Counter)
    for group, outcomes in pairs:
        if sum(outcomes.values()):
            groups[group or UNKNOWN_GROUP].update(outcomes)
    rows = [
        {by: group, "label": label, "count": count, "rate": count / sum(counts.values())}
        for group, counts in sorted(groups.items())
        for label, count in counts.items()
        if count
    ]
    return pd.DataFrame(rows, columns=[by, "label", "count", "rate"])


def reviewer_agreement(annotations: Sequence[Annotation]) -> pd.DataFrame:
    """Per flag, agreement between reviewers on the outputs reviewed by two or more of them.

    Columns: ``flag, label, outputs`` (outputs double-reviewed), ``ratings`` (their reviews),
    ``observed_agreement`` (mean share of agreeing reviewer pairs) and ``fleiss_kappa`` (see the
    module docstring; NaN where undefined). Empty frame with these columns when no output was
    reviewed twice. A reviewer's repeated review of one output counts once (the latest).
    """
    outputs = _double_reviewed(annotations)
    if not outputs:
        return pd.DataFrame(columns=list(AGREEMENT_COLUMNS))
    rows = []
    for flag, label in FLAGS.items():
        counts = [(len(reviews), sum(flag in review.flags for review in reviews)) for reviews in outputs]
        observed, kappa = _fleiss(counts)
        ratings = sum(n for n, _ in counts)
        rows.append(dict(zip(AGREEMENT_COLUMNS, (flag, label, len(outputs), ratings, observed, kappa), strict=True)))
    return pd.DataFrame(rows, columns=list(AGREEMENT_COLUMNS))


def summary_text(annotations: Sequence[Annotation]) -> str:
    """A short Markdown summary: totals, reviewers, double reviews, accuracy, format compliance.

    Accuracy counts annotations whose reviewer gave the correct answer (reviewers may differ on
    it); format compliance counts distinct outputs, since it is a property of the output alone.
    """
    if not annotations:
        return "No annotations yet."
    outputs = {annotation.output_id: annotation for annotation in annotations}
    reviewers = sorted({annotation.reviewer for annotation in annotations})
    known = [annotation.is_correct for annotation in annotations if annotation.is_correct is not None]
    accuracy = (
        f"{sum(known)}/{len(known)} = {_percent(sum(known), len(known))} of annotations with a known correct answer"
        if known
        else "no correct answers given yet"
    )
    formatted = sum(annotation.format_ok for annotation in outputs.values())
    flag_counts = {label: sum(flag in annotation.flags for annotation in annotations) for flag, label in FLAGS.items()}
    lines = [
        f"**{len(annotations)}** annotation(s) of **{len(outputs)}** model output(s) "
        f"by **{len(reviewers)}** reviewer(s): {', '.join(escape_markdown(reviewer) for reviewer in reviewers)}.",
        "",
        f"- Reviewed by two or more reviewers: {len(_double_reviewed(annotations))} output(s).",
        f"- Accuracy: {accuracy}.",
        f"- Format followed (`<think>` then `<answer>`): {formatted}/{len(outputs)} = "
        f"{_percent(formatted, len(outputs))} of outputs.",
        "- Flags: "
        + (", ".join(f"{label} {count}" for label, count in flag_counts.items() if count) or "none (comments only)")
        + ".",
    ]
    return "\n".join(lines)


def _group_value(annotation: Annotation, by: str) -> str:
    value = getattr(annotation, by)
    return value if value else UNKNOWN_GROUP


def _double_reviewed(annotations: Sequence[Annotation]) -> list[list[Annotation]]:
    """The latest review by each reviewer, per output, for outputs with two or more reviewers."""
    latest: dict[str, dict[str, Annotation]] = defaultdict(dict)
    for annotation in annotations:
        previous = latest[annotation.output_id].get(annotation.reviewer)
        if previous is None or annotation.updated_at >= previous.updated_at:
            latest[annotation.output_id][annotation.reviewer] = annotation
    return [list(by_reviewer.values()) for by_reviewer in latest.values() if len(by_reviewer) >= 2]


def _fleiss(counts: Sequence[tuple[int, int]]) -> tuple[float, float]:
    """Observed agreement and Fleiss' kappa from (raters, raters who flagged) per output (n >= 2)."""
    agreement = [(k * (k - 1) + (n - k) * (n - k - 1)) / (n * (n - 1)) for n, k in counts]
    observed = sum(agreement) / len(agreement)
    p = sum(k for _, k in counts) / sum(n for n, _ in counts)
    chance = p * p + (1 - p) * (1 - p)
    kappa = (observed - chance) / (1 - chance) if chance < 1 else float("nan")
    return observed, kappa


def fleiss_kappa(items: Sequence[Mapping[str, int]]) -> tuple[float, float]:
    """Observed agreement and Fleiss' kappa over items each judged by two or more raters into categories.

    ``items`` holds, per item, how many raters chose each category (a pairwise verdict's four
    outcomes, say). Items with fewer than two raters are left out; with none left both are NaN.

    >>> fleiss_kappa([{"a": 2}, {"b": 2}])
    (1.0, 1.0)
    >>> [round(value, 3) for value in fleiss_kappa([{"a": 1, "b": 1}, {"a": 2}, {"b": 2}, {"a": 2}])]
    [0.75, 0.467]
    """
    counted = [item for item in items if sum(item.values()) >= 2]
    if not counted:
        return float("nan"), float("nan")
    agreement = [
        (sum(count * count for count in item.values()) - sum(item.values()))
        / (sum(item.values()) * (sum(item.values()) - 1))
        for item in counted
    ]
    observed = sum(agreement) / len(agreement)
    total = sum(sum(item.values()) for item in counted)
    shares = Counter()
    for item in counted:
        shares.update(item)
    chance = sum((count / total) ** 2 for count in shares.values())
    kappa = (observed - chance) / (1 - chance) if chance < 1 else float("nan")
    return observed, kappa


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}%"


HINT_COLUMNS: tuple[str, ...] = ("hint", "suggests", "reviews", "fired", "flagged", "both", "precision", "recall")


PROBE_HINT = "probe: image-invariant with visual claims"
"""The probes' verdict as the hint table names it (:mod:`medvlm.probes`); it suggests the superficial flag."""


def hint_accuracy(annotations: Sequence[Annotation], probes: Mapping[str, bool | None] | None = None) -> pd.DataFrame:
    """How well the pre-check hints (:func:`medvlm.hints.reasoning_hints`) foresee the reviewers' flags.

    Per hint kind, over the annotations given (one reviewer's review of one output each): how often
    the hint fired, how often reviewers set the flag it suggests, how often both, and so precision
    (of the reviews where it fired, the share flagged) and recall (of the flagged ones, the share it
    fired on); NaN where there is nothing to divide by. ``probes`` (output id: the probes' "image-
    invariant with visual claims" verdict) adds that verdict as one more row against the superficial
    flag, measured over the reviews of the outputs that have one.
    """
    from medvlm.hints import HINT_FLAGS, reasoning_hints

    fired_by_kind: dict[str, list[bool]] = {kind: [] for kind in HINT_FLAGS}
    for annotation in annotations:
        kinds = {hint.kind for hint in reasoning_hints(annotation.completion, annotation.question, annotation.options)}
        for kind in HINT_FLAGS:
            fired_by_kind[kind].append(kind in kinds)
    rows = [
        _foresight(kind, flag, fired_by_kind[kind], [flag in annotation.flags for annotation in annotations])
        for kind, flag in HINT_FLAGS.items()
    ]
    verdicts = {key: value for key, value in (probes or {}).items() if value is not None}
    probed = [annotation for annotation in annotations if annotation.output_id in verdicts]
    if verdicts:
        fired = [bool(verdicts[annotation.output_id]) for annotation in probed]
        rows.append(_foresight(PROBE_HINT, "superficial", fired, ["superficial" in a.flags for a in probed]))
    return pd.DataFrame(rows, columns=list(HINT_COLUMNS))


def _foresight(hint: str, flag: str, fired: Sequence[bool], flagged: Sequence[bool]) -> dict[str, Any]:
    """One row of the hint table: how often ``hint`` fired, the flag was set, both; precision and recall."""
    both = sum(a and b for a, b in zip(fired, flagged, strict=True))
    return {
        "hint": hint,
        "suggests": FLAGS[flag],
        "reviews": len(fired),
        "fired": sum(fired),
        "flagged": sum(flagged),
        "both": both,
        "precision": both / sum(fired) if sum(fired) else float("nan"),
        "recall": both / sum(flagged) if sum(flagged) else float("nan"),
    }


MIN_INTERVAL_OUTPUTS = 10
"""Fewer outputs reviewed by two or more people than this: no interval, "too few outputs" instead."""


def agreement_intervals(
    annotations: Sequence[Annotation],
    *,
    minimum: int = MIN_INTERVAL_OUTPUTS,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Fleiss' kappa per flag with a bootstrap confidence interval over the outputs reviewed twice or more.

    Resampling outputs (not single reviews) keeps each output's reviewers together, as the kappa
    does. Below ``minimum`` such outputs the interval is not computed and ``note`` says so; a
    resample where kappa is undefined (every rating the same) is left out of the interval.
    """
    import numpy as np

    outputs = _double_reviewed(annotations)
    rows = []
    rng = np.random.default_rng(seed)
    for flag, label in FLAGS.items():
        counts = [(len(reviews), sum(flag in review.flags for review in reviews)) for reviews in outputs]
        kappa = _fleiss(counts)[1] if counts else float("nan")
        low = high = float("nan")
        note = ""
        if len(counts) < minimum:
            note = f"too few outputs (fewer than {minimum} reviewed by two or more people)"
        else:
            picks = rng.integers(0, len(counts), size=(resamples, len(counts)))
            kappas = np.array([_fleiss([counts[index] for index in pick])[1] for pick in picks])
            kappas = kappas[~np.isnan(kappas)]
            if kappas.size:
                low, high = (float(value) for value in np.quantile(kappas, [(1 - level) / 2, (1 + level) / 2]))
            else:
                note = "undefined: every rating is the same"
        rows.append({"flag": flag, "label": label, "outputs": len(counts), "kappa": kappa, "low": low, "high": high,
                     "note": note})  # fmt: skip
    return pd.DataFrame(rows, columns=["flag", "label", "outputs", "kappa", "low", "high", "note"])


def reviews_over_time(times: Sequence[str]) -> pd.DataFrame:
    """Cumulative reviews (or verdicts) at the moment of each one: columns ``time`` and ``reviews``.

    ``times`` are when each was first submitted (ISO 8601); ``time`` is that instant (UTC, naive),
    ``reviews`` how many had been submitted then, starting from 0 at the first, so the line rises
    exactly where the work happened (a per-hour grid drew reviews of 02:25 between 01:00 and 02:00).
    Ready for ``gr.LinePlot(x="time", y="reviews")``, which shows the instants in the reader's time zone.

    >>> reviews_over_time(["2026-12-01T02:25:00+00:00", "2026-12-01T01:05:00+01:00"])["reviews"].tolist()
    [0, 1, 2]
    """
    if not times:
        return pd.DataFrame(columns=["time", "reviews"])
    created = pd.to_datetime(list(times), utc=True).tz_convert(None).sort_values()
    return pd.DataFrame({"time": [created[0], *created], "reviews": range(len(created) + 1)})
