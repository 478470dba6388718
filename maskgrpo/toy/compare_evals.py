"""``python -m maskgrpo.toy.compare_evals RUN_DIR``: the main job's closing summary, one screen, before vs after RL.

Prints the trained reward (first vs last quarter of the rounds, from ``metrics.jsonl``) and, for the held-out
captions (and the training captions when the run scored them), GenEval accuracy, partial credit and the graded
verdict before and after, each change with its 95% eval-noise band and whether it exceeds it, then one plain verdict.

Eval-noise band (the only noise the before/after pair has: same captions, same eval seed, different weights):
    accuracy:  the binomial variance of each caption's pass rate over its images, summed into its tag's rate and
               the unweighted mean of tags (:func:`accuracy_se`; the captions are fixed, so only the images vary).
    means:     SE = per-image SD / sqrt(num_images) (partial credit, graded verdict).
    change:    band = 1.96 * sqrt(SE_before^2 + SE_after^2); "beyond noise" when |after - before| > band.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from maskgrpo.jsonl import read_metrics
from maskgrpo.scoring.geneval_rules import GENEVAL_TAGS

Z95 = 1.96
"""Two-sided 95% normal quantile of the noise band."""

METRICS: dict[str, tuple[str, str | None]] = {
    "overall": ("GenEval accuracy (overall)", None),
    "partial_mean": ("partial credit (mean)", "partial_sd"),
    "graded_mean": ("graded verdict (mean)", "graded_sd"),
}
"""Eval-JSON key -> (label, key of its per-image SD; None = binomial SE over the tags)."""


def accuracy_se(summary: dict) -> float:
    """SE of GenEval's overall (the mean of T tag pass rates) from the sampling of the eval images; NaN without counts.

    Per caption (``caption_correct``: prompt -> [tag, hits, n]; captions fixed, images independent):
        var(acc_t) = sum_{c in t} n_c p_c (1 - p_c) * n_c / (n_c - 1) / n_t^2,   p_c = hits_c / n_c
        SE^2 = (1 / T^2) sum_t var(acc_t)     (the n_c / (n_c - 1) factor makes p_c (1 - p_c) unbiased)
    Fallback, per tag (``tag_images`` only): var(acc_t) = p_t (1 - p_t) / n_t with p_t = (hits + 1) / (n_t + 2),
    an upper bound that ignores how pass rates differ between captions.
    Tests: tests/test_compare_evals.py::test_accuracy_se_is_the_binomial_se_of_the_mean_of_tags.
    """
    captions = summary.get("caption_correct")
    if captions:
        var: dict[str, float] = {}
        size: dict[str, int] = {}
        for tag, hits, n in captions.values():
            p = hits / n
            var[tag] = var.get(tag, 0.0) + (n * p * (1 - p) * n / (n - 1) if n > 1 else 0.0)
            size[tag] = size.get(tag, 0) + n
        return math.sqrt(sum(var[t] / size[t] ** 2 for t in var)) / len(var)
    counts = summary.get("tag_images")
    if not counts:
        return math.nan
    total = 0.0
    for tag, n in counts.items():
        p = (summary[tag] * n + 1) / (n + 2)
        total += p * (1 - p) / n
    return math.sqrt(total) / len(counts)


def metric_se(summary: dict, key: str) -> float:
    """SE of one eval number (see :data:`METRICS`); NaN when the eval JSON lacks what it needs."""
    sd_key = METRICS[key][1]
    if sd_key is None:
        return accuracy_se(summary)
    if sd_key not in summary or not summary.get("num_images"):
        return math.nan
    return summary[sd_key] / math.sqrt(summary["num_images"])


def change_verdict(before: float, after: float, se_before: float, se_after: float) -> tuple[float, float, str]:
    """(change, 95% band, verdict): verdict is "up" / "down" beyond the band, "within noise", or "n/a" (no SE)."""
    change = after - before
    band = Z95 * math.sqrt(se_before**2 + se_after**2)
    if math.isnan(band):
        return change, band, "n/a"
    if abs(change) <= band:
        return change, band, "within noise"
    return change, band, "up" if change > 0 else "down"


def before_after_table(before: dict, after: dict) -> tuple[str, dict[str, str]]:
    """Markdown rows for :data:`METRICS` present in both, and the verdict per key."""
    lines = ["| metric | before | after | change | 95% noise band | beyond noise? |", "|---|---:|---:|---:|---:|---|"]
    verdicts = {}
    for key, (label, _) in METRICS.items():
        if key not in before or key not in after:
            continue
        change, band, verdict = change_verdict(before[key], after[key], metric_se(before, key), metric_se(after, key))
        band_txt = "n/a" if math.isnan(band) else f"±{band:.3f}"
        lines.append(f"| {label} | {before[key]:.3f} | {after[key]:.3f} | {change:+.3f} | {band_txt} | {verdict} |")
        verdicts[key] = verdict
    tags = ", ".join(f"{t} {before[t]:.2f}->{after[t]:.2f}" for t in GENEVAL_TAGS if t in before and t in after)
    return "\n".join(lines) + f"\ntags: {tags}", verdicts


def reward_trend(metrics: list[dict]) -> tuple[tuple[int, int], tuple[int, int], float, float]:
    """First and last quarter of the rounds (at least one round each) and their mean ``reward/mean``."""
    rows = sorted({int(m["round"]): m for m in metrics}.values(), key=lambda m: int(m["round"]))
    k = max(1, len(rows) // 4)
    first, last = rows[:k], rows[-k:]

    def mean(rs: list[dict]) -> float:
        return sum(float(r["reward/mean"]) for r in rs) / len(rs)

    span = lambda rs: (int(rs[0]["round"]), int(rs[-1]["round"]))  # noqa: E731
    return span(first), span(last), mean(first), mean(last)


def trained_reward_names(run: Path, last: dict) -> list[str]:
    """Names of the rewards with a non-zero weight (from the run's config.yaml; else every logged reward)."""
    logged = sorted(
        k.split("/")[1] for k in last if k.startswith("reward/") and k.endswith("/mean") and k.count("/") == 2
    )
    cfg = run / "config.yaml"
    if cfg.is_file():
        import yaml

        rewards = (yaml.safe_load(cfg.read_text()) or {}).get("rewards") or {}
        weighted = [n for n, e in rewards.items() if not isinstance(e, dict) or e.get("weight", 1.0) != 0]
        if weighted:
            return weighted
    return logged


def verdict_line(verdict: str, change: float, band: float) -> str:
    """The plain closing sentence about held-out GenEval accuracy."""
    if verdict == "up":
        return f"Held-out GenEval accuracy ROSE beyond eval noise ({change:+.3f}, band ±{band:.3f})."
    if verdict == "down":
        return (f"Held-out GenEval accuracy FELL beyond eval noise ({change:+.3f}, band ±{band:.3f}):\nthis run "
                f"made held-out images worse on the benchmark while training on its reward.")  # fmt: skip
    if verdict == "n/a":
        return "Held-out GenEval accuracy: no noise band (the eval JSONs lack tag_images; rerun the evaluation)."
    return (f"Held-out GenEval accuracy did NOT change beyond eval noise ({change:+.3f}, band ±{band:.3f}).\nWith "
            f"this config, RL on ShapesWorld raises the reward it trains on, not held-out accuracy; see the\n"
            f"README's comparison study for the same over several seeds.")  # fmt: skip


def summarize(run: Path) -> str:
    """The whole one-screen summary of a finished toy run."""
    files = [run / "eval_before.json", run / "eval_after.json"]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"missing {missing} (was the run configured with an eval: section?)")
    before, after = (json.loads(f.read_text()) for f in files)
    out = [f"ShapesWorld run {run}"]
    metrics_file = run / "metrics.jsonl"
    if metrics_file.is_file():
        rows = [r for r in read_metrics(metrics_file) if "reward/mean" in r]
        if rows:
            names = trained_reward_names(run, rows[-1])
            (a0, a1), (b0, b1), first, last = reward_trend(rows)
            out.append(f"trained reward ({' + '.join(names) or 'reward/mean'}), mean of rounds {a0}-{a1} -> "
                       f"{b0}-{b1}: {first:.3f} -> {last:.3f} ({last - first:+.3f})")  # fmt: skip
    n_tags = len(before.get("tag_images", {})) or "?"
    out.append(f"\nHeld-out captions, {after.get('num_images', '?')} images over {n_tags} tags "
               f"(same captions and eval seed before and after):")  # fmt: skip
    table, verdicts = before_after_table(before, after)
    out.append(table)
    train = [run / "eval_before_train.json", run / "eval_after_train.json"]  # eval.train_prompts_per_tag > 0
    if all(f.is_file() for f in train):
        tb, ta = (json.loads(f.read_text()) for f in train)
        out.append(f"\nTraining captions (in-distribution), {ta.get('num_images', '?')} images:")
        out.append(before_after_table(tb, ta)[0])
    out.append(
        "\nNoise band: 1.96 x SE of the change; accuracy SE from the binomial variance of each caption's pass rate\n"
        "over its images (overall = mean of tags); means: per-image SD / sqrt(images); before and after independent."
    )
    if "overall" in verdicts:
        change, band, verdict = change_verdict(before["overall"], after["overall"],
                                               metric_se(before, "overall"), metric_se(after, "overall"))  # fmt: skip
        out.append(verdict_line(verdict, change, band))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m maskgrpo.toy.compare_evals", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("run", help="a finished toy run's folder (eval_before.json, eval_after.json, metrics.jsonl)")
    args = ap.parse_args(argv)
    try:
        print(summarize(Path(args.run)))
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
