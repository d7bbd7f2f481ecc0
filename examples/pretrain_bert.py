"""Happy LLM 3.1 + 1.3: pretrain a small BERT and a small RoBERTa on the world corpus, then measure
what pretraining gives each fine-tuning task.

    python examples/pretrain_bert.py                       # BERT then RoBERTa (24 min at load average 6-8)
    python examples/pretrain_bert.py --only bert           # one family (same numbers as in the full run)
    python examples/pretrain_bert.py --from-pretrained out/bert --reinit-pooler   # fine-tune again, no pretraining
    python examples/pretrain_bert.py --quick               # seconds: a smoke run

1. Train a WordPiece tokenizer (5.2.3) on world documents.
2. Pretrain ``BertForPreTraining`` with MLM (15%, 80/10/10) + NSP on [CLS] A [SEP] B [SEP] pairs.
3. Fine-tune four heads on small labelled sets from the world, each twice for the same steps:
   from the pretrained encoder, and from random initialisation:
     * ``BertForSequenceClassification``  the kind of a reading question (1.3.4)          -> accuracy
     * ``BertForTokenClassification``     Penn Treebank POS tags of English stories (1.3.3) -> word accuracy
     * ``BertForTokenClassification``     BIO tags of people / places / objects (1.3.5)    -> entity F1
     * ``BertForQuestionAnswering``       the answer span in a story (1.3.9)                 -> EM / F1
   and print the table. Held-out data are the world's val split (stories never seen in training);
   each head is also scored on its own training set, which tells underfitting from overfitting.
   For POS and NER a quarter of the names, places, cities and objects never occur in the labelled
   training stories and occur in every test story: the table also scores those words alone, which
   only knowledge from pretraining (where they do occur, unlabelled) can tag.
4. Save ``attention.png`` (and ``attention.txt``): one layer's attention over a sentence, mean over heads.
5. RoBERTa (3.1.2): our byte-level BPE with RoBERTa's specials, ``RobertaForMaskedLM`` with MLM only
   on whole documents, a new mask every pass (dynamic masking), positions from ``pad_token_id + 1``;
   then the same four tasks through the ``RobertaFor...`` heads, pretrained vs scratch.

Why the labelled sets are small: with thousands of labels and many steps a from-scratch model
also learns these tasks; pretraining's gift is needing fewer of them (what the book says in 3.1).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import minillm as mi  # noqa: E402
from minillm._files import atomic_write  # noqa: E402
from minillm.io import load_model, save_model  # noqa: E402
from minillm.plot import heatmap_rgb, write_png  # noqa: E402
from minillm.data.bert_tasks import (NER_LABELS, POS_TAGS, DataCollatorForLanguageModeling, encode_pairs,  # noqa: E402
                                     make_nsp_pairs, ner_data, pad_batch, pos_data, qa_data, question_kind_data,
                                     tokenize_ner, tokenize_pos, tokenize_qa)
from minillm.data.world import WorldConfig, generate_stories  # noqa: E402
from minillm.eval.tagging import entity_scores, qa_scores  # noqa: E402
from minillm.models.bert import (BertConfig, BertForPreTraining, BertForQuestionAnswering,  # noqa: E402
                                 BertForSequenceClassification, BertForTokenClassification)
from minillm.models.roberta import (RobertaConfig, RobertaForMaskedLM, RobertaForQuestionAnswering,  # noqa: E402
                                    RobertaForSequenceClassification, RobertaForTokenClassification)
from minillm.optim import AdamW, clip_grad_norm_  # noqa: E402
from minillm.tokenizers.roberta import RobertaTokenizer  # noqa: E402
from minillm.tokenizers.wordpiece import WordPieceTokenizer  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out-dir", default="out/bert")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--docs", type=int, default=6000, help="pretraining documents")
    p.add_argument("--vocab-size", type=int, default=1200)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--max-len", type=int, default=96)
    p.add_argument("--pretrain-steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--roberta-steps", type=int, default=1500, help="RoBERTa MLM pretraining steps (0: skip RoBERTa)")
    p.add_argument("--finetune-steps", type=int, default=200)
    # 3e-3, not BERT's 2e-5..5e-5: those are for 110M parameters and thousands of steps. A 170k-parameter
    # model given 200 steps at 3e-4 underfits every head (train accuracy = held-out accuracy, e.g.
    # 0.36 on 9 question kinds): AdamW moves each weight ~lr per step, and the new head needs to grow.
    p.add_argument("--finetune-lr", type=float, default=3e-3)
    p.add_argument("--n-train", type=int, default=300, help="labelled examples per fine-tuning task")
    p.add_argument("--n-eval", type=int, default=300)
    p.add_argument("--from-pretrained", metavar="DIR", help="fine-tune the models a previous run saved in DIR "
                   "(its tokenizer/, bert/, roberta_tokenizer/, roberta/) instead of pretraining")
    p.add_argument("--reinit-pooler", action="store_true", help="fine-tune classification with a fresh pooler "
                   "instead of the one NSP trained")
    p.add_argument("--only", choices=("all", "bert", "roberta"), default="all",
                   help="run one family (the numbers are the same as in the full run: each part seeds itself)")
    p.add_argument("--quick", action="store_true", help="a tiny run in seconds (smoke test)")
    args = p.parse_args(argv)
    if args.quick:
        args.docs, args.vocab_size, args.hidden, args.layers, args.heads, args.max_len = 200, 500, 16, 1, 2, 64
        args.pretrain_steps, args.finetune_steps, args.batch_size, args.n_train, args.n_eval = 6, 4, 4, 16, 16
        args.roberta_steps = 6
    return args


# ----------------------------------------------------------------------------- training loop
def train(model, batches, steps: int, lr: float, forward, log_every: int = 0, label: str = "") -> list[float]:
    """AdamW (weight decay 0.01 on matrices), linear warmup (10%) then linear decay, clip at 1.0."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.999))
    warm = max(1, steps // 10)
    losses = []
    model.train()
    t0 = time.perf_counter()
    for step in range(steps):
        rate = lr * min((step + 1) / warm, max(0.0, (steps - step) / max(1, steps - warm)))
        for g in opt.param_groups:
            g["lr"] = rate
        loss = forward(model, next(batches))
        opt.zero_grad()
        loss.backward()
        clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.data))
        if log_every and (step + 1) % log_every == 0:
            print(f"  {label} step {step + 1}/{steps}: loss {np.mean(losses[-log_every:]):.3f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    model.eval()
    return losses


def batches_of(examples, batch_size, collate, seed):
    rng = np.random.default_rng(seed)
    if not examples:
        raise ValueError("batches_of: no examples")
    batch_size = min(batch_size, len(examples))
    while True:
        order = rng.permutation(len(examples))
        for i in range(0, len(order) - batch_size + 1, batch_size):
            yield collate([examples[j] for j in order[i:i + batch_size]])


def pad_field(examples, key, value):
    return pad_batch([e[key] for e in examples], value)


# ----------------------------------------------------------------------------- fine-tuning tasks
#: the fine-tuning heads of each family (Hugging Face's class names)
HEADS = {
    "bert": {"cls": BertForSequenceClassification, "tok": BertForTokenClassification, "qa": BertForQuestionAnswering},
    "roberta": {"cls": RobertaForSequenceClassification, "tok": RobertaForTokenClassification,
                "qa": RobertaForQuestionAnswering},
}


def encoder_state(pretrained, reinit_pooler: bool = False):
    """The pretrained encoder's weights (``bert.*`` / ``roberta.*``), to load into a fresh head model;
    ``reinit_pooler`` leaves out BERT's pooler (trained only by NSP), so it starts fresh."""
    prefix = pretrained.base_prefix + "."
    return {k: v for k, v in pretrained.state_dict().items()
            if k.startswith(prefix) and not (reinit_pooler and k.startswith(prefix + "pooler."))}


def fresh(cls, config, state, seed):
    mi.manual_seed(seed)  # the same head initialisation for both runs
    model = cls(config)
    if state is not None:
        missing = model.load_state_dict(state, strict=False)
        prefix = model.base_prefix + "."
        assert not [k for k in missing.missing_keys if k.startswith(prefix) and "pooler" not in k], missing
    return model


def run_classification(tok, config, state, args, data, heads):
    train_ex, val_ex, names = data
    pad = tok.pad_token_id

    def collate(ex):
        ids = pad_field(ex, "input_ids", pad)
        return ids, (ids != pad).astype(np.int64), np.array([e["label"] for e in ex])

    model = fresh(heads["cls"], config, state, args.seed)
    losses = train(model, batches_of(train_ex, 16, collate, args.seed), args.finetune_steps, args.finetune_lr,
                   lambda m, b: m(b[0], b[1], labels=b[2]).loss)
    def accuracy(examples):
        correct = 0
        with mi.no_grad():
            for i in range(0, len(examples), 64):
                ids, mask, y = collate(examples[i:i + 64])
                correct += int((model(ids, mask).logits.data.argmax(-1) == y).sum())
        return correct / len(examples)

    return {"accuracy": accuracy(val_ex), "train_accuracy": accuracy(train_ex), "final_loss": float(np.mean(losses[-10:]))}


def run_tagging(tok, config, state, args, data, heads, names, bio: bool):
    """Token classification (1.3.3 POS, 1.3.5 NER): fine-tune, then score the held-out set on all
    words/entities and on those of held-out entities only (never in the labelled training data)."""
    train_ex, val_ex = data
    pad = tok.pad_token_id

    def collate(ex):
        ids = pad_field(ex, "input_ids", pad)
        return ids, (ids != pad).astype(np.int64), pad_field(ex, "labels", -100), pad_field(ex, "unseen", False)

    model = fresh(heads["tok"], config, state, args.seed)
    losses = train(model, batches_of(train_ex, 16, collate, args.seed), args.finetune_steps, args.finetune_lr,
                   lambda m, b: m(b[0], b[1], labels=b[2]).loss)
    def predict(examples):
        y_true, y_pred, unseen = [], [], []
        with mi.no_grad():
            for i in range(0, len(examples), 64):
                ids, mask, y, u = collate(examples[i:i + 64])
                pred = model(ids, mask).logits.data.argmax(-1)
                for r in range(len(ids)):
                    keep = y[r] != -100
                    y_true.append([names[t] for t in y[r][keep]])
                    y_pred.append([names[t] for t in pred[r][keep]])
                    unseen.append(u[r][keep].astype(bool))
        return y_true, y_pred, unseen

    y_true, y_pred, unseen = predict(val_ex)
    t_true, t_pred, _ = predict(train_ex)  # the training set's own score: underfitting or overfitting?
    out = {"final_loss": float(np.mean(losses[-10:]))}
    if bio:
        s, su = entity_scores(y_true, y_pred), entity_scores(y_true, y_pred, keep=unseen)
        out.update(entity_f1=s["f1"], precision=s["precision"], recall=s["recall"], unseen_f1=su["f1"],
                   unseen_support=su["support"], train_entity_f1=entity_scores(t_true, t_pred)["f1"])
    else:
        hit = np.concatenate([np.array(a) == np.array(b) for a, b in zip(y_true, y_pred)])
        held = np.concatenate(unseen)
        out.update(accuracy=float(hit.mean()), unseen_accuracy=float(hit[held].mean()) if held.any() else float("nan"),
                   unseen_support=int(held.sum()),
                   train_accuracy=float(np.mean(np.concatenate([np.array(a) == np.array(b) for a, b in zip(t_true, t_pred)]))))
    return out


def run_ner(tok, config, state, args, data, heads):
    return run_tagging(tok, config, state, args, data, heads, NER_LABELS, bio=True)


def run_pos(tok, config, state, args, data, heads):
    return run_tagging(tok, config, state, args, data, heads, POS_TAGS, bio=False)


def best_span(start, end, ctx, max_answer=12):
    """argmax of start[i] + end[j] over context tokens i <= j < i + max_answer."""
    s = np.where(ctx, start, -np.inf)
    e = np.where(ctx, end, -np.inf)
    score = s[:, None] + e[None, :]  # (T, T)
    T = len(s)
    valid = np.triu(np.ones((T, T), bool)) & ~np.triu(np.ones((T, T), bool), k=max_answer)
    score = np.where(valid, score, -np.inf)
    i, j = np.unravel_index(np.argmax(score), score.shape)
    return int(i), int(j)


def run_qa(tok, config, state, args, data, heads):
    train_ex, val_ex = data
    pad = tok.pad_token_id

    def collate(ex):
        ids = pad_field(ex, "input_ids", pad)
        return (ids, (ids != pad).astype(np.int64), pad_field(ex, "token_type_ids", 0),
                np.array([e["start_positions"] for e in ex]), np.array([e["end_positions"] for e in ex]))

    model = fresh(heads["qa"], config, state, args.seed)
    losses = train(model, batches_of(train_ex, 16, collate, args.seed), args.finetune_steps, args.finetune_lr,
                   lambda m, b: m(b[0], b[1], b[2], start_positions=b[3], end_positions=b[4]).loss)
    def scores(examples):
        preds, refs = [], []
        with mi.no_grad():
            for i in range(0, len(examples), 64):
                chunk = examples[i:i + 64]
                ids, mask, types, _, _ = collate(chunk)
                out = model(ids, mask, types)
                for r, e in enumerate(chunk):
                    ctx = np.zeros(ids.shape[1], bool)
                    ctx[:len(e["context_mask"])] = e["context_mask"]
                    a, b = best_span(out.start_logits.data[r], out.end_logits.data[r], ctx)
                    preds.append(e["context"][e["offset_mapping"][a][0]:e["offset_mapping"][b][1]])
                    refs.append(e["answer"])
        return qa_scores(preds, refs)

    s = scores(val_ex)
    return {"exact_match": s["exact_match"], "f1": s["f1"], "train_f1": scores(train_ex)["f1"],
            "final_loss": float(np.mean(losses[-10:]))}


# ----------------------------------------------------------------------------- the four tasks, both arms
def task_data(tok, args):
    """The labelled sets, tokenized by ``tok`` (WordPiece or RoBERTa's BPE). NER / POS: the labelled
    training stories never contain a held-out entity; every test story does."""
    kinds, names = question_kind_data(args.n_train, seed=args.seed)
    kinds_val, _ = question_kind_data(args.n_eval, split="val", seed=args.seed)
    enc = lambda recs: [{"input_ids": tok.encode_plus(r["text"], max_length=args.max_len)["input_ids"], "label": r["label"]}  # noqa: E731
                        for r in recs]
    return {
        "cls": (enc(kinds), enc(kinds_val), names),
        "pos": (tokenize_pos(tok, pos_data(args.n_train, seed=args.seed, entities="seen"), args.max_len),
                tokenize_pos(tok, pos_data(args.n_eval, split="val", seed=args.seed, entities="unseen"), args.max_len)),
        "ner": (tokenize_ner(tok, ner_data(args.n_train, seed=args.seed, entities="seen"), args.max_len),
                tokenize_ner(tok, ner_data(args.n_eval, split="val", seed=args.seed, entities="unseen"), args.max_len)),
        "qa": (tokenize_qa(tok, qa_data(args.n_train, seed=args.seed), args.max_len),
               tokenize_qa(tok, qa_data(args.n_eval, split="val", seed=args.seed), args.max_len)),
    }


def finetune_all(tok, config, pretrained, family: str, args) -> list[dict]:
    """Each head twice for the same steps: from ``pretrained``'s encoder and from random init."""
    data = task_data(tok, args)
    state = encoder_state(pretrained, args.reinit_pooler)
    with_labels = lambda n: type(config)(**{**config.to_dict(), "num_labels": n})  # noqa: E731
    rows = []
    for task, metric, fn, key, cfg in [
        ("question kind (1.3.4)", "accuracy", run_classification, "cls", with_labels(len(data["cls"][2]))),
        ("POS tags (1.3.3)", "accuracy", run_pos, "pos", with_labels(len(POS_TAGS))),
        ("NER BIO tags (1.3.5)", "entity_f1", run_ner, "ner", with_labels(len(NER_LABELS))),
        ("extractive QA (1.3.9)", "f1", run_qa, "qa", config),
    ]:
        t0 = time.perf_counter()
        pre = fn(tok, cfg, state, args, data[key], HEADS[family])
        scratch = fn(tok, cfg, None, args, data[key], HEADS[family])
        rows.append({"task": task, "metric": metric, "pretrained": pre, "scratch": scratch,
                     "n_train": len(data[key][0]), "n_eval": len(data[key][1])})
        fit = f"  [train {pre['train_' + metric]:.3f} vs {scratch['train_' + metric]:.3f}]"
        extra = f"  (EM {pre['exact_match']:.3f} vs {scratch['exact_match']:.3f})" if metric == "f1" else ""
        for k in ("unseen_f1", "unseen_accuracy"):
            if k in pre:
                extra = f"  (held-out entities: {pre[k]:.3f} vs {scratch[k]:.3f}, n={pre['unseen_support']})"
        print(f"   {task:24s} {metric:10s} pretrained {pre[metric]:.3f}  scratch {scratch[metric]:.3f}{extra}{fit}  "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return rows


def print_table(rows, name: str) -> None:
    print(f"\n| task | metric | from pretrained {name} | from random init |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | {r['metric']} | {r['pretrained'][r['metric']]:.3f} | {r['scratch'][r['metric']]:.3f} |")
        train = "train_" + r["metric"]
        print(f"| {r['task']} | {r['metric']} on its own training set | {r['pretrained'][train]:.3f} | {r['scratch'][train]:.3f} |")
        if r["metric"] == "f1":
            print(f"| {r['task']} | exact match | {r['pretrained']['exact_match']:.3f} | {r['scratch']['exact_match']:.3f} |")
        for key, label in (("unseen_f1", "entity F1, held-out names"), ("unseen_accuracy", "accuracy, held-out words")):
            if key in r["pretrained"]:
                print(f"| {r['task']} | {label} | {r['pretrained'][key]:.3f} | {r['scratch'][key]:.3f} |")
    print()


def run_roberta(docs, stories, args) -> dict:
    """RoBERTa (3.1.2) on the same documents: our byte-level BPE with RoBERTa's specials, MLM only
    (no NSP) on whole documents (RoBERTa's FULL-SENTENCES, cut at max_len) with a fresh mask on
    every pass (dynamic masking), then the same four heads, pretrained vs scratch."""
    if args.from_pretrained:
        rtok = RobertaTokenizer.load(os.path.join(args.from_pretrained, "roberta_tokenizer"))
        roberta = load_model(os.path.join(args.from_pretrained, "roberta"))
        print(f"5. RoBERTa: loaded the BPE tokenizer and the pretrained model of {args.from_pretrained}")
        config = RobertaConfig(**{**roberta.config.to_dict(), "num_labels": 2})
        rows = finetune_all(rtok, config, roberta, "roberta", args)
        print_table(rows, "RoBERTa")
        return {"from_pretrained": args.from_pretrained, "finetune": rows}
    t0 = time.perf_counter()
    rtok = RobertaTokenizer.train(docs, vocab_size=args.vocab_size)
    rtok.save(os.path.join(args.out_dir, "roberta_tokenizer"))
    config = RobertaConfig(vocab_size=rtok.vocab_size, hidden_size=args.hidden, num_hidden_layers=args.layers,
                           num_attention_heads=args.heads, pad_token_id=rtok.pad_token_id,
                           max_position_embeddings=args.max_len + rtok.pad_token_id + 1,  # positions start at pad + 1
                           hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    print(f"5. RoBERTa: byte-level BPE of {rtok.vocab_size} tokens in {time.perf_counter() - t0:.1f} s "
          f"(pad id {rtok.pad_token_id}, so positions start at row {config.position_offset} of "
          f"{config.max_position_embeddings})")
    examples = [{"input_ids": rtok.encode_plus(d, max_length=args.max_len)["input_ids"]} for d in docs]
    collator = DataCollatorForLanguageModeling.from_tokenizer(rtok, seed=args.seed)
    mi.manual_seed(args.seed)
    roberta = RobertaForMaskedLM(config)
    print(f"   pretraining RobertaForMaskedLM ({roberta.get_num_params():,} parameters) with MLM on {len(examples):,} "
          f"documents for {args.roberta_steps} steps (a new mask every time a document is seen)")
    t0 = time.perf_counter()
    losses = train(roberta, batches_of(examples, args.batch_size, collator, args.seed), args.roberta_steps, args.lr,
                   lambda m, b: m(b["input_ids"], b["attention_mask"], labels=b["labels"]).loss,
                   log_every=max(1, args.roberta_steps // 6), label="roberta")
    seconds = time.perf_counter() - t0
    val = [{"input_ids": rtok.encode_plus(d, max_length=args.max_len)["input_ids"]}
           for d in generate_stories(256, split="val", config=stories)]
    vb = DataCollatorForLanguageModeling.from_tokenizer(rtok, seed=123)(val)
    with mi.no_grad():
        logits = roberta(vb["input_ids"], vb["attention_mask"]).logits.data
    sel = vb["labels"] != -100
    mlm_acc = float((logits.argmax(-1)[sel] == vb["labels"][sel]).mean())
    print(f"   done in {seconds:.0f} s: loss {losses[0]:.2f} -> {np.mean(losses[-20:]):.2f}; held-out MLM accuracy "
          f"{100 * mlm_acc:.1f} %")
    rows = finetune_all(rtok, config, roberta, "roberta", args)
    print_table(rows, "RoBERTa")
    save_model(roberta, os.path.join(args.out_dir, "roberta"))
    return {"vocab_size": rtok.vocab_size, "params": roberta.get_num_params(), "pretrain_seconds": seconds,
            "pretrain_loss_first": losses[0], "pretrain_loss_last": float(np.mean(losses[-20:])),
            "mlm_accuracy": mlm_acc, "finetune": rows}


# ----------------------------------------------------------------------------- attention picture
def attention_map(model: BertForPreTraining, ids: list[int], layer: int) -> np.ndarray:
    attn = model.bert.encoder.layer[layer].attention
    attn.keep_weights = True
    try:
        with mi.no_grad(), model.mode(training=False):
            model(np.array([ids]))
    finally:
        attn.keep_weights = False
    return attn.last_weights[0].mean(axis=0)  # (B, H, T, T) -> (T, T)


def pretrain_bert(docs, stories, args):
    """Steps 1-2: WordPiece, then MLM + NSP pretraining. -> (tokenizer, config, model, numbers)."""
    # 1. WordPiece
    t0 = time.perf_counter()
    tok = WordPieceTokenizer.train(docs, vocab_size=args.vocab_size)
    tok.save(os.path.join(args.out_dir, "tokenizer"))
    cov = tok.coverage(generate_stories(200, split="val", config=stories))
    print(f"1. WordPiece: {tok.vocab_size} tokens in {time.perf_counter() - t0:.1f} s; held-out words covered "
          f"{100 * cov['covered']:.1f} %, {cov['tokens_per_word']:.2f} tokens/word")

    # 2. MLM + NSP pretraining
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=args.hidden, num_hidden_layers=args.layers,
                        num_attention_heads=args.heads, max_position_embeddings=args.max_len,
                        pad_token_id=tok.pad_token_id, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    pairs = make_nsp_pairs(docs, args.pretrain_steps * args.batch_size // 2 + 64, seed=args.seed)
    examples = encode_pairs(tok, pairs, max_length=args.max_len)
    collator = DataCollatorForLanguageModeling.from_tokenizer(tok, seed=args.seed)
    mi.manual_seed(args.seed)
    bert = BertForPreTraining(config)
    print(f"2. pretraining BERT ({bert.get_num_params():,} parameters: hidden {args.hidden}, {args.layers} layers, "
          f"{args.heads} heads) with MLM + NSP on {len(examples):,} pairs for {args.pretrain_steps} steps")
    t0 = time.perf_counter()

    def pretrain_forward(m, b):
        return m(b["input_ids"], b["attention_mask"], b["token_type_ids"], labels=b["labels"],
                 next_sentence_label=b["next_sentence_label"]).loss

    losses = train(bert, batches_of(examples, args.batch_size, collator, args.seed), args.pretrain_steps, args.lr,
                   pretrain_forward, log_every=max(1, args.pretrain_steps // 6), label="pretrain")
    pretrain_seconds = time.perf_counter() - t0
    # held-out MLM accuracy and NSP accuracy
    val_pairs = make_nsp_pairs(generate_stories(400, split="val", config=stories), 256, seed=args.seed + 1)
    val_batch = DataCollatorForLanguageModeling.from_tokenizer(tok, seed=123)(encode_pairs(tok, val_pairs, args.max_len))
    with mi.no_grad():
        out = bert(val_batch["input_ids"], val_batch["attention_mask"], val_batch["token_type_ids"])
    sel = val_batch["labels"] != -100
    mlm_acc = float((out.prediction_logits.data.argmax(-1)[sel] == val_batch["labels"][sel]).mean())
    nsp_acc = float((out.seq_relationship_logits.data.argmax(-1) == val_batch["next_sentence_label"]).mean())
    print(f"   done in {pretrain_seconds:.0f} s: loss {losses[0]:.2f} -> {np.mean(losses[-20:]):.2f}; held-out MLM accuracy "
          f"{100 * mlm_acc:.1f} %, NSP accuracy {100 * nsp_acc:.1f} %")
    save_model(bert, os.path.join(args.out_dir, "bert"))  # the pretrained model, to fine-tune again (--from-pretrained)
    info = {"vocab_size": tok.vocab_size, "coverage": cov, "params": bert.get_num_params(),
            "pretrain_seconds": pretrain_seconds, "pretrain_loss_first": losses[0],
            "pretrain_loss_last": float(np.mean(losses[-20:])), "mlm_accuracy": mlm_acc, "nsp_accuracy": nsp_acc}
    return tok, config, bert, info



# ----------------------------------------------------------------------------- main
def main(argv=None) -> dict:
    args = parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    t_start = time.perf_counter()
    mi.manual_seed(args.seed)
    stories = WorldConfig(seed=args.seed, doc_mix={"story": 0.75, "qa": 0.25})
    docs = generate_stories(args.docs, config=stories)

    if args.only == "roberta":
        report = {"args": vars(args), "roberta": run_roberta(docs, stories, args), "seconds": time.perf_counter() - t_start}
        atomic_write(os.path.join(args.out_dir, "report.json"), json.dumps(report, indent=1) + "\n")
        return report
    if args.from_pretrained:  # fine-tune again from a finished run: no tokenizer training, no pretraining
        tok = WordPieceTokenizer.load(os.path.join(args.from_pretrained, "tokenizer"))
        bert = load_model(os.path.join(args.from_pretrained, "bert"))
        config = BertConfig(**{**bert.config.to_dict(), "num_labels": 2})
        info = {"from_pretrained": args.from_pretrained}
        print(f"1-2. loaded the WordPiece tokenizer and the pretrained BERT of {args.from_pretrained}")
    else:
        tok, config, bert, info = pretrain_bert(docs, stories, args)

    # 3. fine-tuning, pretrained vs scratch
    print(f"3. fine-tuning each head for {args.finetune_steps} steps on {args.n_train} labelled examples "
          f"(held out: {args.n_eval}), from the pretrained encoder and from random init")
    rows = finetune_all(tok, config, bert, "bert", args)
    print_table(rows, "BERT")

    # 4. attention picture
    sentence = generate_stories(1, split="val", config=WorldConfig(seed=args.seed, doc_mix={"story": 1.0}, langs=("en",)))[0]
    ids = tok.encode(sentence.split(". ")[0] + ".", add_special_tokens=True)
    layer = min(1, bert.config.num_hidden_layers - 1)
    weights = attention_map(bert, ids, layer)
    write_png(os.path.join(args.out_dir, "attention.png"), heatmap_rgb(weights, cell=16))
    toks = [tok.id_to_token(i) for i in ids]
    lines = [f"layer {layer} self-attention (mean over heads): row = query token, column = key token", "\t" + "\t".join(toks)]
    lines += [t + "\t" + "\t".join(f"{w:.2f}" for w in row) for t, row in zip(toks, weights)]
    atomic_write(os.path.join(args.out_dir, "attention.txt"), "\n".join(lines) + "\n")
    print(f"4. saved attention.png/.txt (layer {layer}, {len(ids)} tokens), tokenizer/ and bert/ in {args.out_dir}")

    # 5. RoBERTa (3.1.2): byte-level BPE, MLM only with dynamic masking, positions from pad + 1
    roberta_report = run_roberta(docs, stories, args) if args.roberta_steps > 0 and args.only == "all" else None
    report = {"args": vars(args), **info, "finetune": rows, "roberta": roberta_report,
              "seconds": time.perf_counter() - t_start}
    atomic_write(os.path.join(args.out_dir, "report.json"), json.dumps(report, indent=1) + "\n")
    print(f"saved report.json in {args.out_dir} ({report['seconds']:.0f} s in all)")
    return report


if __name__ == "__main__":
    main()
