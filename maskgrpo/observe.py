"""Observability: per-phase model-forward counters, metrics JSONL + wandb, rollout image grids."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import textwrap
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from maskgrpo.atomic import write_atomic
from maskgrpo.errors import RunError
from maskgrpo.jsonl import read_append_log
from maskgrpo.run_dir import writing


class ForwardCounter:
    """Counts sequences (rows) and calls through a model, per phase; attach once to the innermost model.

    One "forward" = one sequence through the network, so a call on a (R, T) batch adds R. The phase is set by the
    trainer (``counter.phase = "update"``).
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.phase = "other"
        self.rows: dict[str, int] = defaultdict(int)
        self.calls: dict[str, int] = defaultdict(int)
        model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def __deepcopy__(self, memo: dict) -> ForwardCounter:
        return self  # a frozen reference copy of the model (deepcopy) keeps counting into the same counter

    def _hook(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.rows[self.phase] += int(ids.shape[0])
        self.calls[self.phase] += 1

    def reset(self) -> dict[str, int]:
        out = {f"perf/forwards_{k}": v for k, v in self.rows.items()}
        out.update({f"perf/calls_{k}": v for k, v in self.calls.items()})
        self.rows.clear()
        self.calls.clear()
        return out


@contextlib.contextmanager
def progress_bars_closed_on_error() -> Iterator[None]:
    """Close every open tqdm bar when an error leaves the block, so the one-line error starts on a clean line."""
    try:
        yield
    except BaseException:
        from tqdm import tqdm

        for bar in list(getattr(tqdm, "_instances", ())):
            bar.close()
        raise


class MetricsLog:
    """Appends one JSON line per round to ``metrics.jsonl`` (rank 0) and mirrors to wandb when enabled.

    Every checkpoint holds a copy of the file (``save_checkpoint(..., metrics=log.path)``). On resume
    (:meth:`truncate_after`) rounds after the checkpoint are dropped, rounds the file lost (deleted, truncated) are
    restored from the checkpoint's copy with a one-line note, and rounds that neither holds are named in a warning.
    A crash can cut the last line short: it is dropped with a one-line note; any other bad line stops the run with a
    RunError naming the file and line. A failed write (full disk) is a RunError naming the file.
    """

    def __init__(self, run_dir: Path, enabled: bool) -> None:
        self.run_dir = run_dir
        self.path = run_dir / "metrics.jsonl"
        self.enabled = enabled
        self.wandb = None

    def start_wandb(self, mode: str, project: str, config: dict) -> None:
        """Mirror to wandb (rank 0, mode not 'disabled'); called once the run folder may be written."""
        if self.enabled and mode != "disabled":
            import wandb

            os.environ.setdefault("WANDB_DIR", str(self.run_dir))
            self.wandb = wandb.init(project=project, mode=mode, config=config, dir=str(self.run_dir),
                                    name=self.run_dir.name, resume="allow")  # fmt: skip

    def truncate_after(self, last_round: int, checkpoint: Path | None = None) -> None:
        """On resume from the checkpoint of round ``last_round`` (the folder ``checkpoint``): keep rounds 1..last_round
        (lines of later rounds are dropped: their effects were lost), restoring the rounds the file lacks from the
        checkpoint's copy of it. Prints one note naming the restored rounds, one warning naming rounds lost for good
        (a checkpoint without a copy)."""
        from maskgrpo.checkpoint import METRICS_COPY

        if not self.enabled:
            return
        rows = self._read(self.path) if self.path.is_file() else []
        kept = [(obj["round"], raw) for obj, raw in rows if obj["round"] <= last_round]
        missing = sorted(set(range(1, last_round + 1)) - {r for r, _ in kept})
        copy = checkpoint / METRICS_COPY if checkpoint is not None else None
        saved = {obj["round"]: raw for obj, raw in self._read(copy)} if copy is not None and copy.is_file() else {}
        restored = [r for r in missing if r in saved]
        if restored:
            kept = sorted(kept + [(r, saved[r]) for r in restored], key=lambda x: x[0])
            print(f"[train] note: {self.path} lacked {self._rounds(restored)}: restored from {copy}", flush=True)
        if lost := [r for r in missing if r not in saved]:
            where = f"{copy} does not hold them" if copy is not None and copy.is_file() else "no copy to restore from"
            print(f"[train] warning: {self.path} lacks {self._rounds(lost)} ({where}): their metrics are lost",
                  file=sys.stderr, flush=True)  # fmt: skip
        with writing(self.path):
            write_atomic(self.path, "".join(raw + "\n" for _, raw in kept))

    @staticmethod
    def _read(path: Path) -> list[tuple[dict, str]]:
        """(object, raw line) of every intact line; a torn last line is dropped with a note, a bad line is RunError."""
        try:
            rows, torn = read_append_log(path, required=("round",))
        except ValueError as e:
            raise RunError(str(e)) from e
        if torn is not None:
            print(f"[train] note: {path}:{torn}: dropped a torn last line (cut short by a crash)", flush=True)
        return [(obj, raw) for _, obj, raw in rows]

    @staticmethod
    def _rounds(rounds: list[int]) -> str:
        """[1, 2, 3, 5] -> 'rounds 1-3, 5'; [4] -> 'round 4'."""
        spans: list[list[int]] = []
        for r in rounds:
            if spans and r == spans[-1][1] + 1:
                spans[-1][1] = r
            else:
                spans.append([r, r])
        text = ", ".join(f"{a}-{b}" if b > a else f"{a}" for a, b in spans)
        return f"round{'s' * (len(rounds) > 1)} {text}"

    def log(self, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with writing(self.path), self.path.open("a") as f:
            f.write(json.dumps(metrics) + "\n")
        if self.wandb is not None:
            self.wandb.log(metrics, step=metrics["round"])

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()


GRID_LINE_PX = 12
"""Height of one label line of PIL's default bitmap font (about 6 px per character)."""
GRID_BORDER_PX = 4
"""Width of the verdict border around a tile's image (white without a verdict)."""
GRID_GAP_PX = 4
"""Blank space right of every tile."""
GRID_HEADER_PX = 16
"""Height of a section's header line."""
MARKS: dict[bool, tuple[str, tuple[int, int, int]]] = {True: ("pass", (0, 140, 0)), False: ("FAIL", (210, 0, 0))}
"""Verdict -> (word, RGB) of a tile's mark: a border of that colour plus the word, never colour alone."""


def labelled_grid(images: np.ndarray, texts: list[str], passed: list[bool] | None = None,
                  sections: list[tuple[str, list[int]]] | None = None, columns: int = 4, scale: int = 3,
                  lines: int = 3) -> Image.Image:  # fmt: skip
    """A grid of labelled tiles: each image upscaled ``scale``x (nearest), its text wrapped under it.

    images: (B, H, W, 3) uint8; texts: B labels (at most ``lines`` wrapped lines each). ``passed``: B verdicts;
    each tile then gets a :data:`MARKS` border and its word on the first label line, in the mark's colour.
    ``sections``: (header, image indices) pairs; each starts a new row of tiles under its header line (an empty
    header draws no line). Default: every image in one section without header. Tile width is
    max(W * scale + 2 * border, 160) px + gap; tile height 2 * border + H * scale + 4 + 12 px per label line.
    """
    n, h, w, _ = images.shape
    verdicts = n if passed is None else len(passed)
    if len(texts) != n or verdicts != n:
        raise ValueError(f"labelled_grid: {n} images but {len(texts)} texts and {verdicts} verdicts")
    sections = sections if sections is not None else [("", list(range(n)))]
    b = GRID_BORDER_PX
    tw = max(w * scale + 2 * b, 160)
    chars = tw // 6
    label_lines = lines + (passed is not None)
    th = 2 * b + h * scale + 4 + GRID_LINE_PX * label_lines
    cols = max(1, min(columns, max((len(idx) for _, idx in sections), default=1)))
    height = sum(GRID_HEADER_PX * bool(head) + -(-len(idx) // cols) * th for head, idx in sections)
    canvas = Image.new("RGB", (cols * (tw + GRID_GAP_PX), max(height, 1)), "white")
    draw = ImageDraw.Draw(canvas)
    y = 0
    for head, idx in sections:
        if head:
            draw.text((2, y + 2), textwrap.shorten(head, canvas.width // 6 - 1, placeholder="..."), fill="black")
            y += GRID_HEADER_PX
        for k, i in enumerate(idx):
            r, c = divmod(k, cols)
            x0, y0 = c * (tw + GRID_GAP_PX), y + r * th
            text_y = y0 + 2 * b + h * scale + 2
            if passed is not None:
                word, colour = MARKS[bool(passed[i])]
                draw.rectangle((x0, y0, x0 + w * scale + 2 * b - 1, y0 + h * scale + 2 * b - 1), fill=colour)
                draw.text((x0 + 1, text_y), word, fill=colour)
                text_y += GRID_LINE_PX
            canvas.paste(Image.fromarray(images[i]).resize((w * scale, h * scale), Image.NEAREST), (x0 + b, y0 + b))
            for j, line in enumerate(textwrap.wrap(texts[i], chars)[:lines]):
                draw.text((x0 + 1, text_y + GRID_LINE_PX * j), line, fill="black")
        y += -(-len(idx) // cols) * th
    return canvas


def rollout_grid(images: np.ndarray, prompts: list[str], rewards: np.ndarray, path: Path, scale: int = 3) -> None:
    """A labelled grid of rollouts: each tile shows the image, its reward and the prompt (wrapped under it)."""
    texts = [f"R={r:.2f} {p.removeprefix('a photo of ')}" for r, p in zip(rewards, prompts)]
    labelled_grid(images, texts, scale=scale).save(path)
