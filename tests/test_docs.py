"""The docs stand on their own: README.md and docs/**/*.md link only to what the repository holds, every
``#anchor`` names a heading of its target, every ``python -m X`` they show answers ``--help``, and no shipped file
points at the team's spec folder outside the repository.

The checks are plain functions of a root folder (``broken_links``, ``shown_modules``, ``outside_references``), so
they can be run on a scratch copy with a deliberately broken link to see them fail.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

# ------------------------------------------------------------------------------------------------ markdown parsing

_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_HTML_ID = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.IGNORECASE)
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def doc_files(root: Path) -> list[Path]:
    """README.md and every Markdown file under docs/, sorted."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def prose_lines(text: str, blank_code: bool = True) -> list[tuple[int, str]]:
    """(1-based line number, line) for every line outside fenced code blocks, with inline code spans blanked
    (``blank_code``; a heading keeps them: GitHub's anchor includes their text)."""
    out, fenced = [], False
    for no, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append((no, _INLINE_CODE.sub("", line) if blank_code else line))
    return out


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: inline markup dropped, lowercased, every character that is not a
    letter, digit, '_', '-' or space removed, spaces turned into '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images -> their text
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML tags
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(md: Path) -> set[str]:
    """Every anchor a Markdown file defines: heading slugs (repeats get -1, -2, ... as on GitHub) and HTML ids."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for _, line in prose_lines(md.read_text(encoding="utf-8"), blank_code=False):
        m = _HEADING.match(line)
        if m:
            base = github_slug(m.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
        out.update(_HTML_ID.findall(line))
    return out


def links(md: Path) -> list[tuple[int, str]]:
    """(line, target) of every inline link and image outside code."""
    return [(no, m.group(1)) for no, line in prose_lines(md.read_text(encoding="utf-8")) for m in _LINK.finditer(line)]


def broken_links(root: Path) -> list[str]:
    """One message per relative link of README.md and docs/ that does not resolve inside ``root``: a missing file
    or folder, a path that leaves the repository, or an ``#anchor`` that names no heading of the target."""
    root = root.resolve()
    cache: dict[Path, set[str]] = {}
    bad = []
    for md in doc_files(root):
        for no, target in links(md):
            if _SCHEME.match(target):
                continue  # http(s), mailto: not checked here
            where = f"{md.relative_to(root)}:{no}: {target}"
            path_part, _, anchor = target.partition("#")
            dest = (md.parent / path_part).resolve() if path_part else md
            if not dest.is_relative_to(root):
                bad.append(f"{where}: points outside the repository")
                continue
            if not dest.exists():
                bad.append(f"{where}: no such file or folder")
                continue
            if anchor:
                if dest.suffix != ".md":
                    bad.append(f"{where}: an anchor into a file that is not Markdown")
                    continue
                if dest not in cache:
                    cache[dest] = anchors(dest)
                if anchor not in cache[dest]:
                    bad.append(f"{where}: no heading with anchor #{anchor} in {dest.relative_to(root)}")
    return bad


_MODULE = re.compile(r"(?:\bpython3?|\btorchrun\b[^\n`|]*?)\s+-m\s+([A-Za-z_][\w.]*)")


def shown_modules(root: Path) -> dict[str, str]:
    """Every module a doc shows as ``python -m X`` (or ``torchrun ... -m X``), code blocks and inline code included:
    module -> the first place it is shown (``file:line``)."""
    out: dict[str, str] = {}
    for md in doc_files(root):
        for no, line in enumerate(md.read_text(encoding="utf-8").splitlines(), 1):
            for m in _MODULE.finditer(line):
                out.setdefault(m.group(1).rstrip("."), f"{md.relative_to(root)}:{no}")
    return out


_SHIPPED = ("README.md", "docs", "maskgrpo", "htgrpo_patch", "eval", "launch", "configs")
_OUTSIDE = (b"../shared", b"shared/spec")


def outside_references(root: Path) -> list[str]:
    """``file:line`` of every text line in the shipped folders that points at ``../shared`` or ``shared/spec``."""
    hits = []
    for top in _SHIPPED:
        base = root / top
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for f in files:
            if "__pycache__" in f.parts:
                continue
            data = f.read_bytes()
            if b"\0" in data[:4096]:
                continue  # binary (images, weights)
            for no, line in enumerate(data.splitlines(), 1):
                if any(s in line for s in _OUTSIDE):
                    hits.append(f"{f.relative_to(root)}:{no}: {line.decode('utf-8', 'replace').strip()[:120]}")
    return hits


# ------------------------------------------------------------------------------------------------ the tests


def test_github_slug_rules():
    assert github_slug("3.5 The fully masked, prompt-conditioned estimator (Eq. 9, 19 and 24; stated)") == (
        "35-the-fully-masked-prompt-conditioned-estimator-eq-9-19-and-24-stated"
    )
    assert github_slug("MMaDA-8B and Lumina-DiMOO-8B (GPUs)") == "mmada-8b-and-lumina-dimoo-8b-gpus"
    assert github_slug("The sampler `t2i_generate` **now**") == "the-sampler-t2i_generate-now"


def test_every_relative_link_and_anchor_resolves():
    bad = broken_links(REPO)
    assert not bad, "broken links in README.md / docs/:\n" + "\n".join(bad)


def test_no_shipped_file_points_outside_the_repository():
    hits = outside_references(REPO)
    assert not hits, "references to the spec folder outside the repository:\n" + "\n".join(hits)


MODULES = shown_modules(REPO)


HELP_PROBE = """
import contextlib, io, json, runpy, sys, traceback
dest, modules, out = sys.argv[1], sys.argv[2:], {}
for module in modules:
    buf = io.StringIO()
    sys.argv = [module, "--help"]
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        status = 0
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        status = 1
        buf.write(traceback.format_exc())
    out[module] = [status, buf.getvalue()[-600:]]
with open(dest, "w") as f:
    json.dump(out, f)
"""
"""``python -m X --help`` for each module named after the output file, in one interpreter, as ``-m`` runs a module
(``runpy``): {module: [exit status, output tail]} written to the output file."""


@pytest.fixture(scope="module")
def help_results(tmp_path_factory) -> dict[str, tuple[int, str]]:
    """``python -m X --help`` for every shown module: module -> (exit status, output tail). One interpreter runs them
    all in turn (:data:`HELP_PROBE`), so the heavy imports are paid once."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", DS_ACCELERATOR="cpu", WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    out = tmp_path_factory.mktemp("help") / "help.json"
    p = subprocess.run([sys.executable, "-c", HELP_PROBE, str(out), *MODULES], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=600)  # fmt: skip
    assert p.returncode == 0 and out.is_file(), (p.stdout + p.stderr)[-3000:]
    return {m: tuple(v) for m, v in json.loads(out.read_text()).items()}


def test_docs_show_modules():
    # the docs show the entry points users run; an empty set would mean the pattern no longer matches anything
    assert {"maskgrpo.train", "eval.shapes_eval", "eval.geneval_generate"} <= set(MODULES)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_shown_module_answers_help(module, help_results):
    status, tail = help_results[module]
    assert status == 0, f"`python -m {module} --help` (shown at {MODULES[module]}) exited {status}:\n{tail}"
