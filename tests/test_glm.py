"""GLM (models/glm.py, data/glm_tasks.py): the blank-infilling layout, the Part A / Part B
attention mask against its brute-force definition, 2-D positions, post-norm, gradients, the
cached infilling decode against a no-cache loop, and bad input."""
import math

import numpy as np
import pytest

import minillm as mi
from minillm.data.glm_tasks import BlankInfillingDataset, blank_infilling, collate_glm, sample_spans, world_blanks
from minillm.io import load_model, save_model
from minillm.models.glm import GLM, GLMBlock, GLMConfig, glm_attention_mask, infill, rotary_2d
from minillm.testing import gradcheck
from _helpers import scramble as _scramble

V, MASK, SOP, EOP = 31, 1, 2, 3


def cfg(**kw):
    base = dict(vocab_size=V, max_seq_len=32, hidden_size=16, num_layers=2, num_attention_heads=2)
    return GLMConfig(**{**base, **kw})


def scramble(model, std=0.3):
    return _scramble(model, std, vectors=0.1)


class Order:
    """A stand-in rng whose permutation is fixed (to check a worked layout)."""

    def __init__(self, order):
        self.order = np.array(order)

    def permutation(self, n):
        assert n == len(self.order)
        return self.order


# ------------------------------------------------------------------ the mask
def brute_force_mask(sep, T):
    """The definition, one pair at a time: query i may attend key j iff j is in Part A or j <= i."""
    out = np.zeros((T, T), dtype=bool)
    for i in range(T):
        for j in range(T):
            out[i, j] = not (j < sep or j <= i)
    return out


def test_mask_worked_example():
    # Part A = 3 tokens (x1 [M] x3), Part B = [S] y1 y2
    allowed = (~glm_attention_mask([3], 6)[0]).astype(int)
    np.testing.assert_array_equal(allowed, [
        [1, 1, 1, 0, 0, 0],   # Part A sees all of Part A, nothing of Part B
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 0, 0],   # [S] sees Part A and itself
        [1, 1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1, 1],
    ])


@pytest.mark.parametrize("T", [1, 2, 5, 9])
def test_mask_equals_brute_force_for_every_sep(T):
    seps = np.arange(T + 1)
    got = glm_attention_mask(seps, T)  # (T+1, T, T)
    for b, s in enumerate(seps):
        np.testing.assert_array_equal(got[b], brute_force_mask(s, T), err_msg=f"sep={s}")
    assert not got[:, :, 0].any(), "the first key is always visible (Part A or j <= i)"
    np.testing.assert_array_equal(got[T], np.zeros((T, T), bool))  # all Part A: fully bidirectional
    np.testing.assert_array_equal(got[0], np.triu(np.ones((T, T), bool), 1))  # all Part B: causal (GPT)


def test_mask_rows_for_cached_queries_are_the_last_rows():
    full = glm_attention_mask([3, 5], 8)
    np.testing.assert_array_equal(glm_attention_mask([3, 5], 2, 8), full[:, 6:])


def test_mask_bad_input():
    with pytest.raises(ValueError, match=r"sep must be in \[0, 4\].*\[5\]"):
        glm_attention_mask([5], 4)
    with pytest.raises(ValueError, match="sep must be one int or a"):
        glm_attention_mask([1.5], 4)
    with pytest.raises(ValueError, match="q_len <= k_len"):
        glm_attention_mask([1], 5, 3)


# ------------------------------------------------------------------ spans and the layout
def test_blank_infilling_worked_example():
    # the module docstring's: x1..x6, spans (x3) and (x5 x6), Part B lists the second span first
    x = [11, 12, 13, 14, 15, 16]
    ex = blank_infilling(x, [(2, 3), (4, 6)], MASK, SOP, EOP, rng=Order([1, 0]))
    assert ex["sep"] == 5
    np.testing.assert_array_equal(ex["input_ids"], [11, 12, MASK, 14, MASK, SOP, 15, 16, SOP, 13])
    np.testing.assert_array_equal(ex["position_ids"], [[0, 1, 2, 3, 4, 4, 4, 4, 2, 2],
                                                       [0, 0, 0, 0, 0, 1, 2, 3, 1, 2]])
    np.testing.assert_array_equal(ex["labels"], [-100] * 5 + [15, 16, EOP, 13, EOP])


def test_blank_infilling_reconstructs_the_text():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(2, 60))
        x = list(rng.integers(10, 100, n))
        spans = sample_spans(n, rng=rng)
        ex = blank_infilling(x, spans, MASK, SOP, EOP, rng=rng)
        sep, ids, pos, lab = ex["sep"], ex["input_ids"], ex["position_ids"], ex["labels"]
        assert len(ids) == n + 2 * len(spans) and sep == n - sum(e - s for s, e in spans) + len(spans)
        # put every Part B span back into its [MASK] (found through the first position row)
        filled = {}
        starts = [t for t in range(sep, len(ids)) if ids[t] == SOP]
        for k, t0 in enumerate(starts):
            t1 = starts[k + 1] if k + 1 < len(starts) else len(ids)
            assert ids[pos[0, t0]] == MASK and (pos[0, t0:t1] == pos[0, t0]).all()
            np.testing.assert_array_equal(pos[1, t0:t1], np.arange(1, t1 - t0 + 1))
            np.testing.assert_array_equal(lab[t0:t1 - 1], ids[t0 + 1:t1])  # predict the next span token...
            assert lab[t1 - 1] == EOP  # ...and [END] after the last
            filled[int(pos[0, t0])] = list(ids[t0 + 1:t1])
        text = []
        for t in range(sep):
            text += filled[t] if ids[t] == MASK else [ids[t]]
        assert text == x
        assert (pos[1, :sep] == 0).all() and (lab[:sep] == -100).all()


def test_span_statistics_poisson_3_and_15_percent():
    rng = np.random.default_rng(0)
    lengths, ratios = [], []
    for _ in range(300):
        n = 400
        spans = sample_spans(n, rng=rng)
        assert all(s2 > e1 for (_, e1), (s2, _) in zip(spans, spans[1:])), "spans are separate"
        covered = sum(e - s for s, e in spans)
        ratios.append(covered / n)
        assert covered >= math.ceil(0.15 * n)
        lengths += [e - s for s, e in spans]
    # E[max(1, Poisson(3))] = 3 + P(X = 0) = 3 + e^-3
    assert np.mean(lengths) == pytest.approx(3 + math.exp(-3), abs=0.08)
    assert np.mean(ratios) == pytest.approx(0.15 + 0.02, abs=0.02)  # overshoot of the last span only
    assert sample_spans(2, rng=rng) == [(0, 1)] or sample_spans(2, rng=rng) in ([(0, 1)], [(1, 2)])


def test_span_bad_input():
    with pytest.raises(ValueError, match="n must be an int >= 2"):
        sample_spans(1)
    with pytest.raises(ValueError, match="mask_ratio"):
        sample_spans(10, mask_ratio=1.5)
    with pytest.raises(ValueError, match="spans must be sorted"):
        blank_infilling([1, 2, 3, 4], [(0, 2), (2, 3)], MASK, SOP, EOP)  # touching spans would merge
    with pytest.raises(ValueError, match="no spans"):
        blank_infilling([1, 2, 3], [], MASK, SOP, EOP)


def test_dataset_fits_max_len_and_collate_pads_after_part_b():
    docs = [list(range(10, 10 + n)) for n in (5, 40, 200)]
    ds = BlankInfillingDataset(docs, MASK, SOP, EOP, max_len=64, seed=3)
    items = [ds[i] for i in range(3)]
    assert all(len(it["input_ids"]) <= 64 for it in items)
    assert ds[1]["input_ids"].tolist() == items[1]["input_ids"].tolist()  # reproducible
    b = collate_glm(items, pad_id=0)
    assert b["input_ids"].shape == b["labels"].shape and b["position_ids"].shape[1] == 2
    n0 = len(items[0]["input_ids"])
    assert (b["labels"][0, n0:] == -100).all() and (b["input_ids"][0, n0:] == 0).all()


# ------------------------------------------------------------------ the model
def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match=r"hidden_size \(15\) must be divisible by num_attention_heads \(2\)"):
        cfg(hidden_size=15)
    with pytest.raises(ValueError, match="GLMConfig.num_layers"):
        cfg(num_layers=0)
    with pytest.raises(ValueError, match="GLMConfig.dropout"):
        cfg(dropout=1.0)
    assert GLMConfig.from_dict(cfg().to_dict()) == cfg()
    with pytest.raises(TypeError, match="expected a GLMConfig"):
        GLM({"hidden_size": 8})
    with pytest.raises(ValueError, match="position_encoding must be 'rotary' or 'learned', got 'alibi'"):
        cfg(position_encoding="alibi")
    with pytest.raises(ValueError, match=r"head_dim .*\(6\) must be divisible by 4"):
        cfg(hidden_size=12)
    assert cfg(hidden_size=12, position_encoding="learned").head_dim == 6  # learned tables have no such need


def test_structure_post_norm_single_linear_head_gelu():
    m = GLM(cfg())
    assert m.lm_head.weight is m.word_embeddings.weight  # one linear output layer, tied
    names = set(m.state_dict())
    assert sum(n in ("lm_head.weight", "word_embeddings.weight") for n, _ in m.named_parameters()) == 1  # trained once
    assert not any("dense" in n or "pooler" in n for n in names)  # no MLP head (BERT's has dense + LN)
    assert m.transformer.layers[0].mlp.activation == "gelu"
    assert {"transformer.layers.1.input_layernorm.bias", "transformer.final_layernorm.weight"} <= names
    assert not any("position" in n for n in names)  # 2-D rotary positions have no parameters
    learned = set(GLM(cfg(position_encoding="learned")).state_dict())
    assert learned - names == {"transformer.position_embeddings.embedding.weight",
                               "transformer.block_position_embeddings.embedding.weight"}


def test_rotary_2d_is_chatglm_formula_and_sees_only_offsets():
    """Each head's first half turns by the text position, its second half by the span position:
    pair (2i, 2i+1) of a half of width h by angle t·theta^(-2i/h), written here as a 2x2 rotation."""
    rng = np.random.default_rng(0)
    B, H, T, D = 2, 3, 5, 8
    q, k = mi.tensor(rng.normal(size=(B, H, T, D))), mi.tensor(rng.normal(size=(B, H, T, D)))
    pos = rng.integers(0, 20, size=(B, 2, T))
    rq, rk = rotary_2d(pos, D, theta=100.0)(q, k)
    ref = np.empty((B, H, T, D))
    h = D // 2
    for b in range(B):
        for t in range(T):
            for half, row in ((0, 0), (1, 1)):
                for i in range(h // 2):
                    a = pos[b, row, t] * 100.0 ** (-2 * i / h)
                    c0 = half * h + 2 * i
                    x0, x1 = q.data[b, :, t, c0], q.data[b, :, t, c0 + 1]
                    ref[b, :, t, c0], ref[b, :, t, c0 + 1] = x0 * np.cos(a) - x1 * np.sin(a), x0 * np.sin(a) + x1 * np.cos(a)
    np.testing.assert_allclose(rq.data, ref, rtol=1e-12, atol=1e-12)
    # scores depend only on the offsets: shifting every position of a row (either row) changes nothing
    s = rq.data @ rk.data.transpose(0, 1, 3, 2)
    for row in (0, 1):
        p2 = pos.copy()
        p2[:, row] += 7
        rq2, rk2 = rotary_2d(p2, D, theta=100.0)(q, k)
        np.testing.assert_allclose(rq2.data @ rk2.data.transpose(0, 1, 3, 2), s, rtol=1e-9, atol=1e-10)


def test_block_is_post_norm_by_formula():
    blk = scramble(GLMBlock(cfg()).double())
    x = mi.randn(2, 5, 16, dtype=mi.float64)
    mask = glm_attention_mask([3, 2], 5)

    def ln(z, mod):
        mu, var = z.mean(-1, keepdims=True), z.var(-1, keepdims=True)
        return (z - mu) / np.sqrt(var + 1e-5) * mod.weight.data + mod.bias.data

    alpha = np.sqrt(2 * cfg().num_layers)  # DeepNorm's α, as ChatGLM-6B
    assert blk.alpha == pytest.approx(alpha)
    h = ln(x.data, blk.input_layernorm)  # the previous block's sum, normalised
    h2 = ln(alpha * h + blk.attention(mi.tensor(h), attn_mask=mask).data, blk.post_attention_layernorm)  # LN after the add
    ref = alpha * h2 + blk.mlp(mi.tensor(h2)).data  # normalised by the next block's input_layernorm
    np.testing.assert_allclose(blk(x, mask).data, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("flash, positions", [(True, "rotary"), (False, "learned")])
def test_model_loss_gradcheck_with_mask_and_2d_positions(backend, flash, positions):
    m = scramble(GLM(cfg(hidden_size=8, num_layers=1, max_seq_len=12, flash_attn=flash, position_encoding=positions)).double(), 0.4)
    ex = collate_glm([blank_infilling([5, 6, 7, 8, 9, 10], [(1, 3), (4, 5)], MASK, SOP, EOP, np.random.default_rng(0)),
                      blank_infilling([5, 6, 7, 8], [(2, 3)], MASK, SOP, EOP)])
    gradcheck(lambda *p: m(ex["input_ids"], position_ids=ex["position_ids"], sep=ex["sep"], targets=ex["labels"]).loss,
              list(m.parameters()), name="GLM blank-infilling loss")


def test_flash_and_step_by_step_paths_agree():
    a = scramble(GLM(cfg()).double())
    b = GLM(cfg(flash_attn=False)).double()
    b.load_state_dict(a.state_dict())
    ex = blank_infilling(list(range(10, 25)), [(2, 5), (9, 10)], MASK, SOP, EOP, np.random.default_rng(1))
    args = (ex["input_ids"][None],)
    kw = dict(position_ids=ex["position_ids"][None], sep=[ex["sep"]])
    np.testing.assert_allclose(a(*args, **kw).logits.data, b(*args, **kw).logits.data, rtol=1e-9, atol=1e-10)


def test_who_sees_whom_in_the_model():
    """Changing a token changes exactly the outputs the mask says it should."""
    m = scramble(GLM(cfg()).double())
    ex = blank_infilling(list(range(10, 22)), [(1, 3), (6, 9)], MASK, SOP, EOP, np.random.default_rng(2))
    ids, pos, sep = ex["input_ids"][None], ex["position_ids"][None], ex["sep"]
    T = ids.shape[1]
    base = m(ids, position_ids=pos, sep=sep).logits.data[0]
    for t in range(T):
        x2 = ids.copy()
        x2[0, t] = (x2[0, t] + 7) % V
        changed = ~np.isclose(m(x2, position_ids=pos, sep=sep).logits.data[0], base, atol=1e-12).all(-1)  # (T,)
        expected = np.array([t < sep or t <= i for i in range(T)])  # queries i that see key t
        np.testing.assert_array_equal(changed, expected, err_msg=f"token {t} (sep={sep})")


@pytest.mark.parametrize("positions", ["rotary", "learned"])
def test_positions_matter_both_rows(positions):
    m = scramble(GLM(cfg(position_encoding=positions)).double())
    ex = blank_infilling(list(range(10, 20)), [(3, 6)], MASK, SOP, EOP)
    ids, pos = ex["input_ids"][None], ex["position_ids"][None]
    base = m(ids, position_ids=pos, sep=ex["sep"]).logits.data
    for row in (0, 1):
        p2 = pos.copy()
        p2[0, row, -1] += 1
        assert not np.allclose(m(ids, position_ids=p2, sep=ex["sep"]).logits.data[0, -1], base[0, -1])


def naive_layout(ctx, span):
    """Part A (``ctx``, one [MASK]) + [START] + ``span``: ids and 2-D positions, written out by hand."""
    mpos = ctx.index(MASK)
    ids = ctx + [SOP] + span
    pos = [list(range(len(ctx))) + [mpos] * (len(span) + 1), [0] * len(ctx) + list(range(1, len(span) + 2))]
    return ids, pos


def test_generation_layout_is_the_training_layout():
    """What ``naive_infill`` (and so ``infill``, tested equal to it below) feeds the model is what
    ``blank_infilling`` trains on: the same ids and positions, and the label at Part B's i-th
    position is the span's i-th token ([END] last), i.e. the logits read at each step."""
    tokens = [10, 11, 12, 13, 14, 15]
    ex = blank_infilling(tokens, [(2, 4)], MASK, SOP, EOP)
    ids, pos = naive_layout([10, 11, MASK, 14, 15], [12, 13])
    assert ex["input_ids"].tolist() == ids and ex["position_ids"].tolist() == pos and ex["sep"] == 5
    assert ex["labels"].tolist() == [-100] * 5 + [12, 13, EOP]


def naive_infill(m, ctx, max_new):
    """No cache: rebuild Part A + [START] + the span so far and run the whole sequence each step."""
    span = []
    for _ in range(max_new):
        ids, pos = naive_layout(ctx, span)
        nxt = int(m(np.array([ids]), position_ids=np.array([pos]), sep=len(ctx)).logits.data[0, -1].argmax())
        if nxt == EOP:
            break
        span.append(nxt)
    return span


def test_cached_infill_equals_the_no_cache_loop_and_padding_changes_nothing():
    m = scramble(GLM(cfg()).double(), 0.5)
    ctxs = [[10, 11, MASK, 13, 14], [20, MASK, 22], [5, 6, 7, 8, MASK, 9, 10, 11]]
    got = infill(m, ctxs, MASK, SOP, EOP, max_new_tokens=6, pad_id=0)
    for ctx, g in zip(ctxs, got):
        assert g == naive_infill(m, ctx, 6)
        assert infill(m, [ctx], MASK, SOP, EOP, max_new_tokens=6) == [g]  # alone = in a left-padded batch
    assert any(len(g) > 0 for g in got)


class RecordingGLM(GLM):
    """A GLM that keeps the logits of every forward call (to read what ``infill`` computed)."""

    def __init__(self, config):
        super().__init__(config)
        self.calls = []

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        self.calls.append(out.logits.data.copy())
        return out


@pytest.mark.parametrize("positions", ["rotary", "learned"])
def test_infill_logits_equal_the_teacher_forced_training_layout(positions):
    """The decisive train/inference check: ``infill``'s logits at every decoding step (left-padded
    batch, KV cache, Part A with two [MASK]s) equal, row for row, the teacher-forced forward of
    ``blank_infilling``'s layout for the same tokens -- the layout the loss is computed on. Any
    mismatch in 2-D positions, the Part A keys, the mask or the [START]/[MASK] ids breaks it."""
    m = RecordingGLM(cfg(max_seq_len=40, position_encoding=positions))
    m.load_state_dict(scramble(GLM(cfg(max_seq_len=40, position_encoding=positions)), 0.5).state_dict())
    m = m.double()
    rng = np.random.default_rng(5)
    texts = [list(rng.integers(10, V, n)) for n in (12, 7, 16)]
    spans = [[(3, 5), (8, 10)], [(1, 2), (4, 6)], [(6, 9), (12, 13)]]
    # Part A of each text: its spans replaced by [MASK]; infill fills the first [MASK] (span 0)
    parts_a = [blank_infilling(x, sp, MASK, SOP, EOP, rng=Order([0, 1])) for x, sp in zip(texts, spans)]
    ctxs = [ex["input_ids"][: ex["sep"]].tolist() for ex in parts_a]
    max_new = 5
    got = infill(m, ctxs, MASK, SOP, EOP, max_new_tokens=max_new, pad_id=0)
    steps = np.concatenate([c[:, -1:] for c in m.calls[1:]], axis=1)  # (B, steps, V): call 0 is Part A
    assert any(len(g) >= 2 for g in got), "the test needs spans of 2+ tokens to compare"
    for b, (x, sp, g) in enumerate(zip(texts, spans, got)):
        # the same text with the generated tokens as span 0 (span 1 keeps its tokens: it comes
        # after span 0 in Part B, so the causal mask hides it from span 0's rows)
        (s0, e0), (s1, e1) = sp
        x2 = x[:s0] + (g or [EOP]) + x[e0:]
        shift = len(g or [EOP]) - (e0 - s0)
        ex = blank_infilling(x2, [(s0, s0 + len(g or [EOP])), (s1 + shift, e1 + shift)], MASK, SOP, EOP, rng=Order([0, 1]))
        assert ex["input_ids"][: ex["sep"]].tolist() == ctxs[b]  # the same Part A
        tf = m(ex["input_ids"][None], position_ids=ex["position_ids"][None], sep=ex["sep"]).logits.data[0]
        n = len(g) + 1 if len(g) < max_new else max_new  # rows read: [START] + each token fed back
        np.testing.assert_allclose(steps[b, :n], tf[ex["sep"] : ex["sep"] + n], rtol=1e-9, atol=1e-10,
                                   err_msg=f"context {b}: infill's step logits differ from the training layout's")
        # and the greedy tokens are the argmax of those rows, stopping at [END]
        assert [int(t) for t in tf[ex["sep"] : ex["sep"] + n].argmax(-1)][: len(g)] == g


def test_loss_is_on_the_right_positions_by_brute_force():
    """The loss of a two-span worked example equals, label by label, -log p(label) read from a
    separate forward of only the tokens before it (so no label sees its own or a later token)."""
    m = scramble(GLM(cfg()).double(), 0.5)
    x = [11, 12, 13, 14, 15, 16, 17, 18]
    ex = blank_infilling(x, [(1, 3), (5, 6)], MASK, SOP, EOP, rng=Order([1, 0]))
    ids, pos, sep, lab = ex["input_ids"], ex["position_ids"], ex["sep"], ex["labels"]
    # Part B = [S] 16 [S] 12 13, so the labels are 16 [E] 12 13 [E], each at the token before it
    assert ids[sep:].tolist() == [SOP, 16, SOP, 12, 13] and lab[sep:].tolist() == [16, EOP, 12, 13, EOP]
    nll = []
    for t in range(sep, len(ids)):
        logits = m(ids[None, : t + 1], position_ids=pos[None, :, : t + 1], sep=sep).logits.data[0, -1]
        logp = logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())
        nll.append(-logp[lab[t]])
    loss = m(ids[None], position_ids=pos[None], sep=sep, targets=lab[None]).loss.data
    assert float(loss) == pytest.approx(np.mean(nll), rel=1e-10)


def test_model_bad_input():
    m = GLM(cfg())
    with pytest.raises(ValueError, match=r"position_ids must have shape \(1, 2, 3\)"):
        m(np.array([[4, 5, 6]]), position_ids=np.zeros((1, 3), dtype=np.int64))
    with pytest.raises(ValueError, match=r"sep must be in \[0, 4\)"):
        m(np.array([[4, 5, 6]]), sep=[7])
    with pytest.raises(ValueError, match=r"position_ids must be in \[0, 32\)"):
        m(np.array([[4, 5, 6]]), position_ids=np.full((1, 2, 3), 40))
    with pytest.raises(TypeError, match="input_ids must be integer"):
        m(np.array([[0.5, 1.0]]))
    with pytest.raises(ValueError, match="no \\[MASK\\]"):
        infill(m, [[4, 5, 6]], MASK, SOP, EOP)


def test_save_and_load_round_trip(tmp_path):
    m = scramble(GLM(cfg()))
    save_model(m, tmp_path / "glm")
    m2 = load_model(tmp_path / "glm")
    assert isinstance(m2, GLM) and m2.config == m.config
    ids = np.array([[4, MASK, 6, SOP, 7]])
    np.testing.assert_array_equal(m(ids, sep=3).logits.data, m2(ids, sep=3).logits.data)


def test_a_config_saved_before_rotary_became_the_default_still_loads(tmp_path):
    import json

    m = scramble(GLM(cfg(position_encoding="learned")))
    save_model(m, tmp_path / "old")
    path = tmp_path / "old" / "config.json"
    raw = json.loads(path.read_text())
    del raw["position_encoding"]  # what files written before the field existed look like
    path.write_text(json.dumps(raw))
    m2 = load_model(tmp_path / "old")
    assert m2.config.position_encoding == "learned"
    ids = np.array([[4, MASK, 6, SOP, 7]])
    np.testing.assert_array_equal(m(ids, sep=3).logits.data, m2(ids, sep=3).logits.data)


def test_world_blanks_are_held_out_words_of_the_story():
    from minillm.data.world import NAMES, PLACES

    items = world_blanks(40, "val", seed=0)
    assert len(items) == 40 and {it["lang"] for it in items} == {"en", "zh"}
    for it in items:
        word = it["answer"].strip()
        assert word and (it["answer"] == word or (it["lang"] == "en" and it["answer"] == " " + word))
        assert it["later"] == (word in it["right"] and word not in it["left"])
    en_names = {n[0] for n in NAMES} | {p[0] for p in PLACES}
    assert any(it["answer"].strip() in en_names for it in items)
    assert world_blanks(40, "val", seed=0) == items  # deterministic
    with pytest.raises(ValueError, match="n must be an int >= 0"):
        world_blanks(-1)
