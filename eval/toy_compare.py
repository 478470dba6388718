"""The ShapesWorld comparison study (``bash launch/toy_compare.sh``): every method, several seeds, one table.

Same base model (the configs' backbone.path, the shipped assets/toy_base), same prompt stream, rollouts and
optimizer steps for every method; only the method's own config section differs. Per seed s, every run (and the
base) is evaluated with eval seed 1234 + s, so a method's "delta vs base" is paired: the same held-out prompts and
sampler noise before and after.

    python -m eval.toy_compare [--plan study|focused|budget|compose] [--quick] [--seeds 0 1 2] [--jobs 2] [--threads N]
                               [--methods NAME ...] [--out DIR] [KEY=VALUE ...]

Plans (``PLANS``): ``study`` (default) is the 10-method study below; ``focused`` is the higher-powered study:
MaskGRPO, HT-GRPO (emerge ranks), HT-GRPO with confidence-ordered ranks and its MaskGRPO twin on the same (maskgit)
sampler, HT no credit and the A5 context, 5 seeds, more eval images per caption, a paired difference vs each
method's reference with a 95% t-interval over seeds, and reward and rollout-accuracy curves; its sizing and the
pilot it came from are recorded in ``FOCUSED``'s docstring. ``budget`` gives every method MaskGRPO's compute on the
configs' base (the shipped assets/toy_base) and compares accuracy against compute (eval/budget_study.py);
``compose`` is the same plan on the composition base: git holds its record (assets/toy_base_compose), and
``BASE=compose bash launch/toy_pretrain.sh`` makes it into cache/toy_base_compose first (docs/toy_base.md).

Writes under ``--out`` (default runs/toy_compare, or runs/toy_compare_quick):

    base/seed<s>/eval_before.json      the base model's ShapesEval with eval seed 1234 + s
    <method>/seed<s>/                  a normal run directory (metrics.jsonl, eval_before/after.json, final/...)
    <method>/seed<s>.log               its console output;  <method>/seed<s>.wall  its wall seconds;
    <method>/seed<s>.commit            the commit it was made with (the table header lists them)
    study.md / study.json              the table: six tags + overall (mean ± std over seeds), delta vs base,
                                       wall seconds and model forwards per run
    reward_curves.png                  training reward per round, mean ± std band over seeds (eval.compare.plot_curves)

Finished runs (eval_after.json present) are kept, interrupted ones resume from their last checkpoint, so running the
same command again only does what is missing. ``--jobs`` runs share the cores (OMP_NUM_THREADS = cores // jobs).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from eval.compare import fmt_stats, jsonable_stats, load_run, mean_std, plot_curves
from eval.study_stats import ci_record, fmt_interval, metric_curve, paired_t_interval, plot_metric_curves
from maskgrpo.jsonl import read_metrics
from maskgrpo.scoring.geneval_rules import GENEVAL_TAGS
from maskgrpo.toy.base_manifest import base_title, git_commit


@dataclass(frozen=True)
class Method:
    label: str
    config: str
    note: str
    """One line for the legend under the study table."""
    overrides: tuple[str, ...] = ()
    """Study-only settings of this method (on top of its config and STUDY)."""
    cost: int = 1
    """Relative run time, for scheduling the longest runs first (the pool then packs well)."""
    reference: str = "MaskGRPO"
    """The method this one's paired difference is taken against (same seeds, same eval seeds)."""


METHODS: dict[str, Method] = {m.label: m for m in (
    Method("MaskGRPO", "configs/toy_maskgrpo.yaml", "random re-masking, ratio increasing with m", cost=2),
    Method("UniGRPO", "configs/toy_unigrpo.yaml", "random re-masking, ratio ~ U(0, 1)", cost=2),
    # one context per 3 sampler steps: 4 forwards per rollout per update instead of 12, to fit the hour
    Method("TraceGRPO", "configs/toy_tracegrpo.yaml", "trajectory contexts, trace.shrink 3", ("trace.shrink=3",), 4),
    Method("HT-GRPO", "configs/toy_htgrpo.yaml", "fully masked shared context, 2:4:2, credit 1.2/0.8, p down"),
    Method("HT no credit", "configs/ablations/no_credit.yaml", "w_s = w_r = 1"),
    Method("HT single-stage", "configs/ablations/single_stage_global.yaml", "budgets 8:0:0"),
    Method("HT two-stage", "configs/ablations/two_stage_no_refine.yaml", "budgets 2:6:0"),
    Method("HT revealed structure", "configs/ablations/revealed_structure.yaml",
           "A5: structural tokens scored in x_M, the rest with the structure revealed", cost=2),
    Method("HT constant p=1", "configs/ablations/schedule_constant.yaml", "every stage token in the loss"),
    Method("HT up schedule", "configs/ablations/schedule_up.yaml", "p rises within each stage"),
    # focused plan: the same confidence-ordered rollout sampler for HT-GRPO and its MaskGRPO twin
    Method("MaskGRPO maskgit", "configs/toy_maskgrpo.yaml", "MaskGRPO with the maskgit rollout sampler (the twin)",
           ("rollout.name=maskgit",), 2),
    Method("HT confidence ranks", "configs/ablations/ranks_confidence.yaml", "HT-GRPO, maskgit rollouts: ranks "
           "follow confidence", reference="MaskGRPO maskgit"),
    # focused plan, the reward choice: MaskGRPO trained on partial credit (the default before
    # 2026-11-30), paired with MaskGRPO on the graded default; cost 1 so it runs last
    Method("MaskGRPO partial credit", "configs/toy_maskgrpo.yaml", "MaskGRPO trained on shapes_geneval (partial "
           "credit; the graded verdict logged at weight 0)", ("rewards.shapes_geneval.weight=1.0",
                                                            "rewards.shapes_geneval_graded.weight=0.0")),
)}  # fmt: skip
"""Every method a plan can run, in table order; the base model is the first row."""

STUDY = ["rl.rounds=30", "prompts.per_round=4", "eval.samples_per_prompt=8", "eval.train_prompts_per_tag=4"]
"""The study's size (on top of each method's toy config): 30 rounds of 4 prompts x 8 rollouts, mu = 8 (240
optimizer steps, 960 rollouts per run); ShapesEval with 8 images per held-out caption and 4 training captions per
tag. 10 methods x 3 seeds took 41 min on the 2-core machine, 2 runs at a time at one thread each (2026-11-30,
graded default, shipped base; HT-type runs 116-120 s, A5 169 s, MaskGRPO / UniGRPO 193-197 s, TraceGRPO 340 s;
the first table, at commit cd3dbc2 on the old base before the rollout dedupe, took 74 min)."""

QUICK = ["rl.rounds=3", "prompts.per_round=4", "rl.group_size=4", "eval.samples_per_prompt=2",
         "eval.train_prompts_per_tag=1", "checkpoint.every=0", "log.image_every=0"]  # fmt: skip
"""--quick: 3 rounds of 4 prompts x 4 rollouts, 2 eval images per caption, one seed (a few minutes)."""

FOCUSED = ["rl.rounds=30", "prompts.per_round=4", "eval.samples_per_prompt=24", "eval.train_prompts_per_tag=0",
           "rewards.rollout_accuracy.entry=shapes_geneval_strict", "rewards.rollout_accuracy.weight=0.0"]  # fmt: skip
"""The focused plan's size: the study's training budget (30 rounds x 4 prompts x 8 rollouts, mu = 8, so its rows
compare with the study's); ShapesEval with 24 images per held-out caption (864 images, 3x the study's; eval SE of
overall about 0.011 per evaluation) and no training-caption eval; the GenEval verdict of every rollout logged as a
zero-weight reward (``reward/rollout_accuracy/mean``, the accuracy curve).

Sizing: a pilot on 2026-11-30 (HT-GRPO seed 0, one thread, machine shared, load ~8: 656 s at 32 images per caption)
projected ~1.5 h alone. Measured in full on 2026-11-30, 2 runs at a time at one thread each on the 2-core machine:
7 methods x 5 seeds + 5 base evaluations in 69 min (base evaluation ~86 s, HT-type runs 164-184 s, A5 230-239 s,
MaskGRPO-type 248-285 s); the rerun of the five arms after the default reward changed to the graded verdict
(25 runs, the rest reused: docs/evidence.md) in 38 min."""


@dataclass(frozen=True)
class Plan:
    methods: tuple[str, ...]
    """Labels in METHODS, table order."""
    overrides: tuple[str, ...]
    """Settings of every run of the plan (before --quick's and the command line's)."""
    seeds: tuple[int, ...]
    out: str
    """Default output folder."""
    references: dict[str, str] = field(default_factory=dict)
    """Method label -> the method its paired difference is taken against in this plan (else ``Method.reference``)."""
    matched: dict[str, str] = field(default_factory=dict)
    """Budget plans: method label -> the reference whose compute it is given (eval.budget_study.schedule: as many
    rounds as the reference's forward-equivalents buy, from a 2-round pilot of each method). Empty: equal rounds."""
    base_make: str = ""
    """The command that makes the plan's base when the repository holds only its record (else the base ships)."""


ABLATIONS = ("HT no credit", "HT single-stage", "HT two-stage", "HT revealed structure", "HT constant p=1",
             "HT up schedule")  # fmt: skip
"""The study's HT-GRPO ablations: there each one's paired difference is taken against HT-GRPO, as the paper's
ablation table compares every variant with the full method."""

BUDGET = ["rl.rounds=30", "prompts.per_round=4", "eval.samples_per_prompt=24", "eval.train_prompts_per_tag=0"]
"""The budget plan's size: MaskGRPO runs 30 rounds of 4 prompts x 8 rollouts (mu = 8) on the configs' base (the
shipped assets/toy_base); every other method runs as many rounds as that compute buys it; ShapesEval with 24 images
per held-out caption at every budget point (eval.budget_study)."""
COMPOSE_BASE = "cache/toy_base_compose"
"""The composition base (docs/toy_base.md, "A second base for composition"). Its weights are over the repository's
5 MB limit for a file, so git holds its record (assets/toy_base_compose: digests, recipe, evaluations) and
:data:`COMPOSE_MAKE` makes it here, checked against that record (about 1 h 40 min on 2 cores)."""
COMPOSE_MAKE = "BASE=compose bash launch/toy_pretrain.sh"
BUDGET_PAIRS = {"HT-GRPO": "MaskGRPO", "HT no credit": "MaskGRPO", "HT revealed structure": "MaskGRPO",
                "HT confidence ranks": "MaskGRPO maskgit"}  # fmt: skip
"""Budget plan: each method -> the reference whose budget it gets and against which it is compared."""

PLANS: dict[str, Plan] = {
    "study": Plan(tuple(list(METHODS)[:10]), tuple(STUDY), (0, 1, 2), "runs/toy_compare",
                  {label: "HT-GRPO" for label in ABLATIONS}),
    "focused": Plan(("MaskGRPO", "HT-GRPO", "MaskGRPO maskgit", "HT confidence ranks", "HT no credit",
                     "HT revealed structure", "MaskGRPO partial credit"), tuple(FOCUSED), (0, 1, 2, 3, 4),
                    "runs/toy_compare_focused"),
    "budget": Plan(("MaskGRPO", "HT-GRPO", "HT no credit", "HT revealed structure", "MaskGRPO maskgit",
                    "HT confidence ranks"), tuple(BUDGET), (0, 1, 2, 3, 4), "runs/toy_compare_budget",
                   dict(BUDGET_PAIRS), dict(BUDGET_PAIRS)),
    "compose": Plan(("MaskGRPO", "HT-GRPO", "HT no credit", "HT revealed structure", "MaskGRPO maskgit",
                     "HT confidence ranks"), (*BUDGET, f"backbone.path={COMPOSE_BASE}"), (0, 1, 2, 3, 4),
                    "runs/toy_compare_compose", dict(BUDGET_PAIRS), dict(BUDGET_PAIRS), COMPOSE_MAKE),
}  # fmt: skip
"""``--plan`` name -> what it runs: ``study`` (10 methods), ``focused`` (the powered comparison), ``budget`` (equal
compute, shipped base) and ``compose`` (equal compute, composition base)."""

EVAL_KEYS = (*GENEVAL_TAGS, "overall")
ROW_KEYS = (*EVAL_KEYS, "partial_mean")  # partial_mean: the clipped partial credit, i.e. the RL reward, held out
PAIRED_KEYS = ("overall", "partial_mean", "graded_mean")
"""Held-out metrics with a paired 95% interval in ``paired_table`` (graded_mean: the graded verdict's mean)."""
BASE_SEED = 1234
ACCURACY_KEY = "reward/rollout_accuracy/mean"
"""The focused plan's per-round rollout accuracy (the zero-weight ``shapes_geneval_strict`` monitor)."""


def slug(label: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in label.lower()).strip("_")


def resolved_config(method: Method, overrides: list[str]):
    from maskgrpo.config.loader import load_config
    from maskgrpo.config.schema import TrainRun

    return load_config(TrainRun, method.config, overrides)


def require_base(path: str | Path, make: str) -> None:
    """Stop before any run, in one line naming the command that makes it, when a plan's base has not been made."""
    d = Path(path)
    if make and not (d / "model" / "model.safetensors").is_file():
        raise SystemExit(f"error: {d}: the plan's base has not been made here; make it with `{make}` "
                         "(docs/toy_base.md), then rerun this command")  # fmt: skip


def base_eval_command(py: str, cfg, seed: int, out: Path) -> list[str]:
    """eval.shapes_eval on the run's base model with the run's eval settings and eval seed."""
    ev = cfg.eval
    cmd = [py, "-m", "eval.shapes_eval", "--backbone", cfg.backbone.name, "--model-path", str(cfg.backbone.path),
           "--sampler", ev.sampler.name, "--steps", str(ev.sampler.num_steps), "--cfg", str(ev.sampler.cfg_scale),
           "--samples", str(ev.samples_per_prompt), "--batch-size", str(ev.batch_size), "--seed", str(seed),
           "--out", str(out), "--name", "eval_before", "--grid-prompts", "0",
           "--train-prompts-per-tag", str(ev.train_prompts_per_tag)]  # fmt: skip
    for k, v in ev.sampler.options.items():
        cmd += ["--sampler-option", f"{k}={json.dumps(v)}"]
    return cmd


def run_job(cmd: list[str], log: Path, threads: int) -> float:
    """Run one command with ``threads`` OpenMP threads, console to ``log``; returns wall seconds; raises on failure."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with log.open("a") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    if rc != 0:
        raise RuntimeError(f"exit {rc}: {' '.join(cmd)} (see {log})")
    return time.perf_counter() - t0


def pilot_rates(out: Path, methods: list[Method], overrides: list[str], py: str, threads: int, jobs: int
                ) -> dict[str, dict[str, float]]:  # fmt: skip
    """Forward-equivalents and wall seconds per round of each method (budget plans): a 2-round run at seed 0 without
    evaluation under out/pilot/, kept in out/pilot.json (a rerun of the study reuses it)."""
    from eval.budget_study import FE, SECONDS

    f = out / "pilot.json"
    rates = json.loads(f.read_text()) if f.is_file() else {}

    def pilot(m: Method) -> tuple[str, dict[str, float]]:
        d = out / "pilot" / slug(m.label)
        pilot_only = ["rl.rounds=2", "eval=null", "checkpoint.every=0", "log.image_every=0", "run.seed=0"]
        cmd = [py, "-m", "maskgrpo.train", "--config", m.config, *overrides, *m.overrides, *pilot_only,
               f"run.output_dir={d}", "--overwrite"]  # fmt: skip
        run_job(cmd, out / "pilot" / f"{slug(m.label)}.log", threads)
        last = read_metrics(d / "metrics.jsonl")[-1]
        return m.label, {"fe_per_round": last[FE] / 2, "seconds_per_round": last[SECONDS] / 2}

    todo = [m for m in methods if m.label not in rates]
    with ThreadPoolExecutor(jobs) as pool:
        for label, rate in pool.map(pilot, todo):
            rates[label] = rate
            f.write_text(json.dumps(rates, indent=1))
    return rates


def budget_schedule(plan: Plan, methods: list[Method], rounds: int, rates: dict[str, dict]) -> dict[str, tuple]:
    """Label -> (rounds, evaluation rounds): a matched method gets its reference's budget, any other method (the
    references) ``rounds`` rounds; both are evaluated at the budget points of eval.budget_study.schedule."""
    from eval.budget_study import schedule

    out = {}
    for m in methods:
        ref = plan.matched.get(m.label, m.label)
        fe_ref, fe = rates[ref]["fe_per_round"], rates[m.label]["fe_per_round"]
        out[m.label] = schedule(rounds, fe_ref, fe)
    return out


def budget_report(out: Path, plan: Plan, methods: list[Method], seeds: list[int], rounds: int, base: str,
                  sched: dict[str, tuple], rates: dict[str, dict]) -> str:  # fmt: skip
    """budget.md / budget.json and the two figures (accuracy against compute, per-tag changes); returns the
    markdown."""
    from eval.budget_study import compare_pair, curve, pair_table, plot_accuracy_vs_budget, plot_tags, tag_table

    curves = {m.label: {s: curve(out / slug(m.label) / f"seed{s}") for s in seeds} for m in methods}
    results = {label: compare_pair(curves[label], curves[ref], rounds) for label, ref in plan.matched.items()
               if label in curves and ref in curves}  # fmt: skip
    refs = {label: plan.matched[label] for label in results}
    plot_accuracy_vs_budget(curves, refs, base, out / "accuracy_vs_budget.png")
    plot_tags(results, base, out / "per_tag_equal_budget.png")
    sizes = "\n".join(f"| {label} | {rates[label]['fe_per_round']:.0f} | {rates[label]['seconds_per_round']:.1f} | "
                      f"{r} | {', '.join(map(str, ev))} |" for label, (r, ev) in sched.items())  # fmt: skip
    md = (f"Budget plan on {base}, seeds {seeds}: paired Δ held-out GenEval accuracy (method minus its reference, "
          "mean and 95% t-interval over seeds).\n\n" + pair_table(results, refs)
          + "\n\nPer tag, at the reference's full budget:\n\n" + tag_table(results, "equal_budget")
          + "\n\nPer tag, at the reference's full number of rounds:\n\n" + tag_table(results, "equal_rounds")
          + "\n\nSchedule (from the 2-round pilots; FE = forward-equivalents, a backward counted as two forwards):\n\n"
          "| method | FE / round | wall s / round | rounds | evaluated after rounds |\n"
          "| --- | ---: | ---: | ---: | --- |\n" + sizes + "\n")  # fmt: skip
    (out / "budget.md").write_text(md)
    (out / "budget.json").write_text(json.dumps({"seeds": seeds, "rounds": rounds, "base": base, "pilot": rates,
                                                 "schedule": sched, "results": results}, indent=1))  # fmt: skip
    return md


def total_forwards(metrics: Path) -> int:
    """Sum over rounds of every ``perf/forwards_*`` counter (model input rows through the network)."""
    return sum(int(v) for rec in read_metrics(metrics) for k, v in rec.items() if k.startswith("perf/forwards_"))


def study_table(rows: dict[str, dict]) -> str:
    """Markdown: one row per method; cells mean ± std over seeds. When a row holds ``paired`` (the
    :func:`paired_t_interval` of overall vs its reference as ``{mean, low, high, n}``, None for NaN), a last column
    shows it with its 95% interval."""
    paired = any("paired" in r for r in rows.values())
    head = ["method", *EVAL_KEYS, "Δ overall vs base", "partial credit", "Δ partial vs base",
            "training captions overall", "Δ vs base", "train reward, last 5", "wall s / run",
            "forwards / run"] + (["Δ overall vs reference, paired, 95% CI"] if paired else [])  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    none = (math.nan, math.nan, 0)  # fmt_stats prints "-"
    for label, r in rows.items():
        cells = [fmt_stats(r[k]) for k in EVAL_KEYS]
        cells[-1] = f"**{cells[-1]}**"
        cells.append(fmt_stats(r.get("delta", none), signed=True))
        cells.append(fmt_stats(r["partial_mean"]))
        cells.append(fmt_stats(r.get("delta_partial", none), signed=True))
        cells.append(fmt_stats(r.get("train", none)))
        cells.append(fmt_stats(r.get("delta_train", none), signed=True))
        cells.append(fmt_stats(r.get("reward_last", none)))
        cells.append(f"{r['wall'][0]:.0f}" if "wall" in r else "-")
        cells.append(f"{r['forwards'][0] / 1e3:.0f} k" if "forwards" in r else "-")
        if paired:
            cells.append(f"{fmt_interval(r['paired'])} vs {r['reference']}" if "paired" in r else "-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def collect(out: Path, methods: list[Method], seeds: list[int], references: dict[str, str] | None = None
            ) -> tuple[dict, dict]:  # fmt: skip
    """Per-method numbers over seeds (table rows) and loaded runs (curves). ``references``: label -> the method its
    paired difference is taken against, for the labels where that is not ``Method.reference`` (``Plan.references``)."""

    def load(d: Path, name: str) -> dict | None:
        f = d / name
        return json.loads(f.read_text()) if f.is_file() else None

    base = {s: load(out / "base" / f"seed{s}", "eval_before.json") for s in seeds}
    base_train = {s: load(out / "base" / f"seed{s}", "eval_before_train.json") for s in seeds}
    rows: dict[str, dict] = {"base": {k: mean_std([base[s][k] for s in seeds]) for k in ROW_KEYS}}
    if all(base_train.values()):
        rows["base"]["train"] = mean_std([base_train[s]["overall"] for s in seeds])
    curves: dict[str, list[dict]] = {}
    for m in methods:
        dirs = [out / slug(m.label) / f"seed{s}" for s in seeds]
        after = [json.loads((d / "eval_after.json").read_text()) for d in dirs]
        row = {k: mean_std([a[k] for a in after]) for k in ROW_KEYS}
        row["delta"] = mean_std([a["overall"] - base[s]["overall"] for a, s in zip(after, seeds)])
        row["delta_partial"] = mean_std([a["partial_mean"] - base[s]["partial_mean"] for a, s in zip(after, seeds)])
        train = [load(d, "eval_after_train.json") for d in dirs]
        if all(train) and all(base_train.values()):
            row["train"] = mean_std([t["overall"] for t in train])
            row["delta_train"] = mean_std([t["overall"] - base_train[s]["overall"] for t, s in zip(train, seeds)])
        runs = [load_run(d) for d in dirs]
        row["reward_last"] = mean_std([float(r["reward"][-5:].mean()) for r in runs])
        walls = [d.parent / f"{d.name}.wall" for d in dirs]  # missing: the run was finished outside this tool
        if all(w.is_file() for w in walls):  # (e.g. a trainer that outlived a killed study): no wall column
            row["wall"] = mean_std([float(w.read_text()) for w in walls])
        row["forwards"] = mean_std([float(total_forwards(d / "metrics.jsonl")) for d in dirs])
        rows[m.label], curves[m.label] = row, runs
    labels = {m.label for m in methods}

    def after(label: str, s: int) -> dict:
        return json.loads((out / slug(label) / f"seed{s}" / "eval_after.json").read_text())

    for m in methods:  # paired differences: same training seed, same eval seed (base: same eval seed)
        keys = [k for k in PAIRED_KEYS if all(k in after(m.label, s) and k in base[s] for s in seeds)]
        rows[m.label]["vs_base"] = {k: ci_record(paired_t_interval([after(m.label, s)[k] - base[s][k] for s in seeds]))
                                    for k in keys}  # fmt: skip
        reference = (references or {}).get(m.label, m.reference)
        if reference in labels and reference != m.label:
            ref = {s: after(reference, s) for s in seeds}
            rows[m.label]["vs_reference"] = {
                k: ci_record(paired_t_interval([after(m.label, s)[k] - ref[s][k] for s in seeds])) for k in keys
            }
            rows[m.label]["paired"] = rows[m.label]["vs_reference"]["overall"]
            rows[m.label]["reference"] = reference
    return rows, curves


def paired_table(rows: dict[str, dict]) -> str:
    """Markdown: per method, the 95% t-interval over seeds of its paired change vs the base and vs its reference
    method, for GenEval accuracy (overall), partial credit and the graded verdict ("-" where not measured)."""
    names = {"overall": "accuracy", "partial_mean": "partial credit", "graded_mean": "graded verdict"}
    head = ["method", *(f"Δ {names[k]} vs base" for k in PAIRED_KEYS), "reference",
            *(f"Δ {names[k]} vs reference" for k in PAIRED_KEYS)]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(PAIRED_KEYS)) + " --- |" + " ---: |" * 3]
    for label, r in rows.items():
        if "vs_base" not in r:
            continue
        vs_ref = r.get("vs_reference", {})
        cells = [fmt_interval(r["vs_base"][k]) if k in r["vs_base"] else "-" for k in PAIRED_KEYS]
        cells.append(r.get("reference", "-"))
        cells += [fmt_interval(vs_ref[k]) if k in vs_ref else "-" for k in PAIRED_KEYS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*", help="config overrides for every run, e.g. rl.rounds=10")
    sizes = "; ".join(f"{k}: {len(p.methods)} methods x {len(p.seeds)} seeds" for k, p in PLANS.items())
    ap.add_argument("--plan", default="study", choices=list(PLANS), help=f"which study (default study): {sizes}")
    ap.add_argument("--quick", action="store_true", help="small version: " + " ".join(QUICK) + ", seed 0")
    # every run gets the plan's settings, then --quick's, then the KEY=VALUE arguments
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="run seeds (default: the plan's; --quick: 0)")
    ap.add_argument("--methods", nargs="+", default=None, choices=list(METHODS), metavar="NAME",
                    help=f"subset of methods (default all): {', '.join(METHODS)}")  # fmt: skip
    ap.add_argument("--jobs", type=int, default=2, help="runs at once (default 2; threads per run = cores // jobs)")
    ap.add_argument("--threads", type=int, default=None, help="OpenMP threads per run (default cores // jobs)")
    ap.add_argument("--out", default=None, help="output folder (default: the plan's, + _quick with --quick)")
    args = ap.parse_args(argv)
    plan = PLANS[args.plan]
    seeds = args.seeds or ([0] if args.quick else list(plan.seeds))
    # --quick keeps the plan's own settings (e.g. the focused plan's accuracy monitor) under QUICK's sizes
    overrides = list(plan.overrides) + (QUICK if args.quick else []) + list(args.overrides)
    out = Path(args.out or (plan.out + ("_quick" if args.quick else "")))
    methods = [METHODS[n] for n in (args.methods or plan.methods)]
    threads = args.threads or max(1, (os.cpu_count() or 1) // max(1, args.jobs))
    py = sys.executable
    commit = git_commit()  # read now: a commit made while the study runs is not the one its runs used

    from tqdm import tqdm

    # 1. the base model's evaluation, once per eval seed
    cfg0 = resolved_config(methods[0], overrides)
    require_base(cfg0.backbone.path, plan.base_make)
    sched: dict[str, tuple] = {}
    if plan.matched:  # 0. budget plans: a pilot of every method sizes its rounds and evaluation points
        rates = pilot_rates(out, methods, overrides, py, threads, args.jobs)
        sched = budget_schedule(plan, methods, cfg0.rl.rounds, rates)
    base_jobs = [s for s in seeds if not (out / "base" / f"seed{s}" / "eval_before.json").is_file()]
    # 2. every (method, seed) run that has not finished, longest first so the pool packs well
    jobs = []
    for m in methods:
        for s in seeds:
            d = out / slug(m.label) / f"seed{s}"
            if (d / "eval_after.json").is_file():
                continue
            seeded = [f"run.seed={s}", f"eval.seed={BASE_SEED + s}", f"run.output_dir={d}", "run.wandb_mode=disabled"]
            if m.label in sched:
                rounds, evals = sched[m.label]
                seeded += [f"rl.rounds={rounds}", f"eval.rounds=[{','.join(map(str, evals))}]"]
            cmd = [py, "-m", "maskgrpo.train", "--config", m.config, *overrides, *m.overrides, *seeded]
            if (d / "checkpoints").is_dir():
                cmd.append("--resume")
            jobs.append((m, s, d, cmd))
    jobs.sort(key=lambda j: -j[0].cost)  # stable: table order within one cost
    print(f"[compare] {len(methods)} methods x seeds {seeds}: {len(jobs)} runs to do, {args.jobs} at a time, "
          f"{threads} thread(s) each -> {out}", flush=True)  # fmt: skip

    def base_job(s: int) -> None:
        d = out / "base" / f"seed{s}"
        run_job(base_eval_command(py, cfg0, BASE_SEED + s, d), out / "base" / f"seed{s}.log", threads)

    def train_job(job) -> None:
        m, s, d, cmd = job
        d.mkdir(parents=True, exist_ok=True)
        for name in ("eval_before.json", "eval_before_train.json"):  # same model and eval settings: reuse the base's
            base = out / "base" / f"seed{s}" / name
            if base.is_file() and not (d / name).is_file():
                shutil.copy(base, d / name)
        wall = run_job(cmd, d.parent / f"seed{s}.log", threads)
        (d.parent / f"seed{s}.wall").write_text(f"{wall:.1f}\n")  # a resumed run: the attempt that finished
        (d.parent / f"seed{s}.commit").write_text(commit + "\n")  # the code this run was made with

    with ThreadPoolExecutor(args.jobs) as pool, tqdm(total=len(base_jobs) + len(jobs), desc="study runs") as bar:
        for _ in pool.map(lambda s: (base_job(s), bar.update()), base_jobs):
            pass
        for _ in pool.map(lambda j: (train_job(j), bar.update()), jobs):
            pass

    rows, curves = collect(out, methods, seeds, plan.references)
    table = study_table(rows)
    command = "python -m eval.toy_compare " + " ".join(argv if argv is not None else sys.argv[1:])
    stamps = [out / slug(m.label) / f"seed{s}.commit" for m in methods for s in seeds]
    commits = sorted({f.read_text().strip() if f.is_file() else "not recorded" for f in stamps})
    header = (f"ShapesWorld study: {len(seeds)} seed(s) {seeds}, held-out ShapesEval (mean ± std over seeds; Δ is "
              f"paired per eval seed). Runs made on commit {', '.join(commits)}; command `{command.strip()}`; "
              f"overrides {overrides or 'none'}.\n\n")  # fmt: skip
    legend = "\n".join(f"- {m.label}: `{m.config}`, {m.note}" for m in methods)
    paired = ("\n\nPaired changes, mean and 95% t-interval over seeds (held-out captions; Δ vs base: the run minus "
              "the base on the same eval seed; Δ vs reference: minus the reference method's run of the same seed):\n\n"
              + paired_table(rows))  # fmt: skip
    (out / "study.md").write_text(header + table + paired + "\n\n" + legend + "\n")
    (out / "study.json").write_text(json.dumps({"seeds": seeds, "overrides": overrides, "commits": commits,
                                                "rows": jsonable_stats(rows)}, indent=1))  # fmt: skip
    plot_curves(curves, out / "reward_curves.png", smooth=3)
    acc = {m.label: [metric_curve(out / slug(m.label) / f"seed{s}" / "metrics.jsonl", ACCURACY_KEY) for s in seeds]
           for m in methods}  # fmt: skip
    acc = {label: runs for label, runs in acc.items() if all(r is not None for r in runs)}
    if acc:
        plot_metric_curves(
            acc,
            out / "accuracy_curves.png",
            "GenEval accuracy of the rollouts",
            smooth=3,
            base=base_title(cfg0.backbone.path),
        )
    print(header + table + paired)
    if plan.matched:
        print(
            "\n"
            + budget_report(out, plan, methods, seeds, cfg0.rl.rounds, base_title(cfg0.backbone.path), sched, rates)
        )
        print(f"wrote {out / 'budget.md'}, {out / 'accuracy_vs_budget.png'}, {out / 'per_tag_equal_budget.png'}")
    print(f"\nwrote {out / 'study.md'}, {out / 'study.json'}, {out / 'reward_curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
