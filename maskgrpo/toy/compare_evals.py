"""``python -m maskgrpo.toy.compare_evals RUN_DIR``: held-out ShapesEval before vs after RL, as a markdown table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from maskgrpo.scoring.geneval_rules import GENEVAL_TAGS


def before_after_table(before: dict, after: dict) -> str:
    keys = [*GENEVAL_TAGS, "overall", "partial_mean"]
    lines = ["| metric | before | after | delta |", "|---|---|---|---|"]
    for k in keys:
        if k in before and k in after:
            lines.append(f"| {k} | {before[k]:.3f} | {after[k]:.3f} | {after[k] - before[k]:+.3f} |")
    return "\n".join(lines)


def main() -> None:
    run = Path(sys.argv[1])
    files = [run / "eval_before.json", run / "eval_after.json"]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        sys.exit(f"error: missing {missing} (was the run configured with an eval: section?)")
    before, after = (json.loads(f.read_text()) for f in files)
    print(f"Held-out ShapesEval, {after.get('num_images', '?')} images ({run}):")
    print(before_after_table(before, after))
    train = [run / "eval_before_train.json", run / "eval_after_train.json"]  # eval.train_prompts_per_tag > 0
    if all(f.is_file() for f in train):
        before, after = (json.loads(f.read_text()) for f in train)
        print(f"\nShapesEval on training captions (in-distribution), {after.get('num_images', '?')} images:")
        print(before_after_table(before, after))


if __name__ == "__main__":
    main()
