"""Pretrain the ShapesWorld toy base: ``python -m maskgrpo.toy.pretrain [--config FILE] [key=value ...]``.

MMaDA's masked-token objective (models.md 2.4): t ~ U(0, 1), n = max(1, round(N * cos(pi t / 2))) random image slots
masked, cross-entropy over the full vocabulary at those slots, no 1/t weight; 10% of rows are trained with the empty
prompt so classifier-free guidance works. Training images are rendered on the fly from training captions, so the
base never sees a held-out caption. Saves model + both tokenizers + the world (see maskgrpo.backbones.shapes), then
evaluates the base on held-out ShapesEval and writes ``base_eval.json`` / ``base_eval.md`` next to it, and last
``manifest.json``: the recipe (config, commit, threads, torch version, seconds), the ShapesEval numbers and the
SHA-256 of every file, checked whenever the base is loaded (maskgrpo.toy.base_manifest).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from maskgrpo.backbones.shapes import ShapesBackbone, world_spec
from maskgrpo.config import dump_config, load_config, to_dict
from maskgrpo.config.schema import ToyPretrainRun
from maskgrpo.errors import add_traceback_flag, one_line_errors
from maskgrpo.models import LLaDAConfig, LLaDAModelLM
from maskgrpo.toy.base_manifest import eval_numbers, git_commit, recipe_info, write_manifest
from maskgrpo.toy.evaluate import evaluate_shapes, write_eval
from maskgrpo.toy.image_tokenizer import PatchTokenizer
from maskgrpo.toy.text_tokenizer import WordTokenizer, shapes_layout
from maskgrpo.toy.world import render, split_prompts, tokenizer_fit_images


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


def build_base(cfg: ToyPretrainRun) -> ShapesBackbone:
    """World, prompt split, tokenizers and a freshly initialised toy LLaDA (deterministic from the seeds)."""
    spec = world_spec(cfg.world)
    train, held_out = split_prompts(spec, cfg.world.seed, cfg.world.num_eval_prompts)
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
    return ShapesBackbone(model, text_tok, image_tok, layout, cfg.world, train, held_out)


def pretrain(cfg: ToyPretrainRun, command: str) -> tuple[ShapesBackbone, dict]:
    """Pretrain, save, evaluate and write the manifest (``command`` is recorded in it as the recipe)."""
    out = Path(cfg.run.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, out / "pretrain.yaml")
    t0 = time.time()
    base = build_base(cfg)
    spec, model, layout = base.spec, base.model, base.layout
    n_params = sum(p.numel() for p in model.parameters())
    print(f"[pretrain] toy LLaDA {n_params / 1e6:.2f} M params, vocab {model.config.embedding_size}, "
          f"seq {layout.seq_len}, {len(base.train_prompts)} train / {len(base.eval_prompts)} held-out captions, "
          f"codebook fit {time.time() - t0:.1f} s")  # fmt: skip
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.pretrain.lr, betas=(0.9, 0.99),
                            weight_decay=cfg.pretrain.weight_decay)  # fmt: skip
    rng = np.random.default_rng(cfg.run.seed + 1)
    gen = torch.Generator().manual_seed(cfg.run.seed + 1)
    positions = layout.image_positions()  # (N,)
    model.train()
    bar = tqdm(range(cfg.pretrain.steps), desc="pretrain", mininterval=2.0)
    ema = None
    t_train = time.time()
    for step in bar:
        metas = [base.train_prompts[i] for i in rng.integers(0, len(base.train_prompts), cfg.pretrain.batch_size)]
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
        if step % cfg.pretrain.log_every == 0 or step == cfg.pretrain.steps - 1:
            bar.set_postfix(loss=f"{ema:.3f}", lr=f"{lr_at(step, cfg):.1e}")
    train_s = time.time() - t_train
    model.eval()
    base.save(out)
    print(f"[pretrain] {cfg.pretrain.steps} steps in {train_s:.0f} s ({train_s / cfg.pretrain.steps:.3f} s/step), "
          f"final loss (EMA) {ema:.3f}; saved to {out}")  # fmt: skip
    summary = evaluate_shapes(base, base.eval_prompts, cfg.eval, desc="ShapesEval (base)")
    summary["pretrain_seconds"] = round(train_s, 1)
    summary["params"] = n_params
    write_eval(summary, out, "base_eval")
    recipe = recipe_info(command, to_dict(cfg), git_commit(), torch.get_num_threads(), summary["pretrain_seconds"],
                         n_params)  # fmt: skip
    write_manifest(out, recipe, eval_numbers(summary, to_dict(cfg.eval)))
    return base, summary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=None, help="YAML file (see configs/toy_pretrain.yaml)")
    ap.add_argument("overrides", nargs="*", help="dotted overrides, e.g. pretrain.steps=500")
    add_traceback_flag(ap)
    args = ap.parse_args(argv)
    with one_line_errors(args.traceback):  # a bad config: "error: <file:line: ...>", exit status 2
        cfg = load_config(ToyPretrainRun, args.config, args.overrides)
    _, summary = pretrain(
        cfg, " ".join(["python -m maskgrpo.toy.pretrain", *(argv if argv is not None else sys.argv[1:])])
    )
    print(summary["table"])
    print(json.dumps({k: summary[k] for k in ("overall", "pretrain_seconds", "params")}))


if __name__ == "__main__":
    main()
