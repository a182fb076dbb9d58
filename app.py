"""The medvlm web app: what a Hugging Face Space runs (``python app.py``, no arguments needed).

    python app.py [--model ID|DIR] [--data-dir DIR] [--port N] [--host H] [--share]
                  [--auth user:pw[,user2:pw2]] [--concurrency N] [--no-fast-cpu]

Every flag has an environment fallback (MEDVLM_MODEL, MEDVLM_DATA_DIR, MEDVLM_USERS,
MEDVLM_CONCURRENCY, MEDVLM_FAST_CPU, GRADIO_SERVER_NAME/PORT); MEDVLM_HUB_DATASET mirrors reviews to a Hub
dataset. Without weights: ``medvlm-tiny-model --format-warm-start ./tiny-model`` (the README's command) and
``python app.py --model ./tiny-model``.
"""

from __future__ import annotations

import logging
import sys

from medvlm.ui.config import AppConfig, ConfigError


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per internal request drowns what matters
    try:
        config = AppConfig.from_args(argv)  # before Gradio and torch are imported: --help and bad flags answer at once
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from medvlm.ui import Workbench, build_demo

    workbench = Workbench.start(config)  # loads the model once, for every user
    demo = build_demo(workbench)
    try:
        demo.launch(**config.launch_kwargs())
    finally:
        workbench.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
