"""Choose one HT-GRPO setting on the validation captions, never on the held-out ones.

    python -m eval.select_on_val [--key patch_options.structure_ratio] [--values 0.1 0.3 0.5] [--default 0.3]
                                 [--seeds 100 101] [--margin 0.02] [--plan compose] [--out DIR] [--jobs 2]
                                 [KEY=VALUE ...]

Every candidate value trains HT-GRPO (``--config``, default configs/toy_htgrpo.yaml) with the plan's settings (the
``compose`` plan of eval/toy_compare.py: its base, rounds, prompts and eval images per caption) at each seed, and is
evaluated on the base's validation captions only (world.json ``val_prompts``: training-distribution captions kept out
of the RL prompts): ``eval.val=true eval.heldout=false``, so no held-out caption is ever sampled by a selection run.
The seeds default to 100 and 101, outside the study's 0-4, so the study's runs are fresh draws.

The rule (:func:`choose`, written down before the runs in docs/evidence.md): the value with the highest mean
validation accuracy over the seeds; the default stays unless that value beats the default's mean by at least
``--margin``. Writes ``selection.md`` / ``selection.json`` under ``--out`` (default runs/select_on_val/<key>).
Resumable: a finished run (``eval_after_val.json``) is kept, an interrupted one resumes from its checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from eval.study_stats import ci_record, fmt_interval, paired_t_interval
from eval.toy_compare import BASE_SEED, PLANS, require_base, run_job
from maskgrpo.config.loader import load_config
from maskgrpo.config.schema import TrainRun

BEFORE = "eval_before_val.json"
"""The base's validation ShapesEval of a run (before training); the trainer skips an evaluation whose file exists."""


def choose(means: dict[str, float], default: str, margin: float) -> str:
    """The selection rule: argmax of ``means`` (first in order on a tie), kept only if it beats ``default`` by at
    least ``margin``; else ``default``. Test: {0.1: 0.40, 0.3: 0.39, 0.5: 0.42}, margin 0.02 -> 0.5 (0.42 - 0.39 =
    0.03); margin 0.05 -> 0.3."""
    best = max(means, key=lambda v: means[v])
    return best if best != default and means[best] - means[default] >= margin else default


def complete_json(path: Path) -> bool:
    """Whether ``path`` holds a whole JSON document (evaluation files are written in place, not atomically)."""
    try:
        json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return True


def run_dir(out: Path, value: str, seed: int) -> Path:
    return out / f"value_{value}" / f"seed{seed}"


def command(py: str, cfg: str, overrides: list[str], key: str, value: str, seed: int, d: Path) -> list[str]:
    """One selection run: the plan's settings, the candidate value, validation captions only."""
    cmd = [py, "-m", "maskgrpo.train", "--config", cfg, *overrides, f"{key}={value}", "eval.val=true",
           "eval.heldout=false", f"run.seed={seed}", f"eval.seed={BASE_SEED + seed}", f"run.output_dir={d}",
           "run.wandb_mode=disabled"]  # fmt: skip
    return cmd + (["--resume"] if (d / "checkpoints").is_dir() else [])


def report(out: Path, key: str, values: list[str], default: str, seeds: list[int], margin: float) -> dict:
    """Read every run's validation accuracy (``eval_after_val.json``) and apply :func:`choose`."""
    acc = {v: [json.loads((run_dir(out, v, s) / "eval_after_val.json").read_text())["overall"] for s in seeds]
           for v in values}  # fmt: skip
    means = {v: sum(a) / len(a) for v, a in acc.items()}
    paired = {v: ci_record(paired_t_interval([x - y for x, y in zip(acc[v], acc[default])])) for v in values}
    picked = choose(means, default, margin)
    lines = [f"Selection of `{key}` on the validation captions, seeds {seeds} (rule: the highest mean validation "
             f"accuracy; the default {default} stays unless beaten by at least {margin}).", "",
             "| value | validation accuracy per seed | mean | Δ vs default, paired, 95% CI |",
             "| --- | --- | ---: | --- |"]  # fmt: skip
    for v in values:
        cells = [v + (" (default)" if v == default else ""), ", ".join(f"{x:.3f}" for x in acc[v]),
                 f"{means[v]:.3f}", "-" if v == default else fmt_interval(paired[v])]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"**Picked: `{key}={picked}`**"]
    (out / "selection.md").write_text("\n".join(lines) + "\n")
    record = {"key": key, "values": values, "default": default, "seeds": seeds, "margin": margin, "accuracy": acc,
              "means": means, "paired_vs_default": paired, "picked": picked}  # fmt: skip
    (out / "selection.json").write_text(json.dumps(record, indent=1))
    print("\n".join(lines))
    return record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*", help="config overrides for every run (after the plan's)")
    ap.add_argument("--key", default="patch_options.structure_ratio", help="the setting chosen (default rho)")
    ap.add_argument("--values", nargs="+", default=["0.1", "0.3", "0.5"], help="candidates (default 0.1 0.3 0.5)")
    ap.add_argument("--default", default="0.3", help="the shipped value, kept unless beaten by --margin")
    ap.add_argument("--seeds", type=int, nargs="+", default=[100, 101])
    ap.add_argument("--margin", type=float, default=0.02)
    ap.add_argument("--plan", default="compose", choices=list(PLANS), help="whose settings the runs take")
    ap.add_argument("--config", default="configs/toy_htgrpo.yaml")
    ap.add_argument("--out", default=None)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    if args.default not in args.values:
        ap.error(f"--default {args.default} is not one of --values {args.values}")
    out = Path(args.out or f"runs/select_on_val/{args.key.replace('.', '_')}")
    overrides = [*PLANS[args.plan].overrides, *args.overrides]
    require_base(load_config(TrainRun, args.config, overrides).backbone.path, PLANS[args.plan].base_make)
    threads = max(1, (os.cpu_count() or 1) // max(1, args.jobs))
    jobs = [(v, s) for v in args.values for s in args.seeds
            if not (run_dir(out, v, s) / "eval_after_val.json").is_file()]  # fmt: skip
    print(f"[select] {args.key} in {args.values}, seeds {args.seeds}: {len(jobs)} runs to do -> {out}", flush=True)

    def one(job: tuple[str, int]) -> None:
        v, s = job
        d = run_dir(out, v, s)
        d.mkdir(parents=True, exist_ok=True)
        # the base's validation ShapesEval is the same for every value of one seed: reuse a finished one (a file
        # another run is still writing does not parse, and is left alone)
        done = [f for f in out.glob(f"value_*/seed{s}/{BEFORE}") if f.parent != d and complete_json(f)]
        if done and not (d / BEFORE).is_file():
            shutil.copyfile(done[0], d / BEFORE)
        run_job(command(sys.executable, args.config, overrides, args.key, v, s, d), d.parent / f"seed{s}.log", threads)

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(one, jobs))
    for v in args.values:  # the rule never sees a held-out number: a selection run must not have made one
        for s in args.seeds:
            if (run_dir(out, v, s) / "eval_after.json").exists():
                raise SystemExit(f"error: {run_dir(out, v, s)} evaluated held-out captions; a selection run must not")
    report(out, args.key, args.values, args.default, args.seeds, args.margin)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
