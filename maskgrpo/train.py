"""MaskGRPO RL loop on DeepSpeed ZeRO: ``python -m maskgrpo.train --config FILE [key=value ...] [--resume]``.

One round (docs/method.md section 1), as the code below runs it:

    1. take P prompts (P / world per rank)
    2. pi_old = current policy: G rollouts per prompt with the rollout sampler (CFG)
    3. decode, score with every reward, gather the scaled scores from all ranks, combine (weighted sum)
    4. group advantages A_i = (R_i - mean_g) / (std_g + 1e-5) on the gathered rewards; keep this rank's slice
    5. the update plan (maskgrpo.algo.plan): for each of the mu inner updates, the input row of every token, the
       tokens that train (support set) and their advantage weights; old and reference log-probs once per distinct
       input row (no grad, no CFG)
    6. mu inner updates: per micro-batch (whole prompt groups) the loss on the plan's support, backward; one
       optimizer step per update
    7. log, image grid, checkpoint

Components (sampler, context builder, loss, rewards) come from registries by the names in the config; this loop
never branches on a component's name. ``patch: htgrpo`` in the YAML swaps the HT-GRPO components in (resolved in
``maskgrpo.components``).
"""

from __future__ import annotations

if __name__ == "__main__":  # the command line: keep a preemption notice that comes while torch is still importing
    from maskgrpo.preemption import install_handlers as _install_handlers

    _install_handlers()

import argparse
import functools
import json
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from maskgrpo.algo.equations import code_logprobs, group_advantages, zero_std_fraction
from maskgrpo.algo.metric_reduce import RoundMetrics
from maskgrpo.algo.plan import RoundPlan, UpdatePlan, plan_round
from maskgrpo.algo.types import LossInputs, ModelInput, Rollouts
from maskgrpo.budget import add_spend, budget_metrics, round_spend
from maskgrpo.checkpoint import (
    TrainerState,
    candidates,
    checkpoint_world_size,
    export_final,
    load_checkpoint,
    load_resharded,
    read_trainer_state,
    save_checkpoint,
    select_checkpoint,
    tidy_checkpoints,
)
from maskgrpo.components import Components, resolve_components
from maskgrpo.config import dump_config, load_config, to_dict
from maskgrpo.config.schema import TrainRun, check_world_size
from maskgrpo.distributed import (
    agree,
    all_gather_rows,
    broadcast_object,
    exit_process,
    gather_objects,
    init_distributed,
    shutdown_distributed,
)
from maskgrpo.engine import build_engine
from maskgrpo.errors import RunError, add_traceback_flag, one_line_errors
from maskgrpo.forward_plan import Forwards
from maskgrpo.guards import FiniteLosses, diverged_policy_error, require_finite_grad_norm
from maskgrpo.observe import ForwardCounter, MetricsLog, progress_bars_closed_on_error, rollout_grid
from maskgrpo.phases import PhaseTimer
from maskgrpo.policy import code_logits
from maskgrpo.preemption import Preempted, Preemption, install_handlers
from maskgrpo.prompts import PROMPT_ORDERS
from maskgrpo.rewards.base import RewardError, combine_rewards, score_all
from maskgrpo.rewards.client import RewardOutageError
from maskgrpo.rollout import sample_rollouts
from maskgrpo.run_dir import (
    RunLock,
    check_fresh_run,
    check_resume_config,
    clear_run,
    describe_changes,
    normalized_config,
    writing,
)
from maskgrpo.run_eval import RunEval


class Trainer:
    """One process of an RL run: components from the config, a DeepSpeed engine, and the round of docs/method.md 1.

    ``run_round`` does one round and returns its metrics; ``train`` loops, logs, checkpoints and evaluates.
    """

    def __init__(
        self, cfg: TrainRun, resume: bool, overwrite: bool = False, allow_config_change: tuple[str, ...] = ()
    ) -> None:
        """Everything is validated (components, backbone, prompts, rewards, engine, and on ``resume`` the checkpoint
        and the config against it) before anything is written to the run folder."""
        self.cfg = cfg
        # collectives may wait for a rank that waits out a reward server's outage: the limit plus 30 minutes
        self.rank, self.world, self.device = init_distributed(timeout_s=cfg.reward.max_outage_s + 1800)
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
        self.timer = PhaseTimer(self.device, self.counter)  # seconds and forwards per phase of a round
        self.preemption = Preemption(self.device)  # SIGTERM / SIGUSR1: stop at a round boundary with a checkpoint
        self.evals = RunEval(self.backbone, cfg.eval, self.run_dir, self.rank, self.timer, self.counter,
                             cfg.reward.max_outage_s)  # fmt: skip
        self.engine, self.reference = build_engine(cfg, self.backbone.model, self.world, self.device)
        self.policy = self.engine.module
        seed = cfg.run.seed * 7919 + self.rank
        self.gens = {name: torch.Generator(device=self.device).manual_seed(seed * 10 + i)
                     for i, name in enumerate(("rollout", "context", "loss"))}  # fmt: skip
        self.stream = PROMPT_ORDERS.get(cfg.prompts.order)(self.parts.prompts, cfg.run.seed)
        self.state = TrainerState(components=self.parts.names, config=to_dict(cfg))
        self.saved_round: int | None = None  # round of the newest checkpoint this run wrote or resumed from
        self.resumed_from: Path | None = None
        self.log = MetricsLog(self.run_dir, self.rank == 0)
        if resume:
            self._resume(allow_config_change)  # verified checkpoint, same ranks, config checked: then loaded
            # last check (a bad line), first write: later rounds dropped, rounds the file lacks restored from the copy
            self._on_rank0(lambda: self.log.truncate_after(self.state.round, checkpoint=self.resumed_from))
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
        stored = read_trainer_state(path, 0)
        changes = check_resume_config(
            {**normalized_config(stored.config), "components": stored.components},
            {**to_dict(self.cfg), "components": self.parts.names}, path.name, allow_config_change,
        )  # fmt: skip
        if checkpoint_world_size(path) == self.world:
            self.state = load_checkpoint(self.engine, path, self.rank)  # bit-exact
        else:  # a node lost or added: ZeRO-2 state resharded, random streams re-derived (one note line)
            self.state = load_resharded(self.engine, path, self.rank, self.world)
        self.resumed_from = path
        self.saved_round = self.state.round
        self.state.config, self.state.components = to_dict(self.cfg), self.parts.names  # what runs from here on
        for name, g in self.gens.items():
            g.set_state(self.state.generators[name])
        torch.set_rng_state(self.state.torch_rng)
        if self.rank == 0:
            print(f"[train] resumed from {path} at round {self.state.round}")
            if changes:
                print(f"[train] config changes accepted on resume: {describe_changes(changes)}")

    def rng_states(self) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Every generator's state and the global torch RNG state (what a checkpoint stores besides the engine)."""
        return {name: g.get_state() for name, g in self.gens.items()}, torch.get_rng_state()

    def _save(self) -> None:
        self.state.generators, self.state.torch_rng = self.rng_states()
        save_checkpoint(self.engine, self.ckpt_dir, self.state, self.rank, self.world, self.cfg.checkpoint.keep,
                        metrics=self.log.path)  # fmt: skip
        self.saved_round = self.state.round

    def _bar(self, total: int, desc: str) -> tqdm:
        """A transient progress bar for one round phase (rank 0 only)."""
        return tqdm(total=total, desc=f"round {self.state.round + 1} {desc}", leave=False, disable=self.rank != 0)

    # ---- model passes ------------------------------------------------------------------------------------------
    def _logp(self, module: torch.nn.Module, rollouts: Rollouts, inp: ModelInput, sel: torch.Tensor) -> torch.Tensor:
        """log-probs (b, N) of the committed codes of rollouts ``sel`` (b,), one forward per distinct input row."""
        uniq, local = torch.unique(inp.rows[sel], return_inverse=True)  # rollouts sharing a row share one forward
        logits = code_logits(module, rollouts.prompts, inp.input_ids[uniq], inp.attention_mask[uniq])  # (u, N, K)
        return code_logprobs(logits, rollouts.codes[sel], local)

    def micro_batches(self, num_rollouts: int) -> list[torch.Tensor]:
        """Rollout indices of each micro-batch: ``rl.micro_batch_prompts`` whole prompt groups (same on every pass)."""
        mb = self.cfg.rl.micro_batch_prompts * self.cfg.rl.group_size
        return [torch.arange(s, min(s + mb, num_rollouts), device=self.device) for s in range(0, num_rollouts, mb)]

    def forwards(self, plan: RoundPlan, num_rollouts: int) -> Forwards:
        """Which micro-batches share a forward under each input of the plan (maskgrpo.forward_plan): consecutive
        micro-batches while their distinct rows fit the rows of one per-rollout micro-batch, micro_batch_prompts * G.
        Per-rollout contexts keep one micro-batch per forward; shared rows (HT-GRPO: one per prompt) are batched."""
        rows = self.cfg.rl.micro_batch_prompts * self.cfg.rl.group_size
        return Forwards(plan.inputs, self.micro_batches(num_rollouts), rows)

    # ---- the round ---------------------------------------------------------------------------------------------
    def rollout(self, metas: list[dict]) -> Rollouts:
        """Step 2: G rollouts per prompt from pi_old (policy in eval mode, CFG, no grad)."""
        cfg = self.cfg
        prompts = self.backbone.prompt_batch([m["prompt"] for m in metas]).to(self.device)  # (P, T)
        calls = -(-len(metas) * cfg.rl.group_size // cfg.rl.rollout_batch_size)
        with self._bar(calls * self.parts.sampler.num_steps, "rollout") as bar:

            def step(_: object) -> None:  # after every sampler step: progress, and a preemption may stop here
                bar.update()
                self.preemption.check()

            return sample_rollouts(self.parts.sampler, self.policy, prompts, cfg.rl.group_size,
                                   cfg.rl.rollout_batch_size, self.gens["rollout"], step)  # fmt: skip

    def rewards_and_advantages(self, metas: list[dict], images: np.ndarray) -> tuple[torch.Tensor, np.ndarray, dict]:
        """Steps 3-4: local scaled scores -> gathered -> combined R -> group advantages -> this rank's slice."""
        g = self.cfg.rl.group_size
        metas_rep = [m for m in metas for _ in range(g)]
        outage = None
        try:
            scaled = score_all(self.parts.reward_fns, self.parts.reward_specs, images,
                               [m["prompt"] for m in metas_rep], metas_rep)  # (B_local, F)  # fmt: skip
        except RewardOutageError as e:  # the server stayed down past reward.max_outage_s
            outage = str(e)
        outage = next((e for e in gather_objects(outage) if e), None)  # every rank learns of any rank's outage
        if outage is not None:  # the round is abandoned (weights untouched), its checkpoint written, then the error
            raise Preempted("reward outage", finished=False, error=outage)
        gathered = all_gather_rows(scaled)  # (B_global, F): gathered BEFORE normalising
        weights = np.array([s.weight for s in self.parts.reward_specs])
        total, metrics = combine_rewards(gathered, weights, [s.name for s in self.parts.reward_specs])
        r = torch.as_tensor(total, dtype=torch.float64)
        adv = group_advantages(r, g)  # (B_global,)
        b = scaled.shape[0]
        local = adv[self.rank * b : (self.rank + 1) * b].float().to(self.device)
        metrics.update({"adv/zero_std_group_frac": zero_std_fraction(r, g), "adv/abs_max": float(adv.abs().max())})
        return local, total[self.rank * b : (self.rank + 1) * b], metrics

    def plan(self, rollouts: Rollouts) -> RoundPlan:
        """Step 5a: for every inner update, which tokens train, read from which input row, with which weight
        (maskgrpo.algo.plan: the context builder's inputs, then the loss's support sets and advantage weights)."""
        return plan_round(self.parts.context, self.parts.loss, rollouts, self.cfg.rl.num_inner_updates, self.gens)

    @torch.no_grad()
    def old_and_ref_logp(self, rollouts: Rollouts, plan: RoundPlan,
                         forwards: Forwards) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:  # fmt: skip
        """Step 5b: log pi_old and log pi_ref of every rollout under every distinct input of the plan (no grad, no
        CFG), one forward per group of micro-batches: the peak activation memory is that of one update's forward,
        and every distinct row is forwarded once per pass."""
        passes = sum(forwards.count(i) for i in range(len(plan.inputs)))
        with self._bar(2 * passes, "old/ref log-probs") as bar:

            def every_row(model: torch.nn.Module, i: int) -> torch.Tensor:
                logp = torch.empty(rollouts.codes.shape, device=self.device)  # (B, N)
                for fwd in forwards.passes(i, functools.partial(self._logp, model, rollouts, plan.inputs[i])):
                    logp[fwd.rollouts] = fwd.logp
                    bar.update()
                return logp

            self.policy.eval()
            old = [every_row(self.policy, i) for i in range(len(plan.inputs))]
            with self.reference() as ref_model:  # None when kl_beta = 0
                ref = [None if ref_model is None else every_row(ref_model, i) for i in range(len(plan.inputs))]
        return old, ref

    def inner_updates(self, rollouts: Rollouts, plan: RoundPlan, forwards: Forwards, adv: torch.Tensor,
                      old: list[torch.Tensor], ref: list[torch.Tensor | None]) -> dict[str, float]:  # fmt: skip
        """Step 6: the mu updates of the plan; each = the loss of every micro-batch on the update's support set,
        then one optimizer step.

        Micro-batches that share a forward (``forwards``) share one backward of sum(losses) / n_micro, the mean over
        micro-batches that gradient accumulation gives; metrics reduce as the loss declares (algo.metric_reduce).
        """
        acc = RoundMetrics(self.parts.loss.reductions)
        n_micro = len(self.micro_batches(rollouts.num_rollouts))
        finite = FiniteLosses()  # non-finite guard: one device sync per update, before the optimizer step
        self.policy.train()

        def micro_batch_loss(u: UpdatePlan, sel: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
            """The loss of the micro-batch ``sel`` (b,) in update u, on the plan's support and weights."""
            i = u.input_index
            loss, metrics = self.parts.loss(LossInputs(
                logp=logp, old_logp=old[i][sel], ref_logp=None if ref[i] is None else ref[i][sel],
                advantages=adv[sel], support=u.support[sel], weight=u.weight[sel], stage=u.stage, rate=u.rate,
            ))  # fmt: skip
            finite.add(loss)
            acc.add({**metrics, "loss/policy": loss.detach()})
            bar.update()
            return loss

        with self._bar(len(plan.updates) * n_micro, "inner updates") as bar:
            for u in plan.updates:
                logp_of = functools.partial(self._logp, self.engine, rollouts, plan.inputs[u.input_index])
                for fwd in forwards.passes(u.input_index, logp_of):  # one forward + backward per group
                    losses = [micro_batch_loss(u, fwd.rollouts[a:b], fwd.logp[a:b]) for a, b in fwd.parts]
                    self.engine.set_gradient_accumulation_boundary(fwd.last)
                    self.engine.backward(torch.stack(losses).sum() / n_micro, scale_wrt_gas=False)
                where = f"round {self.state.round + 1}, inner update {u.m}"
                finite.check(where)  # RunError on a NaN / inf loss of this update, before its optimizer step
                with self.timer.phase("optimizer"):
                    self.engine.step()  # the accumulation boundary: one optimizer step per inner update
                require_finite_grad_norm(self.engine.get_global_grad_norm(), where)
        out = acc.result()  # one device sync per round, not per micro-batch
        out["loss/grad_norm"] = float(self.engine.get_global_grad_norm() or 0.0)
        return out

    def run_round(self) -> dict:
        """One round, step by step as in the box at the top of this file; returns its metrics."""
        cfg, st = self.cfg, self.state
        self.round_start = self.rng_states()  # a round abandoned before its update phase restarts from here
        self.preemption.check()
        p_local = cfg.prompts.per_round // self.world
        metas = self.stream.take(st.prompt_position + self.rank * p_local, p_local)  # 1. this rank's prompts
        with self.timer.phase("rollout"), diverged_policy_error(f"round {st.round + 1}, rollout"):
            rollouts = self.rollout(metas)  # 2. G rollouts per prompt from pi_old
        self.preemption.check()
        with self.timer.phase("reward"):
            images = self.backbone.decode(rollouts.codes.cpu())  # 3. decode, score, gather, combine
            adv, rewards, metrics = self.rewards_and_advantages(metas, images)  # 4. group advantages (this rank)
            if cfg.log.rollout_table:
                with writing(self.run_dir / "rollouts"):
                    self._write_rollout_table(metas, rewards, adv)
        self.preemption.check()
        with self.timer.phase("old_ref"):
            plan = self.plan(rollouts)  # 5. the update plan: which tokens train in each update, where, how much
            forwards = self.forwards(plan, rollouts.num_rollouts)
            old, ref = self.old_and_ref_logp(rollouts, plan, forwards)
        self.preemption.check()  # the last point at which the weights are still those of the round's start
        with self.timer.phase("update"):
            metrics.update(self.inner_updates(rollouts, plan, forwards, adv, old, ref))  # 6. mu inner updates
        st.round += 1
        st.prompt_position += cfg.prompts.per_round
        images_per_s = rollouts.num_rollouts * self.world / max(self.timer.wall["rollout"], 1e-9)
        metrics["perf/rollout_images_per_s"] = images_per_s
        metrics.update(self.timer.take())  # 7. log
        metrics.update(self.counter.reset())
        metrics["round"] = st.round
        if self.rank == 0 and cfg.log.image_every and st.round % cfg.log.image_every == 0:
            self._write_grid(metas, images, rewards)
        return metrics

    def _write_grid(self, metas: list[dict], images: np.ndarray, rewards: np.ndarray) -> None:
        k = min(self.cfg.log.images_in_grid, len(images))
        prompts = [m["prompt"] for m in metas for _ in range(self.cfg.rl.group_size)]
        with writing(self.run_dir / "images"):
            (self.run_dir / "images").mkdir(exist_ok=True)
            path = self.run_dir / "images" / f"round_{self.state.round:05d}.png"
            rollout_grid(images[:k], prompts[:k], rewards[:k], path)

    def export(self) -> None:
        """``<run>/final/``: the trained weights in the format eval tools load (see maskgrpo.checkpoint.export)."""
        export_final(self.engine, self.cfg, self.run_dir / "final", self.rank)

    def spend(self, metrics: dict) -> dict[str, float]:
        """Add this round's compute to the run's budget (maskgrpo.budget; a collective: summed over the ranks) and
        return its ``budget/*`` keys."""
        self.state.budget = add_spend(self.state.budget, all_gather_rows(round_spend(metrics)[None]))
        return budget_metrics(self.state.budget)

    def _write_rollout_table(self, metas: list[dict], rewards: np.ndarray, adv: torch.Tensor) -> None:
        d = self.run_dir / "rollouts"
        d.mkdir(exist_ok=True)
        g = self.cfg.rl.group_size
        with (d / f"round_{self.state.round + 1:05d}_rank{self.rank}.jsonl").open("w") as f:
            for i, (r, a) in enumerate(zip(rewards.tolist(), adv.tolist())):
                f.write(json.dumps({"prompt": metas[i // g]["prompt"], "reward": r, "advantage": a}) + "\n")

    def train(self) -> bool:
        """Rounds until ``rl.rounds``, then export and the final evaluation. Returns False when a signal stopped the
        run early (its checkpoint written: ``--resume`` continues it), True when it finished."""
        with progress_bars_closed_on_error():  # an error ends on its own clean line
            cfg = self.cfg
            self.preemption.install()
            with writing(self.run_dir):
                self.evals.before()
            try:
                while self.state.round < cfg.rl.rounds:
                    metrics = self.run_round()
                    metrics.update(self.spend(metrics))
                    if self.evals.due(self.state.round):
                        metrics.update(self.evals.during(self.state.round))
                    self.log.log(metrics)
                    if self.rank == 0:
                        print(summary_line(metrics), flush=True)
                    if cfg.checkpoint.every and self.state.round % cfg.checkpoint.every == 0:
                        self._save()
                    self.preemption.check(finished=True)
            except Preempted as stop:
                self.stop_early(stop)
                return False
            if self.saved_round != self.state.round:  # the last round's checkpoint, unless it is already on disk
                self._save()
            with writing(self.run_dir / "final"):
                self.export()
            with writing(self.run_dir):
                self.evals.after(self.state.round)
            self.log.close()
        return True

    def stop_early(self, stop: Preempted) -> None:
        """The ranks agreed to stop: a round cut short before its update phase restarts from its first step (the
        generators go back to the round's start; the weights were not touched), so the checkpoint of the last
        completed round is exact. Write it unless it is on disk already."""
        if not stop.finished:
            gens, torch_rng = self.round_start
            for name, g in self.gens.items():
                g.set_state(gens[name])
            torch.set_rng_state(torch_rng)
        if self.saved_round != self.state.round:
            self._save()
        self.log.close()
        if stop.error is not None:
            raise RunError(f"{stop.error}; wrote the checkpoint of round {self.state.round}: resume with --resume "
                           "once the server answers")  # fmt: skip
        if self.rank == 0:
            print(f"[train] preempted at round {self.state.round} ({stop.signal_name}); resume with --resume",
                  flush=True)  # fmt: skip


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


def has_checkpoint(root: Path) -> bool:
    """Whether ``root`` holds a checkpoint a resume could try (``--auto-resume``)."""
    try:
        candidates(root)
    except RunError:
        return False
    return True


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=None, help="YAML config (see configs/)")
    ap.add_argument("--resume", action="store_true", help="continue from <output_dir>/checkpoints/latest")
    ap.add_argument("--auto-resume", action="store_true",
                    help="resume when output_dir has a checkpoint, start (replacing a folder without one) otherwise: "
                    "for jobs that a cluster requeues after preemption (launchers: AUTO_RESUME=1)")  # fmt: skip
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
        if args.overwrite and (args.resume or args.auto_resume):
            raise RunError(
                "--overwrite and --resume exclude each other: --resume continues the run, --overwrite deletes it"
            )
        resume, overwrite = args.resume, args.overwrite
        if args.auto_resume:
            resume = has_checkpoint(Path(cfg.run.output_dir) / "checkpoints")
            overwrite = not resume  # a folder without a checkpoint holds nothing a resume could use
        allow = tuple(k.strip() for k in args.allow_config_change.split(",") if k.strip())
        Trainer(cfg, resume=resume, overwrite=overwrite, allow_config_change=allow).train()


def cli(argv: list[str] | None = None) -> None:
    """The command line: :func:`main`, then the process group destroyed on every exit path, errors included, and
    the process ended by :func:`maskgrpo.distributed.exit_process` (an in-process caller of ``main`` keeps its group
    for the next run)."""
    install_handlers()  # a preemption notice during start-up is kept for the first safe point
    status: object = 0
    try:
        main(argv)
    except SystemExit as e:  # the one-line errors (exit 2) and argparse's
        status = e.code
    except BaseException:  # anything else: the traceback, as the interpreter would print it
        sys.excepthook(*sys.exc_info())
        status = 130 if isinstance(sys.exc_info()[1], KeyboardInterrupt) else 1
    exit_process(status, shutdown_distributed())


if __name__ == "__main__":
    cli()
