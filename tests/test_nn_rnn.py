"""nn.LSTMCell / nn.LSTM: the gate equations by hand, gradcheck in float64, PyTorch parity, bad inputs."""
import numpy as np
import pytest

import minillm as mi
import minillm.nn as nn
from minillm.testing import gradcheck


def _sig(x):
    return 1 / (1 + np.exp(-x))


def test_cell_equals_the_gate_equations():
    mi.manual_seed(0)
    cell = nn.LSTMCell(3, 2, dtype=np.float64)
    rng = np.random.default_rng(0)
    x, h, c = rng.normal(size=(4, 3)), rng.normal(size=(4, 2)), rng.normal(size=(4, 2))
    h1, c1 = cell(mi.tensor(x), (mi.tensor(h), mi.tensor(c)))
    z = x @ cell.weight_ih.data.T + cell.bias_ih.data + h @ cell.weight_hh.data.T + cell.bias_hh.data
    i, f, g, o = _sig(z[:, 0:2]), _sig(z[:, 2:4]), np.tanh(z[:, 4:6]), _sig(z[:, 6:8])  # PyTorch's order i, f, g, o
    c_ref = f * c + i * g
    np.testing.assert_allclose(c1.data, c_ref, atol=1e-12)
    np.testing.assert_allclose(h1.data, o * np.tanh(c_ref), atol=1e-12)
    h0, c0 = cell(mi.tensor(x))  # zero state by default
    assert h0.shape == (4, 2) and c0.shape == (4, 2)


def test_layer_unrolls_the_cell():
    mi.manual_seed(1)
    lstm = nn.LSTM(3, 2, batch_first=True, dtype=np.float64)
    cell = nn.LSTMCell(3, 2, dtype=np.float64)
    for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        getattr(cell, n).data[...] = getattr(lstm, n + "_l0").data
    x = mi.tensor(np.random.default_rng(1).normal(size=(2, 5, 3)))
    out, (h_n, c_n) = lstm(x)
    assert out.shape == (2, 5, 2) and h_n.shape == (1, 2, 2)
    state = None
    for t in range(5):
        state = cell(x[:, t], state)
        np.testing.assert_allclose(out.data[:, t], state[0].data, atol=1e-12)
    np.testing.assert_allclose(c_n.data[0], state[1].data, atol=1e-12)


def test_gradcheck_cell_and_two_layer_lstm():
    mi.manual_seed(2)
    cell = nn.LSTMCell(2, 3, dtype=np.float64)
    rng = np.random.default_rng(2)
    gradcheck(lambda x, h, c, wi, wh, b: nn.rnn._lstm_step(mi.nn.functional.linear(x, wi, b), h, c, wh, None)[0],
              [rng.normal(size=(2, 2)), rng.normal(size=(2, 3)), rng.normal(size=(2, 3)),
               cell.weight_ih.data.copy(), cell.weight_hh.data.copy(), cell.bias_ih.data.copy()])
    lstm = nn.LSTM(2, 2, num_layers=2, dtype=np.float64)
    names = [n for n, _ in lstm.named_parameters()]
    values = [p.data.copy() for _, p in lstm.named_parameters()]

    def run(x, *ps):  # the layer with its parameters replaced by gradcheck's tensors
        for name, v in zip(names, ps):
            lstm._parameters[name] = v
        return lstm(x)[0]

    gradcheck(run, [rng.normal(size=(3, 2, 2))] + values)
    assert len(names) == 8


@pytest.mark.parametrize("batch_first", [True, False])
def test_fused_layer_equals_step_by_step(batch_first):
    mi.manual_seed(4)
    fused = nn.LSTM(3, 4, num_layers=2, batch_first=batch_first, dtype=np.float64)
    steps = nn.LSTM(3, 4, num_layers=2, batch_first=batch_first, dtype=np.float64, fused=False)
    steps.load_state_dict(fused.state_dict())
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 5, 3) if batch_first else (5, 2, 3))  # batch 2, 5 steps
    hx = (rng.normal(size=(2, 2, 4)), rng.normal(size=(2, 2, 4)))
    res = []
    for m in (fused, steps):
        xt = mi.tensor(x, requires_grad=True)
        h0, c0 = mi.tensor(hx[0], requires_grad=True), mi.tensor(hx[1], requires_grad=True)
        out, (h, c) = m(xt, (h0, c0))
        w = rng.normal(size=out.shape) if not res else res[0][-1]
        ((out * mi.tensor(w)).sum() + (c * c).sum() + h.sum()).backward()
        res.append([out.data, h.data, c.data, xt.grad.data, h0.grad.data, c0.grad.data]
                   + [p.grad.data for p in m.parameters()] + [w])
    for a, b in zip(res[0][:-1], res[1][:-1]):
        np.testing.assert_allclose(a, b, atol=1e-12)


def test_gradcheck_fused_layer_function():
    rng = np.random.default_rng(5)
    H = 2
    out_w = rng.normal(size=(3, 2, 2 * H))
    gradcheck(lambda *a: nn.rnn.LSTMLayerFunction.apply(*a) * mi.tensor(out_w),
              [rng.normal(size=(3, 2, 3)), rng.normal(size=(2, H)), rng.normal(size=(2, H)),
               rng.normal(size=(4 * H, 3)), rng.normal(size=(4 * H, H)), rng.normal(size=4 * H), rng.normal(size=4 * H)])


def test_torch_parity_with_copied_weights():
    torch = pytest.importorskip("torch")
    mi.manual_seed(3)
    ours = nn.LSTM(4, 3, num_layers=2, batch_first=True, dtype=np.float64)
    theirs = torch.nn.LSTM(4, 3, num_layers=2, batch_first=True).double()
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            p.copy_(torch.from_numpy(getattr(ours, name).data))
    x = np.random.default_rng(3).normal(size=(2, 6, 4))
    h0 = np.random.default_rng(4).normal(size=(2, 2, 3))
    c0 = np.random.default_rng(5).normal(size=(2, 2, 3))
    xt = mi.tensor(x, requires_grad=True)
    out, (h, c) = ours(xt, (mi.tensor(h0), mi.tensor(c0)))
    (out.sum() + c.sum()).backward()
    tx = torch.from_numpy(x).requires_grad_(True)
    tout, (th, tc) = theirs(tx, (torch.from_numpy(h0), torch.from_numpy(c0)))
    (tout.sum() + tc.sum()).backward()
    np.testing.assert_allclose(out.data, tout.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(h.data, th.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(xt.grad.data, tx.grad.numpy(), atol=1e-12)
    for name, p in theirs.named_parameters():
        np.testing.assert_allclose(getattr(ours, name).grad.data, p.grad.numpy(), atol=1e-12, err_msg=name)


def test_bad_inputs():
    with pytest.raises(ValueError, match="hidden_size must be a positive int"):
        nn.LSTMCell(3, 0)
    cell = nn.LSTMCell(3, 2)
    with pytest.raises(ValueError, match=r"expected input \(B, 3\)"):
        cell(mi.zeros(4, 5))
    with pytest.raises(ValueError, match=r"h must be \(4, 2\)"):
        cell(mi.zeros(4, 3), (mi.zeros(4, 3), mi.zeros(4, 2)))
    lstm = nn.LSTM(3, 2, num_layers=2)
    with pytest.raises(ValueError, match="3 features in 3 dims"):
        lstm(mi.zeros(4, 3))
    with pytest.raises(ValueError, match=r"h_0 must be \(2, 1, 2\)"):
        lstm(mi.zeros(5, 1, 3), (mi.zeros(1, 1, 2), mi.zeros(2, 1, 2)))
    with pytest.raises(ValueError, match="dropout must be in"):
        nn.LSTM(3, 2, dropout=1.0)
