"""Every number a tiny run computes is the one the code computed before the round-as-data refactor.

``tests/golden/rounds.json`` was recorded by ``tests/golden/record_rounds.py`` at commit 173b675, the last commit
before the update plan became data (losses, KL, clip fractions, gradient norms, forward counts and the SHA-256 of
the final weights of 12 two-round runs: MaskGRPO, its upstream-count and seq-mean variants, UniGRPO, TraceGRPO,
HT-GRPO with five option sets including A5, and MaskGRPO / HT-GRPO on two ranks). On the machine class it was
recorded on (same CPU model, kernel level, torch and Python) every value must be equal to the last bit; elsewhere
float kernels differ, so counts stay exact and floats get a relative tolerance of 1e-4 (weights are then compared
through the metrics only). Keys added since (``budget/``: compute spent so far) are allowed, nothing else.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from golden.record_rounds import CASES, TWO_RANKS, fingerprint, record

GOLDEN = json.loads((Path(__file__).parent / "golden" / "rounds.json").read_text())
SAME_MACHINE = GOLDEN["fingerprint"] == fingerprint()
NEW_KEYS = ("budget/",)


@pytest.fixture(scope="module")
def current() -> dict:
    return record()


def _close(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-7)
    return a == b


@pytest.mark.slow
@pytest.mark.parametrize("case", [*CASES, *TWO_RANKS])
def test_round_numbers_match_the_code_before_the_refactor(current, case):
    want, got = GOLDEN["cases"][case], current["cases"][case]
    assert len(got["metrics"]) == len(want["metrics"]) == 2
    for r, (w, g) in enumerate(zip(want["metrics"], got["metrics"]), 1):
        new = {k for k in g if k not in w}
        assert set(w) <= set(g) and all(k.startswith(NEW_KEYS) for k in new), sorted(set(g) ^ set(w))
        if SAME_MACHINE:
            diff = {k: (w[k], g[k]) for k in w if w[k] != g[k]}
        else:
            diff = {k: (w[k], g[k]) for k in w if not _close(w[k], g[k])}
        assert not diff, f"{case} round {r}: (before, now) {diff}"
    if SAME_MACHINE:
        assert got["weights"] == want["weights"], f"{case}: final weights differ from the recorded run"
    if case in CASES:  # one rank: the budget is the running sum of the recorded per-round forwards
        fwd = [sum(m[f"perf/forwards_{p}"] for p in ("rollout", "old_ref", "update")) for m in want["metrics"]]
        fe = [m["perf/forwards_rollout"] + m["perf/forwards_old_ref"] + 3 * m["perf/forwards_update"]
              for m in want["metrics"]]  # fmt: skip
        assert [m["budget/forwards"] for m in got["metrics"]] == [fwd[0], fwd[0] + fwd[1]]
        assert [m["budget/forward_equivalents"] for m in got["metrics"]] == [fe[0], fe[0] + fe[1]]
