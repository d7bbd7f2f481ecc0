"""minillm.optim: each update rule against a step computed by hand, state save/restore, clipping, groups."""
import json
import math

import numpy as np
import pytest

import minillm as mi
from minillm.optim import (
    SGD, Adam, AdamW, clip_grad_norm_, flatten_state_dict, param_groups_for_weight_decay, unflatten_state_dict,
)


def _param(values, dtype=np.float64):
    return mi.Tensor(np.array(values, dtype=dtype), requires_grad=True)


def _run(opt, params, grads_per_step):
    """Apply the given gradients (one list per step, one array per param) with opt."""
    for grads in grads_per_step:
        for p, g in zip(params, grads):
            p.grad = None if g is None else mi.Tensor(np.array(g, dtype=p.dtype))
        opt.step()


# ----------------------------------------------------------------------------- SGD
def test_sgd_plain_step_by_hand():
    p = _param([1.0, -2.0])
    _run(SGD([p], lr=0.1), [p], [[[0.5, 1.0]]])
    np.testing.assert_allclose(p.data, [1.0 - 0.05, -2.0 - 0.1], rtol=0, atol=1e-15)


def test_sgd_weight_decay_by_hand():
    p = _param([1.0, -2.0])
    _run(SGD([p], lr=0.1, weight_decay=0.5), [p], [[[0.5, 1.0]]])
    # g' = g + 0.5 p = [1.0, 0.0]
    np.testing.assert_allclose(p.data, [0.9, -2.0], atol=1e-15)


def test_sgd_momentum_dampening_by_hand():
    p = _param([1.0])
    _run(SGD([p], lr=0.1, momentum=0.9, dampening=0.1), [p], [[[1.0]], [[2.0]], [[-1.0]]])
    # step 1: b = g = 1 (no dampening on the first step)  p = 1 - 0.1*1       = 0.9
    # step 2: b = 0.9*1 + 0.9*2 = 2.7                      p = 0.9 - 0.27      = 0.63
    # step 3: b = 0.9*2.7 + 0.9*(-1) = 1.53                p = 0.63 - 0.153    = 0.477
    np.testing.assert_allclose(p.data, [0.477], atol=1e-14)


def test_sgd_nesterov_with_weight_decay_by_hand():
    p = _param([1.0])
    opt = SGD([p], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1)
    _run(opt, [p], [[[1.0]]])
    # g = 1 + 0.1*1 = 1.1;  b = 1.1;  g = 1.1 + 0.9*1.1 = 2.09;  p = 1 - 0.209 = 0.791
    np.testing.assert_allclose(p.data, [0.791], atol=1e-14)
    _run(opt, [p], [[[2.0]]])
    # g = 2 + 0.0791 = 2.0791;  b = 0.99 + 2.0791 = 3.0691;  g = 2.0791 + 0.9*3.0691 = 4.84129
    np.testing.assert_allclose(p.data, [0.791 - 0.484129], atol=1e-14)
    np.testing.assert_allclose(opt.state[p]["momentum_buffer"], [3.0691], atol=1e-14)


# ----------------------------------------------------------------------------- Adam / AdamW
def _adam_by_hand(p, grads, lr, b1, b2, eps, wd, decoupled):
    """Scalar Adam/AdamW with plain Python floats, written out as in the docstring."""
    m = v = 0.0
    for t, g in enumerate(grads, start=1):
        if decoupled:
            p = p * (1 - lr * wd)
        else:
            g = g + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        p = p - lr * m_hat / (math.sqrt(v_hat) + eps)
    return p


def test_adam_first_steps_literal(backend):
    # constant g: m_hat = g and v_hat = g^2 at every step (bias correction), so p moves by lr per step
    p = _param([1.0, 1.0])
    _run(Adam([p], lr=0.1, eps=0.0), [p], [[[0.5, -3.0]]] * 2)
    np.testing.assert_allclose(p.data, [0.8, 1.2], atol=1e-12)


@pytest.mark.parametrize("cls, wd", [(Adam, 0.0), (Adam, 0.1), (AdamW, 0.1), (AdamW, 0.0)])
def test_adam_adamw_by_hand(backend, cls, wd):
    grads = [0.5, -1.0, 0.25]
    p = _param([1.0, -2.0])
    opt = cls([p], lr=0.1, betas=(0.9, 0.99), eps=1e-8, weight_decay=wd)
    _run(opt, [p], [[[g, 2 * g]] for g in grads])
    expected = [
        _adam_by_hand(1.0, grads, 0.1, 0.9, 0.99, 1e-8, wd, cls is AdamW),
        _adam_by_hand(-2.0, [2 * g for g in grads], 0.1, 0.9, 0.99, 1e-8, wd, cls is AdamW),
    ]
    np.testing.assert_allclose(p.data, expected, rtol=1e-12, atol=1e-12)
    assert opt.state[p]["step"] == 3


def test_adamw_decay_is_decoupled_literal(backend):
    p = _param([1.0])
    _run(AdamW([p], lr=0.1, weight_decay=0.1, eps=0.0), [p], [[[0.5]]])
    # p = 1 * (1 - 0.1*0.1) = 0.99, then the Adam step of size lr: 0.89
    np.testing.assert_allclose(p.data, [0.89], atol=1e-12)


@pytest.mark.parametrize("cls", [SGD, Adam, AdamW])
def test_float32_stays_float32(backend, cls):
    p = _param(np.linspace(-1, 1, 6).reshape(2, 3), dtype=np.float32)
    kwargs = {"momentum": 0.9} if cls is SGD else {}
    opt = cls([p], lr=0.01, weight_decay=0.1, **kwargs)
    opt.param_groups[0]["lr"] = np.float64(0.01)  # e.g. written by a schedule computed in float64
    data_before = p.data
    _run(opt, [p], [[np.ones((2, 3))]] * 2)
    assert p.data is data_before and p.data.dtype == np.float32  # updated in place
    for value in opt.state[p].values():
        if isinstance(value, np.ndarray):
            assert value.dtype == np.float32


def test_adamw_backends_agree():
    rng = np.random.default_rng(1)
    w0 = rng.standard_normal((4, 5)).astype(np.float32)
    grads = [[rng.standard_normal((4, 5)).astype(np.float32)] for _ in range(4)]
    results = []
    for name in ("numpy", "numba"):
        previous = mi.get_kernels()
        mi.set_kernels(name)
        try:
            p = _param(w0.copy(), dtype=np.float32)
            _run(AdamW([p], lr=1e-2, weight_decay=0.1), [p], grads)
        finally:
            mi.set_kernels(previous)
        results.append(p.data)
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------- shared behaviour
@pytest.mark.parametrize("cls", [SGD, Adam, AdamW])
def test_params_without_grad_are_skipped(cls):
    a, b = _param([1.0]), _param([2.0])
    opt = cls([a, b], lr=0.1, weight_decay=0.1)
    _run(opt, [a, b], [[[1.0], None]])
    assert b.data[0] == 2.0 and b not in opt.state
    assert a.data[0] != 1.0


def test_zero_grad():
    p = _param([1.0, 2.0])
    opt = SGD([p], lr=0.1)
    p.grad = mi.Tensor(np.array([1.0, 1.0]))
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(p.grad.data, [0.0, 0.0])
    opt.zero_grad()
    assert p.grad is None


def test_zero_grad_after_real_backward():
    w = mi.tensor([1.0, 2.0], requires_grad=True)
    opt = SGD([w], lr=0.5)
    (w * w).sum().backward()  # grad = 2w
    opt.step()
    np.testing.assert_allclose(w.data, [0.0, 0.0])
    opt.zero_grad()
    assert w.grad is None


def test_param_groups_and_defaults():
    a, b = _param([1.0]), _param([1.0])
    opt = SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    assert opt.param_groups[0]["lr"] == 0.1 and opt.param_groups[1]["lr"] == 0.5
    _run(opt, [a, b], [[[1.0], [1.0]]])
    np.testing.assert_allclose([a.data[0], b.data[0]], [0.9, 0.5])


def test_named_parameters_accepted():
    a = _param([1.0])
    opt = AdamW([("w", a)], lr=0.1)
    assert opt.param_groups[0]["param_names"] == ["w"]
    assert opt.param_groups[0]["params"][0] is a


def test_constructor_errors():
    p = _param([1.0])
    with pytest.raises(ValueError, match="empty parameter list"):
        SGD([], lr=0.1)
    with pytest.raises(ValueError, match="more than once"):
        SGD([p, p], lr=0.1)
    with pytest.raises(ValueError, match="more than once"):
        SGD([{"params": [p]}, {"params": [p]}], lr=0.1)
    with pytest.raises(ValueError, match="nesterov"):
        SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="learning rate"):
        Adam([p], lr=-1.0)
    with pytest.raises(ValueError, match="beta"):
        AdamW([p], betas=(0.9, 1.0))
    with pytest.raises(TypeError, match="single Tensor"):
        SGD(p, lr=0.1)
    with pytest.raises(TypeError, match="Tensors"):
        SGD([np.zeros(2)], lr=0.1)
    with pytest.raises(ValueError, match="non-leaf"):
        SGD([p * 2], lr=0.1)


def test_repr_mentions_groups():
    text = repr(AdamW([_param([1.0])], lr=0.1))
    assert "AdamW" in text and "Parameter Group 0" in text and "lr: 0.1" in text


# ----------------------------------------------------------------------------- state_dict
def _make(cls, w0, **kw):
    ps = [_param(w.copy(), dtype=np.float32) for w in w0]
    groups = [{"params": ps[:1], "param_names": ["a.weight"]}, {"params": ps[1:], "param_names": ["b.bias"], "lr": 0.02}]
    return ps, cls(groups, **kw)


@pytest.mark.parametrize(
    "cls, kw",
    [(SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)), (Adam, dict(lr=0.01, weight_decay=0.01)),
     (AdamW, dict(lr=0.01, betas=(0.8, 0.95), weight_decay=0.1))],
)
def test_state_dict_round_trip_through_safetensors_gives_identical_continuation(tmp_path, backend, cls, kw):
    from safetensors.numpy import load_file, save_file

    rng = np.random.default_rng(0)
    w0 = [rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal(4).astype(np.float32)]
    grads = [[rng.standard_normal(w.shape) for w in w0] for _ in range(6)]

    ps_a, opt_a = _make(cls, w0, **kw)
    _run(opt_a, ps_a, grads)  # uninterrupted

    ps_b, opt_b = _make(cls, w0, **kw)
    _run(opt_b, ps_b, grads[:3])
    arrays, meta = flatten_state_dict(opt_b.state_dict())
    save_file(arrays, str(tmp_path / "opt.safetensors"))
    (tmp_path / "opt.json").write_text(json.dumps(meta))
    weights = [p.data.copy() for p in ps_b]

    ps_c = [_param(w, dtype=np.float32) for w in weights]  # a fresh process: new params, new optimizer
    opt_c = cls([{"params": ps_c[:1], "param_names": ["a.weight"]}, {"params": ps_c[1:], "param_names": ["b.bias"]}],
                **kw)
    opt_c.load_state_dict(unflatten_state_dict(load_file(str(tmp_path / "opt.safetensors")),
                                               json.loads((tmp_path / "opt.json").read_text())))
    assert opt_c.param_groups[1]["lr"] == 0.02  # hyperparameters come from the checkpoint
    if "betas" in kw:
        assert opt_c.param_groups[0]["betas"] == kw["betas"]
    _run(opt_c, ps_c, grads[3:])
    for pa, pc in zip(ps_a, ps_c):
        np.testing.assert_array_equal(pa.data, pc.data)


def test_state_dict_is_a_snapshot():
    p = _param([1.0])
    opt = AdamW([p], lr=0.1)
    _run(opt, [p], [[[1.0]]])
    sd = opt.state_dict()
    before = sd["state"][0]["exp_avg"].copy()
    _run(opt, [p], [[[1.0]]])
    np.testing.assert_array_equal(sd["state"][0]["exp_avg"], before)
    assert sd["state"][0]["step"] == 1


def test_load_state_dict_errors():
    rng = np.random.default_rng(0)
    w0 = [rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal(4).astype(np.float32)]
    ps, opt = _make(AdamW, w0, lr=0.1)
    _run(opt, ps, [[np.ones((3, 4)), np.ones(4)]])
    sd = opt.state_dict()

    one_group = AdamW([_param(np.zeros((3, 4)), np.float32)], lr=0.1)
    with pytest.raises(ValueError, match="2 parameter groups.*has 1"):
        one_group.load_state_dict(sd)

    qs = [_param(np.zeros((3, 4)), np.float32), _param(np.zeros(4), np.float32), _param(np.zeros(4), np.float32)]
    more = AdamW([{"params": qs[:1]}, {"params": qs[1:]}], lr=0.1)
    with pytest.raises(ValueError, match="group 1 has 1 params in the saved state but 2"):
        more.load_state_dict(sd)

    qs = [_param(np.zeros((4, 3)), np.float32), _param(np.zeros(4), np.float32)]
    wrong_shape = AdamW([{"params": qs[:1]}, {"params": qs[1:]}], lr=0.1)
    with pytest.raises(ValueError, match=r"param 0.*exp_avg.*\(3, 4\).*\(4, 3\)"):
        wrong_shape.load_state_dict(sd)

    qs = [_param(np.zeros((3, 4)), np.float32), _param(np.zeros(4), np.float32)]
    renamed = AdamW([{"params": qs[:1], "param_names": ["x.weight"]}, {"params": qs[1:], "param_names": ["b.bias"]}])
    with pytest.raises(ValueError, match="'a.weight'.*'x.weight'"):
        renamed.load_state_dict(sd)
    assert renamed.state == {}  # nothing changed by a failed load

    with pytest.raises(ValueError, match="missing"):
        broken = {"state": {0: {"step": 1}}, "param_groups": sd["param_groups"]}
        AdamW([{"params": qs[:1]}, {"params": qs[1:]}]).load_state_dict(broken)

    with pytest.raises(ValueError, match="'state' and 'param_groups'"):
        opt.load_state_dict({"weights": 1})


def test_unflatten_missing_array_is_named():
    p = _param([1.0])
    opt = Adam([p])
    _run(opt, [p], [[[1.0]]])
    arrays, meta = flatten_state_dict(opt.state_dict(), prefix="optim.")
    assert sorted(arrays) == ["optim.state.0.exp_avg", "optim.state.0.exp_avg_sq"]
    json.dumps(meta)  # JSON-serialisable
    del arrays["optim.state.0.exp_avg_sq"]
    with pytest.raises(ValueError, match="optim.state.0.exp_avg_sq"):
        unflatten_state_dict(arrays, meta, prefix="optim.")


# ----------------------------------------------------------------------------- clip_grad_norm_
def test_clip_grad_norm_returns_pre_clip_norm_and_scales():
    a, b, c = _param([0.0, 0.0]), _param([0.0]), _param([0.0])
    a.grad = mi.Tensor(np.array([3.0, 4.0]))
    b.grad = mi.Tensor(np.array([0.0]))
    norm = clip_grad_norm_([a, b, c], max_norm=1.0)  # c has no grad: skipped
    assert norm == pytest.approx(5.0, abs=1e-12)
    np.testing.assert_allclose(a.grad.data, [0.6, 0.8], rtol=1e-6)
    assert c.grad is None


def test_clip_grad_norm_no_op_below_max_and_other_norms():
    a = _param([0.0, 0.0, 0.0], dtype=np.float32)
    a.grad = mi.Tensor(np.array([1.0, -2.0, 2.0], dtype=np.float32))
    assert clip_grad_norm_(a, max_norm=10.0) == pytest.approx(3.0)
    np.testing.assert_array_equal(a.grad.data, [1.0, -2.0, 2.0])
    assert clip_grad_norm_(a, max_norm=10.0, norm_type=1) == pytest.approx(5.0)
    assert clip_grad_norm_(a, max_norm=1.0, norm_type=float("inf")) == pytest.approx(2.0)
    np.testing.assert_allclose(a.grad.data, [0.5, -1.0, 1.0], rtol=1e-5)
    assert a.grad.data.dtype == np.float32
    assert clip_grad_norm_([_param([1.0])], 1.0) == 0.0


def test_clip_grad_norm_nonfinite():
    a = _param([0.0])
    a.grad = mi.Tensor(np.array([np.inf]))
    assert math.isinf(clip_grad_norm_([a], 1.0))
    with pytest.raises(RuntimeError, match="error_if_nonfinite"):
        clip_grad_norm_([a], 1.0, error_if_nonfinite=True)


# ----------------------------------------------------------------------------- weight-decay groups
def test_param_groups_for_weight_decay():
    t = lambda *shape: mi.Tensor(np.zeros(shape, dtype=np.float32), requires_grad=True)  # noqa: E731
    emb = t(8, 4)
    named = [
        ("tok_embeddings.weight", emb),
        ("layers.0.attention.wq.weight", t(4, 4)),
        ("layers.0.attention_norm.weight", t(4)),
        ("layers.0.feed_forward.w1.weight", t(6, 4)),
        ("proj.bias", t(4)),
        ("odd.bias_matrix", t(2, 2)),  # 2-D but named bias: no decay
        ("scale", t(3)),  # 1-D without a telling name: no decay
        ("output.weight", emb),  # tied to the embedding: listed once
        ("frozen.weight", mi.Tensor(np.zeros((2, 2), dtype=np.float32))),
    ]
    decay, no_decay = param_groups_for_weight_decay(named, 0.1)
    assert decay["param_names"] == ["layers.0.attention.wq.weight", "layers.0.feed_forward.w1.weight"]
    assert no_decay["param_names"] == [
        "tok_embeddings.weight", "layers.0.attention_norm.weight", "proj.bias", "odd.bias_matrix", "scale",
    ]
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    opt = AdamW([decay, no_decay], lr=1e-3)
    assert opt.param_groups[1]["weight_decay"] == 0.0
    assert param_groups_for_weight_decay(dict(named[:2]), 0.1)[0]["param_names"] == ["layers.0.attention.wq.weight"]
    with pytest.raises(TypeError, match="named_parameters"):
        param_groups_for_weight_decay([emb], 0.1)


def test_incomplete_optimizer_or_scheduler_cannot_be_built():
    from minillm.optim import Optimizer
    from minillm.optim.lr_scheduler import LRScheduler

    with pytest.raises(TypeError, match="abstract"):
        Optimizer([mi.zeros(2, requires_grad=True)], {"lr": 0.1})
    with pytest.raises(TypeError, match="abstract"):
        LRScheduler.__new__(LRScheduler)
