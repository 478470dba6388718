"""MaskGRPO RL loop on DeepSpeed ZeRO: ``python -m maskgrpo.train --config FILE [key=value ...] [--resume]``.

One round (method.md section 1), as the code below runs it:

    1. take P prompts (P / world per rank)
    2. pi_old = current policy: G rollouts per prompt with the rollout sampler (CFG)
    3. decode, score with every reward, gather the scaled scores from all ranks, combine (weighted sum)
    4. group advantages A_i = (R_i - mean_g) / (std_g + 1e-5) on the gathered rewards; keep this rank's slice
    5. contexts for the mu inner updates; old and reference log-probs once per distinct context (no grad, no CFG)
    6. mu inner updates: per micro-batch (whole prompt groups) forward, policy loss, backward; one optimizer step
    7. log, image grid, checkpoint

Components (sampler, context builder, loss, rewards) come from registries by the names in the config; this loop
never branches on a component's name. ``patch: htgrpo`` in the YAML swaps the HT-GRPO components in (resolved in
``maskgrpo.components``).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from maskgrpo.algo.equations import code_logprobs, group_advantages, zero_std_fraction
from maskgrpo.algo.metric_reduce import RoundMetrics
from maskgrpo.algo.types import LossInputs, ModelInput, Rollouts
from maskgrpo.checkpoint import (
    TrainerState,
    candidates,
    checkpoint_world_size,
    export_final,
    load_checkpoint,
    read_trainer_state,
    save_checkpoint,
    select_checkpoint,
    tidy_checkpoints,
)
from maskgrpo.components import Components, resolve_components
from maskgrpo.config import dump_config, load_config, to_dict
from maskgrpo.config.schema import TrainRun, check_world_size
from maskgrpo.distributed import agree, all_gather_rows, barrier, broadcast_object, init_distributed
from maskgrpo.engine import build_engine
from maskgrpo.errors import RunError, add_traceback_flag, one_line_errors
from maskgrpo.forward_plan import ForwardGroup, forward_groups
from maskgrpo.guards import FiniteLosses, diverged_policy_error, require_finite_grad_norm
from maskgrpo.observe import ForwardCounter, MetricsLog, progress_bars_closed_on_error, rollout_grid
from maskgrpo.prompts import PROMPT_ORDERS
from maskgrpo.rewards.base import RewardError, combine_rewards, score_all
from maskgrpo.run_dir import (
    RunLock,
    check_fresh_run,
    check_resume_config,
    clear_run,
    describe_changes,
    normalized_config,
    writing,
)


class Trainer:
    """One process of an RL run: components from the config, a DeepSpeed engine, and the round of method.md 1.

    ``run_round`` does one round and returns its metrics; ``train`` loops, logs, checkpoints and evaluates.
    """

    def __init__(
        self, cfg: TrainRun, resume: bool, overwrite: bool = False, allow_config_change: tuple[str, ...] = ()
    ) -> None:
        """Everything is validated (components, backbone, prompts, rewards, engine, and on ``resume`` the checkpoint
        and the config against it) before anything is written to the run folder (issue 13 item 4)."""
        self.cfg = cfg
        self.rank, self.world, self.device = init_distributed()
        check_world_size(cfg, self.world)  # ConfigError: P divides by the ranks, P / ranks by the micro-batch
        self.run_dir = Path(cfg.run.output_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.lock = RunLock(self.run_dir)
        if broadcast_object(self.run_dir.exists()):  # fail at once on a locked / reused folder (writes only .lock)
            self._claim_run_dir(resume, overwrite, validated=False)
        torch.manual_seed(cfg.run.seed + 1000 * self.rank)  # global RNG: LoRA dropout only
        self.parts: Components = resolve_components(cfg, self.device)
        self.backbone = self.parts.backbone
        self.counter = ForwardCounter(self.backbone.model)
        self.engine, self.reference = build_engine(cfg, self.backbone.model, self.world, self.device)
        self.policy = self.engine.module
        seed = cfg.run.seed * 7919 + self.rank
        self.gens = {name: torch.Generator(device=self.device).manual_seed(seed * 10 + i)
                     for i, name in enumerate(("rollout", "context", "loss"))}  # fmt: skip
        self.stream = PROMPT_ORDERS.get(cfg.prompts.order)(self.parts.prompts, cfg.run.seed)
        self.state = TrainerState(components=self.parts.names, config=to_dict(cfg))
        self.saved_round: int | None = None  # round of the newest checkpoint this run wrote or resumed from
        self.log = MetricsLog(self.run_dir, self.rank == 0)
        if resume:
            self._resume(allow_config_change)  # verified checkpoint, same ranks, config checked: then loaded
            self._on_rank0(lambda: self.log.truncate_after(self.state.round))  # last check (a bad line), 1st write
        self._claim_run_dir(resume, overwrite, validated=True)  # from here on we write
        if self.rank == 0:
            with writing(self.run_dir):
                dump_config(cfg, self.run_dir / "config.yaml")  # what runs from here (later checkpoints store it too)
                (self.run_dir / "components.json").write_text(json.dumps(self.parts.names, indent=1))
        self.log.start_wandb(cfg.run.wandb_mode, cfg.run.wandb_project, to_dict(cfg))
        if self.rank == 0:
            print(f"[train] components: {self.parts.names}; rank {self.rank}/{self.world} on {self.device}")

    # ---- run folder and checkpoints ----------------------------------------------------------------------------
    def _on_rank0(self, fn: Callable[[], None]) -> None:
        """Collective: run ``fn`` on rank 0; its RunError is raised on every rank (no rank waits for a dead one)."""
        err = None
        if self.rank == 0:
            try:
                fn()
            except RunError as e:
                err = str(e)
        agree(err)

    def _claim_run_dir(self, resume: bool, overwrite: bool, validated: bool) -> None:
        """Collective. Rank 0 checks there is a checkpoint to resume (before creating anything), takes the folder's
        lock and refuses a fresh run into an earlier run's folder unless ``overwrite``. Once everything is
        ``validated``: clears the earlier run (``overwrite``) or a killed run's leftover checkpoint folders."""

        def claim() -> None:
            if resume:
                candidates(self.ckpt_dir)  # RunError when there is none
            self.lock.acquire()
            if not resume:
                check_fresh_run(self.run_dir, overwrite)
            if validated and overwrite and not resume:
                clear_run(self.run_dir)
            if validated and resume:
                tidy_checkpoints(self.ckpt_dir, self.cfg.checkpoint.keep)  # what a killed run left undone

        self._on_rank0(claim)

    def _resume(self, allow_config_change: tuple[str, ...]) -> None:
        path = select_checkpoint(self.ckpt_dir, self.rank, self.world)  # verified (or falls back), collective
        ranks = checkpoint_world_size(path)
        if ranks != self.world:
            raise RunError(
                f"checkpoint {path} was written by {ranks} rank{'s' * (ranks != 1)}, this run has {self.world}: "
                f"resume with {ranks} (NPROC={ranks}, torchrun --nproc_per_node={ranks})"
            )
        stored = read_trainer_state(path, 0)
        changes = check_resume_config(
            {**normalized_config(stored.config), "components": stored.components},
            {**to_dict(self.cfg), "components": self.parts.names}, path.name, allow_config_change,
        )  # fmt: skip
        self.state = load_checkpoint(self.engine, path, self.rank)
        self.saved_round = self.state.round
        self.state.config, self.state.components = to_dict(self.cfg), self.parts.names  # what runs from here on
        for name, g in self.gens.items():
            g.set_state(self.state.generators[name])
        torch.set_rng_state(self.state.torch_rng)
        if self.rank == 0:
            print(f"[train] resumed from {path} at round {self.state.round}")
            if changes:
                print(f"[train] config changes accepted on resume: {describe_changes(changes)}")

    def _save(self) -> None:
        self.state.generators = {name: g.get_state() for name, g in self.gens.items()}
        self.state.torch_rng = torch.get_rng_state()
        save_checkpoint(self.engine, self.ckpt_dir, self.state, self.rank, self.world, self.cfg.checkpoint.keep)
        self.saved_round = self.state.round

    def _bar(self, total: int, desc: str) -> tqdm:
        """A transient progress bar for one round phase (rank 0 only)."""
        return tqdm(total=total, desc=f"round {self.state.round + 1} {desc}", leave=False, disable=self.rank != 0)

    # ---- model passes ------------------------------------------------------------------------------------------
    def _code_logits(self, module: torch.nn.Module, ids: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """(R, N, K) logits at the image slots over the image-code slice (head computed only there)."""
        p = self.rollouts.prompts
        out = module(input_ids=ids, attention_mask=attn, logits_at=p.image_positions.to(ids.device),
                     vocab_slice=(p.code_offset, p.code_offset + p.codebook_size))  # fmt: skip
        return out.logits

    def _logp(self, module: torch.nn.Module, inp: ModelInput, sel: torch.Tensor) -> torch.Tensor:
        """log-probs (b, N) of the committed codes of rollouts ``sel`` (b,), one forward per distinct input row."""
        rows = inp.rows[sel]
        uniq, local = torch.unique(rows, return_inverse=True)  # rollouts sharing a row share one forward
        logits = self._code_logits(module, inp.input_ids[uniq], inp.attention_mask[uniq])  # (u, N, K)
        return code_logprobs(logits, self.rollouts.codes[sel], local)

    # ---- the round ---------------------------------------------------------------------------------------------
    def rollout(self, metas: list[dict]) -> Rollouts:
        """Step 2: G rollouts per prompt from pi_old (policy in eval mode, CFG, no grad)."""
        cfg, g = self.cfg, self.cfg.rl.group_size
        prompts = self.backbone.prompt_batch([m["prompt"] for m in metas]).to(self.device)
        rows = prompts.repeat_interleave(g)
        outs = []
        starts = range(0, rows.input_ids.shape[0], cfg.rl.rollout_batch_size)
        bar = self._bar(len(starts) * self.parts.sampler.num_steps, "rollout")
        self.policy.eval()
        with torch.no_grad():
            for s in starts:
                chunk = _slice_batch(rows, s, s + cfg.rl.rollout_batch_size)
                outs.append(
                    self.parts.sampler.sample(self.policy, chunk, self.gens["rollout"], lambda _: bar.update())
                )
        bar.close()
        cat = {k: torch.cat([getattr(o, k) for o in outs]) for k in ("codes", "commit_step", "logp_at_commit")}
        extras = {k: torch.cat([o.extras[k] for o in outs]) for k in outs[0].extras}
        return Rollouts(prompts, g, cat["codes"], cat["commit_step"], cat["logp_at_commit"], extras)

    def rewards_and_advantages(self, metas: list[dict], images: np.ndarray) -> tuple[torch.Tensor, np.ndarray, dict]:
        """Steps 3-4: local scaled scores -> gathered -> combined R -> group advantages -> this rank's slice."""
        g = self.cfg.rl.group_size
        metas_rep = [m for m in metas for _ in range(g)]
        scaled = score_all(self.parts.reward_fns, self.parts.reward_specs, images,
                           [m["prompt"] for m in metas_rep], metas_rep)  # (B_local, F)  # fmt: skip
        gathered = all_gather_rows(scaled)  # (B_global, F): gathered BEFORE normalising
        weights = np.array([s.weight for s in self.parts.reward_specs])
        total, metrics = combine_rewards(gathered, weights, [s.name for s in self.parts.reward_specs])
        r = torch.as_tensor(total, dtype=torch.float64)
        adv = group_advantages(r, g)  # (B_global,)
        b = scaled.shape[0]
        local = adv[self.rank * b : (self.rank + 1) * b].float().to(self.device)
        metrics.update({"adv/zero_std_group_frac": zero_std_fraction(r, g), "adv/abs_max": float(adv.abs().max())})
        return local, total[self.rank * b : (self.rank + 1) * b], metrics

    def micro_batches(self) -> list[torch.Tensor]:
        """Rollout indices of each micro-batch: ``rl.micro_batch_prompts`` whole prompt groups (same on every pass)."""
        mb = self.cfg.rl.micro_batch_prompts * self.cfg.rl.group_size
        n = self.rollouts.num_rollouts
        return [torch.arange(s, min(s + mb, n), device=self.device) for s in range(0, n, mb)]

    def forward_groups(self, inp: ModelInput) -> list[ForwardGroup]:
        """Micro-batches that go through the model together under ``inp`` (maskgrpo.forward_plan): consecutive
        micro-batches while their distinct rows fit the rows of one per-rollout micro-batch, micro_batch_prompts * G.
        Per-rollout contexts keep one micro-batch per forward; shared rows (HT-GRPO: one per prompt) are batched."""
        return forward_groups(inp.rows, self.micro_batches(), self.cfg.rl.micro_batch_prompts * self.cfg.rl.group_size)

    def old_and_ref_logp(self, contexts) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
        """Step 5: log pi_old and log pi_ref of every rollout under every distinct context (no grad, no CFG).

        Chunked by forward group (the update's forwards), so the peak activation memory is that of one update's
        forward; every distinct row is forwarded once per pass.
        """
        n = self.rollouts.codes.shape
        old = [torch.empty(n, device=self.device) for _ in contexts.inputs]
        ref: list[torch.Tensor | None] = [torch.empty(n, device=self.device) for _ in contexts.inputs]
        groups = [self.forward_groups(inp) for inp in contexts.inputs]
        bar = self._bar(2 * sum(len(g) for g in groups), "old/ref log-probs")
        self.policy.eval()
        with torch.no_grad():
            for i, inp in enumerate(contexts.inputs):
                for grp in groups[i]:
                    old[i][grp.rollouts] = self._logp(self.policy, inp, grp.rollouts)
                    bar.update()
            with self.reference() as ref_model:
                for i, inp in enumerate(contexts.inputs):
                    if ref_model is None:
                        ref[i] = None
                        continue
                    for grp in groups[i]:
                        ref[i][grp.rollouts] = self._logp(ref_model, inp, grp.rollouts)
                        bar.update()
        bar.close()
        return old, ref

    def inner_updates(self, contexts, adv: torch.Tensor, old: list, ref: list) -> dict[str, float]:
        """Step 6: mu optimizer updates; each = the loss of every micro-batch (whole prompt groups), then one step.

        Each micro-batch's loss aggregates over its own support set; micro-batches of one forward group share the
        forward and one backward of sum(losses) / n_micro (the mean over micro-batches that gradient accumulation
        gives), so HT-GRPO's shared rows cost one forward + backward per update, not one per prompt. Metrics reduce
        over the micro-batches that reported them, as the loss declares (maskgrpo.algo.metric_reduce).
        """
        acc = RoundMetrics(self.parts.loss.reductions)
        self.policy.train()
        n_micro = len(self.micro_batches())
        groups = [self.forward_groups(inp) for inp in contexts.inputs]
        bar = self._bar(len(contexts.updates) * n_micro, "inner updates")
        finite = FiniteLosses()  # non-finite guard: one device sync per update, before the optimizer step
        for m, plan in enumerate(contexts.updates, start=1):
            i = plan.input_index
            where = f"round {self.state.round + 1}, inner update {m}"
            for g, grp in enumerate(groups[i]):
                logp = self._logp(self.engine, contexts.inputs[i], grp.rollouts)  # (b, N), one forward
                losses = []
                for start, end in grp.parts:  # one loss per micro-batch
                    sel = grp.rollouts[start:end]
                    x = LossInputs(
                        logp=logp[start:end], old_logp=old[i][sel], ref_logp=None if ref[i] is None else ref[i][sel],
                        advantages=adv[sel], support=plan.support[sel], update_index=m,
                        num_updates=len(contexts.updates), extras={k: v[sel] for k, v in self.rollouts.extras.items()},
                        generator=self.gens["loss"],
                    )  # fmt: skip
                    loss, metrics = self.parts.loss(x)
                    finite.add(loss)
                    metrics["loss/policy"] = loss.detach()
                    acc.add(metrics)
                    losses.append(loss)
                    bar.update()
                self.engine.set_gradient_accumulation_boundary(g == len(groups[i]) - 1)
                self.engine.backward(torch.stack(losses).sum() / n_micro, scale_wrt_gas=False)
            finite.check(where)  # RunError on a NaN / inf loss of this update, before its optimizer step
            self.engine.step()  # the accumulation boundary: one optimizer step per inner update
            require_finite_grad_norm(self.engine.get_global_grad_norm(), where)
        bar.close()
        out = acc.result()  # one device sync per round, not per micro-batch
        out["loss/grad_norm"] = float(self.engine.get_global_grad_norm() or 0.0)
        return out

    def run_round(self) -> dict:
        cfg, st = self.cfg, self.state
        t, times = time.time(), {}
        p_local = cfg.prompts.per_round // self.world
        metas = self.stream.take(st.prompt_position + self.rank * p_local, p_local)  # 1. prompts
        self.counter.phase = "rollout"
        with diverged_policy_error(f"round {st.round + 1}, rollout"):
            self.rollouts = self.rollout(metas)  # 2. rollouts
        times["rollout"], t = time.time() - t, time.time()
        images = self.backbone.decode(self.rollouts.codes.cpu())  # 3. decode + rewards
        adv, local_r, metrics = self.rewards_and_advantages(metas, images)  # 4. advantages
        if cfg.log.rollout_table:
            with writing(self.run_dir / "rollouts"):
                self._write_rollout_table(metas, local_r, adv)
        times["reward"], t = time.time() - t, time.time()
        self.counter.phase = "old_ref"
        contexts = self.parts.context.build(self.rollouts, cfg.rl.num_inner_updates, self.gens["context"])  # 5.
        old, ref = self.old_and_ref_logp(contexts)
        times["old_ref"], t = time.time() - t, time.time()
        self.counter.phase = "update"
        metrics.update(self.inner_updates(contexts, adv, old, ref))  # 6. mu inner updates
        times["update"] = time.time() - t
        st.round += 1
        st.prompt_position += cfg.prompts.per_round
        metrics.update({f"perf/seconds_{k}": round(v, 3) for k, v in times.items()})
        metrics.update(self.counter.reset())
        metrics["perf/rollout_images_per_s"] = self.rollouts.num_rollouts * self.world / max(times["rollout"], 1e-9)
        metrics["round"] = st.round
        if self.rank == 0 and cfg.log.image_every and st.round % cfg.log.image_every == 0:  # 7. log
            k = min(cfg.log.images_in_grid, len(images))
            prompts = [m["prompt"] for m in metas for _ in range(cfg.rl.group_size)]
            with writing(self.run_dir / "images"):
                (self.run_dir / "images").mkdir(exist_ok=True)
                rollout_grid(
                    images[:k], prompts[:k], local_r[:k], self.run_dir / "images" / f"round_{st.round:05d}.png"
                )
        return metrics

    def export(self) -> None:
        """``<run>/final/``: the trained weights in the format eval tools load (see maskgrpo.checkpoint.export)."""
        export_final(self.engine, self.cfg, self.run_dir / "final", self.rank)

    def evaluate(self, name: str) -> None:
        """Held-out ShapesEval with the current weights (every rank samples, so ZeRO-3 can gather; rank 0 writes)."""
        if self.cfg.eval is None or not getattr(self.backbone, "eval_prompts", None):
            return
        from maskgrpo.toy.evaluate import eval_prompt_sets, evaluate_shapes, write_eval

        sets = {name + suffix: p for suffix, p in eval_prompt_sets(self.backbone, self.cfg.eval).items()}
        todo = {f: p for f, p in sets.items() if not (self.run_dir / f"{f}.json").is_file()}  # a resumed run skips
        self.counter.phase = "eval"
        for file, prompts in todo.items():
            desc = f"ShapesEval ({file})" if self.rank == 0 else None
            summary = evaluate_shapes(self.backbone, prompts, self.cfg.eval, desc=desc)
            if self.rank == 0:
                write_eval(summary, self.run_dir, file)
                print(f"[eval] {file}: overall {summary['overall']:.3f}\n{summary['table']}", flush=True)
        self.counter.reset()
        barrier()

    def _write_rollout_table(self, metas: list[dict], rewards: np.ndarray, adv: torch.Tensor) -> None:
        d = self.run_dir / "rollouts"
        d.mkdir(exist_ok=True)
        g = self.cfg.rl.group_size
        with (d / f"round_{self.state.round + 1:05d}_rank{self.rank}.jsonl").open("w") as f:
            for i, (r, a) in enumerate(zip(rewards.tolist(), adv.tolist())):
                f.write(json.dumps({"prompt": metas[i // g]["prompt"], "reward": r, "advantage": a}) + "\n")

    def train(self) -> None:
        with progress_bars_closed_on_error():  # an error ends on its own clean line
            cfg = self.cfg
            with writing(self.run_dir):
                self.evaluate("eval_before")
            while self.state.round < cfg.rl.rounds:
                metrics = self.run_round()
                self.log.log(metrics)
                if self.rank == 0:
                    print(summary_line(metrics), flush=True)
                if cfg.checkpoint.every and self.state.round % cfg.checkpoint.every == 0:
                    self._save()
            if self.saved_round != self.state.round:  # the last round's checkpoint, unless it is already on disk
                self._save()
            with writing(self.run_dir / "final"):
                self.export()
            with writing(self.run_dir):
                self.evaluate("eval_after")
            self.log.close()


def _slice_batch(batch, start: int, end: int):
    return replace(batch, **{k: getattr(batch, k)[start:end] for k in ("input_ids", "attention_mask", "uncond_ids",
                                                                        "uncond_mask")})  # fmt: skip


def with_run_dir(cfg: TrainRun, config_path: str | None) -> TrainRun:
    """run.output_dir null -> runs/<config file name> (so two configs that differ in one section write apart)."""
    if cfg.run.output_dir is not None:
        return cfg
    name = Path(config_path).stem if config_path else "default"
    return replace(cfg, run=replace(cfg.run, output_dir=f"runs/{name}"))


def summary_line(m: dict) -> str:
    """One line per round: reward, policy stats, zero-std groups, seconds per phase, forwards."""
    sec = " ".join(f"{k.split('_', 1)[1]}={v:.1f}s" for k, v in m.items() if k.startswith("perf/seconds_"))
    fwd = sum(v for k, v in m.items() if k.startswith("perf/forwards_"))
    return (f"round {m['round']:4d} | reward {m['reward/mean']:.3f} +/- {m['reward/std']:.3f} | "
            f"clip {m.get('policy/clip_frac', 0):.3f} kl {m.get('policy/kl_k3', 0):.2e} "
            f"ratio {m.get('policy/ratio_mean', 1):.3f}/{m.get('policy/ratio_max', 1):.3f} | "
            f"zero-std {m['adv/zero_std_group_frac']:.2f} | {sec} | forwards {fwd}")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=None, help="YAML config (see configs/)")
    ap.add_argument("--resume", action="store_true", help="continue from <output_dir>/checkpoints/latest")
    ap.add_argument("--overwrite", action="store_true", help="replace an earlier run in output_dir (deletes it)")
    ap.add_argument("--allow-config-change", default="", metavar="KEYS",
                    help="with --resume: comma-separated config keys (fnmatch patterns, e.g. optim.lr,rl.*) that may "
                    "differ from the checkpoint's")  # fmt: skip
    ap.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # deepspeed launcher
    ap.add_argument("--print-run-dir", action="store_true", help="print the resolved run directory and exit")
    ap.add_argument("overrides", nargs="*", help="dotted overrides, e.g. rl.group_size=4")
    add_traceback_flag(ap)
    args = ap.parse_args(argv)
    with one_line_errors(args.traceback, also=(RewardError,)):  # "error: <one line>", exit 2
        cfg = with_run_dir(load_config(TrainRun, args.config, args.overrides), args.config)
        if args.print_run_dir:
            print(cfg.run.output_dir)
            return
        if args.overwrite and args.resume:
            raise RunError(
                "--overwrite and --resume exclude each other: --resume continues the run, --overwrite deletes it"
            )
        allow = tuple(k.strip() for k in args.allow_config_change.split(",") if k.strip())
        Trainer(cfg, resume=args.resume, overwrite=args.overwrite, allow_config_change=allow).train()


if __name__ == "__main__":
    main()
