"""Benchmark: Word2Vec training speed in words per second (Happy LLM 1.4.3).

Same corpus (built-in world stories, lowercased words, Chinese as characters), same settings
(dim, window, 5 negatives, subsampling 1e-3, one epoch) for every contender:

  minillm Numba kernel   the word2vec.c loop, one thread (minillm/kernels/_word2vec.py)
  minillm NumPy twin     the same loop in plain NumPy (reference_word2vec.py), on a slice
  minillm engine         autograd, 256 examples per SGD step, on a slice
  gensim                 when installed, with 1 and 2 worker threads (optional contender)

words/s counts corpus words (before subsampling) per second of training, as gensim reports
its "effective words" differently; the same definition for all. Plan building (subsampling,
windows, negatives; done once in NumPy for every minillm trainer) is timed separately.

    python benchmarks/word2vec.py                  # 20 000 documents
    python benchmarks/word2vec.py --docs 2000 --json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import minillm as mi  # noqa: E402
from minillm.classic import word2vec as w2v  # noqa: E402
from minillm.classic.vectors import default_tokenize  # noqa: E402
from minillm.data import generate_stories  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=20_000, help="world documents in the corpus")
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--window", type=int, default=5)
    p.add_argument("--sg", type=int, default=1, choices=[0, 1], help="1 skip-gram, 0 CBOW")
    p.add_argument("--slice", type=int, default=200, help="documents for the slow contenders")
    p.add_argument("--no-gensim", action="store_true")
    p.add_argument("--json", action="store_true", help="print machine-readable results")
    args = p.parse_args(argv)

    sents = [default_tokenize(line) for doc in generate_stories(args.docs, seed=0) for line in doc.split("\n")]
    sents = [s for s in sents if len(s) > 1]
    n_words = sum(len(s) for s in sents)
    cfg = w2v.Word2VecConfig(sg=args.sg, dim=args.dim, window=args.window, negative=5, sample=1e-3, epochs=1,
                             min_count=1, seed=0)
    results = []

    def add(name, words, seconds, note=""):
        results.append({"impl": name, "words": words, "seconds": seconds, "words_per_sec": words / seconds, "note": note})

    w2v.train(sents[:5], cfg)  # compile (or load the cached) kernel outside the timing
    t = time.perf_counter()
    vocab, plan = w2v._prepare(sents, cfg)
    t_plan = time.perf_counter() - t
    m = w2v.train(sents, cfg)
    add("minillm Numba kernel", n_words, m.stats["seconds"], f"+ {t_plan:.2f} s to build the plan")
    small = sents[: args.slice]
    small_words = sum(len(s) for s in small)
    mi.set_kernels("numpy")
    try:
        r = w2v.train(small, cfg)
    finally:
        mi.set_kernels("numba")
    add("minillm NumPy twin", small_words, r.stats["seconds"], f"{args.slice} documents")
    a = w2v.train_autograd(small, cfg, batch_size=256, dtype=np.float32)
    add("minillm engine, batch 256", small_words, a.stats["seconds"], f"{args.slice} documents")
    if not args.no_gensim:
        try:
            from gensim.models import Word2Vec as GensimW2V
        except ImportError:
            GensimW2V = None
        if GensimW2V is not None:
            for workers in (1, 2):
                t = time.perf_counter()
                GensimW2V(sents, vector_size=args.dim, window=args.window, negative=5, sample=1e-3, min_count=1,
                          sg=args.sg, epochs=1, workers=workers, seed=0)
                add(f"gensim, {workers} worker(s)", n_words, time.perf_counter() - t, "includes its vocabulary scan")
    out = {"corpus_words": n_words, "vocab": len(vocab), "examples": len(plan.lr), "sg": args.sg, "dim": args.dim,
           "window": args.window, "results": results}
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"corpus: {n_words:,} words, vocabulary {len(vocab):,}, {len(plan.lr):,} training examples "
          f"({'skip-gram' if args.sg else 'CBOW'}, dim {args.dim}, window {args.window}, 5 negatives)")
    print(f"{'contender':<28} {'words/s':>12}  note")
    for r in results:
        print(f"{r['impl']:<28} {r['words_per_sec']:>12,.0f}  {r['note']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
