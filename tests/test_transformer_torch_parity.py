"""Our chapter-2 Transformer against ``torch.nn.Transformer`` (optional: skipped without torch).

The weights are copied into ``torch.nn.Transformer`` (post-norm and ``norm_first=True``) plus
the same embeddings (scaled by √dim), sinusoidal table and output head; logits, loss and every
gradient must agree, with and without source/target padding.
"""
import math

import numpy as np
import pytest

import minillm as mi
from minillm.models.transformer import ModelArgs, Transformer
from minillm.nn.positional import sinusoidal_table

torch = pytest.importorskip("torch")

D, H, L, FF, SV, TV = 16, 4, 2, 24, 13, 11


def build(norm_first):
    mi.manual_seed(0)
    a = ModelArgs(dim=D, n_heads=H, n_layer=L, hidden_dim=FF, dropout=0.0, max_seq_len=10, vocab_size=SV,
                  src_vocab_size=SV, tgt_vocab_size=TV, norm_first=norm_first, bias=True)
    ours = Transformer(a).double()
    rng = np.random.default_rng(1)
    for name, p in ours.named_parameters():  # random everything, including biases and LayerNorm affine
        p.data[:] = rng.normal(1.0 if "norm" in name and name.endswith("weight") else 0.0, 0.3, p.shape)
    theirs = torch.nn.Transformer(d_model=D, nhead=H, num_encoder_layers=L, num_decoder_layers=L, dim_feedforward=FF,
                                  dropout=0.0, activation="relu", batch_first=True, norm_first=norm_first, bias=True,
                                  dtype=torch.float64)
    sd = {k: v.data for k, v in ours.named_parameters()}

    def attn(prefix):  # our wq/wk/wv/wo -> torch's packed in_proj and out_proj
        return {
            "in_proj_weight": np.concatenate([sd[f"{prefix}.w{x}.weight"] for x in "qkv"]),
            "in_proj_bias": np.concatenate([sd[f"{prefix}.w{x}.bias"] for x in "qkv"]),
            "out_proj.weight": sd[f"{prefix}.wo.weight"], "out_proj.bias": sd[f"{prefix}.wo.bias"],
        }

    mapping = {}  # torch name -> (our name or None, array)
    for side, n_norms in (("encoder", 2), ("decoder", 3)):
        for i in range(L):
            ours_p, t_p = f"transformer.{side}.layers.{i}", f"{side}.layers.{i}"
            blocks = [("self_attn", "attention" if side == "encoder" else "mask_attention")]
            if side == "decoder":
                blocks.append(("multihead_attn", "attention"))
            for t_name, o_name in blocks:
                for k, v in attn(f"{ours_p}.{o_name}").items():
                    mapping[f"{t_p}.{t_name}.{k}"] = v
            for t_name, o_name in (("linear1", "feed_forward.w1"), ("linear2", "feed_forward.w2")):
                for wb in ("weight", "bias"):
                    mapping[f"{t_p}.{t_name}.{wb}"] = sd[f"{ours_p}.{o_name}.{wb}"]
            norms = ["attention_norm", "ffn_norm"] if side == "encoder" else ["attention_norm_1", "attention_norm_2", "ffn_norm"]
            for j, o_name in enumerate(norms[:n_norms]):
                for wb in ("weight", "bias"):
                    mapping[f"{t_p}.norm{j + 1}.{wb}"] = sd[f"{ours_p}.{o_name}.{wb}"]
        for wb in ("weight", "bias"):
            mapping[f"{side}.norm.{wb}"] = sd[f"transformer.{side}.norm.{wb}"]
    t_params = dict(theirs.named_parameters())
    assert set(mapping) == set(t_params), set(mapping) ^ set(t_params)
    with torch.no_grad():
        for k, v in mapping.items():
            t_params[k].copy_(torch.from_numpy(np.array(v)))
    extra = {k: torch.tensor(sd[n], requires_grad=True) for k, n in
             (("src_emb", "transformer.wte.weight"), ("tgt_emb", "transformer.tgt_wte.weight"), ("head", "lm_head.weight"))}
    return ours, theirs, extra


def torch_forward(theirs, extra, src, tgt, y, src_mask, tgt_mask):
    pe = torch.from_numpy(sinusoidal_table(10, D))
    S, T = src.shape[1], tgt.shape[1]
    s = extra["src_emb"][torch.from_numpy(src)] * math.sqrt(D) + pe[:S]
    t = extra["tgt_emb"][torch.from_numpy(tgt)] * math.sqrt(D) + pe[:T]
    causal = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)  # True = may not attend (torch's convention)
    src_pad = None if src_mask is None else torch.from_numpy(src_mask == 0)
    tgt_pad = None if tgt_mask is None else torch.from_numpy(tgt_mask == 0)
    h = theirs(s, t, tgt_mask=causal, src_key_padding_mask=src_pad, tgt_key_padding_mask=tgt_pad,
               memory_key_padding_mask=src_pad, tgt_is_causal=True)
    logits = h @ extra["head"].T
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, TV), torch.from_numpy(y).reshape(-1), ignore_index=-100)
    return logits, loss


@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_logits_and_gradients_match_torch_nn_transformer(backend, norm_first, padded):
    ours, theirs, extra = build(norm_first)
    theirs.train()  # (dropout is 0) training mode keeps torch off its inference fast path
    rng = np.random.default_rng(2)
    src, tgt, y = rng.integers(0, SV, (3, 7)), rng.integers(0, TV, (3, 6)), rng.integers(0, TV, (3, 6))
    src_mask = tgt_mask = None
    if padded:
        src_mask = np.array([[1] * 7, [1] * 4 + [0] * 3, [1] * 6 + [0]])
        tgt_mask = np.array([[1] * 6, [1] * 2 + [0] * 4, [1] * 5 + [0]])
        y = np.where(tgt_mask == 1, y, -100)
    out = ours(src, tgt, targets=y, src_mask=src_mask, tgt_mask=tgt_mask)
    out.loss.backward()
    logits, loss = torch_forward(theirs, extra, src, tgt, y, src_mask, tgt_mask)
    loss.backward()
    np.testing.assert_allclose(out.logits.data, logits.detach().numpy(), rtol=1e-9, atol=1e-10)
    assert out.loss.item() == pytest.approx(loss.item(), rel=1e-10)
    grads = {n: p.grad.data for n, p in ours.named_parameters()}
    np.testing.assert_allclose(grads["transformer.wte.weight"], extra["src_emb"].grad.numpy(), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(grads["transformer.tgt_wte.weight"], extra["tgt_emb"].grad.numpy(), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(grads["lm_head.weight"], extra["head"].grad.numpy(), rtol=1e-8, atol=1e-10)
    tg = {n: p.grad.numpy() for n, p in theirs.named_parameters()}
    for i in range(L):
        e, d = f"transformer.encoder.layers.{i}", f"transformer.decoder.layers.{i}"
        wq = np.concatenate([grads[f"{e}.attention.w{x}.weight"] for x in "qkv"])
        np.testing.assert_allclose(wq, tg[f"encoder.layers.{i}.self_attn.in_proj_weight"], rtol=1e-8, atol=1e-10)
        wq = np.concatenate([grads[f"{d}.attention.w{x}.weight"] for x in "qkv"])
        np.testing.assert_allclose(wq, tg[f"decoder.layers.{i}.multihead_attn.in_proj_weight"], rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(grads[f"{d}.mask_attention.wo.bias"], tg[f"decoder.layers.{i}.self_attn.out_proj.bias"], rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(grads[f"{d}.feed_forward.w1.weight"], tg[f"decoder.layers.{i}.linear1.weight"], rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(grads[f"{d}.ffn_norm.weight"], tg[f"decoder.layers.{i}.norm3.weight"], rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(grads[f"{e}.ffn_norm.bias"], tg[f"encoder.layers.{i}.norm2.bias"], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(grads["transformer.decoder.norm.weight"], tg["decoder.norm.weight"], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(grads["transformer.encoder.norm.bias"], tg["encoder.norm.bias"], rtol=1e-8, atol=1e-10)
