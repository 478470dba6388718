"""GenEval-style evaluation during a GPU run, through the detector reward server (``eval.geneval``; off by default).

The 8B backbones have no built-in held-out captions, so ShapesEval cannot run on them. With ``eval.geneval`` set,
the run evaluates a fixed subset of GenEval's prompt metadata (the first ``per_tag`` prompts of each tag, in file
order) before training, every ``eval.every`` rounds and after: each rank samples its share of the
``samples_per_prompt`` images with the evaluation sampler and seed, the ``geneval`` reward server (the public
reward-server's GenEval app, docs/rewards.md) judges them, and GenEval's ``strict_rewards`` (1 = the image passes
every check of its prompt) become per-tag accuracies and ``overall`` (the mean of the tags, as GenEval reports it)
under ``eval/geneval/`` in metrics.jsonl. This is the detector GenEval uses, but on a subset, with images at the
run's own resolution: track it across rounds; report the full 553-prompt GenEval after training
(docs/after_training.md).

The images depend on ``eval.seed`` and the number of ranks (rank r samples images r, r + W, r + 2W, ... with the
seed ``eval.seed + r``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from maskgrpo.backbones.base import generate_codes
from maskgrpo.config import ConfigError
from maskgrpo.distributed import agree, gather_objects
from maskgrpo.prompts import PromptSet, check_prompts, read_prompt_file
from maskgrpo.rewards.base import RewardError
from maskgrpo.rewards.client import REMOTE_REWARDS, remote_factory
from maskgrpo.scoring.geneval_rules import summarize_verdicts

VERDICT_KEY = "strict_rewards"
"""Key of the GenEval server's answer holding each image's pass (1.0) / fail (0.0) verdict."""


def pick_per_tag(prompts: PromptSet, per_tag: int) -> PromptSet:
    """The first ``per_tag`` prompts of every tag, in file order (lines kept, so errors still name them)."""
    counts: dict[str, int] = {}
    keep = []
    for i, meta in enumerate(prompts.prompts):
        tag = meta.get("tag")
        counts[tag] = counts.get(tag, 0) + 1
        if counts[tag] <= per_tag:
            keep.append(i)
    lines = None if prompts.lines is None else [prompts.lines[i] for i in keep]
    return PromptSet([prompts.prompts[i] for i in keep], prompts.source, lines)


def shard(n: int, rank: int, world: int) -> list[int]:
    """Image indices rank ``rank`` samples: ``rank, rank + world, ...``, padded with its last index to
    ``ceil(n / world)`` so every rank runs the same number of forwards (ZeRO-3 gathers parameters in each one)."""
    mine = list(range(rank, n, world))
    size = -(-n // world)
    return mine + [mine[-1] if mine else 0] * (size - len(mine))


class GenEvalServerEval:
    """The prompt subset and the server client of ``eval.geneval``; ``evaluate(backbone, cfg, desc)`` is collective."""

    def __init__(self, cfg: Any, backbone: Any, max_outage_s: float) -> None:
        """``cfg``: the run's ``eval`` section (its ``geneval`` set). Bad input is a one-line error: no metadata
        path (ConfigError), an unreadable file or a bad line (RunError naming file and line), a prompt without the
        keys the server reads, an unknown client option."""
        server = cfg.geneval
        if not server.metadata:
            raise ConfigError("eval.geneval.metadata: give GenEval's prompt metadata (evaluation_metadata.jsonl)")
        self.prompts = pick_per_tag(read_prompt_file(server.metadata), server.per_tag)
        try:
            self.scorer = remote_factory(REMOTE_REWARDS["geneval"])(context={"max_outage_s": max_outage_s},
                                                                    **server.kwargs)  # fmt: skip
        except (TypeError, ValueError) as e:
            raise ConfigError(f"eval.geneval.kwargs: {e.args[0] if e.args else e}") from e
        self.scorer.score_key = VERDICT_KEY  # the same server and request; the verdicts, not the partial credit
        check_prompts(self.prompts, [self.scorer], backbone)  # tag / include / prompt on every line

    def evaluate(self, backbone: Any, cfg: Any, desc: str | None = None) -> dict[str, Any]:
        """Sample this rank's share, have the server judge it, gather every rank's verdicts: the summary of
        :func:`summarize_verdicts` on every rank. A server that fails (past its outage limit) stops every rank
        with the same one-line error."""
        rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        metas = [m for m in self.prompts.prompts for _ in range(cfg.samples_per_prompt)]
        mine = shard(len(metas), rank, world)
        device = next(backbone.model.parameters()).device
        generator = torch.Generator(device=device).manual_seed(cfg.seed + rank)
        was_training = backbone.model.training
        backbone.model.eval()
        codes = generate_codes(backbone, [metas[i]["prompt"] for i in mine], cfg.sampler.build(), generator,
                               cfg.batch_size, desc)  # fmt: skip
        backbone.model.train(was_training)
        unique = sorted(set(mine))  # the padding is sampled (equal forwards on every rank), not judged
        first = [mine.index(i) for i in unique]
        error, verdicts = None, []
        try:
            images = backbone.decode(codes[first])  # (n, H, W, 3) uint8
            scores = self.scorer(images, [metas[i]["prompt"] for i in unique], [metas[i] for i in unique])
            verdicts = [(i, bool(np.isfinite(s) and s >= 0.5)) for i, s in zip(unique, scores)]
        except RewardError as e:
            error = f"eval.geneval: {e}"
        agree(error)
        judged = dict(pair for part in gather_objects(verdicts) for pair in part)
        return summarize_verdicts(metas, [judged[i] for i in range(len(metas))])
