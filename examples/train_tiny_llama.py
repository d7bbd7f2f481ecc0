"""Train a tiny LLaMA2 from scratch on your CPU: the whole of Happy LLM chapters 5–6 in one command.

    python examples/train_tiny_llama.py            # the default run (minutes on 2 idle cores; see the README)
    python examples/train_tiny_llama.py --quick    # a ~20-second smoke run

Steps (each one a function in minillm/pipeline.py):
  1. generate the built-in bilingual story world (no download)           5.3.1
  2. train a byte-level BPE tokenizer on it                                5.2
  3. pretrain the `tiny` LLaMA2 (dim 128, 4 layers, GQA, RoPE, SwiGLU)     5.1, 5.3, 6.1
     and save it as OUT_DIR/base_model (the pretrained model, before SFT)
  4. print sample continuations
  5. supervised fine-tuning on question answering, translation and sums   6.2
  6. save the model (safetensors) and tokenizer.json (before any evaluation can fail)
  7. answer held-out questions and report exact-match accuracy (metrics and a loss plot are in OUT_DIR)

A second run in the same --out-dir is refused (it would mix two runs); pass --overwrite to replace it.

The first run after an install compiles the Numba kernels (~13 CPU s, then cached on disk). Meanwhile
a helper process compiles the model's kernels on the idle core while this one trains the tokenizer
(`pipeline.compile_ahead`; MINILLM_COMPILE_AHEAD=0 turns it off).

Data parallel (6.1.5; needs `pip install -e ".[distributed]"`):

    mpiexec -n 2 python examples/train_tiny_llama.py --quick

runs the same recipe on 2 ranks: each reads half of every batch (the batch sizes stay the global
ones), the gradients are averaged, and rank 0 alone prints and writes files (corpus, tokenizer,
models, report). The result equals the 1-process run up to float32 summation order
(tests/test_distributed.py). On one 2-core machine it is not faster: see docs/chapter6.md.
"""
import contextlib
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import minillm as mi  # noqa: E402
from minillm import pipeline  # noqa: E402
from minillm.pipeline import banner  # noqa: E402
from minillm._files import atomic_write  # noqa: E402
from minillm.distributed import init_process_group  # noqa: E402
from minillm.eval import exact_match  # noqa: E402
from minillm.io import save_model  # noqa: E402
from minillm.models.llama import PRESETS, ModelConfig, Transformer  # noqa: E402
from minillm.tokenizers import load_tokenizer  # noqa: E402
from minillm.train import TrainConfig, check_out_dir  # noqa: E402

DEFAULTS = dict(
    n_stories=30_000, n_sft=6_000, vocab_size=2048, block_size=256, batch_size=8, pretrain_steps=1500,
    sft_steps=3000, sft_batch_size=16, lr=3e-3, sft_lr=1e-3, eval_limit=300,
)
QUICK = dict(
    n_stories=2_000, n_sft=600, vocab_size=512, block_size=128, batch_size=8, pretrain_steps=60,
    sft_steps=30, sft_batch_size=16, lr=3e-3, sft_lr=1e-3, eval_limit=40,
)


def parse_args(argv=None):
    p = pipeline.example_parser(__doc__, out_dir="runs/tiny_llama", quick_help="a ~20-second run on a small corpus (smoke test)",
                                overwrite_help="replace an earlier run in --out-dir (else it is refused)")
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="model size (default: %(default)s)")
    p.add_argument("--data-dir", default=None, help="corpus directory (default: OUT_DIR/data, generated if missing)")
    p.add_argument("--pretrain-data", nargs="+", default=None,
                   help="your own pretraining files (.jsonl with a 'text' field, or .txt) instead of the built-in world")
    p.add_argument("--pretrain-val", nargs="+", default=None, help="validation texts for --pretrain-data")
    p.add_argument("--sft-data", default=None, help="your own SFT .jsonl (BelleGroup or OpenAI shape)")
    p.add_argument("--sft-val", default=None, help="held-out SFT .jsonl for --sft-data")
    p.add_argument("--n-stories", type=int, help="pretraining documents to generate")
    p.add_argument("--n-sft", type=int, help="SFT conversations to generate")
    p.add_argument("--vocab-size", type=int, help="BPE vocabulary size")
    p.add_argument("--block-size", type=int, help="pretraining sequence length (tokens)")
    p.add_argument("--batch-size", type=int, help="pretraining sequences per step")
    p.add_argument("--pretrain-steps", type=int, help="pretraining optimizer steps")
    p.add_argument("--sft-steps", type=int, help="SFT optimizer steps (0 skips SFT)")
    p.add_argument("--sft-batch-size", type=int, help="SFT conversations per step")
    p.add_argument("--lr", type=float, help="peak pretraining learning rate")
    p.add_argument("--sft-lr", type=float, help="peak SFT learning rate")
    p.add_argument("--eval-limit", type=int, help="held-out questions to answer")
    p.add_argument("--kernels", choices=["numba", "numpy"], default=None, help="kernel backend (default: numba)")
    args = p.parse_args(argv)
    pipeline.apply_defaults(args, QUICK if args.quick else DEFAULTS)
    if (args.pretrain_data is None) != (args.pretrain_val is None):
        p.error("--pretrain-data and --pretrain-val go together")
    if (args.sft_data is None) != (args.sft_val is None):
        p.error("--sft-data and --sft-val go together")
    return args


def main(argv=None):
    args = parse_args(argv)
    group = init_process_group()  # one process, or rank r of N under mpiexec -n N
    if group.rank == 0:
        return run(args, group)
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):  # rank 0 alone prints
        return run(args, group)


def run(args, group):
    """The recipe; under mpiexec every rank runs it, trains its share of each batch, and rank 0 writes."""
    lead = group.rank == 0
    mi.tune_malloc()  # reuse activation memory across steps instead of page-faulting it in (MINILLM_MALLOC_TUNING=0: off)
    if args.kernels:
        mi.set_kernels(args.kernels)
    mi.manual_seed(args.seed)
    for run_dir in (args.out_dir, os.path.join(args.out_dir, "pretrain"), os.path.join(args.out_dir, "sft")):
        check_out_dir(run_dir, overwrite=args.overwrite)  # before any work, never on top of another run
    if group.world_size == 1:  # a fresh install: the model's kernels compile on the idle core meanwhile
        planned = ModelConfig.preset(args.preset, vocab_size=args.vocab_size, max_seq_len=max(args.block_size, 256))
        pipeline.compile_ahead(planned, batch_size=args.batch_size, seq_len=args.block_size)
    group.barrier()  # every rank has looked before rank 0 writes anything
    if lead:
        os.makedirs(args.out_dir, exist_ok=True)
    show = not args.no_progress and lead
    t_start = time.time()
    report = {"args": vars(args)}

    banner("1. corpus")
    data_dir = args.data_dir or os.path.join(args.out_dir, "data")
    paths = pipeline.prepare_corpus(data_dir, n_stories=args.n_stories, n_sft=args.n_sft, seed=args.seed)
    if args.pretrain_data:
        paths.update(pretrain_train=args.pretrain_data, pretrain_val=args.pretrain_val)
    if args.sft_data:
        paths.update(sft_train=args.sft_data, sft_val=args.sft_val)
    print(f"pretraining texts: {paths['pretrain_train']}\nSFT conversations:  {paths['sft_train']}")
    # the held-out questions are read and checked now (same reader as the training data), not after training
    eval_records = pipeline.read_sft_records(paths["sft_val"], limit=args.eval_limit)

    banner("2. BPE tokenizer")
    tok_dir = os.path.join(args.out_dir, "tokenizer")
    if lead:
        tok, secs = pipeline.timed(pipeline.train_tokenizer, paths["pretrain_train"], args.vocab_size, tok_dir,
                                   show_progress=show)
    group.barrier()  # the other ranks load rank 0's tokenizer: one vocabulary for all
    if not lead:
        tok, secs = load_tokenizer(tok_dir), 0.0
    print(f"vocab size {tok.vocab_size}, trained in {secs:.1f}s")

    banner(f"3. pretraining the '{args.preset}' LLaMA2")
    cfg = ModelConfig.preset(args.preset, vocab_size=tok.vocab_size, max_seq_len=max(args.block_size, 256))
    model = Transformer(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{n_params:,} parameters; {args.pretrain_steps} steps of {args.batch_size}×{args.block_size} tokens")
    pre_cfg = TrainConfig(
        out_dir=os.path.join(args.out_dir, "pretrain"), max_steps=args.pretrain_steps, lr=args.lr, min_lr=args.lr / 10,
        warmup_steps=max(1, args.pretrain_steps // 20), eval_interval=max(1, args.pretrain_steps // 4),
        eval_batches=10, checkpoint_interval=0, keep_last=1, seed=args.seed, progress=show, overwrite=args.overwrite,
    )
    trainer = pipeline.pretrain(model, tok, paths, pre_cfg, block_size=args.block_size, batch_size=args.batch_size)
    base_dir = os.path.join(args.out_dir, "base_model")  # kept: SFT changes `model` in place
    if lead:  # the other ranks wait at the barrier before SFT (they hold the same weights)
        before = evaluate_and_save_base(tok, model, trainer, eval_records, report, base_dir)
    group.barrier()

    banner("5. supervised fine-tuning")
    if lead:
        print(f"held-out exact match before SFT: {pipeline.format_accuracy(before)}")
    if args.sft_steps > 0:
        sft_cfg = TrainConfig(
            out_dir=os.path.join(args.out_dir, "sft"), max_steps=args.sft_steps, lr=args.sft_lr, min_lr=args.sft_lr / 10,
            warmup_steps=max(1, args.sft_steps // 20), eval_interval=max(1, args.sft_steps // 3), eval_batches=10,
            checkpoint_interval=0, keep_last=1, seed=args.seed, progress=show, overwrite=args.overwrite,
        )
        pipeline.sft(model, tok, paths, sft_cfg, batch_size=args.sft_batch_size)
    if not lead:
        return None

    banner("6. saving")  # before the evaluation: an evaluation failure can never lose the trained model
    model_dir = os.path.join(args.out_dir, "model")
    save_model(model, model_dir)
    tok.save(model_dir)  # a model dir carries its tokenizer: `python -m minillm chat --model DIR`

    banner("7. held-out questions")
    after = pipeline.evaluate_sft(model, tok, eval_records)
    for ex in after["examples"][:8]:
        q = ex["question"].replace("\n", " ")
        q = q if len(q) < 90 else "…" + q[-88:]
        mark = "✓" if exact_match(ex["prediction"], ex["reference"]) else "✗"
        print(f"  {mark} {q}\n      model: {ex['prediction']!r}   reference: {ex['reference']!r}")
    print(f"held-out exact match after SFT:  {pipeline.format_accuracy(after)}")
    report["exact_match_after_sft"] = {k: v for k, v in after.items() if k != "examples"}

    report["minutes"] = (time.time() - t_start) / 60
    atomic_write(os.path.join(args.out_dir, "report.json"), json.dumps(report, ensure_ascii=False, indent=1))
    print(f"model: {model_dir}/ (config.json, model.safetensors, tokenizer.json); before SFT: {base_dir}/")
    print(f"try it: python -m minillm chat --model {model_dir}")
    print(f"score both: python -m minillm eval --model {base_dir} --compare {model_dir}")
    print(f"metrics: {args.out_dir}/pretrain/metrics.jsonl, {args.out_dir}/sft/metrics.jsonl; report: {args.out_dir}/report.json")
    print(f"done in {report['minutes']:.1f} minutes")
    return report


def evaluate_and_save_base(tok, model, trainer, eval_records, report, base_dir):
    """Rank 0, after pretraining: validation loss, the pretrained model saved, samples, exact match before SFT."""
    ev = trainer.evaluate()
    report["pretrain"] = {"val_loss": ev["val_loss"], "val_ppl": ev["val_ppl"], "steps": trainer.step}
    print(f"validation loss {ev['val_loss']:.3f}, perplexity {ev['val_ppl']:.2f} (uniform guess: {tok.vocab_size})")
    save_model(model, base_dir)
    tok.save(base_dir)

    banner("4. samples after pretraining")
    sample = pipeline.make_sample_fn(tok, list(pipeline.DEFAULT_PROMPTS), max_new_tokens=60, temperature=0.0)
    for text in sample(model, trainer.step):
        print("  " + text.replace("\n", " "))
    report["samples"] = sample(model, trainer.step)

    before = pipeline.evaluate_sft(model, tok, eval_records)
    report["exact_match_before_sft"] = {k: v for k, v in before.items() if k != "examples"}
    return before


if __name__ == "__main__":
    main()
