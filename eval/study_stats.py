"""Statistics and curves of the toy comparison studies (eval/toy_compare.py): paired t-intervals over seeds and the
per-round curve of any logged metric (mean and +/- std band over seeds)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from maskgrpo.jsonl import read_metrics

if TYPE_CHECKING:
    from matplotlib.figure import Figure

T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045,
        2.042)  # fmt: skip
"""Student-t 0.975 quantiles for 1..30 degrees of freedom (two-sided 95%); beyond 30 the normal 1.96 is used."""


def t975(df: int) -> float:
    """The two-sided 95% Student-t quantile for ``df`` >= 1 degrees of freedom (1.96 beyond the table)."""
    if df < 1:
        raise ValueError(f"a t-interval needs at least 2 values (df >= 1), got df = {df}")
    return T975[df - 1] if df <= len(T975) else 1.96


def paired_t_interval(diffs: list[float]) -> tuple[float, float, float, int]:
    """95% t-interval of the mean of paired differences d_s (one per seed): (mean, low, high, n).

    mean = sum d / n; half = t_{0.975, n-1} * sd(d, ddof=1) / sqrt(n). NaN bounds for n = 1; (nan, nan, nan, 0)
    for no values. Test: d = (0.01, 0.03, 0.05): mean 0.03, sd 0.02, half 4.303 * 0.02 / sqrt(3) = 0.049687.
    """
    d = np.array([x for x in diffs if x is not None and math.isfinite(x)], dtype=np.float64)
    if len(d) == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(d.mean())
    if len(d) == 1:
        return mean, math.nan, math.nan, 1
    half = t975(len(d) - 1) * float(d.std(ddof=1)) / math.sqrt(len(d))
    return mean, mean - half, mean + half, len(d)


def ci_record(ci: tuple[float, float, float, int]) -> dict:
    """A :func:`paired_t_interval` as strict-JSON ``{"mean", "low", "high", "n"}`` (NaN -> None)."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in zip(("mean", "low", "high", "n"), ci)}


def fmt_interval(ci: dict, digits: int = 3) -> str:
    """``+0.030 [-0.020, +0.080]`` from a :func:`ci_record`; the mean alone without bounds, "-" for n = 0."""
    if not ci["n"]:
        return "-"
    if ci["low"] is None:
        return f"{ci['mean']:+.{digits}f}"
    return f"{ci['mean']:+.{digits}f} [{ci['low']:+.{digits}f}, {ci['high']:+.{digits}f}]"


def metric_curve(metrics: Path, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(rounds, values) of ``key`` in a run's metrics.jsonl (last line per round wins), or None if never logged."""
    by_round = {int(rec["round"]): float(rec[key]) for rec in read_metrics(metrics) if key in rec}
    if not by_round:
        return None
    rounds = sorted(by_round)
    return np.array(rounds), np.array([by_round[r] for r in rounds])


def band_caption(counts: list[int], smooth: int = 1) -> str:
    """The sentence under a curve plot: what a line and its band are, and n (runs per line)."""
    avg = f"; curves are {smooth}-round moving averages" if smooth > 1 else ""
    if max(counts) == 1:
        return f"One run per line (n = 1), no band{avg}."
    n = f"n = {counts[0]} runs (seeds) per line" if len(set(counts)) == 1 else "n runs (seeds) per line in the legend"
    return (f"Line: the mean over a line's runs; band: ±1 sample SD over them (ddof = 1; none where n = 1); "
            f"{n}{avg}.")  # fmt: skip


def mean_curve(runs: list[tuple[np.ndarray, np.ndarray]], smooth: int = 1) -> tuple[np.ndarray, ...]:
    """(x, mean, std) over ``runs`` on the rounds they share, after a ``smooth``-round moving average (std is 0 for
    one run)."""
    common = sorted(set.intersection(*(set(r.tolist()) for r, _ in runs)))
    ys = np.stack([v[np.isin(r, common)] for r, v in runs])  # (n_runs, R)
    if smooth > 1 and ys.shape[1] >= smooth:
        ys = np.stack([np.convolve(y, np.ones(smooth) / smooth, mode="valid") for y in ys])
    x = np.array(common)[len(common) - ys.shape[1] :]
    return x, ys.mean(0), ys.std(0, ddof=1) if len(runs) > 1 else np.zeros(ys.shape[1])


OVERLAY_MAX = 3
"""Up to this many groups share one axis; more get one panel each (small multiples, shared axes)."""


def plot_metric_curves(groups: dict[str, list[tuple[np.ndarray, np.ndarray]]], path: Path, ylabel: str,
                       smooth: int = 1, base: str | None = None, title: str | None = None) -> Figure:  # fmt: skip
    """Per group: the mean over its runs (rounds they share), a +/- std band, moving average ``smooth``. Up to
    ``OVERLAY_MAX`` groups on one axis; more as small multiples with shared axes, one panel per group, each with the
    first group's mean as a dashed grey reference line.

    The title names ``title`` (default: ``ylabel`` per round) and ``base`` (the runs' ``backbone.path`` as
    configured, e.g. ``assets/toy_base``); the caption under the axes says what the band is and n. Saves a PNG to
    ``path`` and returns the (closed) matplotlib Figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(groups)
    panels = [labels] if len(labels) <= OVERLAY_MAX else [[label] for label in labels]
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(7.5, 4.8) if len(panels) == 1 else (3.6 * cols, 2.9 * rows + 0.8),
                             sharex=True, sharey=True, squeeze=False)  # fmt: skip
    reference = mean_curve(groups[labels[0]], smooth)
    for ax, members in zip(axes.flat, panels):
        if len(panels) > 1 and members[0] != labels[0]:
            ax.plot(reference[0], reference[1], color="0.55", ls="--", lw=1, label=f"{labels[0]} (mean)")
        for label in members:
            x, mean, std = mean_curve(groups[label], smooth)
            (line,) = ax.plot(x, mean, label=f"{label} (n={len(groups[label])})")
            if len(groups[label]) > 1:
                ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7 if len(panels) > 1 else 8)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("round")
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel + (f" (moving average {smooth})" if smooth > 1 else ""), fontsize=8)
    fig.suptitle((title or f"{ylabel} per round") + (f"\nbase {base}" if base else ""), fontsize=10)
    fig.text(0.5, 0.01, band_caption([len(r) for r in groups.values()], smooth), ha="center", va="bottom",
             fontsize=8, wrap=True)  # fmt: skip
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return fig
