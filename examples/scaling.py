"""Happy LLM 4.1: how loss falls with compute, measured on the built-in world.

    python examples/scaling.py          # 3 model sizes × 3 token budgets (a few minutes on 2 idle cores)
    python examples/scaling.py --quick  # a smoke run in seconds

Every run pretrains a fresh LLaMA2 of one size for one number of tokens D, then measures the
held-out loss L. Its compute is C = 6·N·D (minillm/scaling.py; N counted from the config and
checked equal to the modules). A power law L(C) = a·C^(-b) is fitted to the compute frontier
(the best loss reached at each budget) and saved with every run as OUT/scaling.png
(log10 C across, log10 L up; one colour per model size, the fit in grey... see the legend printed).
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

import minillm as mi  # noqa: E402
from minillm import pipeline  # noqa: E402
from minillm.data import DataLoader, PretrainDataset, build_token_file, read_pretrain_texts  # noqa: E402
from minillm.models.llama import ModelConfig, Transformer  # noqa: E402
from minillm.plot import PALETTE, lines_png  # noqa: E402
from minillm.scaling import chinchilla_optimal, count_parameters, fit_power_law, flops_per_token, training_flops  # noqa: E402
from minillm.train import Trainer, TrainConfig, check_out_dir  # noqa: E402

SIZES = {  # name -> (dim, n_layers, n_heads, n_kv_heads)
    "d32": (32, 2, 4, 2), "d64": (64, 2, 4, 2), "d128": (128, 4, 4, 2),
}
DEFAULTS = dict(sizes=["d32", "d64", "d128"], steps=[40, 120, 360], n_stories=6000, vocab_size=1024, block_size=128,
                batch_size=8, eval_batches=20)
QUICK = dict(sizes=["d32", "d64"], steps=[4, 8], n_stories=400, vocab_size=320, block_size=64, batch_size=4,
             eval_batches=2)


def parse_args(argv=None):
    p = pipeline.example_parser(__doc__, out_dir="runs/scaling", progress=False, overwrite_help="replace an earlier run in --out-dir")
    p.add_argument("--sizes", nargs="+", choices=sorted(SIZES), help="model sizes to train")
    p.add_argument("--steps", nargs="+", type=int, help="token budgets, in optimizer steps of batch×block tokens")
    args = p.parse_args(argv)
    return pipeline.apply_defaults(args, QUICK if args.quick else DEFAULTS)  # and the settings without a flag


def main(argv=None):
    args = parse_args(argv)
    mi.tune_malloc()
    check_out_dir(args.out_dir, overwrite=args.overwrite)
    os.makedirs(args.out_dir, exist_ok=True)
    t0 = time.time()
    paths = pipeline.prepare_corpus(os.path.join(args.out_dir, "data"), n_stories=args.n_stories, n_sft=10, seed=args.seed)
    tok = pipeline.train_tokenizer(paths["pretrain_train"], args.vocab_size, show_progress=False)
    bins = {}
    for split in ("train", "val"):
        bins[split] = os.path.join(args.out_dir, f"{split}.bin")
        build_token_file(read_pretrain_texts(paths[f"pretrain_{split}"]), tok, bins[split], show_progress=False)
    train_ds, val_ds = PretrainDataset(bins["train"], args.block_size), PretrainDataset(bins["val"], args.block_size)
    tokens_per_step = args.batch_size * args.block_size
    print(f"corpus: {len(train_ds) * args.block_size:,} training tokens; vocab {tok.vocab_size}; "
          f"{tokens_per_step} tokens per step")

    runs = []
    print(f"{'size':>6} {'params N':>10} {'FLOPs/token':>12} {'tokens D':>9} {'C = 6ND':>10} {'val loss':>9} {'seconds':>8}")
    for size in args.sizes:
        dim, n_layers, n_heads, n_kv = SIZES[size]
        cfg = ModelConfig(dim=dim, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv, vocab_size=tok.vocab_size,
                          max_seq_len=args.block_size)
        n = count_parameters(cfg)
        for steps in args.steps:
            mi.manual_seed(args.seed)
            model = Transformer(cfg)
            assert model.num_parameters() == n  # the formula and the modules agree
            out = os.path.join(args.out_dir, f"{size}_{steps}")
            tcfg = TrainConfig(out_dir=out, max_steps=steps, lr=3e-3, min_lr=3e-4, warmup_steps=max(1, steps // 10),
                               eval_interval=0, checkpoint_interval=0, keep_last=1, progress=False, plot=False,
                               overwrite=True, eval_batches=args.eval_batches, seed=args.seed)
            loader = DataLoader(train_ds, args.batch_size, shuffle=True, seed=args.seed, drop_last=True)
            val = DataLoader(val_ds, args.batch_size, shuffle=False, drop_last=True)
            t = time.time()
            trainer = Trainer(model, None, loader, val, tcfg)
            trainer.train()
            loss = trainer.evaluate()["val_loss"]
            d = steps * tokens_per_step
            c = training_flops(n, d)
            runs.append({"size": size, "n_params": n, "tokens": d, "compute": c, "val_loss": loss,
                         "flops_per_token": flops_per_token(cfg, args.block_size)})
            print(f"{size:>6} {n:>10,} {flops_per_token(cfg, args.block_size):>12.3g} {d:>9,} {c:>10.3g} {loss:>9.4f} "
                  f"{time.time() - t:>8.1f}", flush=True)

    # the compute frontier: sort by compute, keep a run only if it beats every cheaper run
    frontier, best = [], np.inf
    for r in sorted(runs, key=lambda r: r["compute"]):
        if r["val_loss"] < best:
            frontier.append(r)
            best = r["val_loss"]
    fit = fit_power_law([r["compute"] for r in frontier], [r["val_loss"] for r in frontier]) if len(frontier) >= 2 else None
    series = []
    for size in args.sizes:
        mine = [r for r in runs if r["size"] == size]
        series.append(([np.log10(r["compute"]) for r in mine], [np.log10(r["val_loss"]) for r in mine]))
    if fit:
        xs = np.linspace(np.log10(min(r["compute"] for r in runs)), np.log10(max(r["compute"] for r in runs)), 20)
        series.append((xs, np.log10(fit["a"]) - fit["b"] * xs))
    lines_png(os.path.join(args.out_dir, "scaling.png"), series)
    names = ["blue", "orange", "green", "red", "purple"]
    legend = ", ".join(f"{names[i]} = {s}" for i, s in enumerate(args.sizes))
    if fit:
        legend += f", {names[len(args.sizes)] if len(args.sizes) < len(names) else 'last'} = the fit"
        print(f"\npower law on the compute frontier ({len(frontier)} runs): L(C) = {fit['a']:.3g} · C^(-{fit['b']:.4f}), "
              f"R² {fit['r2']:.3f} (in log space)")
        big = max(r["compute"] for r in runs)
        opt = chinchilla_optimal(big)
        print(f"Chinchilla's rule for the largest budget C = {big:.3g}: N ≈ {opt['n_params']:,.0f} parameters on "
              f"D ≈ {opt['n_tokens']:,.0f} tokens")
    print(f"plot: {args.out_dir}/scaling.png (log10 C across, log10 validation loss up; {legend})")
    with open(os.path.join(args.out_dir, "report.json"), "w", encoding="utf-8") as f:
        json.dump({"runs": runs, "frontier": [r["size"] + f"_{r['tokens']}" for r in frontier], "fit": fit,
                   "palette": PALETTE[: len(series)]}, f, indent=1)
    print(f"done in {(time.time() - t0) / 60:.1f} minutes")
    return {"runs": runs, "fit": fit}


if __name__ == "__main__":
    main()
