"""Round-cost benchmark: one RL round of MaskGRPO and of HT-GRPO on the SAME rollouts, per phase.

    python -m eval.bench_round_cost [--base DIR | --model KEY=VALUE ...] [--group-size 9] [--updates 8]
                                    [--prompts 4] [--steps 12] [--repeats 2] [--json FILE]

Per method it prints the whole round (rollout + old/ref log-probs + inner updates) and per phase the model forwards
(sequences through the network), tokens through the model and seconds, with the update phase split into forward +
backward (model passes, losses, gradient accumulation) and optimizer step (``engine.step`` at each update's
boundary: clipping, AdamW, ZeRO bookkeeping). The rollout is sampled once per repeat and shared by both methods (the
baseline ignores the ranks). Every measurement is repeated ``--repeats`` times and the minimum is reported (the
machine may be shared). Defaults are the paper's shape (G = 9, mu = 8, 12 sampler steps, CFG 3.5) with the toy
model; ``--model`` builds a wider untrained base (cost does not depend on the weights).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from maskgrpo.config import load_config
from maskgrpo.config.schema import TrainRun

REPO = Path(__file__).resolve().parents[1]
PHASES = ("rollout", "old_ref", "update")


def measure(trainer, rollouts, seq_len: int) -> dict:
    """Plan + old/ref + mu inner updates of one round on given rollouts: seconds, forwards, tokens. Timed by the
    trainer's own phase timer (maskgrpo.phases): ``optimizer`` is the optimizer steps inside ``update``."""
    adv = torch.randn(rollouts.num_rollouts, generator=torch.Generator().manual_seed(0)).to(trainer.device)
    timer = trainer.timer
    timer.take()
    trainer.counter.reset()
    with timer.phase("old_ref"):
        plan = trainer.plan(rollouts)
        forwards = trainer.forwards(plan, rollouts.num_rollouts)
        old, ref = trainer.old_and_ref_logp(rollouts, plan, forwards)
    with timer.phase("update"):
        trainer.inner_updates(rollouts, plan, forwards, adv, old, ref)
    out = phase_figures(timer, ("old_ref", "update", "optimizer"))
    out["update_step_s"], out["update_step_cpu_s"] = out.pop("optimizer_s"), out.pop("optimizer_cpu_s")
    out["update_fwd_bwd_s"] = out["update_s"] - out["update_step_s"]
    out["update_fwd_bwd_cpu_s"] = out["update_cpu_s"] - out["update_step_cpu_s"]
    rows = dict(trainer.counter.rows)
    for phase in ("old_ref", "update"):
        out[f"{phase}_forwards"] = rows.get(phase, 0)
        out[f"{phase}_tokens"] = rows.get(phase, 0) * seq_len
    return out


def phase_figures(timer, names: tuple[str, ...]) -> dict:
    """``<phase>_s`` (wall), ``<phase>_cpu_s`` (CPU time of this process: on a shared machine it does not count
    the time other jobs held the cores) and, on CUDA, ``<phase>_start_bytes`` / ``<phase>_peak_bytes``."""
    out = {}
    for name in names:
        out[f"{name}_s"], out[f"{name}_cpu_s"] = timer.wall[name], timer.cpu[name]
    out.update({k: v for k, v in timer.memory.items() if k.rsplit("_", 2)[0] in names})
    return out


def minimum(runs: list[dict]) -> dict:
    """Per key, the smallest value over repeated measurements (counts are equal across repeats)."""
    return {k: min(r[k] for r in runs) for k in runs[0]}


def whole_round(r: dict, rollout: dict) -> dict:
    """Add the shared rollout phase and the whole-round seconds (rollout + old/ref + update) to one method's row."""
    out = {**r, **{k: rollout[k] for k in ("rollout_s", "rollout_cpu_s", "rollout_forwards", "rollout_tokens")}}
    for unit in ("s", "cpu_s"):
        out[f"round_{unit}"] = out[f"rollout_{unit}"] + out[f"old_ref_{unit}"] + out[f"update_{unit}"]
    return out


ROWS = [  # (key, label, format); seconds rows show wall seconds and, after the slash, CPU seconds
    ("round", "whole round: seconds", "s"),
    ("rollout", "rollout (shared): seconds", "s"),
    ("rollout_forwards", "rollout: forwards", "{:d}"),
    ("old_ref", "old + ref log-probs: seconds", "s"),
    ("old_ref_forwards", "old + ref: forwards", "{:d}"),
    ("old_ref_tokens", "old + ref: tokens", "{:d}"),
    ("update", "inner updates: seconds", "s"),
    ("update_fwd_bwd", "  forward + backward: seconds", "s"),
    ("update_step", "  optimizer steps: seconds", "s"),
    ("update_forwards", "inner updates: forwards", "{:d}"),
    ("update_tokens", "inner updates: tokens", "{:d}"),
]


def table(mg: dict, ht: dict) -> str:
    lines = ["| phase / metric (seconds: wall / CPU) | MaskGRPO | HT-GRPO | HT / MaskGRPO (wall / CPU) |",
             "|---|---:|---:|---:|"]  # fmt: skip
    for key, label, fmt in ROWS:
        if fmt == "s":
            w, c = f"{key}_s", f"{key}_cpu_s"
            cells = [f"{r[w]:.2f} / {r[c]:.2f}" for r in (mg, ht)]
            ratio = f"{ht[w] / mg[w]:.3f} / {ht[c] / mg[c]:.3f}"
        else:
            cells = [fmt.format(r[key]) for r in (mg, ht)]
            ratio = f"{ht[key] / mg[key]:.3f}" if mg[key] else "-"
        lines.append(f"| {label} | {cells[0]} | {cells[1]} | {ratio} |")
    speed = f"{mg['round_s'] / ht['round_s']:.2f}x / {mg['round_cpu_s'] / ht['round_cpu_s']:.2f}x"
    lines.append(f"| MaskGRPO / HT-GRPO, whole round | | | {speed} faster |")
    return "\n".join(lines)


def build_trainers(args: argparse.Namespace, base: str, tmp: Path):
    from maskgrpo.train import Trainer

    q = args.updates // 4
    common = [f"backbone.path={base}", f"prompts.per_round={args.prompts}", f"rl.group_size={args.group_size}",
              f"rl.num_inner_updates={args.updates}", "rl.micro_batch_prompts=1", f"rollout.num_steps={args.steps}",
              f"rollout.cfg_scale={args.cfg}", "eval=null", "log.image_every=0"]  # fmt: skip
    ht = Trainer(load_config(TrainRun, REPO / "configs/toy_htgrpo.yaml",
                             [*common, f"run.output_dir={tmp / 'ht'}", f"patch_options.budgets=[{q},{2 * q},{q}]"]),
                 resume=False)  # fmt: skip
    mg = Trainer(load_config(TrainRun, REPO / "configs/toy_maskgrpo.yaml", [*common, f"run.output_dir={tmp / 'mg'}"]),
                 resume=False)  # fmt: skip
    return mg, ht


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default=None, help="toy base dir (default: build an untrained one)")
    ap.add_argument("--group-size", type=int, default=9)
    ap.add_argument("--updates", type=int, default=8)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--cfg", type=float, default=3.5)
    ap.add_argument("--repeats", type=int, default=2, help="measure each phase this many times, report the minimum")
    ap.add_argument("--json", default=None, help="also write the measured figures to this JSON file")
    ap.add_argument("--model", nargs="*", default=[], help="toy model overrides for the untrained base, e.g. "
                    "model.d_model=512 model.n_layers=8 model.mlp_hidden_size=1536 model.n_heads=8")  # fmt: skip
    args = ap.parse_args(argv)
    if args.model and args.base:
        ap.error("--model builds a new untrained base; it cannot be combined with --base")
    if args.updates % 4:
        ap.error("--updates must divide by 4 (HT budgets 1:2:1 scaled, i.e. 2:4:2 for 8)")
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    tmp = Path(tempfile.mkdtemp(prefix="bench_round_"))
    base = args.base
    if base is None:
        from maskgrpo.toy.pretrain import main as pretrain

        base = str(tmp / "base")
        pretrain(["--config", str(REPO / "configs/toy_pretrain.yaml"), f"run.output_dir={base}", "pretrain.steps=1",
                  "eval.samples_per_prompt=1", "eval.sampler.num_steps=1", *args.model])  # fmt: skip
    mg, ht = build_trainers(args, base, tmp)
    metas = ht.stream.take(0, args.prompts)
    rollout_runs, mg_runs, ht_runs = [], [], []
    for _ in range(args.repeats):
        ht.counter.reset()
        ht.timer.take()
        with ht.timer.phase("rollout"):
            rollouts = ht.rollout(metas)  # ranked rollouts; the baseline ignores the ranks
        r = phase_figures(ht.timer, ("rollout",))
        seq = rollouts.prompts.input_ids.shape[1]
        r["rollout_forwards"] = ht.counter.rows["rollout"]
        r["rollout_tokens"] = r["rollout_forwards"] * seq
        rollout_runs.append(r)
        mg_runs.append(measure(mg, rollouts, seq))
        ht_runs.append(measure(ht, rollouts, seq))
    shared = minimum(rollout_runs)
    res_mg, res_ht = whole_round(minimum(mg_runs), shared), whole_round(minimum(ht_runs), shared)
    params = sum(p.numel() for p in ht.backbone.model.parameters())
    head = (f"One round, P={args.prompts} prompts x G={args.group_size} = {rollouts.num_rollouts} rollouts, "
            f"mu={args.updates}, {args.steps} sampler steps, CFG {args.cfg}; seq {seq} tokens, {params / 1e6:.2f} M "
            f"params, {torch.get_num_threads()} CPU threads; min of {args.repeats} repeats")  # fmt: skip
    print(f"\n{head}\n\n{table(res_mg, res_ht)}\n")
    print(f"1/G = {1 / args.group_size:.3f}; baseline update forwards = mu*P*G = "
          f"{args.updates * args.prompts * args.group_size}, HT = mu*P = {args.updates * args.prompts}")  # fmt: skip
    repeats = {"maskgrpo": mg_runs, "htgrpo": ht_runs, "rollout": rollout_runs}
    report = {"setting": head, "params": params, "threads": torch.get_num_threads(), "maskgrpo": res_mg,
              "htgrpo": res_ht, "repeats": repeats}  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
