"""Backbones: a model plus the prompt encoder and image decoder around it, behind one small interface.

The loaders are registered by name in ``maskgrpo.catalog.BACKBONES`` (lazy: importing this package imports none of
them): ``mmada`` and ``lumina`` here, ``shapes`` in ``maskgrpo.toy.backbone``.
"""

from maskgrpo.catalog import BACKBONES

__all__ = ["BACKBONES"]
