"""Observability: per-phase model-forward counters, metrics JSONL + wandb, rollout image grids."""

from __future__ import annotations

import contextlib
import json
import os
import textwrap
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

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

    A crash can cut the last line short: on resume it is dropped with a one-line note; any other bad line stops the
    run with a RunError naming the file and line. A failed write (full disk) is a RunError naming the file.
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

    def truncate_after(self, last_round: int) -> None:
        """On resume: drop lines of rounds that ran after the checkpoint (their effects were lost)."""
        if not (self.enabled and self.path.is_file()):
            return
        try:
            rows, torn = read_append_log(self.path, required=("round",))
        except ValueError as e:
            raise RunError(str(e)) from e
        if torn is not None:
            print(f"[train] note: {self.path}:{torn}: dropped a torn last line (cut short by a crash)", flush=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with writing(self.path):
            tmp.write_text("".join(raw + "\n" for _, obj, raw in rows if obj["round"] <= last_round))
            os.replace(tmp, self.path)

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


def rollout_grid(images: np.ndarray, prompts: list[str], rewards: np.ndarray, path: Path, scale: int = 3) -> None:
    """A labelled grid of rollouts: each tile shows the image, its reward and the prompt (wrapped under it)."""
    n, h, w, _ = images.shape
    tw = max(w * scale, 160)
    chars = tw // 6  # PIL's default bitmap font is about 6 px per character
    label_lines = 3
    th = h * scale + 12 * label_lines + 4
    cols = min(n, 4)
    rows = -(-n // cols)
    canvas = Image.new("RGB", (cols * (tw + 4), rows * th), "white")
    draw = ImageDraw.Draw(canvas)
    for i in range(n):
        r, c = divmod(i, cols)
        x0, y0 = c * (tw + 4), r * th
        canvas.paste(Image.fromarray(images[i]).resize((w * scale, h * scale), Image.NEAREST), (x0, y0))
        text = f"R={rewards[i]:.2f} {prompts[i].removeprefix('a photo of ')}"
        lines = textwrap.wrap(text, chars)[:label_lines]
        for j, line in enumerate(lines):
            draw.text((x0 + 1, y0 + h * scale + 2 + 12 * j), line, fill="black")
    canvas.save(path)
