"""Happy LLM 3.1 + 1.3: pretrain a small BERT on the world corpus, then show that pretraining helps.

    python examples/pretrain_bert.py            # a few minutes on 2 cores
    python examples/pretrain_bert.py --quick    # seconds: a smoke run

1. Train a WordPiece tokenizer (5.2.3) on world documents.
2. Pretrain ``BertForPreTraining`` with MLM (15%, 80/10/10) + NSP on [CLS] A [SEP] B [SEP] pairs.
3. Fine-tune three heads on small labelled sets from the world, each twice for the same steps:
   from the pretrained encoder, and from random initialisation:
     * ``BertForSequenceClassification``  the kind of a reading question (1.3.4)   -> accuracy
     * ``BertForTokenClassification``     BIO tags of people / places / objects (1.3.5) -> entity F1
     * ``BertForQuestionAnswering``       the answer span in a story (1.3.9)          -> EM / F1
   and print the table (held-out data: the world's val split, stories never seen in training).
4. Save ``attention.png`` (and ``attention.txt``): one layer's attention over a sentence, mean over heads.

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
from minillm.plot import heatmap_rgb, write_png  # noqa: E402
from minillm.data.bert_tasks import (NER_LABELS, DataCollatorForLanguageModeling, encode_pairs, make_nsp_pairs,  # noqa: E402
                                     ner_data, pad_batch, qa_data, question_kind_data, tokenize_ner, tokenize_qa)
from minillm.data.world import WorldConfig, generate_stories  # noqa: E402
from minillm.eval.tagging import entity_scores, qa_scores  # noqa: E402
from minillm.models.bert import (BertConfig, BertForPreTraining, BertForQuestionAnswering,  # noqa: E402
                                 BertForSequenceClassification, BertForTokenClassification)
from minillm.optim import AdamW, clip_grad_norm_  # noqa: E402
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
    p.add_argument("--finetune-steps", type=int, default=200)
    p.add_argument("--finetune-lr", type=float, default=3e-4)
    p.add_argument("--n-train", type=int, default=300, help="labelled examples per fine-tuning task")
    p.add_argument("--n-eval", type=int, default=300)
    p.add_argument("--quick", action="store_true", help="a tiny run in seconds (smoke test)")
    args = p.parse_args(argv)
    if args.quick:
        args.docs, args.vocab_size, args.hidden, args.layers, args.heads, args.max_len = 200, 500, 16, 1, 2, 64
        args.pretrain_steps, args.finetune_steps, args.batch_size, args.n_train, args.n_eval = 6, 4, 4, 16, 16
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
def encoder_state(pretrained):
    """The pretrained encoder's weights (``bert.*``), to load into a fresh head model."""
    return {k: v for k, v in pretrained.state_dict().items() if k.startswith("bert.")}


def fresh(cls, config, state, seed):
    mi.manual_seed(seed)  # the same head initialisation for both runs
    model = cls(config)
    if state is not None:
        missing = model.load_state_dict(state, strict=False)
        assert not [k for k in missing.missing_keys if k.startswith("bert.") and "pooler" not in k], missing
    return model


def run_classification(tok, config, state, args, data):
    train_ex, val_ex, names = data
    pad = tok.pad_token_id

    def collate(ex):
        ids = pad_field(ex, "input_ids", pad)
        return ids, (ids != pad).astype(np.int64), np.array([e["label"] for e in ex])

    model = fresh(BertForSequenceClassification, config, state, args.seed)
    losses = train(model, batches_of(train_ex, 16, collate, args.seed), args.finetune_steps, args.finetune_lr,
                   lambda m, b: m(b[0], b[1], labels=b[2]).loss)
    correct = 0
    with mi.no_grad():
        for i in range(0, len(val_ex), 64):
            ids, mask, y = collate(val_ex[i:i + 64])
            correct += int((model(ids, mask).logits.data.argmax(-1) == y).sum())
    return {"accuracy": correct / len(val_ex), "final_loss": float(np.mean(losses[-10:]))}


def run_ner(tok, config, state, args, data):
    train_ex, val_ex = data
    pad = tok.pad_token_id

    def collate(ex):
        ids = pad_field(ex, "input_ids", pad)
        return ids, (ids != pad).astype(np.int64), pad_field(ex, "labels", -100)

    model = fresh(BertForTokenClassification, config, state, args.seed)
    losses = train(model, batches_of(train_ex, 16, collate, args.seed), args.finetune_steps, args.finetune_lr,
                   lambda m, b: m(b[0], b[1], labels=b[2]).loss)
    y_true, y_pred = [], []
    with mi.no_grad():
        for i in range(0, len(val_ex), 64):
            ids, mask, y = collate(val_ex[i:i + 64])
            pred = model(ids, mask).logits.data.argmax(-1)
            for r in range(len(ids)):
                keep = y[r] != -100
                y_true.append([NER_LABELS[t] for t in y[r][keep]])
                y_pred.append([NER_LABELS[t] for t in pred[r][keep]])
    s = entity_scores(y_true, y_pred)
    return {"entity_f1": s["f1"], "precision": s["precision"], "recall": s["recall"], "final_loss": float(np.mean(losses[-10:]))}


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


def run_qa(tok, config, state, args, data):
    train_ex, val_ex = data
    pad = tok.pad_token_id

    def collate(ex):
        ids = pad_field(ex, "input_ids", pad)
        return (ids, (ids != pad).astype(np.int64), pad_field(ex, "token_type_ids", 0),
                np.array([e["start_positions"] for e in ex]), np.array([e["end_positions"] for e in ex]))

    model = fresh(BertForQuestionAnswering, config, state, args.seed)
    losses = train(model, batches_of(train_ex, 16, collate, args.seed), args.finetune_steps, args.finetune_lr,
                   lambda m, b: m(b[0], b[1], b[2], start_positions=b[3], end_positions=b[4]).loss)
    preds, refs = [], []
    with mi.no_grad():
        for i in range(0, len(val_ex), 64):
            chunk = val_ex[i:i + 64]
            ids, mask, types, _, _ = collate(chunk)
            out = model(ids, mask, types)
            for r, e in enumerate(chunk):
                ctx = np.zeros(ids.shape[1], bool)
                ctx[:len(e["context_mask"])] = e["context_mask"]
                a, b = best_span(out.start_logits.data[r], out.end_logits.data[r], ctx)
                preds.append(e["context"][e["offset_mapping"][a][0]:e["offset_mapping"][b][1]])
                refs.append(e["answer"])
    s = qa_scores(preds, refs)
    return {"exact_match": s["exact_match"], "f1": s["f1"], "final_loss": float(np.mean(losses[-10:]))}


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


# ----------------------------------------------------------------------------- main
def main(argv=None) -> dict:
    args = parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    t_start = time.perf_counter()
    mi.manual_seed(args.seed)
    stories = WorldConfig(seed=args.seed, doc_mix={"story": 0.75, "qa": 0.25})
    docs = generate_stories(args.docs, config=stories)

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

    # 3. fine-tuning, pretrained vs scratch
    kinds, names = question_kind_data(args.n_train, seed=args.seed)
    kinds_val, _ = question_kind_data(args.n_eval, split="val", seed=args.seed)
    enc = lambda recs: [{"input_ids": tok.encode_plus(r["text"], max_length=args.max_len)["input_ids"], "label": r["label"]}  # noqa: E731
                        for r in recs]
    cls_data = (enc(kinds), enc(kinds_val), names)
    ner = (tokenize_ner(tok, ner_data(args.n_train, seed=args.seed), args.max_len),
           tokenize_ner(tok, ner_data(args.n_eval, split="val", seed=args.seed), args.max_len))
    qa = (tokenize_qa(tok, qa_data(args.n_train, seed=args.seed), args.max_len),
          tokenize_qa(tok, qa_data(args.n_eval, split="val", seed=args.seed), args.max_len))
    state = encoder_state(bert)
    rows = []
    print(f"3. fine-tuning each head for {args.finetune_steps} steps on {args.n_train} labelled examples "
          f"(held out: {args.n_eval}), from the pretrained encoder and from random init")
    for task, metric, fn, data, cfg in [
        ("question kind (1.3.4)", "accuracy", run_classification, cls_data, BertConfig(**{**config.to_dict(), "num_labels": len(names)})),
        ("NER BIO tags (1.3.5)", "entity_f1", run_ner, ner, BertConfig(**{**config.to_dict(), "num_labels": len(NER_LABELS)})),
        ("extractive QA (1.3.9)", "f1", run_qa, qa, config),
    ]:
        t0 = time.perf_counter()
        pre = fn(tok, cfg, state, args, data)
        scratch = fn(tok, cfg, None, args, data)
        rows.append({"task": task, "metric": metric, "pretrained": pre, "scratch": scratch})
        extra = f"  (EM {pre['exact_match']:.3f} vs {scratch['exact_match']:.3f})" if metric == "f1" else ""
        print(f"   {task:24s} {metric:10s} pretrained {pre[metric]:.3f}  scratch {scratch[metric]:.3f}{extra}  "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)

    print("\n| task | metric | from pretrained BERT | from random init |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | {r['metric']} | {r['pretrained'][r['metric']]:.3f} | {r['scratch'][r['metric']]:.3f} |")
        if r["metric"] == "f1":
            print(f"| {r['task']} | exact match | {r['pretrained']['exact_match']:.3f} | {r['scratch']['exact_match']:.3f} |")

    # 4. attention picture
    sentence = generate_stories(1, split="val", config=WorldConfig(seed=args.seed, doc_mix={"story": 1.0}, langs=("en",)))[0]
    ids = tok.encode(sentence.split(". ")[0] + ".", add_special_tokens=True)
    layer = min(1, args.layers - 1)
    weights = attention_map(bert, ids, layer)
    write_png(os.path.join(args.out_dir, "attention.png"), heatmap_rgb(weights, cell=16))
    toks = [tok.id_to_token(i) for i in ids]
    lines = [f"layer {layer} self-attention (mean over heads): row = query token, column = key token", "\t" + "\t".join(toks)]
    lines += [t + "\t" + "\t".join(f"{w:.2f}" for w in row) for t, row in zip(toks, weights)]
    atomic_write(os.path.join(args.out_dir, "attention.txt"), "\n".join(lines) + "\n")
    report = {"args": vars(args), "vocab_size": tok.vocab_size, "coverage": cov, "params": bert.get_num_params(),
              "pretrain_seconds": pretrain_seconds, "pretrain_loss_first": losses[0],
              "pretrain_loss_last": float(np.mean(losses[-20:])), "mlm_accuracy": mlm_acc, "nsp_accuracy": nsp_acc,
              "finetune": rows, "seconds": time.perf_counter() - t_start}
    atomic_write(os.path.join(args.out_dir, "report.json"), json.dumps(report, indent=1) + "\n")
    print(f"\n4. saved attention.png/.txt (layer {layer}, {len(ids)} tokens), tokenizer/ and report.json in {args.out_dir} "
          f"({report['seconds']:.0f} s in all)")
    return report


if __name__ == "__main__":
    main()
