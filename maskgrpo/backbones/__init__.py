"""Backbones: a model plus the prompt encoder and image decoder around it, behind one small interface."""

from maskgrpo.backbones.base import BACKBONES, Backbone, generate_codes

__all__ = ["BACKBONES", "Backbone", "generate_codes"]

# Registration side effects: each module registers its loader under its name.
from maskgrpo.backbones import (
    lumina,  # noqa: E402,F401
    mmada,  # noqa: E402,F401
    shapes,  # noqa: E402,F401
)
