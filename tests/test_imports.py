"""The import graph: no circle among the project's modules, names checked without runtime code, and the toy world
never pulls in the 8B backbones.

The graph counts every ``import`` statement of a project module, the late ones inside functions included (a late
import still makes the two modules depend on each other); ``from package import name`` is an edge to the package.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

PACKAGES = ("maskgrpo", "htgrpo_patch", "eval")
EIGHT_B = ("maskgrpo.backbones.mmada", "maskgrpo.backbones.lumina", "maskgrpo.layout_lumina",
           "maskgrpo.sampling.lumina", "maskgrpo.models.magvit2")  # fmt: skip
"""The MMaDA and Lumina-DiMOO code: backbones, Lumina's layout and sampler, MAGVIT-v2."""


def project_modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (REPO / pkg).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the project modules it imports (anywhere in the file)."""

    def owner(dotted: str) -> str | None:  # "a.b.c.name" -> the longest prefix that is a module
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                targets = [base, *(f"{base}.{a.name}" for a in node.names)]
            else:
                continue
            graph[mod] |= {t for t in map(owner, targets) if t and t != mod}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_planted_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_project_import_graph_has_no_circle():
    modules = project_modules()
    graph = import_graph(modules)
    assert "maskgrpo.catalog" in graph["maskgrpo.config.schema"]  # the graph does see imports
    assert cycles(graph) == []


def _imports_after(code: str) -> set[str]:
    """Project modules loaded by a fresh interpreter after running ``code``."""
    probe = f"{code}\nimport sys\nprint('\\n'.join(m for m in sys.modules if m.startswith({PACKAGES!r})))"
    r = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return set(r.stdout.split())


def test_config_layer_checks_names_without_importing_runtime_code():
    loaded = _imports_after(
        "from maskgrpo.config import load_config\nfrom maskgrpo.config.schema import TrainRun\n"
        "cfg = load_config(TrainRun, 'configs/toy_htgrpo.yaml', ['rollout.name=maskgit', 'backbone.name=mmada'])\n"
        "assert cfg.backbone.name == 'mmada'\n"
    )
    runtime = {m for m in loaded if m.startswith(("maskgrpo.sampling", "maskgrpo.backbones", "maskgrpo.toy",
                                                   "maskgrpo.models", "maskgrpo.algo", "maskgrpo.train"))}  # fmt: skip
    assert not runtime, f"loading a config imported runtime modules: {sorted(runtime)}"


def test_pretraining_the_toy_imports_no_mmada_or_lumina_module(tmp_path):
    loaded = _imports_after(
        "from maskgrpo.toy.pretrain import main\n"
        f"main(['run.output_dir={tmp_path / 'base'}', 'pretrain.steps=2', 'pretrain.batch_size=4', "
        "'model.n_layers=1', 'model.d_model=32', 'model.n_heads=2', 'model.mlp_hidden_size=64', "
        "'world.codebook_fit_images=16', 'world.codebook_size=16', 'world.num_eval_prompts=6', "
        "'eval.samples_per_prompt=1', 'eval.sampler.name=maskgit', 'eval.sampler.num_steps=1'])\n"
    )
    assert "maskgrpo.toy.backbone" in loaded and (tmp_path / "base" / "manifest.json").is_file()
    assert not loaded & set(EIGHT_B), sorted(loaded & set(EIGHT_B))


@pytest.mark.parametrize("config", ["configs/mmada_htgrpo.yaml", "configs/dimoo_maskgrpo.yaml"])
def test_the_dry_run_plans_without_transformers(config):
    """The launchers' DRY_RUN=1 reads the config, the loaders' option lists, the DeepSpeed JSON and the LoRA
    targets; none of them needs transformers' model stack (2.3 s instead of 4.7 s per dry run)."""
    loaded = "'transformers' in sys.modules, 'maskgrpo.models.modeling_llada' in sys.modules"
    probe = ("import sys\nfrom maskgrpo.launch_plan import main\n"
             f"code = main(['--num-gpus', '8', '--config', {config!r}])\nprint('DRY', code, {loaded})")  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "dry run OK" in r.stdout, (r.stdout + r.stderr)[-3000:]
    assert r.stdout.splitlines()[-1].endswith("False False"), r.stdout.splitlines()[-1]
