"""Rank diagnostics: does the early-structure / late-refinement asymmetry HT-GRPO relies on exist?

    python -m eval.rank_diagnostics (--checkpoint RUN | --backbone shapes --model-path DIR) --sampler emerge \
        [--steps 12 --cfg 3.5] [--prompts-per-tag 2 --samples 8] [--updates 8 --min-mask-rate 0.6] --out DIR
    python -m eval.rank_diagnostics --table A/rank_diagnostics.json B/rank_diagnostics.json   # markdown summary
    python -m eval.rank_diagnostics --replot A/rank_diagnostics.json                      # redraw A/*.png

Draws G rollouts per prompt (a tag-balanced pick of training captions) with the given sampler, ranks every token
by generation order (rank 1 = first committed; ties within a step in a seeded random order, as HT-GRPO's
default), buckets ranks into ``--buckets`` equal parts (deciles) and measures per bucket:

- ``entropy``: H(p_s) in nats of the sampler's guided code distribution at the token's commit step (HT paper
  Prop. C.1: does uncertainty fall with rank?). Computed by replaying the trajectory: the state before step s
  masks every slot with commit step >= s (docs/models.md 3.4); ``replay_max_abs_logp_diff`` checks the replay
  reproduces the sampler's own log p_s(x) at commit.
- ``contamination``: MaskGRPO's random re-masking contexts (``random_remask``, mu updates, increasing ratio),
  per update and scored (re-masked) token: the fraction of its visible neighbours committed at a LATER sampler step
  than it (future-token contamination, Prop. C.2); ``all`` = every visible image token (attention is global),
  ``adjacent`` = visible tokens among its 8 grid neighbours.
- ``gap_fully_masked`` / ``gap_random_remask``: mean |log pi(x^k | C) - log pi(x^k | true)| where "true" is the
  state just before the token's commit, C the fully masked canvas (HT-GRPO) or the random re-masking context of
  an update that scores the token (MaskGRPO, averaged over those updates); conditional model, no CFG, as the RL
  log-probs (Prop. C.3); ``signed_*`` the mean of the signed difference.
- ``structure``: the mean rank of every slot as a grid (where the first-committed tokens sit) and, for
  ShapesWorld, the fraction of structural tokens (rank <= floor(rho N)) on object patches (any palette pixel)
  versus the fraction of all patches that show an object.

Writes ``rank_diagnostics.json`` and ``rank_diagnostics.png`` (four panels; the heat map's colour bar is the mean
rank) to ``--out``; ``--replot X.json`` redraws ``X.png`` from a saved record without sampling.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from eval.common import (
    add_model_args,
    add_sampler_args,
    describe_model,
    load_backbone,
    resolve_final_dir,
    sampler_config,
    sampler_record,
)
from maskgrpo.algo.equations import code_logprobs
from maskgrpo.errors import RunError, one_line_errors
from maskgrpo.policy import code_logits

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# ---------------------------------------------------------------------------------------------------------------
# Pure functions
# ---------------------------------------------------------------------------------------------------------------


def rank_buckets(rank: torch.Tensor, num_buckets: int) -> torch.Tensor:
    """Bucket of every rank: (r - 1) * n_b // N, so bucket 0 holds the first-committed tokens. (B, N) -> (B, N)."""
    return (rank - 1) * num_buckets // rank.shape[1]


def bucket_means(values: torch.Tensor, valid: torch.Tensor, buckets: torch.Tensor, num_buckets: int) -> list[float]:
    """Mean of ``values`` over the ``valid`` entries of each bucket (NaN for an empty bucket). All (B, N)."""
    out = []
    for b in range(num_buckets):
        sel = valid & (buckets == b)
        out.append(float(values[sel].double().mean()) if bool(sel.any()) else math.nan)
    return out


def code_entropy(logits: torch.Tensor) -> torch.Tensor:
    """H(softmax(z)) = -sum_k p_k log p_k in nats, over the last axis, in float32. (..., K) -> (...)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def grid_neighbours(n: int, kind: str) -> torch.Tensor:
    """(N, N) bool: which slots count as neighbours of each slot, never itself.

    ``all``: every other image slot. ``adjacent``: the 8 grid neighbours of a square side x side raster grid.
    """
    if kind == "all":
        return ~torch.eye(n, dtype=torch.bool)
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"'adjacent' neighbours need a square grid, got {n} slots")
    yx = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij"), -1).reshape(n, 2)
    cheb = (yx[:, None, :] - yx[None, :, :]).abs().amax(-1)  # (N, N) Chebyshev distance
    return cheb == 1


def future_fraction(commit_step: torch.Tensor, visible: torch.Tensor, scored: torch.Tensor,
                    neighbours: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """Fraction of a scored token's visible neighbours committed at a later step than it [Prop. C.2].

    commit_step (B, N) long; visible, scored (B, N) bool; neighbours (N, N) bool. Returns (B, N) float32, NaN where
    the token is not scored or has no visible neighbour. Test: tests/test_rank_diagnostics.py (hand-computed).
    """
    later = commit_step[:, None, :] > commit_step[:, :, None]  # (B, N, N): [i, k, j] = j committed after k
    seen = neighbours[None] & visible[:, None, :]  # (B, N, N): j a visible neighbour of k
    num = (later & seen).sum(-1).float()  # (B, N)
    den = seen.sum(-1).float()  # (B, N)
    return torch.where(scored & (den > 0), num / den.clamp(min=1), torch.nan)


def object_slots(labels: np.ndarray, patch: int) -> np.ndarray:
    """(B, H, W) palette labels (0 background, >0 colour, -1 unassigned) -> (B, N) bool: patch shows an object."""
    b, h, w = labels.shape
    blocks = labels.reshape(b, h // patch, patch, w // patch, patch)  # (B, gh, p, gw, p)
    return (blocks > 0).any(axis=(2, 4)).reshape(b, -1)


# ---------------------------------------------------------------------------------------------------------------
# Model passes
# ---------------------------------------------------------------------------------------------------------------


def select_rows(batch, sel: torch.Tensor):
    """The rows ``sel`` (B,) bool or long of a T2IBatch."""
    keep = ("input_ids", "attention_mask", "uncond_ids", "uncond_mask")
    return replace(batch, **{k: getattr(batch, k)[sel] for k in keep})


@torch.no_grad()
def replay(model, rows, codes: torch.Tensor, commit_step: torch.Tensor, cfg_scale: float):
    """Replay a trajectory: for every step s, the state before s (slot masked iff commit step >= s).

    rows: the rollouts' T2IBatch (B rows); codes, commit_step: (B, N). Returns, at each token's commit step,
    (entropy of the guided p_s, guided log p_s(x), conditional log pi(x | true state)), each (B, N) float32.
    """
    entropy, guided_logp, true_logp = (torch.zeros(codes.shape) for _ in range(3))
    for s in torch.unique(commit_step).tolist():
        at = commit_step == s  # (B, N)
        sel = at.any(1)  # (B,) rollouts that commit something at step s
        ids = torch.where(commit_step[sel] >= s, rows.mask_id, codes[sel] + rows.code_offset)  # (b, N)
        sub = select_rows(rows, sel).with_image(ids)
        z_cond = code_logits(model, sub, sub.input_ids, sub.attention_mask).float()  # (b, N, K)
        z = z_cond
        if cfg_scale > 0:  # MUSE-form CFG, as the samplers: (1 + w) z_cond - w z_uncond
            z_uncond = code_logits(model, sub, sub.uncond_ids, sub.uncond_mask).float()
            z = (1.0 + cfg_scale) * z_cond - cfg_scale * z_uncond
        keep = at[sel]  # (b, N)
        values = (code_entropy(z), code_logprobs(z, codes[sel]), code_logprobs(z_cond, codes[sel]))
        for out, val in zip((entropy, guided_logp, true_logp), values):
            part = out[sel]
            part[keep] = val[keep]
            out[sel] = part
    return entropy, guided_logp, true_logp


@torch.no_grad()
def context_logp(model, batch, input_ids: torch.Tensor, attn: torch.Tensor, rows: torch.Tensor,
                 codes: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """Conditional log pi(x | context) of every rollout's codes, reading rollout i from input row ``rows[i]``."""
    return code_logprobs(code_logits(model, batch, input_ids, attn), codes, rows)  # (R, N, K) -> (B, N)


# ---------------------------------------------------------------------------------------------------------------
# One chunk of prompts
# ---------------------------------------------------------------------------------------------------------------


def diagnose_chunk(backbone, sampler, metas: list[dict], group: int, args, gen: torch.Generator) -> dict:
    """Rollouts for ``metas`` (G each) and every per-token quantity the summary needs, as CPU tensors."""
    from htgrpo_patch.equations import generation_ranks
    from maskgrpo.algo.contexts import RandomRemask
    from maskgrpo.algo.types import Rollouts

    model = backbone.model
    device = next(model.parameters()).device
    prompts = backbone.prompt_batch([m["prompt"] for m in metas]).to(device)
    rows = prompts.repeat_interleave(group)
    out = sampler.sample(model, rows, gen)
    codes, commit = out.codes, out.commit_step  # (B, N)
    tie = torch.rand(codes.shape, generator=gen, device=device).argsort(1).argsort(1)  # random order within a step
    rank = generation_ranks(commit, tie)  # (B, N), 1 = first committed
    entropy, guided, true = replay(model, rows, codes, commit, sampler.cfg_scale)
    rollouts = Rollouts(prompts, group, codes, commit, out.logp_at_commit)
    full = context_logp(model, prompts, prompts.input_ids, prompts.attention_mask, rollouts.prompt_of_rollout(),
                        codes)  # fmt: skip
    ctx = RandomRemask("increasing", args.min_mask_rate, "current").build(rollouts, args.updates, gen)
    remask = []  # per update: (scored (B, N) bool, log pi under its context (B, N))
    for plan in ctx.updates:
        inp = ctx.inputs[plan.input_index]
        remask.append((plan.scorable > 0, context_logp(model, prompts, inp.input_ids, inp.attention_mask, inp.rows,
                                                      codes)))  # fmt: skip
    return {"codes": codes.cpu(), "commit": commit.cpu(), "rank": rank.cpu(), "entropy": entropy,
            "replay_diff": float((guided - out.logp_at_commit.cpu()).abs().max()), "true": true, "full": full.cpu(),
            "remask": [(m.cpu(), lp.cpu()) for m, lp in remask]}  # fmt: skip


def summarize(chunks: list[dict], backbone, num_buckets: int, structure_ratio: float) -> dict:
    """Per-bucket curves and structure statistics over every rollout of every chunk."""
    cat = {k: torch.cat([c[k] for c in chunks]) for k in ("codes", "commit", "rank", "entropy", "true", "full")}
    n = cat["rank"].shape[1]
    buckets = rank_buckets(cat["rank"], num_buckets)  # (B, N)
    every = torch.ones_like(buckets, dtype=torch.bool)
    res: dict = {"num_rollouts": int(cat["rank"].shape[0]), "num_tokens": n, "num_buckets": num_buckets}
    res["replay_max_abs_logp_diff"] = max(c["replay_diff"] for c in chunks)
    res["entropy"] = bucket_means(cat["entropy"], every, buckets, num_buckets)
    res["gap_fully_masked"] = bucket_means((cat["full"] - cat["true"]).abs(), every, buckets, num_buckets)
    res["signed_gap_fully_masked"] = bucket_means(cat["full"] - cat["true"], every, buckets, num_buckets)
    # random re-masking: every (update, scored token) pair counts once
    kinds = {"all": grid_neighbours(n, "all")}
    if math.isqrt(n) ** 2 == n:
        kinds["adjacent"] = grid_neighbours(n, "adjacent")
    sums = {k: [] for k in (*kinds, "gap", "signed", "bucket", "update")}
    offset = 0
    for c in chunks:
        b = c["rank"].shape[0]
        bk = buckets[offset : offset + b]
        true = cat["true"][offset : offset + b]
        for m, (scored, logp) in enumerate(c["remask"]):
            for kind, nb in kinds.items():
                sums[kind].append(future_fraction(c["commit"], ~scored, scored, nb)[scored])
            sums["gap"].append((logp - true).abs()[scored])
            sums["signed"].append((logp - true)[scored])
            sums["bucket"].append(bk[scored])
            sums["update"].append(torch.full((int(scored.sum()),), m))
        offset += b
    flat = {k: torch.cat(v) for k, v in sums.items()}
    ones = torch.ones_like(flat["bucket"], dtype=torch.bool)
    res["contamination"] = {}
    for kind in kinds:
        ok = ~torch.isnan(flat[kind])
        res["contamination"][kind] = bucket_means(flat[kind], ok, flat["bucket"], num_buckets)
        res["contamination"][f"{kind}_overall"] = float(flat[kind][ok].double().mean())
        res["contamination"][f"{kind}_per_update"] = bucket_means(
            flat[kind], ok, flat["update"], len(chunks[0]["remask"])
        )
    res["gap_random_remask"] = bucket_means(flat["gap"], ones, flat["bucket"], num_buckets)
    res["signed_gap_random_remask"] = bucket_means(flat["signed"], ones, flat["bucket"], num_buckets)
    # structure: where the first-committed tokens sit and what they show
    k = math.floor(structure_ratio * n)
    structural = cat["rank"] <= k  # (B, N)
    side = math.isqrt(n)
    mean_rank = cat["rank"].double().mean(0)
    grid = mean_rank.reshape(side, side).tolist() if side * side == n else None
    res["structure"] = {"structure_ratio": structure_ratio, "num_structural": k, "mean_rank_grid": grid}
    spec = getattr(backbone, "spec", None)
    if spec is not None:
        from maskgrpo.toy.shapes_eval import ShapesDetector

        images = backbone.decode(cat["codes"])  # (B, H, W, 3)
        det = ShapesDetector(spec)
        obj = torch.from_numpy(object_slots(np.stack([det.segment(im) for im in images]), spec.patch))  # (B, N)
        res["structure"].update(
            object_slot_frac=float(obj.double().mean()),
            structural_on_object_frac=float(obj[structural].double().mean()),
            refinement_on_object_frac=float(obj[~structural].double().mean()),
            mean_rank_object=float(cat["rank"][obj].double().mean()) if bool(obj.any()) else math.nan,
            mean_rank_background=float(cat["rank"][~obj].double().mean()) if bool((~obj).any()) else math.nan,
        )
    return res


# ---------------------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------------------


def model_label(settings: dict) -> str:
    """The model of a diagnostics record as the command named it: ``base DIR`` for ``--model-path DIR``,
    ``checkpoint RUN (base DIR)`` for ``--checkpoint RUN`` (the base from the run's ``final/backbone.json``)."""
    model = settings["model"]
    if "checkpoint" in model:
        return f"checkpoint {model['checkpoint']} (base {model.get('base') or 'not recorded'})"
    return f"base {model.get('model_path')}"


def plot_title(res: dict) -> str:
    """Figure title: the model as given, the sampler and the sample counts of a diagnostics record."""
    st, sampler = res["settings"], res["settings"]["sampler"]
    return (f"Rank diagnostics, {model_label(st)}, sampler {sampler['name']} ({sampler['num_steps']} steps, CFG "
            f"{sampler['cfg_scale']})\n{res['num_rollouts']} rollouts = {st['captions']} training captions x "
            f"{st['samples']}, seed {st['seed']}; MaskGRPO re-masking: {st['updates']} updates, "
            f"m_min {st['min_mask_rate']}")  # fmt: skip


def plot(res: dict, path: Path, title: str) -> Figure:
    """Four panels: entropy, contamination, estimator gaps (per rank bucket) and the mean-rank heat map with a
    labelled colour bar. Saves a PNG to ``path``; returns the (closed) matplotlib Figure for inspection."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_b = res["num_buckets"]
    x = np.arange(1, n_b + 1)
    xlabel = f"rank bucket (1/{n_b} of the tokens each; 1 = first committed)"
    fig, ax = plt.subplots(1, 4, figsize=(19, 4.6), gridspec_kw={"width_ratios": [1, 1, 1, 0.9]})
    ax[0].plot(x, res["entropy"], "o-")
    ax[0].set(title="entropy of the sampler's p_s at commit", xlabel=xlabel, ylabel="entropy (nats)")
    for kind, vals in res["contamination"].items():
        if isinstance(vals, list) and not kind.endswith("per_update"):
            ax[1].plot(x, vals, "o-", label=f"{kind} visible tokens")
    ax[1].set(title="random re-masking: visible tokens committed later", xlabel=xlabel, ylim=(0, 1),
              ylabel="fraction of a scored token's visible tokens")  # fmt: skip
    ax[1].legend(fontsize=8)
    ax[2].plot(x, res["gap_fully_masked"], "o-", label="fully masked (HT-GRPO)")
    ax[2].plot(x, res["gap_random_remask"], "s-", label="random re-masking (MaskGRPO)")
    ax[2].set(title="estimator gap |log pi(x|C) - log pi(x|true state)|", xlabel=xlabel, ylabel="mean gap (nats)")
    ax[2].legend(fontsize=8)
    for a in ax[:3]:
        a.set_xticks(x)
        a.grid(alpha=0.3)
    grid = res["structure"]["mean_rank_grid"]
    if grid is not None:
        side = len(grid)
        im = ax[3].imshow(np.array(grid), cmap="viridis")
        bar = fig.colorbar(im, ax=ax[3], fraction=0.046, pad=0.04)
        bar.set_label(f"mean generation rank (1 = first, {res['num_tokens']} = last committed)")
        ax[3].set(title=f"mean rank per token slot ({side} x {side} grid, {res['num_rollouts']} rollouts)",
                  xlabel="slot column (left -> right)", ylabel="slot row (top -> bottom)")  # fmt: skip
    else:
        ax[3].set_axis_off()
        ax[3].set_title("mean rank per slot: not a square grid")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return fig


def table(records: dict[str, dict]) -> str:
    """Markdown: one row per diagnostics JSON (label -> record), first and last bucket of each curve."""
    head = ["model / sampler", "rollouts", "entropy first -> last bucket", "contamination (all visible)",
            "first -> last bucket", "gap fully masked first -> last", "gap random re-mask first -> last",
            "structural on object (all patches)"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for label, r in records.items():
        c, s = r["contamination"], r["structure"]
        obj = (f"{s['structural_on_object_frac']:.2f} ({s['object_slot_frac']:.2f})"
               if "object_slot_frac" in s else "-")  # fmt: skip
        cells = [label, str(r["num_rollouts"]), f"{r['entropy'][0]:.2f} -> {r['entropy'][-1]:.2f}",
                 f"{c['all_overall']:.3f}", f"{c['all'][0]:.2f} -> {c['all'][-1]:.2f}",
                 f"{r['gap_fully_masked'][0]:.2f} -> {r['gap_fully_masked'][-1]:.2f}",
                 f"{r['gap_random_remask'][0]:.2f} -> {r['gap_random_remask'][-1]:.2f}", obj]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", nargs="+", default=None, metavar="JSON",
                    help="print a markdown table of these rank_diagnostics.json files and exit")  # fmt: skip
    ap.add_argument("--replot", nargs="+", default=None, metavar="JSON",
                    help="redraw the figure of these JSON files (X.json -> X.png beside it) and exit")  # fmt: skip
    add_model_args(ap)
    add_sampler_args(ap, sampler="emerge", steps=12, cfg=3.5)
    ap.add_argument("--prompts-per-tag", type=int, default=2, help="training captions per tag (default 2)")
    ap.add_argument("--samples", type=int, default=8, help="rollouts per caption, G (default 8)")
    ap.add_argument("--prompts-per-chunk", type=int, default=4, help="captions per sampler call (default 4)")
    ap.add_argument("--updates", type=int, default=8, help="MaskGRPO inner updates mu (default 8, the toy configs)")
    ap.add_argument("--min-mask-rate", type=float, default=0.6, help="MaskGRPO m_min (default 0.6, the toy configs)")
    ap.add_argument("--structure-ratio", type=float, default=0.3, help="rho of the structural set (default 0.3)")
    ap.add_argument("--buckets", type=int, default=10, help="rank buckets (default 10: deciles)")
    ap.add_argument("--out", default=None, help="output folder (required unless --table)")
    args = ap.parse_args(argv)
    if args.table:
        records = {str(Path(f).parent.name): json.loads(Path(f).read_text()) for f in args.table}
        print(table(records))
        return 0
    if args.replot:
        for f in map(Path, args.replot):
            try:
                res = json.loads(f.read_text())
                plot(res, f.with_suffix(".png"), plot_title(res))
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise RunError(f"{f}: not a rank_diagnostics.json record ({type(e).__name__}: {e})") from e
            print(f"wrote {f.with_suffix('.png')}")
        return 0
    if args.out is None:
        ap.error("--out is required")
    for key in ("prompts_per_tag", "samples", "prompts_per_chunk", "updates", "buckets"):
        if getattr(args, key) < 1:
            ap.error(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    import htgrpo_patch  # noqa: F401 - generation_ranks lives in the patch
    from maskgrpo.toy.evaluate import train_prompt_pick

    t0 = time.perf_counter()
    backbone = load_backbone(args)
    scfg = sampler_config(args)
    sampler = scfg.build()
    metas = train_prompt_pick(backbone.train_prompts, args.prompts_per_tag, args.seed)
    device = next(backbone.model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(args.seed)
    chunks = []
    for s in range(0, len(metas), args.prompts_per_chunk):
        chunks.append(
            diagnose_chunk(backbone, sampler, metas[s : s + args.prompts_per_chunk], args.samples, args, gen)
        )
        print(f"[rank_diagnostics] {min(s + args.prompts_per_chunk, len(metas))}/{len(metas)} captions", flush=True)
    res = summarize(chunks, backbone, args.buckets, args.structure_ratio)
    model = describe_model(args)
    if args.checkpoint:  # the base the run was trained from, as its config named it
        model["base"] = json.loads((resolve_final_dir(args.checkpoint) / "backbone.json").read_text()).get("path")
    res["settings"] = {"model": model, "sampler": sampler_record(scfg), "seed": args.seed,
                       "prompts_per_tag": args.prompts_per_tag, "captions": len(metas), "samples": args.samples,
                       "updates": args.updates, "min_mask_rate": args.min_mask_rate,
                       "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "rank_diagnostics.json").write_text(json.dumps(res, indent=1))
    plot(res, out / "rank_diagnostics.png", plot_title(res))
    print(table({f"{model_label(res['settings'])} / {scfg.name}": res}))
    print(f"wrote {out / 'rank_diagnostics.json'} and {out / 'rank_diagnostics.png'} ({res['settings']['seconds']} s)")
    return 0


if __name__ == "__main__":
    with one_line_errors(show_traceback=False):  # a missing or malformed file: one line, exit 2
        sys.exit(main())
