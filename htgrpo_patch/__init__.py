"""HT-GRPO as a thin patch over the MaskGRPO baseline (docs/method.md section 3).

Importing this package registers three components into the baseline's registries and the ``htgrpo`` preset:

    sampler wrapper  ranked             generation ranks with the rollouts        (ranked_sampler.py)
    context          fully_masked       x_M + prompt, one row per prompt          (contexts.py)
                     revealed_structure ablation A5
    loss             ht_staged          staged subsets + credit-weighted A_hat    (loss.py)

``patch: htgrpo`` in a run config selects the preset; ``patch_options`` holds :class:`HTGRPOOptions`. The
baseline never imports this package unless a config asks for it, and nothing here monkeypatches the baseline.
"""

from htgrpo_patch import contexts, loss, ranked_sampler  # noqa: F401  (registration)
from htgrpo_patch.config import HTGRPOOptions
from maskgrpo.components import PRESETS, Preset


def _options(cfg) -> HTGRPOOptions:
    options = cfg.patch_options.build(HTGRPOOptions, "patch_options.")
    if sum(options.budgets) != cfg.rl.num_inner_updates:
        from maskgrpo.config import ConfigError

        raise ConfigError(f"patch_options.budgets {list(options.budgets)} sum to {sum(options.budgets)}, but "
                          f"rl.num_inner_updates is {cfg.rl.num_inner_updates}: make them equal")  # fmt: skip
    return options


PRESETS.register("htgrpo")(
    Preset(context="fully_masked", loss="ht_staged", sampler_wrapper="ranked", options=_options)
)

__all__ = ["HTGRPOOptions"]
