"""Evaluation of an RL run: before training, during it (``eval.every``, ``eval.rounds``) and after.

Two kinds, by what the backbone has: ShapesEval of the held-out captions (and the training / validation picks) for a
ShapesWorld base; GenEval's prompt subset judged by the detector reward server (``eval.geneval``,
maskgrpo/geneval_eval.py) for any backbone, the 8B ones included. Every evaluation samples with its own fixed-seed
generator (``eval.seed``) and touches no trainer generator, so a run's training numbers are the same with or
without it (tests/test_eval_during_training.py). It is collective: every rank samples (ZeRO-3 gathers parameters in
the forward); rank 0 writes.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from maskgrpo.distributed import barrier, broadcast_object
from maskgrpo.geneval_eval import GenEvalServerEval
from maskgrpo.run_dir import writing
from maskgrpo.toy import evaluate

EVAL_SETS = {"": "heldout", "_train": "train", "_val": "val", "_geneval": "geneval"}
"""File-name suffix of each evaluation set -> its metrics namespace (``eval/<name>/...``): ShapesEval's held-out,
training and validation captions, and the GenEval subset of ``eval.geneval``."""


class RunEval:
    """``before()``, ``during(round)`` when ``due(round)``, ``after(round)``; ``timer`` / ``counter``: the trainer's
    phase timer and forward counter (evaluation time and forwards are not training compute); ``max_outage_s``: how
    long the GenEval server may be unreachable (``reward.max_outage_s``, unless ``eval.geneval.kwargs`` says)."""

    def __init__(self, backbone: Any, cfg: Any, run_dir: Path, rank: int, timer: Any, counter: Any,
                 max_outage_s: float) -> None:  # fmt: skip
        self.backbone, self.cfg, self.run_dir, self.rank = backbone, cfg, run_dir, rank
        self.timer, self.counter = timer, counter
        self.shapes = cfg is not None and bool(getattr(backbone, "eval_prompts", None))
        self.geneval = GenEvalServerEval(cfg, backbone, max_outage_s) if cfg is not None and cfg.geneval else None
        self.enabled = self.shapes or self.geneval is not None

    def due(self, r: int) -> bool:
        """An evaluation after round ``r``: every ``eval.every`` rounds and at ``eval.rounds``."""
        return self.enabled and (bool(self.cfg.every and r % self.cfg.every == 0) or r in self.cfg.rounds)

    def before(self) -> None:
        """``eval_before*`` (skipped on a resumed run that has them), printed with its table."""
        self._report("eval_before", self._run(self.run_dir, "eval_before", skip_done=True))

    def after(self, r: int) -> None:
        """``eval_after*``: an evaluation made at the last round (``eval.every``) is the same computation (weights,
        seed, captions), so its files are copied instead of sampling again."""
        if not self.enabled:
            return
        last = f"round_{r:05d}"
        if self.rank == 0:
            for f in (self.run_dir / "evals").glob(f"{last}*"):
                target = self.run_dir / f.name.replace(last, "eval_after")
                if not target.is_file():
                    shutil.copyfile(f, target)
                    if f.suffix == ".json":
                        summary = json.loads(f.read_text())
                        print(f"[eval] {target.stem} (= {f.stem}): overall {summary['overall']:.3f}\n"
                              f"{summary['table']}", flush=True)  # fmt: skip
        self._report("eval_after", self._run(self.run_dir, "eval_after", skip_done=True))

    def during(self, r: int) -> dict[str, float]:
        """The evaluation after round ``r`` as ``eval/<set>/<tag | overall | graded_mean | partial_mean |
        num_images>`` and ``eval/seconds`` keys for that round's metrics line (files under evals/). Logged with the
        line, so an evaluation cut short by a kill is redone with its round on resume and never logged twice."""
        out: dict[str, float] = {}
        t = time.perf_counter()
        for suffix, summary in self._run(self.run_dir / "evals", f"round_{r:05d}").items():
            keys = [*summary["tag_images"], "overall", "graded_mean", "partial_mean", "num_images"]
            out.update({f"eval/{EVAL_SETS[suffix]}/{k}": summary[k] for k in keys if k in summary})
        out["eval/seconds"] = round(time.perf_counter() - t, 3)
        return out

    def _sets(self) -> dict[str, Any]:
        """File-name suffix -> how to evaluate that set: ``(backbone, cfg, desc) -> summary``."""
        sets: dict[str, Any] = {}
        if self.shapes:
            for suffix, prompts in evaluate.eval_prompt_sets(self.backbone, self.cfg).items():
                sets[suffix] = lambda b, c, d, p=prompts: evaluate.evaluate_shapes(b, p, c, desc=d)
        if self.geneval is not None:
            sets["_geneval"] = self.geneval.evaluate
        return sets

    def _run(self, folder: Path, name: str, skip_done: bool = False) -> dict[str, dict]:
        """The evaluation of the current weights on every set: ``folder/<name><suffix>.json|md[|_samples.png]`` per
        set (rank 0). Returns suffix -> summary of the sets it evaluated."""
        if not self.enabled:
            return {}
        sets = self._sets()
        if skip_done:  # rank 0 decides for every rank (a collective must be entered by all or none)
            done = broadcast_object([k for k in sets if (folder / f"{name}{k}.json").is_file()])
            sets = {k: v for k, v in sets.items() if k not in done}
        out = {}
        for suffix, run in sets.items():
            kind = "GenEval subset" if suffix == "_geneval" else "ShapesEval"
            desc = f"{kind} ({name}{suffix})" if self.rank == 0 else None
            with self.timer.phase("eval"):
                out[suffix] = run(self.backbone, self.cfg, desc)
            if self.rank == 0:
                with writing(folder):
                    evaluate.write_eval(out[suffix], folder, name + suffix)
        self.counter.reset()
        self.timer.take()
        barrier()
        return out

    def _report(self, name: str, summaries: dict[str, dict]) -> None:
        if self.rank == 0:
            for suffix, summary in summaries.items():
                print(f"[eval] {name}{suffix}: overall {summary['overall']:.3f}\n{summary['table']}", flush=True)
