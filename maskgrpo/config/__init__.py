"""Typed configs: generic YAML loader (``loader``) and the dataclass sections every entry point shares (``schema``)."""

from maskgrpo.config.loader import (
    ConfigError,
    RawSection,
    config_from_dict,
    describe,
    dump_config,
    field_docs,
    load_config,
    rng,
    to_dict,
)

__all__ = [
    "ConfigError",
    "RawSection",
    "config_from_dict",
    "describe",
    "dump_config",
    "field_docs",
    "load_config",
    "rng",
    "to_dict",
]
