"""TinyRAG, fully local (Happy LLM 7.2): index unseen documents, retrieve, answer, and measure the gain.

    python examples/rag.py            # the default run (a few minutes on 2 idle cores)
    python examples/rag.py --quick    # a smoke run in seconds (numbers meaningless)
    python examples/rag.py --reader-init runs/tiny_llama/model --seed 2   # a strong reader (see below)

The default reader is pretrained and fine-tuned here in minutes, too briefly to read well. A
stronger one starts from a chat model trained earlier: `python examples/train_tiny_llama.py
--seed 2` writes runs/tiny_llama/model, whose SFT already answers questions about a story in its
prompt. `--reader-init DIR` fine-tunes it (--sft-steps) on retrieved-passage prompts; its
tokenizer is then used everywhere. Pass the --seed that model was trained with: the knowledge
base is that world's *val* split, which its training data never contains.

Steps:
  1. a knowledge base of world stories no model here saw in training (the val split), written as
     Markdown diaries, .txt notes and a .jsonl file, plus one broken file the loader must skip
  2. read + chunk + BM25-index the folder in one call (BM25Retriever.from_folder)
  3. a BPE tokenizer, then a BERT bi-encoder trained with InfoNCE on questions about *train* stories;
     the chunks embedded into a VectorStore, persisted (safetensors + JSON) and loaded back
  4. retrieval recall@1/5 and MRR: BM25, dense and hybrid (RRF), on questions and on paraphrases
  5. a tiny LLaMA reader: pretrained on world stories (or --reader-init DIR), fine-tuned to answer
     from numbered passages and cite one (or say "I don't know.")
  6. answer exact match: closed book, BM25-, dense- and hybrid-RAG with the top 1 and top --k chunks,
     and the oracle passage
"""
import dataclasses
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

import minillm as mi  # noqa: E402
from minillm import pipeline  # noqa: E402
from minillm.pipeline import banner  # noqa: E402
from minillm._files import atomic_write  # noqa: E402
from minillm.data.world import WorldConfig  # noqa: E402
from minillm.eval import exact_match, mean_reciprocal_rank, recall_at_k  # noqa: E402
from minillm.models.bert import BertConfig  # noqa: E402
from minillm.models.llama import ModelConfig, Transformer  # noqa: E402
from minillm.rag import (BiEncoder, BM25Retriever, DenseRetriever, HybridRetriever, VectorStore,  # noqa: E402
                         answer_questions, build_prompt, parse_answer, train_bi_encoder)
from minillm.rag.world_kb import (kb_questions, kb_stories, rag_sft_records, retriever_pairs,  # noqa: E402
                                  write_knowledge_base)
from minillm.tokenizers import load_tokenizer  # noqa: E402
from minillm.train import TrainConfig, check_out_dir  # noqa: E402

DEFAULTS = dict(kb_stories=300, n_corpus=8000, vocab_size=1024, enc_stories=3000, enc_steps=500, enc_batch=32,
                enc_dim=128, pretrain_steps=600, sft_steps=900, sft_records=8000, questions=200, k=3)
READER_INIT_SFT_STEPS = 300  # a chat model that already reads a story needs only the new format
QUICK = dict(kb_stories=40, n_corpus=600, vocab_size=400, enc_stories=100, enc_steps=8, enc_batch=16,
             enc_dim=32, pretrain_steps=6, sft_steps=6, sft_records=64, questions=12, k=3)


def parse_args(argv=None):
    p = pipeline.example_parser(__doc__, out_dir="runs/rag", overwrite_help="replace an earlier run in --out-dir")
    pipeline.add_setting_flags(p, DEFAULTS)  # --kb-stories, --n-corpus, ...
    p.add_argument("--encoder", default=None, metavar="DIR",
                   help="reuse a bi-encoder saved by an earlier run (OUT/encoder) instead of training one")
    p.add_argument("--reader-init", "--reader", dest="reader_init", default=None, metavar="DIR",
                   help="start the reader from a saved chat model instead of pretraining one, e.g. "
                   "runs/tiny_llama/model (written by examples/train_tiny_llama.py) or OUT/reader of an earlier "
                   "run; then --sft-steps of RAG fine-tuning (default %d). Its tokenizer is used everywhere. "
                   "Pass the --seed it was trained with, so the knowledge base is data it never saw"
                   % READER_INIT_SFT_STEPS)
    args = p.parse_args(argv)
    defaults = dict(QUICK if args.quick else DEFAULTS)
    if args.reader_init and not args.quick:
        defaults["sft_steps"] = READER_INIT_SFT_STEPS
    return pipeline.apply_defaults(args, defaults)


MAX_LEN = 384  # tokens: a question and 3 passages of about 50 tokens fit with room to spare


def load_reader(directory, max_seq_len):
    """A saved chat model and its tokenizer; the RoPE table grown to ``max_seq_len`` if shorter
    (it is computed, not learned, so the weights are unchanged; positions past the old limit were
    never trained, which the RAG fine-tuning then sees)."""
    model, tok = mi.io.load_model(directory), load_tokenizer(directory)
    if getattr(model.args, "max_seq_len", max_seq_len) < max_seq_len:
        longer = type(model)(dataclasses.replace(model.args, max_seq_len=max_seq_len))
        longer.load_state_dict(model.state_dict(), strict=True)
        model = longer
    return model, tok


def story_of_chunks(store, texts):
    """chunk position -> index of the story it holds (-1: none, e.g. a heading)."""
    where = {t: i for i, t in enumerate(texts)}
    out = []
    for c in store.document:
        hits = [i for t, i in where.items() if t in c.text]
        out.append(hits[0] if len(hits) == 1 else -1)
    return np.array(out)


def retrieval_table(retrievers, question_sets, chunk_story, k_max=5):
    rows = {}
    for set_name, qs in question_sets.items():
        for name, r in retrievers.items():
            ranks = [[int(chunk_story[i]) for i in r.rank(q["question"], k_max)[0]] for q in qs]
            rel = [q["relevant"] for q in qs]
            rows[(set_name, name)] = {"recall@1": recall_at_k(ranks, rel, 1), "recall@5": recall_at_k(ranks, rel, 5),
                                      "mrr": mean_reciprocal_rank(ranks, rel)}
    return rows


def main(argv=None):
    args = parse_args(argv)
    mi.tune_malloc()
    mi.manual_seed(args.seed)
    out = args.out_dir
    for d in (out, os.path.join(out, "pretrain"), os.path.join(out, "sft")):
        check_out_dir(d, overwrite=args.overwrite)
    os.makedirs(out, exist_ok=True)
    show = not args.no_progress
    t0 = time.time()
    report = {"args": vars(args)}

    banner("1. knowledge base (val-split stories: never in any training data here)")
    stories = kb_stories(args.kb_stories, args.seed)
    kb_dir = os.path.join(out, "kb")
    texts = write_knowledge_base(stories, kb_dir, seed=args.seed)
    n_q = args.questions
    question_sets = {"questions": kb_questions(stories, args.seed)[:n_q],
                     "paraphrases": kb_questions(stories, args.seed, paraphrase=True)[:n_q]}
    print(f"{len(stories)} stories in {kb_dir}; e.g.\n  {texts[0]}")
    for name, qs in question_sets.items():
        print(f"  {name:>11}: {qs[0]['question']!r} -> {qs[0]['answer']!r}")

    banner("2. read, chunk and BM25-index the folder (BM25Retriever.from_folder)")
    t = time.time()
    bm25 = BM25Retriever.from_folder(kb_dir, max_tokens=128, overlap=16)
    print(f"{len(bm25.store)} chunks in {time.time() - t:.2f}s; skipped: {bm25.errors}")
    chunk_story = story_of_chunks(bm25.store, texts)

    banner("3. tokenizer and dense bi-encoder (BERT + mean pooling, InfoNCE with in-batch negatives)")
    if args.reader_init:  # one tokenizer for the encoder and the reader: the reader's
        model, tok = load_reader(args.reader_init, max_seq_len=MAX_LEN)
        print(f"the tokenizer of {args.reader_init} (vocab {tok.vocab_size})")
    else:
        paths = pipeline.prepare_corpus(os.path.join(out, "data"), n_stories=args.n_corpus, n_sft=64, seed=args.seed)
        tok = pipeline.train_tokenizer(paths["pretrain_train"], args.vocab_size, os.path.join(out, "tokenizer"),
                                       show_progress=show)
    heads = max(1, args.enc_dim // 32)
    enc = BiEncoder(BertConfig(vocab_size=tok.vocab_size, hidden_size=args.enc_dim, num_hidden_layers=2,
                               num_attention_heads=heads, max_position_embeddings=160, hidden_dropout_prob=0.0,
                               attention_probs_dropout_prob=0.0, pad_token_id=tok.pad_token_id), tok)
    t = time.time()
    if args.encoder:
        enc = BiEncoder.load(args.encoder)
        print(f"loaded the bi-encoder of {args.encoder}")
    else:
        pairs, group = retriever_pairs(args.enc_stories, args.seed)
        print(f"{len(pairs)} (question, passage) pairs from {args.enc_stories} train stories; "
              f"{args.enc_steps} steps of {args.enc_batch}")
        losses = train_bi_encoder(enc, pairs, args.enc_steps, batch_size=args.enc_batch, lr=2e-3, group_of=group,
                                  seed=args.seed, log_every=100)
        print(f"InfoNCE {np.mean(losses[:5]):.3f} -> {np.mean(losses[-5:]):.3f} in {time.time() - t:.0f}s "
              f"(chance: ln {args.enc_batch} = {np.log(args.enc_batch):.2f})")
    enc_secs = time.time() - t
    if os.path.abspath(args.encoder or "") != os.path.abspath(os.path.join(out, "encoder")):
        enc.save(os.path.join(out, "encoder"))
    store = VectorStore(bm25.store.document)
    t = time.time()
    store.get_vector(enc)
    print(f"embedded {len(store)} chunks in {time.time() - t:.1f}s ({len(store) / (time.time() - t):.0f} chunks/s)")
    store.persist(os.path.join(out, "store"))
    store = VectorStore.load_vector(os.path.join(out, "store"), EmbeddingModel=enc)  # the round trip the CLI uses
    dense = DenseRetriever(store, enc)
    retrievers = {"BM25": bm25, "dense": dense, "hybrid": HybridRetriever([bm25, dense])}

    banner("4. retrieval")
    rows = retrieval_table(retrievers, question_sets, chunk_story)
    print(f"{'questions':>12} {'retriever':>9} {'recall@1':>9} {'recall@5':>9} {'MRR':>6}")
    for (s, r), m in rows.items():
        print(f"{s:>12} {r:>9} {m['recall@1']:9.3f} {m['recall@5']:9.3f} {m['mrr']:6.3f}")
    report["retrieval"] = {f"{s}/{r}": m for (s, r), m in rows.items()}

    banner("5. the reader: a tiny LLaMA, fine-tuned to answer from numbered passages and cite one")
    if args.reader_init:
        print(f"starting from the chat model {args.reader_init} (no pretraining)")
    else:
        print("pretraining a tiny LLaMA on world stories first")
        model = Transformer(ModelConfig.preset("tiny", vocab_size=tok.vocab_size, max_seq_len=MAX_LEN))
        pre_cfg = TrainConfig(out_dir=os.path.join(out, "pretrain"), max_steps=args.pretrain_steps, lr=3e-3,
                              min_lr=3e-4, warmup_steps=min(100, args.pretrain_steps // 5), eval_interval=0,
                              checkpoint_interval=0, progress=show, plot=False, overwrite=args.overwrite, seed=args.seed)
        pipeline.pretrain(model, tok, paths, pre_cfg, block_size=256, batch_size=8, prompts=())
    sft_paths = {"sft_train": os.path.join(out, "rag_sft_train.jsonl"), "sft_val": os.path.join(out, "rag_sft_val.jsonl")}
    purpose = "rag-reader-continued" if args.reader_init else "rag-reader"  # a continued reader sees new examples
    for key, recs in (("sft_train", rag_sft_records(args.sft_records, args.seed, n_passages=args.k, purpose=purpose)),
                      ("sft_val", rag_sft_records(32, args.seed, n_passages=args.k, split="val"))):
        atomic_write(sft_paths[key], "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs))
    sft_lr = 1e-3 if args.reader_init else 2e-3
    if args.sft_steps > 0:
        sft_cfg = TrainConfig(out_dir=os.path.join(out, "sft"), max_steps=args.sft_steps, lr=sft_lr, min_lr=sft_lr / 10,
                              warmup_steps=min(50, args.sft_steps // 5), eval_interval=0, checkpoint_interval=0,
                              progress=show, plot=False, overwrite=args.overwrite, seed=args.seed)
        pipeline.sft(model, tok, sft_paths, sft_cfg, max_length=MAX_LEN, batch_size=8)
    else:
        print("--sft-steps 0: the reader is evaluated as loaded")
    mi.io.save_model(model, os.path.join(out, "reader"))
    tok.save(os.path.join(out, "reader"))

    banner("6. answers: exact match with and without retrieval")
    qs = question_sets["questions"]
    conditions = {"closed book": (None, 0)}
    for k in sorted({1, args.k}):  # top 1 and top k: a small reader reads one passage better than three
        conditions.update({f"{n}-RAG top {k}": (r, k) for n, r in retrievers.items()})
    conditions["oracle passage"] = ("oracle", 1)
    answers = {}
    for name, (r, k) in conditions.items():
        if r is None:
            prompts, shown = [q["question"] for q in qs], [[] for _ in qs]
        elif r == "oracle":
            shown = [[int(np.flatnonzero(chunk_story == q["story"])[0])] for q in qs]
            prompts = [build_prompt(q["question"], [store.document[i].text for i in s]) for q, s in zip(qs, shown)]
        else:
            shown = [list(r.rank(q["question"], k)[0]) for q in qs]
            prompts = [build_prompt(q["question"], [store.document[i].text for i in s]) for q, s in zip(qs, shown)]
        t = time.time()
        replies = answer_questions(model, tok, prompts)
        parsed = [parse_answer(x) for x in replies]
        em = np.mean([exact_match(a, q["answer"]) for (a, _), q in zip(parsed, qs)])
        cite = np.mean([bool(c) and 1 <= c[0] <= len(s) and chunk_story[s[c[0] - 1]] in q["relevant"]
                        for (_, c), s, q in zip(parsed, shown, qs)])
        answers[name] = {"exact_match": float(em), "citation_correct": float(cite), "seconds": time.time() - t,
                         "examples": [{"question": q["question"], "reference": q["answer"], "reply": x}
                                      for q, x in zip(qs[:3], replies[:3])]}
    print(f"{len(qs)} held-out questions; the top 1 or top {args.k} retrieved chunks in the prompt")
    print(f"{'condition':>18} {'exact match':>12} {'cites a right passage':>22}")
    for name, m in answers.items():
        print(f"{name:>18} {m['exact_match']:12.3f} {m['citation_correct']:22.3f}")
    for ex in answers[f"hybrid-RAG top {args.k}"]["examples"]:
        print(f"  {ex['question']!r} -> {ex['reply']!r} (reference {ex['reference']!r})")
    report["answers"] = answers
    report["encoder_seconds"] = enc_secs
    report["seconds"] = time.time() - t0
    atomic_write(os.path.join(out, "report.json"), json.dumps(report, indent=1, ensure_ascii=False, default=str))
    print(f"\ntotal {report['seconds'] / 60:.1f} min; report in {os.path.join(out, 'report.json')}")
    return report


if __name__ == "__main__":
    main()
