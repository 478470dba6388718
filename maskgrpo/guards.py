"""The loop's non-finite guards: a NaN / inf loss or gradient norm, or sampling from a diverged
policy, stops the run with a RunError naming the round and phase, before the optimizer step (loss) and before the
round's checkpoint is written.

The loss check is batched: ``FiniteLosses.add`` keeps an on-device flag per micro-batch (no sync) and ``check`` syncs
once per inner update, just before DeepSpeed's optimizer step at the accumulation boundary.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch

from maskgrpo.errors import RunError


class FiniteLosses:
    """Per inner update: the finiteness of each micro-batch's loss, checked with one device sync."""

    def __init__(self) -> None:
        self.flags: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    def add(self, loss: torch.Tensor) -> None:
        """Record a micro-batch's scalar loss (no device sync)."""
        self.flags.append(torch.isfinite(loss.detach()))
        self.values.append(loss.detach())

    def check(self, where: str) -> None:
        """RunError("<where>, micro-batch k: loss is nan; ...") if any recorded loss is not finite; then reset."""
        flags, values = self.flags, self.values
        self.flags, self.values = [], []
        if not flags or bool(torch.stack(flags).all()):  # the one sync
            return
        k = next(i for i, f in enumerate(flags) if not bool(f))
        raise RunError(
            f"{where}, micro-batch {k + 1}: loss is {float(values[k])}; stopped before the optimizer step and "
            "before writing a checkpoint (lower optim.lr, check the rewards, or resume from the last checkpoint)"
        )


def require_finite_grad_norm(norm: float | torch.Tensor | None, where: str) -> None:
    """RunError when the global gradient norm DeepSpeed computed at the last step is NaN / inf (None: not computed).

    DeepSpeed's ZeRO optimizer skips the step when the norm is not finite; the run stops here instead of going on
    with skipped steps, before the round's checkpoint is written."""
    if norm is None:
        return
    value = float(norm)
    if not math.isfinite(value):
        raise RunError(
            f"{where}: global gradient norm is {value}; stopped before writing a checkpoint (lower optim.lr, check "
            "the rewards, or resume from the last checkpoint)"
        )


NONFINITE_SAMPLING = "probability tensor contains either `inf`, `nan` or element < 0"
"""torch.multinomial's message when a policy's probabilities are not finite (its weights diverged)."""


@contextlib.contextmanager
def diverged_policy_error(where: str) -> Iterator[None]:
    """Sampling from a diverged policy (finite but huge weights give inf - inf = NaN logits under CFG) fails inside
    torch.multinomial: turn that into RunError("<where>: the policy's probabilities are not finite ...")."""
    try:
        yield
    except RuntimeError as e:
        if NONFINITE_SAMPLING not in str(e):
            raise
        raise RunError(
            f"{where}: the policy's probabilities are not finite (its weights diverged in an earlier round; lower "
            "optim.lr and start again, or resume from an older checkpoint with --allow-config-change optim.lr)"
        ) from e
