"""Held-out ShapesEval of a ShapesWorld model: ``python -m eval.shapes_eval --checkpoint RUN/final [--out DIR]``.

Samples ``--samples`` images for every held-out caption of the backbone (``backbone.eval_prompts``, disjoint from
training), scores them with GenEval's rules on the colour-segmentation detector (``maskgrpo.toy.evaluate``) and
writes, under ``--out`` (default: the run directory for ``--checkpoint``, the base directory otherwise)::

    <name>.json              per-tag accuracy, overall (unweighted mean of the six tags), partial_mean, settings
    <name>.md                the GenEval-style table (also printed)
    <name>_samples.png       per tag, the first sample of up to 8 prompts: caption and pass/fail mark per tile
    <name>_<tag>.png         per tag: one row per prompt (caption and pass count above it), its samples side by
                             side, each with a pass/fail mark (up to --grid-prompts rows)
    <name>_<tag>.txt         the prompts of those rows and each sample's verdict (1 correct, 0 wrong)

Defaults are MMaDA's README setting (MaskGIT, 15 steps, w = 3.5), 4 samples, seed 1234; the toy configs' own
evaluation is ``--sampler emerge --steps 12 --cfg 3.5 --samples 16 --train-prompts-per-tag 3``. Keep the seed fixed
so a base and a trained model see the same noise. A base model: ``--backbone shapes --model-path assets/toy_base``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from eval.common import (
    add_model_args,
    add_sampler_args,
    describe_model,
    load_backbone,
    resolve_final_dir,
    sampler_config,
    sampler_record,
)
from maskgrpo.config.schema import ShapesEvalConfig
from maskgrpo.errors import one_line_errors
from maskgrpo.scoring.geneval_rules import GENEVAL_TAGS
from maskgrpo.toy.evaluate import eval_prompt_sets, evaluate_shapes, sample_grid, write_eval


def write_tag_grids(summary: dict, out: Path, name: str, samples: int, max_prompts: int) -> list[Path]:
    """``<name>_<tag>.png`` + ``.txt`` per tag from ``evaluate_shapes``'s ``_images`` / ``_metas`` / ``_correct``
    (prompt-major: the ``samples`` images of a prompt are consecutive). PNG: one row per prompt under a header with
    its caption and pass count, every sample with its pass/fail mark (``sample_grid``). Returns the PNG paths."""
    metas, correct = summary["_metas"], summary["_correct"]
    texts = [f"sample {i % samples + 1}" for i in range(len(metas))]
    written = []
    for tag in GENEVAL_TAGS:
        rows = [i for i in range(0, len(metas), samples) if metas[i]["tag"] == tag][:max_prompts]
        if not rows:
            continue
        verdicts = ["".join("1" if correct[i + j] else "0" for j in range(samples)) for i in rows]
        sections = [(f"{v.count('1')}/{samples} pass: {metas[i]['prompt']}", list(range(i, i + samples)))
                    for v, i in zip(verdicts, rows)]  # fmt: skip
        png = out / f"{name}_{tag}.png"
        sample_grid(summary, sections, texts, columns=samples, scale=4, lines=1).save(png)
        (out / f"{name}_{tag}.txt").write_text("".join(f"{v}  {metas[i]['prompt']}\n" for v, i in zip(verdicts, rows)))
        written.append(png)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap)
    add_sampler_args(ap)
    ap.add_argument("--samples", type=int, default=4, help="images per held-out prompt (default 4)")
    ap.add_argument("--batch-size", type=int, default=64, help="images per sampler call (default 64)")
    ap.add_argument("--out", default=None, help="output folder (default: run directory / base directory)")
    ap.add_argument("--name", default="shapes_eval", help="file name prefix (default shapes_eval)")
    ap.add_argument("--grid-prompts", type=int, default=16, help="prompts (rows) per tag grid (default 16)")
    ap.add_argument("--train-prompts-per-tag", type=int, default=0,
                    help="also score N training captions per tag (the trainer's eval.train_prompts_per_tag pick, "
                         "seeded by --seed) into <name>_train.json")  # fmt: skip
    args = ap.parse_args(argv)

    backbone = load_backbone(args)
    prompts = getattr(backbone, "eval_prompts", None)
    if not prompts:
        raise SystemExit("error: this backbone has no held-out ShapesEval prompts (eval_prompts); ShapesEval is for "
                         "ShapesWorld models, use eval.geneval_generate for real ones")  # fmt: skip
    cfg = ShapesEvalConfig(samples_per_prompt=args.samples, batch_size=args.batch_size, sampler=sampler_config(args),
                           seed=args.seed, train_prompts_per_tag=args.train_prompts_per_tag)  # fmt: skip
    if args.out is not None:
        out = Path(args.out)
    elif args.checkpoint:
        out = resolve_final_dir(args.checkpoint).parent
    else:
        out = Path(args.model_path)
    record = {**describe_model(args), "samples": args.samples, "seed": args.seed,
              "sampler": sampler_record(cfg.sampler), "train_prompts_per_tag": args.train_prompts_per_tag}  # fmt: skip
    for suffix, captions in eval_prompt_sets(backbone, cfg).items():  # held-out, then the training-caption pick
        desc = f"ShapesEval{suffix} ({len(captions)} x {args.samples})"
        result = evaluate_shapes(backbone, captions, cfg, desc=desc)
        result["config"] = record
        write_eval(result, out, args.name + suffix)
        if suffix:
            print(f"training captions ({len(captions)} x {args.samples}): overall {result['overall']:.3f}")
        else:
            summary = result
    grids = write_tag_grids(summary, out, args.name, args.samples, args.grid_prompts)
    print(f"ShapesEval: {len(prompts)} held-out prompts x {args.samples} samples = {summary['num_images']} images")
    print(summary["table"])
    print(f"partial credit (mean): {summary['partial_mean']:.3f}")
    print(f"wrote {out / (args.name + '.json')}, {out / (args.name + '.md')}, {len(grids)} tag grids in {out}")
    print(json.dumps({k: summary[k] for k in (*GENEVAL_TAGS, "overall") if k in summary}))
    return 0


if __name__ == "__main__":
    with one_line_errors(show_traceback=False):  # RunError / ConfigError / missing file: one line, exit 2
        sys.exit(main())
