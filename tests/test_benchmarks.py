"""The benchmark scripts run end to end on tiny settings (their speed numbers are not tested)."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(script, *args):
    env = dict(os.environ, MINILLM_KERNELS="numba")  # they compare the Numba path (also when the suite runs on numpy)
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True, text=True,
                         timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_generate_benchmark_checks_all_paths_agree():
    res = json.loads(run("generate.py", "--presets", "tiny", "--vocab-size", "300", "--prompt-len", "4", "--new-tokens", "5",
                         "--repeats", "1", "--no-torch", "--batch-sizes", "3", "--score-questions", "2", "--json"))
    impls = {r["impl"] for r in res["results"]}
    assert {"minillm fused decode", "minillm + KV cache, modules", "minillm, no cache (book)"} <= impls
    assert {"GPT-2 minillm + KV cache", "GPT-2 minillm, no cache", "T5 minillm + KV cache"} <= impls  # 3.3.1 / 3.2.1 rows
    assert {r["impl"] for r in res["results"] if r["batch"] == 3} == {"minillm fused decode", "minillm + KV cache, modules"}
    assert all(r["same_tokens"] for r in res["results"])
    assert len(res["scoring"]) == 2 and all(r["same_scores"] and r["requests"] == 8 for r in res["scoring"])


def _check_table(prof):
    """The rows are the functions with the most own time, largest first, and their shares are
    fractions of the profiled total that add up to most of it."""
    top = prof["top"]
    assert prof["profiled_ms"] > 0 and len(top) >= 10
    shares = [r["share"] for r in top]
    assert shares == sorted(shares, reverse=True)
    for r in top:
        assert r["calls"] >= 1 and 0 <= r["share"] <= 1
        assert r["own_ms"] == pytest.approx(r["share"] * prof["profiled_ms"], rel=1e-6)
    assert 0.5 < sum(shares) <= 1 + 1e-9  # 40 functions hold most of the time, never more than all of it


def _row(prof, pattern):
    rows = [r for r in prof["top"] if re.fullmatch(pattern, r["function"])]
    assert rows, f"no row matches {pattern!r} in {[r['function'] for r in prof['top']]}"
    return rows[0]


def test_gemm_split_benchmark_times_every_contender():
    pytest.importorskip("threadpoolctl")
    rows = json.loads(run("gemm_split.py", "--quick", "--no-torch", "--json"))["rows"]
    assert [(r["M"], r["K"], r["N"]) for r in rows] == [(2048, 128, 128), (2048, 128, 384)]
    for r in rows:
        assert r["same_result"]
        assert all(r[k] > 0 for k in ("numpy_1_thread_ms", "minillm_split_ms", "openblas_threads_ms"))


def test_profile_script_finds_where_the_time_goes():
    # 1 thread: with 2, each GEMM's second share runs on a pool thread, which cProfile does not see
    res = json.loads(run("profile_steps.py", "--steps", "1", "--tokens", "3", "--top", "40", "--threads", "1", "--json"))
    train, decode = res["profiles"]
    assert train["title"].startswith("tiny training step") and decode["title"].startswith("tiny greedy decoding")
    _check_table(train)
    _check_table(decode)
    # a training step is BLAS-bound: the GEMMs of the linear layers lead (58 % on an idle machine),
    # 3 per linear layer (forward, grad input, grad weight) x (7 per block x 4 blocks + the output)
    matmul = _row(train, r"kernels/_matmul\.py:\d+\(matmul\)")
    assert matmul is train["top"][0] and matmul["calls"] == 3 * (7 * 4 + 1)
    _row(train, r"kernels/_attention\.py:\d+\(attention_(forward|backward)_kernel\)")  # the Numba kernels show up by name
    _row(decode, r"kernels/_decode\.py:\d+\(llama_decode_step\)")


def test_profile_script_times_ops_at_two_thread_counts():
    out = run("profile_steps.py", "--what", "ops", "--threads", "1", "2", "--steps", "1", "--rounds", "2")
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.split() == ["op", "1", "thr", "2", "thr", "speed-up"])
    rows = {line[:36].strip(): [float(v) for v in line[36:].split()] for line in lines[head + 1:] if line.strip()}
    assert list(rows)[0] == "step" and all(len(v) == 3 and min(v) >= 0 for k, v in rows.items() if k != "rest: Python engine, glue")
    assert {"Linear fwd", "Linear bwd", "SDPA fwd", "SDPA bwd", "CrossEntropy fwd", "optimizer (AdamW + zero_grad)"} <= set(rows)
    assert 0 < rows["of which GEMMs (kernels.matmul)"][0] < rows["step"][0]


def test_profile_script_prints_a_table():
    out = run("profile_steps.py", "--what", "decode", "--tokens", "3", "--top", "5")
    lines = out.splitlines()
    assert lines[0].startswith("threads=2 kernels=numba")
    head = next(i for i, line in enumerate(lines) if line.split() == ["own", "ms", "share", "calls", "function"])
    assert len(lines) - head - 1 == 5  # --top rows
    assert all(re.match(r"\s*\d+\.\d+\s+\d+\.\d%\s+\d+\s+\S", line) for line in lines[head + 1:])


def test_rag_benchmark_runs_and_bm25_agrees():
    res = json.loads(run("rag.py", "--sizes", "300", "--queries", "4", "--encode", "8", "--dim", "32", "--json"))
    (row,) = res["results"]
    assert row["chunks"] == 300 and row["exact_search_ms"] > 0 and row["bm25_query_ms"] > 0
    assert row.get("bm25_same_scores", True)  # checked against rank_bm25 when it is installed
    assert res["encoder"]["encode_chunks_per_s"] > 0
    if "ann" in row:  # faiss-cpu installed: the HNSW rows; with ef_search 256 > 300/2 chunks the search is near exact
        assert row["ann_build_s"] > 0 and [a["ef_search"] for a in row["ann"]] == [64, 256, 1024]
        assert all(a["search_ms"] > 0 for a in row["ann"]) and row["ann"][1]["recall_at_10"] >= 0.9


def test_nf4_linear_benchmark_checks_both_paths():
    out = run("nf4_linear.py", "--quick")
    assert "fused" in out and "numba dequant+BLAS" in out and "(128, 128)" in out


def test_memory_benchmark_measures_gradient_checkpointing():
    rows = json.loads(run("memory.py", "--checkpointing", "--seq-lens", "64", "--json"))
    (row,) = rows
    assert row["seq_len"] == 64 and row["checkpointed_mib"] < 0.8 * row["plain_mib"]


def test_distributed_benchmark_reports_speed_and_memory_per_rank():
    """One single-process contender (the 2-rank ones need mpiexec; tests/test_distributed.py covers those)."""
    res = json.loads(run("distributed.py", "--runs", "1x1", "--steps", "1", "--warmup", "1", "--block-size", "16",
                         "--vocab-size", "256", "--json"))
    assert [r["run"] for r in res["results"]] == ["1x1"]
    for r in res["results"]:
        assert r["ranks"] == 1 and r["tokens_per_sec"] > 0 and len(r["per_rank"]) == 1
        mem = r["per_rank"][0]
        assert mem["gradients"] == 4 * r["params"] and mem["optimizer_state"] == 8 * r["params"]  # ZeRO's formula, N=1
        assert mem["peak_rss_mib"] > 0 and r["precision"] == "float32"


def test_compile_cost_counts_cold_compiles_and_warm_cache_loads(tmp_path):
    # one tiny cached kernel (no minillm import: seconds, not a model): compiled once on the
    # empty cache, loaded from it the second time; gc.set_threshold(1) makes the garbage
    # collector run during the compilation, which the probe must count
    script = tmp_path / "twice.py"
    script.write_text("import gc\nfrom numba import njit\n\ngc.set_threshold(1)\n\n"
                      "@njit(cache=True)\ndef twice(x):\n    return 2 * x\n\ntwice(1.5)\n")
    res = json.loads(run("compile_cost.py", "--warm", "--json", "--", sys.executable, str(script)))
    cold, warm = res["cold"]["kernels"]["__main__.twice"], res["warm"]["kernels"]["__main__.twice"]
    assert (cold["compiled"], cold["loaded"], warm["compiled"], warm["loaded"]) == (1, 0, 0, 1)
    assert cold["signatures"] == ["(float64,)"] and cold["cpu_s"] > 0
    assert res["cold"]["processes"] == 1 and res["cold"]["calibration_s"] > 0
    assert sum(res["cold"]["gc_in_compile_collections"]) > 0 and sum(res["cold"]["gc_in_compile_cpu_s"]) > 0
