"""The MMaDA GPU launchers on a CPU machine: dry runs (plan, batch arithmetic, path checks, errors), the memory
formulas of docs/models.md section 6, and one real launch through the DeepSpeed launcher with a tiny checkpoint."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, TINY_RUN, UNSET, free_ports, tiny_run
from tiny_models import build_tiny_clip, build_tiny_mmada, write_prompts

from maskgrpo.config import load_config
from maskgrpo.config.schema import TrainRun
from maskgrpo.launch_plan import GB, ModelSize, batch_plan, check_inputs, classify_path, memory_estimate

HT_CONFIG = REPO / "configs" / "mmada_htgrpo.yaml"


def launch(script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **env}
    return subprocess.run(["bash", f"launch/{script}", *args], cwd=REPO, env=full_env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def value(out: str, label: str) -> str:
    """The value column of a plan line ``<label>   <value>   <note>``."""
    m = re.search(rf"^{re.escape(label)}\s+(\S+)", out, flags=re.M)
    assert m, f"no line {label!r} in:\n{out}"
    return m.group(1)


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> Path:
    return write_prompts(tmp_path_factory.mktemp("prompts") / "train.jsonl")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_mmada(tmp_path_factory.mktemp("tiny"))


@pytest.mark.slow
def test_dry_run_flag_six_gpus_zero3_local_checkpoint(prompts, tiny, tmp_path) -> None:
    r = launch("mmada_maskgrpo.sh", "--dry-run", "rl.rounds=10", NUM_GPUS="6", ZERO_STAGE="3",
               MODEL_PATH=str(tiny.model_dir), VQ_PATH=str(tiny.vq_dir), PROMPTS=str(prompts),
               OUTPUT_DIR=str(tmp_path / "out"), GRAD_CKPT="0")  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert value(out, "ZeRO stage") == "3" and "configs/deepspeed/zero3.json" in out
    assert value(out, "prompts per GPU") == "4"  # 24 / 6
    assert value(out, "rollouts per GPU") == "36"  # 4 x 9
    assert value(out, "gradient accumulation steps") == "4"  # 4 / 1
    assert value(out, "rounds") == "10"  # the extra override reached the config
    assert re.search(r"backbone.path\s+local dir\s+" + re.escape(str(tiny.model_dir)), out)
    # tiny config.json: L=2, C=64, F=128, V=134656, untied:
    # 2 * (4*64^2 + 3*64*128 + 2*64) + 2 * 134656 * 64 + 64 = 2 * 41088 + 17,235,968 + 64 = 17,318,208
    assert "17,318,208 params" in out and "config.json" in out
    assert "no checkpointing" in out and "gradient_checkpointing=false" in out


def test_bad_override_exits_nonzero_naming_the_key(prompts) -> None:
    r = launch("mmada_maskgrpo.sh", "rl.group_sizee=4", DRY_RUN="1", PROMPTS=str(prompts))
    assert r.returncode == 2
    assert "unknown key 'rl.group_sizee'" in r.stderr and "Did you mean 'rl.group_size'" in r.stderr


@pytest.mark.slow
def test_bad_launch_variables_fail_clearly(prompts) -> None:
    r = launch("mmada_maskgrpo.sh", DRY_RUN="1", PROMPTS=str(prompts), ZERO_STAGE="1")
    assert r.returncode == 2 and "ZERO_STAGE must be 2 or 3" in r.stderr
    r = launch("mmada_maskgrpo.sh", DRY_RUN="1", PROMPTS=str(prompts), NUM_GPUS="5")
    assert r.returncode == 2 and "prompts.per_round=24 must divide by the 5 GPUs" in r.stderr
    r = launch("mmada_maskgrpo.sh", DRY_RUN="1", PROMPTS=str(prompts), GRAD_CKPT="maybe")
    assert r.returncode == 2 and "GRAD_CKPT must be 1 or 0" in r.stderr


@pytest.mark.slow
def test_missing_paths_and_unknown_options_are_reported(tmp_path) -> None:
    r = launch("mmada_maskgrpo.sh", "backbone.options.text_windw=17", DRY_RUN="1",
               PROMPTS=str(tmp_path / "nope.jsonl"), MODEL_PATH=str(tmp_path / "no_model"))  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr
    assert value(r.stdout, "rollouts per round") == "216"  # the plan is still printed
    assert f"prompts.source: {tmp_path / 'nope.jsonl'} (MISSING)" in r.stderr
    assert f"backbone.path: {tmp_path / 'no_model'} (MISSING)" in r.stderr
    assert "unknown option(s) ['text_windw'] for backbone 'mmada'" in r.stderr


def test_classify_path(tmp_path) -> None:
    (tmp_path / "f.jsonl").write_text("{}\n")
    assert classify_path(str(tmp_path)) == ("local dir", True)
    assert classify_path(str(tmp_path / "f.jsonl"), "file") == ("local file", True)
    assert classify_path(str(tmp_path / "f.jsonl"), "dir") == ("not a directory", False)
    assert classify_path("Gen-Verse/MMaDA-8B-Base") == ("hub id (cache: see weights)", True)
    assert classify_path("Gen-Verse/MMaDA-8B-Base", "file") == ("MISSING", False)  # a JSONL is never a hub id
    assert classify_path("./runs/x") == ("MISSING", False) and classify_path("a/b/c") == ("MISSING", False)


def test_check_inputs_on_a_local_dir_without_weights(prompts, tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "cfg_only").mkdir()
    (tmp_path / "cfg_only" / "config.json").write_text("{}")
    for model_dir, problem in [("empty", "has no config.json"), ("cfg_only", "has config.json but no model.safet")]:
        cfg = load_config(TrainRun, REPO / "configs/mmada_maskgrpo.yaml",
                          [f"backbone.path={tmp_path / model_dir}", f"prompts.source={prompts}"])  # fmt: skip
        rows, problems, options = check_inputs(cfg)
        assert len(problems) == 1 and problem in problems[0], problems
        assert options["text_window"] == 513 and options["gradient_checkpointing"] is True


def test_memory_formulas_match_models_md_6() -> None:
    mmada, llada = ModelSize(), ModelSize(vocab=126464)
    assert mmada.params_per_block == 218_112_000 and mmada.params == 8_082_690_048
    assert llada.params == 8_015_581_184
    assert mmada.lora_params(128, ("q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out")) == (
        335_544_320
    )  # fmt: skip
    assert mmada.lora_params(128, ("q_proj", "k_proj", "v_proj", "up_proj")) == 167_772_160

    def states(overrides: list[str], gpus: int) -> float:
        cfg = load_config(TrainRun, REPO / "configs/mmada_maskgrpo.yaml", ["rl.kl_beta=0", *overrides])
        plan = batch_plan(cfg, gpus)
        est = memory_estimate(cfg, plan, mmada, 513, 32, 8192, checkpointing=True)
        clip = [b for name, b, _ in est.states if name == "reward models in the trainer (clip)"]
        assert clip == [1.6 * GB]  # CLIP ViT-L/14 in the trainer, fp32: about 0.4 B params x 4 B
        return (est.resident - clip[0]) / GB

    # docs/models.md 6 table, full fine-tuning (16 B/param): ZeRO-2 2 Psi + 14 Psi / N = 30.3 GB (N=8), 35.0 GB (N=6)
    assert states(["lora.enabled=false"], 8) == pytest.approx(30.3, abs=0.05)
    assert states(["lora.enabled=false"], 6) == pytest.approx(35.0, abs=0.05)
    # ZeRO-3: 16 Psi / N = 16.2 GB (N=8) + one gathered block (0.44 GB) + one gathered V x C matrix (1.10 GB)
    z3 = ["lora.enabled=false", "deepspeed.config=configs/deepspeed/zero3.json"]
    assert states(z3, 8) == pytest.approx(16.17 + 0.436 + 1.103, abs=0.01)

    cfg = load_config(TrainRun, REPO / "configs/mmada_maskgrpo.yaml")
    plan = batch_plan(cfg, 8)
    no_ck = memory_estimate(cfg, plan, mmada, 513, 32, 8192, checkpointing=False).phases[0][1] / GB
    ck = memory_estimate(cfg, plan, mmada, 513, 32, 8192, checkpointing=True).phases[0][1] / GB
    # 9 rows x (32 blocks x 240 MB + 2 x 1024 x 8192 x 4 B) = 9 x (7.68 + 0.0671) = 69.7 GB without checkpointing;
    # 9 x (32 x 1539 x 4096 x 2 B + 240 MB + 0.0671) = 9 x (0.4034 + 0.24 + 0.0671) = 6.39 GB with it
    assert no_ck == pytest.approx(69.7, abs=0.05) and ck == pytest.approx(6.39, abs=0.01)


@pytest.mark.slow
def test_real_launch_runs_one_round_on_cpu(tiny, prompts, tmp_path) -> None:
    """bash launch/mmada_maskgrpo.sh without DRY_RUN and with START_REWARDS=1: the launcher starts both reward
    servers (a cheap scorer in place of each judge, REWARD_SCORERS), waits until they answer, runs the DeepSpeed
    launcher on the real YAML (LoRA, checkpointing, three rewards: two over HTTP, CLIP on a tiny local model) for
    one tiny round, and stops the servers at exit."""
    from maskgrpo.reward_launch import healthy

    clip_dir = build_tiny_clip(tmp_path / "clip")
    ports = free_ports(3)  # the two reward servers, the rendezvous
    vq = "{ch: 32, encoder_ch_mult: [1, 1, 2], encoder_num_res_blocks: [1, 1, 1], decoder_ch_mult: [1, 1, 2], " \
         "decoder_num_res_blocks: [1, 1, 1], z_channels: 13}"  # fmt: skip
    out = tmp_path / "run"
    # one round of 2 prompts x G=3, mu=2, 4 sampler steps; the model and output folder come from the environment
    sizes = tiny_run(None, None, rounds=1, **{**dict.fromkeys(TINY_RUN, UNSET), "prompts.per_round": 2,
                                              "rl.group_size": 3, "rl.num_inner_updates": 2, "rollout.num_steps": 4,
                                              "checkpoint.every": 0})  # fmt: skip
    stub = "maskgrpo.rewards.scorers:mean_intensity"
    r = launch("mmada_maskgrpo.sh", f"backbone.options.vq_config={vq}", "backbone.options.text_window=17",
               "backbone.options.grid=4", "backbone.dtype=float32", "deepspeed.precision=fp32", *sizes,
               "lora.r=4", "lora.alpha=8", "run.wandb_mode=disabled",
               NUM_GPUS="1", MODEL_PATH=str(tiny.model_dir), VQ_PATH=str(tiny.vq_dir), CLIP_PATH=str(clip_dir),
               PROMPTS=str(prompts), OUTPUT_DIR=str(out), HPSV3_URL=f"http://127.0.0.1:{ports[0]}/score",
               UNIFIEDREWARD_URL=f"http://127.0.0.1:{ports[1]}/score", MASTER_PORT=str(ports[2]),
               DS_ACCELERATOR="cpu", START_REWARDS="1", REWARD_GPUS="0", HPSV3_PYTHON=sys.executable,
               REWARD_SCORERS=f"hpsv3={stub} unifiedreward={stub}")  # fmt: skip
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-6000:]
    assert "[rewards] hpsv3 ready on GPU 0" in log and "[rewards] unifiedreward ready on GPU 0" in log
    assert "dist_world_size=1" in log  # the DeepSpeed launcher (not a bare python) started the rank
    assert re.search(r"components: .*'rewards': 'hpsv3,clip,unifiedreward'", log), log[-3000:]
    assert "round    1 | reward" in log
    assert log.index("round    1 | reward") < log.index("[rewards] stopped hpsv3, unifiedreward")
    assert (out / "final" / "adapter").is_dir() and (out / "metrics.jsonl").is_file()
    assert (out / "reward_servers" / "hpsv3.log").is_file()
    assert not any(healthy(f"http://127.0.0.1:{p}/score") for p in ports)  # stopped at exit


# ---------------------------------------------------------------------------------------------------------------
# Multi-node: NUM_NODES, HOSTFILE, MASTER_ADDR, TRAIN_GPUS (reward GPUs kept free)


def hostfile(path: Path, hosts: int) -> Path:
    path.write_text("# DeepSpeed hostfile\n" + "".join(f"node-{i} slots=8\n\n" for i in range(hosts)))
    return path


@pytest.mark.slow
@pytest.mark.parametrize(
    "nodes, per_round, micro, expect",
    [
        # 2 x 8 = 16 ranks, P = 48, G = 9, 1 prompt per micro-batch: 48 / 16 = 3 prompts and 27 rollouts per rank;
        # 3 x 8 = 24 prompts and 216 rollouts per node; global batch 48 x 9 = 432; accumulation 3 / 1 = 3
        (2, 48, 1, {"GPUs (ranks)": "16", "prompts per GPU": "3", "rollouts per GPU": "27", "prompts per node": "24",
                    "rollouts per node": "216", "global batch (rollouts per step)": "432",
                    "micro-batch (rollouts)": "9", "gradient accumulation steps": "3"}),
        # 4 x 8 = 32 ranks, P = 128, 2 prompts per micro-batch: 4 prompts and 36 rollouts per rank; 32 prompts and
        # 288 rollouts per node; global batch 128 x 9 = 1152; micro-batch 2 x 9 = 18 rollouts; accumulation 4 / 2 = 2
        (4, 128, 2, {"GPUs (ranks)": "32", "prompts per GPU": "4", "rollouts per GPU": "36", "prompts per node": "32",
                     "rollouts per node": "288", "global batch (rollouts per step)": "1152",
                     "micro-batch (rollouts)": "18", "gradient accumulation steps": "2"}),
    ],
)  # fmt: skip
def test_multi_node_dry_run_plan(prompts, tmp_path, nodes, per_round, micro, expect) -> None:
    hosts = hostfile(tmp_path / "hostfile", 4)
    r = launch("mmada_htgrpo.sh", f"prompts.per_round={per_round}", f"rl.micro_batch_prompts={micro}", DRY_RUN="1",
               PROMPTS=str(prompts), NUM_NODES=str(nodes), HOSTFILE=str(hosts), MASTER_ADDR="10.1.2.3")  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert value(out, "nodes") == str(nodes) and value(out, "GPUs per node") == "8"
    for label, v in expect.items():
        assert value(out, label) == v, label
    # the launcher command: every node through the hostfile, the master address passed on
    assert f"--hostfile {hosts} --num_nodes {nodes} --num_gpus 8 --master_addr 10.1.2.3 --master_port 29500" in out
    # ZeRO-2 partitions the LoRA states over all ranks: 2 Psi_t + 14 Psi_t / N, Psi_t = 335,544,320:
    # N = 16: 0.671 + 0.294 = 0.96 GB; N = 32: 0.671 + 0.147 = 0.82 GB
    assert re.search(r"trainable states, LoRA r=128 on 7 linears/block\s+" + {2: "0.96", 4: "0.82"}[nodes], out)


@pytest.mark.slow
def test_reward_gpus_kept_free_with_train_gpus(prompts, tmp_path) -> None:
    """6 training + 2 reward GPUs per node: TRAIN_GPUS becomes DeepSpeed --include over the hostfile's first hosts."""
    hosts = hostfile(tmp_path / "hostfile", 3)
    r = launch("mmada_maskgrpo.sh", "prompts.per_round=48", DRY_RUN="1", PROMPTS=str(prompts), NUM_NODES="2",
               HOSTFILE=str(hosts), MASTER_ADDR="10.1.2.3", TRAIN_GPUS="0,1,2,3,4,5")  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    cmd = r.stdout.splitlines()[1].replace("\\", "")  # the printed command, shell-quoting removed
    assert "--include node-0:0,1,2,3,4,5@node-1:0,1,2,3,4,5 --master_addr 10.1.2.3" in cmd
    assert "--num_gpus" not in cmd  # DeepSpeed rejects --num_gpus together with --include
    assert value(r.stdout, "GPUs per node") == "6" and value(r.stdout, "GPUs (ranks)") == "12"
    assert value(r.stdout, "prompts per GPU") == "4"  # 48 / (2 x 6)
    one = launch("mmada_maskgrpo.sh", DRY_RUN="1", PROMPTS=str(prompts), TRAIN_GPUS="0,1,2,3,4,5")
    assert one.returncode == 0 and "--include localhost:0,1,2,3,4,5 --master_port" in one.stdout.replace("\\", "")
    assert value(one.stdout, "prompts per GPU") == "4"  # 24 / 6


@pytest.mark.slow
def test_multi_node_launch_variables_fail_clearly(prompts, tmp_path) -> None:
    hosts = hostfile(tmp_path / "hostfile", 2)
    env = {"DRY_RUN": "1", "PROMPTS": str(prompts), "MASTER_ADDR": "10.1.2.3"}
    r = launch("mmada_maskgrpo.sh", NUM_NODES="2", HOSTFILE=str(hosts), **env)  # P = 24 over 16 ranks
    assert r.returncode == 2
    assert "prompts.per_round=24 must divide by the 16 GPUs (NUM_NODES x NUM_GPUS = 2 x 8)" in r.stderr
    # the counts that divide: multiples of 16 x 1 prompt per micro-batch; 3 per GPU (the configs' share) is 48
    divide = "use a multiple of 16: 16, 32, 48, 64, ... (3 per GPU, the configs' share: prompts.per_round=48)"
    assert divide in r.stderr
    r = launch("mmada_maskgrpo.sh", NUM_NODES="2", **env)
    assert r.returncode == 2 and "NUM_NODES=2 needs HOSTFILE" in r.stderr
    r = launch("mmada_maskgrpo.sh", NUM_NODES="4", HOSTFILE=str(hosts), **env)
    assert r.returncode == 2 and f"HOSTFILE={hosts} lists 2 host(s), NUM_NODES=4 needs that many" in r.stderr
    r = launch("mmada_maskgrpo.sh", NUM_NODES="2", HOSTFILE=str(tmp_path / "nope"), **env)
    assert r.returncode == 2 and f"HOSTFILE={tmp_path / 'nope'} not found" in r.stderr
    # no MASTER_ADDR: DeepSpeed's own default, the hostfile's first host (here with a P that does not divide, so the
    # plan stops after the command is printed)
    r = launch("mmada_maskgrpo.sh", NUM_NODES="2", HOSTFILE=str(hosts), DRY_RUN="1", PROMPTS=str(prompts))
    assert "note: MASTER_ADDR not set: using the hostfile's first host, node-0" in r.stderr
    assert "--num_gpus 8 --master_addr node-0 --master_port 29500" in r.stdout
    r = launch("mmada_maskgrpo.sh", NUM_NODES="two", **env)
    assert r.returncode == 2 and "NUM_NODES must be a positive integer, got 'two'" in r.stderr
    r = launch("mmada_maskgrpo.sh", TRAIN_GPUS="0-5", **env)
    assert r.returncode == 2 and "TRAIN_GPUS must list GPU indices (0,1,2,3,4,5): got '0-5'" in r.stderr
    r = launch("mmada_maskgrpo.sh", TRAIN_GPUS="0,1,2,3,4,5", NUM_GPUS="8", **env)
    assert r.returncode == 2 and "NUM_GPUS=8 but TRAIN_GPUS=0,1,2,3,4,5 lists 6 GPUs" in r.stderr


def test_check_inputs_reports_the_geneval_evaluation_and_a_bad_metadata_line(prompts, tmp_path) -> None:
    meta = tmp_path / "evaluation_metadata.jsonl"
    lines = [{"tag": t, "include": [], "prompt": f"{t} {i}"} for t in ("colors", "counting") for i in range(3)]
    meta.write_text("".join(json.dumps(m) + "\n" for m in lines))
    base = [f"prompts.source={prompts}", "eval.every=50", "eval.samples_per_prompt=4"]
    cfg = load_config(TrainRun, HT_CONFIG, [*base, f"eval.geneval={{metadata: {meta}, per_tag: 2}}"])
    rows, problems, _ = check_inputs(cfg)
    found = {what: (value, status) for what, value, status in rows}
    # 2 tags x the first 2 prompts each
    assert found["eval.geneval.metadata"] == (str(meta), "local file; 4 prompt(s) x 4 image(s) before, after and "
                                                         "every 50 round(s)")  # fmt: skip
    assert found["eval.geneval.url"] == ("http://127.0.0.1:18085/", "endpoint, not contacted")
    assert not any("eval.geneval" in p for p in problems)
    meta.write_text(meta.read_text() + "{not json\n")
    _, problems, _ = check_inputs(cfg)
    assert [p for p in problems if p.startswith("eval.geneval")] == [
        f"eval.geneval.metadata: {meta} (unreadable: {meta}:7: not valid JSON: Expecting property name enclosed in "
        "double quotes: line 1 column 2 (char 1))"]  # fmt: skip
    cfg = load_config(TrainRun, HT_CONFIG, [*base, f"eval.geneval={{metadata: {tmp_path / 'none.jsonl'}}}"])
    assert f"eval.geneval.metadata: {tmp_path / 'none.jsonl'} (MISSING)" in check_inputs(cfg)[1]
