"""Typed configs: generic YAML loader (``loader``) and the dataclass sections every entry point shares (``schema``)."""

from maskgrpo.config.loader import (
    ConfigError,
    FieldError,
    RawSection,
    config_from_dict,
    describe,
    dump_config,
    field_docs,
    load_config,
    one_of,
    rng,
    to_dict,
)

__all__ = [
    "ConfigError",
    "FieldError",
    "RawSection",
    "config_from_dict",
    "describe",
    "dump_config",
    "field_docs",
    "load_config",
    "one_of",
    "rng",
    "to_dict",
]
