"""Happy LLM 5.2 — tokenizers: word (5.2.1), character (5.2.2) and byte-level BPE (5.2.3–5.2.4).

>>> from minillm.tokenizers import BPETokenizer
>>> tok = BPETokenizer.train(["the cat sat on the mat"] * 10, vocab_size=280, show_progress=False)
>>> ids = tok.encode("the cat", add_special_tokens=True)
>>> tok.decode(ids)
'<s>the cat'

Train from the command line with ``python -m minillm.tokenizers train --help``.
"""

from .base import DEFAULT_SPECIAL_TOKENS, Tokenizer, load_tokenizer
from .bpe import GPT2_PATTERN, GPT4_PATTERN, BPETokenizer, encode_naive, get_stats, merge, train_naive
from .char import CharTokenizer
from .chat import apply_chat_template, chat_template_jinja
from .word import WordTokenizer
from .wordpiece import WordPieceTokenizer  # 5.2.3 WordPiece (BERT)
from .roberta import RobertaTokenizer  # 3.1.2 RoBERTa: byte-level BPE + <s> A </s></s> B </s>
from .unigram import UnigramTokenizer  # 5.2.3 Unigram LM (SentencePiece, T5)

__all__ = [
    "Tokenizer",
    "BPETokenizer",
    "CharTokenizer",
    "WordTokenizer",
    "WordPieceTokenizer",
    "RobertaTokenizer",
    "UnigramTokenizer",
    "load_tokenizer",
    "apply_chat_template",
    "chat_template_jinja",
    "DEFAULT_SPECIAL_TOKENS",
    "GPT2_PATTERN",
    "GPT4_PATTERN",
    "get_stats",
    "merge",
    "train_naive",
    "encode_naive",
]
