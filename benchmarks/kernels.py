"""Benchmark minillm's kernels: NumPy reference vs Numba vs PyTorch eager (if importable).

    python benchmarks/kernels.py                 # table, 2 threads
    python benchmarks/kernels.py --json out.json --threads 2 --repeats 7

Sizes are the tiny model's (B=8, T=256, H=4, n_kv=2, D=32, dim=128, vocab=2048)
and the small model's (dim=288, H=6, n_kv=2, D=48, vocab=4096).  Every number is
the median of --repeats runs after one warm-up (which also compiles), all in one
process, with the same thread count for OpenBLAS (threadpoolctl), Numba and torch.
"""
import os
import sys

# Threads that spin after a parallel region steal the other core from the next library's kernel.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json
import math  # noqa: E402
import platform  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # run from a checkout
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import median_time  # noqa: E402

SIZES = {
    "tiny": dict(B=8, T=256, H=4, n_kv=2, D=32, dim=128, vocab=2048),
    "small": dict(B=8, T=256, H=6, n_kv=2, D=48, dim=288, vocab=4096),
}
PEAK_FLOP_PER_CYCLE = 32  # FP32: 2 FMA pipes x 8 lanes x 2 FLOP (AVX2, Zen 3)


def hidden_dim(dim, multiple_of=64):  # the book's MLP: 4*dim -> 2/3 -> round up to multiple_of
    h = int(2 * (4 * dim) / 3)
    return multiple_of * ((h + multiple_of - 1) // multiple_of)


def set_threads(n):
    import numba

    import minillm  # first: it picks Numba's non-spinning threading layer before the threads start

    minillm.tune_malloc()  # reuse freed buffers across repeats, as in training

    numba.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:
        pass
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:
        pass


def cases(cfg, dtype=np.float32):
    """Yield (kernel, pass, numpy_fn, numba_fn, torch_fn_or_None)."""
    from minillm.kernels import _attention, _elementwise, _norms, _optim, _softmax
    from minillm.kernels import reference as R

    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        torch = None
    B, T, H, Hkv, D, dim, V = (cfg[k] for k in ("B", "T", "H", "n_kv", "D", "dim", "vocab"))
    hid = hidden_dim(dim)
    rng = np.random.default_rng(0)

    def arr(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(dtype)

    def tt(a, grad=False):
        return torch.from_numpy(a).requires_grad_(grad)

    def torch_bwd(out, inputs, g):
        return lambda: torch.autograd.grad(out, inputs, g, retain_graph=True)

    # softmax on attention-score rows (B*H*T, T)
    x = arr(B * H * T, T, scale=3)
    gy = arr(B * H * T, T)
    y = R.softmax_forward(x)
    tx = ty = None
    if torch:
        tx = tt(x, True)
        ty = torch.softmax(tx, -1)
    yield ("softmax", "fwd", lambda: R.softmax_forward(x), lambda: _softmax.softmax_forward(x),
           torch and (lambda: torch.softmax(tt(x), -1)))
    yield ("softmax", "bwd", lambda: R.softmax_backward(y, gy), lambda: _softmax.softmax_backward(y, gy),
           torch and torch_bwd(ty, tx, tt(gy)))

    # cross-entropy on the logits (B*T, vocab), 5 % ignored targets
    logits = arr(B * T, V, scale=2)
    target = rng.integers(0, V, B * T)
    target[rng.random(B * T) < 0.05] = -100
    gl = np.full(B * T, 1.0 / (B * T), dtype)
    loss, lse = R.cross_entropy_forward(logits, target, -100, 0.0)
    tl = tloss = None
    if torch:
        tl = tt(logits, True)
        tloss = F.cross_entropy(tl, torch.from_numpy(target), ignore_index=-100, reduction="none")
    yield ("cross_entropy", "fwd", lambda: R.cross_entropy_forward(logits, target, -100, 0.0),
           lambda: _softmax.cross_entropy_forward(logits, target, -100, 0.0),
           torch and (lambda: F.cross_entropy(tt(logits), torch.from_numpy(target), ignore_index=-100, reduction="none")))
    yield ("cross_entropy", "bwd", lambda: R.cross_entropy_backward(logits, target, lse, gl, -100, 0.0),
           lambda: _softmax.cross_entropy_backward(logits, target, lse, gl, -100, 0.0),
           torch and torch_bwd(tloss, tl, tt(gl)))

    # RMSNorm on (B, T, dim)
    xn = arr(B, T, dim)
    w = arr(dim)
    gyn = arr(B, T, dim)
    _, rstd = R.rmsnorm_forward(xn, w, 1e-5)
    if torch:
        txn, tw = tt(xn, True), tt(w, True)
        tyn = F.rms_norm(txn, (dim,), tw, 1e-5)
    yield ("rmsnorm", "fwd", lambda: R.rmsnorm_forward(xn, w, 1e-5), lambda: _norms.rmsnorm_forward(xn, w, 1e-5),
           torch and (lambda: F.rms_norm(tt(xn), (dim,), tt(w), 1e-5)))
    yield ("rmsnorm", "bwd", lambda: R.rmsnorm_backward(xn, w, rstd, gyn), lambda: _norms.rmsnorm_backward(xn, w, rstd, gyn),
           torch and torch_bwd(tyn, (txn, tw), tt(gyn)))

    # RoPE on q (B, T, H, D)
    xr = arr(B, T, H, D)
    gyr = arr(B, T, H, D)
    ang = np.outer(np.arange(T), 1.0 / 10000 ** (np.arange(0, D, 2) / D))
    cos, sin = np.cos(ang).astype(dtype), np.sin(ang).astype(dtype)

    def torch_rope(x, c, s):  # interleaved pairs, as the book (real arithmetic instead of complex)
        x0, x1 = x[..., 0::2], x[..., 1::2]
        c, s = c[None, :, None, :], s[None, :, None, :]
        return torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1).flatten(-2)

    if torch:
        txr = tt(xr, True)
        tyr = torch_rope(txr, tt(cos), tt(sin))
    yield ("rope", "fwd", lambda: R.rope_forward(xr, cos, sin), lambda: _elementwise.rope_forward(xr, cos, sin),
           torch and (lambda: torch_rope(tt(xr), tt(cos), tt(sin))))
    yield ("rope", "bwd", lambda: R.rope_backward(gyr, cos, sin), lambda: _elementwise.rope_backward(gyr, cos, sin),
           torch and torch_bwd(tyr, txr, tt(gyr)))

    # SwiGLU on (B, T, hidden)
    a = arr(B, T, hid)
    b = arr(B, T, hid)
    gys = arr(B, T, hid)
    if torch:
        ta, tb = tt(a, True), tt(b, True)
        tys = F.silu(ta) * tb
    yield ("swiglu", "fwd", lambda: R.swiglu_forward(a, b), lambda: _elementwise.swiglu_forward(a, b),
           torch and (lambda: F.silu(tt(a)) * tt(b)))
    yield ("swiglu", "bwd", lambda: R.swiglu_backward(a, b, gys), lambda: _elementwise.swiglu_backward(a, b, gys),
           torch and torch_bwd(tys, (ta, tb), tt(gys)))

    # causal GQA attention
    q = arr(B, H, T, D)
    k = arr(B, Hkv, T, D)
    v = arr(B, Hkv, T, D)
    go = arr(B, H, T, D)
    scale = 1 / math.sqrt(D)
    out, lse_a = _attention.attention_forward(q, k, v, None, True, scale)
    if torch:
        tq, tk, tv = tt(q, True), tt(k, True), tt(v, True)
        to = F.scaled_dot_product_attention(tq, tk, tv, is_causal=True, enable_gqa=True)
    yield ("attention", "fwd", lambda: R.attention_forward(q, k, v, None, True, scale),
           lambda: _attention.attention_forward(q, k, v, None, True, scale),
           torch and (lambda: F.scaled_dot_product_attention(tt(q), tt(k), tt(v), is_causal=True, enable_gqa=True)))
    yield ("attention", "bwd", lambda: R.attention_backward(q, k, v, None, True, scale, out, lse_a, go),
           lambda: _attention.attention_backward(q, k, v, None, True, scale, out, lse_a, go),
           torch and torch_bwd(to, (tq, tk, tv), tt(go)))

    def torch_attn_fb():
        q_, k_, v_ = tt(q, True), tt(k, True), tt(v, True)
        o_ = F.scaled_dot_product_attention(q_, k_, v_, is_causal=True, enable_gqa=True)
        return torch.autograd.grad(o_, (q_, k_, v_), tt(go))

    def numba_attn_fb():
        o_, l_ = _attention.attention_forward(q, k, v, None, True, scale)
        return _attention.attention_backward(q, k, v, None, True, scale, o_, l_, go)

    def numpy_attn_fb():
        o_, l_ = R.attention_forward(q, k, v, None, True, scale)
        return R.attention_backward(q, k, v, None, True, scale, o_, l_, go)

    yield ("attention", "fwd+bwd", numpy_attn_fb, numba_attn_fb, torch and torch_attn_fb)

    # embedding backward (B*T ids into a vocab x dim table)
    ids = rng.integers(0, V, B * T)
    ge = arr(B * T, dim)
    if torch:
        tW = tt(arr(V, dim), True)
        te = F.embedding(torch.from_numpy(ids), tW)
    yield ("embedding", "bwd", lambda: R.embedding_backward(ids, ge, V), lambda: _elementwise.embedding_backward(ids, ge, V),
           torch and torch_bwd(te, tW, tt(ge)))

    # AdamW on 2 * vocab * dim parameters (embedding + output head)
    n = 2 * V * dim
    p1, g1, m1, v1 = arr(n), arr(n), np.zeros(n, dtype), np.zeros(n, dtype)
    p2, m2, v2 = p1.copy(), m1.copy(), v1.copy()
    topt = None
    if torch:
        tp = torch.nn.Parameter(torch.from_numpy(p1.copy()))
        tp.grad = torch.from_numpy(g1)
        topt = torch.optim.AdamW([tp], lr=1e-3, weight_decay=0.1)
    yield ("adamw", "step", lambda: R.adamw_step(p1, g1, m1, v1, 3, 1e-3, 0.9, 0.95, 1e-8, 0.1),
           lambda: _optim.adamw_step(p2, g1, m2, v2, 3, 1e-3, 0.9, 0.95, 1e-8, 0.1), topt and topt.step)


def matmul_rows(repeats, threads, ghz):
    from minillm import kernels as K

    try:
        import torch
    except ImportError:
        torch = None
    peak = threads * ghz * PEAK_FLOP_PER_CYCLE
    rng = np.random.default_rng(0)
    # One shape per class the training step meets (M, N, K >= 512; a 2-D weight; batched
    # attention products; tiny per-call-overhead-bound ones): if the Numba GEMM ever wins a
    # class, kernels.matmul should dispatch that class to it. Today BLAS wins all of them.
    shapes = {  # name -> (class, a shape, b shape, trans_b)
        "large 1024^3": ("large", (1024, 1024), (1024, 1024), False),
        "linear tiny (B*T,128)@(384,128)^T": ("linear", (2048, 128), (384, 128), True),
        "linear small (B*T,288)@(768,288)^T": ("linear", (2048, 288), (768, 288), True),
        "batched QK^T tiny (32,256,32)": ("batched", (32, 256, 32), (32, 256, 32), True),
        "tiny 16x16x16 x64": ("tiny", (64, 16, 16), (64, 16, 16), False),
    }
    rows = []
    for name, (cls, sa, sb, tb) in shapes.items():
        a = rng.standard_normal(sa).astype(np.float32)
        b = rng.standard_normal(sb).astype(np.float32)
        M, Kd = sa[-2], sa[-1]
        N = sb[-2] if tb else sb[-1]
        flops = 2 * M * N * Kd * int(np.prod(sa[:-2] or (1,)))
        row = {"shape": name, "class": cls}
        row["blas_s"] = median_time(lambda: K.reference.matmul(a, b, False, tb), repeats)
        row["numba_s"] = median_time(lambda: K.matmul_numba(a, b, False, tb), repeats)
        row["default_s"] = median_time(lambda: K.matmul(a, b, False, tb), repeats)  # kernels.matmul: BLAS
        if torch:
            ta, tbt = torch.from_numpy(a), torch.from_numpy(b)
            row["torch_s"] = median_time(lambda: torch.matmul(ta, tbt.transpose(-1, -2) if tb else tbt), repeats)
        for key in ("blas", "numba", "default", "torch"):
            if f"{key}_s" in row:
                row[f"{key}_gflops"] = flops / row[f"{key}_s"] / 1e9
        row["default_pct_peak"] = 100 * row["default_gflops"] / peak
        rows.append(row)
    return rows, peak


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--ghz", type=float, default=2.45, help="nominal clock for the FP32 peak")
    ap.add_argument("--sizes", default="tiny,small")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    set_threads(args.threads)
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = None
    results = {"threads": args.threads, "machine": platform.processor() or platform.machine(),
               "torch": torch_version, "kernels": [], "matmul": None}
    print(f"threads={args.threads}  torch={torch_version}  (times: median ms; speedup = numpy / numba, numba vs torch = torch / numba)")
    header = f"{'size':6} {'kernel':14} {'pass':8} {'numpy ms':>9} {'numba ms':>9} {'torch ms':>9} {'vs numpy':>9} {'vs torch':>9}"
    print(header)
    print("-" * len(header))
    for size in args.sizes.split(","):
        for name, pas, f_np, f_nb, f_t in cases(SIZES[size]):
            t_np = median_time(f_np, args.repeats)
            t_nb = median_time(f_nb, args.repeats)
            t_t = median_time(f_t, args.repeats) if f_t else None
            r = {"size": size, "kernel": name, "pass": pas, "numpy_ms": t_np * 1e3, "numba_ms": t_nb * 1e3,
                 "torch_ms": t_t * 1e3 if t_t else None, "speedup_vs_numpy": t_np / t_nb,
                 "speedup_vs_torch": t_t / t_nb if t_t else None}
            results["kernels"].append(r)
            tt_ = f"{r['torch_ms']:9.3f}" if t_t else f"{'-':>9}"
            vt = f"{r['speedup_vs_torch']:8.2f}x" if t_t else f"{'-':>9}"
            print(f"{size:6} {name:14} {pas:8} {r['numpy_ms']:9.3f} {r['numba_ms']:9.3f} {tt_} {r['speedup_vs_numpy']:8.2f}x {vt}")
    rows, peak = matmul_rows(args.repeats, args.threads, args.ghz)
    results["matmul"] = {"peak_gflops": peak, "rows": rows}
    print(f"\nmatmul float32, GFLOP/s (peak {peak:.0f} = {args.threads} cores x {args.ghz} GHz x {PEAK_FLOP_PER_CYCLE} FLOP/cycle)")
    print(f"{'shape':40} {'class':8} {'blas':>7} {'numba':>7} {'default':>8} {'torch':>7} {'% peak':>7}")
    for r in rows:
        t = f"{r['torch_gflops']:7.1f}" if "torch_gflops" in r else f"{'-':>7}"
        print(f"{r['shape']:40} {r['class']:8} {r['blas_gflops']:7.1f} {r['numba_gflops']:7.1f} {r['default_gflops']:8.1f} {t} {r['default_pct_peak']:6.0f}%")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
