"""minillm.pipeline.compile_ahead (minillm/_ahead.py): a helper process rehearses a training run so its kernels are compiled on the idle core.

What must hold: the rehearsal compiles every kernel specialisation a real run (Trainer steps on
pretraining and padded SFT batches, sampling, a batched evaluation generate) needs; the helper is
started only when it can help, leaves its stamp only when it finished, and a real spawn works from
a fresh process with its own cache folder.
"""
import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import pytest

import minillm as mi
from minillm import _ahead
from minillm.pipeline import compile_ahead
from minillm.kernels import _cache
from minillm.models.llama import ModelConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ModelConfig.preset("tiny", vocab_size=300, max_seq_len=64)


def test_the_rehearsal_compiles_every_kernel_a_training_run_and_its_generate_call(tmp_path):
    """In a fresh process: rehearse, note every compiled signature of every minillm kernel, then run the
    real thing at other batch shapes (Trainer on pretraining and right-padded SFT batches, a sample,
    a left-padded batched generate): it must need no signature the rehearsal did not compile. Two
    kernel threads, as a run on this project's 2-core machines has."""
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np
        import numba
        sys.path.insert(0, {ROOT!r})
        import minillm as mi
        from minillm._ahead import rehearse
        from minillm.data import DataLoader, collate_sft
        from minillm.generation import generate
        from minillm.models.llama import ModelConfig, Transformer
        from minillm.train import TrainConfig, Trainer

        def signatures():
            found = set()
            for name, module in list(sys.modules.items()):
                if not name.startswith("minillm"):
                    continue
                for obj in list(vars(module).values()):
                    if isinstance(obj, numba.core.registry.CPUDispatcher):
                        found |= {{(obj.py_func.__module__ + "." + obj.py_func.__qualname__, str(s)) for s in obj.signatures}}
            return found

        cfg = ModelConfig.preset("tiny", vocab_size=300, max_seq_len=64)
        rehearse(cfg, batch_size=8, seq_len=64)
        before = signatures()
        rng = np.random.default_rng(1)

        class Blocks:  # pretraining: (input_ids, targets), no padding
            ids = rng.integers(0, 300, (12, 49))
            def __len__(self): return len(self.ids)
            def __getitem__(self, i): return self.ids[i, :-1], self.ids[i, 1:]

        class Chats:  # SFT: items of different lengths, right-padded by collate_sft, prompts ignored (-100)
            def __len__(self): return 12
            def __getitem__(self, i):
                ids = rng.integers(0, 300, 20 + 2 * i)
                return ids, np.where(np.arange(len(ids)) < 8, -100, ids)

        model = Transformer(cfg)
        out = sys.argv[1]
        for name, loader in (("pre", DataLoader(Blocks(), 4)),
                             ("sft", DataLoader(Chats(), 6, collate_fn=lambda b: collate_sft(b, pad_id=0)))):
            config = TrainConfig(out_dir=out + "/" + name, max_steps=2, eval_interval=0, checkpoint_interval=0,
                                 progress=False, plot=False, warmup_steps=1)
            Trainer(model, None, loader, None, config).train()
        generate(model, [5, 6, 7], 3, temperature=0.0)
        generate(model, [[5, 6, 7, 8, 9], [5], [1, 2]], 3, temperature=0.0)
        print(json.dumps(sorted(map(list, signatures() - before))))
        """)
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, NUMBA_NUM_THREADS="2", MINILLM_COMPILE_AHEAD="0"), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    missed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert missed == [], f"the run compiled specialisations the rehearsal did not: {missed}"


@pytest.fixture
def spawns(monkeypatch, tmp_path):
    """compile_ahead with its cache folder in tmp_path, an idle machine, and Popen recorded instead of run."""
    calls = []

    class FakePopen:
        def __init__(self, args, **kwargs):
            calls.append((args, kwargs))

        def poll(self):
            return 0

    monkeypatch.setattr(_ahead.subprocess, "Popen", FakePopen)
    monkeypatch.setattr(_ahead, "_started", [])
    monkeypatch.setattr(_cache, "cache_folder", lambda: str(tmp_path))
    monkeypatch.setattr(_ahead, "_others_running", lambda: 0)
    monkeypatch.delenv("MINILLM_COMPILE_AHEAD", raising=False)
    if hasattr(os, "sched_getaffinity"):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    return calls


def test_a_helper_is_started_with_the_job_and_its_own_settings(spawns, tmp_path):
    assert compile_ahead(TINY, batch_size=4, seq_len=100) is True
    (args, kwargs), = spawns
    job = json.loads(args[-1])
    assert ModelConfig(**job["config"]) == TINY  # the helper builds the very model
    assert (job["batch_size"], job["seq_len"], job["parent"]) == (4, 64, os.getpid())  # seq_len capped at max_seq_len
    assert os.path.dirname(job["stamp"]) == str(tmp_path) and not os.path.exists(job["stamp"])
    env = kwargs["env"]
    assert env["MINILLM_COMPILE_AHEAD"] == "0"  # a helper never starts helpers
    assert args[-2] == os.path.join(ROOT, "minillm")  # the same minillm as the caller's, installed or not
    assert env.get("PYTHONPATH") == os.environ.get("PYTHONPATH")  # ... without changing the helper's sys.path
    assert kwargs["stdout"] is subprocess.DEVNULL and kwargs["stderr"] is subprocess.DEVNULL


def test_no_helper_when_it_cannot_help(spawns, tmp_path, monkeypatch):
    # a stamp for this very job: an earlier helper finished it
    assert compile_ahead(TINY) is True
    stamp = json.loads(spawns[-1][0][-1])["stamp"]
    open(stamp, "w").write("{}")
    assert compile_ahead(TINY) is False
    os.remove(stamp)
    # another job (batch shape, config) is another stamp
    assert compile_ahead(TINY, batch_size=3) is True
    assert json.loads(spawns[-1][0][-1])["stamp"] != stamp

    n = len(spawns)
    monkeypatch.setenv("MINILLM_COMPILE_AHEAD", "0")
    assert compile_ahead(TINY) is False
    monkeypatch.delenv("MINILLM_COMPILE_AHEAD")

    monkeypatch.setattr(_ahead, "_others_running", lambda: 1)  # both cores taken (e.g. a test suite's workers)
    assert compile_ahead(TINY) is False
    monkeypatch.setenv("MINILLM_COMPILE_AHEAD", "1")  # ... unless asked for
    assert compile_ahead(TINY) is True
    n += 1
    monkeypatch.delenv("MINILLM_COMPILE_AHEAD")
    monkeypatch.setattr(_ahead, "_others_running", lambda: 0)

    monkeypatch.setattr(_cache, "cache_folder", lambda: None)  # no kernel cache: nothing would be shared
    assert compile_ahead(TINY) is False
    monkeypatch.setattr(_cache, "cache_folder", lambda: str(tmp_path))

    if hasattr(os, "sched_getaffinity"):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})  # one usable core
        assert compile_ahead(TINY) is False
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})

    assert compile_ahead(ModelConfig.preset("book", vocab_size=6144)) is False  # 82.6M parameters: no second copy

    previous = mi.get_kernels()
    mi.set_kernels("numpy")
    try:
        assert compile_ahead(TINY) is False
    finally:
        mi.set_kernels(previous)
    assert len(spawns) == n


def test_bad_arguments_are_named(spawns):
    with pytest.raises(TypeError, match="ModelConfig"):
        compile_ahead({"dim": 128})
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        compile_ahead(TINY, batch_size=0)
    with pytest.raises(ValueError, match="seq_len must be an integer >= 2, got 1.5"):
        compile_ahead(TINY, seq_len=1.5)
    assert spawns == []


def test_the_helper_leaves_its_stamp_only_when_it_finished(tmp_path):
    small = ModelConfig(dim=16, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=40, max_seq_len=16)
    job = dict(config=dataclasses.asdict(small), batch_size=2, seq_len=8)
    finished, cut = tmp_path / "finished.json", tmp_path / "cut.json"
    _ahead._helper(json.dumps(dict(job, stamp=str(finished), parent=os.getppid())))
    assert json.loads(finished.read_text()) == job
    _ahead._helper(json.dumps(dict(job, stamp=str(cut), parent=-1)))  # "the caller has exited": stop, no stamp
    assert not cut.exists()


def test_a_helper_still_running_is_stopped_when_the_caller_exits(monkeypatch):
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    monkeypatch.setattr(_ahead, "_started", [running])
    _ahead._stop_helpers()  # what atexit runs
    assert running.poll() is not None


def test_a_real_helper_fills_a_fresh_cache_folder(tmp_path):
    """A fresh process, its own empty cache folder, a model small enough to compile little: the helper
    it starts rehearses and leaves its stamp there, and a second call then starts none."""
    script = textwrap.dedent(f"""
        import sys, time, glob
        sys.path.insert(0, {ROOT!r})
        from minillm.models.llama import ModelConfig
        from minillm.pipeline import compile_ahead
        cfg = ModelConfig(dim=16, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=40, max_seq_len=16)
        assert compile_ahead(cfg, batch_size=2, seq_len=8) is True
        deadline = time.time() + 240
        while not glob.glob(sys.argv[1] + "/minillm-ahead-*.json") and time.time() < deadline:
            time.sleep(0.2)
        assert glob.glob(sys.argv[1] + "/minillm-ahead-*.json"), "no stamp"
        assert compile_ahead(cfg, batch_size=2, seq_len=8) is False
        """)
    cache = tmp_path / "numba-cache"
    proc = subprocess.run([sys.executable, "-c", script, str(cache)], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, NUMBA_CACHE_DIR=str(cache), MINILLM_COMPILE_AHEAD="1"), cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert any(name.endswith(".nbi") for _, _, files in os.walk(cache) for name in files)  # kernels were cached
