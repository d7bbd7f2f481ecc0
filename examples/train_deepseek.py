"""Pretrain a tiny DeepSeek-style MoE model with multi-head latent attention, with and without
load balancing, next to a dense model with the same *active* parameters (Happy LLM 3.3.4).

    python examples/train_deepseek.py            # the default run (minutes on 2 idle cores)
    python examples/train_deepseek.py --quick    # a smoke run (seconds)

Steps:
  1. the built-in world corpus and a byte-level BPE (``pipeline``);
  2. three MoE models (``minillm.models.deepseek``: 8 routed experts, 2 per token, 1 shared,
     MLA attention) pretrained with ``pipeline.pretrain`` for the same steps:
       - balanced by V2's expert-level auxiliary loss (α = ``--alpha``),
       - balanced by V3's auxiliary-loss-free bias (γ = 0.001 per step),
       - not balanced at all;
     and a dense model whose SwiGLU MLP is as wide as the experts one token uses
     ((k + shared)·moe_intermediate_size), i.e. equal active parameters per token;
  3. validation loss of each, the expert load per layer over training (the share of the
     busiest expert, 1/E when perfectly balanced) and a PNG per model (rows: training time,
     columns: experts of each layer, darker = more tokens);
  4. the per-token KV-cache bytes of MHA, GQA, MQA and MLA at this model size, by formula and as
     allocated by the models' ``new_kv_cache``.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

import minillm as mi  # noqa: E402
from minillm import pipeline  # noqa: E402
from minillm._files import atomic_write  # noqa: E402
from minillm.models.deepseek import DeepseekConfig, DeepseekForCausalLM, kv_cache_bytes_per_token  # noqa: E402
from minillm.models.llama import ModelConfig, Transformer  # noqa: E402
from minillm.plot import heatmap_rgb, write_png  # noqa: E402
from minillm.train import TrainConfig  # noqa: E402

DEFAULTS = dict(n_stories=20_000, vocab_size=1024, block_size=128, batch_size=4, steps=120, lr=3e-3, alpha=0.01)
QUICK = dict(n_stories=600, vocab_size=320, block_size=64, batch_size=4, steps=4, lr=3e-3, alpha=0.01)


def parse_args(argv=None):
    p = pipeline.example_parser(__doc__, out_dir="runs/tiny_deepseek")  # --quick, --out-dir, --seed, --no-progress
    pipeline.add_setting_flags(p, DEFAULTS)  # --n-stories, --vocab-size, ...
    args = p.parse_args(argv)
    return pipeline.apply_defaults(args, QUICK if args.quick else DEFAULTS)  # what the command line left out


def configs(vocab_size: int, max_seq_len: int, alpha: float) -> dict:
    base = DeepseekConfig.preset("tiny", vocab_size=vocab_size, max_seq_len=max_seq_len)
    active_width = (base.num_experts_per_tok + base.n_shared_experts) * base.moe_intermediate_size
    common = {**base.to_dict()}
    return {
        "MoE + balance loss": DeepseekConfig(**{**common, "aux_loss_alpha": alpha}),
        "MoE + aux-free bias": DeepseekConfig(**{**common, "aux_loss_alpha": 0.0, "topk_method": "noaux_tc",
                                                 "bias_update_speed": 0.001}),
        "MoE, no balancing": DeepseekConfig(**{**common, "aux_loss_alpha": 0.0}),
        "dense, equal active": DeepseekConfig(**{**common, "n_routed_experts": 0, "intermediate_size": active_width}),
    }


def active_parameters(model) -> int:
    """Parameters one token uses: all of them minus the routed experts it does not visit."""
    total = model.num_parameters()
    c = model.config
    per_expert = 3 * c.hidden_size * c.moe_intermediate_size
    idle = (c.n_routed_experts - c.num_experts_per_tok) * per_expert
    return total - idle * len(model.moe_layers())


def busiest_share(history: list, k: int) -> np.ndarray:
    """(steps,) share of the (token, slot) pairs that went to the busiest expert."""
    h = np.array(history, dtype=np.float64)  # (steps, E)
    return h.max(axis=1) / h.sum(axis=1) if len(h) else np.zeros(0)


def load_picture(model, path: str, rows: int = 40) -> None:
    """Rows = training time (averaged into ``rows`` buckets), columns = experts, layer after layer."""
    blocks = []
    for moe in model.moe_layers():
        h = np.array(moe.gate.load_history, dtype=np.float64)  # (steps, E)
        h = h / h.sum(axis=1, keepdims=True)
        buckets = np.array_split(h, min(rows, len(h)))
        blocks.append(np.stack([b.mean(axis=0) for b in buckets]))  # (rows, E)
        blocks.append(np.zeros((blocks[-1].shape[0], 1)))  # a white column between layers
    write_png(path, heatmap_rgb(np.concatenate(blocks[:-1], axis=1), cell=8))


def kv_table(cfg: DeepseekConfig, max_len: int = 64) -> list:
    """(kind, formula bytes/token, allocated bytes/token) at this model's size (float32)."""
    H, L, C = cfg.num_attention_heads, cfg.num_hidden_layers, cfg.hidden_size
    d = C // H
    rows = []
    for kind, n_kv in (("MHA", H), ("GQA", max(1, H // 2)), ("MQA", 1)):
        llama = Transformer(ModelConfig(dim=C, n_layers=L, n_heads=H, n_kv_heads=n_kv, vocab_size=cfg.vocab_size, max_seq_len=max_len))
        measured = sum(c.nbytes for c in llama.new_kv_cache(1, max_len)) / max_len
        rows.append((f"{kind} ({n_kv} K/V heads of {d})", kv_cache_bytes_per_token(kind, L, H, d, n_kv_heads=n_kv), measured))
    mla = DeepseekForCausalLM(DeepseekConfig(**{**cfg.to_dict(), "max_seq_len": max_len}))
    measured = sum(c.nbytes for c in mla.new_kv_cache(1, max_len)) / max_len
    rows.append((f"MLA (r={cfg.kv_lora_rank} + d_rope={cfg.qk_rope_head_dim})",
                 kv_cache_bytes_per_token("MLA", L, H, d, kv_lora_rank=cfg.kv_lora_rank, qk_rope_head_dim=cfg.qk_rope_head_dim),
                 measured))
    return rows


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    show = not args.no_progress
    t0 = time.time()

    print("\n=== 1. corpus and tokenizer ===", flush=True)
    paths = pipeline.prepare_corpus(os.path.join(args.out_dir, "data"), n_stories=args.n_stories, n_sft=100, seed=args.seed)
    tok = pipeline.train_tokenizer(paths["pretrain_train"], args.vocab_size, os.path.join(args.out_dir, "tokenizer"), show_progress=False)
    print(f"vocab size {tok.vocab_size}")

    results = {}
    for name, cfg in configs(tok.vocab_size, args.block_size, args.alpha).items():
        print(f"\n=== 2. {name}: {args.steps} steps of {args.batch_size}×{args.block_size} tokens ===", flush=True)
        mi.manual_seed(args.seed)
        model = DeepseekForCausalLM(cfg)
        slug = name.replace(" + ", "_").replace(", ", "_").replace(" ", "_").replace("-", "_")  # "MoE_no_balancing"
        tcfg = TrainConfig(out_dir=os.path.join(args.out_dir, slug), max_steps=args.steps, lr=args.lr, min_lr=args.lr / 10,
                           warmup_steps=max(1, args.steps // 20), eval_interval=max(1, args.steps // 2), eval_batches=10,
                           checkpoint_interval=0, keep_last=1, seed=args.seed, progress=show, overwrite=True)
        t1 = time.time()
        trainer = pipeline.pretrain(model, tok, paths, tcfg, block_size=args.block_size, batch_size=args.batch_size, prompts=())
        secs = time.time() - t1
        val = trainer.evaluate()["val_loss"]
        shares = [busiest_share(m.gate.load_history, cfg.num_experts_per_tok) for m in model.moe_layers()]
        tail = max(1, args.steps // 5)
        results[name] = {"val_loss": val, "params": model.num_parameters(), "active_params": active_parameters(model),
                         "seconds": secs, "busiest_expert_share_last20pct": [float(s[-tail:].mean()) for s in shares],
                         "busiest_expert_share_first20pct": [float(s[:tail].mean()) for s in shares]}
        if model.moe_layers():
            load_picture(model, os.path.join(args.out_dir, f"expert_load_{slug}.png"))
        print(f"validation loss {val:.3f}; {model.num_parameters():,} parameters, {active_parameters(model):,} active per token")

    print("\n=== 3. results ===")
    E = DeepseekConfig.preset("tiny").n_routed_experts
    print(f"| model | params | active / token | val loss | busiest expert's share per layer, last 20 % of steps (1/{E} = {1 / E:.3f} is balanced) |")
    print("|---|---:|---:|---:|---|")
    for name, r in results.items():
        share = ", ".join(f"{s:.2f}" for s in r["busiest_expert_share_last20pct"]) or "—"
        print(f"| {name} | {r['params']:,} | {r['active_params']:,} | {r['val_loss']:.3f} | {share} |")

    print("\n=== 4. KV-cache bytes per token (float32, all layers) ===")
    table = kv_table(configs(tok.vocab_size, args.block_size, args.alpha)["MoE + balance loss"])
    print("| attention | formula | allocated |\n|---|---:|---:|")
    for kind, formula, measured in table:
        print(f"| {kind} | {formula:,} | {measured:,.0f} |")

    report = {"args": vars(args), "models": results, "kv_cache_bytes_per_token": [list(r) for r in table],
              "seconds": time.time() - t0}
    atomic_write(os.path.join(args.out_dir, "metrics.json"), json.dumps(report, indent=2, ensure_ascii=False))
    print(f"\nsaved to {args.out_dir} in {time.time() - t0:.0f}s")
    return report


if __name__ == "__main__":
    main()
