"""Round-cost benchmark: one RL round of MaskGRPO and of HT-GRPO on the SAME rollouts, per phase.

    python -m eval.bench_round_cost [--base DIR] [--group-size 9] [--updates 8] [--prompts 4] [--steps 12]

Prints, per phase (old/ref log-probs, inner updates), the model forwards (sequences through the network), tokens
through the model and seconds, for both methods and their ratio. Defaults are the paper's shape (G = 9, mu = 8,
12 sampler steps, CFG on) with the toy-width model. Without --base an untrained toy base is built first (cost does
not depend on the weights).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from maskgrpo.config import load_config
from maskgrpo.config.schema import TrainRun

REPO = Path(__file__).resolve().parents[1]


def measure(trainer, rollouts) -> dict:
    """Context build + old/ref + mu inner updates of one round on given rollouts; forwards, tokens, seconds."""
    trainer.rollouts = rollouts
    seq = rollouts.prompts.input_ids.shape[1]
    adv = torch.randn(rollouts.num_rollouts, generator=torch.Generator().manual_seed(0))
    out = {}
    trainer.counter.reset()
    t = time.perf_counter()
    trainer.counter.phase = "old_ref"
    contexts = trainer.parts.context.build(rollouts, trainer.cfg.rl.num_inner_updates, trainer.gens["context"])
    old, ref = trainer.old_and_ref_logp(contexts)
    out["old_ref_s"] = time.perf_counter() - t
    t = time.perf_counter()
    trainer.counter.phase = "update"
    trainer.inner_updates(contexts, adv, old, ref)
    out["update_s"] = time.perf_counter() - t
    rows = dict(trainer.counter.rows)
    for phase in ("old_ref", "update"):
        out[f"{phase}_forwards"] = rows.get(phase, 0)
        out[f"{phase}_tokens"] = rows.get(phase, 0) * seq
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default=None, help="toy base dir (default: build an untrained one)")
    ap.add_argument("--group-size", type=int, default=9)
    ap.add_argument("--updates", type=int, default=8)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--cfg", type=float, default=3.5)
    ap.add_argument("--model", nargs="*", default=[], help="toy model overrides for the untrained base, e.g. "
                    "model.d_model=512 model.n_layers=8 model.mlp_hidden_size=1536 model.n_heads=8")  # fmt: skip
    args = ap.parse_args(argv)
    if args.model and args.base:
        ap.error("--model builds a new untrained base; it cannot be combined with --base")
    if args.updates % 4:
        ap.error("--updates must divide by 4 (HT budgets 1:2:1 scaled, i.e. 2:4:2 for 8)")
    tmp = Path(tempfile.mkdtemp(prefix="bench_round_"))
    base = args.base
    if base is None:
        from maskgrpo.toy.pretrain import main as pretrain

        base = str(tmp / "base")
        pretrain(["--config", str(REPO / "configs/toy_pretrain.yaml"), f"run.output_dir={base}", "pretrain.steps=1",
                  "eval.samples_per_prompt=1", "eval.sampler.num_steps=1", *args.model])  # fmt: skip
    q = args.updates // 4
    common = [f"backbone.path={base}", f"prompts.per_round={args.prompts}", f"rl.group_size={args.group_size}",
              f"rl.num_inner_updates={args.updates}", "rl.micro_batch_prompts=1", f"rollout.num_steps={args.steps}",
              f"rollout.cfg_scale={args.cfg}", "eval=null", "log.image_every=0"]  # fmt: skip
    from maskgrpo.train import Trainer

    ht = Trainer(load_config(TrainRun, REPO / "configs/toy_htgrpo.yaml",
                             [*common, f"run.output_dir={tmp / 'ht'}", f"patch_options.budgets=[{q},{2 * q},{q}]"]),
                 resume=False)  # fmt: skip
    mg = Trainer(load_config(TrainRun, REPO / "configs/toy_maskgrpo.yaml", [*common, f"run.output_dir={tmp / 'mg'}"]),
                 resume=False)  # fmt: skip
    metas = ht.stream.take(0, args.prompts)
    t = time.perf_counter()
    ht.counter.phase = "rollout"
    rollouts = ht.rollout(metas)  # ranked rollouts; the baseline ignores the ranks
    rollout_s = time.perf_counter() - t
    rollout_rows = ht.counter.rows["rollout"]
    r_mg, r_ht = measure(mg, rollouts), measure(ht, rollouts)
    b = rollouts.num_rollouts
    print(f"\nOne round, P={args.prompts} prompts x G={args.group_size} = {b} rollouts, mu={args.updates}, "
          f"{args.steps} sampler steps, CFG {args.cfg}; seq {rollouts.prompts.input_ids.shape[1]} tokens, "
          f"{sum(p.numel() for p in ht.backbone.model.parameters()) / 1e6:.2f} M params, "
          f"{torch.get_num_threads()} CPU threads")  # fmt: skip
    print(f"rollout (shared by both): {rollout_rows} forwards, {rollout_s:.2f} s\n")
    print("| phase | metric | MaskGRPO | HT-GRPO | HT / MaskGRPO |")
    print("|---|---|---:|---:|---:|")
    for phase in ("old_ref", "update"):
        for metric, fmt in (("forwards", "{:d}"), ("tokens", "{:d}"), ("s", "{:.2f}")):
            k = f"{phase}_{metric}"
            ratio = r_ht[k] / r_mg[k] if r_mg[k] else float("nan")
            print(f"| {phase} | {metric} | {fmt.format(r_mg[k])} | {fmt.format(r_ht[k])} | {ratio:.3f} |")
    print(f"\n1/G = {1 / args.group_size:.3f}; baseline update forwards = mu*P*G = "
          f"{args.updates * args.prompts * args.group_size}, HT = mu*P = {args.updates * args.prompts}")  # fmt: skip


if __name__ == "__main__":
    main()
