"""Issue 26 item 5: no silent loss of history. Every checkpoint holds a copy of metrics.jsonl; ``--resume`` restores
the rounds the file lost (deleted, or truncated to its first line) with a one-line note, so the final metrics.jsonl
equals the uninterrupted run's (wall-clock keys aside).

NEEDS THE TRAINER INTEGRATION: ``save_checkpoint(..., metrics=self.log.path)`` in ``Trainer._save`` and
``self.log.truncate_after(self.state.round, checkpoint=path)`` on resume; before it, the
resumed run writes only the new rounds and these tests fail.
"""

import shutil

import pytest
from conftest import tiny_run
from test_faults_run import KEEP3, copy_run, ok, same_weights, train
from test_train import read_jsonl
from test_world_size import without_wall_clock

from maskgrpo.checkpoint import METRICS_COPY

pytestmark = pytest.mark.slow  # trainer runs resumed after their metrics were damaged


@pytest.fixture(scope="module")
def four_rounds(toy_base_dir, tmp_path_factory):
    """The uninterrupted reference: 1 rank, 4 rounds, a checkpoint every round."""
    out = tmp_path_factory.mktemp("history") / "four"
    ok(train(tiny_run(toy_base_dir, out, rounds=4, **KEEP3)))
    return out


@pytest.mark.parametrize(
    "damage, restored",
    [(lambda p: p.unlink(), "rounds 1-3"),
     (lambda p: p.write_text(p.read_text().splitlines()[0] + "\n"), "rounds 2-3")],
    ids=["deleted", "first_line_only"],
)  # fmt: skip
def test_lost_metrics_are_restored_on_resume(damage, restored, toy_base_dir, four_rounds, tmp_path):
    run = copy_run(four_rounds, tmp_path / "run")
    ckpt = run / "checkpoints"
    assert (ckpt / "round-000003" / METRICS_COPY).read_text().count("\n") == 3  # the copy: rounds 1..3 at the save
    for p in [ckpt / "round-000004", run / "final"]:  # as if the 3-round run had finished here ...
        shutil.rmtree(p)
    (ckpt / "latest").write_text("round-000003")
    metrics = run / "metrics.jsonl"
    metrics.write_text("".join(line + "\n" for line in metrics.read_text().splitlines()[:3]))
    damage(metrics)  # ... and its metrics.jsonl was then deleted or cut
    log = ok(train([*tiny_run(toy_base_dir, run, rounds=4, **KEEP3), "--resume"]))  # resume for more rounds
    assert f"{metrics} lacked {restored}: restored from {ckpt / 'round-000003' / METRICS_COPY}" in log, log[-3000:]
    got, want = read_jsonl(metrics), read_jsonl(four_rounds / "metrics.jsonl")
    assert [m["round"] for m in got] == [1, 2, 3, 4]
    assert without_wall_clock(got) == without_wall_clock(want)
    assert same_weights(run, four_rounds)
