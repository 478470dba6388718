"""Reward-server benchmark: N ranks asking one UnifiedReward server at once, with and without cross-request batching.

    python -m eval.bench_reward_server [--clients 8] [--images 8] [--rounds 3] [--per-call 10] [--per-image 0.2]
                                       [--generate-batch 32] [--jitter 2] [--time-scale 0.1] [--json FILE]

No model is loaded: the server runs the real UnifiedReward scorer (``unifiedreward_scorer`` of
:mod:`maskgrpo.rewards.scorers`: resize, questions, generate calls of ``--generate-batch`` rows, "Final Score"
parsing) around a **stub generate step** that sleeps ``per_call + per_image * rows`` seconds per call and answers
"Final Score: k" from each image's grey level, so every score can be checked. The server
(``maskgrpo.rewards.serve``, in this process, on loopback) is run twice: ``--batch-images 0`` (one request per scorer
call, the server before cross-request batching) and with ``--batch-images N`` (concurrent requests merged; 32, the
server's default). Each of ``--clients`` threads plays a rank: per round it waits for the others (a barrier), then
for a random 0 to ``--jitter`` s (ranks finish their rollouts at slightly different times), then scores
``--images`` images through the registered ``unifiedreward`` client with its default read timeout (``timeout +
timeout_per_image * images`` = 60 + 3 * 8 = 84 s) and no outage waiting, so a request that is not answered in time
is counted as a timeout instead of being re-sent.

Every duration (stub costs, jitter, client timeouts, batch window) is given in model seconds and multiplied by
``--time-scale`` (0.1) when run, so the default run takes about a minute; latencies are printed in model seconds
(wall / time-scale). The default stub costs (10 s per generate call + 0.2 s per row) are a guess at a 7B judge
writing up to 256 tokens, not a measurement.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import random
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from maskgrpo.rewards import REWARDS, RewardSpec, build_rewards
from maskgrpo.rewards.client import RewardOutageError
from maskgrpo.rewards.scorers import unifiedreward_scorer
from maskgrpo.rewards.serve import BATCH_WINDOW_S, serve_in_thread


def level_score(image: Image.Image) -> int:
    """The stub judge's verdict: 1 + round(mean grey / 255 * 4), in 1-5."""
    return 1 + round(float(np.asarray(image).mean()) / 255 * 4)


class StubGenerate:
    """The judge's generate step, without a model: sleeps ``per_call + per_image * rows`` (wall) seconds."""

    def __init__(self, per_call_s: float, per_image_s: float) -> None:
        self.per_call_s, self.per_image_s = per_call_s, per_image_s
        self.calls: list[int] = []

    def __call__(self, images: list[Image.Image], questions: list[str]) -> list[str]:
        self.calls.append(len(images))
        time.sleep(self.per_call_s + self.per_image_s * len(images))
        return [f"The image fits. Final Score: {level_score(image)}" for image in images]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def run_mode(args: argparse.Namespace, batch_images: int) -> dict:
    """Serve the stub judge with ``batch_images`` and let ``args.clients`` ranks ask for ``args.rounds`` rounds."""
    scale = args.time_scale
    generate = StubGenerate(args.per_call * scale, args.per_image * scale)
    scorer = unifiedreward_scorer(generate, image_size=28, batch_size=args.generate_batch)
    server, url = serve_in_thread(scorer, batch_images=batch_images, batch_window=args.batch_window * scale)
    params = inspect.signature(REWARDS.get("unifiedreward")).parameters  # the client's default timeouts
    timeout, per_image = params["timeout"].default, params["timeout_per_image"].default
    latencies: list[float] = []
    timeouts, wrong = [0], [0]
    barrier = threading.Barrier(args.clients)
    lock = threading.Lock()

    def rank(r: int) -> None:
        kwargs = {"url": url + "/score", "timeout": timeout * scale, "timeout_per_image": per_image * scale,
                  "max_outage_s": 0.0}  # fmt: skip
        (fn,) = build_rewards([RewardSpec("unifiedreward", kwargs=kwargs)])
        rng = random.Random(1000 * args.seed + r)
        for step in range(args.rounds):
            values = [(37 * (r + step) + 11 * i) % 256 for i in range(args.images)]
            images = np.stack([np.full((16, 16, 3), v, dtype=np.uint8) for v in values])
            barrier.wait()
            time.sleep(rng.uniform(0, args.jitter) * scale)
            start = time.perf_counter()
            try:
                scores = fn(
                    images, [f"rank {r} step {step} image {i}" for i in range(args.images)], [{}] * args.images
                )
            except RewardOutageError:
                with lock:
                    timeouts[0] += 1
                continue
            took = (time.perf_counter() - start) / scale
            expected = [level_score(Image.fromarray(im).resize((28, 28), Image.Resampling.BICUBIC)) for im in images]
            with lock:
                latencies.append(took)
                wrong[0] += int(scores.tolist() != expected)

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(args.clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    server.close()
    return {
        "requests": args.clients * args.rounds,
        "scorer_calls": server.scorer_calls,
        "generate_calls": len(generate.calls),
        "rows_per_generate_call": float(np.mean(generate.calls)) if generate.calls else 0.0,
        "p50_s": percentile(latencies, 50),
        "p90_s": percentile(latencies, 90),
        "p99_s": percentile(latencies, 99),
        "max_s": max(latencies, default=float("nan")),
        "timeouts": timeouts[0],
        "wrong_scores": wrong[0],
        "client_timeout_s": timeout + per_image * args.images,
        "wall_s": wall,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8, help="concurrent ranks (default 8)")
    parser.add_argument("--images", type=int, default=8, help="images per rank per round (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each rank asking once per round")
    parser.add_argument("--per-call", type=float, default=10.0, help="stub cost per generate call, model s")
    parser.add_argument("--per-image", type=float, default=0.2, help="stub cost per generated row, model s")
    parser.add_argument("--generate-batch", type=int, default=32, help="rows per generate call (scorer batch_size)")
    parser.add_argument("--batch-images", type=int, default=32, help="server --batch-images of the batching run")
    parser.add_argument("--batch-window", type=float, default=BATCH_WINDOW_S, help="server --batch-window, model s")
    parser.add_argument("--jitter", type=float, default=2.0, help="ranks start within this many model s")
    parser.add_argument("--time-scale", type=float, default=0.1, help="wall s per model s")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    print(
        f"stub judge: {args.per_call:g} s per generate call + {args.per_image:g} s per row, "
        f"{args.generate_batch} rows per call; {args.clients} ranks x {args.images} images x {args.rounds} rounds, "
        f"start jitter <= {args.jitter:g} s, window {args.batch_window:g} s; "
        f"times in model seconds (run at x{args.time_scale:g})"
    )
    modes = {"one request per call": 0, f"cross-request batching ({args.batch_images} images)": args.batch_images}
    results = {mode: run_mode(args, batch_images) for mode, batch_images in modes.items()}
    header = (
        f"| server | requests | scorer calls | generate calls (rows each) | p50 s | p90 s | p99 s | max s | "
        f"timeouts (client timeout {next(iter(results.values()))['client_timeout_s']:g} s) | wrong scores |"
    )
    print(header)
    print("|" + "---|" * 10)
    for mode, r in results.items():
        cells = [mode, r["requests"], r["scorer_calls"], f"{r['generate_calls']} ({r['rows_per_generate_call']:.1f})"]
        cells += [f"{r[k]:.1f}" for k in ("p50_s", "p90_s", "p99_s", "max_s")] + [r["timeouts"], r["wrong_scores"]]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    if args.json is not None:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "results": results}, indent=1))
    return results


if __name__ == "__main__":
    main()
