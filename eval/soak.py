"""Soak test: a toy training interrupted again and again, resumed each time, must end exactly where an
uninterrupted run ends.

    python -m eval.soak [--config configs/toy_htgrpo.yaml] [--nproc 1] [--interval 120 240] [--kill-share 0.5]
                        [--rounds MIN MAX] [--seed 0] [--out runs/soak] [--parallel] [KEY=VALUE ...]

1. The reference: the same config and overrides run once without interruption (``<out>/reference``; kept). With
   ``--parallel`` it runs beside the soak instead of before it (half the wall time where two sets of cores are free;
   the interruption times are wall-clock, so the soak's rounds between interruptions shrink with the load).
2. The soak: the run is started as the toy launchers start it (torchrun, which leaves SIGTERM / SIGUSR1 to the
   workers), and at a random moment every ``--interval`` seconds (uniform between the two bounds, seeded) the whole
   process tree (launcher and workers) is sent SIGKILL (share ``--kill-share``) or SIGTERM, as a cluster does
   (``--rounds MIN MAX``: after MIN-MAX rounds past the checkpoint the attempt resumed from, whatever the load). A
   SIGTERM must end in a clean stop (exit 0, "preempted at round N"); after either the run is started again with
   ``--auto-resume``, until it finishes.
   A SIGTERM counts as clean when the run stopped with exit 0, "preempted at round N" and the checkpoint of its
   last logged round (nothing lost), or when it came as the finished run was exiting.
3. The verdict: the final weights (every tensor, bitwise) and metrics.jsonl (every key but wall-clock ones) must
   equal the reference's. ``<out>/soak.json`` records every interruption (when, which signal, the round reached,
   the exit status, seconds to stop) and the verdict; the exit status is 0 only when everything matched.

The whole soak is resumable: rerunning the command with the same ``--out`` continues a soak that was itself
interrupted (its event log is kept).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from safetensors.torch import load_file

from maskgrpo.distributed import parent_of
from maskgrpo.jsonl import read_metrics

WALL = ("perf/seconds_", "perf/rollout_images_per_s", "budget/seconds", "eval/seconds")
"""Metric keys that measure wall-clock time (they differ between any two runs)."""


def launch(cmd: list[str], nproc: int, log: Path) -> subprocess.Popen:
    """Start the trainer under torchrun in its own process group, SIGTERM left to the workers (launch/_common.sh)."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONUNBUFFERED": "1",
           "PET_SIGNALS_TO_HANDLE": "SIGINT,SIGHUP,SIGQUIT"}  # fmt: skip
    full = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *cmd]

    def ignore_term() -> None:  # torchrun inherits "ignore" for the signals the workers handle themselves
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, signal.SIG_IGN)

    with log.open("a") as f:
        return subprocess.Popen(full, stdout=f, stderr=subprocess.STDOUT, env=env, preexec_fn=ignore_term,
                                start_new_session=True)  # fmt: skip


def process_tree(root: int) -> list[int]:
    """``root`` and every descendant (the launcher starts its workers in their own sessions, so a process-group
    signal would miss them; a cluster signals every process of the job step)."""
    parents = {int(d.name): parent_of(int(d.name)) for d in Path("/proc").iterdir() if d.name.isdigit()}
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        tree += frontier
    return tree


def signal_tree(root: int, sig: signal.Signals) -> None:
    for pid in process_tree(root):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def checkpoint_round(run: Path) -> int:
    """The round of the checkpoint ``latest`` names (0: none)."""
    try:
        return int((run / "checkpoints" / "latest").read_text().strip().removeprefix("round-"))
    except (OSError, ValueError):
        return 0


def rounds_logged(run: Path) -> int:
    f = run / "metrics.jsonl"
    try:
        return max((rec["round"] for rec in read_metrics(f)), default=0) if f.is_file() else 0
    except ValueError:  # a line damaged by hand (a torn last line is dropped)
        return -1


def same_run(a: Path, b: Path) -> dict:
    """Weights (bitwise) and metrics (wall-clock keys aside) of two finished runs: {"weights", "metrics", "why"}."""
    wa, wb = (load_file(d / "final" / "model" / "model.safetensors") for d in (a, b))
    weights = wa.keys() == wb.keys() and all(bool((wa[k] == wb[k]).all()) for k in wa)

    def rows(d: Path) -> list[dict]:
        return [{k: v for k, v in rec.items() if not k.startswith(WALL)} for rec in read_metrics(d / "metrics.jsonl")]

    ra, rb = rows(a), rows(b)
    why = "" if ra == rb else next((f"round {x['round']}: {sorted(k for k in x if x.get(k) != y.get(k))}"
                                    for x, y in zip(ra, rb) if x != y), f"{len(ra)} vs {len(rb)} rounds")  # fmt: skip
    return {"weights": weights, "metrics": ra == rb, "why": why}


def until(p: subprocess.Popen, seconds: float | None, reached: Callable[[], bool] | None) -> int | None:
    """Wait for ``p`` to exit (its status) or for the moment to interrupt it (None): ``seconds`` of wall time, or
    the first poll at which ``reached()`` is true."""
    if seconds is not None:
        try:
            return p.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return None
    while p.poll() is None:
        if reached():
            return None
        time.sleep(0.05)
    return p.returncode


def soak(out: Path, run: Path, ref: subprocess.Popen | None, train: list[str], args) -> int:
    """The interrupted run to its end, its events in ``<out>/soak.json``, then the reference's end (when it runs
    beside): 0, or 2 when either run fails."""
    events_file = out / "soak.json"
    state = json.loads(events_file.read_text()) if events_file.is_file() else {"events": [], "soak_seconds": 0.0}
    rng = random.Random(args.seed * 1000 + len(state["events"]))  # a resumed soak draws new times
    while not (run / "final" / "model").is_dir():
        t0 = time.monotonic()
        offset = (out / "run.log").stat().st_size if (out / "run.log").is_file() else 0  # this attempt's log
        start = checkpoint_round(run)  # where this attempt resumes
        p = launch([*train, f"run.output_dir={run}", "--auto-resume"], args.nproc, out / "run.log")
        wait = rng.uniform(*(args.rounds or args.interval))
        sig = signal.SIGKILL if rng.random() < args.kill_share else signal.SIGTERM
        target = start + wait  # --rounds: the round after which to interrupt
        due = None if args.rounds is None else (lambda: rounds_logged(run) >= target)  # noqa: B023 (used at once)
        code = until(p, wait if args.rounds is None else None, due)
        if code is not None:  # the run finished before its interruption
            state["soak_seconds"] += time.monotonic() - t0
            if code != 0:
                print(f"[soak] the run exited {code} uninterrupted: see {out / 'run.log'}", file=sys.stderr)
                return 2
            break
        reached = rounds_logged(run)
        sent = time.monotonic()
        signal_tree(p.pid, sig)
        try:
            code = p.wait(timeout=args.stop_timeout)
        except subprocess.TimeoutExpired:
            signal_tree(p.pid, signal.SIGKILL)
            code = p.wait()
        event = {"after_s": round(wait, 1), "signal": sig.name, "round_logged": reached, "exit": code,
                 "stop_s": round(time.monotonic() - sent, 1)}  # fmt: skip
        event["checkpoint"] = checkpoint_round(run)
        if sig == signal.SIGTERM:  # a preemption notice: a clean stop with the checkpoint of the last logged round
            with (out / "run.log").open(errors="replace") as f:
                f.seek(offset)
                text = f.read()
            event["finished"] = (run / "final" / "model").is_dir()  # the notice came as the finished run exited
            event["clean"] = (code == 0 and "preempted at round" in text and event["checkpoint"] == rounds_logged(run)
                              ) or event["finished"]  # fmt: skip
        state["events"].append(event)
        state["soak_seconds"] += time.monotonic() - t0
        events_file.write_text(json.dumps(state, indent=1))
        print(f"[soak] interruption {len(state['events'])}: {event}", flush=True)
    events_file.write_text(json.dumps(state, indent=1))
    if ref is not None and ref.wait() != 0:
        print(f"[soak] the reference run failed: see {out / 'reference.log'}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*", help="config overrides of both runs, e.g. rl.rounds=60")
    ap.add_argument("--config", default="configs/toy_htgrpo.yaml")
    ap.add_argument("--nproc", type=int, default=1, help="DeepSpeed ranks (torchrun workers)")
    ap.add_argument("--interval", type=float, nargs=2, default=(120.0, 240.0), metavar=("MIN_S", "MAX_S"),
                    help="seconds between interruptions: uniform in [MIN_S, MAX_S] (default 120 240)")  # fmt: skip
    ap.add_argument("--rounds", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
                    help="interrupt after MIN-MAX rounds past the checkpoint each attempt resumes from, not after "
                         "a time: interruptions independent of the load (what the test suite uses)")  # fmt: skip
    ap.add_argument("--kill-share", type=float, default=0.5, help="share of SIGKILLs among the interruptions")
    ap.add_argument("--stop-timeout", type=float, default=300.0, help="seconds a SIGTERM may take to stop the run")
    ap.add_argument("--seed", type=int, default=0, help="seed of the interruption times and signals")
    ap.add_argument("--out", default="runs/soak")
    ap.add_argument("--parallel", action="store_true", help="run the reference beside the soak, not before it")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train = ["-m", "maskgrpo.train", "--config", args.config, *args.overrides]
    reference, run = out / "reference", out / "run"
    ref = None
    if not (reference / "final" / "model").is_dir():
        print(f"[soak] reference run -> {reference}", flush=True)
        ref = launch([*train, f"run.output_dir={reference}", "--auto-resume"], args.nproc, out / "reference.log")
        if not args.parallel and ref.wait() != 0:
            print(f"[soak] the reference run failed: see {out / 'reference.log'}", file=sys.stderr)
            return 2
    try:
        code = soak(out, run, ref, train, args)
    finally:  # a soak that fails early does not leave its reference running
        if ref is not None and ref.poll() is None:
            signal_tree(ref.pid, signal.SIGKILL)
            ref.wait()
    if code:
        return code
    events_file = out / "soak.json"
    state = json.loads(events_file.read_text())
    verdict = same_run(run, reference)
    terms = [e for e in state["events"] if e["signal"] == "SIGTERM"]
    state["verdict"] = {**verdict, "interruptions": len(state["events"]), "sigterm": len(terms),
                        "sigterm_clean": sum(e.get("clean", False) for e in terms),
                        "sigterm_after_finish": sum(e.get("finished", False) for e in terms),
                        "sigkill": len(state["events"]) - len(terms)}  # fmt: skip
    events_file.write_text(json.dumps(state, indent=1))
    ok = verdict["weights"] and verdict["metrics"] and all(e.get("clean") for e in terms)
    print(f"[soak] {len(state['events'])} interruptions ({len(terms)} SIGTERM, "
          f"{state['verdict']['sigterm_clean']} stopped cleanly) over {state['soak_seconds'] / 60:.1f} min; "
          f"final weights {'equal' if verdict['weights'] else 'DIFFER'}, metrics "
          f"{'equal' if verdict['metrics'] else 'DIFFER: ' + verdict['why']}", flush=True)  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
