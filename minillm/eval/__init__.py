"""Evaluation (Happy LLM 7.1): metrics that compare a model's outputs with references.

==============  ================================================================
``metrics``     exact match of short answers (``normalize_answer``, ``exact_match``,
                ``exact_match_accuracy``, ``score_sft`` per skill) and the paired
                difference of two models on one test set (``paired_difference``)
``retrieval``   recall@k and mean reciprocal rank of a ranking (7.2 RAG)
==============  ================================================================

``minillm.eval`` sits above ``train`` and ``data`` in the layer diagram: it reads their
records and never the other way round.
"""
from .metrics import exact_match, exact_match_accuracy, normalize_answer, paired_difference, score_sft
from .retrieval import mean_reciprocal_rank, recall_at_k

__all__ = ["normalize_answer", "exact_match", "exact_match_accuracy", "score_sft", "paired_difference", "recall_at_k", "mean_reciprocal_rank"]
