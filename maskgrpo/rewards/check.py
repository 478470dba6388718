"""Check every configured reward server before any GPU time is spent.

``python -m maskgrpo.rewards.check --config FILE [key=value ...]`` loads the training config (with the same dotted
overrides the trainer takes), and sends each HTTP reward one tiny image with a GenEval-style probe prompt and its
metadata, through the reward's own client (URL, protocol, timeouts as configured; no waiting for a server that does
not answer unless ``--wait``, no retries of a busy one unless ``--retries``). Every entry's options are checked first,
local rewards' included (nothing is loaded for them). It prints one line per reward::

    OK    hpsv3          raw 0.5020  12 ms  json    http://127.0.0.1:18087/score
    FAIL  unifiedreward  reward 'unifiedreward': server http://127.0.0.1:18088/score unreachable for 0 s ...
    SKIP  clip           local reward (loaded by the trainer, no endpoint)

and exits 0 when every endpoint answered a finite score, 1 when any failed, 2 on a bad config (a bad option value
or name included: the trainer would refuse that config too).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import warnings
from collections.abc import Sequence

import numpy as np

from maskgrpo.config import load_config
from maskgrpo.config.schema import RewardEntry, TrainRun
from maskgrpo.errors import EXIT_STATUS, add_traceback_flag, one_line, one_line_errors
from maskgrpo.rewards.base import RewardError, RewardSpec, build_rewards, checked_factory
from maskgrpo.rewards.client import RemoteReward, is_remote_entry

PROBE_PROMPT = "a photo of an apple"
"""Caption sent with the probe image (GenEval's single_object template, a COCO class)."""
PROBE_METADATA = {"tag": "single_object", "include": [{"class": "apple", "count": 1}], "prompt": PROBE_PROMPT}
"""GenEval-style metadata of the probe prompt: what the ``geneval`` server reads (``tag``, ``include``)."""
PROBE_SIZE = 64
"""Side of the probe image (a flat mid-grey RGB square)."""


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """The outcome for one configured reward."""

    name: str
    status: str
    """``OK``, ``FAIL`` or ``SKIP``."""
    detail: str
    bad_config: bool = False
    """The entry's options are wrong (exit status 2), as opposed to an endpoint that failed (1)."""

    def line(self, width: int) -> str:
        return f"{self.status:<5} {self.name:<{width}}  {self.detail}"


def probe() -> tuple[np.ndarray, list[str], list[dict]]:
    """(1, PROBE_SIZE, PROBE_SIZE, 3) uint8 grey image, its prompt and metadata."""
    image = np.full((1, PROBE_SIZE, PROBE_SIZE, 3), 128, dtype=np.uint8)
    return image, [PROBE_PROMPT], [dict(PROBE_METADATA)]


def check_reward(name: str, entry: RewardEntry, retries: int, wait: float = 0.0) -> CheckResult:
    """Check one configured reward's options and, if it is an HTTP client, score the probe once (waiting up to
    ``wait`` seconds for a server that does not answer, retrying a busy one ``retries`` times)."""
    try:
        spec = RewardSpec(name, entry.weight, entry.scale, dict(entry.kwargs), entry.allow_nan, entry.entry)
        factory = checked_factory(spec)
    except (TypeError, KeyError, ValueError) as exc:
        return CheckResult(name, "FAIL", f"bad options: {exc.args[0] if exc.args else exc}", bad_config=True)
    if not is_remote_entry(factory):
        return CheckResult(name, "SKIP", "local reward (loaded by the trainer, no endpoint)")
    spec = dataclasses.replace(spec, kwargs={**spec.kwargs, "max_retries": retries, "max_outage_s": wait})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the pickle opt-in warning; the protocol is printed
            (fn,) = build_rewards([spec])
    except (TypeError, ValueError, KeyError) as exc:
        return CheckResult(name, "FAIL", f"bad options: {exc.args[0] if exc.args else exc}", bad_config=True)
    if not isinstance(fn, RemoteReward):
        return CheckResult(name, "FAIL", f"{spec.registry_name} is marked remote but built {type(fn).__name__}")
    where = f"{fn.protocol:<6}  {fn.url}"
    images, prompts, metadata = probe()
    start = time.perf_counter()
    try:
        raw = fn(images, prompts, metadata)
    except (RewardError, ValueError) as exc:
        return CheckResult(name, "FAIL", one_line(exc))
    ms = (time.perf_counter() - start) * 1000
    if not np.isfinite(raw[0]):
        return CheckResult(name, "FAIL", f"answered a non-finite score ({raw[0]}) in {ms:.0f} ms  {where}")
    return CheckResult(name, "OK", f"raw {raw[0]:.4f}  {ms:.0f} ms  {where}")


def check_all(cfg: TrainRun, retries: int, wait: float = 0.0) -> list[CheckResult]:
    """One result per entry of ``cfg.rewards``, in config order."""
    return [check_reward(name, entry, retries, wait) for name, entry in cfg.rewards.items()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m maskgrpo.rewards.check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="training YAML (configs/mmada_htgrpo.yaml, ...)")
    parser.add_argument("--retries", type=int, default=0, help="retries of a busy (429) endpoint (default 0)")
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        help="seconds to wait for an endpoint that does not answer (default 0: fail at once)",
    )
    parser.add_argument("overrides", nargs="*", help="dotted overrides, as for the trainer")
    add_traceback_flag(parser)
    args = parser.parse_args(argv)
    if args.retries < 0 or not args.wait >= 0:
        parser.error("--retries and --wait must be >= 0")
    with one_line_errors(args.traceback):
        cfg = load_config(TrainRun, args.config, args.overrides)
    results = check_all(cfg, args.retries, args.wait)
    width = max((len(r.name) for r in results), default=0)
    for result in results:
        print(result.line(width), flush=True)
    failed = [r.name for r in results if r.status == "FAIL"]
    bad = [r.name for r in results if r.bad_config]
    checked = [r for r in results if r.status != "SKIP"]
    summary = f"{len(checked) - len(failed)} of {len(checked)} reward endpoints OK"
    summary += f"; failed: {', '.join(failed)}" if failed else ""
    summary += f"; bad config: {', '.join(bad)}" if bad else ""
    print(summary, flush=True)
    return EXIT_STATUS if bad else 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
