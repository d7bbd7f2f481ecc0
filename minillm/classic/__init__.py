"""Happy LLM chapter 1: the NLP that came before Transformers, runnable and measured.

One file per idea (the book explains them in prose; ``examples/classic_nlp.py`` runs them all):

    segment.py    1.3.1  Chinese word segmentation: FMM/BMM/bi-MM, jieba-style unigram DAG + Viterbi, B/M/E/S HMM
    vectors.py    1.4.1  one-hot, bag of words, TF-IDF, cosine document search
    ngram.py      1.4.2  n-gram LMs: add-k, interpolated Kneser–Ney, stupid backoff
    word2vec.py   1.4.3  skip-gram / CBOW with negative sampling (engine + Numba kernel)
    elmo.py       1.4.4  biLSTM language model, ELMo scalar mix, linear probes
    data.py              gold-segmented, tagged Chinese stories from the world (train / held-out with OOV words)

The LSTM itself is a reusable layer: ``minillm.nn.LSTM`` / ``LSTMCell`` (``minillm/nn/rnn.py``).
"""
