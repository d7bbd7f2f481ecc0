"""Compile a training run's kernels on the idle core while the run starts: ``pipeline.compile_ahead()``.

A fresh install has no compiled kernels yet, so the first ``examples/train_tiny_llama.py --quick``
compiles ~13 CPU s of Numba code, on one core, one kernel after another, while the machine's other
core waits: the BPE tokenizer's kernels first (~5 s), then the training step's (~7 s), then the
decode step's (~2 s). ``compile_ahead(config)`` starts a second Python process that *rehearses*
the run on that idle core: it builds the same model, takes one AdamW step on a padded batch and
generates a few tokens. Every kernel it compiles goes to Numba's on-disk cache (``cache=True``), and
the run, when it first calls that kernel, loads it from there (milliseconds) instead of compiling
it. The rehearsal starts at the model, so while the run compiles the tokenizer's kernels, the
helper compiles the model's (benchmarks/README.md, "Cold start": the run's own compiling 13.4 ->
~7 CPU s).

Why a process and not a thread: Numba compiles under one process-wide lock, so two threads of one
process compile one after the other. Two processes share only the cache folder, whose files Numba
writes atomically (a new file, then a rename), so a kernel both happen to compile is simply
written twice with the same contents.

Why a rehearsal and not a list of kernel signatures: the rehearsal calls the same code the run
does, so it compiles the same specialisations (dtypes, layouts, the decode step's serial or team
kernel) without a list that would go stale (tests/test_compile_ahead.py checks that a training
step and a generate after it compile nothing the rehearsal did not).

Nothing is started (``compile_ahead`` returns False) when it cannot help: ``MINILLM_COMPILE_AHEAD=0``,
the NumPy kernels, a model above MAX_PARAMETERS (the helper would hold a second copy of it and its
AdamW state), no kernel cache (then nothing is shared), an earlier helper that already
rehearsed this model config with these sources on this CPU (a stamp file in the cache folder: a
warm start spends ~4 ms here), one usable core, or no idle core right now (other runnable tasks,
e.g. a test suite's workers); a run under ``mpiexec`` does not call it (its ranks use the cores).
``MINILLM_COMPILE_AHEAD=1`` skips the idle-core test. The helper never touches the caller's
files, prints nothing, ends when its rehearsal ends or is stopped when the caller exits, and any
error in it only means the run compiles that kernel itself.
"""
from __future__ import annotations

import atexit
import hashlib
import json
import numbers
import os
import subprocess
import sys

STAMP_PREFIX = "minillm-ahead-"
# No helper for a larger model: it would hold a second copy of the model and its AdamW state
# (16 bytes a parameter: 0.5 GB at this size) to save seconds of a run that takes hours.
MAX_PARAMETERS = 32_000_000


def compile_ahead(config, batch_size: int = 8, seq_len: int = 128) -> bool:
    """Rehearse a training run of ``Transformer(config)`` on batches of ``batch_size`` x ``seq_len``
    tokens in a background process (see the module docstring). Returns True when a helper was started.

    Call it first thing, before the work that comes ahead of the model (corpus, tokenizer): the
    helper needs ~0.5 s to start and compiles the model's kernels in the time that work takes."""
    from dataclasses import asdict

    from . import kernels
    from .kernels import _cache
    from .models.llama import ModelConfig
    from .scaling import count_parameters

    if not isinstance(config, ModelConfig):
        raise TypeError(f"compile_ahead: config must be a minillm.models.llama.ModelConfig, got {type(config).__name__}")
    for name, value, least in (("batch_size", batch_size, 1), ("seq_len", seq_len, 2)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
            raise ValueError(f"compile_ahead: {name} must be an integer >= {least}, got {value!r}")
    setting = os.environ.get("MINILLM_COMPILE_AHEAD", "").strip()
    if setting == "0" or kernels.get_kernels() != "numba" or count_parameters(config) > MAX_PARAMETERS:
        return False
    folder = _cache.cache_folder()  # None: no kernel cache, so nothing a helper compiled would reach the run
    if folder is None:
        return False
    job = dict(config=asdict(config), batch_size=int(batch_size), seq_len=int(min(seq_len, config.max_seq_len)))
    stamp = os.path.join(folder, STAMP_PREFIX + _fingerprint(job) + ".json")
    if os.path.exists(stamp):
        return False
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cores < 2 or (setting != "1" and _others_running() > cores - 2):
        return False
    import numba

    env = dict(os.environ, MINILLM_COMPILE_AHEAD="0", NUMBA_NUM_THREADS=str(numba.get_num_threads()))
    package = os.path.dirname(os.path.abspath(__file__))
    try:
        helper = subprocess.Popen(
            [sys.executable, "-c", _HELPER, package, json.dumps(dict(job, stamp=stamp, parent=os.getpid()))],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True)
    except OSError:  # no process could be started: the run compiles everything itself, as without us
        return False
    if not _started:
        atexit.register(_stop_helpers)
    _started.append(helper)
    return True


_started: list = []


def _stop_helpers() -> None:
    """At the caller's exit: a helper still rehearsing has nothing left to hand over, so it is
    stopped (a kernel it was writing is not lost: Numba writes a new file, then renames it)."""
    for helper in _started:
        if helper.poll() is None:
            helper.terminate()
            try:
                helper.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass


# The helper's program: this very minillm package (argv[1], its folder), imported by location rather
# than through sys.path, which is left as it is (the caller may run from a checkout that is not
# installed, and putting a site-packages folder first on the path could shadow the standard library).
_HELPER = """
import importlib.util, os, sys
folder = sys.argv[1]
spec = importlib.util.spec_from_file_location("minillm", os.path.join(folder, "__init__.py"),
                                              submodule_search_locations=[folder])
package = importlib.util.module_from_spec(spec)
sys.modules["minillm"] = package
spec.loader.exec_module(package)
from minillm._ahead import _helper
_helper(sys.argv[2])
"""


def _others_running() -> float:
    """How many other tasks want a core right now: Linux's count of runnable tasks (the 4th field
    of /proc/loadavg, which counts this process too), the least of three looks 10 ms apart; where
    there is no /proc, the 1-minute load average. Not the load average on Linux: right after a
    `pip install` it is still high for a minute while the cores are idle."""
    import time

    try:
        looks = []
        for i in range(3):
            with open("/proc/loadavg") as f:
                looks.append(int(f.read().split()[3].split("/")[0]) - 1)
            if i < 2:
                time.sleep(0.01)
        return max(0, min(looks))
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


def _fingerprint(job: dict) -> str:
    """What decides which kernels a rehearsal compiles and whether Numba's cache still holds them:
    the job, the Python and Numba versions, the host CPU (Numba caches per CPU model and features)
    and every source file of the package (a changed kernel is compiled again)."""
    import llvmlite.binding as llvm
    import numba

    root = os.path.dirname(os.path.abspath(__file__))
    sources = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(f for f in files if f.endswith(".py")):
            st = os.stat(os.path.join(folder, name))
            sources.append([os.path.relpath(os.path.join(folder, name), root), st.st_mtime_ns, st.st_size])
    key = dict(job=job, python=sys.version, numba=numba.__version__, cpu=llvm.get_host_cpu_name(),
               features=llvm.get_host_cpu_features().flatten(), sources=sources)
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def rehearse(config, batch_size: int = 8, seq_len: int = 128, parent: int | None = None) -> None:
    """What a training run of ``Transformer(config)`` compiles, on random data, in the order that
    lets a run starting at the same time find the most of it ready. ``parent``: stop early once that
    process has exited.

    1. one attention layer forward and backward: the biggest kernels (~4.3 of ~9 CPU s), which the
       run needs first (forward) and in the middle of its first backward;
    2. a greedy generate of 2 tokens from two prompts of different lengths (a left-padded batch):
       the decode step, which the run needs at its first sample or evaluation;
    3. one AdamW step on a batch with padding and ignored targets, then gradient clipping: every
       other kernel of a step (pretraining and SFT batches reach the same specialisations).
    Measured against the other orders (benchmarks/README.md, "Cold start", round 7): with the
    training step first, the run reached the attention backward while the helper was still
    compiling it, and compiled it too."""
    import numpy as np

    from .autograd import no_grad
    from .generation import generate
    from .models.llama import Transformer
    from .optim import AdamW, clip_grad_norm_, param_groups_for_weight_decay
    from .tensor import Tensor

    model = Transformer(config)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, config.vocab_size, (batch_size, seq_len))
    padding = np.ones_like(ids)
    padding[0, -1] = 0

    def attention():
        x = Tensor(rng.standard_normal((batch_size, seq_len, config.dim)).astype(np.float32), requires_grad=True)
        cos, sin = model.freqs_cos.data[:seq_len], model.freqs_sin.data[:seq_len]
        model.layers[0].attention(x, cos, sin, None).sum().backward()  # (B, T, dim); no mask, as in pretraining

    def decode():
        with no_grad():
            prompts = [[t % config.vocab_size for t in prompt] for prompt in ([1, 2, 3], [4, 5])]
            generate(model, prompts, max_new_tokens=2, temperature=0.0)

    def step():
        optimizer = AdamW(param_groups_for_weight_decay(model, 0.1), lr=1e-3)
        targets = ids.copy()
        targets[:, : seq_len // 4] = -100
        loss = model(Tensor(ids), targets=Tensor(targets), attention_mask=Tensor(padding)).loss
        loss.backward()
        clip_grad_norm_(list(model.parameters()), 1.0)
        optimizer.step()

    for part in (attention, decode, step):
        if parent is not None and os.getppid() != parent:
            return
        part()


def _helper(argument: str) -> None:
    """The helper process: rehearse, then leave the stamp that says this job is in the cache."""
    from ._files import atomic_write
    from .models.llama import ModelConfig

    job = json.loads(argument)
    rehearse(ModelConfig(**job["config"]), job["batch_size"], job["seq_len"], parent=job["parent"])
    if os.getppid() == job["parent"]:  # finished, not cut short: later runs need no helper
        atomic_write(job["stamp"], json.dumps({k: job[k] for k in ("config", "batch_size", "seq_len")}))
