"""BERT / RoBERTa / ALBERT (Happy LLM 3.1): gradients, padding, bad input, parameter counts,
save/load, and parity with Hugging Face ``transformers`` (optional)."""
import numpy as np
import pytest

import minillm as mi
from minillm.io import load_model, save_model
from minillm.io.hf_bert import export_hf_bert, import_hf_bert, to_hf_name
from minillm.models.albert import AlbertConfig, AlbertForMaskedLM, AlbertForPreTraining
from minillm.models.bert import (BertConfig, BertEmbeddings, BertForMaskedLM, BertForPreTraining,
                                 BertForQuestionAnswering, BertForSequenceClassification, BertForTokenClassification,
                                 BertLayer, BertLMPredictionHead, BertModel, BertPooler)
from minillm.models.roberta import (RobertaConfig, RobertaForMaskedLM, RobertaForQuestionAnswering,
                                    RobertaForSequenceClassification, RobertaForTokenClassification)
from minillm.tensor import Tensor
from minillm.testing import gradcheck


def tiny(cls=BertConfig, **kw):
    base = dict(vocab_size=23, hidden_size=8, num_hidden_layers=2, num_attention_heads=2, intermediate_size=12,
                max_position_embeddings=12, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=3)
    if cls is AlbertConfig:
        base["embedding_size"] = 4
    if cls is RobertaConfig:
        base["max_position_embeddings"] = 14
    base.update(kw)
    return cls(**base)


def f64(model):
    rng = np.random.default_rng(1)
    for p in model.parameters():  # larger weights than the 0.02 init, so gradients are not all tiny
        p.data[...] = rng.normal(0, 0.3, p.shape)
    return model.to(np.float64)


IDS = np.array([[2, 5, 7, 9, 3], [2, 11, 4, 0, 0]])
MASK = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
TYPES = np.array([[0, 0, 1, 1, 1], [0, 0, 1, 0, 0]])


# ----------------------------------------------------------------------------- gradchecks
def test_gradcheck_embeddings_layer_pooler_head():
    cfg = tiny()
    emb = f64(BertEmbeddings(cfg))
    ids = np.where(IDS == cfg.pad_token_id, 1, IDS)  # the padding row gets no gradient by design (as in HF)
    gradcheck(lambda *p: emb(ids, TYPES), list(emb.parameters()), name="BertEmbeddings")
    layer = f64(BertLayer(cfg))
    x = Tensor(np.random.default_rng(0).normal(size=(2, 5, 8)), requires_grad=True)
    pad = MASK == 0
    gradcheck(lambda x, *p: layer(x, pad), [x, *layer.parameters()], name="BertLayer")
    pooler = f64(BertPooler(cfg))
    gradcheck(lambda x, *p: pooler(x), [x, *pooler.parameters()], name="BertPooler")
    head = f64(BertLMPredictionHead(cfg))
    E = Tensor(np.random.default_rng(2).normal(size=(23, 8)), requires_grad=True)
    gradcheck(lambda x, E, *p: head(x, E), [x, E, *head.parameters()], name="BertLMPredictionHead")


@pytest.mark.parametrize("cls, kw", [
    (BertForPreTraining, dict(labels=np.where(MASK == 1, IDS, -100), next_sentence_label=np.array([0, 1]))),
    (BertForSequenceClassification, dict(labels=np.array([2, 0]))),
    (BertForTokenClassification, dict(labels=np.where(MASK == 1, IDS % 3, -100))),
    (BertForQuestionAnswering, dict(start_positions=np.array([1, 2]), end_positions=np.array([3, 2]))),
])
def test_gradcheck_heads(cls, kw):
    model = f64(cls(tiny(num_hidden_layers=1, vocab_size=12, intermediate_size=8)))
    ids = np.where(MASK == 1, IDS, 1)  # padded slots hold a non-padding id: the padding row gets no gradient by design
    # whole models: random directions (each layer is checked element by element above)
    gradcheck(lambda *p: model(ids, MASK, TYPES, **kw).loss, list(model.parameters()), name=cls.__name__, directions=2)


@pytest.mark.parametrize("cls, cfg_cls, kw", [
    (AlbertForPreTraining, AlbertConfig, dict(labels=np.where(MASK == 1, IDS, -100), sentence_order_label=np.array([1, 0]))),
    (RobertaForMaskedLM, RobertaConfig, dict(labels=np.where(MASK == 1, IDS, -100))),
    (RobertaForSequenceClassification, RobertaConfig, dict(labels=np.array([2, 0]))),
    (RobertaForTokenClassification, RobertaConfig, dict(labels=np.where(MASK == 1, IDS % 3, -100))),
    (RobertaForQuestionAnswering, RobertaConfig, dict(start_positions=np.array([1, 2]), end_positions=np.array([3, 2]))),
])
def test_gradcheck_roberta_albert(cls, cfg_cls, kw):
    model = f64(cls(tiny(cfg_cls, vocab_size=12, intermediate_size=8)))
    types = np.zeros_like(IDS) if cfg_cls is RobertaConfig else TYPES
    ids = np.where(MASK == 1, IDS, 3)
    gradcheck(lambda *p: model(ids, MASK, types, **kw).loss, list(model.parameters()), name=cls.__name__, directions=2)


# ----------------------------------------------------------------------------- behaviour
@pytest.mark.parametrize("cls, cfg_cls", [(BertForMaskedLM, BertConfig), (RobertaForMaskedLM, RobertaConfig),
                                          (AlbertForMaskedLM, AlbertConfig)])
@pytest.mark.parametrize("flash", [True, False])
def test_padding_invariance(cls, cfg_cls, flash):
    """A padded batch gives, at real positions, the logits of each sequence run alone."""
    model = f64(cls(tiny(cfg_cls, flash_attn=flash)))
    pad = model.config.pad_token_id
    ids = np.where(MASK == 1, IDS, pad)
    types = np.zeros_like(ids)
    with mi.no_grad():
        batch = model(ids, MASK, types).logits.data
        for b in range(2):
            n = int(MASK[b].sum())
            alone = model(ids[b:b + 1, :n], None, types[b:b + 1, :n]).logits.data
            np.testing.assert_allclose(batch[b, :n], alone[0], atol=1e-10)


def test_mlm_head_is_tied_to_the_word_embeddings():
    model = BertForMaskedLM(tiny())
    names = list(model.state_dict())
    assert "cls.predictions.bias" in names and not any("decoder" in n for n in names)
    out = model(IDS, MASK, labels=np.where(MASK == 1, IDS, -100))
    out.loss.backward()
    g = model.bert.embeddings.word_embeddings.weight.grad.data
    assert np.abs(g[1]).sum() > 0  # id 1 never occurs in IDS: only the output side can give it a gradient


def test_albert_parameter_count_by_formula():
    """ALBERT's savings, counted by formula: factorised embedding V·E + E·H instead of V·H, and one
    shared layer instead of N."""
    V, E, H, I, N, P, S = 23, 4, 8, 12, 3, 12, 2
    shared = AlbertForPreTraining(tiny(AlbertConfig, num_hidden_layers=N))
    unshared = AlbertForPreTraining(tiny(AlbertConfig, num_hidden_layers=N, share_layers=False))
    layer = 4 * (H * H + H) + 2 * H + (H * I + I) + (I * H + H) + 2 * H  # attention, LN, FFN, LN
    embeddings = (V + P + S) * E + 2 * E
    mapping = E * H + H
    pooler, sop = H * H + H, 2 * H + 2
    mlm = (H * E + E) + 2 * E + V  # dense H->E, LayerNorm(E), output bias (the matrix is the tied embedding)
    assert shared.get_num_params() == embeddings + mapping + layer + pooler + sop + mlm
    assert unshared.get_num_params() == embeddings + mapping + N * layer + pooler + sop + mlm
    bert = BertForPreTraining(tiny(num_hidden_layers=N))
    assert bert.get_num_params() == ((V + P + S) * H + 2 * H) + N * layer + pooler + (2 * H + 2) + (H * H + H + 2 * H + V)


def test_shared_layer_runs_num_hidden_layers_times():
    model = AlbertForMaskedLM(tiny(AlbertConfig, num_hidden_layers=3))
    enc = model.albert.encoder
    assert len(enc.layer) == 1
    with mi.no_grad():
        x = enc.embedding_hidden_mapping_in(model.albert.embeddings(IDS, np.zeros_like(IDS)))  # (B, T, E) -> (B, T, H)
        for _ in range(3):
            x = enc.layer[0](x, MASK == 0)
        np.testing.assert_allclose(model.albert(IDS, MASK).last_hidden_state.data, x.data, rtol=1e-6)


def test_roberta_positions_start_after_padding_idx():
    cfg = tiny(RobertaConfig)
    assert cfg.position_offset == 2 and cfg.max_positions == 12
    model = RobertaForMaskedLM(cfg)
    pos = model.roberta.embeddings.position_embeddings.weight
    pos.data[:2] = 1e6  # rows 0, 1 (padding_idx and below) must never be used
    out = model(IDS, MASK, np.zeros_like(IDS))
    assert np.isfinite(out.logits.data).all() and np.abs(out.logits.data).max() < 1e3


def test_outputs_unpack_like_hf():
    model = BertForQuestionAnswering(tiny())
    loss, start, end = model(IDS, MASK)
    assert loss is None and start.shape == (2, 5) and end.shape == (2, 5)


# ----------------------------------------------------------------------------- bad input
def test_bad_inputs_raise_clear_errors():
    model = BertForPreTraining(tiny())
    long = np.ones((1, 13), dtype=np.int64)
    with pytest.raises(ValueError, match="13 tokens, longer than the 12 positions of max_position_embeddings=12"):
        model(long)
    with pytest.raises(IndexError, match=r"token_type_ids contain 2 at \(0, 1\), outside \[0, type_vocab_size=2\)"):
        model(IDS, MASK, np.array([[0, 2, 0, 0, 0], [0, 0, 0, 0, 0]]))
    with pytest.raises(IndexError, match="input_ids contain 23"):
        model(np.array([[1, 23]]))
    with pytest.raises(ValueError, match=r"labels must have shape \(2, 5\), got \(2, 4\)"):
        model(IDS, MASK, labels=np.zeros((2, 4), dtype=np.int64))
    with pytest.raises(ValueError, match=r"next_sentence_label must have shape \(2,\)"):
        model(IDS, MASK, next_sentence_label=np.zeros((2, 1), dtype=np.int64))
    with pytest.raises(TypeError, match="input_ids must be integer ids"):
        model(IDS.astype(np.float32))
    with pytest.raises(ValueError, match="attention_mask must have the shape of input_ids"):
        model(IDS, MASK[:, :3])
    with pytest.raises(ValueError, match="attention_mask row 1 is all padding"):
        model(IDS, np.array([[1] * 5, [0] * 5]))
    qa = BertForQuestionAnswering(tiny())
    with pytest.raises(ValueError, match="start_positions has 7, outside the 5 token positions"):
        qa(IDS, MASK, start_positions=np.array([7, 0]), end_positions=np.array([1, 1]))
    with pytest.raises(ValueError, match="pass both start_positions and end_positions"):
        qa(IDS, MASK, start_positions=np.array([1, 0]))
    rob = RobertaForMaskedLM(tiny(RobertaConfig))
    with pytest.raises(ValueError, match=r"13 tokens.*minus the offset 2"):
        rob(np.ones((1, 13), dtype=np.int64) * 3)


@pytest.mark.parametrize("field, value", [("hidden_size", 9), ("num_hidden_layers", 0), ("hidden_act", "swish"),
                                          ("hidden_dropout_prob", 1.0), ("pad_token_id", 23), ("layer_norm_eps", 0)])
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field if field != "hidden_size" else "divisible"):
        tiny(**{field: value})


def test_all_labels_ignored_gives_zero_loss_not_nan():
    model = BertForMaskedLM(tiny())
    out = model(IDS, MASK, labels=np.full(IDS.shape, -100))
    assert float(out.loss.data) == 0.0


# ----------------------------------------------------------------------------- files
@pytest.mark.parametrize("cls, cfg_cls", [(BertForPreTraining, BertConfig), (RobertaForMaskedLM, RobertaConfig),
                                          (AlbertForPreTraining, AlbertConfig)])
def test_save_load_round_trip(tmp_path, cls, cfg_cls):
    model = cls(tiny(cfg_cls))
    save_model(model, tmp_path)
    back = load_model(tmp_path)
    assert type(back) is cls and back.config == model.config
    ids = np.where(MASK == 1, IDS, model.config.pad_token_id)
    with mi.no_grad(), model.mode(training=False), back.mode(training=False):
        np.testing.assert_array_equal(model(ids, MASK)[1].data, back(ids, MASK)[1].data)


@pytest.mark.parametrize("cls, cfg_cls", [(BertForQuestionAnswering, BertConfig), (BertForTokenClassification, BertConfig),
                                          (BertForSequenceClassification, BertConfig), (AlbertForMaskedLM, AlbertConfig),
                                          (RobertaForSequenceClassification, RobertaConfig),
                                          (RobertaForQuestionAnswering, RobertaConfig)])
def test_hf_export_import_round_trip(tmp_path, cls, cfg_cls):
    model = cls(tiny(cfg_cls))
    export_hf_bert(model, tmp_path)
    back = import_hf_bert(tmp_path)
    assert type(back) is cls
    for (n, a), (m, b) in zip(model.state_dict().items(), back.state_dict().items()):
        assert n == m
        np.testing.assert_array_equal(a.data, b.data)


def test_hf_names():
    assert to_hf_name("bert.encoder.layer.1.attention.wo.weight", "bert") == "bert.encoder.layer.1.attention.output.dense.weight"
    assert to_hf_name("bert.encoder.layer.0.ffn_norm.bias", "bert") == "bert.encoder.layer.0.output.LayerNorm.bias"
    assert to_hf_name("cls.predictions.dense.weight", "bert") == "cls.predictions.transform.dense.weight"
    assert to_hf_name("lm_head.LayerNorm.weight", "roberta") == "lm_head.layer_norm.weight"
    assert to_hf_name("albert.pooler.dense.weight", "albert") == "albert.pooler.weight"
    assert to_hf_name("bert.embeddings.position_embeddings.embedding.weight", "bert") == "bert.embeddings.position_embeddings.weight"


def test_import_rejects_unknown_architecture_and_missing_tensors(tmp_path):
    model = BertForMaskedLM(tiny())
    export_hf_bert(model, tmp_path)
    import json
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["architectures"] = ["GPT2LMHeadModel"]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="GPT2LMHeadModel"):
        import_hf_bert(tmp_path)
    cfg["architectures"] = ["BertForMaskedLM"]
    cfg["num_hidden_layers"] = 3
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"missing tensors \['bert.encoder.layer.2"):
        import_hf_bert(tmp_path)


# ----------------------------------------------------------------------------- HF parity (optional)
def _hf_twins_and_padded_batch(tmp_path, name, cfg_cls, **extra):
    """(config, our model ``name`` with random weights, Hugging Face's class of that name loaded from
    our export, ids (3, 10) whose rows 1 and 2 end in padding, their attention mask)."""
    transformers = pytest.importorskip("transformers")
    from minillm.io.hf_bert import HF_ARCHITECTURES

    cfg = tiny(cfg_cls, vocab_size=60, hidden_size=32, num_attention_heads=4, intermediate_size=64, **extra)
    model = HF_ARCHITECTURES[name](cfg)
    rng = np.random.default_rng(0)
    for p in model.parameters():
        p.data[...] = rng.normal(0, 0.2, p.shape)
    export_hf_bert(model, tmp_path)
    hf = getattr(transformers, name).from_pretrained(tmp_path).eval()
    ids = rng.integers(3, 60, (3, 10))
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    ids[mask == 0] = cfg.pad_token_id
    return cfg, model, hf, ids, mask


@pytest.mark.parametrize("name, cfg_cls, extra", [
    ("BertForMaskedLM", BertConfig, {}), ("RobertaForMaskedLM", RobertaConfig, {}),
    ("AlbertForMaskedLM", AlbertConfig, {"num_hidden_layers": 3}),
    ("AlbertForMaskedLM", AlbertConfig, {"num_hidden_layers": 2, "share_layers": False}),
])
def test_hf_parity_mlm_logits_with_padding(tmp_path, name, cfg_cls, extra):
    torch = pytest.importorskip("torch")
    cfg, model, hf, ids, mask = _hf_twins_and_padded_batch(tmp_path, name, cfg_cls, **extra)
    types = np.zeros_like(ids)
    if cfg.type_vocab_size > 1:
        types[:, 4:] = 1
    with mi.no_grad(), model.mode(training=False):
        ours = model(ids, mask, types).logits.data
    with torch.no_grad():
        theirs = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), token_type_ids=torch.tensor(types)).logits.numpy()
    real = mask == 1
    assert np.abs(ours - theirs)[real].max() <= 1e-4


def test_roberta_heads_use_a_roberta_encoder_with_the_position_offset():
    cfg = tiny(RobertaConfig)
    for cls in (RobertaForSequenceClassification, RobertaForTokenClassification, RobertaForQuestionAnswering):
        model = cls(cfg)
        names = list(model.state_dict())
        assert all(n.startswith(("roberta.", "classifier.", "qa_outputs.")) for n in names), names
        assert not any("pooler" in n for n in names)
        assert model.roberta.embeddings.position_offset == cfg.pad_token_id + 1 == 2
        with pytest.raises(TypeError, match="expected a RobertaConfig"):
            cls(tiny())
    with pytest.raises(ValueError, match="longer than the 12 positions"):
        RobertaForTokenClassification(cfg)(np.full((1, 13), 5))  # 14 rows - offset 2


@pytest.mark.parametrize("name", ["RobertaForSequenceClassification", "RobertaForTokenClassification",
                                  "RobertaForQuestionAnswering", "BertForTokenClassification"])
def test_hf_parity_fine_tuning_heads_with_padding(tmp_path, name):
    torch = pytest.importorskip("torch")
    cfg_cls = RobertaConfig if name.startswith("Roberta") else BertConfig
    cfg, model, hf, ids, mask = _hf_twins_and_padded_batch(tmp_path, name, cfg_cls)
    with mi.no_grad(), model.mode(training=False):
        ours = model(ids, mask)
    with torch.no_grad():
        theirs = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    real = mask == 1
    if name.endswith("QuestionAnswering"):
        for key in ("start_logits", "end_logits"):
            assert np.abs(getattr(ours, key).data - getattr(theirs, key).numpy())[real].max() <= 1e-4
    elif name.endswith("TokenClassification"):
        assert np.abs(ours.logits.data - theirs.logits.numpy())[real].max() <= 1e-4
    else:
        assert np.abs(ours.logits.data - theirs.logits.numpy()).max() <= 1e-4
