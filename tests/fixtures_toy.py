"""A tiny ShapesWorld base for the evaluation-harness tests, pretrained once per test process.

``toy_base_dir()`` runs ``python -m maskgrpo.toy.pretrain`` in-process with tiny sizes (1 layer, d_model 32,
5 steps: a few seconds on CPU) into a temporary directory that is removed at exit, and caches the path, so every
test module that imports it shares one base. The model is untrained noise; the tests check layouts, resumption,
sharding and file formats, never image quality. The ShapesWorld tokenizer maps unknown words of real GenEval or
DPG prompts to ``<unk>``, which is all a layout test needs.
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path

OFFICIAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
"""The official prompt files (GenEval metadata, object names, DPG-Bench JSONL); tests that read them skip without."""
GENEVAL_METADATA = OFFICIAL_DATA / "geneval" / "evaluation_metadata.jsonl"
GENEVAL_OBJECTS = OFFICIAL_DATA / "geneval" / "object_names.txt"
DPG_JSONL = OFFICIAL_DATA / "dpg" / "dpg_bench.jsonl"

TINY_PRETRAIN = [
    "pretrain.steps=30",
    "pretrain.batch_size=16",
    "pretrain.warmup_steps=5",
    "model.n_layers=1",
    "model.d_model=32",
    "model.n_heads=2",
    "model.mlp_hidden_size=64",
    "world.codebook_fit_images=32",
    "world.codebook_size=32",
    "world.num_eval_prompts=12",
    "eval.samples_per_prompt=1",
    "eval.sampler.name=maskgit",
    "eval.sampler.num_steps=2",
]


@functools.lru_cache(maxsize=1)
def toy_base_dir() -> Path:
    """Directory of a freshly pretrained tiny ShapesWorld base (built on first call, removed at process exit).

    Also behind the ``toy_base_dir`` pytest fixture (conftest.py), so the whole session builds one base."""
    from maskgrpo.toy.pretrain import main

    root = Path(tempfile.mkdtemp(prefix="toy_base_"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    main([f"run.output_dir={root / 'base'}", *TINY_PRETRAIN])
    return root / "base"


@functools.lru_cache(maxsize=1)
def toy_final_dir() -> Path:
    """A finished run's ``final/`` for the tiny base: backbone.json + model/ (a "full fine-tuning" export whose
    weights are the base's), so ``--checkpoint`` goes through ``maskgrpo.checkpoint.load_trained``."""
    base = toy_base_dir()
    final = base.parent / "run" / "final"
    final.mkdir(parents=True)
    (final / "backbone.json").write_text(json.dumps({"name": "shapes", "path": str(base), "options": {}}))
    shutil.copytree(base / "model", final / "model")
    return final


def model_args() -> list[str]:
    """CLI flags that load the tiny base, with the cheapest sampler settings."""
    return ["--backbone", "shapes", "--model-path", str(toy_base_dir()), "--steps", "2", "--device", "cpu"]
