"""Data for pretraining and SFT (Happy LLM 5.3, 6.1-6.2).

==================  ==========================================================
``world``           built-in bilingual story world: pretraining documents, SFT
                    conversations (reading QA, translation, arithmetic) and the
                    default corpus files (scoring answers: ``minillm.eval``)
``formats``         reading user data: pretraining ``.jsonl`` (``text``) /
                    ``.txt``, SFT ``.jsonl`` in BelleGroup or OpenAI shape
``pretrain``        tokenize once into a uint16/uint32 token file, EOS after
                    every document; ``PretrainDataset`` of packed blocks
``sft``             chat template, assistant-only labels (``<|im_end|>``
                    trained), ``SFTDataset``, ``collate_sft`` padding
``loader``          ``DataLoader``: seeded shuffle, ``drop_last``, resumable
==================  ==========================================================

Typical pipeline::

    from minillm.data import *
    paths = write_default_corpus("data/world")
    build_token_file(read_pretrain_texts(paths["pretrain_train"]), tok, "data/world/train.bin")
    ds = PretrainDataset("data/world/train.bin", block_size=256)
    loader = DataLoader(ds, batch_size=16, seed=0)
    for x, y in loader.iter_forever(): ...                       # (16, 256) int64 each
"""

from .formats import (
    DataFormatError, RecordReader, check_eval_conversation, normalize_conversation, read_pretrain_texts,
    read_sft_conversations, read_sft_records,
)
from .loader import DataLoader, default_collate
from .pretrain import PretrainDataset, build_token_file, read_token_file_info
from .sft import IGNORE_INDEX, SFTDataset, build_sft_example, collate_sft, tokenize_conversation
from .world import SKILLS, World, WorldConfig, generate_sft, generate_stories, get_world, write_default_corpus

__all__ = [
    "WorldConfig", "World", "get_world", "generate_stories", "generate_sft", "write_default_corpus",
    "SKILLS",
    "DataFormatError", "RecordReader", "read_pretrain_texts", "read_sft_conversations", "read_sft_records",
    "check_eval_conversation", "normalize_conversation",
    "build_token_file", "read_token_file_info", "PretrainDataset",
    "IGNORE_INDEX", "build_sft_example", "tokenize_conversation", "SFTDataset", "collate_sft",
    "DataLoader", "default_collate",
]
