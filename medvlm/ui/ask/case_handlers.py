"""The Ask tab's left half: putting a case on screen (an upload, an example, an evaluation sample)
and viewing it (window, frame).

Every handler that puts another case on screen calls ``session.new_case()`` and empties the
answer area and the review form with it (:func:`~medvlm.ui.events.empty_answer_fields`), so a
review can only ever be saved against the case on screen. Another display window of the same
pixels is not another case: the answer stays, and the viewer says which window it was given with.
Nothing here logs file names or image metadata: file names can carry patient names.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from medvlm.annotations import ModelOutput
from medvlm.dicom import WINDOW_PRESETS, Window
from medvlm.errors import ImageLoadError, MedVLMError
from medvlm.images import LoadedImage, load_image, read_input
from medvlm.prompt import LETTERS, validate_question
from medvlm.ui import render
from medvlm.ui.cases import discard_upload, file_name, read_run_uploads
from medvlm.ui.events import (
    ANSWER_FIELDS,
    IMAGE_FIELDS,
    PAIR_FIELDS,
    QUESTION_FIELDS,
    REVIEW_FIELDS,
    CaseShown,
    ExampleShown,
    ImageRendered,
    SampleShown,
    empty_answer_fields,
    empty_second_answer,
    review_fields,
    skips,
)
from medvlm.ui.inputs import (
    CUSTOM,
    FILE_DEFAULT,
    as_number,
    frame_index,
    split_options,
    window_choices,
    window_from,
)
from medvlm.ui.session import Session
from medvlm.ui.viewer import viewer_value, with_overlay
from medvlm.ui.workbench import Workbench
from medvlm.user_text import escape_markdown


class CaseHandlers:
    """Uploads, examples, evaluation samples, and the window and frame of the image on screen."""

    def __init__(self, workbench: Workbench) -> None:
        self.workbench = workbench

    # -- an upload -------------------------------------------------------------------------------

    def load_file(
        self, session: Session, upload: str | None, question: str | None = None, options: str | None = None
    ) -> CaseShown:
        """An upload, rendered as the model will see it: the file's own window, the middle frame.

        A refused file is not kept anywhere (the upload control holds nothing) and the reason is
        said right under it; the case on screen before is gone either way, so nothing can be
        mistaken for the new file. Gradio's copy of the file is deleted once read.

        An upload brings only an image, so the case fields it does not set are cleared: the
        correct answer always (it belongs to the case before), and the question and options
        when an example or a sample put them there unchanged. What the person typed stays.
        """
        if not upload:
            _forget_case(session)
            error = ""
        else:
            try:
                error = _open(session, upload, Window())
            finally:
                discard_upload(upload)
        return CaseShown(
            upload=None,
            upload_error=render.error_markdown(error),
            **self._image(session),
            **empty_answer_fields(session),
            **_question_after_upload(session, question or "", options or ""),
        )

    # -- the window and the frame ----------------------------------------------------------------

    def render_image(
        self, session: Session, window: str | None = None, center: Any = None, width: Any = None, frame: Any = None
    ) -> ImageRendered:
        """Another window (preset, automatic or custom) or frame (numbered from 1) of the file on screen.

        Choosing "Custom" without a width fills in the window currently shown, so there is
        something to adjust. Otherwise the centre and width fields are left as they are: writing
        back the values this render was sent would overwrite what the person typed meanwhile. Every
        bad value gets a sentence under the controls; the image stays.
        """
        image = session.image
        fill_in = window == CUSTOM and not width and image is not None  # a browser sends an empty number as 0
        if fill_in:
            center, width = image.metadata.window_center, image.metadata.window_width
        custom = {
            "custom_window": gr.update(visible=window == CUSTOM),
            "center": center if fill_in else gr.skip(),
            "width": width if fill_in else gr.skip(),
        }
        nothing = {**skips(ImageRendered._fields), **custom}
        if session.file_bytes is None or image is None:
            return ImageRendered(**{**nothing, "window_error": ""})
        try:
            chosen = window_from(window, center, width)
            index = frame_index(frame, image.metadata.frame_count) if image.metadata.frame_count > 1 else None
            rendered = load_image(session.file_bytes, window=chosen, frame=index)
        except MedVLMError as error:
            return ImageRendered(**{**nothing, "window_error": render.error_markdown(str(error))})
        return self._show_rendering(session, rendered, custom)

    def view(self, session: Session, viewer: dict[str, Any] | None) -> ImageRendered:
        """The viewer asked for a window (dragged) or a frame (wheel, arrow keys): render it.

        ``viewer`` is the viewer's value with the requested ``center`` and ``width`` or ``frame``
        (numbered from 1) written into it by its script.
        """
        image = session.image
        if not viewer or image is None or session.file_bytes is None:
            return ImageRendered(**skips(ImageRendered._fields))
        metadata = image.metadata
        custom = {}
        try:
            requested = viewer.get("center"), viewer.get("width")
            moved = requested != (metadata.window_center, metadata.window_width) and metadata.window_name is not None
            if moved:
                chosen = window_from(CUSTOM, *requested)
                custom = {"window": CUSTOM, "custom_window": gr.update(visible=True)}
                custom |= {"center": chosen.center, "width": chosen.width}
            else:
                chosen = _window_of(metadata)
            index = frame_index(viewer.get("frame"), metadata.frame_count) if metadata.frame_count > 1 else None
            rendered = load_image(session.file_bytes, window=chosen, frame=index)
        except MedVLMError as error:
            return ImageRendered(**{**skips(ImageRendered._fields), "window_error": render.error_markdown(str(error))})
        return self._show_rendering(session, rendered, custom)

    def _show_rendering(self, session: Session, rendered: LoadedImage, controls: dict[str, Any]) -> ImageRendered:
        before = session.image.metadata
        if rendered.metadata == before:
            return ImageRendered(**{**skips(ImageRendered._fields), **controls, "window_error": ""})
        if rendered.metadata.frame_index != before.frame_index:  # another slice: another case
            label = session.source_label
            session.new_case()
            session.image, session.source_label = rendered, label
            answer = empty_answer_fields(session)
        else:  # the same pixels, shown with another window: the answer about them stays
            session.image = rendered
            answer = skips(ANSWER_FIELDS + REVIEW_FIELDS + PAIR_FIELDS)
        shown = {
            name: value for name, value in self._image(session).items() if name not in ("window", "dicom_controls")
        }
        return ImageRendered(**{**shown, "window": gr.skip(), "dicom_controls": gr.skip(), **controls, **answer})

    # -- an example ------------------------------------------------------------------------------

    def load_example(self, index: int, session: Session) -> ExampleShown:
        """An example case: its image, question, options, correct answer and window."""
        example = self.workbench.examples[index]
        window = example.window if example.window in WINDOW_PRESETS else FILE_DEFAULT
        error = _open(session, example.file, window_from(window))
        if not error:
            session.source_label = f"Example: {example.label}"
        session.options = list(example.options)
        answer = example.answer if example.answer in LETTERS[: len(example.options)] else ""
        return ExampleShown(
            upload=None,
            upload_error=render.error_markdown(error),
            **self._image(session, window),
            **empty_answer_fields(session),
            **_question_of_case(session, example.question, example.options, answer),
        )

    # -- an evaluation run -----------------------------------------------------------------------

    def load_evaluation(self, session: Session, evaluation_file: str | Sequence[str] | None) -> SampleShown:
        """An evaluation run: its ``samples.jsonl``, uploaded with the image files it names.

        Images come from the upload (matched by file name) or from the folder the operator
        configured (``--evaluation-images``); a path inside ``samples.jsonl`` never makes the
        server open anything else. Gradio's copies of the uploads are deleted once read.
        """
        session.evaluation, session.evaluation_images = [], {}
        paths = [evaluation_file] if isinstance(evaluation_file, str) else list(evaluation_file or [])
        try:
            if not paths:
                return _no_sample("", slider=gr.update(visible=False))
            samples, images = read_run_uploads(paths)
        except MedVLMError as error:
            return _no_sample(str(error), slider=gr.update(visible=False))
        finally:
            for path in paths:
                discard_upload(path)
        session.evaluation, session.evaluation_images = samples, images
        shown = self.show_evaluation_sample(session, 1)
        many = len(samples) > 1  # a slider needs a minimum below its maximum
        slider = gr.update(
            visible=many, minimum=1, maximum=max(len(samples), 2), value=1, label=f"Sample (1 to {len(samples)})"
        )
        return shown._replace(evaluation_sample=slider)

    def show_evaluation_sample(self, session: Session, evaluation_sample: Any) -> SampleShown:
        """Sample ``evaluation_sample`` (from 1) of the imported run, shown as if just answered, ready for review.

        Reviewing the same sample twice (or by a second reviewer) meets one stored output: its id
        and every stored field are derived from the sample alone.
        """
        if not session.evaluation:
            return _no_sample("Import a samples.jsonl first.")
        if session.generating:
            return _no_sample("An answer is still being generated. Wait for it or press Stop first.")
        try:
            requested = as_number(evaluation_sample, "The sample number", whole=True) or 1
        except MedVLMError as error:
            return _no_sample(str(error))
        index = min(max(requested, 1), len(session.evaluation)) - 1
        sample = session.evaluation[index]
        try:
            image = self._evaluation_image(session, index)
            question, options = validate_question(sample["question"], sample["options"])
            output = ModelOutput.from_sample(sample, image, index=index, question=question, options=options)
        except MedVLMError as error:
            return _no_sample(f"Sample {index + 1}: {error}")
        session.new_case()
        session.file_bytes, session.image, session.options, session.last_output = None, image, options, output
        session.evaluation_index = index
        session.source_label = f"Evaluation sample {index + 1} of {len(session.evaluation)}"
        model_name = output.model.get("model") or "unknown model"
        return SampleShown(
            **self._image(session),
            **_question_of_case(session, question, options, output.correct_answer or ""),
            answer=render.output_html(output, output.correct_answer),
            reasoning=output.reasoning,
            raw_output=output.completion,
            timing=escape_markdown(f"From an evaluation run of {model_name}; review it like a fresh answer."),
            **empty_second_answer(session),
            **review_fields(session),
            evaluation_sample=index + 1,
            evaluation_error="",
        )

    def _evaluation_image(self, session: Session, index: int) -> LoadedImage:
        """The image of sample ``index``: uploaded with the samples, or inside the configured folder.

        Every other case (a path outside the folder, a missing file, the store's own images) gets
        the same sentence, so the answer reveals nothing about what exists on the server.
        """
        named = session.evaluation[index]["image"]
        name = file_name(named) if isinstance(named, str) else ""
        if name in session.evaluation_images:
            return load_image(session.evaluation_images[name])
        folder = self.workbench.config.evaluation_images
        if folder is not None and isinstance(named, str) and named.strip():
            root = Path(folder).resolve()
            candidate = (root / named).resolve()
            inside = root in candidate.parents and self.workbench.store.data_dir not in (candidate, *candidate.parents)
            if inside and candidate.is_file():
                return load_image(read_input(candidate))
        where = " or in the image folder this app was started with" if folder is not None else ""
        raise ImageLoadError(
            f"its image ({name or 'no file name'}) was not uploaded with the samples{where}. "
            "Upload samples.jsonl together with the image files it names."
        )

    # -- shared ----------------------------------------------------------------------------------

    def _image(self, session: Session, window: str | None = None) -> dict[str, Any]:
        """The image fields for the case on screen: the viewer, its facts and the controls that apply."""
        image = session.image
        metadata = image.metadata if image is not None else None
        windowable = metadata is not None and metadata.window_name is not None
        choices = window_choices(bool(metadata and metadata.hounsfield))
        kept = window if window in choices and window != CUSTOM else FILE_DEFAULT
        frames = metadata.frame_count if metadata is not None else 1
        return {
            "viewer": _with_map(session, viewer_value(image, case=session.case_version, note=_answered_with(session))),
            "image_info": render.image_markdown(metadata, label=session.source_label) if metadata else "",
            "dicom_controls": gr.update(visible=windowable),
            "window": gr.update(choices=choices, value=kept),
            "custom_window": gr.update(visible=False),
            "center": metadata.window_center if windowable else None,
            "width": metadata.window_width if windowable else None,
            "frame": gr.update(
                visible=frames > 1,
                minimum=1,
                maximum=max(frames, 2),
                step=1,
                value=metadata.frame_index + 1 if metadata else 1,
                label=f"Frame (1 to {frames}; wheel or arrow keys on the image)",
            ),
            "window_error": "",
        }


def _answered_with(session: Session) -> str:
    """When the answer on screen was given with another window than the one shown: which."""
    output, image = session.last_output, session.image
    if output is None or image is None:
        return ""
    asked = output.image_metadata or {}
    if (asked.get("window_center"), asked.get("window_width")) == (
        image.metadata.window_center,
        image.metadata.window_width,
    ):
        return ""
    return f"answer given with {asked.get('window_name') or 'another'} window"


def _window_of(metadata: Any) -> Window:
    """The window now shown, to render another frame with it."""
    if metadata.window_name in WINDOW_PRESETS:
        return Window(preset=metadata.window_name)
    if metadata.window_name == "custom":
        return Window(center=metadata.window_center, width=metadata.window_width)
    if metadata.window_name == "automatic":
        return Window(automatic=True)
    return Window()


def _question_of_case(session: Session, question: str, options: Sequence[str], correct: str) -> dict[str, Any]:
    """The question fields set to a loaded case's own (an example's, a sample's): all three, never a mix."""
    text = "\n".join(options)
    session.loaded_question, session.typed_options = (question, text), list(options)
    return {
        "question": question,
        "options": text,
        "correct": gr.update(choices=render.letter_choices(options), value=correct),
    }


def _question_after_upload(session: Session, question: str, options: str) -> dict[str, Any]:
    """The question fields after an upload: the correct answer cleared, and the loaded case's question and options
    too unless the person has changed them (an edited question is theirs, for the new image)."""
    loaded_question, loaded_options = session.loaded_question or (None, None)
    session.loaded_question = None
    question = "" if question == loaded_question else question
    options = "" if options == loaded_options else options
    session.typed_options = split_options(options)[: len(LETTERS)]
    return {
        "question": question,
        "options": options,
        "correct": gr.update(choices=render.letter_choices(session.typed_options or None), value=""),
    }


def _forget_case(session: Session) -> None:
    session.new_case()
    session.file_bytes, session.image, session.source_label = None, None, None


def _open(session: Session, source: str | Path, window: Window | None) -> str:
    """Read a file once, render it into ``session`` as a new case; the error message, or "".

    The bytes are kept only when they may be rendered again (a DICOM's window, a frame of a
    multi-page file): a plain PNG or JPEG is not held in memory twice.
    """
    _forget_case(session)
    try:
        data = read_input(source)
        session.image = load_image(data, window=window)
    except ImageLoadError as error:
        return str(error)
    metadata = session.image.metadata
    if metadata.source_format == "DICOM" or metadata.frame_count > 1:
        session.file_bytes = data
    return ""


def _no_sample(error: str, *, slider: Any = None) -> SampleShown:
    """Nothing on the page changes but the message (the case on screen, and its answer, stay)."""
    unchanged = skips(IMAGE_FIELDS + QUESTION_FIELDS + ANSWER_FIELDS + REVIEW_FIELDS + PAIR_FIELDS)
    return SampleShown(
        **unchanged,
        evaluation_sample=gr.skip() if slider is None else slider,
        evaluation_error=render.error_markdown(error),
    )


def _with_map(session: Session, value: dict[str, Any] | None) -> dict[str, Any] | None:
    """The viewer value with the selected sentence's relevance map, while it belongs to the answer on screen.

    A window change re-renders the picture of the same case: the map the reviewer chose stays on it.
    """
    output, selected = session.last_output, session.relevance
    index = session.relevance_sentence
    if value is None or output is None or selected is None or index is None or selected[0] != output.output_id:
        return value
    return with_overlay(value, selected[1].maps[index], index)
