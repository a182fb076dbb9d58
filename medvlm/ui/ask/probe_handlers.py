"""The Ask tab's evidence beside the reasoning: probes of the finished answer, and where the model looked.

*Probe* re-asks the answer's question with a blank image, another stored case's image of the same
modality and the options rotated (:mod:`medvlm.probes`), and, when ticked, without the reasoning
instruction, with the model that answered and its token and pixel budgets, greedily. In a
comparison both answers are probed, each with the model that gave it, so the two columns' verdicts
can be set side by side (did training make the model look at the image?). Each probe's answer
appears as it ends and is stored at once with the output, as a machine annotation
(``probe_answers``: made by a model, never counted as a reviewer); *Stop probing* ends them after
the current one. Selecting a sentence of the reasoning draws its relevance map
(:mod:`medvlm.relevance`) over the image in the viewer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import gradio as gr
from PIL import Image

from medvlm.annotations import ModelOutput
from medvlm.errors import MedVLMError
from medvlm.probes import (
    DEFAULT_KINDS,
    PROBE_LABELS,
    ProbeAnswer,
    ProbeCase,
    ProbeKind,
    model_answerer,
    parse_kinds,
    partner_for,
    run_probes,
    summarize,
)
from medvlm.prompt import LETTERS, PromptStyle
from medvlm.relevance import RelevanceMaps
from medvlm.streaming import GenerationSettings
from medvlm.ui import render
from medvlm.ui.events import PROBE_LABEL, ProbeUpdate, RelevanceShown
from medvlm.ui.session import Session
from medvlm.ui.viewer import viewer_value, with_overlay
from medvlm.ui.workbench import Workbench
from medvlm.user_text import escape_markdown

logger = logging.getLogger(__name__)

PROBING = "Probing..."


class ProbeHandlers:
    """Probe (and stop probing) the answer on screen; show a sentence's relevance map."""

    def __init__(self, workbench: Workbench) -> None:
        self.workbench = workbench

    def probe(
        self, session: Session, output_id: str | None, probe_kinds: list[str] | None = None
    ) -> Iterator[ProbeUpdate]:
        """Stream the probes ``probe_kinds`` (default: :data:`~medvlm.probes.DEFAULT_KINDS`) of the answer named
        ``output_id`` (the one on screen) and, in a comparison, of the answer beside it, each re-asked with the
        model that gave it; every probe answer is stored as it ends."""
        first = session.last_output
        kinds = DEFAULT_KINDS if probe_kinds is None else parse_kinds(probe_kinds)
        problem = _unprobeable(session, first, output_id) or _unaskable(first, kinds)
        if problem:
            yield ProbeUpdate(probe_results=render.error_markdown(problem), probe_button=gr.skip())
            return
        assert first is not None
        targets = [(first, session.answered_by)]
        if session.second_output is not None and session.second_answered_by is not None:
            targets.append((session.second_output, session.second_answered_by))
        case_version = session.case_version
        cancel = threading.Event()
        session.probing = cancel
        partner_id, partner = self._partner(first)  # both answers of a pair are about one image: one partner
        sections = [
            ProbeSection(
                f"Answer {number}" if len(targets) > 1 else None,
                ProbeCase(
                    output.image,
                    output.question,
                    tuple(output.options),
                    output.completion,
                    PromptStyle(output.prompt_style),
                    partner=partner,
                    partner_id=partner_id,
                ),
            )
            for number, (output, _) in enumerate(targets, start=1)
        ]
        note = "" if partner is not None else NO_PARTNER
        try:
            yield ProbeUpdate(probe_results=probes_markdown(sections, note, running=True),
                              probe_button=gr.update(interactive=False, value=PROBING))  # fmt: skip
            for section, (output, loaded) in zip(sections, targets, strict=True):
                settings = GenerationSettings(**output.settings)
                answer = model_answerer(loaded, settings, run=self.workbench.answer_batch)
                for probe_answer in run_probes(section.case, answer, kinds, cancel=cancel):
                    if session.case_version != case_version or session.last_output is not first:
                        return  # another case or answer is on screen: these probes belong to nothing shown
                    section.answers.append(probe_answer)
                    self.workbench.store.add_probe_answers(
                        output, [probe_answer], probed_by=self.workbench.model_name(loaded)
                    )
                    yield ProbeUpdate(
                        probe_results=probes_markdown(sections, note, running=True), probe_button=gr.skip()
                    )
        except MedVLMError as error:
            yield ProbeUpdate(
                probe_results=probes_markdown(sections, note) + "\n\n" + render.error_markdown(str(error)),
                probe_button=_ready(),
            )
            return
        except Exception:  # noqa: BLE001 - the page must get a message, not a traceback
            logger.exception("Probing failed")
            yield ProbeUpdate(
                probe_results=render.error_markdown(
                    "Probing failed unexpectedly; the error was logged on the server."
                ),
                probe_button=_ready(),
            )
            return
        finally:
            if session.probing is cancel:
                session.probing = None
        stopped = "Stopped by you; the probes that finished are stored." if cancel.is_set() else ""
        notes = " ".join(part for part in (stopped, note) if part)
        yield ProbeUpdate(probe_results=probes_markdown(sections, notes), probe_button=_ready())

    def stop_probing(self, session: Session) -> ProbeUpdate:
        """Stop probing after the current probe (what finished is already stored)."""
        if session.probing is not None:
            session.probing.set()
        return ProbeUpdate(probe_results=gr.skip(), probe_button=_ready())

    def show_relevance(self, session: Session, sentence: str | None) -> RelevanceShown:
        """The viewer with sentence ``sentence``'s map over the image ("": the image alone)."""
        output, image = session.last_output, session.image
        if image is None:
            return RelevanceShown(viewer=gr.skip(), relevance_status="")
        plain = viewer_value(image, case=session.case_version)
        session.relevance_sentence = None
        if not sentence:  # also when a new answer or case empties the choice: its map must not stay on the image
            return RelevanceShown(viewer=plain, relevance_status="")
        if output is None or session.answered_by is None:
            return RelevanceShown(viewer=plain, relevance_status="")
        try:
            maps = self._maps(session, output)
            index = int(sentence)
            start, end, text = maps.sentences[index]
        except MedVLMError as error:
            return RelevanceShown(viewer=gr.skip(), relevance_status=render.error_markdown(str(error)))
        except (ValueError, IndexError):
            return RelevanceShown(
                viewer=gr.skip(), relevance_status=render.error_markdown("That sentence is not in this answer.")
            )
        rows, cols = maps.grid
        session.relevance_sentence = index
        value = with_overlay(plain, maps.maps[index], index)
        status = (
            f"Where the model's output layer reads *{escape_markdown(text)}* in the image: {rows}\u00d7{cols} blocks "
            f"of 28 pixels as the model saw them, brightest where most (computed in {maps.seconds:.1f} s). "
            "Evidence, not proof: see the probes for whether the answer depends on the image."
        )
        return RelevanceShown(viewer=value, relevance_status=status)

    def _maps(self, session: Session, output: ModelOutput) -> RelevanceMaps:
        if session.relevance is not None and session.relevance[0] == output.output_id:
            return session.relevance[1]
        maps = self.workbench.relevance_maps(
            session.answered_by,
            output.image,
            output.question,
            output.options,
            output.completion,
            style=output.prompt_style,
            max_pixels=output.settings.get("max_pixels"),
        )
        session.relevance = (output.output_id, maps)
        return maps

    def _partner(self, output: ModelOutput) -> tuple[str | None, Image.Image | None]:
        """Another stored case's image of the same modality, if the store has one."""
        from medvlm.annotations.records import image_sha256

        modality = (output.image_metadata or {}).get("modality")
        own = image_sha256(output.image)
        pool = [(sha, kind) for sha, kind in self.workbench.store.stored_images() if sha != own]
        chosen = partner_for(own, modality, pool + [(own, modality)])
        if chosen is None:
            return None, None
        return chosen[:12], self.workbench.store.stored_image(chosen)


NO_PARTNER = (
    "No other stored case of this modality yet, so the shuffled-image probe was not run (every reviewed or probed "
    "answer adds its image to the pool)."
)


def _unprobeable(session: Session, output: ModelOutput | None, output_id: str | None) -> str | None:
    if output is None or session.answered_by is None:
        return "Ask a question first: probes re-ask a finished answer of this app's model."
    if output_id and output_id != output.output_id:
        return "That answer is no longer on screen; probe the one shown."
    if session.generating:
        return "An answer is still being generated; probe once it is finished."
    if session.probing is not None:
        return "The probes of this answer are still running."
    return None


def _unaskable(output: ModelOutput | None, kinds: tuple[ProbeKind, ...]) -> str | None:
    """Why these probes cannot be asked of ``output`` (the page offers only known kinds), or None."""
    if not kinds:
        return "Choose at least one probe to run."
    if ProbeKind.NO_THINK in kinds and output is not None and output.prompt_style == PromptStyle.NO_THINK.value:
        return "This answer was given without reasoning already; untick the no-reasoning probe."
    return None


def _ready() -> dict[str, Any]:
    return gr.update(interactive=True, value=PROBE_LABEL)


@dataclass
class ProbeSection:
    """One answer's probes on the panel: in a comparison, titled with the column it is in."""

    title: str | None
    case: ProbeCase
    answers: list[ProbeAnswer] = field(default_factory=list)


def probes_markdown(sections: list[ProbeSection], note: str = "", *, running: bool = False) -> str:
    """Each answer's probes so far (in a comparison, one titled section per column), and the verdicts under
    them once they are all in."""
    parts = ["Re-asked greedily with the model that answered; answers mapped back to the original letters."]
    answered = [index for index, section in enumerate(sections) if section.answers]
    active = (answered[-1] if answered else 0) if running else None  # sections are probed in order
    for index, section in enumerate(sections):
        parts.append("")
        if section.title:
            parts += [f"**{section.title}**", ""]
        parts += [_answer_line(section.case, answer) for answer in section.answers]
        if index == active:
            parts.append("- *more probes are running...*" if section.answers else "The first probe is running...")
        elif not section.answers:
            parts.append("Not probed yet." if running else "Not probed.")
        else:
            lines = summarize(section.case.completion, section.answers).lines()
            parts += ["", "**What they show**", "", *[f"- {line}" for line in lines]]
    if note:
        parts += ["", f"*{note}*"]
    return "\n".join(parts)


def _answer_line(case: ProbeCase, answer: ProbeAnswer) -> str:
    shown = f"{answer.letter}) {case.options[LETTERS.index(answer.letter)]}" if answer.letter else "no option"
    asked = (
        "options " + ", ".join(f"{LETTERS[i]}) {text}" for i, text in enumerate(answer.options))
        if answer.kind.value == "rotate"
        else answer.variant
    )
    verdict = {True: "**changed**", False: "same answer", None: "decides nothing"}[answer.changed]
    return f"- {PROBE_LABELS[answer.kind]} ({escape_markdown(asked)}): {escape_markdown(shown)}, {verdict}"
