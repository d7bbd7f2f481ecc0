"""Happy LLM chapter 1, runnable and measured: the NLP that came before Transformers.

    python examples/classic_nlp.py            # the full chapter (a few minutes on 2 idle cores)
    python examples/classic_nlp.py --quick    # a smoke run in seconds

Sections (each one a module of minillm/classic/):
  1.3.1  Chinese word segmentation: maximum matching, unigram LM (jieba), HMM    segment.py
  1.4.1  bag of words and TF-IDF: which sentence came from which story?          vectors.py
  1.4.2  n-gram LMs on the pretraining corpus vs the tiny LLaMA's perplexity     ngram.py
  1.4.3  Word2Vec: speed (engine, kernel), neighbours, analogies, PCA plot       word2vec.py
  1.4.4  ELMo: a biLSTM LM, and static vs contextual features under a probe      elmo.py

Everything is printed as tables and written to OUT_DIR/report.json (plus word2vec_pca.png).
"""
import argparse
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

import minillm as mi  # noqa: E402
from minillm import pipeline  # noqa: E402
from minillm.pipeline import banner  # noqa: E402
from minillm._files import atomic_write  # noqa: E402
from minillm.classic import segment, vectors  # noqa: E402
from minillm.classic import word2vec as w2v  # noqa: E402
from minillm.plot import PALETTE, scatter_png  # noqa: E402
from minillm.classic.data import TAGS, analogy_questions, segmented_stories, word_categories  # noqa: E402
from minillm.classic.elmo import (  # noqa: E402
    BiLM, ELMoConfig, WordVocab, bilm_perplexity, elmo_layers, train_bilm, train_probe,
)
from minillm.classic.ngram import NGramCounts, NGramLM  # noqa: E402
from minillm.data import WorldConfig, generate_stories, read_pretrain_texts  # noqa: E402
from minillm.data.world import lexicon  # noqa: E402
from minillm.tokenizers import WordTokenizer, load_tokenizer  # noqa: E402

README_LLAMA_PPL = 3.27  # README: the default examples/train_tiny_llama.py run's held-out perplexity

FULL = dict(seg_train=3000, seg_heldout=500, tfidf_docs=2000, tfidf_queries=500, n_stories=30_000, vocab_size=2048,
            max_n=5, w2v_docs=10_000, w2v_epochs=5, w2v_dim=50, bench_docs=300, elmo_train=1500, elmo_steps=400,
            elmo_dim=48, probe_stories=300, probe_steps=200)
QUICK = dict(seg_train=300, seg_heldout=60, tfidf_docs=200, tfidf_queries=60, n_stories=2_000, vocab_size=512,
             max_n=3, w2v_docs=1_500, w2v_epochs=2, w2v_dim=24, bench_docs=20, elmo_train=60, elmo_steps=12,
             elmo_dim=16, probe_stories=30, probe_steps=40)


def table(header, rows):
    """Print a Markdown table (so the output pastes into docs/chapter1.md)."""
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")


# --------------------------------------------------------------------------- 1.3.1
def run_segmentation(cfg):
    banner("1.3.1 Chinese word segmentation (held-out stories with unseen names and objects)")
    train = [w for w, _ in segmented_stories(cfg["seg_train"])]
    held = [w for w, _ in segmented_stories(cfg["seg_heldout"], split="heldout")]
    d = segment.Dictionary.from_segmented(train)
    hmm = segment.HMMSegmenter.train(train)
    texts = ["".join(w) for w in held]
    methods = {
        "forward maximum matching": lambda t: segment.fmm(t, d.counts),
        "backward maximum matching": lambda t: segment.bmm(t, d.counts),
        "bidirectional maximum matching": lambda t: segment.bimm(t, d.counts),
        "unigram LM (DAG + Viterbi)": segment.UnigramSegmenter(d).cut,
        "HMM (B/M/E/S) alone": hmm.cut,
        "unigram LM + HMM for OOV (jieba)": segment.UnigramSegmenter(d, hmm).cut,
    }
    rows, out = [], {}
    for name, cut in methods.items():
        s = segment.score(held, [cut(t) for t in texts], d)
        out[name] = s
        rows.append([name, f"{s['precision']:.3f}", f"{s['recall']:.3f}", f"{s['f1']:.3f}",
                     f"{s['oov_recall']:.3f}", f"{s['iv_recall']:.3f}"])
    n_oov = out[name]["n_oov"]
    print(f"dictionary: {len(d)} words from {len(train)} training stories; held-out: {len(held)} stories, "
          f"{out[name]['n_gold']} words, {n_oov} of them OOV ({100 * n_oov / out[name]['n_gold']:.1f}%)")
    table(["method", "P", "R", "F1", "OOV recall", "IV recall"], rows)
    example = texts[0][:40]
    print("example:", " / ".join(segment.UnigramSegmenter(d, hmm).cut(example)))
    return out, d


# --------------------------------------------------------------------------- 1.4.1
def run_vectors(cfg):
    banner("1.4.1 bag of words and TF-IDF: find the story a sentence came from (top-1 accuracy)")
    docs = generate_stories(cfg["tfidf_docs"], seed=0, config=WorldConfig(doc_mix={"story": 1.0}))
    rng = np.random.default_rng(0)
    picks = rng.choice(len(docs), size=min(cfg["tfidf_queries"], len(docs)), replace=False)
    queries = []
    for i in picks:
        sents = [s for s in docs[i].replace("。", "。\n").replace(". ", ".\n").split("\n") if s.strip()]
        queries.append((int(i), sents[rng.integers(len(sents))]))
    variants = {
        "one-hot presence (binary BoW)": vectors.CountVectorizer(binary=True),
        "bag of words (counts)": vectors.CountVectorizer(),
        "TF-IDF (raw tf, smooth idf, L2)": vectors.TfidfVectorizer(),
        "TF-IDF (sublinear tf, smooth idf, L2)": vectors.TfidfVectorizer(sublinear_tf=True),
    }
    rows, out = [], {}
    for name, vec in variants.items():
        search = vectors.DocumentSearch(docs, vec)
        hits = sum(search.search(q, k=1)[0][0] == i for i, q in queries)
        out[name] = hits / len(queries)
        rows.append([name, f"{100 * out[name]:.1f}%"])
    print(f"{len(docs)} stories (English and Chinese), {len(queries)} one-sentence queries, "
          f"vocabulary {len(search.vectorizer.vocabulary_)}")
    table(["document vectors (cosine similarity)", "top-1 accuracy"], rows)
    return out


# --------------------------------------------------------------------------- 1.4.2
def _stream(tok, texts):
    ids = []
    for t in texts:
        ids += tok.encode(t, allowed_special="none")
        ids.append(tok.eos_token_id)  # EOS after every document, as the LLaMA's token files
    return np.array(ids, dtype=np.int64)


def run_ngram(cfg, out_dir, llama_dir):
    banner("1.4.2 n-gram language models vs the tiny LLaMA (held-out perplexity per BPE token)")
    paths = pipeline.prepare_corpus(os.path.join(out_dir, "data"), n_stories=cfg["n_stories"], n_sft=0 or 10)
    tok_path = os.path.join(llama_dir, "model")
    llama_ppl, llama_src = README_LLAMA_PPL, "README figure (default run), not measured here"
    report_path = os.path.join(llama_dir, "report.json")
    if os.path.exists(os.path.join(tok_path, "tokenizer.json")) and os.path.exists(report_path):
        tok = load_tokenizer(tok_path)
        with open(report_path, encoding="utf-8") as f:
            llama_ppl = json.load(f)["pretrain"]["val_ppl"]
        llama_src = f"measured, {report_path}"
    else:
        tok = pipeline.train_tokenizer(paths["pretrain_train"], cfg["vocab_size"], show_progress=False)
    t0 = time.perf_counter()
    train = _stream(tok, read_pretrain_texts(paths["pretrain_train"]))
    val = _stream(tok, read_pretrain_texts(paths["pretrain_val"]))
    V = tok.vocab_size
    counts = NGramCounts(train, cfg["max_n"], V)
    print(f"BPE vocabulary {V}; {len(train):,} training tokens, {len(val):,} held-out tokens "
          f"(tokenize + count: {time.perf_counter() - t0:.1f} s)")
    window = min(len(val) - 1, 10 * 8 * 256)  # the LLaMA's evaluation: its first 10 batches of 8 x 256 tokens
    rows, out = [], {}
    for n in range(1, cfg["max_n"] + 1):
        row = [n]
        for name, kw in (("add-1", dict(smoothing="add_k", k=1.0)), ("add-0.01", dict(smoothing="add_k", k=0.01)),
                         ("Kneser-Ney", dict(smoothing="kneser_ney"))):
            lm = NGramLM(n, V, **kw).fit(counts=counts)
            lp = lm.log_probs(val)
            ppl, ppl_w = math.exp(-lp.mean()), math.exp(-lp[:window].mean())
            out[f"{n}-gram {name}"] = {"ppl": ppl, "ppl_llama_window": ppl_w}
            row.append(f"{ppl:.2f} ({ppl_w:.2f})")
        rows.append(row)
    table(["n", "add-1", "add-0.01", "interpolated Kneser-Ney"], rows)
    print(f"tiny LLaMA (dim 128, 4 layers): {llama_ppl:.2f} on the first {window:,} held-out tokens ({llama_src})")
    print("(n-gram: whole held-out split; in brackets the LLaMA's evaluation window; a uniform guess is "
          f"{V})")
    sb = NGramLM(3, V, "stupid_backoff").fit(counts=counts)
    sums = [sb.next_token_probs(val[i:i + 2]).sum() for i in range(0, 2000, 100)]
    print(f"stupid backoff (3-gram) scores summed over the vocabulary: {min(sums):.2f} .. {max(sums):.2f}, not 1: "
          "no perplexity, ranking only")
    best_n = cfg["max_n"]
    lm = NGramLM(best_n, V, "kneser_ney").fit(counts=counts)
    samples = []
    for prompt in pipeline.DEFAULT_PROMPTS:
        ids = tok.encode(prompt)
        new = lm.generate(ids, 48, seed=0, eos_token_id=tok.eos_token_id)
        samples.append(prompt + tok.decode([t for t in new if t != tok.eos_token_id]))
        print(f"{best_n}-gram KN sample: {samples[-1]!r}")
    out["llama_ppl"], out["llama_source"], out["samples"] = llama_ppl, llama_src, samples
    return out, paths


# --------------------------------------------------------------------------- 1.4.3
def _w2v_sentences(paths, seg_dict, n_docs):
    """Pretraining documents -> lines -> lowercased words, Chinese cut into words by the 1.3.1 segmenter."""
    d = dict(seg_dict.counts)
    for en, zh in lexicon():  # the world's lexicon is the dictionary a real system would ship with
        d[zh] = d.get(zh, 0) + 5
    seg = segment.UnigramSegmenter(segment.Dictionary(d))
    lines = []
    for i, doc in enumerate(read_pretrain_texts(paths["pretrain_train"])):
        if i >= n_docs:
            break
        lines += [ln for ln in doc.split("\n") if ln.strip()]
    tok = WordTokenizer.train(lines, lowercase=True, segmenter=seg)
    punct = set("，。！？：；,.!?:;=")
    return [[t for t in (tok.id_to_token(i) for i in tok.encode(ln)) if t not in punct] for ln in lines]


def run_word2vec(cfg, paths, seg_dict, out_dir):
    banner("1.4.3 Word2Vec (skip-gram, negative sampling) on the pretraining corpus")
    sents = _w2v_sentences(paths, seg_dict, cfg["w2v_docs"])
    wcfg = w2v.Word2VecConfig(sg=1, dim=cfg["w2v_dim"], window=3, negative=5, epochs=cfg["w2v_epochs"], seed=0)
    # speed: the same plan through each trainer, on a small slice (the engine is slow)
    bench = sents[: cfg["bench_docs"]]
    bcfg = w2v.Word2VecConfig(sg=1, dim=cfg["w2v_dim"], window=3, negative=5, epochs=1, seed=0)
    w2v.train(bench[:5], bcfg)  # compile the kernel outside the timing
    speed = {}
    speed["Numba kernel (word2vec.c loop)"] = w2v.train(bench, bcfg).stats["words_per_sec"]
    mi.set_kernels("numpy")
    try:
        speed["NumPy reference, one example at a time"] = w2v.train(bench, bcfg).stats["words_per_sec"]
    finally:
        mi.set_kernels("numba")
    speed["autograd engine, batch 1 (same maths)"] = w2v.train_autograd(bench, bcfg, batch_size=1,
                                                                        max_examples=2000).stats["words_per_sec"]
    speed["autograd engine, batch 256"] = w2v.train_autograd(bench, bcfg, batch_size=256).stats["words_per_sec"]
    table(["trainer", "words/s"], [[k, f"{v:,.0f}"] for k, v in speed.items()])
    model = w2v.train(sents, wcfg)
    print(f"trained on {len(sents):,} lines, vocabulary {len(model.vocab):,}, {model.stats['words']:,.0f} words "
          f"after subsampling in {model.stats['seconds']:.1f} s ({model.stats['words_per_sec']:,.0f} words/s)")
    neighbours = {}
    for w in ("cat", "猫", "red", "汤姆", "market", "london"):
        if w in model:
            neighbours[w] = w2v.most_similar(model, w, topn=5)
            print(f"  {w}: " + ", ".join(f"{n} {s:.2f}" for n, s in neighbours[w]))
    rows, acc = [], {}
    for rel, qs in analogy_questions().items():
        r = w2v.analogy_accuracy(model, qs)
        acc[rel] = r
        rows.append([rel, f"{100 * r['accuracy']:.1f}%", r["n"]])
    table(["analogy (3CosAdd, a : b :: c : ?)", "accuracy", "questions"], rows)
    words, groups, names = [], [], []
    for gi, (cat, ws) in enumerate(word_categories().items()):
        names.append(cat)
        for w in ws:
            if w in model:
                words.append(w)
                groups.append(gi)
    xy = w2v.pca_2d(np.stack([model[w] for w in words]))
    png = os.path.join(out_dir, "word2vec_pca.png")
    scatter_png(png, xy, groups)
    legend = ", ".join(f"{n} = rgb{PALETTE[i]}" for i, n in enumerate(names))
    print(f"PCA of {len(words)} world words written to {png} ({legend})")
    return {"speed_words_per_sec": speed, "neighbours": neighbours, "analogies": acc, "pca_png": png}


# --------------------------------------------------------------------------- 1.4.4
def run_elmo(cfg):
    banner("1.4.4 ELMo: biLSTM LM, then a linear probe for word tags on frozen features")
    rng = np.random.default_rng(0)
    train = [w for w, _ in segmented_stories(cfg["elmo_train"])]
    vocab = WordVocab(train)
    seqs = [vocab.encode(w) for w in train]
    mi.manual_seed(0)
    model = BiLM(ELMoConfig(len(vocab), dim=cfg["elmo_dim"], dropout=0.1))
    t0 = time.perf_counter()
    train_bilm(model, seqs, steps=cfg["elmo_steps"], batch_size=16, lr=1e-2, log=print)
    t_lm = time.perf_counter() - t0
    # the static baseline learns from the same text, with the same 5% of words hidden as <unk>
    unk_train = [[w if rng.random() >= 0.05 else "<unk>" for w in s] for s in train]
    static = w2v.train(unk_train, w2v.Word2VecConfig(dim=2 * cfg["elmo_dim"], window=3, epochs=5, min_count=1))
    probe_train = list(segmented_stories(cfg["probe_stories"], seed=1))
    probe_test = list(segmented_stories(cfg["probe_stories"], split="heldout"))
    ppl = bilm_perplexity(model, [vocab.encode(w) for w, _ in probe_test])
    print(f"biLM: {sum(p.data.size for p in model.parameters()):,} parameters, {t_lm:.0f} s; held-out perplexity "
          f"forward {ppl['forward_ppl']:.1f}, backward {ppl['backward_ppl']:.1f} (vocabulary {len(vocab)})")

    def features(data, hide=0.0):
        # hide: share of words shown as <unk>, so the probe's training data has unknown words too
        # (as the biLM's had); otherwise the mix could not learn what helps on them
        data = [([w if rng.random() >= hide else "<unk>" for w in ws], ts) for ws, ts in data]
        layers = np.concatenate(elmo_layers(model, [vocab.encode(w) for w, _ in data]))  # (N, 3, 2·dim)
        words = [w for ws, _ in data for w in ws]
        stat = np.stack([static[w] if w in static else static["<unk>"] for w in words])
        y = np.array([TAGS.index(t) for _, ts in data for t in ts])
        oov = np.array([w not in vocab.stoi or w == "<unk>" for w in words])
        return layers, stat, y, oov

    Ltr, Str, ytr, _ = features(probe_train, hide=0.05)
    Lte, Ste, yte, oov = features(probe_test)
    variants = {
        "Word2Vec (static)": (Str, Ste),
        "biLM token layer only (static)": (Ltr[:, 0], Lte[:, 0]),
        "biLM top layer (contextual)": (Ltr[:, -1], Lte[:, -1]),
        "ELMo scalar mix of all layers (contextual)": (Ltr, Lte),
    }
    rows, out = [], {"bilm_ppl": ppl}
    for name, (a, b) in variants.items():
        probe = train_probe(a, ytr, len(TAGS), steps=cfg["probe_steps"], lr=0.05)
        pred = probe.predict(b)
        r = {"accuracy": float((pred == yte).mean()), "oov_accuracy": float((pred[oov] == yte[oov]).mean()),
             "iv_accuracy": float((pred[~oov] == yte[~oov]).mean())}
        if probe.mix is not None:
            r["mix_weights"] = mi.softmax(probe.mix.scalar_parameters, dim=0).data.round(3).tolist()
        out[name] = r
        rows.append([name, f"{100 * r['accuracy']:.1f}%", f"{100 * r['iv_accuracy']:.1f}%", f"{100 * r['oov_accuracy']:.1f}%"])
    print(f"probe: train {len(ytr):,} words of {len(probe_train)} stories (5% shown as <unk>); test {len(yte):,} words of "
          f"{len(probe_test)} held-out stories, {int(oov.sum())} of them unseen (<unk>); tags {', '.join(TAGS)}")
    table(["features (frozen) -> linear probe", "accuracy", "seen words", "unseen words (<unk>)"], rows)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smoke run in seconds")
    p.add_argument("--out-dir", default="runs/classic_nlp", help="where results go (default: %(default)s)")
    p.add_argument("--llama-dir", default="runs/tiny_llama",
                   help="a train_tiny_llama.py run whose tokenizer and perplexity to compare with (default: %(default)s)")
    p.add_argument("--only", nargs="+", choices=["segment", "vectors", "ngram", "word2vec", "elmo"],
                   help="run only these sections")
    args = p.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    if args.quick and args.llama_dir == "runs/tiny_llama":
        args.llama_dir = os.path.join(args.out_dir, "no-llama")  # quick runs use their own small tokenizer
    os.makedirs(args.out_dir, exist_ok=True)
    want = set(args.only or ["segment", "vectors", "ngram", "word2vec", "elmo"])
    report, t_all = {"config": cfg}, time.perf_counter()
    seg_dict = None
    if "segment" in want or "word2vec" in want:
        report["segmentation"], seg_dict = run_segmentation(cfg)
    if "vectors" in want:
        report["tfidf_top1"] = run_vectors(cfg)
    paths = None
    if "ngram" in want or "word2vec" in want:
        report["ngram"], paths = run_ngram(cfg, args.out_dir, args.llama_dir)
    if "word2vec" in want:
        report["word2vec"] = run_word2vec(cfg, paths, seg_dict, args.out_dir)
    if "elmo" in want:
        report["elmo_probe"] = run_elmo(cfg)
    report["seconds"] = time.perf_counter() - t_all
    atomic_write(os.path.join(args.out_dir, "report.json"), json.dumps(report, ensure_ascii=False, indent=1, default=float))
    print(f"\nchapter 1 done in {report['seconds']:.0f} s; report: {os.path.join(args.out_dir, 'report.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
