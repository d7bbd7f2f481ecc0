"""Happy LLM 7.2 — retrieval-augmented generation (TinyRAG), fully local.

The book's TinyRAG reads files, cuts them into chunks, embeds them with a remote API, keeps the
vectors in a ``VectorStore`` and asks a remote chat model to answer from the best chunks. Here
every piece runs on this machine, on models this project trains:

==================  ==========================================================================
``loaders.py``      ``ReadFiles`` (the book's name), ``Document``: .txt / .md (sections with
                    their heading) / .jsonl; folders walked; bad files reported and skipped
``chunking.py``     ``split_text`` / ``ReadFiles.get_chunk``: token limit, overlap in whole
                    sentences, paragraph and sentence boundaries; ``Chunk`` keeps source + offsets
``bm25.py``         ``BM25`` Okapi from scratch over a CSR matrix (equal to ``rank_bm25``)
``dense.py``        ``BiEncoder``: the chapter-3 BERT, mean-pooled, L2-normalised, trained with
                    ``info_nce_loss`` (in-batch negatives)
``store.py``        ``VectorStore``: ``add``, ``search`` (exact cosine), ``delete``,
                    ``persist`` / ``load_vector`` (safetensors + JSON), ``query`` (the book's)
``retriever.py``    ``Hit``; ``BM25Retriever`` (``from_folder`` in one call), ``DenseRetriever``,
                    ``HybridRetriever`` (reciprocal-rank fusion); all ``search(query, k) -> [Hit]``
``answer.py``       ``RAG_PROMPT_TEMPLATE``, ``build_prompt`` (numbered passages),
                    ``parse_answer`` (the cited passage numbers), ``answer_questions``
``world_kb.py``     a knowledge base of unseen world stories, (paraphrased) questions about it,
                    training pairs for the retriever and the reader
==================  ==========================================================================

Retrieval metrics (recall@k, MRR) are in ``minillm/eval/retrieval.py``. ``examples/rag.py``
measures it all; ``python -m minillm rag index DIR --out STORE`` / ``rag ask STORE "question"``.

    >>> from minillm.rag import BM25Retriever
    >>> retriever = BM25Retriever.from_folder("my_notes/")          # doctest: +SKIP
    >>> for hit in retriever.search("Where did Tom go?", k=3):      # doctest: +SKIP
    ...     print(hit.score, hit.source, hit.text)
"""
from .answer import NO_ANSWER, RAG_PROMPT_TEMPLATE, answer_questions, build_prompt, format_reply, parse_answer
from .bm25 import BM25, bm25_tokenize
from .chunking import Chunk, chunk_documents, simple_tokenize, split_text
from .dense import BiEncoder, cosine_similarity, info_nce_loss, l2_normalize, mean_pool, train_bi_encoder
from .loaders import Document, ReadFiles, load_documents, read_file_content
from .retriever import BM25Retriever, DenseRetriever, Hit, HybridRetriever, reciprocal_rank_fusion
from .store import VectorStore

__all__ = [
    "ReadFiles", "Document", "load_documents", "read_file_content",
    "Chunk", "split_text", "chunk_documents", "simple_tokenize",
    "BM25", "bm25_tokenize",
    "BiEncoder", "mean_pool", "l2_normalize", "info_nce_loss", "train_bi_encoder", "cosine_similarity",
    "VectorStore",
    "Hit", "BM25Retriever", "DenseRetriever", "HybridRetriever", "reciprocal_rank_fusion",
    "RAG_PROMPT_TEMPLATE", "NO_ANSWER", "build_prompt", "format_reply", "parse_answer", "answer_questions",
]
