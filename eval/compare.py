"""Compare RL runs side by side: ``python -m eval.compare RUN_DIR [RUN_DIR ...] [--labels ...] [--group-by-label]``.

Each run directory holds ``metrics.jsonl`` (one JSON object per round with ``round``, ``reward/mean``,
``reward/std``) and, when the run evaluated, ``eval_before.json`` / ``eval_after.json`` (per-tag accuracies,
``overall``, ``partial_mean``). Writes to ``--out``:

    compare.md           the markdown table that is also printed (one column per run or per label group)
    compare.json         the numbers behind it
    reward_curves.png    reward/mean against round, one line per run; grouped: mean +/- std band over seeds;
                         the title names the runs' base (config.yaml backbone.path), the caption the band and n
    stage_metrics.png    HT-GRPO runs only: per round and stage (global / structure / refine), one panel per
                         ``stage/<stage>/<metric>`` (loss, clip fraction, ratio mean / max, k3 KL, support fraction,
                         mean credit weight, p): do the Structure updates move the policy more than the Refinement
                         ones? Grouped runs: the mean over the group's runs.
    eval_curves_<set>.png  runs that evaluated during training (``eval.every``): ``eval/<set>/overall`` against
                         round for each evaluation set (heldout, train, val, geneval), as reward_curves.png.

Rows: rounds, final reward (``reward/mean`` of the last round, or the mean of the last ``--last`` rounds), then
each GenEval tag, ``overall`` and ``partial_mean`` as "before -> after". With ``--group-by-label`` runs sharing a
label (e.g. three seeds of one method) become one column of "mean +/- std" (sample std, ddof = 1; n = 1 shows the
value alone), and the curve is the per-round mean over the runs, on the rounds all of them reached.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from maskgrpo.jsonl import read_metrics
from maskgrpo.scoring.geneval_rules import GENEVAL_TAGS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

EVAL_KEYS: tuple[str, ...] = (*GENEVAL_TAGS, "overall", "partial_mean")
"""Evaluation rows, in table order."""
EVAL_OVERALL = re.compile(r"eval/[a-z_]+/overall")
"""The metrics key of an evaluation set's overall accuracy during training (maskgrpo/run_eval.py)."""

STAGES: tuple[str, ...] = ("global", "structure", "refine")
STAGE_METRICS: tuple[str, ...] = ("loss", "clip_frac", "ratio_mean", "ratio_max", "kl_k3", "support_frac",
                                  "mean_weight", "p")  # fmt: skip
"""The ``stage/<stage>/<metric>`` keys an HT-GRPO run logs per round (htgrpo_patch/loss.py), in panel order."""


def load_run(run_dir: str | Path) -> dict:
    """``{"dir", "rounds": (R,) int, "reward": (R,), "reward_std": (R,), "stage": {key: (R,)}, "eval": {set: (rounds,
    overall)}, "before": dict|None, "after": dict|None}``; ``stage`` holds every ``stage/*`` key the run logged (NaN
    in rounds without it), ``eval`` the rounds and ``eval/<set>/overall`` of each set evaluated during training.

    Lines are sorted by round; a round logged twice (a resumed run) keeps its last line.
    """
    d = Path(run_dir)
    metrics = d / "metrics.jsonl"
    if not metrics.is_file():
        raise FileNotFoundError(f"{metrics} not found: is {d} a run directory of python -m maskgrpo.train?")
    by_round = {int(rec["round"]): rec for rec in read_metrics(metrics, required=("round", "reward/mean"))}
    if not by_round:
        raise ValueError(f"{metrics} has no rounds yet")
    rounds = sorted(by_round)
    stage_keys = sorted({k for rec in by_round.values() for k in rec if k.startswith("stage/")})
    sets = sorted({k.split("/")[1] for rec in by_round.values() for k in rec if EVAL_OVERALL.fullmatch(k)})
    during = {}
    for name in sets:
        key = f"eval/{name}/overall"
        hit = [r for r in rounds if key in by_round[r]]
        during[name] = (np.array(hit), np.array([by_round[r][key] for r in hit], dtype=np.float64))
    evals = {}
    for name in ("before", "after"):
        f = d / f"eval_{name}.json"
        evals[name] = json.loads(f.read_text()) if f.is_file() else None
    return {
        "dir": str(d),
        "rounds": np.array(rounds),
        "reward": np.array([by_round[r]["reward/mean"] for r in rounds], dtype=np.float64),
        "reward_std": np.array([by_round[r].get("reward/std", math.nan) for r in rounds], dtype=np.float64),
        "stage": {k: np.array([by_round[r].get(k, math.nan) for r in rounds], dtype=np.float64) for k in stage_keys},
        "eval": during,
        **evals,
    }


def mean_std(values: list[float | None]) -> tuple[float, float, int]:
    """(mean, sample std with ddof = 1 (NaN for n = 1), n) of the finite values (None skipped)."""
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if len(v) == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else math.nan, len(v)


def fmt_stats(stats: tuple[float, float, int], digits: int = 3, signed: bool = False) -> str:
    """``mean ± std`` of a :func:`mean_std` triple; the mean alone for n = 1, "-" for n = 0."""
    mean, std, n = stats
    if n == 0:
        return "-"
    m = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    return m if n == 1 else f"{m} ± {std:.{digits}f}"


def column(runs: list[dict], last: int) -> dict:
    """The numbers of one table column (one run, or a group of runs): each entry is (mean, std, n) over runs."""
    col: dict = {
        "runs": [r["dir"] for r in runs],
        "rounds": mean_std([float(r["rounds"][-1]) for r in runs]),
        "final_reward": mean_std([float(r["reward"][-last:].mean()) for r in runs]),
    }
    for key in EVAL_KEYS:
        for name in ("before", "after"):
            col[f"{key}/{name}"] = mean_std([r[name][key] if r[name] and key in r[name] else None for r in runs])
    return col


def markdown_table(labels: list[str], cols: list[dict], last: int) -> str:
    """Rows = metrics, one column per label."""
    reward_row = "final reward/mean" if last == 1 else f"reward/mean, last {last} rounds"
    lines = ["| metric | " + " | ".join(labels) + " |", "| --- |" + " ---: |" * len(labels)]
    lines.append("| rounds | " + " | ".join(fmt_stats(c["rounds"], digits=0) for c in cols) + " |")
    lines.append(f"| {reward_row} | " + " | ".join(fmt_stats(c["final_reward"]) for c in cols) + " |")
    for key in EVAL_KEYS:
        if all(c[f"{key}/before"][2] == 0 and c[f"{key}/after"][2] == 0 for c in cols):
            continue
        cells = [f"{fmt_stats(c[f'{key}/before'])} → {fmt_stats(c[f'{key}/after'])}" for c in cols]
        name = f"**{key}**" if key == "overall" else key
        lines.append(f"| {name} (before → after) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def configured_base(run_dir: str | Path) -> str | None:
    """``backbone.path`` of a run's ``config.yaml`` as configured (e.g. ``assets/toy_base``); None without one."""
    f = Path(run_dir) / "config.yaml"
    if not f.is_file():
        return None
    import yaml

    try:
        cfg = yaml.safe_load(f.read_text())
        return str(cfg["backbone"]["path"])
    except (yaml.YAMLError, KeyError, TypeError) as e:
        raise ValueError(f"{f}: no backbone.path in it ({type(e).__name__}: {e})") from e


def bases_label(groups: dict[str, list[dict]]) -> str | None:
    """The configured base(s) of every run of ``groups`` for a plot title; None when no run has a config.yaml."""
    from maskgrpo.toy.base_manifest import base_title

    bases = sorted({base_title(b) for runs in groups.values() for r in runs
                    if (b := configured_base(r["dir"])) is not None})  # fmt: skip
    return ", ".join(bases) if bases else None


def plot_curves(groups: dict[str, list[dict]], path: Path, smooth: int = 1) -> Figure:
    """reward/mean against round: per group the mean over its runs with a +/- std band (eval.study_stats), the
    title naming the runs' base (config.yaml ``backbone.path``). Returns the (closed) Figure."""
    from eval.study_stats import plot_metric_curves

    curves = {label: [(r["rounds"], r["reward"]) for r in runs] for label, runs in groups.items()}
    return plot_metric_curves(curves, path, "reward/mean", smooth, base=bases_label(groups),
                              title="training reward/mean per round")  # fmt: skip


def plot_eval_curves(groups: dict[str, list[dict]], out: Path) -> list[Path]:
    """``eval_curves_<set>.png`` per evaluation set some run logged during training: ``eval/<set>/overall`` against
    round, per group the mean over its runs that have it (rounds they share) with a +/- std band. Returns the files
    written; older ``eval_curves_*.png`` in ``out`` are removed first (no stale plot from an earlier comparison)."""
    from eval.study_stats import plot_metric_curves

    for old in out.glob("eval_curves_*.png"):
        old.unlink()
    written = []
    for name in sorted({s for runs in groups.values() for r in runs for s in r["eval"]}):
        curves = {label: [r["eval"][name] for r in runs if name in r["eval"]] for label, runs in groups.items()}
        curves = {label: c for label, c in curves.items() if c}
        path = out / f"eval_curves_{name}.png"
        plot_metric_curves(curves, path, f"eval/{name}/overall", base=bases_label(groups),
                           title=f"GenEval-style accuracy during training ({name} set)")  # fmt: skip
        written.append(path)
    return written


def stage_figure(groups: dict[str, list[dict]]) -> Figure | None:
    """One panel per stage metric, one line per (group, stage) against round (a group's runs averaged over the
    rounds all of them reached); title with the runs' base, caption with n. None when no run logged ``stage/*``."""
    if not any(r["stage"] for runs in groups.values() for r in runs):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"global": "tab:gray", "structure": "tab:blue", "refine": "tab:orange"}
    styles = ["-", "--", ":", "-."]
    fig, axes = plt.subplots(2, 4, figsize=(15, 6.8), sharex=True)
    for ax, metric in zip(axes.flat, STAGE_METRICS):
        for i, (label, runs) in enumerate(groups.items()):
            common = sorted(set.intersection(*(set(r["rounds"].tolist()) for r in runs)))
            for stage in STAGES:
                key = f"stage/{stage}/{metric}"
                if not all(key in r["stage"] for r in runs):
                    continue
                ys = np.stack([r["stage"][key][np.isin(r["rounds"], common)] for r in runs])  # (n_runs, R')
                ax.plot(common, ys.mean(0), styles[i % len(styles)], color=colours[stage],
                        label=f"{label} (n={len(runs)}): {stage}")  # fmt: skip
        ax.set_title(metric, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("round")
    legend = {lab: h for ax in axes.flat for h, lab in zip(*ax.get_legend_handles_labels())}  # every (group, stage)
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=min(len(legend), 6), fontsize=8,
               bbox_to_anchor=(0.5, 0.03))  # fmt: skip
    base = bases_label(groups)
    fig.suptitle("HT-GRPO per-stage metrics (stage/<stage>/<metric>, mean over each stage's updates per round)"
                 + (f", base {base}" if base else ""))  # fmt: skip
    fig.text(0.5, 0.005, "Line: per round, the mean over a group's n runs (n in the legend); no band.", ha="center",
             va="bottom", fontsize=8)  # fmt: skip
    fig.tight_layout(rect=(0, 0.1, 1, 0.96))
    return fig


def plot_stages(groups: dict[str, list[dict]], path: Path) -> bool:
    """:func:`stage_figure` saved to ``path``. Returns False, writing nothing, when no run logged ``stage/*`` keys."""
    fig = stage_figure(groups)
    if fig is None:
        return False
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def jsonable_stats(cols: dict) -> dict:
    """(mean, std, n) tuples -> {"mean", "std", "n"} with NaN -> null (strict JSON); other values (run lists) kept."""

    def num(x: float) -> float | None:
        return None if math.isnan(x) else x

    return {
        label: {
            k: {"mean": num(v[0]), "std": num(v[1]), "n": v[2]} if isinstance(v, tuple) else v for k, v in col.items()
        }  # fmt: skip
        for label, col in cols.items()
    }


def compare(run_dirs: list[str], labels: list[str] | None, group: bool, out: Path, last: int = 1,
            smooth: int = 1) -> str:  # fmt: skip
    """Load the runs, write compare.md / compare.json / reward_curves.png (and stage_metrics.png, eval_curves_*.png
    when the runs logged them) under ``out``; return the table."""
    if labels is not None and len(labels) != len(run_dirs):
        raise ValueError(f"--labels has {len(labels)} entries for {len(run_dirs)} run directories")
    if last < 1:
        raise ValueError(f"--last must be >= 1, got {last}")
    runs = [load_run(d) for d in run_dirs]
    labels = labels or [Path(d).resolve().name for d in run_dirs]
    groups: dict[str, list[dict]] = {}
    if group:
        for lab, run in zip(labels, runs):
            groups.setdefault(lab, []).append(run)
    else:
        if len(set(labels)) != len(labels):  # keep one column per run: disambiguate repeated labels
            labels = [f"{lab} [{i}]" for i, lab in enumerate(labels)]
        groups = {lab: [run] for lab, run in zip(labels, runs)}
    cols = [column(rs, last) for rs in groups.values()]
    table = markdown_table(list(groups), cols, last)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.md").write_text(table + "\n")
    (out / "compare.json").write_text(json.dumps(jsonable_stats(dict(zip(groups, cols))), indent=1) + "\n")
    plot_curves(groups, out / "reward_curves.png", smooth)
    plot_eval_curves(groups, out)
    if not plot_stages(groups, out / "stage_metrics.png"):
        (out / "stage_metrics.png").unlink(missing_ok=True)  # no stale plot from an earlier comparison
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="run directories (each with metrics.jsonl)")
    ap.add_argument("--labels", nargs="+", default=None, help="one label per run (default: directory names)")
    ap.add_argument("--group-by-label", action="store_true", help="merge runs with equal labels: mean ± std")
    ap.add_argument("--out", default="runs/compare", help="output folder (default runs/compare)")
    ap.add_argument("--last", type=int, default=1, help="average reward/mean over the last K rounds (default 1)")
    ap.add_argument("--smooth", type=int, default=1, help="moving-average window of the plotted curves")
    args = ap.parse_args(argv)
    out = Path(args.out)
    table = compare(args.runs, args.labels, args.group_by_label, out, args.last, args.smooth)
    print(table)
    extra = [out / "stage_metrics.png"] if (out / "stage_metrics.png").is_file() else []
    extra += sorted(out.glob("eval_curves_*.png"))
    files = [out / "compare.md", out / "compare.json", out / "reward_curves.png", *extra]
    print(f"\nwrote {', '.join(str(f) for f in files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
