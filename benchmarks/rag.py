"""RAG speed (Happy LLM 7.2): indexing throughput and query latency of the retrievers in minillm.rag.

    python benchmarks/rag.py                    # 10k and 100k chunks
    python benchmarks/rag.py --sizes 2000 --json

Measured, side by side in one process:
  * BM25 index build (chunks/s) and query latency: minillm's CSR BM25 vs rank_bm25.BM25Okapi (when
    installed; it scores a query with a Python loop over the query terms and NumPy over documents);
  * exact cosine search in VectorStore (matrix product + argpartition) on random unit vectors, 128-d;
  * the optional approximate index (``VectorStore.build_ann``: faiss HNSW, when ``faiss-cpu`` is
    installed): build time, query latency and recall@10 against the exact search's top 10;
  * the bi-encoder's embedding throughput (chunks/s, untrained weights: the speed does not depend on them).

Chunks are world stories (``minillm.rag.world_kb``), so the BM25 statistics are those of the example's
knowledge base, only larger. Random vectors are the hard case for HNSW (no cluster structure), so the
recall here is a lower bound for real embeddings. faiss runs on one OpenMP thread (``--ann-threads``),
like the rest of the benchmark.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from minillm.data.world import generate_stories, WorldConfig  # noqa: E402
from minillm.rag import BM25, VectorStore, bm25_tokenize  # noqa: E402
from minillm.rag.chunking import Chunk  # noqa: E402


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help="chunks in the index")
    p.add_argument("--queries", type=int, default=20, help="queries timed per size")
    p.add_argument("--dim", type=int, default=128, help="embedding dimension for the vector search")
    p.add_argument("--encode", type=int, default=512, help="chunks embedded to time the bi-encoder (0: skip)")
    p.add_argument("--ann-M", type=int, default=32, help="HNSW neighbours per node")
    p.add_argument("--ann-ef-search", type=int, nargs="+", default=[64, 256, 1024],
                   help="HNSW candidate-list lengths while searching (one graph, searched with each)")
    p.add_argument("--ann-threads", type=int, default=1, help="faiss OpenMP threads")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args(argv)
    try:
        import rank_bm25
    except ImportError:
        rank_bm25 = None
    try:
        import faiss
        faiss.omp_set_num_threads(args.ann_threads)
    except ImportError:
        faiss = None  # the ANN row is skipped
    rng = np.random.default_rng(0)
    texts = generate_stories(max(args.sizes), config=WorldConfig(langs=("en",), doc_mix={"story": 1.0}))
    queries = ["On the day Tom saw a panda, where did Tom go?", "Who did Amy give the umbrella to?",
               "What did Jack buy at the market?", "Lily found a red key"] * (args.queries // 4 + 1)
    queries = queries[:args.queries]
    rows = []
    for n in args.sizes:
        toks = [bm25_tokenize(t) for t in texts[:n]]
        t = time.perf_counter()
        ours = BM25(toks)
        build = time.perf_counter() - t
        qt = [bm25_tokenize(q) for q in queries]
        q_ours = best_of(lambda: [ours.top_k(q, 10) for q in qt], 3) / len(qt)
        row = {"chunks": n, "bm25_build_chunks_per_s": n / build, "bm25_query_ms": 1e3 * q_ours}
        if rank_bm25 is not None:
            t = time.perf_counter()
            theirs = rank_bm25.BM25Okapi(toks)
            row["rank_bm25_build_chunks_per_s"] = n / (time.perf_counter() - t)
            row["rank_bm25_query_ms"] = 1e3 * best_of(lambda: [np.argsort(-theirs.get_scores(q))[:10] for q in qt], 1) / len(qt)
            row["bm25_same_scores"] = bool(np.allclose(ours.get_scores(qt[0]), theirs.get_scores(qt[0])))
        store = VectorStore()
        v = rng.standard_normal((n, args.dim)).astype(np.float32)
        store.add([Chunk("", "", 0, 0)] * n, v)
        qv = rng.standard_normal((len(queries), args.dim)).astype(np.float32)
        row["exact_search_ms"] = 1e3 * best_of(lambda: [store.search(q, 10) for q in qv], 3) / len(qv)
        if faiss is not None:
            exact = [set(store.search(q, 10)[0].tolist()) for q in qv]
            t = time.perf_counter()
            store.build_ann(M=args.ann_M, ef_search=args.ann_ef_search[0])
            row["ann_build_s"] = time.perf_counter() - t
            row["ann"] = []
            for ef in args.ann_ef_search:
                store.ann["ef_search"] = ef  # read by every search; the graph stays the same
                ms = 1e3 * best_of(lambda: [store.search(q, 10) for q in qv], 3) / len(qv)
                recall = np.mean([len(e & set(store.search(q, 10)[0].tolist())) / 10 for e, q in zip(exact, qv)])
                row["ann"].append({"ef_search": ef, "search_ms": ms, "recall_at_10": float(recall)})
        rows.append(row)
    enc_row = None
    if args.encode:
        from minillm.models.bert import BertConfig
        from minillm.rag import BiEncoder
        from minillm.tokenizers import BPETokenizer

        tok = BPETokenizer.train(texts[:2000], vocab_size=1024, show_progress=False)
        enc = BiEncoder(BertConfig(vocab_size=tok.vocab_size, hidden_size=args.dim, num_hidden_layers=2,
                                   num_attention_heads=max(1, args.dim // 32), max_position_embeddings=160,
                                   pad_token_id=tok.pad_token_id), tok)
        enc.encode(texts[:64])  # warm-up (Numba kernels)
        secs = best_of(lambda: enc.encode(texts[:args.encode]), 1)
        enc_row = {"chunks": args.encode, "encode_chunks_per_s": args.encode / secs, "dim": args.dim}
    result = {"results": rows, "encoder": enc_row, "load_average": os.getloadavg()[0]}
    if args.json:
        print(json.dumps(result, indent=1))
        return result
    print(f"load average {result['load_average']:.1f}")
    head = f"{'chunks':>8} {'BM25 build/s':>13} {'BM25 query':>11} {'rank_bm25 build/s':>18} {'rank_bm25 query':>16} {'exact cosine':>13}"
    head += f" {'HNSW build':>11}"
    print(head)
    for r in rows:
        rb = f"{r['rank_bm25_build_chunks_per_s']:>18,.0f} {r['rank_bm25_query_ms']:>13.2f} ms" if "rank_bm25_query_ms" in r else f"{'-':>18} {'-':>16}"
        print(f"{r['chunks']:>8,} {r['bm25_build_chunks_per_s']:>13,.0f} {r['bm25_query_ms']:>8.2f} ms {rb} "
              f"{r['exact_search_ms']:>10.2f} ms", end="")
        if "ann" in r:
            print(f" {r['ann_build_s']:>9.2f} s")
            for a in r["ann"]:
                print(f"{'':>8}   HNSW (M={args.ann_M}) ef_search={a['ef_search']:<5} query {a['search_ms']:>7.3f} ms"
                      f"   recall@10 vs exact {a['recall_at_10']:.3f}")
        else:
            print(f" {'- (pip install faiss-cpu)':>26}")
    if enc_row:
        print(f"bi-encoder ({args.dim}-d, 2 layers): {enc_row['encode_chunks_per_s']:.0f} chunks/s")
    return result


if __name__ == "__main__":
    main()
