"""Reward servers as part of a launch: start a config's servers on named GPUs, wait until each answers, run the
training command, stop the servers when it ends (``START_REWARDS=1`` in the GPU launchers).

    python -m maskgrpo.reward_launch --config CONFIG [key=value ...] --gpus 6,7 --log-dir DIR \\
        [--python hpsv3=/envs/hpsv3/bin/python] [--wait-s 900] -- deepspeed ... (the training command)

Which servers: every reward of the config listed in :data:`SERVERS` (HPSv3, UnifiedReward) whose URL is on this
machine (127.0.0.1 / localhost); server i of them gets GPU ``gpus[i % len(gpus)]`` (``CUDA_VISIBLE_DEVICES``) and
the port of its URL. A server already answering ``GET /health`` on that port is used as it is (and not stopped).
Other rewards (CLIP in the trainer; GenEval / DeQA behind the public reward-server; a URL on another machine) are
not started here; ``python -m maskgrpo.rewards.check`` tests those endpoints.

Each server runs ``python -m maskgrpo.rewards.serve`` with this repository on ``PYTHONPATH``, in the interpreter
given by ``--python NAME=PATH`` (the judge's own environment: HPSv3 pins transformers 4.45.2), its output in
``DIR/<name>.log``. A server loads its model before it opens its port, so the wait is bounded in minutes
(``--wait-s``, default 900) with a progress line every ``--progress-s`` seconds; a server that exits while loading
stops the launch at once with the end of its log. The servers die with this process (``PR_SET_PDEATHSIG``) and are
stopped (SIGTERM, then SIGKILL) when the training command ends, whatever its exit status, which is returned.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from maskgrpo.errors import RunError, add_traceback_flag, one_line_errors

REPO = Path(__file__).resolve().parents[1]
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ServerSpec:
    """How the launcher serves one registered reward."""

    scorer: str
    """``module:factory`` for ``maskgrpo.rewards.serve --scorer``."""
    kwargs: dict[str, Any]
    """``--scorer-kwargs`` (the device is always ``cuda``: ``CUDA_VISIBLE_DEVICES`` names the GPU)."""
    python_env: str
    """Launcher variable naming the judge environment's interpreter."""
    weights_gb: float
    """Approximate bf16 weight memory of the judge on its GPU (activations of a batch come on top)."""
    environment: str
    """What that environment needs."""


SERVERS: dict[str, ServerSpec] = {
    "hpsv3": ServerSpec("maskgrpo.rewards.scorers:make_hpsv3", {"device": "cuda"}, "HPSV3_PYTHON", 16.0,
                        "own venv: pip install hpsv3 (pins transformers 4.45.2); 7B Qwen2-VL"),
    "unifiedreward": ServerSpec("maskgrpo.rewards.scorers:make_unifiedreward", {"device": "cuda"},
                                "UNIFIEDREWARD_PYTHON", 16.0,
                                "transformers >= 4.49 with Qwen2.5-VL (this repository's venv has it); 7B judge"),
}  # fmt: skip
"""Rewards the launcher can serve (docs/gpu.md, "Where the reward servers go")."""
CLIP_IN_TRAINER_GB = 1.6
"""CLIP ViT-L/14 in the trainer, fp32: about 0.4 B parameters x 4 B, on every training rank."""


@dataclass(frozen=True)
class Endpoint:
    """One reward of the config that talks HTTP."""

    name: str
    """Config key (``rewards.<name>``)."""
    reward: str
    """Registered reward."""
    url: str
    protocol: str

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 80

    @property
    def local(self) -> bool:
        return self.host in LOOPBACK


def endpoints(cfg: Any) -> list[Endpoint]:
    """The config's HTTP rewards with the URL and protocol their client will use (built, never contacted)."""
    from maskgrpo.rewards.base import REWARDS
    from maskgrpo.rewards.client import is_remote_entry

    out = []
    for name, entry in cfg.rewards.items():
        reg = entry.entry or name
        if reg not in REWARDS or not is_remote_entry(REWARDS.get(reg)):
            continue
        client = REWARDS.get(reg)(**entry.kwargs)
        out.append(Endpoint(name, reg, client.url, getattr(client, "protocol", "json")))
    return out


def parse_gpus(text: str) -> list[int]:
    """``"6,7"`` -> [6, 7]; a bad list is a RunError naming it."""
    try:
        gpus = [int(g) for g in text.split(",") if g.strip() != ""]
    except ValueError:
        gpus = []
    if not gpus or any(g < 0 for g in gpus):
        raise RunError(f"REWARD_GPUS must list GPU indices, e.g. 6,7 (got {text!r})")
    return gpus


def assign(served: list[Endpoint], gpus: list[int]) -> dict[str, int]:
    """Server i of ``served`` -> ``gpus[i % len(gpus)]`` (two servers on one GPU when one GPU is named)."""
    return {e.name: gpus[i % len(gpus)] for i, e in enumerate(served)}


def to_serve(eps: list[Endpoint]) -> list[Endpoint]:
    """Endpoints the launcher starts: a served reward on this machine."""
    return [e for e in eps if e.reward in SERVERS and e.local]


# ---------------------------------------------------------------------------------------------------------------
# The placement, printed by the dry run


def render_placement(cfg: Any, start: bool, reward_gpus: str, train_gpus: list[int], peak_bytes: float | None,
                     gpu_mem_gb: float, pythons: dict[str, str]) -> tuple[str, list[str]]:  # fmt: skip
    """The reward servers' placement and memory (text) and the problems a real launch would stop on."""
    eps = endpoints(cfg)
    problems: list[str] = []
    how = ("(START_REWARDS=1: started on this node, waited for, stopped at exit)" if start
           else "(START_REWARDS=0: expected running; `python -m maskgrpo.rewards.check` tests them)")  # fmt: skip
    lines = [f"reward servers {how}"]
    gpus: list[int] = []
    if start:
        try:
            gpus = parse_gpus(reward_gpus) if reward_gpus else []
        except RunError as e:
            problems.append(str(e))
        if not gpus and not problems:
            problems.append("START_REWARDS=1 needs REWARD_GPUS (e.g. 6,7 with TRAIN_GPUS=0,1,2,3,4,5, or 7 to share "
                            "GPU 7 with training): docs/gpu.md, 'Where the reward servers go'")  # fmt: skip
    served = to_serve(eps) if start else []
    where = assign(served, gpus) if gpus else {}
    extra: dict[int, float] = {}
    for e in eps:
        spec = SERVERS.get(e.reward)
        if e in served and spec is not None:
            gpu = where.get(e.name)
            py = pythons.get(e.reward) or ""
            if not py:
                problems.append(f"START_REWARDS=1 serves {e.name}: set {spec.python_env} to its environment's python "
                                f"({spec.environment})")  # fmt: skip
            if gpu is not None:
                extra[gpu] = extra.get(gpu, 0.0) + spec.weights_gb
            lines.append(f"  {e.name:<15}{e.url:<36}GPU {gpu if gpu is not None else '?':<4} about "
                         f"{spec.weights_gb:g} GB (bf16 weights) + activations   python {py or 'UNSET'}")  # fmt: skip
        elif spec is not None and start and not e.local:
            lines.append(f"  {e.name:<15}{e.url:<36}on another machine: not started here")
        else:
            lines.append(f"  {e.name:<15}{e.url:<36}not started by the launcher ({e.protocol})")
    for name, entry in cfg.rewards.items():
        if (entry.entry or name) == "clip":
            lines.append(f"  {name:<15}{'in the trainer':<36}every training rank: about {CLIP_IN_TRAINER_GB:g} GB "
                         "(CLIP ViT-L/14, fp32; counted in the memory above)")  # fmt: skip
    shared = sorted(g for g in extra if g in train_gpus)
    for g in shared:
        need = (peak_bytes or 0) / 1e9 + extra[g]
        verdict = "fits" if need <= gpu_mem_gb else "DOES NOT FIT"
        lines.append(f"  co-located: GPU {g} runs a training rank (peak {(peak_bytes or 0) / 1e9:.1f} GB) and "
                     f"{extra[g]:g} GB of judge weights: {need:.1f} GB, {verdict} in {gpu_mem_gb:g} GB")  # fmt: skip
        if need > gpu_mem_gb:
            problems.append(f"GPU {g}: training ({(peak_bytes or 0) / 1e9:.1f} GB) + reward judges ({extra[g]:g} GB) "
                            f"do not fit in {gpu_mem_gb:g} GB: use other REWARD_GPUS")  # fmt: skip
    return "\n".join(lines + ["-" * 100]), problems


# ---------------------------------------------------------------------------------------------------------------
# Start, wait, run, stop


def healthy(url: str, timeout: float = 2.0) -> bool:
    """Does ``GET <scheme://host:port>/health`` answer 200?"""
    parts = urlsplit(url)
    try:
        with urllib.request.urlopen(f"{parts.scheme}://{parts.netloc}/health", timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _die_with_parent() -> None:  # runs in the child before exec (Linux): SIGTERM when this supervisor dies
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclass
class Server:
    endpoint: Endpoint
    gpu: int
    log: Path
    proc: subprocess.Popen | None = None
    """None when a server already answered on the port (used, never stopped)."""
    ready_after: float | None = None


def start(ep: Endpoint, gpu: int, python: str, scorer: str, kwargs: dict[str, Any] | None, log_dir: Path) -> Server:
    """``python -m maskgrpo.rewards.serve`` for ``ep`` on ``gpu``, output to ``log_dir/<name>.log``."""
    log = log_dir / f"{ep.name}.log"
    srv = Server(ep, gpu, log)
    if healthy(ep.url):
        srv.ready_after = 0.0
        return srv
    cmd = [python, "-m", "maskgrpo.rewards.serve", "--scorer", scorer, "--host", ep.host, "--port", str(ep.port)]
    if kwargs is not None:
        cmd += ["--scorer-kwargs", json.dumps(kwargs)]
    if ep.protocol == "pickle":
        cmd.append("--allow-pickle")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(gpu),
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}  # fmt: skip
    with open(log, "ab") as f:
        srv.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT,
                                    start_new_session=True, preexec_fn=_die_with_parent)  # fmt: skip
    return srv


def tail(path: Path, lines: int = 12) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(line.strip() for line in text[-lines:] if line.strip()) or "(empty log)"


def wait_ready(servers: list[Server], wait_s: float, progress_s: float, poll_s: float = 1.0) -> None:
    """Until every server answers /health; RunError when one exits (with its log's end) or after ``wait_s``."""
    t0 = time.monotonic()
    last = t0
    while True:
        now = time.monotonic()
        for s in servers:
            if s.ready_after is not None:
                continue
            if healthy(s.endpoint.url):
                s.ready_after = now - t0
                print(f"[rewards] {s.endpoint.name} ready on GPU {s.gpu} ({s.endpoint.url}) after "
                      f"{s.ready_after:.0f} s", flush=True)  # fmt: skip
            elif s.proc is not None and s.proc.poll() is not None:
                raise RunError(f"reward server {s.endpoint.name} exited with status {s.proc.returncode} before it "
                               f"answered (GPU {s.gpu}, {s.endpoint.url}); end of {s.log}: {tail(s.log)}")  # fmt: skip
        waiting = [s for s in servers if s.ready_after is None]
        if not waiting:
            return
        if now - t0 > wait_s:
            names = ", ".join(f"{s.endpoint.name} (log {s.log})" for s in waiting)
            raise RunError(f"reward server(s) not ready after {wait_s:g} s (REWARD_WAIT_S): {names}")
        if now - last >= progress_s:
            last = now
            state = ", ".join(f"{s.endpoint.name} " + ("ready" if s.ready_after is not None else "loading")
                              for s in servers)  # fmt: skip
            print(f"[rewards] waiting {now - t0:.0f} s of at most {wait_s:g} s: {state}", flush=True)
        time.sleep(poll_s)


def stop(servers: list[Server], grace_s: float = 20.0) -> None:
    """SIGTERM each started server's process group, then SIGKILL what is left after ``grace_s``."""
    started = [s for s in servers if s.proc is not None and s.proc.poll() is None]
    for s in started:
        try:
            os.killpg(s.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    for s in started:
        try:
            s.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(s.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            s.proc.wait()
    if started:
        print(f"[rewards] stopped {', '.join(s.endpoint.name for s in started)}", flush=True)


def run_with_servers(cfg: Any, gpus: list[int], pythons: dict[str, str], scorers: dict[str, str],
                     scorer_kwargs: dict[str, dict], log_dir: Path, wait_s: float, progress_s: float,
                     command: list[str]) -> int:  # fmt: skip
    """Start, wait, run ``command``, stop; returns the command's exit status."""
    served = to_serve(endpoints(cfg))
    missing = [f"{SERVERS[e.reward].python_env} ({e.name})" for e in served if not pythons.get(e.reward)]
    if missing:
        raise RunError(f"START_REWARDS=1: set {', '.join(missing)} to the judge environment's python "
                       "(docs/gpu.md, 'Where the reward servers go')")  # fmt: skip
    log_dir.mkdir(parents=True, exist_ok=True)
    where = assign(served, gpus)
    servers: list[Server] = []
    child: subprocess.Popen | None = None

    def forward(signum: int, frame: Any) -> None:  # a signal to the launch reaches the training, then we stop
        if child is not None and child.poll() is None:
            child.send_signal(signum)
        else:
            raise KeyboardInterrupt

    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        for e in served:
            spec = SERVERS[e.reward]
            scorer = scorers.get(e.reward, spec.scorer)
            kwargs = scorer_kwargs.get(e.reward, spec.kwargs if e.reward not in scorers else None)
            servers.append(start(e, where[e.name], pythons[e.reward], scorer, kwargs, log_dir))
            note = "already answering: used as is" if servers[-1].proc is None else f"log {servers[-1].log}"
            print(f"[rewards] {e.name}: GPU {where[e.name]}, {e.url} ({note})", flush=True)
        wait_ready(servers, wait_s, progress_s)
        child = subprocess.Popen(command)
        return child.wait()
    except KeyboardInterrupt:
        return 130
    finally:
        if child is not None and child.poll() is None:
            child.terminate()
            child.wait()
        stop(servers)
        for s, h in old.items():
            signal.signal(s, h)


def named_values(items: list[str], what: str) -> dict[str, str]:
    """``["hpsv3=/envs/h/bin/python"]`` -> ``{"hpsv3": "/envs/h/bin/python"}``; no ``=``: RunError naming ``what``."""
    out = {}
    for item in items:
        if "=" not in item:
            raise RunError(f"{what} takes NAME=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k] = v
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--gpus", required=True, help="GPU indices for the servers, e.g. 6,7 (REWARD_GPUS)")
    ap.add_argument("--log-dir", required=True, help="folder for <name>.log of each server")
    ap.add_argument("--python", action="append", default=[], metavar="REWARD=PATH", help="judge interpreter")
    ap.add_argument("--scorer", action="append", default=[], metavar="REWARD=MODULE:ATTR",
                    help="serve another scorer for REWARD (no --scorer-kwargs unless given)")  # fmt: skip
    ap.add_argument("--scorer-kwargs", action="append", default=[], metavar="REWARD=JSON")
    ap.add_argument("--wait-s", type=float, default=900.0, help="longest wait for all servers (REWARD_WAIT_S)")
    ap.add_argument("--progress-s", type=float, default=15.0, help="seconds between progress lines")
    ap.add_argument("overrides", nargs="*")
    add_traceback_flag(ap)
    args = ap.parse_args(argv[:cut])
    command = argv[cut + 1 :]
    with one_line_errors(args.traceback):
        from maskgrpo.config import load_config
        from maskgrpo.config.schema import TrainRun

        if not command:
            raise RunError("give the training command after -- (e.g. -- deepspeed ... --module maskgrpo.train ...)")
        cfg = load_config(TrainRun, args.config, args.overrides)
        kwargs = {k: json.loads(v) for k, v in named_values(args.scorer_kwargs, "--scorer-kwargs").items()}
        return run_with_servers(cfg, parse_gpus(args.gpus), named_values(args.python, "--python"),
                                named_values(args.scorer, "--scorer"), kwargs, Path(args.log_dir), args.wait_s,
                                args.progress_s, command)  # fmt: skip
    return 2


if __name__ == "__main__":
    sys.exit(main())
