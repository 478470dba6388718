"""HT-GRPO equations [HT] (docs/method.md section 3), one pure function each.

Notation: L = ``num_image_tokens``, r_i^k = ``rank[i, k]`` (1 = first committed), rho = ``structure_ratio``,
K = floor(rho * L), w_s / w_r = ``weight_structure`` / ``weight_refine``, mu_g:mu_s:mu_r = stage budgets,
m = 1-based inner update, j = 1-based index within the active stage. Tests: tests/test_htgrpo_equations.py.
"""

from __future__ import annotations

import math

import torch

from htgrpo_patch.config import STAGES

GLOBAL, STRUCTURE, REFINE = STAGES  # schedule order (Eq. 6)


def generation_ranks(commit_step: torch.Tensor, tie_order: torch.Tensor) -> torch.Tensor:
    """Eq. (1) [HT]: ranks by (commit step ascending, then ``tie_order`` ascending); 1 = first committed.

    commit_step: (B, L) long; tie_order: (B, L) long, a permutation of 0..L-1 per row that orders tokens committed
    at the same step. Returns (B, L) long, a permutation of 1..L per row.
    Test: steps [1, 0, 1, 0], tie order raster [0, 1, 2, 3] -> ranks [3, 1, 4, 2].
    """
    L = commit_step.shape[1]
    key = commit_step.long() * L + tie_order.long()  # (B, L) unique per row
    return key.argsort(dim=1).argsort(dim=1) + 1


def stage_of_update(m: int, budgets: tuple[int, int, int]) -> tuple[str, int, int]:
    """Eq. (6, 17) [HT]: stage of inner update m (1-based), its index j within the stage, and the stage budget.

    Global if m <= mu_g, Structure if m <= mu_g + mu_s, else Refinement. Test: budgets (2, 4, 2):
    m = 1, 2 -> global j = 1, 2; m = 3..6 -> structure j = 1..4; m = 7, 8 -> refine j = 1, 2.
    """
    mu = sum(budgets)
    if not 1 <= m <= mu:
        raise ValueError(f"update m={m} outside 1..{mu}")
    start = 0
    for stage, budget in zip(STAGES, budgets):
        if m <= start + budget:
            return stage, m - start, budget
        start += budget
    raise AssertionError("unreachable")


def stage_token_sets(rank: torch.Tensor, structure_ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (7) [HT]: structure set T_s = {k : r^k <= K}, refinement set T_r = {k : r^k > K}, K = floor(rho L).

    rank: (B, L). Returns two (B, L) bool masks. K is a token count, not a step cutoff (it may split a step).
    Test: L = 10, rho = 0.3 -> K = 3: ranks 1..3 structural.
    """
    k = math.floor(structure_ratio * rank.shape[1])
    structure = rank <= k
    return structure, ~structure


def subset_rate(j: int, mu_stage: int, p_max: float, p_min: float, schedule: str) -> float:
    """Eq. (8, 29, 30) [HT] (form inferred): p = p_min + (p_max - p_min) * phi(u), u = (j - 1) / (mu_stage - 1).

    phi = 1 - u ('down'), u ('up'), 1 ('constant'); u = 0 when mu_stage == 1.
    Test: down, p_max 1, p_min 0.5, mu_stage 4 -> j = 1..4: 1.0, 0.8333, 0.6667, 0.5.
    """
    u = (j - 1) / (mu_stage - 1) if mu_stage > 1 else 0.0
    phi = {"down": 1.0 - u, "up": u, "constant": 1.0}
    if schedule not in phi:
        raise ValueError(f"unknown subset schedule {schedule!r}; valid: {sorted(phi)}")
    return p_min + (p_max - p_min) * phi[schedule]


def draw_subset(stage_set: torch.Tensor, p: float, mode: str, generator: torch.Generator) -> torch.Tensor:
    """Support set S (docs/method.md 3.4): a random subset of ``stage_set`` (B, L) bool; a fresh draw each update.

    'bernoulli': each member kept independently with probability p. 'fixed_size': per row, a uniformly random
    subset of size ceil(p * |T_stage|). Returns (B, L) bool, always inside stage_set; p = 1 returns stage_set.
    """
    u = torch.rand(stage_set.shape, generator=generator, device=generator.device).to(stage_set.device)  # (B, L)
    if mode == "bernoulli":
        return stage_set & (u < p)
    if mode == "fixed_size":
        size = torch.ceil(p * stage_set.sum(dim=1, keepdim=True).double()).long()  # (B, 1)
        order = torch.where(stage_set, u, 2.0).argsort(dim=1).argsort(dim=1)  # members first, random order
        return stage_set & (order < size)
    raise ValueError(f"unknown subset mode {mode!r}; valid: ['bernoulli', 'fixed_size']")


def credit_weights(rank: torch.Tensor, structure_ratio: float, w_s: float, w_r: float) -> torch.Tensor:
    """Eq. (10, 20) [HT]: w^k = w_s if r^k <= K else w_r (no normalisation). (B, L) float32.

    Test: L = 4, rho = 0.5 (K = 2), ranks [3, 1, 4, 2], w 1.2 / 0.8 -> [0.8, 1.2, 0.8, 1.2].
    """
    structure, _ = stage_token_sets(rank, structure_ratio)
    return torch.where(structure, torch.tensor(w_s), torch.tensor(w_r)).float()
