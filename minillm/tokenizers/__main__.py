"""Happy LLM 5.2 — command line: train, inspect and try tokenizers.

    python -m minillm.tokenizers train --input data.txt more.jsonl --vocab-size 4096 --out tok/
    python -m minillm.tokenizers encode --tokenizer tok/ "你好, world!"
    python -m minillm.tokenizers sample --out corpus.txt --mb 5
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from .._files import atomic_write
from .base import DEFAULT_SPECIAL_TOKENS, load_tokenizer
from .bpe import GPT2_PATTERN, GPT4_PATTERN, BPETokenizer
from .char import CharTokenizer
from .corpus import iter_texts, sample_corpus
from .hf_json import NORMALIZATIONS
from .word import WordTokenizer

class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show "(default: X)" only where there is a meaningful default."""

    def _get_help_string(self, action):
        if action.default is None or action.required or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


_KINDS = {"bpe": BPETokenizer, "char": CharTokenizer, "word": WordTokenizer}


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m minillm.tokenizers",
        description="Train and use minillm tokenizers (Happy LLM chapter 5.2).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser(
        "train",
        help="train a tokenizer on text or JSONL files and save it",
        description="Train a tokenizer and save DIR/tokenizer.json (Hugging Face format), "
        "DIR/tokenizer_config.json and readable listings (merges.txt, vocab.txt). "
        "Files are streamed: only the distinct words are kept in memory.",
        formatter_class=_Formatter,
    )
    t.add_argument("--input", "-i", nargs="+", required=True, metavar="FILE",
                   help="training files: plain text, or JSONL (one JSON object per line) for .jsonl/.json files")
    t.add_argument("--vocab-size", "-v", type=int, required=True, metavar="N",
                   help="total vocabulary size, counting special tokens (and the 256 bytes for BPE)")
    t.add_argument("--out", "-o", required=True, metavar="DIR", help="output directory (created if missing)")
    t.add_argument("--kind", choices=sorted(_KINDS), default="bpe",
                   help="bpe: byte-level BPE (5.2.3); char: one token per character (5.2.2); "
                   "word: words + Chinese characters (5.2.1)")
    t.add_argument("--min-frequency", type=int, default=None,
                   help="BPE: stop when the best pair occurs fewer times (default 2); char/word: drop rarer units "
                   "(default 1)")
    t.add_argument("--special-tokens", nargs="*", default=list(DEFAULT_SPECIAL_TOKENS), metavar="TOKEN",
                   help="special tokens, given ids 0, 1, ... in this order")
    t.add_argument("--pattern", default="gpt4",
                   help="BPE pre-tokenization regex (Python 'regex' syntax), or 'gpt4' / 'gpt2' for those patterns")
    t.add_argument("--normalization", choices=NORMALIZATIONS, default=None,
                   help="Unicode normalization before splitting (BPE). NFKC folds look-alike characters but "
                   "decode(encode(s)) then returns the normalized text")
    t.add_argument("--format", choices=("auto", "text", "jsonl"), default="auto",
                   help="input format; auto picks jsonl for .jsonl/.json/.ndjson files, text otherwise")
    t.add_argument("--field", default="text", help="JSONL field that holds the text")
    t.add_argument("--default-system", default=None, metavar="TEXT",
                   help="system message the chat template inserts when a conversation has none")
    t.add_argument("--lowercase", action="store_true", help="word tokenizer: fold case")
    t.add_argument("--no-progress", action="store_true", help="do not show progress bars")

    e = sub.add_parser(
        "encode",
        help="show how a saved tokenizer cuts a text",
        description="Encode TEXT (or standard input) and print each token id with its text.",
    )
    e.add_argument("--tokenizer", "-t", required=True, metavar="PATH", help="tokenizer directory or tokenizer.json")
    e.add_argument("text", nargs="?", default=None, help="text to encode (default: read standard input)")
    e.add_argument("--allowed-special", default="all", choices=("all", "none", "none_raise"),
                   help="what to do with special-token text in the input")
    e.add_argument("--json", action="store_true", help="print only the list of ids as JSON")

    s = sub.add_parser(
        "sample",
        help="write the built-in English + Chinese sample corpus to a file",
        description="Write the deterministic sample corpus (real English prose from the Python docs + generated "
        "Chinese) used by the examples and the benchmark.",
        formatter_class=_Formatter,
    )
    s.add_argument("--out", "-o", required=True, metavar="FILE", help="output text file")
    s.add_argument("--mb", type=float, default=5.0, help="size in megabytes (10**6 bytes)")
    s.add_argument("--chinese-fraction", type=float, default=0.4, help="share of the bytes that is Chinese")
    s.add_argument("--seed", type=int, default=0, help="random seed")
    return p


def _train(args) -> int:
    cls = _KINDS[args.kind]
    texts = iter_texts(args.input, field=args.field, fmt=args.format)
    start = time.perf_counter()
    if args.kind == "bpe":
        pattern = {"gpt4": GPT4_PATTERN, "gpt2": GPT2_PATTERN}.get(args.pattern, args.pattern)
        tok = cls.train(texts, args.vocab_size, min_frequency=2 if args.min_frequency is None else args.min_frequency,
                        special_tokens=args.special_tokens, pattern=pattern, normalization=args.normalization,
                        show_progress=not args.no_progress, default_system=args.default_system)
    else:
        kwargs = {"default_system": args.default_system}
        if args.kind == "word":
            kwargs["lowercase"] = args.lowercase
        tok = cls.train(texts, args.vocab_size, min_frequency=1 if args.min_frequency is None else args.min_frequency,
                        special_tokens=args.special_tokens, show_progress=not args.no_progress, **kwargs)
    seconds = time.perf_counter() - start
    path = tok.save(args.out)
    files = ", ".join(sorted(f.name for f in path.parent.iterdir() if f.is_file()))
    print(f"trained a {type(tok).__name__} with {tok.vocab_size} tokens in {seconds:.2f} s")
    if tok.vocab_size < args.vocab_size:
        print(f"note: stopped below --vocab-size {args.vocab_size}: no unit/pair left above --min-frequency")
    print(f"saved {path.parent}/ ({files})")
    return 0


def _encode(args) -> int:
    tok = load_tokenizer(args.tokenizer)
    text = sys.stdin.read() if args.text is None else args.text
    ids = tok.encode(text, allowed_special=args.allowed_special)
    if args.json:
        print(json.dumps(ids))
        return 0
    print(f"{len(text)} characters, {len(text.encode('utf-8'))} bytes -> {len(ids)} tokens")
    for i in ids:
        piece = tok.decode([i])
        print(f"{i:>7}  {tok.id_to_token(i)!r:<24} {piece!r}")
    return 0


def _sample(args) -> int:
    text = sample_corpus(int(args.mb * 1e6), chinese_fraction=args.chinese_fraction, seed=args.seed)
    atomic_write(args.out, text)
    print(f"wrote {len(text.encode('utf-8')) / 1e6:.2f} MB to {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        return {"train": _train, "encode": _encode, "sample": _sample}[args.command](args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
