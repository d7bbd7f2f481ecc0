"""Train a tiny T5 on your CPU: span-corruption pretraining, then multi-task fine-tuning with
task prefixes, then held-out exact match per task (Happy LLM 3.2.1).

    python examples/train_t5.py            # the default run (see docs/chapter3.md for its time and numbers)
    python examples/train_t5.py --quick    # a smoke run of seconds
    python examples/train_t5.py --finetune-steps 200 600   # several fine-tuning budgets, one pretraining

Steps:
  1. the built-in world corpus, and a Unigram LM tokenizer (SentencePiece's algorithm, the one
     T5 uses; ``minillm.tokenizers.UnigramTokenizer``) whose special tokens are T5's:
     <pad> = 0 (also the decoder's start token), </s> = 1, <unk> = 2, <extra_id_0..31>;
  2. span-corruption pretraining of ``minillm.models.t5.T5ForConditionalGeneration`` on the
     pretraining texts, packed end to end into 128-token pieces as T5's pipeline does
     (``minillm.data.t5_tasks``: ``pack_documents``, ``span_corruption``: 15 % noise, mean span 3);
  3. multi-task fine-tuning on prefixed world tasks, all mixed in one stream
     ("question: … context: …", "translate English to Chinese: …", "translate Chinese to English: …",
     "calculate: …") -- one model, one loss, the task named in the input -- for each budget in
     ``--finetune-steps``, from the pretrained weights and (the control) from the same random
     init without pretraining (``--no-pretrain-baseline`` skips the control);
  4. greedy decoding (KV cache) on held-out examples: exact match per task with its standard
     error, and each run's fine-tuning validation loss.

The default budget (3000 span-corruption steps, then 600 fine-tuning steps) is the shortest
at which pretraining showed in exact match, not only in the fine-tuning loss: with 1500
pretraining steps the two arms tie on exact match (docs/chapter3.md 3.2.1). The example prints
the gain paired on the same held-out examples.
"""
import json
import os
import sys
import time
from functools import partial

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import minillm as mi  # noqa: E402
from minillm import pipeline  # noqa: E402
from minillm._files import atomic_write  # noqa: E402
from minillm.data import DataLoader, read_pretrain_texts  # noqa: E402
from minillm.data.t5_tasks import (  # noqa: E402
    TASKS, Seq2SeqDataset, SpanCorruptionDataset, collate_seq2seq, pack_documents, sentinel_tokens, world_tasks,
)
from minillm.eval import exact_match, paired_difference  # noqa: E402
from minillm.io import save_model  # noqa: E402
from minillm.models.t5 import PRESETS, T5Config, T5ForConditionalGeneration, greedy_generate  # noqa: E402
from minillm.tokenizers import UnigramTokenizer  # noqa: E402
from minillm.train import Trainer, TrainConfig  # noqa: E402

DEFAULTS = dict(n_stories=30_000, vocab_size=1024, tokenizer_docs=10_000, pretrain_docs=30_000, pretrain_len=128, pretrain_steps=3000,
                finetune_examples=6000, finetune_steps=(600,), batch_size=16, lr=1e-3, pretrain_lr=1e-3, n_eval=400)
QUICK = dict(n_stories=2_000, vocab_size=700, tokenizer_docs=1_000, pretrain_docs=300, pretrain_len=64, pretrain_steps=20,
             finetune_examples=400, finetune_steps=(20,), batch_size=8, lr=1e-3, pretrain_lr=1e-3, n_eval=24)
SPECIALS = ("<pad>", "</s>", "<unk>", *sentinel_tokens(32))


def parse_args(argv=None):
    p = pipeline.example_parser(__doc__, out_dir="runs/tiny_t5", quick_help="a ~1 minute smoke run")
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    pipeline.add_setting_flags(p, DEFAULTS, skip=["finetune_steps"])  # --n-stories, --vocab-size, ...
    # several budgets: each fine-tunes the same pretrained weights and a fresh init
    p.add_argument("--finetune-steps", type=int, nargs="+", default=None)
    p.add_argument("--no-pretrain-baseline", action="store_true", help="skip fine-tuning from random weights")
    args = p.parse_args(argv)
    return pipeline.apply_defaults(args, QUICK if args.quick else DEFAULTS)


def seq2seq_forward(model, batch):
    return model(batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])


def train(model, dataset, steps, lr, args, out_dir, pad_id):
    n_val = max(args.batch_size, len(dataset) // 20)
    val = [dataset[i] for i in range(n_val)]
    train_items = [dataset[i] for i in range(n_val, len(dataset))]
    collate = partial(collate_seq2seq, pad_id=pad_id)
    cfg = TrainConfig(out_dir=out_dir, max_steps=steps, lr=lr, min_lr=lr / 10, warmup_steps=max(1, steps // 20),
                      eval_interval=max(1, steps // 3), eval_batches=4, checkpoint_interval=0, keep_last=1, seed=args.seed,
                      progress=not args.no_progress)
    trainer = Trainer(model, None, DataLoader(train_items, args.batch_size, shuffle=True, seed=args.seed, collate_fn=collate),
                      DataLoader(val, args.batch_size, shuffle=False, collate_fn=collate), cfg, forward_fn=seq2seq_forward)
    trainer.train()
    return trainer


def evaluate(model, tok, examples, max_new_tokens=16, batch_size=32):
    """Greedy answers to held-out examples -> ({task: (exact match, n)} per task and "all",
    the answers, each example's 0/1 hit for paired comparisons)."""
    preds = []
    for i in range(0, len(examples), batch_size):
        chunk = examples[i : i + batch_size]
        batch = collate_seq2seq([(tok.encode(e["source"]) + [1], [1]) for e in chunk], pad_id=0)
        outs = greedy_generate(model, batch["input_ids"], batch["attention_mask"], max_new_tokens)
        preds += [tok.decode(o, skip_special_tokens=True).strip() for o in outs]
    hits = [float(exact_match(p, e["target"])) for p, e in zip(preds, examples)]
    res = {}
    for task in (*TASKS, "all"):
        mine = [h for h, e in zip(hits, examples) if task in ("all", e["task"])]
        res[task] = (sum(mine) / len(mine) if mine else float("nan"), len(mine))
    return res, preds, hits


def paired_gains(hits, examples, budgets):
    """Pretrained minus control exact match on the SAME held-out examples, per task, with the
    paired standard error (much smaller than the two arms' separate errors), and how many
    examples each arm alone got right. Printed and returned as {"<steps>": {task: {...}}}."""
    out = {}
    for steps in budgets:
        pre, ctl = hits.get(("span corruption + fine-tuning", steps)), hits.get(("fine-tuning only (random init)", steps))
        if pre is None or ctl is None:
            continue
        print(f"\npaired on the same examples, {steps} fine-tuning steps: pretrained - control exact match")
        out[str(steps)] = {}
        for task in (*TASKS, "all"):
            idx = [i for i, e in enumerate(examples) if task in ("all", e["task"])]
            if len(idx) < 2:
                continue
            a, b = [pre[i] for i in idx], [ctl[i] for i in idx]
            d, se = paired_difference(a, b)
            won, lost = sum(x > y for x, y in zip(a, b)), sum(x < y for x, y in zip(a, b))
            print(f"  {task:>6}: {100 * d:+.1f} ± {100 * se:.1f} points (n={len(idx)}; only pretrained right {won}, "
                  f"only control right {lost})")
            out[str(steps)][task] = {"gain": d, "se": se, "n": len(idx), "only_pretrained": won, "only_control": lost}
    return out


def main(argv=None):
    args = parse_args(argv)
    mi.manual_seed(args.seed)
    os.makedirs(args.out_dir, exist_ok=True)
    t0 = time.time()
    report = {"args": vars(args)}

    print("\n=== 1. corpus and T5 tokenizer ===", flush=True)
    paths = pipeline.prepare_corpus(os.path.join(args.out_dir, "data"), n_stories=args.n_stories, n_sft=100, seed=args.seed)
    texts = list(read_pretrain_texts(paths["pretrain_train"]))
    tok, secs = pipeline.timed(UnigramTokenizer.train, texts[: args.tokenizer_docs], args.vocab_size, special_tokens=SPECIALS)
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2), "T5's special ids"
    sentinels = [tok.token_to_id(s) for s in sentinel_tokens(32)]
    print(f"Unigram vocab size {tok.vocab_size} (35 special, 256 byte pieces) trained on {args.tokenizer_docs} texts in "
          f"{secs:.1f}s; <pad>=0 </s>=1 <unk>=2 <extra_id_0>={sentinels[0]}")
    print("  " + " | ".join(tok.id_to_token(i) for i in tok.encode(texts[0][:60])))

    config = T5Config.preset(args.preset, vocab_size=tok.vocab_size, dropout_rate=0.0)
    ft_train = world_tasks(args.finetune_examples, "train", seed=args.seed)
    ft_eval = world_tasks(args.n_eval, "val", seed=args.seed)

    print(f"\n=== 2. span-corruption pretraining ({args.pretrain_steps} steps, lr {args.pretrain_lr:g}) ===", flush=True)
    model = T5ForConditionalGeneration(config)
    print(f"{model.num_parameters():,} parameters")
    # documents packed end to end into pieces of pretrain_len tokens, as T5's pipeline does:
    # the world's documents average ~48 tokens, so unpacked each would carry only ~7 noise tokens
    docs = pack_documents([tok.encode(t) for t in texts[: args.pretrain_docs]], args.pretrain_len, eos_id=1)
    sc = SpanCorruptionDataset(docs, sentinels, eos_id=1, max_len=args.pretrain_len, seed=args.seed)
    src, tgt = sc[0]
    print(f"{len(docs)} packed pieces of {args.pretrain_len} tokens from {min(args.pretrain_docs, len(texts))} documents")
    print("  inputs :", tok.decode(src)[:150].replace("\n", " "))
    print("  targets:", tok.decode(tgt)[:150].replace("\n", " "))
    tr = train(model, sc, args.pretrain_steps, args.pretrain_lr, args, os.path.join(args.out_dir, "pretrain"), 0)
    report["span_corruption_val_loss"] = tr.evaluate()["val_loss"]
    print(f"span-corruption validation loss {report['span_corruption_val_loss']:.3f}")
    pretrained = {k: v.numpy().copy() for k, v in model.state_dict().items()}

    ds = Seq2SeqDataset(ft_train, tok, eos_id=1, max_len=192)
    rows, losses, hits = {}, {}, {}
    for steps in args.finetune_steps:
        starts = [("span corruption + fine-tuning", pretrained)]
        if not args.no_pretrain_baseline:
            starts.append(("fine-tuning only (random init)", None))
        for name, state in starts:
            print(f"\n=== 3. multi-task fine-tuning, {steps} steps, lr {args.lr:g}: {name} ===", flush=True)
            mi.manual_seed(args.seed)  # the same random init for the baseline whatever ran before
            model = T5ForConditionalGeneration(config)
            if state is not None:
                model.load_state_dict(state)
            kind = "finetune" if state is not None else "baseline"
            ft = train(model, ds, steps, args.lr, args, os.path.join(args.out_dir, f"{kind}_{steps}"), 0)
            losses[(name, steps)] = ft.evaluate()["val_loss"]
            rows[(name, steps)], preds, hits[(name, steps)] = evaluate(model, tok, ft_eval)
            for e, p, h in list(zip(ft_eval, preds, hits[(name, steps)]))[:4]:
                print(f"  {'✓' if h else '✗'} {e['source'][:70]!r} -> {p!r} (reference {e['target']!r})")
            if state is not None and steps == args.finetune_steps[-1]:
                save_model(model, os.path.join(args.out_dir, "model"))  # the pretrained + longest fine-tuned model

    print(f"\n=== 4. held-out exact match per task ± standard error sqrt(p(1-p)/n); fine-tuning validation loss ===")
    print("\n| model | fine-tuning steps | " + " | ".join(TASKS) + " | all | val loss |\n|---|---:|" + "---:|" * (len(TASKS) + 2))
    for (name, steps), r in rows.items():
        cells = [f"{100 * r[t][0]:.1f} ± {100 * (r[t][0] * (1 - r[t][0]) / max(1, r[t][1])) ** 0.5:.1f} % (n={r[t][1]})"
                 for t in (*TASKS, "all")]
        print(f"| {name} | {steps} | " + " | ".join(cells) + f" | {losses[(name, steps)]:.3f} |")
    report["paired_gain"] = paired_gains(hits, ft_eval, args.finetune_steps)
    report["exact_match"] = {f"{name}|{steps}": {t: v[0] for t, v in r.items()} for (name, steps), r in rows.items()}
    report["n_eval"] = {t: v[1] for t, v in next(iter(rows.values())).items()}
    report["finetune_val_loss"] = {f"{name}|{steps}": v for (name, steps), v in losses.items()}
    tok.save(os.path.join(args.out_dir, "tokenizer"))
    atomic_write(os.path.join(args.out_dir, "metrics.json"), json.dumps(report, indent=2, ensure_ascii=False))
    print(f"\nsaved to {args.out_dir} in {time.time() - t0:.0f}s")
    return report


if __name__ == "__main__":
    main()
