"""Pretrain the ShapesWorld toy base: ``python -m maskgrpo.toy.pretrain [--config FILE] [--resume] [key=value ...]``.

MMaDA's masked-token objective (models.md 2.4): t ~ U(0, 1), n = max(1, round(N * cos(pi t / 2))) random image slots
masked, cross-entropy over the full vocabulary at those slots, no 1/t weight; 10% of rows are trained with the empty
prompt so classifier-free guidance works. Training images are rendered on the fly from training captions, so the
base never sees a held-out caption. Saves model + both tokenizers + the world (see maskgrpo.toy.backbone), then
evaluates the base on held-out ShapesEval and writes ``base_eval.json`` / ``base_eval.md`` next to it, and last
``manifest.json``: the recipe (config, commit, threads, torch version, seconds), the ShapesEval numbers and the
SHA-256 of every file, checked whenever the base is loaded (maskgrpo.toy.base_manifest).

Resumable: every ``checkpoint.every`` steps the training state (model, optimizer, the numpy generator that renders
and picks captions, the torch generator that masks, torch's global generator, step, loss EMA, seconds) is written
atomically to ``<output_dir>/.pretrain_state/state.pt``; ``--resume`` continues from it and gives the weights an
uninterrupted run gives, bit for bit. ``--stop-after N`` saves the state after step N and exits (a planned
interruption). ``checkpoint.eval_every`` appends a ShapesEval of the model being trained to ``pretrain_curve.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from maskgrpo.atomic import write_atomic
from maskgrpo.config import dump_config, load_config, to_dict
from maskgrpo.config.schema import ShapesEvalConfig, ToyPretrainRun
from maskgrpo.errors import RunError, add_traceback_flag, one_line_errors
from maskgrpo.models import LLaDAConfig, LLaDAModelLM
from maskgrpo.scoring.geneval_rules import GENEVAL_TAGS
from maskgrpo.toy.backbone import ShapesBackbone
from maskgrpo.toy.base_manifest import eval_numbers, git_commit, recipe_info, write_manifest
from maskgrpo.toy.evaluate import eval_prompt_sets, evaluate_shapes, write_eval
from maskgrpo.toy.image_tokenizer import PatchTokenizer
from maskgrpo.toy.text_tokenizer import WordTokenizer, shapes_layout
from maskgrpo.toy.world import WorldSpec, render, spec_for, split_prompts, tokenizer_fit_images, validation_pick

STATE_DIR = ".pretrain_state"
"""Training states live here inside the output folder until the base is complete (then the folder is removed)."""
STATE_FILE = "state.pt"
CURVE_FILE = "pretrain_curve.jsonl"
"""One JSON line per ``checkpoint.eval_every`` ShapesEval: step, seconds, held-out and training-caption tags."""


def kept_states_dir(out: Path) -> Path:
    """Where ``checkpoint.keep_all`` keeps every saved state: ``<output_dir>_states/`` beside the base (outside it,
    so neither the manifest nor the shipped folder holds them)."""
    return out.parent / f"{out.name}_states"


RESUME_KEYS = ("world", "model", "pretrain", "split")
"""Config sections a resumed run must share with the saved state (plus run.seed); eval and checkpoint may differ."""


def lr_at(step: int, cfg: ToyPretrainRun) -> float:
    """1) linear warmup to lr; 2) cosine decay to 10% of lr at the last step."""
    p = cfg.pretrain
    if step < p.warmup_steps:
        return p.lr * (step + 1) / p.warmup_steps
    u = (step - p.warmup_steps) / max(1, p.steps - p.warmup_steps)
    return p.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * u)))


def mask_for_training(codes: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(B, N) bool: per row, n = max(1, round(N cos(pi t / 2))) slots masked, t ~ U(0, 1) (MMaDA forward_process)."""
    b, n = codes.shape
    t = torch.rand(b, generator=generator)
    n_mask = torch.clamp(torch.round(n * torch.cos(math.pi * t / 2)), min=1).long()  # (B,)
    order = torch.rand(b, n, generator=generator).argsort(dim=1).argsort(dim=1)  # (B, N) random rank per slot
    return order < n_mask[:, None]


def split_captions(cfg: ToyPretrainRun, spec: WorldSpec) -> tuple[list[dict], list[dict], list[dict]]:
    """(training, held-out, validation) captions. Validation is a seeded pick from the training captions
    (``split.val_per_tag`` per tag, empty by default); the RL prompts are the training captions without it."""
    s = cfg.split
    train, held_out = split_prompts(spec, cfg.world.seed, cfg.world.num_eval_prompts, s.min_eval_per_tag, s.covered)
    val = validation_pick(train, s.val_per_tag, cfg.world.seed + 1) if s.val_per_tag else []
    return train, held_out, val


def pretraining_pool(cfg: ToyPretrainRun, train: list[dict], held_out: list[dict]) -> list[dict]:
    """The captions pretraining draws from: the training captions (RL prompts plus validation), and with
    ``split.pretrain_heldout`` the held-out ones too."""
    return train + held_out if cfg.split.pretrain_heldout else train


def build_base(cfg: ToyPretrainRun) -> ShapesBackbone:
    """World, prompt split, tokenizers and a freshly initialised toy LLaDA (deterministic from the seeds).
    ``train_prompts`` excludes the validation captions (see :func:`split_captions`)."""
    spec = spec_for(cfg.world)
    train, held_out, val = split_captions(cfg, spec)
    fit_images = tokenizer_fit_images(spec, train, cfg.world.codebook_fit_images, cfg.world.seed)  # (M, H, W, 3)
    image_tok = PatchTokenizer.fit(fit_images, cfg.world.codebook_size, seed=cfg.world.seed)
    text_tok = WordTokenizer.build([m["prompt"] for m in train + held_out])
    window = max(len(text_tok.encode(m["prompt"])) for m in train + held_out) + 3  # t2i, bos, eos
    layout = shapes_layout(text_tok, image_tok.codebook_size, cfg.world.canvas // cfg.world.patch, window)
    torch.manual_seed(cfg.run.seed)
    m = cfg.model
    vocab = -(-layout.vocab_needed // 8) * 8  # round up to a multiple of 8
    model = LLaDAModelLM(
        LLaDAConfig(d_model=m.d_model, n_layers=m.n_layers, n_heads=m.n_heads, n_kv_heads=m.n_heads,
                    mlp_hidden_size=m.mlp_hidden_size, embedding_size=vocab, vocab_size=vocab,
                    mask_token_id=layout.mask_id, rope_theta=10000.0, max_sequence_length=layout.seq_len)
    )  # fmt: skip
    rl_train = [p for p in train if p not in val]
    return ShapesBackbone(model, text_tok, image_tok, layout, cfg.world, rl_train, held_out, val)


def caption_sampler(pool: list[dict], by_tag: bool) -> Callable[[int, np.random.Generator], list[dict]]:
    """``draw(n, rng)`` -> n pretraining captions: uniform over ``pool``, or with ``by_tag`` a uniform tag first,
    then a uniform caption of it (a world of 427 captions has 354 color_attr and 6 counting ones)."""
    if not by_tag:
        return lambda n, rng: [pool[i] for i in rng.integers(0, len(pool), n)]
    groups = [g for g in ([m for m in pool if m["tag"] == t] for t in GENEVAL_TAGS) if g]

    def draw(n: int, rng: np.random.Generator) -> list[dict]:
        tags, u = rng.integers(0, len(groups), n), rng.random(n)  # (n,), (n,)
        return [groups[t][int(x * len(groups[t]))] for t, x in zip(tags, u)]

    return draw


# ---------------------------------------------------------------------------------------------------------------
# Training state (resume)


def _resume_view(config: dict) -> dict:
    """The part of a resolved config that must match between a saved state and the run resuming it. The
    validation pick (split.val_per_tag) is left out: it changes world.json, never what pretraining sees; so is
    split.pretrain_heldout at its default (false), so a state saved before that key existed still resumes."""
    view = {"run.seed": config["run"]["seed"], **{k: config[k] for k in RESUME_KEYS}}
    view["split"] = {k: v for k, v in view["split"].items()
                     if k != "val_per_tag" and not (k == "pretrain_heldout" and not v)}  # fmt: skip
    return view


def save_state(path: Path, state: dict) -> None:
    """Write a training state whole or not at all, flushed to disk before it replaces the previous one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda f: torch.save(state, f), fsync=True)


def load_state(path: Path, cfg: ToyPretrainRun) -> dict:
    """The saved training state at ``path``; RunError (one line, naming the file) when it is missing, damaged or
    from another recipe."""
    if not path.is_file():
        raise RunError(f"{path}: no saved pretraining state to resume (run without --resume to start over)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a damaged file
        raise RunError(f"{path}: damaged pretraining state ({type(e).__name__}); delete it to start over") from e
    keys = {"step", "model", "optimizer", "numpy_rng", "torch_gen", "torch_global", "ema", "train_s", "config"}
    if not isinstance(state, dict) or not keys <= set(state):
        raise RunError(f"{path}: not a pretraining state (missing {sorted(keys - set(state or {}))})")
    saved, now = _resume_view(state["config"]), _resume_view(to_dict(cfg))
    if saved != now:
        diff = sorted(k for k in now if saved.get(k) != now[k])
        raise RunError(f"{path}: saved by a run with other settings ({', '.join(diff)} differ); resume with the "
                       f"same config or start over in a new output_dir")  # fmt: skip
    return state


# ---------------------------------------------------------------------------------------------------------------
# Learning curve


def curve_eval(base: ShapesBackbone, cfg: ToyPretrainRun, step: int, train_s: float, out: Path) -> dict:
    """ShapesEval of the model at ``step`` on the held-out captions and the eval.train_prompts_per_tag pick, with
    ``checkpoint.eval_samples`` images per caption; appends one line to ``pretrain_curve.jsonl``. Leaves every
    random generator of the training as it found it."""
    global_rng = torch.get_rng_state()
    ecfg = ShapesEvalConfig(samples_per_prompt=cfg.checkpoint.eval_samples, batch_size=cfg.eval.batch_size,
                            sampler=cfg.eval.sampler, seed=cfg.eval.seed,
                            train_prompts_per_tag=cfg.eval.train_prompts_per_tag)  # fmt: skip
    line: dict = {"step": step, "train_s": round(train_s, 1)}
    t0 = time.time()
    for suffix, captions in eval_prompt_sets(base, ecfg).items():
        s = evaluate_shapes(base, captions, ecfg)
        line["held_out" if not suffix else "train"] = {k: round(float(v), 4) for k, v in s.items()
                                                       if isinstance(v, float) and not k.endswith("_sd")}  # fmt: skip
    line["eval_s"] = round(time.time() - t0, 1)
    base.model.train()
    torch.set_rng_state(global_rng)
    with open(out / CURVE_FILE, "a") as f:
        f.write(json.dumps(line) + "\n")
    return line


# ---------------------------------------------------------------------------------------------------------------
# Pretraining


def train_loop(base: ShapesBackbone, cfg: ToyPretrainRun, out: Path, resume: bool,
               stop_after: int | None) -> tuple[int, float, float]:  # fmt: skip
    """Run the optimizer steps (from the saved state with ``resume``); returns (steps done, train seconds, loss EMA).
    With ``stop_after`` it saves the state after that step and returns early."""
    spec, model, layout = base.spec, base.model, base.layout
    pool = pretraining_pool(cfg, *split_captions(cfg, spec)[:2])
    draw = caption_sampler(pool, cfg.split.tag_balanced)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.pretrain.lr, betas=(0.9, 0.99),
                            weight_decay=cfg.pretrain.weight_decay)  # fmt: skip
    rng = np.random.default_rng(cfg.run.seed + 1)
    gen = torch.Generator().manual_seed(cfg.run.seed + 1)
    state_path = out / STATE_DIR / STATE_FILE
    start, ema, train_before = 0, None, 0.0
    if resume:
        st = load_state(state_path, cfg)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        rng.bit_generator.state = st["numpy_rng"]
        gen.set_state(st["torch_gen"])
        torch.set_rng_state(st["torch_global"])
        start, ema, train_before = st["step"], st["ema"], st["train_s"]
        print(f"[pretrain] resumed from {state_path} at step {start}")
    end = cfg.checkpoint.end_step or cfg.pretrain.steps
    positions = layout.image_positions()  # (N,)
    model.train()
    t_train, cpu0 = time.time(), time.process_time()
    every, eval_every = cfg.checkpoint.every, cfg.checkpoint.eval_every
    bar = tqdm(range(start, end), desc="pretrain", mininterval=2.0, initial=start, total=end)
    for step in bar:
        metas = draw(cfg.pretrain.batch_size, rng)
        images = np.stack([render(m, spec, rng) for m in metas])  # (B, H, W, 3)
        codes = base.image_tokenizer.encode(images)  # (B, N)
        masked = mask_for_training(codes, gen)  # (B, N)
        image_ids = torch.where(masked, layout.mask_id, codes + layout.code_offset)
        drop = rng.random(len(metas)) < cfg.pretrain.caption_dropout
        texts = [[] if d else base.text_tokenizer.encode(m["prompt"]) for m, d in zip(metas, drop)]
        batch = layout.build_batch(texts, image_ids)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, logits_at=positions).logits
        targets = codes + layout.code_offset  # (B, N) vocabulary ids
        loss = F.cross_entropy(logits[masked].float(), targets[masked])  # full-vocabulary CE at masked slots
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.pretrain.grad_clip)
        opt.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if step % cfg.pretrain.log_every == 0 or step == end - 1:
            bar.set_postfix(loss=f"{ema:.3f}", lr=f"{lr_at(step, cfg):.1e}")
        done = step + 1
        train_s = train_before + time.time() - t_train
        if eval_every and done % eval_every == 0:
            t_eval = time.time()
            line = curve_eval(base, cfg, done, train_s, out)
            t_train += time.time() - t_eval  # curve evaluations do not count as training time
            tags = " ".join(f"{k} {v:.2f}" for k, v in line["held_out"].items())
            print(f"[pretrain] step {done} held-out: {tags}", flush=True)
        stopping = stop_after is not None and done == stop_after and done < end
        if every and (done % every == 0 or stopping) and done < end:
            state = {"step": done, "model": model.state_dict(), "optimizer": opt.state_dict(),
                     "numpy_rng": rng.bit_generator.state, "torch_gen": gen.get_state(),
                     "torch_global": torch.get_rng_state(), "ema": ema, "train_s": train_s,
                     "config": to_dict(cfg)}  # fmt: skip
            save_state(state_path, state)
            if cfg.checkpoint.keep_all:
                save_state(kept_states_dir(out) / f"step_{done}.pt", state)
            cpu = time.process_time() - cpu0
            print(f"[pretrain] step {done}: loss {ema:.3f}, {train_s / done:.3f} s/step wall since step 0, "
                  f"{cpu / (done - start):.3f} s/step CPU this process; state saved", flush=True)  # fmt: skip
        if stopping:
            if not every:
                raise RunError("--stop-after needs checkpoint.every > 0 (nothing would be saved to resume from)")
            bar.close()
            return done, train_s, ema
    bar.close()
    return end, train_before + time.time() - t_train, ema


def pretrain(cfg: ToyPretrainRun, command: str, resume: bool = False,
             stop_after: int | None = None) -> tuple[ShapesBackbone, dict | None]:  # fmt: skip
    """Pretrain, save, evaluate and write the manifest (``command`` is recorded in it as the recipe). With
    ``stop_after`` the run stops after that step with its state saved, and returns (base, None)."""
    out = Path(cfg.run.output_dir)
    if not resume and (out / STATE_DIR / STATE_FILE).is_file():
        raise RunError(f"{out / STATE_DIR / STATE_FILE}: an interrupted pretraining is here; add --resume to continue "
                       f"it, or delete {out / STATE_DIR} to start over")  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        (out / CURVE_FILE).unlink(missing_ok=True)
    t0 = time.time()
    base = build_base(cfg)
    model, layout = base.model, base.layout
    n_params = sum(p.numel() for p in model.parameters())
    print(f"[pretrain] toy LLaDA {n_params / 1e6:.2f} M params, vocab {model.config.embedding_size}, "
          f"seq {layout.seq_len}, {len(base.train_prompts)} train / {len(base.eval_prompts)} held-out captions, "
          f"codebook fit {time.time() - t0:.1f} s")  # fmt: skip
    steps, train_s, ema = train_loop(base, cfg, out, resume, stop_after)
    if stop_after is not None and steps == stop_after and steps < (cfg.checkpoint.end_step or cfg.pretrain.steps):
        print(f"[pretrain] stopped after step {steps}; state in {out / STATE_DIR} (continue with --resume)")
        return base, None
    dump_config(cfg, out / "pretrain.yaml")
    model.eval()
    base.save(out)
    print(f"[pretrain] {steps} steps in {train_s:.0f} s ({train_s / steps:.3f} s/step), "
          f"final loss (EMA) {ema:.3f}; saved to {out}")  # fmt: skip
    summary: dict = {}
    for suffix, captions in eval_prompt_sets(base, cfg.eval).items():  # held-out, then the training-caption pick
        s = evaluate_shapes(base, captions, cfg.eval, desc=f"ShapesEval{suffix} (base)")
        s["pretrain_seconds"] = round(train_s, 1)
        s["params"] = n_params
        write_eval(s, out, "base_eval" + suffix)
        summary = summary or s
    recipe = recipe_info(command, to_dict(cfg), git_commit(), torch.get_num_threads(), summary["pretrain_seconds"],
                         n_params)  # fmt: skip
    for f in sorted((out / STATE_DIR).glob("*")) if (out / STATE_DIR).is_dir() else []:
        f.unlink()
    if (out / STATE_DIR).is_dir():
        (out / STATE_DIR).rmdir()
    write_manifest(out, recipe, eval_numbers(summary, to_dict(cfg.eval)))
    return base, summary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=None, help="YAML file (see configs/toy_pretrain.yaml)")
    ap.add_argument("--resume", action="store_true", help=f"continue from <output_dir>/{STATE_DIR}/{STATE_FILE}")
    ap.add_argument("--stop-after", type=int, default=None, metavar="N",
                    help="save the training state after step N and exit (continue later with --resume)")  # fmt: skip
    ap.add_argument("overrides", nargs="*", help="dotted overrides, e.g. pretrain.steps=500")
    add_traceback_flag(ap)
    args = ap.parse_args(argv)
    with one_line_errors(args.traceback):  # a bad config or state: "error: <file:line: ...>", exit status 2
        cfg = load_config(ToyPretrainRun, args.config, args.overrides)
        if args.stop_after is not None and args.stop_after < 1:
            raise RunError(f"--stop-after must be >= 1, got {args.stop_after}")
        words = [w for w in (argv if argv is not None else sys.argv[1:]) if w != "--resume"]
        _, summary = pretrain(cfg, " ".join(["python -m maskgrpo.toy.pretrain", *words]), args.resume,
                              args.stop_after)  # fmt: skip
    if summary is None:
        return
    print(summary["table"])
    print(json.dumps({k: summary[k] for k in ("overall", "pretrain_seconds", "params")}))


if __name__ == "__main__":
    main()
