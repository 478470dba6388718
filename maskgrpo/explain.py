"""Print one round's update plan: ``python -m maskgrpo.explain --config CONFIG [key=value ...]``.

Answers "in update m of a round, which tokens train, under which input row, with which weight?" on real rollouts:
it loads the config's backbone (CPU), samples one round's rollouts for the first P prompts with the base weights,
builds the round's plan exactly as the trainer does (``maskgrpo.algo.plan``: context builder, then loss) and prints
a table, one line per inner update:

    stage     HT-GRPO's stage (global / structure / refine), "-" for the baseline
    context   the context builder and which of its inputs the update reads
    rows      distinct model-input rows the trained tokens read (forwards of one pass over the round's rollouts)
    tokens    mean tokens trained per rollout (the support set |S|), out of N image tokens
    weight    mean advantage weight over the trained tokens (A_hat = weight * A_i)
    p         the subset rate the support was drawn with (HT-GRPO Eq. 8)

Meant for the toy (``configs/toy_*.yaml``); any config works where its backbone fits in CPU memory.
"""

from __future__ import annotations

import argparse
import json

import torch

from maskgrpo.algo.plan import RoundPlan, plan_round
from maskgrpo.components import resolve_components
from maskgrpo.config import load_config
from maskgrpo.config.schema import TrainRun
from maskgrpo.errors import add_traceback_flag, one_line_errors
from maskgrpo.prompts import PROMPT_ORDERS
from maskgrpo.rollout import sample_rollouts


def one_round_plan(cfg: TrainRun) -> tuple[RoundPlan, dict[str, str], int, int]:
    """(plan, component names, rollouts, image tokens) of round 1 of ``cfg`` on one rank, base weights, CPU."""
    device = torch.device("cpu")
    parts = resolve_components(cfg, device)
    seed = cfg.run.seed * 7919  # rank 0's generators, seeded as the trainer seeds them
    gens = {name: torch.Generator(device=device).manual_seed(seed * 10 + i)
            for i, name in enumerate(("rollout", "context", "loss"))}  # fmt: skip
    metas = PROMPT_ORDERS.get(cfg.prompts.order)(parts.prompts, cfg.run.seed).take(0, cfg.prompts.per_round)
    prompts = parts.backbone.prompt_batch([m["prompt"] for m in metas]).to(device)
    rollouts = sample_rollouts(parts.sampler, parts.backbone.model, prompts, cfg.rl.group_size,
                               cfg.rl.rollout_batch_size, gens["rollout"])  # fmt: skip
    plan = plan_round(parts.context, parts.loss, rollouts, cfg.rl.num_inner_updates, gens)
    return plan, parts.names, rollouts.num_rollouts, rollouts.codes.shape[1]


def table(rows: list[dict], num_tokens: int) -> str:
    head = ("m", "stage", "context", "rows", "tokens trained / rollout", "mean weight", "p")
    lines = ["| " + " | ".join(head) + " |", "|---:|---|---|---:|---:|---:|---:|"]
    for r in rows:
        p = "-" if r["rate"] is None else f"{r['rate']:.3f}"
        cells = (r["m"], r["stage"], r["context"], r["rows"], f"{r['tokens_per_rollout']:.1f} of {num_tokens}",
                 f"{r['mean_weight']:.3f}", p)  # fmt: skip
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="run config, e.g. configs/toy_htgrpo.yaml")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    ap.add_argument("overrides", nargs="*", help="dotted overrides, e.g. patch_options.budgets=[1,2,1]")
    add_traceback_flag(ap)
    args = ap.parse_args(argv)
    with one_line_errors(args.traceback):
        cfg = load_config(TrainRun, args.config, args.overrides)
        plan, names, b, n = one_round_plan(cfg)
    rows = plan.describe(names["context"])
    if args.json:
        print(json.dumps({"components": names, "rollouts": b, "image_tokens": n, "updates": rows}, indent=1))
        return
    print(f"{args.config}: one round on rank 0, {b} rollouts ({cfg.prompts.per_round} prompts x G = "
          f"{cfg.rl.group_size}), N = {n} image tokens, mu = {len(plan.updates)}")  # fmt: skip
    print(f"components: sampler {names['sampler']} + {names['sampler_wrapper']}, context {names['context']}, "
          f"loss {names['loss']}; A_hat = weight * A_i on the trained tokens")  # fmt: skip
    print(table(rows, n))


if __name__ == "__main__":
    main()
