"""The Ask tab's right half: the question, the streamed answer, and the review of that answer.

Every problem a user can fix arrives as a :class:`~medvlm.errors.MedVLMError` and is shown as
its message beside the control, never as a traceback or Gradio's "Error" badge. Nothing here
logs answers or reviews.
"""

from __future__ import annotations

import logging
import secrets
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

import gradio as gr

from medvlm.annotations import VERDICT_CHOICES, ModelOutput, Review, Verdict
from medvlm.errors import ImageLoadError, MedVLMError, ModelLoadError, QuestionError
from medvlm.images import LoadedImage
from medvlm.model import LoadedModel
from medvlm.prompt import LETTERS, PromptStyle, validate_question
from medvlm.streaming import CancelAll, GenerationSettings, StreamUpdate, interleave
from medvlm.ui import render
from medvlm.ui.ask.case_handlers import CaseHandlers
from medvlm.ui.events import (
    SECOND_ANSWER_FIELDS,
    AnswerMarked,
    AskUpdate,
    OptionsPreviewed,
    SampleShown,
    Stopped,
    VerdictSaved,
    review_fields,
    skips,
)
from medvlm.ui.inputs import as_number, or_default, seed_from, split_options
from medvlm.ui.session import Session
from medvlm.ui.workbench import Workbench

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Request:
    """A validated question, ready for the model."""

    image: LoadedImage
    question: str
    options: list[str]
    correct: str | None
    settings: GenerationSettings
    style: PromptStyle


class AnswerHandlers:
    """The question, the generation (ask, stop) and the review form."""

    def __init__(self, workbench: Workbench, cases: CaseHandlers) -> None:
        self.workbench = workbench
        self.cases = cases  # "Submit & next" shows the next evaluation sample

    # -- the question ----------------------------------------------------------------------------

    def preview_options(self, session: Session, options: str, correct: str | None) -> OptionsPreviewed:
        """The options as typed, lettered; the correct-answer choices follow them.

        The correct answer is kept only while the option it names reads as it did (or while it
        named none yet: a letter chosen before its option was typed): typing another option under
        it clears it, so a review never stores a correct answer nobody chose for the options on
        screen. While the options are those of the last answer (an evaluation sample just shown
        sets them too), that answer stays highlighted; in a comparison, both.
        """
        parsed = split_options(options)[: len(LETTERS)]
        before, session.typed_options = session.typed_options, parsed
        index = LETTERS.find(correct) if correct else -1
        named = 0 <= index < len(parsed) and (index >= len(before) or parsed[index] == before[index])
        keep = correct if named else ""

        def panel(output: ModelOutput | None) -> str:
            if output is not None and output.options == parsed and not session.generating:
                return render.output_html(output, keep or None)
            return render.options_html(parsed)

        choices = gr.update(choices=render.letter_choices(parsed), value=keep)
        return OptionsPreviewed(panel(session.last_output), choices, panel(session.second_output))

    def show_answer(self, session: Session, correct: str | None) -> AnswerMarked:
        """The correct answer was changed after the answers came: mark right and wrong again (each, in a pair)."""

        def panel(output: ModelOutput | None) -> Any:
            if output is None or session.generating:
                return gr.skip()
            return render.output_html(output, correct or None)

        return AnswerMarked(panel(session.last_output), panel(session.second_output))

    # -- the generation --------------------------------------------------------------------------

    def ask(
        self,
        session: Session,
        question: str,
        options: str,
        correct: str | None = None,
        decoding: str = "greedy",
        temperature: Any = 1.0,
        top_p: Any = 1.0,
        seed: str | None = None,
        max_new_tokens: Any = 512,
        max_pixels: Any = None,
        style: str | None = None,
        blind: bool = True,
    ) -> Iterator[AskUpdate]:
        """Stream the model's answer as :class:`~medvlm.ui.events.AskUpdate` s.

        The reasoning grows with every piece of text; the last update highlights the chosen
        option (or says why there is none), keeps the finished answer in the session and names
        it (its output id) so that a save says which answer it is for, and opens the review form.
        Ask is disabled while the answer streams (a double click asks once). Closing this
        generator (Gradio does on Stop, or when the tab goes away) stops the generation thread
        too. If another case is loaded meanwhile, the generation is stopped and its answer never
        shown or kept: the page belongs to the new case.

        With a comparison model (``--compare-model``) both models answer, each in its own column
        with its own highlight, timing and review form, and the verdict form opens once both are
        finished. ``blind`` draws which model answers on the left and hides the names until the
        verdict is saved. On a GPU both stream at once; on a CPU the second starts when the first
        is finished (each generation already uses every core), and its column says so.
        """
        try:
            request = self._request(
                session, question, options, correct, decoding, temperature, top_p, seed, max_new_tokens, max_pixels,
                style,
            )  # fmt: skip
        except MedVLMError as error:
            yield AskUpdate(**{**skips(AskUpdate._fields), "ask_error": render.error_markdown(str(error))})
            return
        models = self._models_in_order(session, blind)
        cancels = [threading.Event() for _ in models]
        cancel = CancelAll(cancels)
        session.cancel, session.options = cancel, request.options
        session.last_output = session.second_output = None
        session.answered_by = session.second_answered_by = session.relevance = None
        if session.probing is not None:
            session.probing.set()
        session.verdict_saved = False
        case = session.case_version
        streams = [
            self.workbench.generate(
                loaded,
                request.image.image,
                request.question,
                request.options,
                request.settings,
                request.style,
                own_cancel,
            )
            for loaded, own_cancel in zip(models, cancels, strict=True)
        ]
        at_once = len(streams) > 1 and self.workbench.answers_at_once
        updates = interleave(streams, cancel) if at_once else _one_after_another(streams)
        finals: list[StreamUpdate | None] = [None] * len(models)
        kept: list[ModelOutput | None] = [None] * len(models)
        try:
            yield self._started(session, request, pair=len(models) > 1, at_once=at_once)
            for column, update in updates:
                if session.case_version != case:  # another case was loaded: this answer belongs to nothing on screen
                    yield AskUpdate(**{**skips(AskUpdate._fields), "ask_button": _ready()})
                    return
                if not update.done:
                    streamed = {
                        "answer": render.streaming_html(request.options, update),
                        "reasoning": render.shown_reasoning(update),
                    }
                    yield AskUpdate(**{**skips(AskUpdate._fields), **_in_column(column, streamed)})
                    continue
                finals[column] = update
                if update.stop_reason != "cancelled":
                    kept[column] = self._model_output(request, update, models[column])
                if None in finals:  # the other model still answers: show this one finished meanwhile
                    finished = _in_column(column, _finished_fields(request, update, kept[column]))
                    if not at_once:
                        finished["second_timing"] = "Generating..."
                    yield AskUpdate(**{**skips(AskUpdate._fields), **finished})
        except MedVLMError as error:
            yield self._failed(session, request, str(error))
            return
        except Exception:  # noqa: BLE001 - the page must get a message, not a traceback
            logger.exception("Generation failed")
            yield self._failed(
                session,
                request,
                "Generation failed unexpectedly; the error was logged on the server. Please try again.",
            )
            return
        finally:
            updates.close()
            for stream in streams:
                stream.close()
            if session.cancel is cancel:
                session.cancel = None
        if session.case_version != case:
            yield AskUpdate(**{**skips(AskUpdate._fields), "ask_button": _ready()})
            return
        assert None not in finals, "stream_completion always ends with a done update"
        session.last_output, session.answered_by, session.relevance = kept[0], models[0], None
        session.second_output, session.second_answered_by = (kept[1], models[1]) if len(kept) > 1 else (None, None)
        fields: dict[str, Any] = skips(SECOND_ANSWER_FIELDS)
        for column, (final, output) in enumerate(zip(finals, kept, strict=True)):
            fields.update(_in_column(column, _finished_fields(request, final, output)))
        yield AskUpdate(**{**fields, **review_fields(session), "ask_error": "", "ask_button": _ready()})

    def _models_in_order(self, session: Session, blind: bool) -> list[LoadedModel]:
        """The model answering in each column: one, or in a comparison both, drawn at random when ``blind``."""
        workbench = self.workbench
        if workbench.compare is None:
            session.pair_names = None
            return [workbench.model]
        pair = [workbench.model, workbench.compare]
        session.blind = bool(blind)
        if session.blind and secrets.randbelow(2):
            pair.reverse()
        session.pair_names = (workbench.model_name(pair[0]), workbench.model_name(pair[1]))
        return pair

    @staticmethod
    def _started(session: Session, request: _Request, *, pair: bool, at_once: bool) -> AskUpdate:
        """The answer columns emptied and waiting, the review forms closed, Ask disabled."""
        waiting = {"answer": render.streaming_html(request.options, None), "reasoning": "", "raw_output": ""}
        second = _in_column(1, {**waiting, "timing": "Generating..." if at_once else render.WAITING_FOR_FIRST})
        generating = render.review_target(None, None, generating=True)
        return AskUpdate(
            **waiting,
            timing="Generating...",
            **(second if pair else skips(SECOND_ANSWER_FIELDS)),
            **{**review_fields(session), "review_target": generating, "second_review_target": generating},
            ask_error="",
            ask_button=gr.update(interactive=False, value="Answering..."),
        )

    @staticmethod
    def _failed(session: Session, request: _Request, message: str) -> AskUpdate:
        emptied = {"answer": render.options_html(request.options), "reasoning": gr.skip(), "raw_output": gr.skip()}
        return AskUpdate(
            **emptied,
            timing="",
            **_in_column(1, {**emptied, "timing": ""}),
            **review_fields(session),
            ask_error=render.error_markdown(message),
            ask_button=_ready(),
        )

    def stop(self, session: Session) -> Stopped:
        """The Stop button: end this tab's generation after the current token.

        Gradio's ``cancels`` also closes the streaming handler;
        setting the event as well stops the generation thread even when that close comes late
        (or never, for an API client that calls only this endpoint). Pressed when nothing runs
        (just after an answer finished, say), it changes nothing on the page.
        """
        if session.cancel is None:
            return Stopped(**{**skips(Stopped._fields), "ask_button": _ready()})
        session.cancel.set()
        stopped = render.options_html(session.options, status="Stopped", warnings=[render.STOPPED])
        pair = session.pair_names is not None
        return Stopped(
            answer=stopped,
            timing="Stopped by you.",
            ask_button=_ready(),  # Gradio closes the streaming handler before its last update
            second_answer=stopped if pair else gr.skip(),
            second_timing="Stopped by you." if pair else gr.skip(),
        )

    def _request(
        self,
        session: Session,
        question: str,
        options: str,
        correct: str | None,
        decoding: str,
        temperature: Any,
        top_p: Any,
        seed: str | None,
        max_new_tokens: Any,
        max_pixels: Any,
        style: str | None,
    ) -> _Request:
        """Check everything before the model is touched; each problem raises its own MedVLMError."""
        workbench = self.workbench
        if workbench.model is None:
            raise ModelLoadError("No model is loaded, so questions cannot be answered (see the notice at the top).")
        if session.generating:
            raise QuestionError("An answer is still being generated. Wait for it or press Stop before asking again.")
        if session.image is None:
            raise ImageLoadError("Please upload an image or DICOM file first.")
        question, parsed_options = validate_question(question, split_options(options))
        correct = correct or None
        if correct is not None and correct not in LETTERS[: len(parsed_options)]:
            raise QuestionError(
                f"The correct answer {correct} is not one of the options (A to {LETTERS[len(parsed_options) - 1]})."
            )
        tokens = as_number(max_new_tokens, "Maximum new tokens", whole=True)
        if tokens is None:
            raise MedVLMError("Please give the maximum number of new tokens.")
        settings = GenerationSettings.from_options(
            max_new_tokens=tokens,
            sample=decoding == "sample",
            temperature=or_default(as_number(temperature, "The temperature"), 1.0),
            top_p=or_default(as_number(top_p, "Top-p"), 1.0),
            seed=seed_from(seed, sampling=decoding == "sample"),
            max_pixels=as_number(max_pixels, "The image resolution (max pixels)", whole=True),
        )
        try:
            prompt_style = PromptStyle(style or workbench.default_style())
        except ValueError:
            raise MedVLMError(f"Unknown prompt style {style!r}.") from None
        return _Request(
            image=session.image,
            question=question,
            options=parsed_options,
            correct=correct,
            settings=settings,
            style=prompt_style,
        )

    def _model_output(self, request: _Request, final: StreamUpdate, loaded: LoadedModel) -> ModelOutput:
        workbench = self.workbench
        checked = workbench.fidelity is not None and loaded is workbench.model
        fidelity = {"fidelity": workbench.fidelity.status()} if checked else {}
        return ModelOutput.answered(
            final.parsed,
            output_id=uuid.uuid4().hex,
            image=request.image.image,
            image_metadata=request.image.metadata.to_dict(),
            question=request.question,
            options=request.options,
            correct_answer=request.correct,
            stop_reason=final.stop_reason,
            model={**loaded.describe(), **fidelity},
            settings=request.settings.to_dict(),
            prompt_style=request.style.value,
            timing=final.timing.to_dict() if final.timing else None,
            generated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )

    # -- the review ------------------------------------------------------------------------------

    def whoami(self, request: gr.Request | None = None) -> str:
        """Who reviews in password mode (shown once the page loads)."""
        return render.reviewer_markdown(getattr(request, "username", None))

    def submit_review(
        self,
        session: Session,
        flags: list[str] | None,
        comment: str | None = None,
        correct: str | None = None,
        reviewer_name: str | None = None,
        output_id: str | None = None,
        profile: gr.OAuthProfile | None = None,
        request: gr.Request | None = None,
    ) -> str:
        """Save this reviewer's flags and comment on the answer on screen, named by ``output_id``.

        The page sends the id of the answer it shows; a save whose id is not the one this tab
        shows now (another case was loaded, or an old page) is refused, so a review can never be
        attached to a case that is no longer on screen. The same reviewer saving again adds a
        version of their review (earlier ones are kept).
        """
        return self._save(session, flags, comment, correct, reviewer_name, output_id, profile, request)[1]

    def submit_second_review(
        self,
        session: Session,
        second_flags: list[str] | None,
        second_comment: str | None = None,
        correct: str | None = None,
        reviewer_name: str | None = None,
        second_output_id: str | None = None,
        profile: gr.OAuthProfile | None = None,
        request: gr.Request | None = None,
    ) -> str:
        """In a comparison, the review of the answer shown second (named by ``second_output_id``): as
        :meth:`submit_review`, for the other column."""
        return self._save(
            session, second_flags, second_comment, correct, reviewer_name, second_output_id, profile, request,
            second=True,
        )[1]  # fmt: skip

    def save_verdict(
        self,
        session: Session,
        verdict: str | None,
        reviewer_name: str | None = None,
        output_id: str | None = None,
        second_output_id: str | None = None,
        profile: gr.OAuthProfile | None = None,
        request: gr.Request | None = None,
    ) -> VerdictSaved:
        """Save which of the two answers on screen has the better reasoning (or a tie, or both poor).

        The page names both answers by their output ids, shown first and second; a save for any other
        pair than the one on screen is refused. The verdict is stored in terms of outputs (never of
        sides), together with which one was on the left, and the model names are revealed above both
        answers in the reply. Saving again replaces this reviewer's verdict on the pair.
        """
        first, second = session.last_output, session.second_output
        unchanged = {"first_header": gr.skip(), "second_header": gr.skip()}
        problem = self._unsaveable(session, first, output_id) or self._unsaveable(session, second, second_output_id)
        if problem:
            return VerdictSaved(verdict_status=problem, **unchanged)
        if not verdict:
            return VerdictSaved(verdict_status=render.error_markdown("Choose a verdict first."), **unchanged)
        workbench = self.workbench
        try:
            judged = Verdict.from_sides(
                first.output_id,
                second.output_id,
                verdict,
                reviewer=workbench.reviewer(reviewer_name, profile, request),
                blind=session.blind,
            )
            stored, created = workbench.store.add_verdict(
                replace(first, correct_answer=None), replace(second, correct_answer=None), judged
            )
        except MedVLMError as error:
            return VerdictSaved(verdict_status=render.error_markdown(str(error)), **unchanged)
        session.verdict_saved = True
        mirrored = workbench.mirror_verdict(stored, first, second)
        first_name, second_name = session.shown_names()
        action = "Saved" if created else "Changed"
        return VerdictSaved(
            verdict_status=f"{action} your verdict (#{stored.id}): {VERDICT_CHOICES[verdict].lower()}. "
            + render.revealed_pair(first_name, second_name)
            + ("" if mirrored else render.MIRROR_FAILED),
            first_header=render.answer_header(1, first_name),
            second_header=render.answer_header(2, second_name),
        )

    def submit_and_next(
        self,
        session: Session,
        flags: list[str] | None,
        comment: str | None = None,
        correct: str | None = None,
        reviewer_name: str | None = None,
        output_id: str | None = None,
        profile: gr.OAuthProfile | None = None,
        request: gr.Request | None = None,
    ) -> SampleShown:
        """ "Submit & next" while stepping through an evaluation run: save, then show the next sample.

        A save that fails leaves the sample on screen, with the form as filled in and the reason.
        """
        saved, message = self._save(session, flags, comment, correct, reviewer_name, output_id, profile, request)
        if not saved or session.evaluation_index is None:
            return SampleShown(**{**skips(SampleShown._fields), "review_status": message})
        shown = self.cases.show_evaluation_sample(session, session.evaluation_index + 2)
        return shown._replace(review_status=f"{message} This is the next sample.")

    @staticmethod
    def _unsaveable(session: Session, output: ModelOutput | None, output_id: str | None) -> str | None:
        """Why nothing can be saved about the answer ``output_id`` now (``output`` is the one on screen), or None."""
        if session.generating:
            return render.error_markdown(
                "The answer is still being generated. Wait for it to finish, then save your review."
            )
        if not output_id:
            return render.error_markdown(
                "There is no answer to review yet. Ask a question and wait for the answer first."
            )
        if output is None or output.output_id != output_id:
            return render.error_markdown(
                "This was not saved: the answer it is for is no longer on screen (another case was loaded or "
                "asked since). Review the answer shown now, or ask again."
            )
        return None

    def _save(
        self,
        session: Session,
        flags: list[str] | None,
        comment: str | None,
        correct: str | None,
        name: str | None,
        output_id: str | None,
        profile: gr.OAuthProfile | None,
        request: gr.Request | None,
        *,
        second: bool = False,
    ) -> tuple[bool, str]:
        output = session.second_output if second else session.last_output
        problem = self._unsaveable(session, output, output_id)
        if problem:
            return False, problem
        workbench = self.workbench
        try:
            review = Review(
                reviewer=workbench.reviewer(name, profile, request), flags=tuple(flags or ()), comment=comment or ""
            )
            annotation, created = workbench.store.add(
                replace(output, correct_answer=correct or None), review, session_key=workbench.session_key(session)
            )
        except MedVLMError as error:
            return False, render.error_markdown(str(error))
        if created:
            message = f"Saved your review (#{annotation.id})."
        else:
            message = (
                f"Updated your review (#{annotation.id}, version {annotation.revision}; earlier versions are kept)."
            )
        if not workbench.mirror(annotation):
            message += render.MIRROR_FAILED
        return True, message


def _one_after_another(streams: list[Iterator[StreamUpdate]]) -> Iterator[tuple[int, StreamUpdate]]:
    """The streams' updates in turn, each with its stream's index (the second starts when the first ends)."""
    for column, stream in enumerate(streams):
        for update in stream:
            yield column, update


def _in_column(column: int, fields: dict[str, Any]) -> dict[str, Any]:
    """Answer-area fields for column 0 (the first answer) or 1 (the second answer of a comparison)."""
    return fields if column == 0 else {f"second_{name}": value for name, value in fields.items()}


def _finished_fields(request: _Request, final: StreamUpdate, output: ModelOutput | None) -> dict[str, Any]:
    """A finished answer (``output`` None: stopped): its option highlighted, its reasoning, raw text and timing."""
    answer = (
        render.output_html(output, request.correct)
        if output
        else render.answer_html(  # stopped: nothing chosen
            request.options,
            letter=None,
            correct=request.correct,
            format_ok=False,
            problem=None,
            stop_reason=final.stop_reason,
        )
    )
    return {
        "answer": answer,
        "reasoning": render.shown_reasoning(final),
        "raw_output": final.text,
        "timing": render.timing_markdown(final.timing, final.stop_reason),
    }


def _ready() -> dict[str, Any]:
    return gr.update(interactive=True, value="Ask")
