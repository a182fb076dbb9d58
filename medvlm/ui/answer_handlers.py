"""The Ask tab's right half: the question, the streamed answer, and the review of that answer.

Every problem a user can fix arrives as a :class:`~medvlm.errors.MedVLMError` and is shown as
its message beside the control, never as a traceback or Gradio's "Error" badge. Nothing here
logs answers or reviews.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

import gradio as gr

from medvlm.annotations import ModelOutput, Review
from medvlm.errors import ImageLoadError, MedVLMError, ModelLoadError, QuestionError
from medvlm.images import LoadedImage
from medvlm.prompt import LETTERS, PromptStyle, validate_question
from medvlm.streaming import GenerationSettings, StreamUpdate
from medvlm.ui import render
from medvlm.ui.case_handlers import CaseHandlers
from medvlm.ui.events import AskUpdate, SampleShown, Stopped, review_fields, skips
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

    def preview_options(self, session: Session, options: str, correct: str | None):
        """The options as typed, lettered; the correct-answer choices follow them.

        While the options are those of the last answer (an evaluation sample just shown sets
        them too), that answer stays highlighted. Returns (answer panel, correct-answer dropdown).
        """
        parsed = split_options(options)[: len(LETTERS)]
        keep = correct if correct and correct in LETTERS[: len(parsed)] else ""
        output = session.last_output
        if output is not None and output.options == parsed and not session.generating:
            panel = render.output_html(output, keep or None)
        else:
            panel = render.options_html(parsed)
        return panel, gr.update(choices=render.letter_choices(parsed), value=keep)

    def show_answer(self, session: Session, correct: str | None):
        """The correct answer was changed after the answer came: mark right and wrong again."""
        output = session.last_output
        if output is None or session.generating:
            return gr.skip()
        return render.output_html(output, correct or None)

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
    ) -> Iterator[AskUpdate]:
        """Stream the model's answer as :class:`~medvlm.ui.events.AskUpdate` s.

        The reasoning grows with every piece of text; the last update highlights the chosen
        option (or says why there is none), keeps the finished answer in the session and names
        it (its output id) so that a save says which answer it is for, and opens the review form.
        Ask is disabled while the answer streams (a double click asks once). Closing this
        generator (Gradio does on Stop, or when the tab goes away) stops the generation thread
        too. If another case is loaded meanwhile, the generation is stopped and its answer never
        shown or kept: the page belongs to the new case.
        """
        try:
            request = self._request(
                session, question, options, correct, decoding, temperature, top_p, seed, max_new_tokens, max_pixels,
                style,
            )  # fmt: skip
        except MedVLMError as error:
            yield AskUpdate(**{**skips(AskUpdate._fields), "ask_error": render.error_markdown(str(error))})
            return
        cancel = threading.Event()
        session.cancel, session.options, session.last_output = cancel, request.options, None
        case = session.case_version
        stream = self.workbench.generate(
            self.workbench.model,
            request.image.image,
            request.question,
            request.options,
            request.settings,
            request.style,
            cancel,
        )
        final: StreamUpdate | None = None
        busy = gr.update(interactive=False, value="Answering...")
        try:
            yield AskUpdate(
                answer=render.streaming_html(request.options, None),
                reasoning="",
                raw_output="",
                timing="Generating...",
                **{**review_fields(session), "review_target": render.review_target(None, None, generating=True)},
                ask_error="",
                ask_button=busy,
            )
            for update in stream:
                if session.case_version != case:  # another case was loaded: this answer belongs to nothing on screen
                    yield AskUpdate(**{**skips(AskUpdate._fields), "ask_button": _ready()})
                    return
                if update.done:
                    final = update
                else:
                    streamed = {
                        "answer": render.streaming_html(request.options, update),
                        "reasoning": render.shown_reasoning(update),
                    }
                    yield AskUpdate(**{**skips(AskUpdate._fields), **streamed})
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
            stream.close()
            if session.cancel is cancel:
                session.cancel = None
        if session.case_version != case:
            yield AskUpdate(**{**skips(AskUpdate._fields), "ask_button": _ready()})
            return
        assert final is not None, "stream_completion always ends with a done update"
        if final.stop_reason != "cancelled":
            session.last_output = self._model_output(request, final)
        output = session.last_output
        yield AskUpdate(
            answer=render.output_html(output, request.correct)
            if output
            else render.answer_html(
                request.options,
                letter=None,
                correct=request.correct,
                format_ok=False,
                problem=None,
                stop_reason=final.stop_reason,
            ),  # fmt: skip
            reasoning=render.shown_reasoning(final),
            raw_output=final.text,
            timing=render.timing_markdown(final.timing, final.stop_reason),
            **review_fields(session),
            ask_error="",
            ask_button=_ready(),
        )

    @staticmethod
    def _failed(session: Session, request: _Request, message: str) -> AskUpdate:
        return AskUpdate(
            answer=render.options_html(request.options),
            reasoning=gr.skip(),
            raw_output=gr.skip(),
            timing="",
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
            return Stopped(answer=gr.skip(), timing=gr.skip(), ask_button=_ready())
        session.cancel.set()
        return Stopped(
            answer=render.options_html(session.options, status="Stopped", warnings=[render.STOPPED]),
            timing="Stopped by you.",
            ask_button=_ready(),  # Gradio closes the streaming handler before its last update
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
        settings = GenerationSettings(
            max_new_tokens=tokens,
            do_sample=decoding == "sample",
            temperature=or_default(as_number(temperature, "The temperature"), 1.0),
            top_p=or_default(as_number(top_p, "Top-p"), 1.0),
            seed=seed_from(seed, sampling=decoding == "sample"),
            max_pixels=as_number(max_pixels, "The image resolution (max pixels)", whole=True),
        ).validate()
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

    def _model_output(self, request: _Request, final: StreamUpdate) -> ModelOutput:
        workbench = self.workbench
        fidelity = {"fidelity": workbench.fidelity.status()} if workbench.fidelity else {}
        return ModelOutput.answered(
            final.parsed,
            output_id=uuid.uuid4().hex,
            image=request.image.image,
            image_metadata=request.image.metadata.to_dict(),
            question=request.question,
            options=request.options,
            correct_answer=request.correct,
            stop_reason=final.stop_reason,
            model={**workbench.model.describe(), **fidelity},
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
    ) -> tuple[bool, str]:
        if session.generating:
            return False, render.error_markdown(
                "The answer is still being generated. Wait for it to finish, then save your review."
            )
        output = session.last_output
        if not output_id:
            return False, render.error_markdown(
                "There is no answer to review yet. Ask a question and wait for the answer first."
            )
        if output is None or output.output_id != output_id:
            return False, render.error_markdown(
                "This review was not saved: the answer it is for is no longer on screen (another case was loaded "
                "since). Review the answer shown now, or ask again."
            )
        workbench = self.workbench
        try:
            review = Review(
                reviewer=workbench.reviewer(name, profile, request), flags=tuple(flags or ()), comment=comment or ""
            )
            annotation, created = workbench.store.add(replace(output, correct_answer=correct or None), review)
        except MedVLMError as error:
            return False, render.error_markdown(str(error))
        if created:
            message = f"Saved your review (#{annotation.id})."
        else:
            message = (
                f"Updated your review (#{annotation.id}, version {annotation.revision}; earlier versions are kept)."
            )
        if workbench.hub_sync is not None:
            try:
                workbench.hub_sync.record(annotation)
            except Exception as error:  # noqa: BLE001 - the review is safe locally; say so
                logger.warning("Hub sync of annotation %s failed: %s", annotation.id, error)
                message += " It is stored locally; copying it to the Hub dataset failed and was logged."
        return True, message


def _ready() -> dict[str, Any]:
    return gr.update(interactive=True, value="Ask")
