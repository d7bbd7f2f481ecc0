"""The benchmark scripts run end to end on tiny settings (their speed numbers are not tested)."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(script, *args):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_generate_benchmark_checks_all_paths_agree():
    res = json.loads(run("generate.py", "--presets", "tiny", "--vocab-size", "300", "--prompt-len", "4", "--new-tokens", "5",
                         "--repeats", "1", "--no-torch", "--json"))
    impls = {r["impl"] for r in res["results"]}
    assert {"minillm fused decode", "minillm + KV cache, modules", "minillm, no cache (book)"} <= impls
    assert all(r["same_tokens"] for r in res["results"])


def test_profile_script_lists_kernels():
    out = run("profile_steps.py", "--steps", "1", "--tokens", "3", "--top", "40")
    assert "tiny training step" in out and "reference.py:17(matmul)" in out
    assert "_decode.py" in out and "llama_decode_step" in out


def test_profile_script_json():
    res = json.loads(run("profile_steps.py", "--what", "decode", "--tokens", "3", "--json"))
    (prof,) = res["profiles"]
    assert prof["top"] and abs(sum(r["share"] for r in prof["top"])) <= 1.0 + 1e-9
