"""One browser tab's state: the case on screen, the generation running for it, the answer to review.

Kept in a ``gr.State``, so no other user ever sees it; nothing in it is written to disk (an
upload's bytes stay in memory, to re-render it with another window or frame).
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from typing import Any

from medvlm.annotations import ModelOutput
from medvlm.images import LoadedImage


@dataclass
class Session:
    """One browser tab's state. Lives in a ``gr.State``, so no other user ever sees it."""

    file_bytes: bytes | None = None
    """The uploaded file, kept in memory to re-render it with another window or frame."""
    image: LoadedImage | None = None
    """The rendered image exactly as the model will see it, with its safe metadata."""
    source_label: str | None = None
    """"Example: ..." for an example case; None for an upload (whose name is never shown or kept)."""
    options: list[str] = field(default_factory=list)
    """The options of the question being answered (to redraw the panel when stopped)."""
    loaded_question: tuple[str, str] | None = None
    """The question and options text an example or a sample put on the page: they belong to that case, so the next
    upload clears them (unless the person has edited them: then they are theirs)."""
    typed_options: list[str] = field(default_factory=list)
    """The options as last shown lettered: a correct answer is kept only while the option it names is unchanged."""
    cancel: threading.Event | None = None
    """Set to stop the running generation; None when nothing runs."""
    last_output: ModelOutput | None = None
    """The last finished answer: what a review is saved against (in a comparison, the one shown first)."""
    answered_by: Any = None
    """The ``LoadedModel`` that gave ``last_output`` (None for an imported sample): the one its probes re-ask."""
    probing: threading.Event | None = None
    """Set to stop the probes running on ``last_output``; None when none run."""
    relevance: Any = None
    """``(output_id, RelevanceMaps)`` of the answer on screen, once a sentence's map was asked for."""
    relevance_sentence: int | None = None
    """The sentence whose map the viewer shows (kept over a re-render in another window), or None."""
    second_output: ModelOutput | None = None
    """In a comparison (``--compare-model``), the other model's finished answer, shown second."""
    second_answered_by: Any = None
    """The ``LoadedModel`` that gave ``second_output``: *Probe* re-asks each answer of a pair with its own model."""
    pair_names: tuple[str, str] | None = None
    """In a comparison, the models answering first and second, as drawn for the question on screen."""
    blind: bool = True
    """Whether that draw was blind: sides shuffled, model names hidden until a verdict is saved."""
    verdict_saved: bool = False
    evaluation: list[dict[str, Any]] = field(default_factory=list)
    """Samples of an imported evaluation run (``samples.jsonl`` from ``train.evaluate``), to review one by one."""
    evaluation_images: dict[str, bytes] = field(default_factory=dict)
    """The image files uploaded with those samples, by file name (in memory: the uploads are deleted)."""
    case_version: int = 0
    """Counts the cases shown in this tab; an answer generated for an earlier one is never kept."""
    evaluation_index: int | None = None
    """The evaluation sample on screen (from 0), when one is."""
    campaign: str | None = None
    """The review campaign this tab works on (its Campaigns tab), and the output it was handed."""
    campaign_output_id: str | None = None
    _key: str = ""

    def key(self) -> str:
        """This tab's own random key (made on first use: ``gr.State`` copies the empty default for each tab).

        In name mode it tells a review saved here from a namesake's saved in another tab.
        """
        if not self._key:
            self._key = secrets.token_hex(16)
        return self._key

    @property
    def generating(self) -> bool:
        return self.cancel is not None

    def shown_names(self) -> tuple[str | None, str | None]:
        """The models of the two answers on screen, or None for a side still hidden by a blind draw."""
        if self.pair_names is None or (self.blind and not self.verdict_saved):
            return None, None
        return self.pair_names

    def new_case(self) -> None:
        """Another case is now on screen: stop the running generation and forget the answer on show.

        This is what makes a review belong to what is on screen: after it, no save can attach to
        the previous case's output, and a generation still running for it is discarded.
        """
        if self.cancel is not None:
            self.cancel.set()
        if self.probing is not None:
            self.probing.set()
        self.last_output = None
        self.answered_by = None
        self.relevance = None
        self.relevance_sentence = None
        self.second_output = None
        self.second_answered_by = None
        self.pair_names = None
        self.verdict_saved = False
        self.evaluation_index = None
        self.case_version += 1

    def close(self) -> None:
        """Stop this tab's generation and probes (the tab was closed or its state expired)."""
        if self.cancel is not None:
            self.cancel.set()
        if self.probing is not None:
            self.probing.set()
