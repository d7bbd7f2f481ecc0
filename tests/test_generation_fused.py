"""FusedDecoder / kernels.llama_decode_step: one decode step of the whole LLaMA2 in one call,
equal to Transformer.forward with a KV cache (both backends), Numba kernel equal to its
NumPy twin, fallbacks and errors."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minillm as mi
from minillm.generation import generate, left_pad
from minillm.kernels import _decode, reference
from minillm.models.llama import ModelConfig, Transformer
from minillm.generation.fused import FusedDecoder, fused_decode_unsupported
from minillm.peft import LoraConfig, get_peft_model
from _helpers import scramble


def make_model(dtype=np.float32, **overrides):
    cfg = dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=50, max_seq_len=24)
    cfg.update(overrides)
    model = Transformer(ModelConfig(**cfg)).eval()
    return scramble(model, 0.3).to(dtype)  # larger than the init: logits that differ clearly between tokens


def positions_of(mask):
    return np.maximum(np.cumsum(mask, axis=1) - 1, 0)  # RoPE positions counted from each row's first real token


TOL = {np.float32: dict(rtol=1e-4, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("heads", [(4, 2), (4, 4), (4, 1)])  # (n_heads, n_kv_heads): GQA, MHA, MQA
def test_steps_equal_the_models_forward(backend, dtype, heads):
    """Prefill a left-padded batch, then decode: every step's logits equal Transformer.forward
    over the whole sequence so far (no cache), at the last position."""
    model = make_model(dtype, n_heads=heads[0], n_kv_heads=heads[1])
    ids, mask = left_pad([[3, 4, 5, 6, 7], [9, 1], [2, 2, 2, 8]])
    mask = mask.astype(bool)
    dec = FusedDecoder(model, batch_size=3)
    rng = np.random.default_rng(0)
    with mi.no_grad():
        logits = dec.prefill(ids, attention_mask=mask, position_ids=positions_of(mask))
        for _ in range(6):
            nxt = rng.integers(0, 50, 3)
            ids = np.concatenate([ids, nxt[:, None]], axis=1)
            mask = np.concatenate([mask, np.ones((3, 1), bool)], axis=1)
            pos = positions_of(mask)
            logits = dec.step(nxt, positions=pos[:, -1], attention_mask=mask)
            full = model(ids, attention_mask=mask, position_ids=pos).logits.data[:, -1]
            assert logits.dtype == dtype and logits.shape == (3, 50)
            np.testing.assert_allclose(logits, full, **TOL[dtype])
    assert dec.length == ids.shape[1]


def _team_args(dec, tokens, members=2):
    """decode_team's arguments for one step of `dec` (all rows unpadded), with fresh logits, workspace and counters."""
    from minillm.kernels import _decode

    w, B, start = dec.weights, dec.batch_size, dec.length
    weights = [w[name] for name in ("emb", "attention_norm", "wq", "wk", "wv", "wo", "ffn_norm", "w1", "w2", "w3", "norm",
                                    "output", "cos", "sin")]
    head = (np.asarray(tokens, np.int64), np.full(B, start, np.int64), start, np.ones((B, start + 1), bool))
    logits = np.empty((B, w["output"].shape[0]), w["output"].dtype)
    a = dec.model.args
    bufs = _decode.step_buffers(B, a.dim, w["wq"].shape[1], w["wk"].shape[1], w["w1"].shape[1], a.n_heads, start + 1, w["output"])
    counters = np.zeros(_decode.counters_size(w["wq"].shape[0]), np.int64)
    return (*head, *weights, dec.k_cache, dec.v_cache, dec.eps, 0, logits, bufs, counters, members)


@pytest.mark.parametrize("B", [1, 3])
def test_decode_team_members_share_one_step_and_a_late_one_finds_it_done(B):
    """Two threads running decode_team on the same step claim its items between them; the logits
    and caches are the bits of the one-thread kernel; a member that arrives after the step is done
    changes nothing. Widths that are not multiples of the 32-row blocks (72, 50) included."""
    import threading

    from minillm.kernels import _decode

    model = make_model(dim=72, n_heads=4, n_kv_heads=2)
    decs = [FusedDecoder(model, batch_size=B) for _ in range(2)]
    prompt = np.arange(1, 1 + 4 * B).reshape(B, 4) % 50
    with mi.no_grad():
        for dec in decs:
            dec.prefill(prompt)
    tokens = np.arange(7, 7 + B)
    alone = _team_args(decs[0], tokens, members=1)  # products uncut, as llama_decode_step
    _decode.decode_team(*alone)
    team = _team_args(decs[1], tokens, members=3)  # cut finer than the 2 threads that run it
    members = [threading.Thread(target=_decode.decode_team, args=team) for _ in range(2)]
    for m in members:
        m.start()
    for m in members:
        m.join()
    logits, counters = team[-4], team[-2]
    np.testing.assert_array_equal(logits, alone[-4])
    np.testing.assert_array_equal(decs[1].k_cache, decs[0].k_cache)
    np.testing.assert_array_equal(decs[1].v_cache, decs[0].v_cache)
    np.testing.assert_array_equal(counters[0::2], counters[1::2])  # every claimed item counted done
    before = (logits.copy(), decs[1].k_cache.copy(), counters.copy())
    _decode.decode_team(*team)  # late: every phase already claimed and done
    np.testing.assert_array_equal(logits, before[0])
    np.testing.assert_array_equal(decs[1].k_cache, before[1])
    np.testing.assert_array_equal(counters, before[2])
    single = _decode.llama_decode_step(*_team_args(decs[0], tokens)[:22])  # the same step again from slot 4: same bits
    np.testing.assert_array_equal(single, alone[-4])


def test_a_large_model_decodes_as_a_team_with_the_same_bits(monkeypatch):
    """At 2 threads a model of TEAM_MIN_BYTES or more runs each step as one team (here the threshold
    is lowered to 0): generated logits and caches are the bits of 1 thread, padded rows included."""
    import numba

    from minillm.generation import fused
    from minillm.kernels import _decode

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba has a single thread here")
    monkeypatch.setattr(fused, "TEAM_MIN_BYTES", 0)
    monkeypatch.setattr(fused._spin, "back_off", lambda: None)  # a worker late on a busy machine must not switch it off
    monkeypatch.setattr(fused._spin, "_quiet_until", 0.0)
    team_calls = []
    real = _decode.decode_team
    monkeypatch.setattr(_decode, "decode_team", lambda *a: (team_calls.append(1), real(*a)))
    model = make_model(dim=72, n_heads=4, n_kv_heads=2)
    prompts = [[1 + i, 2, 3 + i % 2][: 1 + i % 3] for i in range(5)]
    ids, mask = left_pad(prompts)
    results = []
    previous = numba.get_num_threads()
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            dec = FusedDecoder(model, batch_size=5)
            rng = np.random.default_rng(0)
            with mi.no_grad():
                dec.prefill(ids, attention_mask=mask.astype(bool), position_ids=positions_of(mask))
                m, steps = mask.astype(bool), []
                for _ in range(3):
                    m = np.concatenate([m, np.ones((5, 1), bool)], axis=1)
                    steps.append(dec.step(rng.integers(0, 50, 5), positions=positions_of(m)[:, -1], attention_mask=m))
            results.append((steps, dec.k_cache.copy(), dec.v_cache.copy()))
    finally:
        numba.set_num_threads(previous)
    assert len(team_calls) >= 3 * 2  # at 2 threads: every step, by each member that started
    (one, k1, v1), (two, k2, v2) = results
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(k1, k2)
    np.testing.assert_array_equal(v1, v2)


def test_a_team_step_no_other_thread_joined_backs_off_to_steps_that_wait_for_no_one(monkeypatch):
    """When the caller has run a whole team step before any worker joined (simulated: every share on
    the calling thread), the workers were not on a core: the pool backs off, and while it does the
    steps run as one call (or the row split), not as a team whose waits would cost time slices. Same
    bits on every path; after the back-off the team is used again."""
    import numba

    from minillm.generation import fused

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba has a single thread here")
    monkeypatch.setattr(fused, "TEAM_MIN_BYTES", 0)
    monkeypatch.setattr(fused._spin, "_quiet_until", 0.0)
    monkeypatch.setattr(fused._spin, "BACK_OFF_SECONDS", 600.0)  # not over on a slow machine before the test is
    monkeypatch.setattr(fused.kernels, "run_items", lambda kernel, n, *args: [kernel(*args, i, n) for i in range(n)])
    team_calls = []
    real = _decode.decode_team
    monkeypatch.setattr(_decode, "decode_team", lambda *a: (team_calls.append(1), real(*a)))
    model = make_model(dim=72, n_heads=4, n_kv_heads=2)
    previous = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        alone = FusedDecoder(model, batch_size=2)
        numba.set_num_threads(2)
        dec = FusedDecoder(model, batch_size=2)
        with mi.no_grad():
            for d in (alone, dec):
                d.prefill(np.array([[1, 2, 3], [4, 5, 6]]))
            for token, team_expected in ((7, True), (8, False), (9, False), (10, True)):
                if token == 10:
                    fused._spin._quiet_until = 0.0  # the back-off is over
                calls = len(team_calls)
                numba.set_num_threads(1)
                expected = alone.step([token, token + 1])
                numba.set_num_threads(2)
                got = dec.step([token, token + 1])
                np.testing.assert_array_equal(got, expected)
                assert (len(team_calls) > calls) == team_expected, token
                assert fused._spin.backing_off()  # each team step again found no worker
    finally:
        numba.set_num_threads(previous)
    np.testing.assert_array_equal(dec.k_cache, alone.k_cache)


def test_a_large_batch_is_split_over_the_threads_with_the_same_bits(monkeypatch):
    """From SPLIT_MIN_ROWS rows (and 2 threads) a step runs the kernel once per thread on its own
    rows and cache rows (ranges cut at even rows): logits, caches and generated tokens are the same
    bits as one call over every row."""
    import numba

    from minillm import kernels
    from minillm.generation import fused

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba has a single thread here")
    model = make_model()
    B = fused.SPLIT_MIN_ROWS + 3  # 19 rows: shares of 10 and 9
    prompts = [[1 + (i % 7), 2 + (i % 5), 3] for i in range(B)]
    ids, mask = left_pad(prompts)
    results = []
    previous = numba.get_num_threads()
    calls = count_kernel_calls(monkeypatch)
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            calls.clear()
            dec = FusedDecoder(model, batch_size=B)
            rng = np.random.default_rng(0)
            with mi.no_grad():
                dec.prefill(ids, attention_mask=mask.astype(bool))
                steps = [dec.step(rng.integers(0, 50, B)) for _ in range(4)]
            results.append((steps, dec.k_cache.copy(), dec.v_cache.copy(), len(calls)))
    finally:
        numba.set_num_threads(previous)
    (one, k1, v1, calls1), (two, k2, v2, calls2) = results
    assert calls2 - calls1 == 4  # every step split in two (the prefill's check is one call either way)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(k1, k2)
    np.testing.assert_array_equal(v1, v2)
    assert [fused._even_edge(i, 2, 19) for i in range(3)] == [0, 10, 19]
    assert [fused._even_edge(i, 3, 32) for i in range(4)] == [0, 10, 22, 32]


def test_cache_is_shared_with_the_modules_path(backend):
    """The prefill writes the stacked cache through per-layer KVCache views, and the fused steps
    write the same slots the modules would: keys after fused steps equal a modules-only run."""
    model = make_model()
    prompt = np.array([[1, 2, 3, 4]])
    dec = FusedDecoder(model)
    cache = model.new_kv_cache(1)
    with mi.no_grad():
        dec.prefill(prompt)
        model(prompt, kv_cache=cache)
        for tok in (5, 6, 7):
            dec.step([tok])
            model(np.array([[tok]]), kv_cache=cache)
    # float32 rounding, not bits: the kernel's matrix-vector products sum in another order than the
    # modules' GEMMs, and a later layer's keys carry the earlier layers' rounding (1.7e-6 on a key of
    # 0.04 with magnitude-1 terms, seen on an AMD Zen 4 machine): the file's float32 tolerance
    for layer, c in enumerate(cache):
        np.testing.assert_allclose(dec.k_cache[layer, :, :, : c.length], c.k[:, :, : c.length], **TOL[np.float32])
        np.testing.assert_allclose(dec.v_cache[layer, :, :, : c.length], c.v[:, :, : c.length], **TOL[np.float32])


@pytest.mark.parametrize("sampling", [dict(temperature=0), dict(temperature=0.9, top_p=0.9, seed=3), dict(temperature=0, repetition_penalty=1.3)])
def test_generate_fused_equals_modules(backend, sampling):
    model = make_model()
    prompts = [[1, 2, 3, 4, 5], [9, 8], [7, 7, 30, 31, 2, 3, 4, 11]]
    fused = generate(model, prompts, 20, **sampling)  # runs past max_seq_len=24: crop + recompute too
    modules = generate(model, prompts, 20, fused_decode=False, **sampling)
    assert fused == modules
    assert len(set(fused[0])) > 2


def test_generate_sees_weights_changed_after_an_earlier_call():
    model = make_model()
    before = generate(model, [1, 2, 3], 8, temperature=0)
    for p in model.parameters():
        p.data *= -1  # an in-place update, as an optimizer step does
    after = generate(model, [1, 2, 3], 8, temperature=0)
    assert after == generate(model, [1, 2, 3], 8, temperature=0, fused_decode=False)
    assert after != before


# ----------------------------------------------------------------------- kernel vs reference
@st.composite
def decode_problem(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    B, L = draw(st.integers(1, 5)), draw(st.integers(1, 2))  # B >= 2 takes the blocked matvec (4 x 2 blocks + remainders)
    Hkv, G, D = draw(st.integers(1, 2)), draw(st.integers(1, 3)), 2 * draw(st.integers(1, 3))
    dim, hidden, V, S = draw(st.integers(1, 9)), draw(st.integers(1, 7)), draw(st.integers(1, 11)), draw(st.integers(1, 9))
    H = Hkv * G
    cache_pos = draw(st.integers(0, S - 1))

    def r(*shape, scale=0.5):
        return (rng.standard_normal(shape) * scale).astype(dtype)

    extra = draw(st.integers(0, 2))  # cache rows of other shares of the batch (FusedDecoder splits it over threads)
    cache_row = draw(st.integers(0, extra))
    valid = rng.random((B, cache_pos + 1)) < 0.7
    valid[:, -1] = True  # the new token always sees itself
    args = dict(
        tokens=rng.integers(0, V, B), positions=rng.integers(0, S, B), cache_pos=cache_pos, key_valid=valid,
        emb=r(V, dim), attention_norm=1 + r(L, dim), wq=r(L, H * D, dim), wk=r(L, Hkv * D, dim), wv=r(L, Hkv * D, dim),
        wo=r(L, dim, H * D), ffn_norm=1 + r(L, dim), w1=r(L, hidden, dim), w2=r(L, dim, hidden), w3=r(L, hidden, dim),
        norm=1 + r(dim), output=r(V, dim), cos=r(S, D // 2, scale=1.0), sin=r(S, D // 2, scale=1.0),
        k_cache=r(L, B + extra, Hkv, S, D), v_cache=r(L, B + extra, Hkv, S, D), eps=1e-5, cache_row=cache_row,
    )
    return dtype, args


@given(n=st.integers(1, 41), k=st.integers(1, 70), b=st.integers(1, 9), f64=st.booleans(), seed=st.integers(0, 2**16))
def test_matvec_prefetching_gives_the_same_bits(n, k, b, f64, seed):
    """`_matvec` with `stream` (the hints to load the next weight block, used when a model's weights
    do not stay in the caches; the tests' models are all small) computes the same bits as without:
    any rows, columns (also not whole cache lines), an odd batch row; and w @ x as NumPy does."""
    dtype = np.float64 if f64 else np.float32
    rng = np.random.default_rng(seed)
    w, x = rng.standard_normal((n, k)).astype(dtype), rng.standard_normal((b, k)).astype(dtype)
    plain, hinted = np.full((b, n), np.nan, dtype), np.full((b, n), np.nan, dtype)
    _decode._matvec(w, x, plain, False)
    _decode._matvec(w, x, hinted, True)
    np.testing.assert_array_equal(hinted, plain)
    np.testing.assert_allclose(hinted, x @ w.T, rtol=1e-4 if dtype == np.float32 else 1e-10, atol=1e-4 if dtype == np.float32 else 1e-10)
    part = np.full((b, n), np.nan, dtype)  # a team's items: slices of the rows, as `_part` passes them
    for i in range(_decode._parts(n, 2)):
        _decode._part(w, x, part, i, 2, True)
    np.testing.assert_array_equal(part, plain)


@given(n=st.integers(1, 20000), members=st.integers(1, 4))
def test_team_items_cut_every_product_into_shrinking_rows_on_block_edges(n, members):
    """`decode_team`'s work items for a product of n output rows: they cover 0..n once, in order;
    every edge but the end on a multiple of 4 (`_matvec`'s row blocks: the same bits however the
    rows are cut); one item alone; else at least 32 rows (but the last) and never growing."""
    w, x = np.zeros((n, 1), np.float32), np.zeros((1, 1), np.float32)
    y = np.empty((1, n), np.float32)
    parts = _decode._parts(n, members)
    edges = [_decode._part(w, x, y, i, members, False) for i in range(parts)]
    assert edges[0][0] == 0 and edges[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(edges, edges[1:]))
    assert all(lo % 4 == 0 for lo, _ in edges)
    sizes = [hi - lo for lo, hi in edges]
    if members == 1:
        assert sizes == [n]
    else:
        assert all(s >= 32 for s in sizes[:-1]) and sizes[-1] > 0
        assert all(a >= b for a, b in zip(sizes, sizes[1:-1]))
        assert sizes[0] <= max(32, n // (2 * members) + 4)  # a share, not the whole product


@given(decode_problem())
def test_numba_kernel_equals_reference(problem):
    dtype, args = problem
    ref_args = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in args.items()}
    want = reference.llama_decode_step(**ref_args)
    got = _decode.llama_decode_step(**args)
    # float32: logits are sums over L layers of dim-long dot products, so their rounding error
    # scales with the logits' size (hypothesis found 2.25e-5 on large logits): atol relative to it
    scale = max(1.0, float(np.abs(want).max()))
    tol = dict(rtol=1e-5, atol=1e-5 * scale) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    assert got.dtype == want.dtype == dtype
    np.testing.assert_allclose(got, want, **tol)
    for name in ("k_cache", "v_cache"):  # the new keys/values land in slot cache_pos of rows cache_row.., nothing else changes
        # a later layer's keys carry the earlier layers' float32 rounding (hypothesis found 5.7e-5 on
        # a key of 2.6, relative 2e-5): scaled by the caches' own size, not the logits'
        cache_scale = max(1.0, float(np.abs(ref_args[name]).max()))
        cache_tol = dict(rtol=1e-4, atol=1e-5 * cache_scale) if dtype == np.float32 else tol
        np.testing.assert_allclose(args[name], ref_args[name], **cache_tol)


# ----------------------------------------------------------------------- fallbacks and errors
def test_unsupported_models_fall_back_to_the_modules():
    model = make_model()
    assert fused_decode_unsupported(model) is None
    peft = get_peft_model(make_model(), LoraConfig(r=2, target_modules=["wq", "wv"], init_lora_weights=False))
    reason = fused_decode_unsupported(peft.base_model)
    assert "layers.0.attention.wq is a LoRALinear" in reason and "merge LoRA adapters first" in reason
    with pytest.raises(ValueError, match="FusedDecoder: layers.0.attention.wq is a LoRALinear"):
        FusedDecoder(peft.base_model)
    # generate still works (layer by layer); after merging, the fused path gives the same tokens
    adapted = generate(peft, [1, 2, 3], 6, temperature=0)
    assert adapted == generate(peft, [1, 2, 3], 6, temperature=0, fused_decode=False)
    merged = peft.merge_and_unload()
    assert fused_decode_unsupported(merged) is None
    assert generate(merged, [1, 2, 3], 6, temperature=0) == adapted

    class Plain(Transformer):  # inherits the layout and the forward it describes
        pass

    assert fused_decode_unsupported(Plain(model.args)) is None

    class Custom(Transformer):
        def forward(self, *args, **kwargs):
            return super().forward(*args, **kwargs)

    assert "overrides forward" in fused_decode_unsupported(Custom(model.args))

    class Other(mi.nn.Module):
        pass

    assert "not a minillm.models.llama.Transformer" in fused_decode_unsupported(Other())


def test_step_errors_name_the_problem():
    model = make_model(max_seq_len=6)
    dec = FusedDecoder(model, batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        FusedDecoder(model, batch_size=0)
    with pytest.raises(ValueError, match=r"input_ids must have shape \(2, T\)"):
        dec.prefill(np.array([[1, 2]]))
    with mi.no_grad():
        dec.prefill(np.array([[1, 2], [3, 4]]))
    with pytest.raises(ValueError, match=r"tokens must be 2 integers"):
        dec.step([1])
    with pytest.raises(IndexError, match=r"FusedDecoder.step: token id 50 at position 1 is outside the valid range \[0, 50\)"):
        dec.step([1, 50])
    with pytest.raises(ValueError, match=r"attention_mask must have shape .* \(2, 3\)"):
        dec.step([1, 2], attention_mask=np.ones((2, 2)))
    with pytest.raises(ValueError, match="new token itself must be unmasked"):
        dec.step([1, 2], attention_mask=np.array([[1, 1, 0], [1, 1, 1]]))
    with pytest.raises(IndexError, match="positions must be in"):
        dec.step([1, 2], positions=[0, 6])
    for tok in range(4):
        dec.step([tok, tok])
    with pytest.raises(ValueError, match="cache is full"):
        dec.step([1, 2])


def test_decode_kernel_runs_with_numba_disable_jit():
    """NUMBA_DISABLE_JIT=1 (for a debugger) runs the decode kernel as plain Python: same tokens."""
    import os
    import subprocess
    import sys

    code = (
        "import numpy as np, minillm as mi;"
        "from minillm.generation import generate;"
        "from minillm.models.llama import ModelConfig, Transformer;"
        "mi.manual_seed(0);"
        "m = Transformer(ModelConfig(dim=16, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=20, max_seq_len=12));"
        "[mi.nn.init.normal_(p, 0.0, 0.3) for p in m.parameters() if p.ndim == 2];"
        "a = generate(m, [1, 2, 3], 6, temperature=0); b = generate(m, [1, 2, 3], 6, temperature=0, fused_decode=False);"
        "assert a == b and len(set(a)) > 1, (a, b); print('ok')"
    )
    env = dict(os.environ, NUMBA_DISABLE_JIT="1", MINILLM_KERNELS="numba")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"


# ----------------------------------------------------------------------- the kernel never hides edited code
def count_kernel_calls(monkeypatch):
    """Wrap kernels.llama_decode_step to count its calls."""
    from minillm import kernels

    calls = []
    real = kernels.llama_decode_step

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(kernels, "llama_decode_step", counting)
    return calls


def test_unmodified_model_decodes_on_the_kernel_without_warning(monkeypatch):
    import warnings

    model = make_model()
    calls = count_kernel_calls(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the check on the prompt must pass silently
        fused = generate(model, [1, 2, 3], 8, temperature=0)
    assert len(calls) == 1 + 7  # the check on the last prompt token + one call per later token
    assert fused == generate(model, [1, 2, 3], 8, temperature=0, fused_decode=False)


def test_edited_mlp_forward_changes_the_tokens_and_warns(monkeypatch):
    """A learner's edit to MLP.forward is what generate runs, not the kernel's copy of the old code."""
    from minillm.models.llama import MLP

    model = make_model()
    prompt = [1, 2, 3, 4]
    before = generate(model, prompt, 10, temperature=0)
    original = MLP.forward
    monkeypatch.setattr(MLP, "forward", lambda self, x: original(self, x) * 1.5)
    calls = count_kernel_calls(monkeypatch)
    with pytest.warns(RuntimeWarning, match="fused decode kernel's logits differ from the model's modules"):
        edited = generate(model, prompt, 10, temperature=0)
    assert edited != before
    assert edited == generate(model, prompt, 10, temperature=0, use_cache=False)  # the book's loop over the edited modules
    assert len(calls) == 1  # only the check; every token came from the modules
    # sampling and batches fall back the same way
    with pytest.warns(RuntimeWarning):
        sampled = generate(model, [prompt, [5, 6]], 10, temperature=0.9, seed=4)
    assert sampled == generate(model, [prompt, [5, 6]], 10, temperature=0.9, seed=4, fused_decode=False)


def test_flash_attn_false_never_calls_the_kernel(monkeypatch):
    from minillm import kernels

    def boom(*args, **kwargs):
        raise AssertionError("flash_attn=False must decode through the readable modules")

    monkeypatch.setattr(kernels, "llama_decode_step", boom)
    model = make_model(flash_attn=False)
    assert "flash_attn=False" in fused_decode_unsupported(model)
    got = generate(model, [[1, 2, 3], [4]], 12, temperature=0)
    assert got == generate(model, [[1, 2, 3], [4]], 12, temperature=0, use_cache=False)
    assert generate(model, [1, 2, 3], 4, num_beams=2) == generate(model, [1, 2, 3], 4, num_beams=2, use_cache=False)


def test_verify_restores_the_modules_cache_on_mismatch(monkeypatch):
    """When the check fails, the cache slot the kernel rewrote holds the modules' keys again."""
    from minillm import kernels

    model = make_model()
    ids = np.array([[3, 4, 5, 6]])
    ref = model.new_kv_cache(1)
    with mi.no_grad():
        model(ids, kv_cache=ref)
    real = kernels.llama_decode_step

    def wrong(*args, **kwargs):
        out = real(*args, **kwargs)
        return out + 1.0  # a kernel that disagrees

    monkeypatch.setattr(kernels, "llama_decode_step", wrong)
    dec = FusedDecoder(model)
    with mi.no_grad():
        logits, reason = dec.prefill(ids, verify=True)
    assert reason is not None and "differ" in reason
    assert dec.length == 4
    for layer, c in enumerate(ref):
        np.testing.assert_allclose(dec.k_cache[layer, :, :, :4], c.k[:, :, :4], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(dec.v_cache[layer, :, :, :4], c.v[:, :, :4], rtol=1e-6, atol=1e-7)
