"""The one exception family the project raises for problems a person can fix.

Every message is written for the person at the screen (a radiologist, or the engineer running
the CLI): it says what is wrong and, where possible, what to do. The UI and the CLI show
``str(error)`` as it is, so messages never contain tracebacks, file-system internals or any
DICOM patient tag.
"""

from __future__ import annotations


class MedVLMError(Exception):
    """A problem with the user's input or set-up, with a message meant to be shown as is."""


class ImageLoadError(MedVLMError):
    """An uploaded file could not be turned into an image the model can read."""


class QuestionError(MedVLMError):
    """The question or its options cannot be put to the model (empty, too few, duplicates...)."""


class ModelLoadError(MedVLMError):
    """A model or processor could not be loaded from the given Hub id or directory."""
