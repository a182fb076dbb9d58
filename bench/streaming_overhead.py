"""What the app adds between the model and a client: first-token latency and throughput.

    python -m bench.streaming_overhead [--repeats 5] [--tokens 128] [--pace 12]

Starts ``app.py`` with the tiny test model in a subprocess (``--serve``), instrumented to log the
wall-clock time of every token ``generate`` produces and of every update ``stream_completion``
yields; then asks questions through ``gradio_client`` (``/load_file``, then the streaming
``/ask``) and notes when each update arrives. Same machine, same clock. Reported, as medians:

- model's first token -> first update yielded by ``stream_completion`` (the streamer passes on
  every token's text at once), -> first update a client receives (Gradio's queue and HTTP);
- tokens per second as the model produced them (its own ``Timing``) and as the client saw them
  (the same tokens over the span between the first and last streamed update it received), and
  how long after the model's last token the client had it: no throughput loss means the client
  keeps up, so this end lag is no larger than the start lag.

The tiny model produces a few hundred tokens a second, far faster than a real model, which is the
hard case for a streaming pipeline; ``--pace N`` also runs it slowed to N tokens/s (about the 2B
fast path's rate on a 2-core CPU) by sleeping in the generation thread.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._common import OPTIONS, QUESTION, REPO, median, print_report, quiet, tiny_checkpoint

STREAMED = 1
"""Index of the first client update that carries model output (update 0 is the 'Generating...' placeholder)."""


def serve(port: int, model: Path, log: Path, pace: float | None) -> None:
    """Run app.py's ``main`` with the token and update timestamps logged to ``log`` (one JSON line per answer)."""
    import app
    from medvlm import streaming
    from medvlm.ui import workbench

    token_times: list[float] = []
    put = streaming._TokenStreamer.put

    def timed_put(self, value):
        if not self.next_tokens_are_prompt:  # a generated token, not the prompt
            if pace:  # the token takes this long to compute, then it is there
                time.sleep(1 / pace)
            token_times.append(time.time())
        put(self, value)

    def logged(*args, **kwargs):
        token_times.clear()
        update_times = []
        for update in stream_completion(*args, **kwargs):
            update_times.append(time.time())
            if update.done:
                with log.open("a") as out:
                    out.write(
                        json.dumps({"tokens": token_times, "updates": update_times, "timing": update.timing.to_dict()})
                        + "\n"
                    )
            yield update

    stream_completion = workbench.stream_completion
    streaming._TokenStreamer.put = timed_put
    workbench.stream_completion = logged
    data = tempfile.mkdtemp(prefix="medvlm-bench-app-")
    raise SystemExit(app.main(["--model", str(model), "--port", str(port), "--data-dir", data, "--concurrency", "1"]))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen, timeout_s: float = 300):
    """A ``gradio_client.Client`` once the app answers."""
    from gradio_client import Client

    deadline = time.time() + timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited with status {process.returncode}")
        try:
            return Client(url, verbose=False, analytics_enabled=False)
        except Exception:  # not listening yet
            if time.time() > deadline:
                raise
            time.sleep(1)


def ask(client, image: Path, tokens: int) -> list[float]:
    """Arrival times of every update of one streamed answer."""
    from gradio_client import handle_file

    client.predict(handle_file(str(image)), api_name="/load_file")
    job = client.submit(question=QUESTION, options="\n".join(OPTIONS), max_new_tokens=tokens, api_name="/ask")
    return [time.time() for _ in job]


def measure(pace: float | None, repeats: int, tokens: int, image: Path) -> dict[str, float]:
    """Start an app, ask ``repeats`` + 1 questions (the first warms up), and compare both ends."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.jsonl"
        command = [
            sys.executable,
            "-m",
            "bench.streaming_overhead",
            "--serve",
            str(port),
            "--log",
            str(log),
            "--pace",
            str(pace or 0),
        ]
        process = subprocess.Popen(
            command,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"},
        )
        try:
            client = wait_for(f"http://127.0.0.1:{port}/", process)
            arrivals = [ask(client, image, tokens) for _ in range(repeats + 1)][1:]
            server = [json.loads(line) for line in log.read_text().splitlines()][1:]
        finally:
            process.terminate()
            process.wait(timeout=30)
    rows = []
    for client_times, logged in zip(arrivals, server, strict=True):
        streamed = client_times[STREAMED:-1]  # the last update is the final answer, sent after generation ended
        first_token = logged["tokens"][0]
        new_tokens = logged["timing"]["new_tokens"]
        rows.append(
            {
                "holdback_ms": (logged["updates"][0] - first_token) * 1000,
                "first_update_ms": (streamed[0] - first_token) * 1000,
                "gradio_ms": (streamed[0] - logged["updates"][0]) * 1000,
                "model_tps": logged["timing"]["tokens_per_second"],
                "client_tps": (new_tokens - 1) / (streamed[-1] - streamed[0]),
                "span_ratio": (streamed[-1] - streamed[0]) / (logged["updates"][-2] - logged["updates"][0]),
                "last_update_ms": (streamed[-1] - logged["tokens"][-1]) * 1000,
                "updates_sent": len(logged["updates"]),
                "updates_received": len(client_times),
            }
        )
    return {key: median([row[key] for row in rows]) for key in rows[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument(
        "--pace", type=float, default=12.0, help="also run with the model slowed to this many tokens/s (0: skip)"
    )
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--log", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    quiet()
    model = tiny_checkpoint()
    if args.serve:
        serve(args.serve, model, args.log, args.pace or None)
        return

    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "scan.png"
        Image.radial_gradient("L").resize((256, 256)).save(image)
        paces = [None, args.pace] if args.pace else [None]
        results = {pace: measure(pace, args.repeats, args.tokens, image) for pace in paces}
    rows = [
        [
            "as fast as it goes" if pace is None else f"paced to {pace:g} tokens/s",
            f"{result['holdback_ms']:.0f}",
            f"{result['gradio_ms']:.0f}",
            f"{result['first_update_ms']:.0f}",
            f"{result['model_tps']:.1f}",
            f"{result['client_tps']:.1f}",
            f"{1 / result['span_ratio']:.2f}",
            f"{result['last_update_ms']:.0f}",
            f"{result['updates_sent']:.0f} / {result['updates_received']:.0f}",
        ]
        for pace, result in results.items()
    ]
    print_report(
        f"Streaming overhead of the app (tiny model, {args.tokens} tokens, medians of {args.repeats} answers)",
        rows,
        [
            "model speed",
            "first token -> first stream update ms",
            "-> client receives ms",
            "first token -> client total ms",
            "model tokens/s",
            "client tokens/s",
            "client/server streaming rate",
            "last token -> client receives it ms",
            "updates sent / received",
        ],
    )


if __name__ == "__main__":
    main()
