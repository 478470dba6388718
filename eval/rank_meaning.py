"""What generation ranks mean under a rollout sampler (README, "Ranks and the rollout sampler").

    python -m eval.rank_meaning --model-path assets/toy_base [--samplers emerge maskgit] [--prompts 16] [--group 8]

For each sampler (12 steps, CFG 3.5 unless changed) it draws ``--group`` rollouts for each of ``--prompts`` training
captions, ranks them as HT-GRPO does (``ranked`` wrapper, random ties) and prints, per rollout then averaged, the
Pearson correlation between a token's rank r (1 = committed first) and two log-probs of its code:

    x_M:       log pi(x^k | x_M, c), the fully masked context HT-GRPO scores every token in (no CFG): does the
               structural set (r <= K) hold the codes the model finds most likely a priori?
    at commit: the sampler's log-prob when it committed the code (guided, in the context of that step; later
               steps see more of the image, so this one also grows with rank whatever the order).

and the mean of each over the structural set vs the rest (rho = 0.3). corr near 0 under x_M: the structural set is
a random subset of positions (commit order model-free); negative: early tokens are the ones the model was surest of.
"""

from __future__ import annotations

import argparse
import math
import sys

import torch

from maskgrpo.algo.equations import code_logprobs
from maskgrpo.backbones import BACKBONES
from maskgrpo.policy import code_logits
from maskgrpo.sampling import build_sampler


def rank_logp_stats(rank: torch.Tensor, logp: torch.Tensor, rho: float) -> dict[str, float]:
    """rank, logp: (B, N). Mean over rollouts of Pearson corr(rank, logp); mean logp of r <= K and of r > K."""
    r, x = rank.double(), logp.double()
    rc, xc = r - r.mean(1, keepdim=True), x - x.mean(1, keepdim=True)  # (B, N)
    corr = (rc * xc).sum(1) / (rc.norm(dim=1) * xc.norm(dim=1)).clamp(min=1e-12)  # (B,)
    structural = rank <= math.floor(rho * rank.shape[1])
    return {"corr": float(corr.mean()), "logp_structural": float(x[structural].mean()),
            "logp_refine": float(x[~structural].mean())}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-path", required=True, help="a ShapesWorld base (assets/toy_base)")
    ap.add_argument("--samplers", nargs="+", default=["emerge", "maskgit"], help="registered rollout samplers")
    ap.add_argument("--steps", type=int, default=12, help="sampler steps T (the toy configs' 12)")
    ap.add_argument("--cfg", type=float, default=3.5, help="CFG scale (the toy configs' 3.5)")
    ap.add_argument("--prompts", type=int, default=16, help="training captions (the first ones)")
    ap.add_argument("--group", type=int, default=8, help="rollouts per caption")
    ap.add_argument("--structure-ratio", type=float, default=0.3, help="rho, for the structural-set means")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    import htgrpo_patch  # noqa: F401  (registers the ranked wrapper)
    from htgrpo_patch.ranked_sampler import RankedSampler

    backbone = BACKBONES.get("shapes")(args.model_path, dtype=torch.float32, device="cpu")
    backbone.model.eval()
    captions = [m["prompt"] for m in backbone.train_prompts[: args.prompts]]
    batch = backbone.prompt_batch(captions).repeat_interleave(args.group)
    print(f"{len(captions)} captions x {args.group} rollouts, T = {args.steps}, CFG {args.cfg}, "
          f"rho {args.structure_ratio}")  # fmt: skip
    print("| sampler | log-prob | corr(rank, log-prob) | mean, rank <= K | mean, rank > K |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name in args.samplers:
        sampler = RankedSampler(build_sampler(name, num_steps=args.steps, cfg_scale=args.cfg), "random")
        with torch.no_grad():
            out = sampler.sample(backbone.model, batch, torch.Generator().manual_seed(args.seed))
            x_m = code_logits(backbone.model, batch, batch.input_ids, batch.attention_mask)  # (B, N, K), no CFG
        rank = out.extras["rank"]  # (B, N)
        for what, logp in (("x_M", code_logprobs(x_m, out.codes)),
                           ("at commit", out.logp_at_commit)):  # fmt: skip
            s = rank_logp_stats(rank, logp, args.structure_ratio)
            print(f"| {name} | {what} | {s['corr']:+.3f} | {s['logp_structural']:.3f} | {s['logp_refine']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
