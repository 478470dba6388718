"""Samplers (docs/models.md 3): contract suite over every registered sampler, then per-algorithm constructed cases.

A fake model honours the call contract (logits only at ``logits_at`` over ``vocab_slice``) with deterministic
logits that depend on every attended input id, so canvas changes, padding and the unconditional row all matter.
"""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from maskgrpo.layout import MMaDALayout, T2IBatch, tiny_mmada
from maskgrpo.models import LLaDAConfig, LLaDAModelLM
from maskgrpo.sampling import (
    SAMPLERS,
    Sampler,
    SamplerOutput,
    StepHook,
    StepInfo,
    build_sampler,
    canvas_ids,
    guided_code_logits,
)
from maskgrpo.sampling.emerge import emerge_transition_probs
from maskgrpo.sampling.maskgit import maskgit_temperatures
from maskgrpo.schedules import cosine_gamma


class FakeLM(nn.Module):
    """Tiny deterministic stand-in for the LLaDA model: token + position embedding, mean context, tanh, linear head.

    Records every call as (rows, logits_at, vocab_slice) so tests can count forwards and check the contract.
    """

    def __init__(self, vocab_size: int, seq_len: int, dim: int = 8, seed: int = 0, dtype: torch.dtype = torch.float32):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("tok", torch.randn(vocab_size, dim, generator=g))
        self.register_buffer("pos", torch.randn(seq_len, dim, generator=g))
        self.register_buffer("head", torch.randn(vocab_size, dim, generator=g))
        self.out_dtype = dtype
        self.calls: list[tuple[int, torch.Tensor, tuple[int, int]]] = []

    def forward(
        self,
        *,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        logits_at: torch.Tensor,
        vocab_slice: tuple[int, int],
    ) -> SimpleNamespace:
        self.calls.append((input_ids.shape[0], logits_at.clone(), tuple(vocab_slice)))
        h = self.tok[input_ids] + self.pos[: input_ids.shape[1]]  # (B, T, D)
        m = attention_mask.unsqueeze(-1).float()  # (B, T, 1)
        ctx = (h * m).sum(1) / m.sum(1)  # (B, D), padding hidden
        h = torch.tanh(h[:, logits_at] + ctx[:, None])  # (B, P, D)
        start, end = vocab_slice
        return SimpleNamespace(logits=(h @ self.head[start:end].T).to(self.out_dtype))  # (B, P, end - start)


class ConstantLM(nn.Module):
    """Ignores its input: the same code logits ``code_logits`` (K,) at every row and image position."""

    def __init__(self, code_logits: torch.Tensor):
        super().__init__()
        self.register_buffer("code_logits", code_logits)

    def forward(
        self,
        *,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        logits_at: torch.Tensor,
        vocab_slice: tuple[int, int],
    ) -> SimpleNamespace:
        assert vocab_slice[1] - vocab_slice[0] == self.code_logits.numel()
        z = self.code_logits.expand(input_ids.shape[0], logits_at.numel(), -1)  # (B, P, K)
        return SimpleNamespace(logits=z.clone())


# A compact layout with a 32x32 grid (N = 1024) and a 16-code codebook, so N=1024 tables are cheap on CPU.
BIG = MMaDALayout(pad_id=0, bos_id=1, eos_id=2, t2i_id=3, soi_id=4, eoi_id=5, mask_id=6, code_offset=7,
                  codebook_size=16, text_window=5, grid_h=32, grid_w=32)  # fmt: skip
TINY = tiny_mmada()  # real MMaDA ids, text window 17, 4x4 grid, K = 8192
TINY_PROMPTS = [[101, 2002, 30003], [7], [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21]]


def tiny_setup(dtype: torch.dtype = torch.float32) -> tuple[FakeLM, T2IBatch]:
    return FakeLM(TINY.vocab_needed, TINY.seq_len, dtype=dtype), TINY.build_batch(TINY_PROMPTS)


def run(sampler: Sampler, model: nn.Module, batch: T2IBatch, seed: int, hook: StepHook | None = None) -> SamplerOutput:
    return sampler.sample(model, batch, torch.Generator().manual_seed(seed), step_hook=hook)


def assert_same(a: SamplerOutput, b: SamplerOutput) -> None:
    for f in dataclasses.fields(SamplerOutput):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, dict):
            assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), f.name
        else:
            assert (x is None and y is None) or torch.equal(x, y), f.name


# ---------------------------------------------------------------- contract suite: every registered sampler

CONFIGS = [(1, 0.0), (4, 2.0), (17, 0.0)]  # (T, w); T=17 > N=16 exercises steps that commit nothing


def test_registry_lists_both_baseline_samplers() -> None:
    assert {"emerge", "maskgit"} <= set(SAMPLERS.names())
    with pytest.raises(KeyError, match="valid names"):
        build_sampler("emerg")


@pytest.mark.parametrize("name", SAMPLERS.names())
@pytest.mark.parametrize("num_steps,cfg_scale", CONFIGS)
def test_contract_every_slot_committed_once(name: str, num_steps: int, cfg_scale: float) -> None:
    model, batch = tiny_setup()
    sampler = build_sampler(name, num_steps=num_steps, cfg_scale=cfg_scale)
    assert (sampler.num_steps, sampler.cfg_scale) == (num_steps, cfg_scale)
    infos: list[StepInfo] = []
    out = run(sampler, model, batch, seed=0, hook=infos.append)
    B, N, K, T = 3, 16, TINY.codebook_size, num_steps

    assert out.codes.shape == out.commit_step.shape == out.logp_at_commit.shape == (B, N)
    assert out.codes.dtype == out.commit_step.dtype == out.n_commit.dtype == torch.long
    assert out.logp_at_commit.dtype == torch.float32 and out.n_commit.shape == (B, T)
    assert int(out.codes.min()) >= 0 and int(out.codes.max()) < K
    assert int(out.commit_step.min()) >= 0 and int(out.commit_step.max()) <= T - 1
    assert torch.equal(out.n_commit.sum(-1), torch.full((B,), N))
    for b in range(B):
        assert torch.equal(out.n_commit[b], torch.bincount(out.commit_step[b], minlength=T))
    assert bool((out.logp_at_commit <= 0).all()) and bool(torch.isfinite(out.logp_at_commit).all())
    if out.score_at_commit is not None:
        assert out.score_at_commit.shape == (B, N) and out.score_at_commit.dtype == torch.float32

    # One forward per step over the distinct rows, head only at image positions over the code slice: the B prompts
    # differ, so B conditional rows, plus with CFG one unconditional row per distinct canvas (1 at the first step,
    # where every canvas is fully masked, and while no row has committed a slot).
    assert len(model.calls) == T
    canvases = [torch.full((B, N), K)] + [i.codes for i in infos[:-1]]  # (B, N) before each step
    for (rows, at, vocab), before in zip(model.calls, canvases, strict=True):
        assert rows == B + (len(torch.unique(before, dim=0)) if cfg_scale > 0 else 0)
        assert torch.equal(at, batch.image_positions)
        assert vocab == (TINY.code_offset, TINY.code_offset + K)

    # Hook: T calls in order, committed sets partition the slots, states replay from commit_step.
    assert [i.step for i in infos] == list(range(T)) and all(i.num_steps == T for i in infos)
    seen = torch.zeros(B, N, dtype=torch.long)
    for s, info in enumerate(infos):
        seen += info.committed.long()
        assert torch.equal(info.committed, out.commit_step == s)
        assert torch.equal(info.codes, torch.where(out.commit_step <= s, out.codes, K))  # masked iff commit_step > s
        assert torch.equal(info.logp[info.committed], out.logp_at_commit[info.committed])
        if out.score_at_commit is not None:
            assert torch.equal(info.score[info.committed], out.score_at_commit[info.committed])
    assert torch.equal(seen, torch.ones(B, N, dtype=torch.long))


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_contract_replayed_states_reproduce_logp(name: str) -> None:
    """State before step s = "masked iff commit_step >= s" (docs/models.md 3.4); log p_s(code) recomputed from it."""
    model, batch = tiny_setup()
    T, K, cfg_scale = 5, TINY.codebook_size, 2.0
    out = run(build_sampler(name, num_steps=T, cfg_scale=cfg_scale), model, batch, seed=3)
    for s in range(T):
        before = torch.where(out.commit_step >= s, K, out.codes)  # (B, N)
        z = guided_code_logits(model, batch, canvas_ids(before, batch), cfg_scale)  # (B, N, K)
        logp = torch.log_softmax(z, -1).gather(-1, out.codes.unsqueeze(-1)).squeeze(-1)  # (B, N)
        at = out.commit_step == s
        torch.testing.assert_close(out.logp_at_commit[at], logp[at], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_contract_seeded_and_global_rng_untouched(name: str) -> None:
    model, batch = tiny_setup()
    sampler = build_sampler(name, num_steps=3, cfg_scale=1.5)
    torch.manual_seed(1234)
    global_state = torch.get_rng_state()
    first, again, other = run(sampler, model, batch, 0), run(sampler, model, batch, 0), run(sampler, model, batch, 1)
    assert torch.equal(torch.get_rng_state(), global_state)
    assert_same(first, again)
    assert not torch.equal(first.codes, other.codes)


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_contract_frozen_config_and_validation(name: str) -> None:
    sampler = build_sampler(name)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sampler.num_steps = 3  # type: ignore[misc]
    assert build_sampler(name, **dataclasses.asdict(sampler)) == sampler
    with pytest.raises(ValueError, match="float32"):
        build_sampler(name, probs_dtype="bf16")
    with pytest.raises(ValueError, match="num_steps"):
        build_sampler(name, num_steps=0)
    with pytest.raises(ValueError, match="cfg_scale"):
        build_sampler(name, cfg_scale=-1.0)


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_contract_probs_dtype_model(name: str) -> None:
    # An fp32 model: "model" dtype is fp32, so the draws are identical.
    model, batch = tiny_setup()
    a = run(build_sampler(name, num_steps=3, probs_dtype="float32"), model, batch, 5)
    b = run(build_sampler(name, num_steps=3, probs_dtype="model"), model, batch, 5)
    assert_same(a, b)
    # A bf16 model: both options run and keep the contract (fp32 log-probs, every slot committed once).
    model16, _ = tiny_setup(torch.bfloat16)
    for probs_dtype in ("float32", "model"):
        out = run(build_sampler(name, num_steps=2, probs_dtype=probs_dtype), model16, batch, 5)
        assert out.logp_at_commit.dtype == torch.float32
        assert torch.equal(out.n_commit.sum(-1), torch.full((3,), 16))


# ---------------------------------------------------------------- classifier-free guidance (docs/models.md 3.1)


def test_guided_logits_w0_is_conditional_with_b_rows() -> None:
    model, batch = tiny_setup()
    codes = torch.tensor([[3, 8192] * 8, [8192] * 16, list(range(16))])  # (B, N), 8192 = masked
    ids = canvas_ids(codes, batch)
    assert ids[0, 1] == TINY.mask_id and ids[0, 0] == TINY.code_offset + 3
    z = guided_code_logits(model, batch, ids, 0.0)
    assert len(model.calls) == 1 and model.calls[0][0] == 3 and z.dtype == torch.float32
    b = batch.with_image(ids)
    vocab = (TINY.code_offset, TINY.code_offset + TINY.codebook_size)
    plain = model(input_ids=b.input_ids, attention_mask=b.attention_mask, logits_at=b.image_positions,
                  vocab_slice=vocab).logits  # fmt: skip
    assert torch.equal(z, plain)


def test_guided_logits_muse_form_in_one_forward_of_2b_rows() -> None:
    model, batch = tiny_setup()
    ids = canvas_ids(torch.randint(0, 8193, (3, 16), generator=torch.Generator().manual_seed(0)), batch)
    w = 2.5
    z = guided_code_logits(model, batch, ids, w)
    assert len(model.calls) == 1 and model.calls[0][0] == 6
    b = batch.with_image(ids)
    assert torch.equal(b.uncond_ids[:, b.image_positions], ids)  # both rows see the current canvas
    vocab = (TINY.code_offset, TINY.code_offset + TINY.codebook_size)
    pos = b.image_positions
    cond = model(input_ids=b.input_ids, attention_mask=b.attention_mask, logits_at=pos, vocab_slice=vocab).logits
    uncond = model(input_ids=b.uncond_ids, attention_mask=b.uncond_mask, logits_at=pos, vocab_slice=vocab).logits
    assert not torch.allclose(cond, uncond)  # the prompt matters, so the check below is not vacuous
    torch.testing.assert_close(z, (1 + w) * cond - w * uncond, atol=1e-5, rtol=1e-5)


def test_identical_rows_are_forwarded_once_bit_for_bit() -> None:
    """At the first step every canvas is fully masked: a prompt's copies and all unconditional rows coincide, so one
    forward of the distinct rows gives what forwarding all 2B rows gives, bit for bit (a real LLaDA on CPU)."""
    layout = MMaDALayout(pad_id=0, bos_id=1, eos_id=2, t2i_id=3, soi_id=4, eoi_id=5, mask_id=6, code_offset=7,
                         codebook_size=16, text_window=5, grid_h=4, grid_w=4)  # fmt: skip
    torch.manual_seed(0)
    model = LLaDAModelLM(LLaDAConfig(d_model=64, n_layers=2, n_heads=4, mlp_hidden_size=128, embedding_size=32,
                                     mask_token_id=6)).eval()  # fmt: skip
    rows: list[int] = []
    model.register_forward_pre_hook(lambda m, a, kw: rows.append(kw["input_ids"].shape[0]), with_kwargs=True)
    batch = layout.build_batch([[8, 9], [8, 9], [10], [8, 9]])  # prompts A A B A
    masked = canvas_ids(torch.full((4, 16), 16), batch)  # (B, N) all mask_id
    w = 2.0
    z = guided_code_logits(model, batch, masked, w)  # (B, N, K)
    assert rows == [3]  # A, B and the one unconditional row
    b, vocab = batch.with_image(masked), (7, 23)
    ids, mask = torch.cat([b.input_ids, b.uncond_ids]), torch.cat([b.attention_mask, b.uncond_mask])  # (2B, T)
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask, logits_at=b.image_positions, vocab_slice=vocab).logits
    assert torch.equal(z, (1.0 + w) * full[:4] - w * full[4:])
    assert not torch.equal(full[0], full[2])  # the prompts differ, so the check above is not vacuous
    # once the canvases differ every row is forwarded
    codes = torch.randint(0, 17, (4, 16), generator=torch.Generator().manual_seed(1))
    guided_code_logits(model, batch, canvas_ids(codes, batch), w)
    assert rows[-1] == 8


def test_guided_logits_rejects_contract_violations() -> None:
    _, batch = tiny_setup()

    def wrong(**kw: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(logits=torch.zeros(kw["input_ids"].shape[0], 16, 10))

    with pytest.raises(ValueError, match="expected"):
        guided_code_logits(wrong, batch, canvas_ids(torch.full((3, 16), 8192), batch), 0.0)


# ---------------------------------------------------------------- emerge (docs/models.md 3.2)


def test_emerge_transition_probs_hand_computed() -> None:
    # K = 2, p = [0.25, 0.75], T = 3, s = 1: a = cos(pi/6) = 0.866025, b = cos(pi/3) = 0.5,
    # commit (a-b)/a = 0.366025/0.866025 = 0.422650, stay b/a = 0.577350 (= 1/sqrt 3);
    # q = [0.25*0.422650, 0.75*0.422650, 0.577350] = [0.105662, 0.316987, 0.577350].
    p = torch.tensor([[0.25, 0.75]])
    q = emerge_transition_probs(p, cosine_gamma(1 / 3), cosine_gamma(2 / 3))
    torch.testing.assert_close(q, torch.tensor([[0.105662, 0.316987, 0.577350]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(q.sum(-1), torch.ones(1))
    # First step of any T: a = gamma(0) = 1, so the stay probability is gamma(1/T) itself.
    q0 = emerge_transition_probs(p, 1.0, cosine_gamma(1 / 2))
    torch.testing.assert_close(q0[0, -1], torch.tensor(math.sqrt(0.5)))


EMERGE_CODE_LOGITS = torch.tensor(
    [2.0, 1.0, 0.5, 0.0, -0.5, -1.0, 1.5, 0.25, -2.0, 0.0, 0.0, 1.0, -1.0, 0.5, 3.0, -3.0]
)


@pytest.fixture(scope="module")
def emerge_big() -> SamplerOutput:
    """64 images of N = 1024 slots, T = 12, under a model with the same code logits everywhere."""
    batch = BIG.build_batch([[8, 9, 10]] * 64)
    sampler = build_sampler("emerge", num_steps=12, cfg_scale=3.0)
    return run(sampler, ConstantLM(EMERGE_CODE_LOGITS), batch, seed=0)


def test_emerge_commit_counts_match_binomial_means(emerge_big: SamplerOutput) -> None:
    """Each slot commits at step s w.p. pi_s = gamma(s/T) - gamma((s+1)/T) (last step: gamma((T-1)/T)),
    independently, so commits per step ~ Binomial(N, pi_s). Tolerance: 5 standard errors of the mean over R rows."""
    N, T, R = 1024, 12, emerge_big.codes.shape[0]
    pi = [cosine_gamma(s / T) - cosine_gamma((s + 1) / T) for s in range(T - 1)] + [cosine_gamma((T - 1) / T)]
    expected = [N * q for q in pi]
    # docs/models.md 3.2 lists the expected commits for T=12, N=1024 (rounded to 0.1).
    listed = [8.8, 26.1, 43.1, 59.2, 74.4, 88.3, 100.7, 111.4, 120.1, 126.8, 131.4, 133.7]
    assert expected == pytest.approx(listed, abs=0.06)
    mean = emerge_big.n_commit.double().mean(0)  # (T,)
    for s in range(T):
        se = math.sqrt(N * pi[s] * (1 - pi[s]) / R)
        assert abs(float(mean[s]) - expected[s]) < 5 * se, (s, float(mean[s]), expected[s], se)


def test_emerge_codes_drawn_from_p(emerge_big: SamplerOutput) -> None:
    """Codes ~ p (the stay class is renormalised away); log-prob at commit = log p(code). CFG of a prompt-blind
    model leaves z unchanged: (1+w) z - w z = z. Tolerance: 5 binomial standard errors per code."""
    p = torch.softmax(EMERGE_CODE_LOGITS.double(), -1)
    n = emerge_big.codes.numel()
    freq = torch.bincount(emerge_big.codes.flatten(), minlength=16).double() / n
    se = (p * (1 - p) / n).sqrt()
    assert bool(((freq - p).abs() < 5 * se).all()), (freq, p)
    expected_logp = torch.log_softmax(EMERGE_CODE_LOGITS, -1)[emerge_big.codes]
    torch.testing.assert_close(emerge_big.logp_at_commit, expected_logp, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- MaskGIT (docs/models.md 3.3)

# docs/models.md 3.3, N = 1024, fp32; the last entry excludes the one leftover slot filled by the returned draw.
MASKGIT_TABLE = {
    12: [9, 26, 43, 60, 74, 88, 101, 112, 120, 126, 132, 132],
    15: [6, 17, 28, 38, 49, 58, 68, 75, 84, 90, 95, 100, 104, 105, 106],
    20: [4, 9, 16, 22, 27, 34, 39, 45, 50, 54, 59, 64, 66, 71, 73, 75, 77, 79, 80, 79],
}


@pytest.mark.parametrize("num_steps", sorted(MASKGIT_TABLE))
def test_maskgit_commits_per_step_match_models_md_table(num_steps: int) -> None:
    batch = BIG.build_batch([[8, 9, 10], [11]])
    model = FakeLM(BIG.vocab_needed, BIG.seq_len, seed=1)
    out = run(build_sampler("maskgit", num_steps=num_steps, cfg_scale=0.0), model, batch, seed=0)
    table = MASKGIT_TABLE[num_steps]
    assert sum(table) + 1 == 1024
    expected = torch.tensor(table[:-1] + [table[-1] + 1]).expand(2, -1)
    assert torch.equal(out.n_commit, expected)


def test_maskgit_temperatures_match_models_md_3_3() -> None:
    listed = [0.933, 0.809, 0.647, 0.475, 0.316, 0.190, 0.101, 0.047, 0.019, 0.006, 0.002, 0.0003, 0, 0, 0]
    taus = maskgit_temperatures(1.0, 15, "compounding")
    assert taus == pytest.approx(listed, abs=6e-4)
    assert taus[-1] == 0.0
    # MaskGIT proper: tau0 * (1 - r), r = (s+1)/T; T=4, tau0=2: 1.5, 1.0, 0.5, 0.
    assert maskgit_temperatures(2.0, 4, "maskgit") == pytest.approx([1.5, 1.0, 0.5, 0.0])
    with pytest.raises(ValueError, match="compounding"):
        maskgit_temperatures(1.0, 4, "linear")
    with pytest.raises(ValueError, match="compounding"):
        build_sampler("maskgit", tau_schedule="linear")


def test_maskgit_tau0_zero_commits_the_most_confident() -> None:
    """With tau0 = 0 the score is log p_s(x): every slot committed at step s outscores every slot left masked."""
    batch = BIG.build_batch([[8, 9, 10], [11]])
    model = FakeLM(BIG.vocab_needed, BIG.seq_len, seed=2)
    infos: list[StepInfo] = []
    T = 8
    out = run(build_sampler("maskgit", num_steps=T, cfg_scale=1.0, tau0=0.0), model, batch, seed=0, hook=infos.append)
    for info in infos[:-1]:
        still = out.commit_step > info.step  # (B, N) masked after this step
        for b in range(2):
            assert float(info.score[b][info.committed[b]].min()) >= float(info.score[b][still[b]].max())
            torch.testing.assert_close(info.score[b][info.committed[b]], info.logp[b][info.committed[b]])
