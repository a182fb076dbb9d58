"""Text that people type (questions, options, comments, reviewer names): limits and normalisation.

Every field has a length limit, because one 100 KB question holds the single CPU generation slot
for a minute and a 1 MB comment bloats every export, and control characters (NUL above all) are
refused, because they break exports, terminals and the SQLite tools people use to read the store.
Reviewer names are normalised so that one person is one reviewer: Unicode NFKC (a full-width
"ａｌｉｃｅ" is "alice"), no invisible characters (a zero-width space makes "ali\u200bce" look like
"alice"), whitespace collapsed. Case is kept for display; the store compares names case-blind.
"""

from __future__ import annotations

import html
import re
import unicodedata

from medvlm.errors import MedVLMError

MAX_QUESTION_CHARS = 2000
"""A question: far longer than any published VQA question (the longest of MedVLM-R1's 900 is under 300)."""
MAX_OPTION_CHARS = 500
"""One option: a sentence or two."""
MAX_COMMENT_CHARS = 5000
"""A reviewer's comment: about a page."""
MAX_NAME_CHARS = 64
"""A reviewer name."""

_ALLOWED_CONTROLS = {"\n", "\t", "\r"}
_NAME_CHARACTERS = re.compile(r"[\w .'@-]+")


def check_text(
    text: str, *, what: str, limit: int, multiline: bool = True, error: type[MedVLMError] = MedVLMError
) -> str:
    """``text`` if it is within ``limit`` characters and holds no control character, else ``error``.

    ``what`` names the field in the message ("The question", "Option B", "Your comment").
    Newlines and tabs are allowed where ``multiline``.
    """
    if len(text) > limit:
        raise error(f"{what} is too long: {len(text):,} characters, and the limit is {limit:,}. Please shorten it.")
    allowed = _ALLOWED_CONTROLS if multiline else set()
    for character in text:
        if unicodedata.category(character) == "Cc" and character not in allowed:
            raise error(
                f"{what} contains a control character (U+{ord(character):04X}), which cannot be stored or shown. "
                "Please remove it."
            )
    return text


def normalize_name(name: str, *, error: type[MedVLMError] = MedVLMError) -> str:
    """A reviewer name as stored: NFKC, invisible characters removed, whitespace collapsed, checked.

    Raises :class:`MedVLMError` for an empty name, one over :data:`MAX_NAME_CHARS`, or one with
    characters other than letters, digits, spaces and ``. ' @ - _`` (markup such as ``<b>`` is
    refused rather than silently kept or stripped).
    """
    text = unicodedata.normalize("NFKC", name or "")
    text = "".join(
        character
        for character in text
        if unicodedata.category(character) not in ("Cf", "Cc", "Zl", "Zp") or character == " "
    )
    text = " ".join(text.split())
    if not text:
        raise error("Please enter your name (reviewer) before saving.")
    if len(text) > MAX_NAME_CHARS:
        raise error(f"A reviewer name is at most {MAX_NAME_CHARS} characters (got {len(text):,}).")
    if not _NAME_CHARACTERS.fullmatch(text):
        raise error("A reviewer name may hold letters, digits, spaces and . ' @ - _ only.")
    return text


def name_key(name: str) -> str:
    """The form in which two normalised names are the same reviewer: case-folded ("ALICE" is "alice")."""
    return name.casefold()


_LINK_SYNTAX = re.compile(r"([\\\[\]])")


def escape_markdown(text: object) -> str:
    """``text`` made safe inside Markdown: no HTML, no link, no image can come of it.

    Gradio's Markdown renders HTML tags (sanitised, but an ``<img>`` survives) and links, so a
    reviewer name or a typed value such as ``[Session expired: sign in again](http://...)`` would
    render as a link. HTML is escaped (``&lt;``), brackets and backslashes are backslash-escaped
    (no ``[text](url)``, ``![image](src)`` or reference link can form), and ``://`` and ``www.``
    are broken up so that no bare address becomes an automatic link. Other punctuation is left
    alone, so messages read as typed (emphasis is the worst a stray ``*`` can do).
    """
    escaped = html.escape(str(text), quote=False)
    escaped = _LINK_SYNTAX.sub(r"\\\1", escaped)
    return escaped.replace("://", ":\\/\\/").replace("www.", "www\\.")
