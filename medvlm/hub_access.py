"""Whether a Hub model can be fetched now, decided once and fast, before any download starts.

Without network, ``from_pretrained`` on a Hub id retries every file with backoff: about four minutes
and 45-90 retry lines before the real message. So every entry point that loads a model by Hub id
first asks the Hub once (one request, a few seconds at most): if it answers, loading goes on as
usual; if it does not but the model is in the local cache, the cached copy is loaded from its
folder at once; if neither, :class:`~medvlm.errors.ModelLoadError` says what to do.
With ``HF_HUB_OFFLINE=1`` nothing is asked: the cache is looked in, and a model that is not there
is said to be missing because offline mode is on (not because of the model id or the network).
"""

from __future__ import annotations

import logging

from huggingface_hub import constants, get_session, snapshot_download

from medvlm.errors import ModelLoadError

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 5.0
"""How long the one reachability request may take (connect and first byte)."""


def hub_answers(timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """True when the Hub endpoint (``HF_ENDPOINT``) returns any HTTP response within ``timeout_s``."""
    try:
        get_session().head(constants.ENDPOINT, timeout=timeout_s)
    except Exception:  # noqa: BLE001 - DNS failure, refused connection, timeout, proxy error: all "unreachable"
        return False
    return True


def hub_source(model_id: str, revision: str | None = None) -> str:
    """What to load for the Hub id ``model_id``, after one quick check: the id, or its cached copy.

    The id itself when the Hub answers (or ``HF_HUB_OFFLINE`` is set); the local snapshot folder
    of the cache when it does not but the model was downloaded before (a folder, not the id with
    ``local_files_only``: transformers' adapter lookup would still go to the network); raises
    :class:`ModelLoadError` when it is neither.
    """
    if constants.HF_HUB_OFFLINE:
        if _cached(model_id, revision) is None:
            raise ModelLoadError(
                offline_mode_note(model_id, f"and {model_id} is not in the local cache ({constants.HF_HUB_CACHE})")
            )
        return model_id
    if hub_answers():
        return model_id
    folder = _cached(model_id, revision)
    if folder is not None:
        logger.warning("The Hugging Face Hub cannot be reached; using the copy of %s in the local cache.", model_id)
        return folder
    raise ModelLoadError(
        f"The Hugging Face Hub ({constants.ENDPOINT}) cannot be reached from this machine, and {model_id} is not in "
        f"the local cache. Download it first where there is network (hf download {model_id}) and set HF_HUB_OFFLINE=1 "
        "to use the cache without waiting for the network, or pass a local checkpoint directory. To try everything "
        "without weights, build the tiny test model: medvlm-tiny-model --format-warm-start ./tiny-model"
    )


def offline_mode_note(model_id: str, situation: str) -> str:
    """Why a Hub model does not load while ``HF_HUB_OFFLINE`` is set (``situation``), and what to do.

    Offline mode, not the model id or the network, is then what keeps the files away, so the
    message says so wherever loading stops: here for a model missing from the cache, in
    :mod:`medvlm.model` for one whose cached copy did not load.
    """
    return (
        f"The Hugging Face Hub's offline mode is on (HF_HUB_OFFLINE=1), {situation}. Download it where there is "
        f"network (hf download {model_id}), or unset HF_HUB_OFFLINE to let it download now, or pass a local "
        "checkpoint directory."
    )


def _cached(model_id: str, revision: str | None) -> str | None:
    """The local snapshot folder of ``model_id`` in the Hub cache, or None when it was never downloaded."""
    try:
        return snapshot_download(model_id, revision=revision, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached (LocalEntryNotFoundError), or a broken cache entry
        return None
