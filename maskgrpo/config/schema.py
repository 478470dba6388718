"""Config sections shared by the entry points (toy pretraining, RL training, evaluation).

Each field has a docstring under it; ``python -m maskgrpo.config SECTION`` prints them. Symbols in brackets refer to
docs/method.md's notation table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from maskgrpo.catalog import BACKBONES, SAMPLERS  # names only: no runtime module is imported
from maskgrpo.config.loader import ConfigError, FieldError, RawSection, one_of, rng


def _sampler_names() -> list[str]:
    return SAMPLERS.names()


def _backbone_names() -> list[str]:
    return BACKBONES.names()


@dataclass(frozen=True)
class RunConfig:
    output_dir: str | None = None
    """Run directory (resolved config, metrics.jsonl, checkpoints, images); null = runs/<config file name>."""
    seed: int = field(default=0, metadata=rng(ge=0))
    """Seed of every generator of the run (data order, rollouts, masks)."""
    wandb_mode: Literal["offline", "online", "disabled"] = "disabled"
    """wandb mode; 'offline' writes a local run that `wandb sync` can upload later."""
    wandb_project: str = "htgrpo"
    """wandb project name (used when wandb_mode is not 'disabled')."""


@dataclass(frozen=True)
class ShapesWorldConfig:
    canvas: int = field(default=32, metadata=rng(ge=16))
    """Canvas side in pixels (square RGB images)."""
    patch: int = field(default=4, metadata=rng(ge=1))
    """Image-token patch side in pixels; the token grid is canvas/patch per side."""
    codebook_size: int = field(default=256, metadata=rng(ge=16, le=4096))
    """Patch codes K learned by k-means (the image vocabulary)."""
    codebook_fit_images: int = field(default=400, metadata=rng(ge=16))
    """Rendered training images whose patches fit the codebook (plus one swatch per shape, colour and size)."""
    num_eval_prompts: int = field(default=36, metadata=rng(ge=6))
    """Held-out ShapesEval prompts, dealt round-robin over the six tags (a tag gives at most half its captions:
    the default world has 240 captions, so at most 119), disjoint from the training prompts."""
    seed: int = field(default=0, metadata=rng(ge=0))
    """Seed of the prompt split and the codebook fit (the world itself is fixed by the other fields)."""
    shapes: tuple[str, ...] | None = None
    """Object classes in caption order (names in maskgrpo.toy.world.SHAPE_MASKS, e.g. [circle, square, triangle,
    diamond]); null = circle, square, triangle. world.json holds it only when set, so older bases stay as they were."""

    def __post_init__(self) -> None:
        if self.canvas % self.patch:
            raise ValueError(f"canvas ({self.canvas}) must be a multiple of patch ({self.patch})")


@dataclass(frozen=True)
class ToyModelConfig:
    n_layers: int = field(default=4, metadata=rng(ge=1))
    """Transformer blocks of the toy LLaDA."""
    d_model: int = field(default=128, metadata=rng(ge=8))
    """Hidden width."""
    n_heads: int = field(default=4, metadata=rng(ge=1))
    """Attention heads (head dim = d_model / n_heads, must be even for RoPE)."""
    mlp_hidden_size: int = field(default=384, metadata=rng(ge=8))
    """SwiGLU hidden width."""

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(f"d_model {self.d_model} / n_heads {self.n_heads} must give an even head dim")


@dataclass(frozen=True)
class PretrainConfig:
    steps: int = field(default=1500, metadata=rng(ge=1))
    """Optimizer steps of masked-token pretraining."""
    batch_size: int = field(default=32, metadata=rng(ge=1))
    """Images per step (rendered on the fly from training captions)."""
    lr: float = field(default=1e-3, metadata=rng(gt=0.0))
    """Peak AdamW learning rate (linear warmup, cosine decay to 10%)."""
    warmup_steps: int = field(default=100, metadata=rng(ge=0))
    """Linear warmup steps."""
    weight_decay: float = field(default=0.01, metadata=rng(ge=0.0))
    """AdamW weight decay."""
    caption_dropout: float = field(default=0.1, metadata=rng(ge=0.0, lt=1.0))
    """Probability of training a row unconditionally (empty prompt) so CFG works (MMaDA: 0.1)."""
    grad_clip: float = field(default=1.0, metadata=rng(gt=0.0))
    """Gradient-norm clip."""
    log_every: int = field(default=50, metadata=rng(ge=1))
    """Steps between loss prints on the progress bar."""


@dataclass(frozen=True)
class SamplerConfig:
    name: str = field(default="emerge", metadata=one_of("sampler", _sampler_names))
    """Registered sampler: 'emerge' (MaskGRPO ancestral, rollouts) or 'maskgit' (MMaDA confidence, eval)."""
    num_steps: int = field(default=12, metadata=rng(ge=1))
    """Denoising steps T."""
    cfg_scale: float = field(default=3.0, metadata=rng(ge=0.0))
    """Classifier-free guidance w in (1+w)*cond - w*uncond; 0 disables the unconditional row."""
    options: dict[str, Any] = field(default_factory=dict)
    """Extra sampler arguments (e.g. maskgit: tau0, tau_schedule; any: probs_dtype)."""

    def __post_init__(self) -> None:
        if self.name not in _sampler_names():  # built in code (eval flags); the loader checks YAML via one_of
            raise FieldError("name", f"{self.name!r} is not a registered sampler; valid names: {_sampler_names()}")

    def build(self) -> Any:
        from maskgrpo.sampling import build_sampler

        return build_sampler(self.name, num_steps=self.num_steps, cfg_scale=self.cfg_scale, **self.options)


@dataclass(frozen=True)
class ShapesEvalConfig:
    samples_per_prompt: int = field(default=4, metadata=rng(ge=1))
    """Images per held-out prompt (GenEval uses 4)."""
    batch_size: int = field(default=64, metadata=rng(ge=1))
    """Images generated per sampler call."""
    sampler: SamplerConfig = field(default_factory=lambda: SamplerConfig(name="maskgit", num_steps=15, cfg_scale=3.5))
    """Evaluation sampler (MMaDA README: MaskGIT, 15 steps, w = 3.5)."""
    seed: int = field(default=1234, metadata=rng(ge=0))
    """Seed of evaluation sampling (fixed so base and trained models see the same noise)."""
    train_prompts_per_tag: int = field(default=0, metadata=rng(ge=0))
    """Also score this many training captions per tag (a seeded pick; ``<name>_train.json``): whether RL learned
    what it was trained on, next to whether it generalises to the held-out captions. 0 = held-out only."""


@dataclass(frozen=True)
class GenEvalServerConfig:
    """A GenEval-style evaluation through the detector reward server (maskgrpo/geneval_eval.py), for backbones
    without built-in held-out captions (MMaDA, Lumina-DiMOO). Off unless ``eval.geneval`` is set."""

    metadata: str = ""
    """GenEval's prompt metadata JSONL (``prompts/evaluation_metadata.jsonl`` of a GenEval checkout: one
    ``{"tag", "include", "prompt", ...}`` object per line)."""
    per_tag: int = field(default=8, metadata=rng(ge=1))
    """The first ``per_tag`` prompts of each tag, in file order (GenEval's 6 tags: 48 prompts at 8)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Options of the ``geneval`` reward client (url, protocol, timeout, max_outage_s, ...; docs/rewards.md); the
    defaults reach the public server at ``http://127.0.0.1:18085/``."""


@dataclass(frozen=True)
class TrainEvalConfig(ShapesEvalConfig):
    """ShapesEval of an RL run: before training, every ``every`` rounds, and after."""

    every: int = field(default=0, metadata=rng(ge=0))
    """Rounds between ShapesEvals during training (0 = only before and after). Each one goes into that round's
    metrics.jsonl line under ``eval/`` (with the ``budget/`` spent so far) and into evals/round_<N>*.json; it uses
    its own fixed-seed generator, so a run's training numbers are the same with or without it."""
    rounds: tuple[int, ...] = ()
    """Further rounds to evaluate at (besides every ``every``-th), e.g. the rounds where a cheaper method has spent
    half and all of another method's compute (eval.toy_compare's budget plan)."""
    heldout: bool = True
    """Evaluate the held-out captions (false: only the ``train_prompts_per_tag`` and ``val`` picks, for runs that
    choose settings on the validation captions and must never sample a held-out one: eval/select_on_val.py)."""
    val: bool = False
    """Also evaluate the base's validation captions (world.json ``val_prompts``, when it has them): the split on
    which RL settings are chosen, disjoint from the held-out captions (``_val`` files, ``eval/val/`` keys)."""
    geneval: GenEvalServerConfig | None = None
    """Also evaluate a GenEval prompt subset through the detector reward server (``_geneval`` files,
    ``eval/geneval/`` keys): the 8B backbones' evaluation during training. Off (null) by default."""


@dataclass(frozen=True)
class PromptSplitConfig:
    """How the world's captions are split (maskgrpo.toy.world.split_prompts) and drawn for pretraining; the defaults
    give what every base made before these keys existed had. The split is saved in world.json, so loading a base
    never reads them."""

    min_eval_per_tag: int = field(default=0, metadata=rng(ge=0))
    """Held-out captions every tag gets before the round-robin (at most half of the tag's captions)."""
    covered: bool = False
    """Hold a caption out only if its classes, count, colours and relation all stay in the tag's training captions
    (a held-out caption is then a new combination of trained parts, not an unseen part)."""
    tag_balanced: bool = False
    """Pretraining draws a tag uniformly, then one of its captions (default: a caption uniformly, so a world's
    color_attr captions, most of them, fill most batches). Balanced like the RL prompts' ``order: tag``."""
    val_per_tag: int = field(default=0, metadata=rng(ge=0))
    """Training captions per tag set aside as a validation split (world.json ``val_prompts``): pretrained on, not in
    ``train_prompts`` (so not RL prompts), disjoint from the held-out captions; for choosing RL settings."""
    pretrain_heldout: bool = False
    """Pretrain on the held-out captions too. They stay out of the RL prompts and the validation split, so they are
    held out from RL only, as GenEval's prompts are for a web-pretrained model: held-out accuracy then measures how
    RL on other captions carries over, not how pretraining generalises to unseen combinations (docs/toy_base.md)."""


@dataclass(frozen=True)
class PretrainCheckpointConfig:
    """Resumable pretraining (``--resume``) and the learning curve; none of it changes the weights of a run."""

    every: int = field(default=500, metadata=rng(ge=0))
    """Steps between saved training states (model, optimizer, every RNG) under <output_dir>/.pretrain_state; the
    state is removed once the base is complete. 0 = none."""
    keep_all: bool = False
    """Also keep every saved state as <output_dir>_states/step_<N>.pt (to make the base of any saved step later:
    copy it to <dir>/.pretrain_state/state.pt and run with checkpoint.end_step=N --resume)."""
    eval_every: int = field(default=0, metadata=rng(ge=0))
    """Steps between ShapesEvals of the model being trained (held-out and the eval.train_prompts_per_tag pick) into
    <output_dir>/pretrain_curve.jsonl; 0 = none."""
    eval_samples: int = field(default=8, metadata=rng(ge=1))
    """Images per caption in those curve evaluations."""
    end_step: int = field(default=0, metadata=rng(ge=0))
    """Stop after this many steps with the learning-rate schedule of pretrain.steps (the base is the model at that
    step); 0 = pretrain.steps."""


@dataclass(frozen=True)
class ToyPretrainRun:
    """Top level of ``python -m maskgrpo.toy.pretrain``: world + model + pretraining + evaluation of the base."""

    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="cache/toy_base"))
    """Run settings; output_dir is where the toy base (model + tokenizers + world) is saved."""
    world: ShapesWorldConfig = field(default_factory=ShapesWorldConfig)
    """ShapesWorld settings."""
    model: ToyModelConfig = field(default_factory=ToyModelConfig)
    """Toy LLaDA size."""
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    """Masked-token pretraining."""
    eval: ShapesEvalConfig = field(default_factory=ShapesEvalConfig)
    """ShapesEval of the pretrained base."""
    split: PromptSplitConfig = field(default_factory=PromptSplitConfig)
    """Train / held-out / validation caption split."""
    checkpoint: PretrainCheckpointConfig = field(default_factory=PretrainCheckpointConfig)
    """Saved training states, the learning curve, an early end."""

    def __post_init__(self) -> None:
        if self.checkpoint.end_step > self.pretrain.steps:
            raise FieldError("checkpoint.end_step", f"{self.checkpoint.end_step} > pretrain.steps "
                             f"({self.pretrain.steps})")  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# RL training (python -m maskgrpo.train)


@dataclass(frozen=True)
class BackboneConfig:
    name: str = field(default="shapes", metadata=one_of("backbone", _backbone_names))
    """Registered backbone loader: 'shapes' (ShapesWorld toy base), 'mmada', 'lumina'."""
    path: str = "assets/toy_base"
    """Local directory (or hub id, for real backbones) of the base model; the default is the shipped toy base."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Weight dtype of the loaded model (bf16 for 8B runs; fp32 keeps toy runs bit-exact on CPU)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Backbone-specific options (e.g. vq_path, text_window for MMaDA)."""


@dataclass(frozen=True)
class PromptConfig:
    source: str = "backbone"
    """'backbone' = the backbone's own training prompts (ShapesWorld), or a JSONL file of GenEval-style metadata."""
    per_round: int = field(default=8, metadata=rng(ge=1))
    """P: prompts per round over all ranks (must divide by the number of ranks)."""
    order: Literal["uniform", "tag"] = "uniform"
    """'uniform' = each prompt once per epoch; 'tag' = GenEval tags take turns, each with its own shuffled prompts
    (for lists dominated by one tag; ShapesWorld's training captions are 84% color_attr). maskgrpo/prompts.py."""


@dataclass(frozen=True)
class RewardEntry:
    """One entry of ``rewards:``, keyed by the registered reward name (shapes_geneval, clip, hpsv3, ...)."""

    weight: float = 1.0
    """w_f in R = sum_f w_f * scale_f * raw_f."""
    scale: float = 1.0
    """Multiplier applied to the raw score before weighting (e.g. 0.2 for 1-5 scores)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Reward-specific options (url, model_path, timeout...)."""
    allow_nan: bool = False
    """false: a failed / non-finite score stops training with an error naming the reward; true: drop that term."""
    entry: str | None = None
    """Registered reward when the key is only a label (two CLIP models: ``clip_b32: {entry: clip, ...}``)."""


@dataclass(frozen=True)
class RewardSettings:
    max_outage_s: float = field(default=600.0, metadata=rng(gt=0.0))
    """Seconds a reward server may stay unreachable (connection refused or reset, timeouts, HTTP 502/503/504) before
    the run checkpoints and stops; meanwhile every HTTP reward re-sends its request with backoff, logging one line per
    minute (maskgrpo/rewards/client.py). An entry's ``kwargs.max_outage_s`` overrides it for that reward."""


@dataclass(frozen=True)
class OptimConfig:
    lr: float = field(default=3e-6, metadata=rng(gt=0.0))
    """AdamW learning rate [MG configs/rl.yaml: 3e-6]; constant after warmup."""
    warmup_steps: int = field(default=0, metadata=rng(ge=0))
    """Linear warmup over this many optimizer steps (inner updates)."""
    betas: tuple[float, float] = field(default=(0.9, 0.99), metadata=rng(ge=0.0, lt=1.0))
    """AdamW betas [MG]."""
    weight_decay: float = field(default=0.1, metadata=rng(ge=0.0))
    """AdamW weight decay [MG]."""
    grad_clip: float = field(default=0.2, metadata=rng(gt=0.0))
    """Gradient-norm clip [MG: 0.2]."""


@dataclass(frozen=True)
class RLConfig:
    rounds: int = field(default=20, metadata=rng(ge=1))
    """Rounds (rollout batches) to run in total."""
    group_size: int = field(default=9, metadata=rng(ge=2))
    """G: rollouts per prompt [MG scripts: 9]."""
    num_inner_updates: int = field(default=6, metadata=rng(ge=1))
    """mu: optimizer updates per rollout batch [MG: 6 (or 8)]."""
    micro_batch_prompts: int = field(default=1, metadata=rng(ge=1))
    """Prompts per micro-batch; a prompt's G rollouts always stay in one micro-batch on one device."""
    clip_eps: float = field(default=0.2, metadata=rng(gt=0.0, lt=1.0))
    """eps of the clipped surrogate [MG: 0.2]."""
    kl_beta: float = field(default=0.01, metadata=rng(ge=0.0))
    """beta of the k3 KL to the reference policy [MG: 0.01]; 0 drops the reference entirely."""
    aggregation: Literal["token_mean", "seq_mean"] = "token_mean"
    """Loss aggregation: token mean over the micro-batch support set [MG], or mean per rollout then over rollouts."""
    context: str | None = None
    """Registered context builder (how the log-prob context is formed); null = the preset's (MaskGRPO:
    random_remask; patch htgrpo: fully_masked). Set it to override one part alone (ablations)."""
    loss: str | None = None
    """Registered policy loss; null = the preset's (MaskGRPO: grpo; patch htgrpo: ht_staged)."""
    sampler_wrapper: str | None = None
    """Registered wrapper around the rollout sampler; null = the preset's (MaskGRPO: none; patch htgrpo:
    ranked), 'none' = no wrapper."""
    rollout_batch_size: int = field(default=64, metadata=rng(ge=1))
    """Rollout rows per sampler call (memory knob; does not change results)."""


@dataclass(frozen=True)
class RemaskConfig:
    schedule: Literal["increasing", "uniform"] = "increasing"
    """'increasing': ratio_m = min(m_min + (1-m_min) m/mu, 0.999) [MG]; 'uniform': ratio ~ U(m_min, 0.999) per
    update (UniGRPO)."""
    min_mask_rate: float = field(default=0.6, metadata=rng(ge=0.0, lt=1.0))
    """m_min [MG: 0.6 plain t2i script, 0.8 reward-server script]."""
    loss_mask: Literal["current", "upstream_count"] = "current"
    """'current': support = positions masked in this update's context (paper); 'upstream_count': every token weighted
    by how many of the mu masks covered it (upstream quirk, for reproducing published numbers)."""


@dataclass(frozen=True)
class TraceConfig:
    shrink: int = field(default=1, metadata=rng(ge=1))
    """Consecutive sampler steps per trajectory context of the ``trace`` context builder (TraceGRPO, docs/method.md 4):
    one context per group of ``shrink`` steps, T / shrink forwards per rollout per update [Trace: 8 for text;
    1 = one context per commit step, the default for 12-step image rollouts]."""


@dataclass(frozen=True)
class LoraSettings:
    enabled: bool = False
    """LoRA via peft (reference policy = adapter disabled); false = full fine-tuning (frozen reference copy)."""
    r: int = field(default=128, metadata=rng(ge=1))
    """LoRA rank [MG: 128]."""
    alpha: int = field(default=64, metadata=rng(ge=1))
    """LoRA alpha [MG: 64]."""
    dropout: float = field(default=0.0, metadata=rng(ge=0.0, lt=1.0))
    """LoRA dropout [MG: 0.05]. RL runs without dropout: the policy builder sets it to 0 with a note (rollouts and
    old log-probs in eval mode, updates in train mode must be one function; maskgrpo/policy.py)."""
    targets: Literal["all", "maskgrpo_effective"] = "all"
    """'all': the seven block linears; 'maskgrpo_effective': q/k/v/up only (what upstream's Llama names matched)."""


@dataclass(frozen=True)
class DeepSpeedSettings:
    config: str = "configs/deepspeed/zero2.json"
    """DeepSpeed JSON (ZeRO stage, precision); batch sizes and clipping are filled in from this config."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """Training precision (bf16 on GPUs; fp32 keeps CPU runs bit-exact)."""


@dataclass(frozen=True)
class CheckpointSettings:
    every: int = field(default=0, metadata=rng(ge=0))
    """Save every N rounds (0 = only at the end)."""
    keep: int = field(default=2, metadata=rng(ge=1))
    """Newest checkpoints kept on disk."""


@dataclass(frozen=True)
class LogSettings:
    image_every: int = field(default=5, metadata=rng(ge=0))
    """Write a grid of rollout images with prompts and rewards every K rounds (0 = never)."""
    images_in_grid: int = field(default=16, metadata=rng(ge=1))
    """Rollouts shown in each grid."""
    rollout_table: bool = False
    """Write every rollout's prompt, rewards and advantage to rollouts/round_<n>_rank<r>.jsonl."""


@dataclass(frozen=True)
class TrainRun:
    """Top level of ``python -m maskgrpo.train``."""

    run: RunConfig = field(default_factory=RunConfig)
    """Run directory, seed, wandb."""
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    """Base model and its tokenizers."""
    prompts: PromptConfig = field(default_factory=PromptConfig)
    """Training prompts."""
    rollout: SamplerConfig = field(default_factory=SamplerConfig)
    """Rollout sampler [MG: emerge, 12 steps, CFG 3.0]."""
    rewards: dict[str, RewardEntry] = field(default_factory=lambda: {"shapes_geneval": RewardEntry()})
    """Reward functions by registered name, e.g. ``hpsv3: {weight: 1.0, scale: 0.2}``; R = sum weight*scale*raw."""
    reward: RewardSettings = field(default_factory=RewardSettings)
    """Settings shared by every reward (how long a reward server may be down)."""
    rl: RLConfig = field(default_factory=RLConfig)
    """GRPO settings."""
    remask: RemaskConfig = field(default_factory=RemaskConfig)
    """Random-remask context (baseline)."""
    trace: TraceConfig = field(default_factory=TraceConfig)
    """Trajectory-recording context ``trace`` (TraceGRPO baseline, docs/method.md 4)."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimizer."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    """LoRA or full fine-tuning."""
    deepspeed: DeepSpeedSettings = field(default_factory=DeepSpeedSettings)
    """DeepSpeed engine."""
    checkpoint: CheckpointSettings = field(default_factory=CheckpointSettings)
    """Checkpoints and resume."""
    log: LogSettings = field(default_factory=LogSettings)
    """Logging."""
    eval: TrainEvalConfig | None = None
    """Held-out ShapesEval before, during (``eval.every``) and after training (ShapesWorld only; null skips)."""
    patch: str | None = None
    """Preset of components: null = MaskGRPO; 'htgrpo' = HT-GRPO (imports the htgrpo_patch package only then)."""
    patch_options: RawSection = field(default_factory=RawSection)
    """Options of the selected patch, typed and checked by the patch (htgrpo: see htgrpo_patch/config.py)."""

    def __post_init__(self) -> None:
        if self.prompts.per_round % self.rl.micro_batch_prompts:
            raise FieldError(
                "rl.micro_batch_prompts",
                f"{self.rl.micro_batch_prompts} does not divide "
                f"prompts.per_round={self.prompts.per_round} (micro-batches hold whole prompt groups)",
            )


def check_world_size(cfg: TrainRun, world: int) -> None:
    """The checks that need the number of ranks: P divides by it, and P / ranks by ``rl.micro_batch_prompts``."""
    p, mb = cfg.prompts.per_round, cfg.rl.micro_batch_prompts
    if p % world:
        raise ConfigError(f"prompts.per_round={p} must divide by the {world} ranks")
    if (p // world) % mb:
        raise ConfigError(
            f"rl.micro_batch_prompts={mb} must divide the prompts per rank "
            f"(prompts.per_round={p} / {world} ranks = {p // world})"
        )
