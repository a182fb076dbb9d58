"""The Reviews tab: the stored reviews filtered, one opened in full, their summary, and the exports."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
from PIL import Image

from medvlm.annotations import FLAGS, Annotation
from medvlm.errors import MedVLMError
from medvlm.review_stats import flag_rates, reviewer_agreement, summary_text
from medvlm.ui import render
from medvlm.ui.events import (
    ReviewFilters,
    ReviewOpened,
    ReviewSelected,
    ReviewsExported,
    ReviewsSummary,
)
from medvlm.ui.inputs import ANY, any_filter, as_number
from medvlm.ui.workbench import Workbench

TABLE_LIMIT = 1000
"""Most rows in the Reviews table (the summary and the exports always cover every match)."""
MIN_AGREEMENT_OUTPUTS = 10
"""Below this many outputs reviewed by two or more people, agreement figures come with a caution."""


def flag_choices() -> list[tuple[str, str]]:
    """Choices of the flag filter: any, then each flag by its label."""
    return [("Any flag", ANY), *((label, key) for key, label in FLAGS.items())]


class ReviewsHandlers:
    """Filters, table, one review, summary and exports, over the shared store."""

    def __init__(self, workbench: Workbench) -> None:
        self.workbench = workbench

    def review_filters(self) -> ReviewFilters:
        """Current choices of the modality, reviewer and model filters (the flags are fixed)."""

        def choices(column: str) -> dict[str, Any]:
            return gr.update(choices=[ANY, *self.workbench.store.distinct(column)])

        return ReviewFilters(choices("modality"), choices("reviewer"), choices("model_id"))

    def reviews_table(
        self,
        flag_filter: str | None,
        modality_filter: str | None,
        reviewer_filter: str | None,
        model_filter: str | None,
    ) -> pd.DataFrame:
        """The annotations matching the filters, newest first (one output: Gradio takes it as it is)."""
        return render.reviews_frame(
            self._query(flag_filter, modality_filter, reviewer_filter, model_filter, limit=TABLE_LIMIT)
        )

    def reviews_summary(
        self,
        flag_filter: str | None,
        modality_filter: str | None,
        reviewer_filter: str | None,
        model_filter: str | None,
    ) -> ReviewsSummary:
        """Summary of the annotations matching the filters."""
        annotations = self._query(flag_filter, modality_filter, reviewer_filter, model_filter)
        agreement = reviewer_agreement(annotations)
        outputs = int(agreement["outputs"].iloc[0]) if len(agreement) else 0
        for column in ("observed_agreement", "fleiss_kappa"):
            agreement[column] = [("undefined" if pd.isna(value) else f"{value:.2f}") for value in agreement[column]]
        if outputs == 0:
            caution = "No output has been reviewed by two or more people yet, so there is no agreement to show."
        elif outputs < MIN_AGREEMENT_OUTPUTS:
            caution = (
                f"\u26a0 Only {outputs} output(s) were reviewed by two or more people: agreement and kappa on fewer "
                f"than {MIN_AGREEMENT_OUTPUTS} say little. Have more outputs reviewed twice before relying on them."
            )
        else:
            caution = f"Agreement over the {outputs} outputs reviewed by two or more people."
        table = agreement[list(render.AGREEMENT_HEADERS)].rename(columns=render.AGREEMENT_HEADERS)
        return ReviewsSummary(
            reviews_summary=summary_text(annotations),
            reviews_flag_rates=flag_rates(annotations),
            reviews_by_modality=flag_rates(annotations, by="modality"),
            reviews_by_model=flag_rates(annotations, by="model_id"),
            reviews_agreement_note=caution,
            reviews_agreement=table,
        )

    def open_review(self, review_id: Any) -> ReviewOpened:
        """One stored review in full, with its earlier versions."""
        store = self.workbench.store
        try:
            number = as_number(review_id, "A review id", whole=True)
            if number is None:
                return ReviewOpened(
                    None, render.error_html("Enter the id of a review (the first column of the table).")
                )
            annotation = store.get(number)
            history = store.history(number)
        except MedVLMError as error:
            return ReviewOpened(None, render.error_html(str(error)))
        with Image.open(annotation.image_path) as image:
            return ReviewOpened(image.convert("RGB"), render.annotation_html(annotation, history))

    def select_review(self, evt: gr.SelectData) -> ReviewSelected:
        """A row of the table was clicked: open it."""
        row = evt.row_value or []
        review_id = row[render.REVIEW_COLUMNS.index("Review id")] if row else None
        return ReviewSelected(review_id, *self.open_review(review_id))

    def export_jsonl(self) -> ReviewsExported:
        """All annotations as JSON Lines."""
        return self._export(
            "annotations.jsonl",
            self.workbench.store.export_jsonl,
            "Images are not inside a JSONL file; the Parquet export carries them.",
        )

    def export_parquet(self) -> ReviewsExported:
        """All annotations with their images as one Parquet file."""
        return self._export(
            "annotations.parquet",
            self.workbench.store.export_parquet,
            "Load it with datasets.load_dataset('parquet', data_files=...).",
        )

    def _export(self, name: str, write: Callable[[Path], Path], note: str) -> ReviewsExported:
        folder = Path(tempfile.mkdtemp(dir=self.workbench.exports.name))
        try:
            path = write(folder / name)
        except MedVLMError as error:
            return ReviewsExported(None, render.error_markdown(str(error)))
        return ReviewsExported(str(path), f"Exported {self.workbench.store.count()} review(s). {note}")

    def _query(
        self,
        flag: str | None,
        modality: str | None,
        reviewer: str | None,
        model_id: str | None,
        limit: int | None = None,
    ) -> list[Annotation]:
        return self.workbench.store.query(
            flag=any_filter(flag),
            modality=any_filter(modality),
            reviewer=any_filter(reviewer),
            model_id=any_filter(model_id),
            limit=limit,
        )
