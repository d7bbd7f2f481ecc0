"""examples/classic_nlp.py --quick runs all of chapter 1 end to end and writes its report."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_classic_nlp_quick(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, os.path.join(ROOT, "examples", "classic_nlp.py"), "--quick", "--out-dir", str(out)]
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads((out / "report.json").read_text(encoding="utf-8"))
    seg = r["segmentation"]
    assert seg["unigram LM + HMM for OOV (jieba)"]["oov_recall"] > seg["forward maximum matching"]["oov_recall"] + 0.5
    assert r["tfidf_top1"]["TF-IDF (raw tf, smooth idf, L2)"] > 0.3
    ng = r["ngram"]
    assert ng["2-gram Kneser-Ney"]["ppl"] < ng["1-gram Kneser-Ney"]["ppl"]
    assert ng["llama_source"].startswith("README")  # --quick never reads a real run
    sp = r["word2vec"]["speed_words_per_sec"]
    assert sp["Numba kernel (word2vec.c loop)"] > sp["NumPy reference, one example at a time"]
    assert (out / "word2vec_pca.png").read_bytes()[:4] == b"\x89PNG"
    assert 0.3 < r["elmo_probe"]["ELMo scalar mix of all layers (contextual)"]["accuracy"] <= 1.0
    for section in ("1.3.1", "1.4.1", "1.4.2", "1.4.3", "1.4.4"):
        assert f"=== {section}" in proc.stdout
