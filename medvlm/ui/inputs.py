"""What the page's fields send, read into the values the app works with, with a sentence for each mistake.

Number fields and sliders pass their values through unchecked (:mod:`medvlm.ui.components`), so
a value typed in a browser or sent by an API client (``"abc"``, ``inf``, ``1.5`` tokens, a
negative window width) reaches these functions and gets a message naming the field, shown
beside it, instead of Gradio's generic "Error" badge.
"""

from __future__ import annotations

import math
import re
import secrets
from typing import Any

from medvlm.dicom import WINDOW_PRESETS, Window
from medvlm.errors import ImageLoadError, MedVLMError
from medvlm.prompt import LETTERS

FILE_DEFAULT = "File default"
AUTOMATIC = "Automatic"
CUSTOM = "Custom"
ANY = "Any"

_LETTER_LABEL = re.compile(r"^\(?([A-Ja-j])\s*[).:]\s+(?=\S)")


def window_choices(hounsfield: bool) -> list[str]:
    """The display windows worth offering: the CT presets (Hounsfield units) only for CT.

    An MR or X-ray has no calibrated unit, so a brain or lung window means nothing on it: it gets
    the file's own window, an automatic one from its pixel values, and a custom one.

    >>> window_choices(False)
    ['File default', 'Automatic', 'Custom']
    >>> window_choices(True)[:4]
    ['File default', 'Automatic', 'brain', 'subdural']
    """
    return [FILE_DEFAULT, AUTOMATIC, *(WINDOW_PRESETS if hounsfield else ()), CUSTOM]


def split_options(text: str | None) -> list[str]:
    """The options typed one per line, without blank lines and without letter labels already typed.

    Options pasted from a question paper often carry their letters ("A) Bone fracture"); the app
    letters them itself, so a label is removed, but only when every line carries one and they
    run A, B, C... in order: "A. fumigatus" alone stays as typed.

    >>> split_options("A) Bone fracture\\nB) Tumour\\n\\n")
    ['Bone fracture', 'Tumour']
    >>> split_options("A. fumigatus\\nC. albicans")
    ['A. fumigatus', 'C. albicans']
    """
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    labels = [_LETTER_LABEL.match(line) for line in lines]
    if lines and all(labels) and [label.group(1).upper() for label in labels] == list(LETTERS[: len(lines)]):
        return [line[label.end() :].strip() for line, label in zip(lines, labels, strict=True)]
    return lines


def as_number(value: Any, what: str, *, whole: bool = False) -> float | int | None:
    """A value from a number field or slider, as sent by a browser or an API client; None when empty.

    >>> as_number("12", "The seed", whole=True), as_number("", "The seed")
    (12, None)
    >>> as_number("abc", "The window width")
    Traceback (most recent call last):
    ...
    medvlm.errors.MedVLMError: The window width must be a number (got 'abc').
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise MedVLMError(f"{what} must be a number (got {value!r}).")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise MedVLMError(f"{what} must be a number (got {str(value)[:40]!r}).") from None
    if not math.isfinite(number):
        raise MedVLMError(f"{what} must be a finite number (got {str(value)[:40]!r}).")
    if whole:
        if number != int(number):
            raise MedVLMError(f"{what} must be a whole number (got {str(value)[:40]!r}).")
        return int(value) if isinstance(value, int) else int(number)
    return number


def window_from(choice: str | None, center: Any = None, width: Any = None) -> Window:
    """The display window chosen on the page (ImageLoadError for an incomplete or non-numeric custom one)."""
    if choice in (None, "", FILE_DEFAULT):
        return Window()
    if choice == AUTOMATIC:
        return Window(automatic=True)
    if choice == CUSTOM:
        try:
            return Window(center=as_number(center, "The window centre"), width=as_number(width, "The window width"))
        except ImageLoadError:
            raise
        except MedVLMError as error:
            raise ImageLoadError(str(error)) from None
    if not isinstance(choice, str):
        raise ImageLoadError(f"Unknown window preset {choice!r}.")
    return Window(preset=choice)


def frame_index(number: Any, frame_count: int) -> int | None:
    """The 0-based index of frame ``number`` as shown on the page (frames are numbered from 1)."""
    shown = as_number(number, "The frame number", whole=True)
    if shown is None:
        return None
    if not 1 <= shown <= frame_count:
        raise ImageLoadError(
            f"There is no frame {shown}: this file has {frame_count} frames, numbered 1 to {frame_count}."
        )
    return shown - 1


def seed_from(text: Any, *, sampling: bool) -> int | None:
    """The typed seed; when sampling without one, a fresh random seed, recorded so the answer can be reproduced."""
    text = "" if text is None else str(text).strip()
    if not text:
        return secrets.randbelow(2**31) if sampling else None
    try:
        return int(text)
    except ValueError:
        raise MedVLMError(f"The seed must be a whole number, or empty for a random one (got {text!r}).") from None


def or_default(value: float | int | None, default: float) -> float:
    return default if value is None else float(value)


def any_filter(value: str | None) -> str | None:
    """A Reviews filter's value for the store: None for "Any"."""
    return None if value in (None, "", ANY) else value
