"""How the app is set up: command-line flags first, then environment variables, then defaults.

A Hugging Face Space runs ``python app.py`` with no arguments and configures it through the
Space's variables and secrets (``MEDVLM_MODEL``, ``MEDVLM_USERS``...), so every flag has an
environment fallback, and the defaults are what a Space needs (listen on 0.0.0.0:7860 when
``SPACE_ID`` is set). On a laptop the same defaults keep the app on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from medvlm.annotations import DATA_DIR_ENV
from medvlm.errors import MedVLMError
from medvlm.images import MAX_INPUT_BYTES
from medvlm.published import DEFAULT_MODEL_ID
from medvlm.user_text import normalize_name

MODEL_ENV = "MEDVLM_MODEL"
COMPARE_MODEL_ENV = "MEDVLM_COMPARE_MODEL"
USERS_ENV = "MEDVLM_USERS"
CONCURRENCY_ENV = "MEDVLM_CONCURRENCY"
FAST_CPU_ENV = "MEDVLM_FAST_CPU"
EVALUATION_IMAGES_ENV = "MEDVLM_EVALUATION_IMAGES"
FIDELITY_CHECK_ENV = "MEDVLM_FIDELITY_CHECK"

DEFAULT_PORT = 7860
DEFAULT_EXAMPLES = Path(__file__).resolve().parents[2] / "assets" / "examples.json"
"""``assets/examples.json`` beside ``app.py`` in a checkout (absent in an installed package: no examples)."""

ReviewerMode = Literal["oauth", "password", "name"]


class ConfigError(MedVLMError):
    """A flag or environment variable has a value the app cannot use."""


@dataclass(frozen=True)
class AppConfig:
    """Everything the app needs to know before it starts."""

    model: str = DEFAULT_MODEL_ID
    """Hub id, checkpoint directory or LoRA adapter directory."""
    compare_model: str | None = None
    """A second model (same kinds of source) answering every question beside the first, for comparison."""
    data_dir: Path | None = None
    """Where annotations are stored (None: ``$MEDVLM_DATA_DIR`` or ``./medvlm-data``)."""
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    share: bool = False
    users: tuple[tuple[str, str], ...] = ()
    """Username/password pairs for Gradio's login page; empty: no password."""
    oauth: bool = False
    """Sign in with Hugging Face (a Space with ``hf_oauth: true``)."""
    concurrency: int = 1
    """How many generations run at once (see :func:`default_concurrency`)."""
    examples_file: Path = DEFAULT_EXAMPLES
    fast_cpu: bool = True
    """On a CPU, load the model with the fast path (int8 weights, smaller images): ``medvlm.fast_cpu``."""
    fidelity_check: bool = True
    """On a CPU, check the fast path against the bf16 model once per model revision (``medvlm.fidelity``)."""
    evaluation_images: Path | None = None
    """A folder the images of imported evaluation runs may be read from; None: only uploaded images.

    A ``samples.jsonl`` names its images by path; the app opens such a path only inside this
    folder, never anywhere else on the server.
    """

    @property
    def reviewer_mode(self) -> ReviewerMode:
        """Who signs a review: the Hugging Face account, the password login, or a typed name."""
        if self.oauth:
            return "oauth"
        if self.users:
            return "password"
        return "name"

    @classmethod
    def from_args(cls, argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> AppConfig:
        """Parse ``argv`` (default: ``sys.argv[1:]``) with ``env`` (default: ``os.environ``) as fallback.

        Raises :class:`ConfigError` for malformed values, with the flag or variable named.
        """
        env = os.environ if env is None else env
        args = build_parser().parse_args(argv)
        data_dir = args.data_dir or env.get(DATA_DIR_ENV, "").strip() or None
        return cls(
            model=args.model or env.get(MODEL_ENV, "").strip() or DEFAULT_MODEL_ID,
            compare_model=args.compare_model or env.get(COMPARE_MODEL_ENV, "").strip() or None,
            data_dir=Path(data_dir).expanduser() if data_dir else None,
            host=args.host
            or env.get("GRADIO_SERVER_NAME", "").strip()
            or ("0.0.0.0" if env.get("SPACE_ID") else "127.0.0.1"),
            port=args.port or _int(env.get("GRADIO_SERVER_PORT"), "GRADIO_SERVER_PORT") or DEFAULT_PORT,
            share=args.share,
            users=parse_users(
                args.auth if args.auth is not None else env.get(USERS_ENV, ""),
                "--auth" if args.auth is not None else USERS_ENV,
            ),
            oauth=bool(env.get("SPACE_ID") and env.get("OAUTH_CLIENT_ID")),
            concurrency=_positive(args.concurrency, "--concurrency")
            or _positive(_int(env.get(CONCURRENCY_ENV), CONCURRENCY_ENV), CONCURRENCY_ENV)
            or default_concurrency(),
            fast_cpu=not args.no_fast_cpu and _flag(env.get(FAST_CPU_ENV), FAST_CPU_ENV, default=True),
            fidelity_check=not args.no_fidelity_check
            and _flag(env.get(FIDELITY_CHECK_ENV), FIDELITY_CHECK_ENV, default=True),
            evaluation_images=_folder(
                args.evaluation_images or env.get(EVALUATION_IMAGES_ENV, "").strip() or None,
                "--evaluation-images" if args.evaluation_images else EVALUATION_IMAGES_ENV,
            ),
        )

    def launch_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``gr.Blocks.launch`` (the page's CSS too: Gradio 6 takes it there)."""
        from medvlm.ui.styles import PAGE_CSS

        return {
            "css": PAGE_CSS,
            "server_name": self.host,
            "server_port": self.port,
            "share": self.share,
            "auth": list(self.users) or None,
            "auth_message": "Sign in to review model answers." if self.users else None,
            "max_file_size": MAX_INPUT_BYTES,  # refuse bigger uploads before they reach the disk
        }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="app.py",
        description="The medvlm web app: ask a reasoning medical VLM about an image or DICOM, watch it think, review "
        "its answers.",
    )
    parser.add_argument(
        "--model",
        help=f"Hub id, checkpoint directory or LoRA adapter directory (env {MODEL_ENV}; default {DEFAULT_MODEL_ID})",
    )
    parser.add_argument(
        "--compare-model",
        metavar="ID|DIR",
        help="a second model that answers every question beside the first, side by side, for a pairwise verdict "
        f"(env {COMPARE_MODEL_ENV}; e.g. the base model against a GRPO-tuned one)",
    )
    parser.add_argument("--data-dir", help=f"where reviews are stored (env {DATA_DIR_ENV}; default ./medvlm-data)")
    parser.add_argument(
        "--host", help="address to listen on (env GRADIO_SERVER_NAME; default 127.0.0.1, or 0.0.0.0 on a Space)"
    )
    parser.add_argument("--port", type=int, help=f"port (env GRADIO_SERVER_PORT; default {DEFAULT_PORT})")
    parser.add_argument("--share", action="store_true", help="also publish a temporary public gradio.live link")
    parser.add_argument("--auth", help=f"require a login: 'user:password[,user2:password2...]' (env {USERS_ENV})")
    parser.add_argument(
        "--concurrency", type=int, help=f"generations at once (env {CONCURRENCY_ENV}; default 1 on CPU, 2 on a GPU)"
    )
    parser.add_argument(
        "--no-fast-cpu",
        action="store_true",
        help="on a CPU, run plain fp32 at the checkpoint's image size instead of int8 weights and smaller images "
        f"(env {FAST_CPU_ENV}=0)",
    )
    parser.add_argument(
        "--no-fidelity-check",
        action="store_true",
        help="on a CPU, skip the one-time background check that the fast path gives the bf16 model's answers "
        f"(env {FIDELITY_CHECK_ENV}=0)",
    )
    parser.add_argument(
        "--evaluation-images",
        metavar="DIR",
        help="a folder the images of imported evaluation runs may be read from, e.g. the --data_root of "
        "train.evaluate "
        f"(env {EVALUATION_IMAGES_ENV}; default: images must be uploaded with samples.jsonl)",
    )
    return parser


def parse_users(text: str, source: str) -> tuple[tuple[str, str], ...]:
    """``"alice:pw1,bob:pw2"`` -> ``(("alice", "pw1"), ("bob", "pw2"))``; passwords may contain ':'."""
    users = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        name, separator, password = entry.partition(":")
        if not separator or not name.strip() or not password:
            raise ConfigError(
                f"{source} must be 'user:password' pairs separated by commas; one entry has no user name or password."
            )
        try:
            users.append((normalize_name(name, error=ConfigError), password))
        except ConfigError as error:
            raise ConfigError(f"{source}: the user name {name.strip()[:40]!r} cannot sign reviews. {error}") from None
    return tuple(users)


def default_concurrency() -> int:
    """1 on a CPU, 2 on a GPU.

    On a CPU, torch already spreads one generation over every core, so a second one at the same
    time only halves the speed of both (and doubles the memory). On a GPU, decoding a 2B model one
    token at a time leaves most of the device idle, so two streams run side by side at nearly full
    speed each; more would mainly add memory for activations and wait time for the first token.
    """
    import torch

    return 2 if torch.cuda.is_available() else 1


def _int(value: str | None, source: str) -> int | None:
    if value is None or not value.strip():
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{source} must be a whole number (got {value!r}).") from None


def _flag(value: str | None, source: str, *, default: bool) -> bool:
    """An on/off environment variable: 1/true/yes/on or 0/false/no/off (any case); unset: ``default``."""
    if value is None or not value.strip():
        return default
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{source} must be 1 or 0 (got {value!r}).")


def _folder(value: str | None, source: str) -> Path | None:
    if value is None:
        return None
    folder = Path(value).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"{source} must be an existing folder (got {value!r}).")
    return folder


def _positive(value: int | None, source: str) -> int | None:
    if value is not None and value < 1:
        raise ConfigError(f"{source} must be at least 1 (got {value}).")
    return value
