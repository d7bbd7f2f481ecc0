"""BERT, RoBERTa and ALBERT <-> Hugging Face ``transformers`` directories (config.json + model.safetensors).

    from minillm.io.hf_bert import export_hf_bert, import_hf_bert
    export_hf_bert(model, "hf/")        # BertForMaskedLM.from_pretrained("hf/") gives the same logits
    model = import_hf_bert("hf/")       # back to our class, picked from config.json's "architectures"

Our modules already carry HF's names down to the encoder layer (``bert.embeddings.word_embeddings``,
``cls.predictions``, ``classifier``, ...). Inside a layer they use the shared chapter-2 blocks'
names, so export is this rename (``{i}`` = layer index):

    ours                                   BERT / RoBERTa (HF)                      ALBERT (HF)
    encoder.layer.{i}.attention.wq         encoder.layer.{i}.attention.self.query   encoder.albert_layer_groups.{i}.albert_layers.0.attention.query
    encoder.layer.{i}.attention.wk / wv    ...attention.self.key / value            ...attention.key / value
    encoder.layer.{i}.attention.wo         ...attention.output.dense                ...attention.dense
    encoder.layer.{i}.attention_norm       ...attention.output.LayerNorm            ...attention.LayerNorm
    encoder.layer.{i}.feed_forward.w1      ...intermediate.dense                    ...ffn
    encoder.layer.{i}.feed_forward.w2      ...output.dense                          ...ffn_output
    encoder.layer.{i}.ffn_norm             ...output.LayerNorm                      ...full_layer_layer_norm
    embeddings.position_embeddings.embedding   embeddings.position_embeddings       (same)
    cls.predictions.dense / LayerNorm      cls.predictions.transform.dense / LayerNorm
    lm_head.LayerNorm (RoBERTa)            lm_head.layer_norm
    albert.pooler.dense                                                             albert.pooler

No tensor is transposed or permuted (both sides store Linear weights as (out, in), and BERT has
no RoPE). The tied MLM decoder is not written: HF ties it to the word embeddings on load.
"""
from __future__ import annotations

import functools
import os
import re

import numpy as np

from ..models.albert import AlbertConfig, AlbertForMaskedLM, AlbertForPreTraining
from ..models.bert import (BertConfig, BertForMaskedLM, BertForPreTraining, BertForQuestionAnswering,
                           BertForSequenceClassification, BertForTokenClassification)
from ..models.roberta import (RobertaConfig, RobertaForMaskedLM, RobertaForQuestionAnswering,
                              RobertaForSequenceClassification, RobertaForTokenClassification)
from . import checkpoint
from .hf_directory import hf_weights_path, load_checked_state, write_hf_directory
from .guards import bounded_shapes, check_float_sources, check_weights_file, refuse_lora_layers
from .jsonfile import read_json_object
from .safetensors import load_safetensors

__all__ = ["export_hf_bert", "import_hf_bert", "to_hf_name", "HF_ARCHITECTURES", "bert_state_shapes"]

#: HF architecture name -> our class (same name); config.json's "architectures"[0] picks one.
HF_ARCHITECTURES = {c.__name__: c for c in (
    BertForPreTraining, BertForMaskedLM, BertForSequenceClassification, BertForTokenClassification,
    BertForQuestionAnswering, RobertaForMaskedLM, RobertaForSequenceClassification, RobertaForTokenClassification,
    RobertaForQuestionAnswering, AlbertForPreTraining, AlbertForMaskedLM)}

_LAYER_BERT = [
    (r"attention\.wq\.", "attention.self.query."), (r"attention\.wk\.", "attention.self.key."),
    (r"attention\.wv\.", "attention.self.value."), (r"attention\.wo\.", "attention.output.dense."),
    (r"attention_norm\.", "attention.output.LayerNorm."), (r"feed_forward\.w1\.", "intermediate.dense."),
    (r"feed_forward\.w2\.", "output.dense."), (r"ffn_norm\.", "output.LayerNorm."),
]
_LAYER_ALBERT = [
    (r"attention\.wq\.", "attention.query."), (r"attention\.wk\.", "attention.key."),
    (r"attention\.wv\.", "attention.value."), (r"attention\.wo\.", "attention.dense."),
    (r"attention_norm\.", "attention.LayerNorm."), (r"feed_forward\.w1\.", "ffn."),
    (r"feed_forward\.w2\.", "ffn_output."), (r"ffn_norm\.", "full_layer_layer_norm."),
]


#: class -> (has a pooler, its heads), the heads being names understood by ``_bert_entries``.
_HEADS = {
    BertForPreTraining: (True, ("mlm", "pair")), BertForMaskedLM: (False, ("mlm",)),
    BertForSequenceClassification: (True, ("classifier",)), BertForTokenClassification: (False, ("classifier",)),
    BertForQuestionAnswering: (False, ("qa",)), RobertaForMaskedLM: (False, ("mlm",)),
    RobertaForSequenceClassification: (False, ("roberta_classifier",)), RobertaForTokenClassification: (False, ("classifier",)),
    RobertaForQuestionAnswering: (False, ("qa",)),
    AlbertForPreTraining: (True, ("mlm", "pair")), AlbertForMaskedLM: (False, ("mlm",)),
}


def _bert_entries(model_cls, c):
    family = _family(c)
    H, E, I = c.hidden_size, c.embedding_dim, c.intermediate_size
    p = family + "."
    yield from ((p + "embeddings.word_embeddings.weight", (c.vocab_size, E)),
                (p + "embeddings.position_embeddings.embedding.weight", (c.max_position_embeddings, E)),
                (p + "embeddings.token_type_embeddings.weight", (c.type_vocab_size, E)),
                (p + "embeddings.LayerNorm.weight", (E,)), (p + "embeddings.LayerNorm.bias", (E,)))
    if family == "albert":  # the factorised embedding's E -> H projection
        yield from ((p + "encoder.embedding_hidden_mapping_in.weight", (H, E)),
                    (p + "encoder.embedding_hidden_mapping_in.bias", (H,)))
    for i in range(c.num_layer_modules):  # ALBERT: one module shared by every layer
        q = f"{p}encoder.layer.{i}."
        for lin, shape in (("attention.wq", (H, H)), ("attention.wk", (H, H)), ("attention.wv", (H, H)),
                           ("attention.wo", (H, H)), ("attention_norm", (H,)), ("feed_forward.w1", (I, H)),
                           ("feed_forward.w2", (H, I)), ("ffn_norm", (H,))):
            yield q + lin + ".weight", shape
            yield q + lin + ".bias", (shape[0],)
    pooler, heads = _HEADS[model_cls]
    if pooler:
        yield from ((p + "pooler.dense.weight", (H, H)), (p + "pooler.dense.bias", (H,)))
    if "mlm" in heads:  # transform + LayerNorm, then the decoder tied to the word embeddings (only its bias stored)
        m = {"bert": "cls.predictions.", "roberta": "lm_head.", "albert": "predictions."}[family]
        yield from ((m + "bias", (c.vocab_size,)), (m + "dense.weight", (E, H)), (m + "dense.bias", (E,)),
                    (m + "LayerNorm.weight", (E,)), (m + "LayerNorm.bias", (E,)))
    if "pair" in heads:  # NSP (BERT) / SOP (ALBERT) on [CLS]
        m = "sop_classifier.classifier." if family == "albert" else "cls.seq_relationship."
        yield from ((m + "weight", (2, H)), (m + "bias", (2,)))
    if "classifier" in heads:
        yield from (("classifier.weight", (c.num_labels, H)), ("classifier.bias", (c.num_labels,)))
    if "roberta_classifier" in heads:  # RoBERTa's head: dense + tanh on <s>, then out_proj (no pooler)
        yield from (("classifier.dense.weight", (H, H)), ("classifier.dense.bias", (H,)),
                    ("classifier.out_proj.weight", (c.num_labels, H)), ("classifier.out_proj.bias", (c.num_labels,)))
    if "qa" in heads:
        yield from (("qa_outputs.weight", (2, H)), ("qa_outputs.bias", (2,)))


def bert_state_shapes(model_cls, config, max_tensors: int | None = None) -> dict:
    """``{state_dict name: shape}`` of ``model_cls(config)`` for every class of ``HF_ARCHITECTURES``
    (tied weights listed once), from the config alone: ``load_model`` and ``import_hf_bert`` compare
    it with the weights' header before allocating."""
    return bounded_shapes(_bert_entries(model_cls, config), max_tensors)


for _cls in _HEADS:
    checkpoint.STATE_SHAPES[_cls] = functools.partial(bert_state_shapes, _cls)


def _family(config) -> str:
    if isinstance(config, AlbertConfig):
        return "albert"
    if isinstance(config, RobertaConfig):
        return "roberta"
    if isinstance(config, BertConfig):
        return "bert"
    raise TypeError(f"hf_bert: expected a BertConfig, RobertaConfig or AlbertConfig, got {type(config).__name__}")


def to_hf_name(name: str, family: str) -> str:
    """Our state_dict name -> HF's, for ``family`` in ``"bert"``, ``"roberta"``, ``"albert"``.

    >>> to_hf_name("bert.encoder.layer.3.attention.wq.weight", "bert")
    'bert.encoder.layer.3.attention.self.query.weight'
    >>> to_hf_name("albert.encoder.layer.0.feed_forward.w2.bias", "albert")
    'albert.encoder.albert_layer_groups.0.albert_layers.0.ffn_output.bias'
    """
    name = name.replace("embeddings.position_embeddings.embedding.", "embeddings.position_embeddings.")
    m = re.match(r"^(.*encoder\.)layer\.(\d+)\.(.*)$", name)
    if m:
        head, i, rest = m.groups()
        for pat, new in (_LAYER_ALBERT if family == "albert" else _LAYER_BERT):
            if re.match(pat, rest):
                rest = re.sub("^" + pat, new, rest)
                break
        if family == "albert":
            return f"{head}albert_layer_groups.{i}.albert_layers.0.{rest}"
        return f"{head}layer.{i}.{rest}"
    if family == "bert":
        name = re.sub(r"^cls\.predictions\.(dense|LayerNorm)\.", r"cls.predictions.transform.\1.", name)
    elif family == "roberta":
        name = name.replace("lm_head.LayerNorm.", "lm_head.layer_norm.")
    else:
        name = name.replace("albert.pooler.dense.", "albert.pooler.")
    return name


def hf_bert_config(model) -> dict:
    """config.json for ``transformers`` (its BertConfig / RobertaConfig / AlbertConfig keys)."""
    c = model.config
    family = _family(c)
    d = {
        "architectures": [type(model).__name__],
        "model_type": family,
        "vocab_size": c.vocab_size, "hidden_size": c.hidden_size, "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads, "intermediate_size": c.intermediate_size,
        "hidden_act": c.hidden_act, "hidden_dropout_prob": c.hidden_dropout_prob,
        "attention_probs_dropout_prob": c.attention_probs_dropout_prob,
        "max_position_embeddings": c.max_position_embeddings, "type_vocab_size": c.type_vocab_size,
        "layer_norm_eps": c.layer_norm_eps, "pad_token_id": c.pad_token_id, "initializer_range": c.initializer_range,
        "num_labels": c.num_labels, "position_embedding_type": "absolute", "tie_word_embeddings": True,
        "torch_dtype": str(model.get_input_embeddings().weight.dtype), "dtype": str(model.get_input_embeddings().weight.dtype),
    }
    if type(model).__name__.endswith("ForQuestionAnswering"):
        d["num_labels"] = 2  # HF sizes qa_outputs by num_labels: a start and an end logit
    d["id2label"] = {str(i): f"LABEL_{i}" for i in range(d["num_labels"])}
    d["label2id"] = {f"LABEL_{i}": i for i in range(d["num_labels"])}
    if family == "roberta":
        d.update(bos_token_id=0, eos_token_id=2)
    if family == "albert":
        d.update(embedding_size=c.embedding_size, num_hidden_groups=c.num_layer_modules, inner_group_num=1,
                 classifier_dropout_prob=c.hidden_dropout_prob)
    return d


def export_hf_bert(model, directory) -> None:
    """Write ``config.json`` + ``model.safetensors`` that HF's class of the same name loads."""
    if type(model).__name__ not in HF_ARCHITECTURES or not isinstance(model, HF_ARCHITECTURES[type(model).__name__]):
        raise TypeError(f"export_hf_bert: expected one of {sorted(HF_ARCHITECTURES)}, got {type(model).__name__}")
    refuse_lora_layers(model, "export_hf_bert")
    family = _family(model.config)
    tensors = {to_hf_name(n, family): p.data for n, p in model.named_parameters()}
    write_hf_directory(directory, tensors, hf_bert_config(model))


def _our_config(c: dict, path: str):
    family = c.get("model_type")
    if family not in ("bert", "roberta", "albert"):
        raise ValueError(f"{path}: model_type is {family!r}; import_hf_bert reads bert, roberta and albert")
    if c.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"{path}: position_embedding_type {c['position_embedding_type']!r} is not supported (only absolute)")
    act = {"gelu": "gelu", "relu": "relu"}.get(c.get("hidden_act", "gelu"))
    if act is None:
        raise ValueError(f"{path}: hidden_act {c.get('hidden_act')!r} is not supported (gelu or relu)")
    keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings", "type_vocab_size",
            "layer_norm_eps", "pad_token_id", "initializer_range")
    try:
        kw = {k: c[k] for k in keys if k in c}
        kw["hidden_act"] = act
        kw["num_labels"] = len(c["id2label"]) if isinstance(c.get("id2label"), dict) else c.get("num_labels", 2)
        if family == "albert":
            groups = c.get("num_hidden_groups", 1)
            if c.get("inner_group_num", 1) != 1 or groups not in (1, c["num_hidden_layers"]):
                raise ValueError(f"{path}: ALBERT with inner_group_num={c.get('inner_group_num')} and num_hidden_groups="
                                 f"{groups} is not supported (1 group shared, or one group per layer)")
            return AlbertConfig(embedding_size=c["embedding_size"], share_layers=groups == 1, **kw)
        return (RobertaConfig if family == "roberta" else BertConfig)(**kw)
    except KeyError as e:
        raise ValueError(f"{path}: missing field {e}") from None
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from None


#: tied decoders and buffers HF may write; we recompute or tie them
_HF_EXTRAS = ("predictions.decoder.weight", "predictions.decoder.bias", "lm_head.decoder.weight", "lm_head.decoder.bias",
              "position_ids", "token_type_ids")


def import_hf_bert(directory, dtype=np.float32):
    """Read an HF BERT / RoBERTa / ALBERT directory (config.json + model.safetensors) into our class
    of the same name as ``architectures[0]``. Raises ``ValueError`` naming missing or unexpected tensors."""
    directory = os.fspath(directory)
    path = os.path.join(directory, "config.json")
    c = read_json_object(path)
    arch = (c.get("architectures") or [None])[0]
    if arch not in HF_ARCHITECTURES:
        raise ValueError(f"{path}: architectures {c.get('architectures')!r}; import_hf_bert reads {sorted(HF_ARCHITECTURES)}")
    cls = HF_ARCHITECTURES[arch]
    config = _our_config(c, path)
    if not isinstance(config, cls.config_class):
        raise ValueError(f"{path}: model_type {c.get('model_type')!r} does not match architecture {arch}")
    wpath = hf_weights_path(directory)
    family = _family(config)
    check_weights_file(wpath, functools.partial(bert_state_shapes, cls, config),
                       to_file=lambda n, shape: (to_hf_name(n, family), shape), ignore=lambda k: k.endswith(_HF_EXTRAS))
    tensors = load_safetensors(wpath)
    model = cls(config)
    if np.dtype(dtype) != np.float32:
        model.to(dtype)
    names = {to_hf_name(n, family): n for n in model.state_dict()}
    ignored = {k for k in tensors if k.endswith(_HF_EXTRAS)}
    missing = sorted(h for h in names if h not in tensors)
    unexpected = sorted(k for k in tensors if k not in names and k not in ignored)
    if missing or unexpected:
        raise ValueError(f"{wpath}: missing tensors {missing}; unexpected tensors {unexpected}")
    check_float_sources(tensors, model, wpath, names)  # an int or bool tensor is refused, never cast
    load_checked_state(model, {n: tensors[h] for h, n in names.items()}, wpath)
    return model
