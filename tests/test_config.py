"""Config loading: typed sections, dotted overrides, and errors that name key, file and line."""

import dataclasses
import typing
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from maskgrpo.config import ConfigError, config_from_dict, dump_config, field_docs, load_config, schema, to_dict
from maskgrpo.config.schema import ToyPretrainRun


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_and_override_types(tmp_path):
    cfg = load_config(ToyPretrainRun, write(tmp_path, "a.yaml", "pretrain:\n  lr: 0.002\n"), ["pretrain.steps=7"])
    assert cfg.pretrain.lr == 0.002 and cfg.pretrain.steps == 7
    assert cfg.model == schema.ToyModelConfig()  # untouched section keeps its defaults
    cfg = load_config(ToyPretrainRun, None, ["pretrain.lr=1e-5", "eval.sampler.options={tau_schedule: maskgit}"])
    assert cfg.pretrain.lr == 1e-5 and isinstance(cfg.pretrain.lr, float)
    assert cfg.eval.sampler.options == {"tau_schedule": "maskgit"}


def test_unknown_key_names_file_line_and_suggests(tmp_path):
    p = write(tmp_path, "bad.yaml", "pretrain:\n  steps: 5\n  learning_rat: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load_config(ToyPretrainRun, p)
    msg = str(e.value)
    assert f"{p}:3" in msg and "pretrain.learning_rat" in msg
    with pytest.raises(ConfigError, match=r"Did you mean 'pretrain.steps'"):
        load_config(ToyPretrainRun, None, ["pretrain.step=3"])


def test_wrong_type_and_range(tmp_path):
    p = write(tmp_path, "t.yaml", "model:\n  n_layers: four\n")
    with pytest.raises(ConfigError, match=rf"{p}:2: model.n_layers must be an integer"):
        load_config(ToyPretrainRun, p)
    with pytest.raises(
        ConfigError, match=r"pretrain.caption_dropout=1.5 is out of range \(must be >= 0.0 and < 1.0\)"
    ):
        load_config(ToyPretrainRun, None, ["pretrain.caption_dropout=1.5"])
    with pytest.raises(ConfigError, match=r"run.seed must be an integer, got True"):
        load_config(ToyPretrainRun, write(tmp_path, "b.yaml", "run:\n  seed: true\n"))


def test_literal_and_post_init_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"run.wandb_mode='ofline' is not one of .*Did you mean 'offline'"):
        load_config(ToyPretrainRun, None, ["run.wandb_mode=ofline"])
    p = write(tmp_path, "w.yaml", "world:\n  canvas: 30\n")
    with pytest.raises(ConfigError, match=rf"{p}:2: in section 'world': canvas \(30\) must be a multiple of patch"):
        load_config(ToyPretrainRun, p)


def test_base_inheritance_and_resolved_dump(tmp_path):
    write(tmp_path, "base.yaml", "pretrain:\n  steps: 11\n  lr: 0.5\n")
    child = write(tmp_path, "child.yaml", "base: base.yaml\npretrain:\n  lr: 0.25\n")
    cfg = load_config(ToyPretrainRun, child)
    assert (cfg.pretrain.steps, cfg.pretrain.lr) == (11, 0.25)
    out = tmp_path / "resolved.yaml"
    dump_config(cfg, out)
    assert config_from_dict(ToyPretrainRun, yaml.safe_load(out.read_text())) == cfg
    assert to_dict(cfg)["pretrain"]["steps"] == 11


def test_bad_override_syntax_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(ToyPretrainRun, None, ["pretrain.steps"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(ToyPretrainRun, tmp_path / "nope.yaml")


def _sections(cls, seen=None):
    seen = set() if seen is None else seen
    if cls in seen:
        return seen
    seen.add(cls)
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            _sections(tp, seen)
    return seen


@pytest.mark.parametrize("cls", sorted(_sections(ToyPretrainRun), key=lambda c: c.__name__))
def test_every_field_has_a_docstring(cls):
    docs = field_docs(cls)
    missing = [f.name for f in dataclasses.fields(cls) if not docs.get(f.name)]
    assert not missing, f"{cls.__name__} fields without a docstring: {missing}"


def test_shipped_configs_load():
    for p in sorted((REPO / "configs").glob("toy_pretrain*.yaml")):
        load_config(ToyPretrainRun, p)
