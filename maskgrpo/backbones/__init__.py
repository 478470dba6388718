"""Backbones: a model plus the prompt encoder and image decoder around it, behind one small interface."""

from maskgrpo.backbones.base import BACKBONES, Backbone, generate_codes

__all__ = ["BACKBONES", "Backbone", "generate_codes"]

# Registration side effects: each module registers its loader under its name.
from maskgrpo.backbones import shapes  # noqa: E402,F401
from maskgrpo.backbones import mmada  # noqa: E402,F401
