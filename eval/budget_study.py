"""Accuracy against compute: the equal-budget comparison of ``python -m eval.toy_compare --plan budget``.

Every method's compute is counted in *forward-equivalents* (FE, ``maskgrpo.budget``: rollout and no-grad rows 1
each, a back-propagated row 3) and in training wall seconds. A reference method (MaskGRPO) runs ``rl.rounds``
rounds; each other method runs as many rounds as the reference's FE buy, from a 2-round pilot of each method
(:func:`schedule`). Every run is evaluated (held-out ShapesEval, the plan's eval seed) before training, at the
rounds where it has spent half and all of the reference's budget, and at the reference's number of rounds, so both
"equal rounds" and "equal budget" read evaluations that were actually made (an evaluation at 24 images per caption
costs about as much as 8-20 rounds of training on the compose base, so the schedule keeps to these points).

Per seed, a comparison at a budget B takes the method's last evaluation whose logged FE is <= B (never more
compute than the reference) against the reference's evaluation at B. Time-to-accuracy: the smallest logged FE at
which the method's held-out accuracy reaches the reference's final accuracy of the same seed (as a fraction of
the reference's budget), or "not reached".
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eval.study_stats import ci_record, fmt_interval, paired_t_interval
from maskgrpo.jsonl import read_metrics
from maskgrpo.scoring.geneval_rules import GENEVAL_TAGS

FE = "budget/forward_equivalents"
SECONDS = "budget/seconds"
FRACTIONS = (0.5, 1.0)
"""Budget points, as fractions of the reference's full budget, at which every method is evaluated."""


def schedule(rounds: int, fe_ref: float, fe_method: float) -> tuple[int, tuple[int, ...]]:
    """(rounds, evaluation rounds) of a method whose pilot spent ``fe_method`` FE per round, matched to a reference
    that runs ``rounds`` rounds at ``fe_ref`` FE per round.

    The method runs floor(rounds * fe_ref / fe_method) rounds and is evaluated where its planned spend reaches half
    and all of the reference's budget (floor: never past it) and at the reference's number of rounds.
    Test: 30 rounds, fe_ref 2000, fe_method 800 -> 75 rounds; budget points 37, 75; equal rounds 30.
    """
    ratio = fe_ref / fe_method
    total = max(1, math.floor(rounds * ratio + 1e-9))
    points = {max(1, math.floor(f * rounds * ratio + 1e-9)) for f in FRACTIONS}
    points |= {rounds} if rounds <= total else set()
    return total, tuple(sorted(points))


@dataclass(frozen=True)
class Point:
    """One evaluation of a run: after ``round`` rounds, ``fe`` FE and ``seconds`` spent; accuracy and per-tag."""

    round: int
    fe: float
    seconds: float
    overall: float
    tags: dict[str, float]


def curve(run: Path) -> list[Point]:
    """The run's evaluations in round order: the base (round 0, eval_before.json) and every ``eval/heldout/*``
    line of its metrics.jsonl (a resumed run's repeated round keeps its last line)."""
    before = json.loads((run / "eval_before.json").read_text())
    points = {0: Point(0, 0.0, 0.0, before["overall"], {t: before[t] for t in GENEVAL_TAGS})}
    for rec in read_metrics(run / "metrics.jsonl"):
        if "eval/heldout/overall" in rec:
            tags = {t: rec[f"eval/heldout/{t}"] for t in GENEVAL_TAGS}
            points[rec["round"]] = Point(rec["round"], rec[FE], rec[SECONDS], rec["eval/heldout/overall"], tags)
    return [points[r] for r in sorted(points)]


def at_round(points: list[Point], r: int) -> Point | None:
    return next((p for p in points if p.round == r), None)


def within_budget(points: list[Point], budget: float) -> Point:
    """The last evaluation that spent at most ``budget`` FE (the base at 0 FE when none did)."""
    return [p for p in points if p.fe <= budget + 1e-6][-1]


def time_to_accuracy(points: list[Point], target: float) -> float | None:
    """The smallest FE at which an evaluation reaches ``target`` held-out accuracy (None: never)."""
    return next((p.fe for p in points[1:] if p.overall >= target - 1e-12), None)


def compare_pair(method: dict[int, list[Point]], ref: dict[int, list[Point]], rounds: int) -> dict:
    """Paired comparisons of a method against its reference over the seeds both have (dicts seed -> curve).

    Returns JSON-ready records: ``equal_rounds`` / ``equal_budget`` at ``half`` and ``full`` (overall and per-tag
    paired 95% t-intervals, method minus reference; ``budget_ratio``: the method's FE over the reference's at the
    compared points, mean over seeds), ``time_to_accuracy`` (fractions of the reference's budget, with the count
    of seeds that never reached it) and ``seeds``.
    """
    seeds = sorted(set(method) & set(ref))
    out: dict = {"seeds": seeds}
    for name, pick in (("equal_rounds", "rounds"), ("equal_budget", "budget")):
        out[name] = {}
        for label, frac in (("half", 0.5), ("full", 1.0)):
            pairs = []
            for s in seeds:
                r_pt = at_round(ref[s], round(rounds * frac))
                if r_pt is None:
                    continue
                m_pt = at_round(method[s], round(rounds * frac)) if pick == "rounds" else within_budget(
                    method[s], r_pt.fe)  # fmt: skip
                if m_pt is not None:
                    pairs.append((m_pt, r_pt))
            record = {"overall": ci_record(paired_t_interval([m.overall - r.overall for m, r in pairs]))}
            record["tags"] = {t: ci_record(paired_t_interval([m.tags[t] - r.tags[t] for m, r in pairs]))
                              for t in GENEVAL_TAGS}  # fmt: skip
            record["budget_ratio"] = float(np.mean([m.fe / r.fe for m, r in pairs])) if pairs else None
            record["seconds_ratio"] = float(np.mean([m.seconds / r.seconds for m, r in pairs])) if pairs else None
            record["method"] = float(np.mean([m.overall for m, _ in pairs])) if pairs else None
            record["reference"] = float(np.mean([r.overall for _, r in pairs])) if pairs else None
            out[name][label] = record
    reached, never = [], 0
    for s in seeds:
        final = at_round(ref[s], rounds)
        if final is None:
            continue
        fe = time_to_accuracy(method[s], final.overall)
        if fe is None:
            never += 1
        else:
            reached.append(fe / final.fe)
    out["time_to_accuracy"] = {"fraction": ci_record(paired_t_interval(reached)), "reached": len(reached),
                               "not_reached": never}  # fmt: skip
    return out


def pair_table(results: dict[str, dict], references: dict[str, str]) -> str:
    """Markdown: per method, its paired Δ held-out accuracy vs its reference at equal rounds and equal budget (half
    and full), the FE ratio actually compared, and time-to-accuracy."""
    head = ["method", "vs", "Δ at the reference's rounds", "Δ at half its budget", "Δ at its full budget",
            "FE / wall-s ratio at full budget", "time to the reference's final accuracy"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "| --- | --- |" + " ---: |" * (len(head) - 2)]
    for label, r in results.items():
        tta = r["time_to_accuracy"]
        when = "not reached" if not tta["reached"] else f"{fmt_interval(tta['fraction'], 2)} of its budget"
        if tta["reached"] and tta["not_reached"]:
            when += f" ({tta['not_reached']} of {tta['reached'] + tta['not_reached']} seeds: not reached)"
        full = r["equal_budget"]["full"]
        ratio = "-" if full["budget_ratio"] is None else f"{full['budget_ratio']:.3f} / {full['seconds_ratio']:.2f}"
        points = (("equal_rounds", "full"), ("equal_budget", "half"), ("equal_budget", "full"))
        cells = [label, references[label], *(fmt_interval(r[k][h]["overall"]) for k, h in points), ratio, when]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tag_table(results: dict[str, dict], which: str = "equal_budget") -> str:
    """Markdown: per method, the paired Δ of each tag vs its reference at the full ``which`` point."""
    lines = ["| method | " + " | ".join(GENEVAL_TAGS) + " |", "| --- |" + " ---: |" * len(GENEVAL_TAGS)]
    for label, r in results.items():
        tags = r[which]["full"]["tags"]
        lines.append(f"| {label} | " + " | ".join(fmt_interval(tags[t], 2) for t in GENEVAL_TAGS) + " |")
    return "\n".join(lines)


def plot_accuracy_vs_budget(curves: dict[str, dict[int, list[Point]]], references: dict[str, str], base: str,
                            path: Path) -> None:  # fmt: skip
    """The headline figure: one panel per (method, reference) pair, shared axes; each panel the two methods' held-out
    accuracy against FE spent (as a fraction of the reference's budget): mean over seeds and a 95% t-band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = [(m, references[m]) for m in curves if m in references]
    cols = min(3, len(pairs))
    rows = -(-len(pairs) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), sharex=True, sharey=True, squeeze=False)
    for ax, (label, ref) in zip(axes.flat, pairs):
        seeds = sorted(set(curves[label]) & set(curves[ref]))
        full = {s: curves[ref][s][-1].fe for s in seeds}
        for name, style in ((ref, dict(color="0.35", ls="--")), (label, dict(color="tab:blue"))):
            xs, means, halves = band([[(p.fe / full[s], p.overall) for p in curves[name][s]] for s in seeds])
            ax.plot(xs, means, marker="o", ms=3, label=name, **style)
            ax.fill_between(xs, means - halves, means + halves, alpha=0.18, color=style["color"])
        ax.set_title(f"{label} vs {ref}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    for ax in axes.flat[len(pairs) :]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("compute spent / the reference's full budget (FE)")
    for ax in axes[:, 0]:
        ax.set_ylabel("held-out GenEval accuracy")
    n = min(len(v) for v in curves.values())
    fig.suptitle(f"Held-out accuracy against compute, base {base}\nline: mean over n = {n} seeds; band: 95% "
                 "t-interval of that mean; points: the evaluations made", fontsize=9)  # fmt: skip
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def band(runs: list[list[tuple[float, float]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and 95% t half-width over runs, on the k-th evaluation of each run (runs share the schedule; x is the
    mean of the k-th points' x). Runs of unequal length are cut to the shortest."""
    k = min(len(r) for r in runs)
    x = np.array([[r[i][0] for i in range(k)] for r in runs])  # (n, k)
    y = np.array([[r[i][1] for i in range(k)] for r in runs])
    half = np.zeros(k)
    if len(runs) > 1:
        from eval.study_stats import t975

        half = t975(len(runs) - 1) * y.std(0, ddof=1) / math.sqrt(len(runs))
    return x.mean(0), y.mean(0), half


def plot_tags(results: dict[str, dict], base: str, path: Path, which: str = "equal_budget") -> None:
    """Small multiples, one panel per tag: each method's paired Δ vs its reference at the full ``which`` point, with
    its 95% t-interval (shared y axis, a zero line)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(results)
    fig, axes = plt.subplots(1, len(GENEVAL_TAGS), figsize=(2.3 * len(GENEVAL_TAGS), 3.6), sharey=True)
    for ax, tag in zip(axes, GENEVAL_TAGS):
        for i, label in enumerate(labels):
            ci = results[label][which]["full"]["tags"][tag]
            if not ci["n"]:
                continue
            low = ci["low"] if ci["low"] is not None else ci["mean"]
            high = ci["high"] if ci["high"] is not None else ci["mean"]
            ax.errorbar([i], [ci["mean"]], yerr=[[ci["mean"] - low], [high - ci["mean"]]], fmt="o", capsize=3)
        ax.axhline(0, color="0.5", lw=0.8)
        ax.set_title(tag, fontsize=9)
        ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_ylabel("Δ held-out accuracy vs reference")
    n = max((r["seeds"] for r in results.values()), key=len)
    fig.suptitle(f"Per-tag change at {which.replace('_', ' ')} (full), base {base}: paired mean over n = {len(n)} "
                 "seeds and its 95% t-interval", fontsize=9)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
