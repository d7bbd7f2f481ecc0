"""Data parallel and ZeRO over MPI (Happy LLM 6.1.5): each proven equal to the single-process run.

The MPI tests start ``mpiexec -n 2`` on ``tests/_mpi_worker.py`` (a tiny LLaMA, a few steps) and
compare what rank 0 saved with a run of the same worker in one process. All their 2-rank trainings
share one ``mpiexec`` launch and all the 1-process ones another (the ``runs`` fixture): starting the
processes costs more than the runs. They skip when
mpi4py or mpiexec is missing (``pip install -e ".[distributed]"`` brings both).

Tolerances: float64 runs agree within 1e-10 (they differ only in the order of a few sums).
float32: the two runs sum the same per-sample gradients in a different order, which changes a
gradient by a few float32 ulps (relative 1e-7 .. 1e-3 where terms cancel); Adam turns a relative
gradient error delta into a weight error of at most about lr * K * delta after K steps, i.e. 1e-5
for lr=3e-3, K=4 even at delta=1e-3. We assert 5e-5 on the weights (measured: 2.6e-6) and
1e-5 relative on the losses (measured: < 1 float32 ulp).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import minillm as mi
from minillm.data import DataLoader
from minillm.distributed import (
    DistributedDataLoader, DistributedTrainer, GradientBuckets, SingleProcessGroup, ZeroRedundancyOptimizer,
    init_process_group, load_deepspeed_config, zero_memory_formula,
)
from minillm.distributed.zero import held_bytes
from minillm.optim import AdamW
from minillm.train import TrainConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "_mpi_worker.py")
sys.path.insert(0, os.path.join(ROOT, "tests"))
from _mpi_worker import Blocks  # noqa: E402


# ----------------------------------------------------------------------------- no MPI needed
def test_single_process_group_collectives_are_identities():
    g = SingleProcessGroup()
    a = np.arange(6.0)
    assert g.all_reduce_(a) is a and a.tolist() == list(range(6))
    assert g.reduce_scatter(a).tolist() == a.tolist() and g.all_gather(a[:3]).tolist() == [0.0, 1.0, 2.0]
    assert g.broadcast_object({"x": 1}) == {"x": 1} and g.all_gather_object(3) == [3]
    with pytest.raises(ValueError, match="src=1"):
        g.broadcast_(a, src=1)
    with pytest.raises(TypeError, match="NumPy array"):
        g.all_reduce_([1.0, 2.0])
    with pytest.raises(ValueError, match="C-contiguous"):
        g.all_reduce_(np.zeros((3, 4))[:, ::2])


def test_init_process_group_without_launcher_is_one_process(monkeypatch):
    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    import minillm.distributed.comm as comm

    monkeypatch.setattr(comm, "_GROUP", None)
    g = init_process_group()
    assert (g.rank, g.world_size) == (0, 1) and init_process_group() is g
    with pytest.raises(ValueError, match="backend"):
        init_process_group("nccl")


def test_launched_without_mpi4py_says_how_to_install(monkeypatch):
    import minillm.distributed.comm as comm

    monkeypatch.setattr(comm, "_GROUP", None)
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setattr(comm, "is_mpi_available", lambda: False)
    with pytest.raises(RuntimeError, match=r"\[distributed\]"):
        init_process_group()
    monkeypatch.setattr(comm, "_GROUP", None)


def test_distributed_loader_shards_are_disjoint_and_make_the_global_batch():
    ds = Blocks(40, 4, 50)
    whole = DataLoader(ds, 8, seed=3)
    shards = [DistributedDataLoader(ds, 8, seed=3, rank=r, world_size=2) for r in range(2)]
    for _ in range(len(whole) + 2):  # across an epoch boundary
        gx = next(whole.iter_forever())[0]
        parts = [next(s.iter_forever())[0] for s in shards]
        assert parts[0].shape == (4, 4)
        np.testing.assert_array_equal(np.concatenate(parts), gx)
        assert all(s.state_dict() == whole.state_dict() for s in shards)  # one global position: resumable with any N
    again = DistributedDataLoader.from_loader(whole, rank=1, world_size=4)
    assert again.state_dict() == whole.state_dict() and again.per_rank_batch_size == 2 and len(again) == len(whole)


def test_distributed_loader_bad_input():
    ds = Blocks(40, 4, 50)
    with pytest.raises(ValueError, match="batch_size=6 is not divisible by world_size=4"):
        DistributedDataLoader(ds, 6, rank=0, world_size=4)
    with pytest.raises(ValueError, match="rank=2, world_size=2"):
        DistributedDataLoader(ds, 8, rank=2, world_size=2)
    with pytest.raises(TypeError, match="rank must be an int"):
        DistributedDataLoader(ds, 8, rank="0", world_size=2)
    with pytest.raises(ValueError, match="drop_last=True"):
        DistributedDataLoader(ds, 16, drop_last=False, rank=0, world_size=2)
    with pytest.raises(TypeError, match="minillm.data.DataLoader"):
        DistributedDataLoader.from_loader([1, 2], 0, 1)


def test_gradient_buckets_bucket_by_size():
    params = [mi.Tensor(np.zeros(n, np.float32), requires_grad=True) for n in (100, 300, 50, 1000)]
    b = GradientBuckets(params, SingleProcessGroup(), bucket_cap_mb=400 * 4 / 2**20)
    assert [[p.data.size for p in bucket] for bucket in b.buckets] == [[1000], [50, 300], [100]]  # backward order
    with pytest.raises(ValueError, match="bucket_cap_mb"):
        GradientBuckets(params, SingleProcessGroup(), bucket_cap_mb=0)


def _tiny_model(dtype="float64"):
    from minillm.models.llama import ModelConfig, Transformer

    mi.manual_seed(0)
    return Transformer(ModelConfig(dim=16, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=32, max_seq_len=8)).to(np.dtype(dtype))


def _steps(model, opt_step, k=3):
    """k AdamW steps on fixed batches; ``opt_step(params)`` does reduce/clip/update/zero."""
    data = Blocks(8, 8, 32, seed=5)
    x = mi.Tensor(np.stack([data[i][0] for i in range(8)]))
    y = mi.Tensor(np.stack([data[i][1] for i in range(8)]))
    for _ in range(k):
        model(x, targets=y).loss.backward()
        opt_step()


def test_zero_on_one_process_equals_adamw_and_checkpoints_like_it():
    ref, sharded = _tiny_model(), _tiny_model()
    opt_ref = AdamW(ref.named_parameters(), lr=1e-2, weight_decay=0.1)

    def plain():
        mi.optim.clip_grad_norm_(list(ref.parameters()), 0.5)
        opt_ref.step()
        opt_ref.zero_grad()

    zero = ZeroRedundancyOptimizer(AdamW(sharded.named_parameters(), lr=1e-2, weight_decay=0.1), SingleProcessGroup(), 2)

    def zstep():
        zero.reduce_gradients()
        zero.clip_grad_norm_(0.5)
        zero.step()
        zero.zero_grad()

    _steps(ref, plain)
    _steps(sharded, zstep)
    for (n, a), b in zip(ref.state_dict().items(), sharded.state_dict().values()):
        np.testing.assert_allclose(b.data, a.data, rtol=0, atol=1e-13, err_msg=n)
    with pytest.raises(RuntimeError, match="consolidate_state_dict"):
        zero.state_dict()
    zero.consolidate_state_dict()
    got, want = zero.state_dict(), opt_ref.state_dict()
    assert got["param_groups"] == want["param_groups"]
    for i in want["state"]:
        for k in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_allclose(got["state"][i][k], want["state"][i][k], atol=1e-13)
        assert got["state"][i]["step"] == want["state"][i]["step"] == 3
    zero.release_consolidated()
    assert zero.optimizer.state == {}
    fresh = ZeroRedundancyOptimizer(AdamW(sharded.named_parameters(), lr=1e-2, weight_decay=0.1), SingleProcessGroup(), 1)
    fresh.load_state_dict(want)  # a single-process checkpoint loads into the sharded optimizer
    st = next(iter(fresh.inner.state.values()))
    assert st["step"] == 3 and st["exp_avg"].shape == fresh.shard_params[0].shape


def test_zero_bad_input():
    model = _tiny_model()
    with pytest.raises(ValueError, match="stage must be 1 or 2"):
        ZeroRedundancyOptimizer(AdamW(model.parameters()), SingleProcessGroup(), 3)
    with pytest.raises(TypeError, match="elementwise"):
        ZeroRedundancyOptimizer(object(), SingleProcessGroup(), 1)
    zero = ZeroRedundancyOptimizer(AdamW(model.named_parameters()), SingleProcessGroup(), 1)
    with pytest.raises(ValueError, match="has no gradient"):
        zero.reduce_gradients()


def test_held_bytes_counts_views_once_and_formula():
    a = np.zeros(100)
    assert held_bytes([a, a[:10], a[50:].reshape(5, 10)]) == 800
    assert zero_memory_formula(1000, 2, 0) == {"gradients": 4000, "optimizer_state": 8000}
    assert zero_memory_formula(1000, 2, 1) == {"gradients": 4000, "optimizer_state": 4000}
    assert zero_memory_formula(1001, 2, 2) == {"gradients": 2004, "optimizer_state": 4008}


def test_distributed_trainer_on_one_process_equals_trainer(tmp_path):
    from minillm.train import Trainer

    results = []
    for cls in (Trainer, DistributedTrainer):
        model = _tiny_model()
        cfg = TrainConfig(out_dir=str(tmp_path / cls.__name__), max_steps=3, warmup_steps=1, eval_interval=0,
                          progress=False, plot=False)
        trainer = cls(model, None, DataLoader(Blocks(16, 8, 32), 4, seed=1), None, cfg)
        trainer.train()
        results.append((trainer.losses, model.state_dict()))
    assert results[0][0] == results[1][0]
    for a, b in zip(results[0][1].values(), results[1][1].values()):
        np.testing.assert_array_equal(a.data, b.data)
    with pytest.raises(ValueError, match="zero_stage must be 0, 1 or 2"):
        DistributedTrainer(_tiny_model(), None, DataLoader(Blocks(16, 8, 32), 4), None, cfg, zero_stage=3)


BOOK_DS_CONFIG = {  # the book's docs/chapter6/code/ds_config_zero2.json
    "fp16": {"enabled": "auto", "loss_scale": 0, "loss_scale_window": 1000, "initial_scale_power": 16, "hysteresis": 2,
             "min_loss_scale": 1},
    "bf16": {"enabled": "auto"},
    "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"}},
    "scheduler": {"type": "WarmupLR", "params": {"warmup_min_lr": "auto", "warmup_max_lr": "auto", "warmup_num_steps": "auto"}},
    "zero_optimization": {"stage": 2, "offload_optimizer": {"device": "none", "pin_memory": True},
                          "allgather_partitions": True, "allgather_bucket_size": 2e8, "overlap_comm": True,
                          "reduce_scatter": True, "reduce_bucket_size": 2e8, "contiguous_gradients": True},
    "gradient_accumulation_steps": "auto", "gradient_clipping": "auto", "steps_per_print": 100,
    "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto", "wall_clock_breakdown": False,
}


def test_book_deepspeed_config_maps_onto_our_flags(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(BOOK_DS_CONFIG))
    cfg = load_deepspeed_config(str(path))
    assert cfg.zero_stage == 2 and cfg.bucket_elements == 200_000_000
    assert cfg.train_config_overrides() == {"lr_schedule": "constant", "log_interval": 100}
    explicit = {**BOOK_DS_CONFIG, "gradient_accumulation_steps": 2, "gradient_clipping": 1.0,
                "train_micro_batch_size_per_gpu": 4, "train_batch_size": 16, "bf16": {"enabled": True},
                "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "betas": [0.9, 0.95], "eps": 1e-8,
                                                          "weight_decay": 0.1}}}
    cfg = load_deepspeed_config(explicit)
    over = cfg.train_config_overrides()
    assert over["grad_accum_steps"] == 2 and over["grad_clip"] == 1.0 and over["betas"] == (0.9, 0.95)
    assert over["bf16"] is True and "fp16" not in over  # the book's "auto" leaves fp16 to the command line
    TrainConfig(**over)  # every override is a TrainConfig field
    assert cfg.global_batch_size(world_size=2, default=8, grad_accum_steps=2) == 8
    with pytest.raises(ValueError, match="train_batch_size=16"):
        cfg.global_batch_size(world_size=4, default=8, grad_accum_steps=2)


@pytest.mark.parametrize("change, message", [
    ({"zero_optimization": {"stage": 3}}, "stage 3"),
    ({"fp16": {"enabled": True, "loss_scale": 128}}, "fp16.loss_scale=128: only dynamic"),
    ({"fp16": {"enabled": True, "initial_scale_power": 8}}, "initial_scale_power=8"),
    ({"fp16": {"enabled": True}, "bf16": {"enabled": True}}, "choose one"),
    ({"bf16": {"enabled": "yes"}}, "bf16.enabled must be true, false"),
    ({"activation_checkpointing": {}}, "unknown field.*activation_checkpointing"),
    ({"zero_optimization": {"stage": 2, "sub_group_size": 1}}, "zero_optimization: unknown field.*sub_group_size"),
    ({"zero_optimization": {"offload_optimizer": {"device": "cpu"}}}, "offload_optimizer"),
    ({"optimizer": {"type": "Lamb"}}, "optimizer.type"),
    ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps must be an integer >= 1"),
])
def test_deepspeed_config_errors_name_the_field(change, message):
    with pytest.raises(ValueError, match=message):
        load_deepspeed_config({**BOOK_DS_CONFIG, **change})
    with pytest.raises(ValueError, match="not valid JSON"):
        import tempfile

        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            f.write("{oops")
        try:
            load_deepspeed_config(f.name)
        finally:
            os.remove(f.name)


# ----------------------------------------------------------------------------- under mpiexec -n 2
def _mpiexec():
    pytest.importorskip("mpi4py", reason="the [distributed] extra (mpi4py + mpich) is not installed")
    exe = shutil.which("mpiexec") or shutil.which("mpiexec", path=os.path.dirname(sys.executable))
    if exe is None:
        pytest.skip("mpiexec is not on PATH")
    return exe


def _env():
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    for var in ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE"):
        env.pop(var, None)
    return env


def _launch(root, runs: dict, ranks: int) -> dict:
    """Every run of ``runs`` (name -> worker arguments) in ONE launch of the worker on ``ranks`` processes.

    A run writes to ``root/name`` unless its arguments name an ``--out``; returns name -> (result, weights)."""
    outs = {name: str(args[args.index("--out") + 1]) if "--out" in args else str(root / name)
            for name, args in runs.items()}
    plan = root / f"plan_{ranks}.json"
    plan.write_text(json.dumps([[*map(str, args), "--out", outs[name]] for name, args in runs.items()]))
    cmd = [sys.executable, WORKER, "--out", str(root), "--runs", str(plan)]
    if ranks > 1:
        cmd = [_mpiexec(), "-n", str(ranks)] + cmd
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=_env())
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    results = {}
    for name, out in outs.items():
        with open(os.path.join(out, "result.json")) as f:
            results[name] = json.load(f), dict(np.load(os.path.join(out, "result.npz")))
    return results


def _max_diff(a, b):
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """All the MPI tests' trainings: one ``mpiexec -n 2`` launch, then one single-process launch."""
    _mpiexec()
    root = tmp_path_factory.mktemp("mpi")
    two = _launch(root, {
        "two": [], "two_f32": ["--dtype", "float32"], "z1": ["--zero-stage", 1], "z2": ["--zero-stage", 2],
        "z2_ckpt": ["--steps", 2, "--zero-stage", 2],  # its step-2 checkpoint resumes on one process below
        "two_bf16": ["--dtype", "float32", "--precision", "bf16", "--zero-stage", 1],
        "two_fp16": ["--dtype", "float32", "--precision", "fp16", "--zero-stage", 2],
        "two_masked": ["--masked", "--grad-accum", 2],
    }, ranks=2)
    one = _launch(root, {
        "one": [], "one_f32": ["--dtype", "float32"], "resumed": ["--out", root / "z2_ckpt", "--resume"],
        "one_bf16": ["--dtype", "float32", "--precision", "bf16"],
        "one_fp16": ["--dtype", "float32", "--precision", "fp16"],
        "one_masked": ["--masked", "--grad-accum", 2],
    }, ranks=1)
    return {**two, **one}


def test_data_parallel_on_two_ranks_equals_one_process_float64(runs):
    (one, w1), (two, w2) = runs["one"], runs["two"]
    assert two["world_size"] == 2 and one["world_size"] == 1
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=0, atol=1e-10)
    assert _max_diff(w1, w2) < 1e-10
    assert two["replica_drift"] == 0.0  # both replicas hold bit-identical weights


def test_data_parallel_with_masked_targets_equals_one_process(runs):
    """SFT-like batches (each sample's targets start with a random run of -100), with gradient accumulation:
    the ranks' shards hold different numbers of target tokens, and the token-weighted loss
    (``DistributedTrainer._loss_weight``) still makes N=2 the single process's run to float64 rounding."""
    (one, w1), (two, w2) = runs["one_masked"], runs["two_masked"]
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=0, atol=1e-10)
    assert _max_diff(w1, w2) < 1e-10
    assert two["replica_drift"] == 0.0


def test_data_parallel_float32_within_the_stated_tolerance(runs):
    (one, w1), (two, w2) = runs["one_f32"], runs["two_f32"]
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-5)
    assert _max_diff(w1, w2) < 5e-5
    assert two["replica_drift"] == 0.0


@pytest.mark.parametrize("stage", [1, 2])
def test_zero_stage_equals_plain_data_parallel_and_shards_memory(runs, stage):
    (plain, w0), (got, w) = runs["two"], runs[f"z{stage}"]
    np.testing.assert_allclose(got["losses"], plain["losses"], rtol=0, atol=1e-12)
    assert _max_diff(w0, w) < 1e-12
    assert got["replica_drift"] == 0.0
    # bytes each rank held, against the ZeRO paper's formula (float64 here: 8 bytes a value)
    n = got["num_params"]
    full = zero_memory_formula(n, 1, 0, itemsize=8)
    assert [m["gradients"] for m in plain["memory_per_rank"]] == [full["gradients"]] * 2
    assert [m["optimizer_state"] for m in plain["memory_per_rank"]] == [full["optimizer_state"]] * 2
    want = zero_memory_formula(n, 2, stage, itemsize=8)
    for m in got["memory_per_rank"]:  # padding: each of the 2 param groups rounds up to an even size
        assert 0 <= m["gradients"] - want["gradients"] <= 2 * 8 * (1 if stage == 2 else 2)
        assert 0 <= m["optimizer_state"] - want["optimizer_state"] <= 2 * 2 * 8


def test_checkpoint_of_two_ranks_with_zero_resumes_on_one(runs):
    (one, w1), (ckpt, _), (resumed, w) = runs["one"], runs["z2_ckpt"], runs["resumed"]
    assert ckpt["checkpoints"] == ["step_00000002"]  # written by rank 0 alone
    assert resumed["checkpoints"] == ["step_00000002", "step_00000004"]  # one process, plain AdamW
    np.testing.assert_allclose(resumed["losses"], one["losses"][2:], rtol=0, atol=1e-10)
    assert _max_diff(w1, w) < 1e-10


def test_mixed_precision_under_data_parallel_and_zero(runs):
    """bf16 with ZeRO-1 and fp16 with ZeRO-2 on 2 ranks, against the same precision on 1 process.

    Not equal to rounding: each rank rounds *its* gradient to bf16/fp16 before the average, one
    process rounds the whole batch's, so a step differs by about one low-precision rounding (2**-9
    relative for bf16, 2**-11 for fp16) of the gradient. Over 4 steps of lr 3e-3 that moves the loss by
    well under 0.01 nats (we assert 0.01; measured: bf16 9e-5, fp16 2e-3 = half a float16 ulp of a loss of 4); the replicas stay bit-identical, and fp16's overflowing first
    step (loss scale 65536) is skipped by *both* ranks -- with ZeRO-2 each saw only its gradient shard,
    so ``ShardedGradScaler`` all-reduces the verdict.
    """
    for name in ("bf16", "fp16"):
        (one, w1), (two, w2) = runs[f"one_{name}"], runs[f"two_{name}"]
        assert two["replica_drift"] == 0.0, name
        np.testing.assert_allclose(two["losses"], one["losses"], rtol=0, atol=0.01, err_msg=name)
        assert all(v.dtype == np.float32 for v in w2.values())  # master weights
    assert runs["two_fp16"][0]["skipped_steps"] == runs["one_fp16"][0]["skipped_steps"] == 1
    assert runs["two_fp16"][0]["loss_scale"] == runs["one_fp16"][0]["loss_scale"] == 2.0**15


def test_data_parallel_example_quick(tmp_path):
    _mpiexec()
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "data_parallel.py"), "--quick", "--out-dir",
                           str(tmp_path)], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split() for line in proc.stdout.splitlines() if line[:5].strip().isdigit()]
    assert [(r[0], r[1]) for r in rows] == [("1", "0"), ("2", "0"), ("2", "1"), ("2", "2")]
    assert all(float(r[2]) < 1e-5 for r in rows)  # every run's losses equal the 1-rank run's (float32)
    assert all(r[6] == r[8] and r[7] == r[9] for r in rows)  # measured bytes per rank == the paper's formula
    assert "tokens per second" in proc.stdout


def test_train_tiny_llama_example_on_two_ranks_equals_one_process(tmp_path):
    """``mpiexec -n 2 python examples/train_tiny_llama.py`` (shrunk below --quick): rank 0 alone prints and
    writes, and the result is the 1-process run's. Pretraining (full-length blocks) agrees to float32
    summation order: validation loss within 1e-5 relative (measured 2e-8). So does SFT, whose ranks hold
    different numbers of reply tokens: each rank's loss is weighted by its share of them
    (``DistributedTrainer._loss_weight``); its training and validation losses within 1e-5 relative
    (measured: equal, and 1e-8)."""
    mpiexec = _mpiexec()
    example = os.path.join(ROOT, "examples", "train_tiny_llama.py")
    small = ["--quick", "--n-stories", "300", "--n-sft", "120", "--vocab-size", "300", "--block-size", "64",
             "--pretrain-steps", "4", "--sft-steps", "1", "--eval-limit", "2", "--no-progress"]
    env = {**_env(), "PYTHONPATH": ROOT, "NUMBA_NUM_THREADS": "1"}
    procs = {n: subprocess.Popen(cmd + [example, *small, "--out-dir", str(tmp_path / n)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=env)
             for n, cmd in (("one", [sys.executable]), ("two", [mpiexec, "-n", "2", sys.executable]))}
    out = {}
    for n, proc in procs.items():  # both at once: the 1-process run leaves a core idle
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, n + stdout[-2000:] + stderr[-3000:]
        out[n] = stdout
    assert out["two"].count("=== 1. corpus") == 1 and out["two"].count("held-out exact match after SFT") == 1
    one, two = ({**json.loads((tmp_path / n / "report.json").read_text()), "dir": tmp_path / n} for n in ("one", "two"))
    assert sorted(os.listdir(two["dir"])) == sorted(os.listdir(one["dir"]))
    assert two["pretrain"]["val_loss"] == pytest.approx(one["pretrain"]["val_loss"], rel=1e-5)

    def sft_losses(report):
        records = list(map(json.loads, open(report["dir"] / "sft" / "metrics.jsonl")))
        return [r[k] for r in records for k in ("train_loss", "val_loss") if k in r]

    np.testing.assert_allclose(sft_losses(two), sft_losses(one), rtol=1e-5)
    records = [json.loads(line) for line in open(two["dir"] / "pretrain" / "metrics.jsonl")]
    assert records[0]["world_size"] == 2


def test_cli_pretrain_under_mpiexec_then_resume_on_one_process(tmp_path):
    """``mpiexec -n 2 python -m minillm pretrain --bf16`` trains with ZeRO-1 and rank 0 saves the model;
    the checkpoint it wrote resumes in one process (in float32: a run may change precision on resume)."""
    mpiexec = _mpiexec()
    from minillm.data.world import generate_stories
    from minillm.tokenizers import BPETokenizer

    stories = generate_stories(60, split="train")
    for name, texts in (("tr.jsonl", stories[:50]), ("va.jsonl", stories[50:])):
        (tmp_path / name).write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    BPETokenizer.train(stories[:50], vocab_size=300, show_progress=False).save(str(tmp_path / "tok"))
    common = ["-m", "minillm", "pretrain", "--data", str(tmp_path / "tr.jsonl"), "--val", str(tmp_path / "va.jsonl"),
              "--tokenizer", str(tmp_path / "tok"), "--out", str(tmp_path / "run"), "--block-size", "32",
              "--gradient-checkpointing", "--batch-size", "4", "--no-progress", "--lr-decay-steps", "2", "--warmup-steps", "1"]
    env = {**os.environ, "PYTHONPATH": ROOT, "OPENBLAS_NUM_THREADS": "1"}
    for var in ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE"):
        env.pop(var, None)
    proc = subprocess.run([mpiexec, "-n", "2", sys.executable, *common, "--steps", "2", "--zero-stage", "1", "--bf16"],
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.count("validation loss") == 1  # rank 0 alone reports
    assert "2 ranks x 2 sequences, ZeRO stage 1" in proc.stdout
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["world_size"] == 2 and records[0]["zero_stage"] == 1
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["bf16"] is True  # --bf16 reached the Trainer
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()
    proc = subprocess.run([sys.executable, *common, "--steps", "3", "--resume"], capture_output=True, text=True,
                          timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["step_00000002", "step_00000003"]


def test_an_error_on_one_rank_ends_the_job_instead_of_hanging(tmp_path):
    mpiexec = _mpiexec()
    proc = subprocess.run([mpiexec, "-n", "2", sys.executable, WORKER, "--out", str(tmp_path), "--fail-on-rank", "1"],
                          capture_output=True, text=True, timeout=240, env=_env())
    assert proc.returncode != 0
    assert "injected failure on rank 1 -- aborting all 2 ranks" in proc.stderr
