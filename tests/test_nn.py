"""nn.Module machinery, containers, layers (gradchecked in float64 on both kernel backends) and nn.init."""
import math
from collections import OrderedDict

import numpy as np
import pytest

import minillm as mi
import minillm.nn as nn
import minillm.nn.functional as F
from minillm.testing import gradcheck


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.norm = nn.RMSNorm(4)
        self.scale = nn.Parameter(mi.ones(4))
        self.register_buffer("steps", mi.zeros(1))
        self.register_buffer("table", mi.zeros(2), persistent=False)
        self.note = "plain attribute"

    def forward(self, x):
        return self.norm(self.fc(x)) * self.scale


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([Block(), Block()])
        self.head = nn.Linear(4, 2, bias=False)

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return self.head(x)


# ------------------------------------------------------------------ registration and walking
def test_registration_and_names():
    net = Net()
    names = [n for n, _ in net.named_parameters()]
    assert names == [  # PyTorch's order: a module's own parameters, then its children's, depth first
        "blocks.0.scale", "blocks.0.fc.weight", "blocks.0.fc.bias", "blocks.0.norm.weight",
        "blocks.1.scale", "blocks.1.fc.weight", "blocks.1.fc.bias", "blocks.1.norm.weight", "head.weight",
    ]
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in net.parameters())
    assert [n for n, _ in net.named_modules()] == [
        "", "blocks", "blocks.0", "blocks.0.fc", "blocks.0.norm", "blocks.1", "blocks.1.fc", "blocks.1.norm", "head",
    ]
    assert [type(m).__name__ for m in net.children()] == ["ModuleList", "Linear"]
    assert len(list(net.modules())) == 9
    assert [n for n, _ in net.named_buffers()] == ["blocks.0.steps", "blocks.0.table", "blocks.1.steps", "blocks.1.table"]
    assert net.blocks[0].note == "plain attribute"
    assert net.get_parameter("blocks.1.fc.bias") is net.blocks[1].fc.bias
    assert net.get_submodule("blocks.0.norm") is net.blocks[0].norm
    with pytest.raises(AttributeError, match="no submodule 'nope'"):
        net.get_submodule("blocks.nope")


def test_unknown_attribute_raises():
    net = Net()
    with pytest.raises(AttributeError, match="'Net' object has no attribute 'missing'"):
        net.missing  # noqa: B018
    with pytest.raises(AttributeError):
        net.blocks[0].weight  # noqa: B018


def test_assignment_rules():
    b = Block()
    with pytest.raises(TypeError, match="nn.Parameter or None expected"):
        b.scale = mi.ones(4)  # a plain Tensor cannot replace a parameter
    b.scale = None
    assert "scale" not in dict(b.named_parameters())
    b.extra = nn.Linear(2, 2)  # new sub-module
    assert "extra.weight" in dict(b.named_parameters())
    del b.extra
    assert "extra.weight" not in dict(b.named_parameters())

    b.later = None  # a plain attribute first ...
    b.later = nn.Parameter(mi.zeros(2))  # ... then a parameter under the same name
    assert b.later is b._parameters["later"] and "later" in b.state_dict()
    assert nn.Linear(2, 2, bias=False).bias is None

    class Early(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(mi.ones(2))  # before super().__init__()

    with pytest.raises(AttributeError, match="before Module.__init__"):
        Early()


def test_forward_missing_is_clear():
    with pytest.raises(TypeError, match="Module has no forward"):
        nn.Module()(1)
    with pytest.raises(TypeError, match="ModuleList has no forward.*iterate"):
        nn.ModuleList([nn.Linear(2, 2)])(1)


def test_shared_parameter_listed_once():
    a, b = nn.Linear(3, 3, bias=False), nn.Linear(3, 3, bias=False)
    b.weight = a.weight
    seq = nn.Sequential(a, b)
    assert [n for n, _ in seq.named_parameters()] == ["0.weight"]
    assert seq.num_parameters() == 9
    assert list(seq.state_dict()) == ["0.weight", "1.weight"]  # state_dict lists every name, like PyTorch


# ------------------------------------------------------------------ state dict
def test_state_dict_roundtrip_and_sharing():
    net = Net()
    sd = net.state_dict()
    assert "blocks.0.steps" in sd and "blocks.0.table" not in sd  # non-persistent buffers are left out
    assert sd["head.weight"].data is net.head.weight.data  # shares memory, like PyTorch
    assert not sd["head.weight"].requires_grad
    other = Net()
    res = other.load_state_dict({k: v.data.copy() for k, v in sd.items()})
    assert res.missing_keys == [] and res.unexpected_keys == []
    for (n1, p1), (n2, p2) in zip(net.named_parameters(), other.named_parameters()):
        assert n1 == n2 and np.array_equal(p1.data, p2.data)
    # loading keeps the parameter objects (an optimizer holding them still sees the new values)
    w = other.head.weight
    other.load_state_dict(Net().state_dict())
    assert other.head.weight is w


def test_load_state_dict_errors_name_keys():
    net = Net()
    sd = {k: v.data.copy() for k, v in net.state_dict().items()}
    del sd["head.weight"]
    sd["bogus.weight"] = np.zeros(2)
    with pytest.raises(RuntimeError, match=r"missing keys: head\.weight.*unexpected keys: bogus\.weight"):
        net.load_state_dict(sd)
    res = net.load_state_dict(sd, strict=False)
    assert res.missing_keys == ["head.weight"] and res.unexpected_keys == ["bogus.weight"]
    sd = {k: v.data.copy() for k, v in net.state_dict().items()}
    sd["blocks.1.fc.weight"] = np.zeros((5, 3), dtype=np.float32)
    with pytest.raises(RuntimeError, match=r"blocks\.1\.fc\.weight: checkpoint has shape \(5, 3\), model has \(4, 4\)"):
        net.load_state_dict(sd, strict=False)  # shape mismatches fail even when not strict


def test_load_state_dict_casts_dtype():
    lin = nn.Linear(2, 2)
    lin.load_state_dict({"weight": np.ones((2, 2)), "bias": np.zeros(2)})  # float64 into float32
    assert lin.weight.dtype == np.float32 and lin.weight.data.sum() == 4


# ------------------------------------------------------------------ modes and gradients
def test_train_eval_requires_grad_zero_grad_apply():
    net = Net()
    assert all(m.training for m in net.modules())
    assert net.eval() is net and not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())

    x = mi.randn(2, 4)
    net(x).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())

    net.requires_grad_(False)
    assert net.num_parameters(trainable_only=True) == 0
    net.blocks[0].requires_grad_(True)
    assert net.num_parameters(trainable_only=True) == 16 + 4 + 4 + 4
    assert net.num_parameters() == 2 * (16 + 4 + 4 + 4) + 8

    visited = []
    net.apply(lambda m: visited.append(type(m).__name__))
    assert visited[-1] == "Net" and visited[0] == "Linear"  # children first


def test_deepcopy_keeps_ties():
    import copy

    a, b = nn.Embedding(5, 3), nn.Linear(3, 5, bias=False)
    a.weight = b.weight
    c = copy.deepcopy(nn.Sequential(a, b))
    assert c[0].weight is c[1].weight and c[0].weight is not a.weight


def test_to_double_keeps_ties():
    a = nn.Embedding(5, 3)
    b = nn.Linear(3, 5, bias=False)
    a.weight = b.weight
    seq = nn.Sequential(a, b).double()
    assert seq[0].weight is seq[1].weight and seq[0].weight.dtype == np.float64


def test_repr_tree():
    text = repr(Net())
    assert text.splitlines()[0] == "Net("
    assert "(blocks): ModuleList(" in text
    assert "(fc): Linear(in_features=4, out_features=4, bias=True)" in text
    assert "(head): Linear(in_features=4, out_features=2, bias=False)" in text
    assert repr(nn.Dropout(0.1)) == "Dropout(p=0.1)"
    assert "Parameter containing" in repr(nn.Parameter(mi.ones(2)))


# ------------------------------------------------------------------ containers
def test_module_list_dict_sequential():
    ml = nn.ModuleList([nn.Linear(2, 2)])
    ml.append(nn.Linear(2, 3)).extend([nn.Dropout()])
    ml.insert(0, nn.Identity())
    assert len(ml) == 4 and isinstance(ml[0], nn.Identity) and isinstance(ml[-1], nn.Dropout)
    assert isinstance(ml[1:3], nn.ModuleList) and len(ml[1:3]) == 2
    with pytest.raises(IndexError):
        ml[4]  # noqa: B018
    del ml[0]
    assert [n for n, _ in ml.named_parameters()] == ["0.weight", "0.bias", "1.weight", "1.bias"]

    md = nn.ModuleDict({"a": nn.Linear(2, 2)})
    md["b"] = nn.Linear(2, 1)
    assert list(md) == ["a", "b"] and "b" in md and len(md) == 2
    assert [n for n, _ in md.named_parameters()][-1] == "b.bias"
    with pytest.raises(KeyError, match="no key 'c'"):
        md["c"]  # noqa: B018

    seq = nn.Sequential(nn.Linear(3, 4), nn.Identity(), nn.Linear(4, 2))
    x = mi.randn(5, 3)
    y = seq(x)
    assert y.shape == (5, 2)
    np.testing.assert_allclose(y.data, seq[2](seq[0](x)).data, rtol=1e-6)
    named = nn.Sequential(OrderedDict(first=nn.Linear(3, 4)))
    assert [n for n, _ in named.named_parameters()] == ["first.weight", "first.bias"]


# ------------------------------------------------------------------ layers: forward and gradcheck
def test_linear(backend):
    lin = nn.Linear(3, 2).double()
    x = mi.randn(4, 3, dtype=mi.float64, requires_grad=True)
    np.testing.assert_allclose(lin(x).data, x.data @ lin.weight.data.T + lin.bias.data, rtol=1e-12)
    gradcheck(lambda x, w, b: lin(x), [x, lin.weight, lin.bias], name="Linear")
    nobias = nn.Linear(3, 2, bias=False)
    assert nobias.bias is None and [n for n, _ in nobias.named_parameters()] == ["weight"]
    bound = 1 / math.sqrt(3)
    assert np.abs(lin.weight.data).max() <= bound and np.abs(lin.bias.data).max() <= bound


def test_embedding(backend):
    emb = nn.Embedding(6, 3, padding_idx=0).double()
    assert np.all(emb.weight.data[0] == 0)
    ids = mi.tensor([[0, 2, 2], [5, 1, 0]])
    np.testing.assert_array_equal(emb(ids).data, emb.weight.data[ids.data])
    plain = nn.Embedding(6, 3).double()  # (the padding row's gradient is 0 on purpose, so check without it)
    gradcheck(lambda w: plain(ids), [plain.weight], name="Embedding")
    emb(ids).sum().backward()
    assert np.all(emb.weight.grad.data[0] == 0)  # the padding row never learns
    with pytest.raises(IndexError, match=r"outside the valid range \[0, 6\)"):
        emb(mi.tensor([6]))
    with pytest.raises(TypeError, match="integer"):
        emb(mi.tensor([1.0]))
    assert nn.Embedding(6, 3, padding_idx=-1).padding_idx == 5


def test_rmsnorm(backend):
    norm = nn.RMSNorm(4, eps=1e-5).double()
    norm.weight.data[...] = [0.5, 1.0, 1.5, 2.0]
    x = mi.randn(2, 3, 4, dtype=mi.float64, requires_grad=True)
    ref = x.data / np.sqrt((x.data**2).mean(-1, keepdims=True) + 1e-5) * norm.weight.data
    np.testing.assert_allclose(norm(x).data, ref, rtol=1e-10)
    gradcheck(lambda x, w: norm(x), [x, norm.weight], name="RMSNorm")


def test_layernorm(backend):
    ln = nn.LayerNorm(4).double()
    ln.weight.data[...] = [0.5, 1.0, 1.5, 2.0]
    ln.bias.data[...] = [0.1, 0.0, -0.1, 0.2]
    x = mi.randn(3, 4, dtype=mi.float64, requires_grad=True)
    mu, var = x.data.mean(-1, keepdims=True), x.data.var(-1, keepdims=True)
    np.testing.assert_allclose(ln(x).data, (x.data - mu) / np.sqrt(var + 1e-5) * ln.weight.data + ln.bias.data, rtol=1e-10)
    gradcheck(lambda x, w, b: ln(x), [x, ln.weight, ln.bias], name="LayerNorm")


def test_dropout_train_and_eval(backend):
    drop = nn.Dropout(0.5)
    x = mi.ones(1000, dtype=mi.float64)
    y = drop(x).data
    assert set(np.unique(y)) <= {0.0, 2.0} and 0.4 < (y == 0).mean() < 0.6
    drop.eval()
    assert drop(x) is x
    with pytest.raises(ValueError, match="p must be in"):
        nn.Dropout(1.5)


def test_small_mlp_gradcheck(backend):
    net = nn.Sequential(nn.Linear(3, 5), nn.LayerNorm(5), nn.Linear(5, 2, bias=False)).double()
    x = mi.randn(2, 3, dtype=mi.float64, requires_grad=True)
    params = list(net.parameters())
    gradcheck(lambda x, *ps: net(x), [x, *params], name="Sequential")


def test_layer_argument_errors():
    with pytest.raises(ValueError, match="in_features must be a positive int"):
        nn.Linear(0, 3)
    with pytest.raises(ValueError, match="padding_idx 7"):
        nn.Embedding(4, 2, padding_idx=7)
    with pytest.raises(ValueError, match="linear: input of shape"):
        nn.Linear(3, 2)(mi.randn(2, 4))


# ------------------------------------------------------------------ init
def test_init_functions():
    mi.manual_seed(1)
    w = nn.Parameter(mi.empty(200, 300))
    nn.init.normal_(w, mean=0.5, std=0.02)
    assert abs(w.data.mean() - 0.5) < 1e-3 and abs(w.data.std() - 0.02) < 1e-3 and w.dtype == np.float32
    nn.init.uniform_(w, -2, 3)
    assert w.data.min() >= -2 and w.data.max() < 3 and abs(w.data.mean() - 0.5) < 0.05
    nn.init.zeros_(w)
    assert not w.data.any()
    nn.init.ones_(w)
    assert np.all(w.data == 1)
    nn.init.xavier_uniform_(w)
    a = math.sqrt(6 / (300 + 200))
    assert np.abs(w.data).max() <= a and abs(w.data.std() - a / math.sqrt(3)) < 0.01 * a
    nn.init.kaiming_uniform_(w, nonlinearity="relu")
    b = math.sqrt(2) * math.sqrt(3 / 300)
    assert np.abs(w.data).max() <= b and abs(w.data.std() - b / math.sqrt(3)) < 0.01 * b
    # seeded: the same seed gives the same weights
    mi.manual_seed(7)
    w1 = nn.init.normal_(nn.Parameter(mi.empty(5))).data.copy()
    mi.manual_seed(7)
    assert np.array_equal(w1, nn.init.normal_(nn.Parameter(mi.empty(5))).data)
    with pytest.raises(ValueError, match="at least 2 dims"):
        nn.init.xavier_uniform_(nn.Parameter(mi.empty(3)))
    with pytest.raises(TypeError, match="floating point"):
        nn.init.normal_(mi.zeros(3, dtype=mi.int64))


def test_functional_reexports():
    for name in ("rms_norm", "rotary_embedding", "swiglu", "scaled_dot_product_attention", "cross_entropy", "linear",
                 "embedding", "dropout", "layer_norm", "softmax", "silu"):
        assert callable(getattr(F, name))
    assert nn.functional is F


def test_mode_context_manager_restores_each_submodules_own_mode():
    m = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.1))
    m[1].eval()
    with m.mode(training=True):
        assert all(x.training for x in m.modules())
    assert m.training and not m[1].training
    try:
        with m.mode(training=False):
            assert not any(x.training for x in m.modules())
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert m.training and not m[1].training  # restored on errors too
    with pytest.raises(ValueError, match="training must be a bool"):
        with m.mode(training="no"):
            pass


def test_kv_cache_reorder_picks_parent_rows_in_place():
    from minillm.nn import KVCache

    c = KVCache(batch_size=3, n_kv_heads=1, head_dim=2, max_len=4, dtype=np.float64)
    k = mi.tensor(np.arange(3 * 2 * 2, dtype=np.float64).reshape(3, 1, 2, 2))
    with mi.no_grad():
        c.update(k, k * 10)
    view = c.k
    c.reorder([2, 2, 0])
    assert c.k is view  # rewritten in place
    np.testing.assert_array_equal(c.k[:, :, :2], k.data[[2, 2, 0]])
    np.testing.assert_array_equal(c.v[:, :, :2], 10 * k.data[[2, 2, 0]])
    with pytest.raises(ValueError, match="reorder"):
        c.reorder([0, 3, 1])


def test_kv_cache_with_a_different_value_width():
    """MLA (models/deepseek.py) keeps a latent (rank r) and a rotary key (d_rope) in one cache."""
    from minillm.nn import KVCache

    c = KVCache(batch_size=2, n_kv_heads=1, head_dim=5, max_len=4, dtype=np.float64, v_head_dim=3)
    assert c.k.shape == (2, 1, 4, 5) and c.v.shape == (2, 1, 4, 3) and c.nbytes == 8 * (2 * 4 * 5 + 2 * 4 * 3)
    a, b = mi.randn(2, 1, 2, 5, dtype=mi.float64), mi.randn(2, 1, 2, 3, dtype=mi.float64)
    with mi.no_grad():
        k, v = c.update(a, b)
        assert k.shape == (2, 1, 2, 5) and v.shape == (2, 1, 2, 3)
        np.testing.assert_array_equal(v.data, b.data)
        with pytest.raises(ValueError, match=r"new values of shape \(2, 1, 1, 5\) do not fit"):
            c.update(mi.randn(2, 1, 1, 5, dtype=mi.float64), mi.randn(2, 1, 1, 5, dtype=mi.float64))
    c.reorder([1, 0])
    np.testing.assert_array_equal(c.v[:, :, :2], b.data[[1, 0]])
    assert KVCache.from_arrays(np.zeros((1, 1, 3, 4)), np.zeros((1, 1, 3, 2))).max_len == 3
    with pytest.raises(ValueError, match="equal but for the last dim"):
        KVCache.from_arrays(np.zeros((1, 1, 3, 4)), np.zeros((1, 2, 3, 4)))
