"""Happy LLM 5.2 — why subwords win: word vs character vs BPE on the same text.

Trains the three tokenizers of section 5.2 on the same English + Chinese text
and measures them on held-out text:

* vocabulary size: rows of the embedding table the model must learn;
* OOV rate: share of tokens that became <unk> (information lost for good);
* tokens per 1000 characters: sequence length, i.e. compute and context used;
* exact round trip: does decode(encode(text)) give the text back?

    python examples/compare_tokenizers.py [--mb 2] [--vocab-size 4096] [--save DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minillm.tokenizers import BPETokenizer, CharTokenizer, WordTokenizer  # noqa: E402
from minillm.tokenizers.corpus import sample_corpus  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mb", type=float, default=2.0, help="size of the built-in corpus in MB (default 2)")
    p.add_argument("--vocab-size", type=int, default=4096, help="vocabulary size of every tokenizer (default 4096)")
    p.add_argument("--save", metavar="DIR", help="also save the three tokenizers under DIR/{word,char,bpe}")
    args = p.parse_args(argv)

    # Held-out text: English paragraphs and Chinese sentences the tokenizers never saw.
    train = sample_corpus(int(args.mb * 1e6), seed=0, split="train")
    test = sample_corpus(200_000, seed=1, split="test")
    print(f"training text: {len(train.encode()) / 1e6:.2f} MB, held-out text: {len(test):,} characters\n")

    rows = []
    for name, cls, kwargs in [
        ("word (5.2.1)", WordTokenizer, {}),
        ("char (5.2.2)", CharTokenizer, {}),
        ("BPE  (5.2.3)", BPETokenizer, {"show_progress": False}),
    ]:
        start = time.perf_counter()
        tok = cls.train([train], args.vocab_size, **kwargs)
        seconds = time.perf_counter() - start
        ids = tok.encode(test, allowed_special="none")
        unk = sum(i == tok.unk_token_id for i in ids) / len(ids) if not isinstance(tok, BPETokenizer) else 0.0
        exact = tok.decode(ids) == test
        rows.append((name, tok.vocab_size, 100 * unk, 1000 * len(ids) / len(test), exact, seconds))
        if args.save:
            tok.save(Path(args.save) / name.split()[0].lower())
        if isinstance(tok, BPETokenizer):
            bpe = tok
        elif isinstance(tok, WordTokenizer):
            word = tok

    print(f"| {'tokenizer':<13} | {'vocab':>6} | {'OOV %':>6} | {'tokens/1000 chars':>17} | {'exact round trip':>16} "
          f"| {'train s':>7} |")
    print(f"|{'-' * 15}|{'-' * 8}|{'-' * 8}|{'-' * 19}|{'-' * 18}|{'-' * 9}|")
    for name, vocab, oov, per_k, exact, seconds in rows:
        print(f"| {name:<13} | {vocab:>6} | {oov:>6.2f} | {per_k:>17.1f} | {str(exact):>16} | {seconds:>7.2f} |")

    sentence = "Tokenizers split text into tokens; 大语言模型把文本切成词元。"
    print(f"\n{sentence!r}")
    print("  word:", [word.id_to_token(i) for i in word.encode(sentence)])
    # a BPE token may hold part of a character: show such bytes as \x.. escapes
    print("  BPE: ", [bpe.id_to_bytes(i).decode("utf-8", "backslashreplace") for i in bpe.encode(sentence)])
    print("\nThe word tokenizer loses every unseen word (and all spacing); the character tokenizer never loses")
    print("a seen character but needs the most tokens; BPE keeps everything (bytes are its fallback) with")
    print("the shortest sequences, which is why LLMs use subwords.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
