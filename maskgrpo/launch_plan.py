"""Dry run of a GPU launch: validate the config, check paths, print the batch arithmetic and a memory estimate.

    python -m maskgrpo.launch_plan --config configs/mmada_maskgrpo.yaml --num-gpus 8 [--num-nodes 2] [key=value ...]

Nothing is downloaded and no weight is loaded. What it does:

1. builds the ``TrainRun`` exactly as ``python -m maskgrpo.train`` would (same YAML, same overrides; a bad key or
   value exits 2 with the key named);
2. checks the backbone options and reward options against the registered loader / factory signatures;
3. checks every path: a local file or directory must exist; a string shaped like ``owner/name`` that is not a local
   path is reported as "hub id, not checked offline"; the prompts JSONL is parsed;
4. prints the per-round batch arithmetic with the trainer's own DeepSpeed numbers (``maskgrpo.engine``), per
   rank and per node (prompts per round must divide by nodes x GPUs per node);
5. prints a per-GPU memory estimate from docs/models.md section 6, with the parameter count read from the checkpoint's
   config.json when it is a local directory and the released model's otherwise (MMaDA-8B; Lumina-DiMOO-8B for
   backbone lumina, whose row length comes from height x width plus a text allowance, ``LUMINA_PLAN_TEXT_TOKENS``).

Exit status: 0 all good, 1 a path or option problem (the plan is still printed), 2 the config does not load.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maskgrpo.config import ConfigError, load_config
from maskgrpo.config.schema import TrainRun
from maskgrpo.errors import RunError
from maskgrpo.hub import looks_like_hub_id

GB = 1e9
"""Decimal gigabytes, as in docs/models.md section 6 (8.08 B bf16 params = 16.2 GB)."""

MMADA_8B_VOCAB = 134656
"""Embedding rows of MMaDA-8B (docs/models.md 1.1), used when the checkpoint is a hub id that is not read offline."""

ACT_BYTES_PER_BLOCK_REF = 240e6
"""Saved activations of one block for one row without checkpointing, bf16, flash-style SDPA (models.md 6: ~240 MB at
T = 1539, C = 4096); scaled linearly in T * C for other sizes."""
ACT_REF_TOKENS_X_WIDTH = 1539 * 4096

LUMINA_PLAN_TEXT_TOKENS = 128
"""Text prefix assumed for a Lumina-DiMOO row in the plan (system prompt ~20 tokens + a long prompt); its rows have
no fixed text window, so T = this + 2 + (H/16) * (W/16 + 1) + 2 (4292 at 1024 x 1024)."""


# ---------------------------------------------------------------------------------------------------------------
# Sizes


@dataclass(frozen=True)
class ModelSize:
    """Sizes of an LLaDA-style network (docs/models.md 1.1, 6). ``source`` says where the numbers came from."""

    d_model: int = 4096
    n_layers: int = 32
    mlp_hidden: int = 12288
    vocab: int = MMADA_8B_VOCAB
    tied: bool = False
    source: str = "MMaDA-8B numbers (docs/models.md 1.1)"

    @property
    def params_per_block(self) -> int:
        """4 C^2 (q, k, v, attn_out) + 3 C F (gate, up, down) + 2 C (norms): 218,112,000 at C = 4096, F = 12288."""
        c, f = self.d_model, self.mlp_hidden
        return 4 * c * c + 3 * c * f + 2 * c

    @property
    def params(self) -> int:
        """Psi = L * block + V * C (wte) + V * C (head, unless tied) + C (ln_f): 8,082,690,048 for MMaDA-8B."""
        heads = 1 if self.tied else 2
        return self.n_layers * self.params_per_block + heads * self.vocab * self.d_model + self.d_model

    def lora_params(self, r: int, targets: tuple[str, ...]) -> int:
        """sum over adapted linears of r * (in + out): 335,544,320 for r = 128 on the 7 block linears, 167,772,160 on
        q/k/v/up (docs/models.md 1.5)."""
        c, f = self.d_model, self.mlp_hidden
        dims = {"q_proj": (c, c), "k_proj": (c, c), "v_proj": (c, c), "attn_out": (c, c), "ff_proj": (c, f),
                "up_proj": (c, f), "ff_out": (f, c)}  # fmt: skip
        return self.n_layers * sum(r * sum(dims[t]) for t in targets)


def default_size(backbone: str) -> ModelSize:
    """The released 8B sizes of a backbone (docs/models.md 1.1, 6): Lumina-DiMOO V = 134548, else MMaDA-8B."""
    if backbone == "lumina":
        from maskgrpo.layout_lumina import lumina_dimoo_8b

        lay = lumina_dimoo_8b()
        return ModelSize(vocab=lay.code_offset + lay.codebook_size, source="Lumina-DiMOO-8B numbers (models.md 1.1)")
    return ModelSize()


def model_size(backbone_path: str, default: ModelSize | None = None) -> ModelSize:
    """Read d_model / n_layers / mlp / V / tying from a local config.json (``path`` or ``path/model``), else
    ``default`` (MMaDA-8B when None)."""
    for candidate in (Path(backbone_path) / "config.json", Path(backbone_path) / "model" / "config.json"):
        if candidate.is_file():
            raw = json.loads(candidate.read_text(encoding="utf-8"))
            return ModelSize(d_model=int(raw["d_model"]), n_layers=int(raw["n_layers"]),
                             mlp_hidden=int(raw["mlp_hidden_size"]), vocab=int(raw["embedding_size"]),
                             tied=bool(raw.get("weight_tying", False)), source=str(candidate))  # fmt: skip
    return default or ModelSize()


def row_sizes(options: dict[str, Any]) -> tuple[int, int, int] | None:
    """(T, N, K) of one T2I row from the backbone options: MMaDA ``text_window`` + ``grid``, or Lumina ``height``
    + ``width`` (raises ValueError on a size the Lumina layout rejects); None for other backbones."""
    if "text_window" in options and "grid" in options:
        from maskgrpo.layout import mmada_8b

        lay = mmada_8b(int(options["text_window"]), int(options["grid"]))
        return lay.seq_len, lay.num_image_tokens, lay.codebook_size
    if "height" in options and "width" in options:
        from maskgrpo.layout_lumina import lumina_dimoo_8b

        lum = lumina_dimoo_8b(int(options["height"]), int(options["width"]))
        return lum.seq_len(LUMINA_PLAN_TEXT_TOKENS), lum.num_image_tokens, lum.codebook_size
    return None


# ---------------------------------------------------------------------------------------------------------------
# Batch arithmetic


@dataclass(frozen=True)
class BatchPlan:
    """Per-round batch arithmetic of ``maskgrpo.train`` on ``gpus`` ranks over ``nodes`` nodes (docs/method.md 1)."""

    gpus: int
    """Ranks in total = nodes x GPUs per node (ZeRO partitions over all of them)."""
    nodes: int
    """Nodes of the launch (NUM_NODES); every node runs gpus / nodes ranks."""
    zero_stage: int
    prompts_per_round: int
    """P."""
    group_size: int
    """G."""
    micro_batch_rollouts: int
    """Rollouts per micro-batch = micro_batch_prompts * G (whole groups)."""
    grad_accum: int
    """Micro-batches per optimizer step = (P / gpus) / micro_batch_prompts."""
    inner_updates: int
    """mu; one optimizer step each."""
    rollout_batch_size: int
    """Rollout rows per sampler call."""
    num_steps: int
    """Sampler steps T."""
    cfg: bool
    """Whether the sampler runs an unconditional row per conditional row."""

    @property
    def gpus_per_node(self) -> int:
        return self.gpus // self.nodes

    @property
    def prompts_per_gpu(self) -> int:
        return self.prompts_per_round // self.gpus

    @property
    def prompts_per_node(self) -> int:
        return self.prompts_per_gpu * self.gpus_per_node

    @property
    def rollouts_per_round(self) -> int:
        return self.prompts_per_round * self.group_size

    @property
    def rollouts_per_gpu(self) -> int:
        return self.prompts_per_gpu * self.group_size

    @property
    def optimizer_steps_per_round(self) -> int:
        return self.inner_updates

    @property
    def sampler_calls_per_gpu(self) -> int:
        return math.ceil(self.rollouts_per_gpu / self.rollout_batch_size)


def batch_plan(cfg: TrainRun, gpus_per_node: int, nodes: int = 1) -> BatchPlan:
    """The trainer's own numbers on nodes x gpus_per_node ranks: P must divide by the total rank count;
    micro-batch and accumulation from ``engine`` (the same per rank on every node)."""
    from maskgrpo.config.deepspeed_json import deepspeed_config

    if gpus_per_node < 1 or nodes < 1:
        raise ConfigError(f"need at least one node and one GPU per node, got {nodes} x {gpus_per_node}")
    gpus = nodes * gpus_per_node
    where = "NUM_GPUS" if nodes == 1 else f"NUM_NODES x NUM_GPUS = {nodes} x {gpus_per_node}"
    if cfg.prompts.per_round % gpus or (cfg.prompts.per_round // gpus) % cfg.rl.micro_batch_prompts:
        raise ConfigError(f"prompts.per_round={cfg.prompts.per_round} must divide by the {gpus} GPUs ({where}) "
                          f"and leave whole micro-batches of rl.micro_batch_prompts={cfg.rl.micro_batch_prompts}: "
                          f"{prompt_counts(gpus, cfg.rl.micro_batch_prompts)}")  # fmt: skip
    ds = deepspeed_config(cfg, gpus)
    return BatchPlan(
        gpus=gpus,
        nodes=nodes,
        zero_stage=int(ds.get("zero_optimization", {}).get("stage", 0)),
        prompts_per_round=cfg.prompts.per_round,
        group_size=cfg.rl.group_size,
        micro_batch_rollouts=int(ds["train_micro_batch_size_per_gpu"]),
        grad_accum=int(ds["gradient_accumulation_steps"]),
        inner_updates=cfg.rl.num_inner_updates,
        rollout_batch_size=cfg.rl.rollout_batch_size,
        num_steps=cfg.rollout.num_steps,
        cfg=cfg.rollout.cfg_scale > 0,
    )


def prompt_counts(gpus: int, micro_batch_prompts: int, per_gpu: int = 3) -> str:
    """The ``prompts.per_round`` values that divide: multiples of gpus x micro_batch_prompts; ``per_gpu`` prompts per
    GPU (the configs' share on 8 GPUs) is ``per_gpu`` x gpus. Test: 16 GPUs, 1 -> "16, 32, 48, 64 (3 per GPU: 48)"."""
    step = gpus * micro_batch_prompts
    share = per_gpu * gpus if (per_gpu * gpus) % step == 0 else None
    return (f"use a multiple of {step}: {', '.join(str(k * step) for k in range(1, 5))}, ..."
            + (f" ({per_gpu} per GPU, the configs' share: prompts.per_round={share})" if share else ""))  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# Memory (docs/models.md section 6)


@dataclass(frozen=True)
class ContextRows:
    """Model-input rows of the largest forward on one rank, from the run's context builder (``forward_rows``)."""

    method: str
    """Preset (method) whose default context this is, or the run's own."""
    context: str
    """Registered context builder."""
    update: int
    """Rows of the largest forward + backward of an inner update (the trainer merges whole micro-batches while they
    read <= micro_batch_prompts * G rows): MaskGRPO G per micro-batch prompt, HT-GRPO one per prompt on the rank."""
    old_ref: int
    """Rows of the largest no-grad old / reference forward."""


def context_rows(cfg: TrainRun, num_image_tokens: int, prompts_per_gpu: int, preset: str | None = None
                 ) -> ContextRows:  # fmt: skip
    """Build the context builder the run would use (``preset`` None: the run's own, ``rl.context`` overrides
    included; else that preset's default context on the same config) and count the rows of its largest forward
    on a rank with ``prompts_per_gpu`` prompts (``maskgrpo.algo.contexts.forward_rows``)."""
    from maskgrpo.algo.contexts import forward_rows
    from maskgrpo.components import run_context

    method, name, builder = run_context(cfg, preset)
    update, old_ref = forward_rows(builder, prompts_per_gpu, cfg.rl.micro_batch_prompts, cfg.rl.group_size,
                                   num_image_tokens, cfg.rollout.num_steps, cfg.rl.num_inner_updates)  # fmt: skip
    return ContextRows(method, name, update, old_ref)


@dataclass
class MemoryEstimate:
    """Per-GPU memory terms in bytes. ``states`` are resident; the peak adds the largest transient phase."""

    states: list[tuple[str, float, str]] = field(default_factory=list)
    phases: list[tuple[str, float, str]] = field(default_factory=list)

    @property
    def resident(self) -> float:
        return sum(b for _, b, _ in self.states)

    @property
    def peak(self) -> float:
        return self.resident + max((b for _, b, _ in self.phases), default=0.0)


def memory_estimate(cfg: TrainRun, plan: BatchPlan, size: ModelSize, text_window: int | None, grid: int | None,
                    codebook: int, checkpointing: bool, *, seq_len: int | None = None,
                    num_image_tokens: int | None = None,
                    rows: ContextRows | None = None) -> MemoryEstimate:  # fmt: skip
    """docs/models.md 6 formulas per GPU (N = gpus, Psi = params, Psi_t = trainable params, 16 B per trainable param).

    states:  frozen base 2 Psi (ZeRO-3: 2 Psi / N) + trainable 2 Psi_t + 14 Psi_t / N (ZeRO-2) or 16 Psi_t / N
             (ZeRO-3); full fine-tuning with beta > 0 adds a replicated bf16 reference copy (2 Psi); ZeRO-3 adds one
             gathered block and one gathered V x C matrix.
    update:  rows = the rows of the largest forward, counted on the run's context builder (``rows``, or
             :func:`context_rows` of the run: MaskGRPO one per rollout of a micro-batch, HT-GRPO one per prompt) x
             (activations + sliced fp32 logits and their gradient, 2 N K 4 B).
             activations/row: no checkpointing L * 240 MB * (T C) / (1539 * 4096); whole-block checkpointing
             L * T * C * 2 B (block inputs) + one block recomputed.
    T, N:    text_window + grid^2 + 2 and grid^2 (MMaDA), or ``seq_len`` and ``num_image_tokens`` when given (Lumina).
    rollout: per sampler call, (2 if CFG) x rows x (no-grad forward transient + sliced logits) + sampler
             probabilities (3 fp32 copies of (rows, N, K)).
    old/ref: the no-grad log-prob pass, its largest forward (the trainer chunks it as the updates).
    """
    n, psi, c, f, layers = plan.gpus, size.params, size.d_model, size.mlp_hidden, size.n_layers
    t = seq_len if seq_len is not None else text_window + grid * grid + 2  # sequence length
    n_img = num_image_tokens if num_image_tokens is not None else grid * grid
    est = MemoryEstimate()
    if cfg.lora.enabled:
        from maskgrpo.models.lora_targets import LORA_TARGETS

        targets = LORA_TARGETS[cfg.lora.targets]
        psi_t = size.lora_params(cfg.lora.r, targets)
        base = 2 * psi / n if plan.zero_stage == 3 else 2 * psi
        est.states.append(("frozen base weights (bf16)", base, f"{psi / 1e9:.3f} B params"
                           + (" / N (ZeRO-3)" if plan.zero_stage == 3 else ", replicated")))  # fmt: skip
        label = f"LoRA r={cfg.lora.r} on {len(targets)} linears/block"
    else:
        psi_t = psi
        label = "full fine-tuning"
    trainable = 16 * psi_t / n if plan.zero_stage == 3 else 2 * psi_t + 14 * psi_t / n
    formula = "16 Psi_t / N" if plan.zero_stage == 3 else "2 Psi_t + 14 Psi_t / N"
    est.states.append((f"trainable states, {label}", trainable, f"{psi_t / 1e6:.1f} M params, {formula}"))
    if not cfg.lora.enabled and cfg.rl.kl_beta > 0:
        est.states.append(("frozen reference copy (bf16)", 2 * psi, "full fine-tuning with kl_beta > 0"))
    clip = [n for n, e in cfg.rewards.items() if (e.entry or n) == "clip"]
    if clip:
        from maskgrpo.reward_launch import CLIP_IN_TRAINER_GB

        est.states.append((f"reward models in the trainer ({', '.join(clip)})", CLIP_IN_TRAINER_GB * GB,
                           "CLIP ViT-L/14 fp32, about 0.4 B params"))  # fmt: skip
    if plan.zero_stage == 3:
        est.states.append(("ZeRO-3 gathered block + V x C matrix", 2 * size.params_per_block + 2 * size.vocab * c,
                           "one layer and wte/head at a time"))  # fmt: skip

    act_block = ACT_BYTES_PER_BLOCK_REF * (t * c) / ACT_REF_TOKENS_X_WIDTH
    if checkpointing:
        act_row, how = layers * t * c * 2 + act_block, "block checkpointing"
    else:
        act_row, how = layers * act_block, "no checkpointing"
    logits_row = 2 * n_img * codebook * 4
    ctx = rows if rows is not None else context_rows(cfg, n_img, plan.prompts_per_gpu)
    est.phases.append((f"update: activations ({how}) + sliced logits", ctx.update * (act_row + logits_row),
                       f"{ctx.update} rows ({ctx.context}) x ({act_row / GB:.2f} + {logits_row / GB:.3f}) GB, "
                       f"T={t}"))  # fmt: skip

    fwd_row = (5 * t * c + 3 * t * f) * 2 + 2 * t * c * 4  # bf16 hidden/q/k/v/out + gate/up/act, fp32 RoPE q, k
    rollout_rows = min(plan.rollout_batch_size, plan.rollouts_per_gpu)
    model_rows = rollout_rows * (2 if plan.cfg else 1)
    rollout = model_rows * (fwd_row + n_img * codebook * 4) + 3 * rollout_rows * n_img * (codebook + 1) * 4
    est.phases.append(("rollout: one sampler call (no grad)", rollout,
                       f"{model_rows} model rows, {rollout_rows} canvases"))  # fmt: skip
    old_ref = ctx.old_ref * (fwd_row + 2 * n_img * codebook * 4)
    est.phases.append(("old/ref log-probs (no grad, one forward)", old_ref, f"{ctx.old_ref} rows ({ctx.context})"))
    return est


# ---------------------------------------------------------------------------------------------------------------
# Paths and options


def classify_path(value: str, kind: str = "any") -> tuple[str, bool]:
    """(status, ok) of a path-or-hub-id string. kind "file" / "dir" narrows what a local path must be."""
    p = Path(value)
    if p.exists():
        if kind == "file" and not p.is_file():
            return "not a file", False
        if kind == "dir" and not p.is_dir():
            return "not a directory", False
        return ("local dir" if p.is_dir() else "local file"), True
    if kind != "file" and looks_like_hub_id(value):
        return "hub id (cache: see weights)", True
    return "MISSING", False


def check_inputs(cfg: TrainRun) -> tuple[list[tuple[str, str, str]], list[str], dict[str, Any]]:
    """Rows (what, value, status) for every path / endpoint, problems found, and the resolved backbone options."""
    from maskgrpo.backbones import BACKBONES
    from maskgrpo.rewards.base import REWARDS

    rows: list[tuple[str, str, str]] = []
    problems: list[str] = []

    def path_row(what: str, value: str, kind: str = "any") -> None:
        status, ok = classify_path(value, kind)
        rows.append((what, value, status))
        if not ok:
            problems.append(f"{what}: {value} ({status})")

    loader = BACKBONES.get(cfg.backbone.name)
    from maskgrpo.backbones.base import loader_defaults

    defaults = loader_defaults(loader)
    unknown = sorted(set(cfg.backbone.options) - set(defaults))
    if unknown:
        problems.append(f"backbone.options: unknown option(s) {unknown} for backbone {cfg.backbone.name!r}; "
                        f"valid: {sorted(defaults)}")  # fmt: skip
    options = {**defaults, **cfg.backbone.options}
    path_row("backbone.path", cfg.backbone.path, "dir")
    local = Path(cfg.backbone.path)
    if local.is_dir():
        if (local / "config.json").is_file():
            shards = [n for n in ("model.safetensors.index.json", "model.safetensors") if (local / n).is_file()]
            if not shards:
                problems.append(f"backbone.path: {local} has config.json but no model.safetensors(.index.json)")
        elif not (local / "model" / "config.json").is_file():
            problems.append(f"backbone.path: {local} has no config.json (nor model/config.json)")
    for key in ("vq_path", "tokenizer_path"):
        if options.get(key) is not None:
            path_row(f"backbone.options.{key}", str(options[key]))
    if options.get("vq_subfolder") and options.get("vq_path") is None and local.is_dir():  # Lumina: path/vqvae
        vq_cfg = local / str(options["vq_subfolder"]) / "config.json"
        rows.append(("backbone VQ (vq_path null)", str(vq_cfg.parent), "local dir" if vq_cfg.is_file() else "MISSING"))
        if not vq_cfg.is_file():
            problems.append(f"backbone.path: {local} has no {options['vq_subfolder']}/config.json (the VQ); "
                            "set backbone.options.vq_path (VQ_PATH)")  # fmt: skip

    if cfg.prompts.source == "backbone":
        rows.append(("prompts.source", "backbone", "the backbone's built-in prompts"))
    else:
        status, ok = classify_path(cfg.prompts.source, "file")
        if ok:
            from maskgrpo.prompts import load_prompt_metadata

            try:
                status = f"local file, {len(load_prompt_metadata(cfg.prompts.source))} prompt(s)"
            except (ValueError, RunError) as e:  # a RunError names the file and line
                status, ok = f"unreadable: {e}", False
        rows.append(("prompts.source", cfg.prompts.source, status))
        if not ok:
            problems.append(f"prompts.source: {cfg.prompts.source} ({status})")
    path_row("deepspeed.config", cfg.deepspeed.config, "file")
    geneval = cfg.eval.geneval if cfg.eval is not None else None
    if geneval is not None:  # evaluation during training through the GenEval server (maskgrpo/geneval_eval.py)
        status, ok = classify_path(geneval.metadata, "file") if geneval.metadata else ("not set", False)
        if ok:
            from maskgrpo.geneval_eval import pick_per_tag
            from maskgrpo.prompts import read_prompt_file

            try:
                picked = pick_per_tag(read_prompt_file(geneval.metadata), geneval.per_tag).prompts
                status = (f"local file; {len(picked)} prompt(s) x {cfg.eval.samples_per_prompt} image(s) before, "
                          f"after and every {cfg.eval.every or '-'} round(s)")  # fmt: skip
            except (ValueError, RunError) as e:  # a RunError names the file and line
                status, ok = f"unreadable: {e}", False
        rows.append(("eval.geneval.metadata", geneval.metadata, status))
        if not ok:
            problems.append(f"eval.geneval.metadata: {geneval.metadata or '(empty)'} ({status})")
        url = geneval.kwargs.get("url", "http://127.0.0.1:18085/")
        rows.append(("eval.geneval.url", str(url), "endpoint, not contacted"))

    for name, entry in cfg.rewards.items():
        reg = entry.entry or name
        if reg not in REWARDS:
            problems.append(f"rewards.{name}: unknown reward {reg!r}; valid: {REWARDS.names()}")
            continue
        params = inspect.signature(REWARDS.get(reg)).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        bad = sorted(set(entry.kwargs) - set(params) - {"device", "context"})
        if bad and not takes_any:
            problems.append(f"rewards.{name}.kwargs: unknown option(s) {bad}; valid: "
                            f"{sorted(k for k in params if k not in ('device', 'context'))}")  # fmt: skip
        for key, value in entry.kwargs.items():
            if key == "url":
                rows.append((f"rewards.{name}.url", str(value), "endpoint, not contacted"))
            elif key.endswith("path"):
                path_row(f"rewards.{name}.{key}", str(value))
    return rows, problems, options


# ---------------------------------------------------------------------------------------------------------------
# Report


def _gb(x: float) -> str:
    return f"{x / GB:6.2f} GB"


def render(cfg: TrainRun, plan: BatchPlan, rows: list, est: MemoryEstimate | None, size: ModelSize,
           gpu_mem_gb: float) -> str:  # fmt: skip
    w = 40
    line = "-" * 100
    out = [line, f"launch plan: {cfg.backbone.name} backbone, {plan.gpus} GPUs ({plan.nodes} node(s) x "
                 f"{plan.gpus_per_node}), ZeRO-{plan.zero_stage}, output {cfg.run.output_dir}", line]  # fmt: skip
    items = [
        ("nodes", plan.nodes, "NUM_NODES"),
        ("GPUs per node", plan.gpus_per_node, "NUM_GPUS (training ranks on each node)"),
        ("GPUs (ranks)", plan.gpus, f"nodes x GPUs per node = {plan.nodes} x {plan.gpus_per_node}"),
        ("ZeRO stage", plan.zero_stage, cfg.deepspeed.config),
        ("precision", cfg.deepspeed.precision, f"weights {cfg.backbone.dtype}"),
        ("prompts per round", plan.prompts_per_round, "P"),
        ("prompts per GPU", plan.prompts_per_gpu, f"P / GPUs = {plan.prompts_per_round} / {plan.gpus}"),
        ("rollouts per prompt", plan.group_size, "G"),
        ("rollouts per round", plan.rollouts_per_round, f"P x G = {plan.prompts_per_round} x {plan.group_size}"),
        ("rollouts per GPU", plan.rollouts_per_gpu, f"{plan.prompts_per_gpu} x {plan.group_size}"),
        ("prompts per node", plan.prompts_per_node, f"{plan.prompts_per_gpu} x {plan.gpus_per_node} GPUs"),
        ("rollouts per node", plan.prompts_per_node * plan.group_size,
         f"{plan.prompts_per_node} x {plan.group_size}"),
        ("global batch (rollouts per step)", plan.rollouts_per_round,
         "every optimizer step averages the gradients of all ranks' rollouts"),
        ("micro-batch (rollouts)", plan.micro_batch_rollouts,
         f"micro_batch_prompts x G = {cfg.rl.micro_batch_prompts} x {plan.group_size}"),
        ("gradient accumulation steps", plan.grad_accum,
         f"prompts per GPU / micro_batch_prompts = {plan.prompts_per_gpu} / {cfg.rl.micro_batch_prompts}"),
        ("inner updates", plan.inner_updates, "mu"),
        ("optimizer steps per round", plan.optimizer_steps_per_round, "one per inner update"),
        ("rollout sampler calls per GPU", plan.sampler_calls_per_gpu,
         f"{plan.num_steps} steps each, <= {plan.rollout_batch_size} rows"
         + (" (+ as many uncond rows, CFG)" if plan.cfg else "")),
        ("rounds", cfg.rl.rounds, f"{cfg.rl.rounds * plan.optimizer_steps_per_round} optimizer steps in total"),
        ("prompt counts that divide", plan.gpus * cfg.rl.micro_batch_prompts,
         "prompts.per_round: " + prompt_counts(plan.gpus, cfg.rl.micro_batch_prompts)),
    ]  # fmt: skip
    out += [f"{k:<{w}}{v!s:>8}   {note}" for k, v, note in items]
    out += [line, "inputs"]
    out += [f"  {what:<{w - 2}}{status:<28} {value}" for what, value, status in rows]
    out += [line, f"memory per GPU (estimate, docs/models.md 6; sizes from {size.source}: "
                  f"{size.params:,} params)"]  # fmt: skip
    if est is None:
        out.append("  (no estimate: the backbone loader has no text_window / grid or height / width options)")
    else:
        out += [f"  {name:<{w + 18}}{_gb(b)}   {note}" for name, b, note in est.states]
        out.append(f"  {'= resident':<{w + 18}}{_gb(est.resident)}")
        out += [f"  {'+ ' + name:<{w + 18}}{_gb(b)}   {note}" for name, b, note in est.phases]
        verdict = "fits" if est.peak <= gpu_mem_gb * GB else "DOES NOT FIT"
        out.append(f"  {'= peak (resident + largest phase)':<{w + 18}}{_gb(est.peak)}   {verdict} in "
                   f"{gpu_mem_gb:g} GB (--gpu-mem-gb); allocator overhead and fragmentation not included")  # fmt: skip
    out.append(line)
    return "\n".join(out)


def render_methods(by_method: list[tuple[ContextRows, MemoryEstimate]]) -> str:
    """Per method: rows of its largest forward (from its context builder) and their activation memory per GPU."""
    out = ["activation memory of the largest forward per GPU, by method (rows counted on its context builder)"]
    for r, est in by_method:
        update, old_ref = est.phases[0][1], est.phases[2][1]
        out.append(f"  {r.method + ' (' + r.context + ')':<34}update {r.update:>4} rows {_gb(update)}   "
                   f"old/ref {r.old_ref:>4} rows {_gb(old_ref)}")  # fmt: skip
    return "\n".join(out + ["-" * 100])


def weights_section(cfg: TrainRun) -> tuple[str, list[str]]:
    """Which hub repositories the config loads (judges included) and whether the local cache holds them
    (no network: ``maskgrpo.models.fetch``); the hub ids it lacks."""
    from huggingface_hub.constants import HF_HUB_CACHE

    from maskgrpo.models.fetch import cached_snapshot, config_sources
    from maskgrpo.models.loading import fetch_hint

    lines, missing = [f"weights (Hugging Face cache {HF_HUB_CACHE}; the launch reads it offline)"], []
    for src in config_sources(cfg):
        if src.repo_id is None:
            lines.append(f"  {'local' if src.local else '-':<12}{src.what:<40}{src.local or src.note}")
            continue
        snap = cached_snapshot(src.repo_id, src.patterns)
        if snap is None:
            missing.append(src.repo_id)
        lines.append(f"  {'cached' if snap else 'NOT CACHED':<12}{src.what:<40}{src.repo_id}"
                     + (f" (rev {snap.name[:12]})" if snap else ""))  # fmt: skip
    if missing:
        lines.append(f"  {len(missing)} not in the cache: fetch them before launching, on a machine with network: "
                     f"`{fetch_hint()}`")  # fmt: skip
    return "\n".join(lines + ["-" * 100]), missing


def time_section(cfg: TrainRun, plan: BatchPlan, size: ModelSize, methods: list[ContextRows], seq_len: int,
                 n_img: int, codebook: int, checkpointing: bool, gpu_type: str, mfu: float,
                 gpu_check: Path) -> str:  # fmt: skip
    """Per method: rounds, images, model rows and the time of a round and of the run (module maskgrpo.launch_time):
    measured by the GPU check when it ran at this shape on ``gpu_type``, else a FLOP estimate, labelled."""
    from maskgrpo.launch_time import (
        GPU_PEAK_TFLOPS,
        flop_round_seconds,
        forward_flops,
        load_gpu_check,
        measured_round_seconds,
        round_work,
        train_multiplier,
        workload_of,
    )

    rep = load_gpu_check(gpu_check)
    workload = workload_of(cfg, cfg.backbone.name, seq_len, plan.prompts_per_gpu)
    fwd = forward_flops(size, seq_len, n_img, codebook)
    mult = train_multiplier(cfg.lora.enabled, checkpointing)
    rows = []
    for r in methods:
        work = round_work(cfg, plan.prompts_per_gpu, n_img, seq_len, r.method)
        seconds, why = (None, f"no {gpu_check}") if rep is None else measured_round_seconds(
            rep, workload, work.method, gpu_type, plan.gpus)  # fmt: skip
        if seconds is None:
            seconds = flop_round_seconds(work, fwd, mult, GPU_PEAK_TFLOPS[gpu_type], mfu)
            why = (
                f"FLOP estimate, not a measurement ({why}): {fwd / 1e12:.1f} TFLOP per {seq_len}-token row "
                f"forward, {mult}x for a trained row (forward, input gradients"
                f"{', weight gradients' if not cfg.lora.enabled else ''}"
                f"{', block recompute' if checkpointing else ''}), at {mfu:.0%} of {gpu_type}'s "
                f"{GPU_PEAK_TFLOPS[gpu_type]:g} TFLOP/s bf16; decode and gradient exchange not included"
            )
        rows.append((work, seconds, why))
    from maskgrpo.launch_time import render_time

    return render_time(rows, cfg.rl.rounds, plan.rollouts_per_round, plan.gpus, gpu_type)


def main(argv: list[str] | None = None) -> int:
    from maskgrpo.launch_time import DEFAULT_MFU, GPU_CHECK_JSON, GPU_PEAK_TFLOPS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="TrainRun YAML (configs/mmada_maskgrpo.yaml, ...)")
    ap.add_argument("--num-gpus", type=int, default=8, help="training ranks per node (NUM_GPUS)")
    ap.add_argument("--num-nodes", type=int, default=1, help="nodes of the launch (NUM_NODES)")
    ap.add_argument("--gpu-mem-gb", type=float, default=80.0, help="memory of one GPU for the fit verdict")
    ap.add_argument("--gpu-type", default="H100", choices=sorted(GPU_PEAK_TFLOPS), help="GPU for the time estimate")
    ap.add_argument("--mfu", type=float, default=DEFAULT_MFU, help="fraction of peak assumed by the FLOP estimate")
    ap.add_argument("--gpu-check", type=Path, default=GPU_CHECK_JSON, help="the GPU check's measured JSON")
    ap.add_argument("--start-rewards", action="store_true", help="the launch starts the reward servers")
    ap.add_argument("--reward-gpus", default="", help="GPUs of the reward servers (REWARD_GPUS)")
    ap.add_argument("--train-gpus", default="", help="training GPU slots (TRAIN_GPUS; default 0..NUM_GPUS-1)")
    ap.add_argument("--python", action="append", default=[], metavar="REWARD=PATH", help="judge interpreters")
    ap.add_argument("overrides", nargs="*", help="dotted overrides, exactly as passed to maskgrpo.train")
    args = ap.parse_intermixed_args(argv)  # overrides may come before or after the flags
    if args.num_gpus < 1 or args.num_nodes < 1 or not 0 < args.mfu <= 1:
        print(f"error: --num-gpus and --num-nodes must be >= 1 and --mfu in (0, 1], got {args.num_gpus}, "
              f"{args.num_nodes} and {args.mfu}", file=sys.stderr)  # fmt: skip
        return 2
    try:
        cfg = load_config(TrainRun, args.config, args.overrides)
        plan = batch_plan(cfg, args.num_gpus, args.num_nodes)
        rows, problems, options = check_inputs(cfg)
        sizes = row_sizes(options)
    except (ConfigError, ValueError, KeyError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    size = model_size(cfg.backbone.path, default_size(cfg.backbone.name))
    est, by_method = None, []
    if sizes is not None:
        seq_len, n_img, codebook = sizes
        checkpointing = bool(options.get("gradient_checkpointing", False))
        try:  # this run's context, and the baseline's on the same config when the run is a patch (HT-GRPO)
            per_gpu = plan.prompts_per_gpu
            methods = [context_rows(cfg, n_img, per_gpu)] + (
                [context_rows(cfg, n_img, per_gpu, "maskgrpo")] if cfg.patch else [])  # fmt: skip
        except (ConfigError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        by_method = [(r, memory_estimate(cfg, plan, size, None, None, codebook, checkpointing, seq_len=seq_len,
                                         num_image_tokens=n_img, rows=r)) for r in methods]  # fmt: skip
        est = by_method[0][1]
    print(render(cfg, plan, rows, est, size, args.gpu_mem_gb))
    if by_method:
        print(render_methods(by_method))
        print(time_section(cfg, plan, size, [r for r, _ in by_method], seq_len, n_img, codebook, checkpointing,
                           args.gpu_type, args.mfu, args.gpu_check))  # fmt: skip
    weights, _ = weights_section(cfg)
    print(weights)
    from maskgrpo.reward_launch import named_values, render_placement

    train_gpus = ([int(g) for g in args.train_gpus.split(",")] if args.train_gpus
                  else list(range(plan.gpus_per_node)))  # fmt: skip
    peak = max(e.peak for _, e in by_method) if by_method else None
    try:
        pythons = named_values(args.python, "--python")
        placement, reward_problems = render_placement(cfg, args.start_rewards, args.reward_gpus, train_gpus, peak,
                                                      args.gpu_mem_gb, pythons)  # fmt: skip
    except (ValueError, TypeError, RunError) as e:  # a reward entry whose client cannot be built
        placement, reward_problems = f"reward servers: cannot list them ({e})", [f"rewards: {e}"]
    print(placement)
    problems += reward_problems
    if problems:
        print("problems:\n" + "\n".join(f"  - {p}" for p in problems), file=sys.stderr)
        return 1
    print("dry run OK: config valid, inputs found; no weights were loaded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
