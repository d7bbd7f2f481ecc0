"""``python -m minillm COMMAND``: the training pipeline of Happy LLM chapters 5–6 from the shell.

    python -m minillm train-tokenizer --input data.jsonl --vocab-size 2048 --out tok/
    python -m minillm pretrain --out runs/pre                     # built-in world corpus by default
    python -m minillm sft --model runs/pre/model --out runs/sft   # add --lora for LoRA SFT (6.3)
    python -m minillm generate --model runs/sft/model --prompt "In the morning, Tom"
    python -m minillm chat --model runs/sft/model
    python -m minillm rag index my_notes/ --out store/           # 7.2 RAG: then rag ask store/ "question"
    python -m minillm agent --model runs/agent/model             # 7.3: the model calls tools (examples/agent.py)
    mpiexec -n 2 python -m minillm pretrain --out runs/pre2 --zero-stage 2   # data parallel on 2 ranks (6.1.5)
    python -m minillm reward --model runs/sft/model --out runs/rm    # 4.2.3 reward model (pairs sampled from the world)
    python -m minillm dpo --model runs/sft/model --out runs/dpo      # DPO; --pairs/--val for your own JSONL
    python -m minillm ppo --model runs/sft/model --reward-model runs/rm/model --out runs/ppo   # RLHF with PPO

A model directory holds ``config.json`` + ``model.safetensors`` + ``tokenizer.json``, so
``--model DIR`` is all the later commands need.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

__all__ = ["main"]


def _add_training_args(p, steps, lr, batch_size, lr_note=""):
    p.add_argument("--out", required=True, metavar="DIR", help="run directory (checkpoints, metrics, the final model/)")
    p.add_argument("--steps", type=int, default=steps, help="optimizer steps (default: %(default)s)")
    p.add_argument("--lr", type=float, default=None, help=f"peak learning rate (default: {lr}{lr_note})")
    p.add_argument("--batch-size", type=int, default=batch_size, help="sequences per step (default: %(default)s)")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per step (default: %(default)s)")
    p.add_argument("--eval-interval", type=int, default=None, help="evaluate every N steps (default: steps/4)")
    p.add_argument("--checkpoint-interval", type=int, default=0, help="checkpoint every N steps (0: only at the end)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --out (without it, or --resume, a used --out is refused)")
    p.add_argument("--warmup-steps", type=int, default=None, help="lr warmup steps (default: steps/20)")
    p.add_argument("--lr-decay-steps", type=int, default=None,
                   help="step where the cosine decay reaches min_lr (default: --steps); keep it when resuming with "
                   "a larger --steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute each decoder layer in backward: far less activation memory, ~1/3 more compute (6.1)")
    prec = p.add_mutually_exclusive_group()
    prec.add_argument("--bf16", action="store_true", default=None,
                      help="mixed precision as the book's --bf16: weights and gradients rounded to bfloat16 in forward/"
                      "backward, float32 master weights (emulated: no faster on a CPU, see docs/chapter6.md)")
    prec.add_argument("--fp16", action="store_true", default=None,
                      help="float16 forward/backward with dynamic loss scaling (NumPy float16 has no BLAS: ~80x slower)")
    p.add_argument("--zero-stage", type=int, choices=(0, 1, 2), default=None,
                   help="under mpiexec -n N: 0 plain data parallel, 1 shard the AdamW state, 2 the gradients too "
                   "(default: 0, or the --deepspeed file's stage)")
    p.add_argument("--deepspeed", metavar="JSON", help="a DeepSpeed config (e.g. the book's ds_config_zero2.json): "
                   "its ZeRO stage, bucket size, accumulation, clipping, AdamW and schedule fields; \"auto\" keeps ours")


def _data_args(p, kind):
    if kind == "pretrain":
        p.add_argument("--data", nargs="+", help="pretraining .jsonl (field 'text') or .txt files (default: the built-in world)")
        p.add_argument("--val", nargs="+", help="validation files for --data")
    else:
        p.add_argument("--data", help="SFT .jsonl, BelleGroup or OpenAI shape (default: the built-in world)")
        p.add_argument("--val", help="held-out SFT .jsonl for --data")
    p.add_argument("--world-dir", default="runs/world", help="where the built-in corpus is generated (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m minillm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kernels", choices=["numba", "numpy"], help="kernel backend (default: numba, or $MINILLM_KERNELS)")
    p.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train-tokenizer", help="train a byte-level BPE tokenizer (5.2)",
                       description="Train a byte-level BPE and save DIR/tokenizer.json. "
                       "(More options: python -m minillm.tokenizers train --help.)")
    t.add_argument("--input", nargs="+", help="text or .jsonl files (default: the built-in world's pretraining texts)")
    t.add_argument("--vocab-size", type=int, default=2048, help="vocabulary size incl. special tokens (default: %(default)s)")
    t.add_argument("--out", required=True, metavar="DIR")
    t.add_argument("--overwrite", action="store_true", help="replace a tokenizer already saved in DIR")
    t.add_argument("--world-dir", default="runs/world", help="where the built-in corpus is generated (default: %(default)s)")

    pt = sub.add_parser("pretrain", help="pretrain a LLaMA2 from scratch (5.3, 6.1)",
                        description="Next-token pretraining on packed blocks; writes OUT/model/.")
    _data_args(pt, "pretrain")
    pt.add_argument("--tokenizer", help="tokenizer dir or tokenizer.json (default: train one on the data)")
    pt.add_argument("--vocab-size", type=int, default=2048, help="vocab size when training a tokenizer (default: %(default)s)")
    pt.add_argument("--arch", choices=("llama", "gpt"), default="llama",
                    help="llama: the LLaMA2 of 5.1; gpt: GPT-2 (3.3.1), same data and loop (default: %(default)s)")
    pt.add_argument("--preset", default="tiny", help="model size: llama tiny, small or book; gpt tiny or gpt2 (default: %(default)s)")
    pt.add_argument("--block-size", type=int, default=256, help="tokens per sequence (default: %(default)s)")
    _add_training_args(pt, steps=1500, lr=3e-3, batch_size=8)

    s = sub.add_parser("sft", help="supervised fine-tuning, full or LoRA (6.2, 6.3)",
                       description="Fine-tune on chat conversations (loss on assistant replies only); writes OUT/model/.")
    s.add_argument("--model", required=True, help="pretrained model dir (config.json, model.safetensors, tokenizer.json)")
    _data_args(s, "sft")
    s.add_argument("--max-length", type=int, default=256, help="tokens per conversation (longer ones are cut)")
    s.add_argument("--lora", action="store_true", help="train LoRA adapters only (6.3); the saved model is merged")
    s.add_argument("--lora-r", type=int, default=8)
    s.add_argument("--lora-alpha", type=float, default=32)
    s.add_argument("--lora-dropout", type=float, default=0.1)
    s.add_argument("--lora-targets", nargs="+", default=["wq", "wk", "wv", "wo", "w1", "w2", "w3"],
                   help="module names (or regexes) to adapt (default: %(default)s)")
    s.add_argument("--eval-limit", type=int, default=200, help="held-out questions to score at the end (0: skip)")
    _add_training_args(s, steps=1500, lr=2e-3, batch_size=16, lr_note="; 5e-3 with --lora, which likes a larger one")

    g = sub.add_parser("generate", help="continue a prompt (5.4)")
    g.add_argument("--model", required=True, help="model dir")
    g.add_argument("--prompt", required=True, nargs="+", help="one or more prompts")
    _sampling_args(g)
    g.add_argument("--num-beams", type=int, default=1,
                   help="beam search with this many beams (deterministic; ignores the sampling settings)")

    c = sub.add_parser("chat", help="talk to an SFT model in the terminal (streams tokens)")
    c.add_argument("--model", required=True, help="model dir")
    c.add_argument("--system", default=None, help="optional system message")
    _sampling_args(c)

    a = sub.add_parser("agent", help="talk to a tool-calling model: each call and its result shown (7.3)",
                       description="The agent loop of minillm/agent on a model trained to call tools "
                       "(examples/agent.py writes one). Replies stream; each tool call and its result is shown.")
    a.add_argument("--model", required=True, help="model dir")
    a.add_argument("--tools", default="add,mul,compare,count_letter,get_current_datetime,lookup",
                   help="comma-separated tools from: " + ", ".join(_AGENT_TOOLS) + " (default: %(default)s)")
    a.add_argument("--docs", default=None, metavar="DIR", help="also offer read_file, confined to this directory")
    a.add_argument("--search", default=None, metavar="DIR",
                   help="also offer search: BM25 over the .txt/.md/.jsonl files of DIR (minillm.rag), top 3 passages")
    a.add_argument("--system", default=None, help="system message (default: the one examples/agent.py trains with)")
    a.add_argument("--tool-style", choices=["brief", "json"], default="brief",
                   help="how the tools are listed in the system turn (default: %(default)s, what examples/agent.py trains)")
    a.add_argument("--format", choices=["tool_call", "react"], default="tool_call", help="(default: %(default)s)")
    a.add_argument("--max-steps", type=int, default=4, help="rounds of tool calls per question (default: %(default)s)")
    a.add_argument("--max-new-tokens", type=int, default=64, help="per reply (default: %(default)s)")
    a.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default: %(default)s)")
    a.add_argument("--seed", type=int, default=0)

    rm = sub.add_parser("reward", help="train a reward model on preference pairs (4.2.3)",
                        description="Bradley-Terry reward model: the SFT backbone + a scalar head; writes OUT/model/ "
                        "(backbone + score.safetensors) and prints the held-out pairwise accuracy.")
    _preference_args(rm)
    _add_training_args(rm, steps=150, lr=1e-4, batch_size=16)

    d = sub.add_parser("dpo", help="Direct Preference Optimization against the frozen SFT model (4.2.3, 6.4)",
                       description="DPO on preference pairs; writes OUT/model/ and prints held-out exact match "
                       "before and after.")
    _preference_args(d)
    d.add_argument("--beta", type=float, default=0.1, help="strength of the pull towards the reference (default: %(default)s)")
    d.add_argument("--lora", action="store_true", help="train LoRA adapters; the reference is the base (adapters off)")
    d.add_argument("--rpo-alpha", type=float, default=1.0,
                   help="add this much NLL of the chosen replies (TRL's rpo_alpha); 0 = pure DPO, which lowered "
                   "held-out correctness on the tiny models (docs/chapter4.md) (default: %(default)s)")
    d.add_argument("--loss-type", choices=["sigmoid", "ipo"], default="sigmoid",
                   help="TRL's loss_type: sigmoid = DPO (cDPO with --label-smoothing), ipo = IPO (default: %(default)s)")
    d.add_argument("--label-smoothing", type=float, default=0.0,
                   help="cDPO: the chance ε that a pair's label is wrong (TRL's label_smoothing) (default: %(default)s)")
    d.add_argument("--online-rounds", type=int, default=0,
                   help="online (iterative) DPO: this many rounds of sampling the current policy on --n-prompts new "
                   "world questions, pairing its own right and wrong replies, and one epoch of DPO on them (then "
                   "--steps is not used); 0 = offline DPO on pairs sampled once (default: %(default)s)")
    d.add_argument("--ref-model", choices=["round", "sft"], default="round",
                   help="online DPO's reference: the policy at the start of each round, or the SFT model (default: %(default)s)")
    d.add_argument("--eval-limit", type=int, default=200, help="held-out world questions to score (0: skip)")
    _add_training_args(d, steps=150, lr=2e-4, batch_size=16, lr_note="; 1e-4 with --online-rounds")

    pp = sub.add_parser("ppo", help="RLHF with PPO (4.2.3): rollouts, reward, KL penalty, GAE, clipped losses",
                        description="PPO on the built-in world's questions; writes OUT/model/ and OUT/metrics.jsonl.")
    pp.add_argument("--model", required=True, help="SFT model dir (the actor and the frozen reference)")
    pp.add_argument("--reward-model", help="reward model dir from `python -m minillm reward` (default: --rule)")
    pp.add_argument("--rule", action="store_true", help="reward +1 / -1 by the world's answer instead of a reward model")
    pp.add_argument("--out", required=True, metavar="DIR")
    pp.add_argument("--iters", type=int, default=40, help="PPO iterations (default: %(default)s)")
    pp.add_argument("--batch-size", type=int, default=32, help="rollouts per iteration (default: %(default)s)")
    pp.add_argument("--lr", type=float, default=2e-5)
    pp.add_argument("--kl-coef", type=float, default=0.1)
    pp.add_argument("--n-prompts", type=int, default=800, help="world training questions to draw rollouts from")
    pp.add_argument("--eval-limit", type=int, default=200, help="held-out world questions to score (0: skip)")
    pp.add_argument("--world-seed", type=int, default=0,
                    help="seed of the world the model was trained on (train_tiny_llama.py's --seed) (default: %(default)s)")
    pp.add_argument("--seed", type=int, default=0)
    pp.add_argument("--overwrite", action="store_true")

    e = sub.add_parser("eval", help="evaluate models on the built-in suite or your JSONL files (7.1)",
                       description="Score a model on leaderboard-style tasks; prints a table and writes "
                       "MODEL/eval_results.json. Tasks: " + ", ".join(_eval_task_names()) + ", mc:FILE.jsonl "
                       '({"question","choices","answer"}), gen:FILE.jsonl ({"prompt","answer"}).')
    e.add_argument("--model", required=True, help="model dir (config.json, model.safetensors, tokenizer.json)")
    e.add_argument("--tasks", default="all", help="comma-separated task names, or 'all' (default: %(default)s)")
    e.add_argument("--num-fewshot", type=int, default=0, help="demonstrations per prompt (default: %(default)s)")
    e.add_argument("--limit", type=int, default=None, help="only the first N items of each task")
    e.add_argument("--template", choices=["plain", "chat"], default="plain",
                   help="plain text prompts (base models) or the chat template (SFT models) (default: %(default)s)")
    e.add_argument("--compare", nargs="+", metavar="DIR", help="more model dirs, scored the same way: a leaderboard table")
    e.add_argument("--batch-size", type=int, default=32, help="sequences per forward pass (default: %(default)s)")
    e.add_argument("--world-seed", type=int, default=0, help="seed of the world the models were trained on (default: %(default)s)")
    e.add_argument("--seed", type=int, default=1234, help="few-shot draws and sampling (default: %(default)s)")
    e.add_argument("--no-progress", action="store_true", help="no progress bars")

    r = sub.add_parser("rag", help="retrieval-augmented generation: index a folder, ask questions (7.2)",
                       description="TinyRAG on this machine: 'rag index DIR --out STORE' reads .txt/.md/.jsonl files "
                       "(bad files are reported and skipped), chunks and stores them; 'rag ask STORE QUESTION' "
                       "prints the best chunks and, with --model, the answer of a reader model.")
    rsub = r.add_subparsers(dest="rag_command", required=True, metavar="{index,ask}")
    ri = rsub.add_parser("index", help="read, chunk and store a folder (BM25; dense vectors with --encoder)")
    ri.add_argument("dir", help="a folder (walked recursively) or one file")
    ri.add_argument("--out", required=True, metavar="STORE", help="store folder (store.json, vectors.safetensors)")
    ri.add_argument("--max-tokens", type=int, default=128, help="tokens per chunk at most (default: %(default)s)")
    ri.add_argument("--overlap", type=int, default=16,
                    help="tokens of whole sentences shared by consecutive chunks, at most (default: %(default)s)")
    ri.add_argument("--encoder", metavar="DIR", help="a bi-encoder directory (examples/rag.py trains one): also "
                    "store dense vectors")
    ri.add_argument("--overwrite", action="store_true", help="replace the store already in --out")
    ra = rsub.add_parser("ask", help="retrieve chunks for a question (and answer it with --model)")
    ra.add_argument("store", help="a store folder written by 'rag index'")
    ra.add_argument("question")
    ra.add_argument("--k", type=int, default=3, help="chunks to retrieve (default: %(default)s)")
    ra.add_argument("--retriever", choices=["auto", "bm25", "dense", "hybrid"], default="auto",
                    help="auto = hybrid with --encoder, else BM25 (default: %(default)s)")
    ra.add_argument("--encoder", metavar="DIR", help="the bi-encoder the store was indexed with (dense, hybrid)")
    ra.add_argument("--model", metavar="DIR", help="a reader model dir (examples/rag.py trains one at OUT/reader)")
    ra.add_argument("--reader-k", type=int, default=1,
                    help="of the --k chunks, how many go into the reader's prompt (default: %(default)s: the tiny "
                    "readers examples/rag.py trains answer 74 %% of held-out questions from the top chunk but 31 %% "
                    "from the top 3, docs/chapter7.md)")
    ra.add_argument("--max-new-tokens", type=int, default=24)
    return p


_AGENT_TOOLS = ("add", "mul", "compare", "count_letter", "get_current_datetime", "lookup", "calculate")


def _eval_task_names():
    from .eval.suite import TASK_NAMES

    return TASK_NAMES


def _preference_args(p):
    p.add_argument("--model", required=True, help="SFT model dir (config.json, model.safetensors, tokenizer.json)")
    p.add_argument("--pairs", help='your preference .jsonl ({"prompt","chosen","rejected"} per line); default: pairs '
                   "sampled from the model on the built-in world and labelled by its answers")
    p.add_argument("--val", help="held-out preference .jsonl for --pairs")
    p.add_argument("--n-prompts", type=int, default=800, help="world questions to sample pairs on (default: %(default)s)")
    p.add_argument("--samples", type=int, default=4, help="replies sampled per question (default: %(default)s)")
    p.add_argument("--pairs-per-prompt", type=int, default=4,
                   help="a pair of each distinct wrong reply, up to this many per question (default: %(default)s)")
    p.add_argument("--max-length", type=int, default=256, help="tokens per prompt + reply")
    p.add_argument("--world-seed", type=int, default=0,
                   help="seed of the world the model was trained on (train_tiny_llama.py's --seed) (default: %(default)s)")


def _sampling_args(p):
    p.add_argument("--max-new-tokens", type=int, default=100)
    p.add_argument("--temperature", type=float, default=0.7, help="0 = greedy (default: %(default)s)")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)


# ----------------------------------------------------------------------------- helpers
def _load_model_dir(path):
    from .io import load_model
    from .tokenizers import load_tokenizer

    if not os.path.isdir(path):
        raise FileNotFoundError(f"model directory {path!r} does not exist")
    tok_path = os.path.join(path, "tokenizer.json")
    if not os.path.exists(tok_path):
        raise FileNotFoundError(f"{tok_path} is missing (a model dir needs its tokenizer beside the weights)")
    model, tok = load_model(path), load_tokenizer(tok_path)
    model_vocab = getattr(getattr(model, "args", None), "vocab_size", None)
    if model_vocab is not None and model_vocab != tok.vocab_size:  # else a sampled id may have no text, or an id no row
        raise ValueError(f"{path}: the tokenizer has {tok.vocab_size} tokens but the model's vocab_size is "
                         f"{model_vocab}; they must be the same (was tokenizer.json replaced?)")
    return model, tok


def _save_model_dir(model, tok, path):
    from .io import save_model

    save_model(model, path)
    tok.save(path)
    print(f"saved model and tokenizer to {path}/")


def _train_config(args, out_dir):
    from .train import TrainConfig

    steps = args.steps
    warmup = args.warmup_steps if args.warmup_steps is not None else max(1, steps // 20)
    fields = dict(
        out_dir=out_dir, max_steps=steps, lr=args.lr, min_lr=args.lr / 10, warmup_steps=warmup,
        lr_decay_steps=args.lr_decay_steps,
        grad_accum_steps=args.grad_accum, eval_interval=args.eval_interval or max(1, steps // 4), eval_batches=10,
        checkpoint_interval=args.checkpoint_interval, seed=args.seed, progress=not args.no_progress,
        overwrite=args.overwrite,
    )
    ds = _distributed_settings(args)
    if ds is not None:  # a DeepSpeed file's explicit values win over our defaults ("auto" keeps ours)
        over = ds.train_config_overrides()
        if "lr" in over:
            fields["min_lr"] = over["lr"] / 10
        fields.update(over)
    for name, other in (("bf16", "fp16"), ("fp16", "bf16")):  # the flag fills the file's "auto"
        if getattr(args, name, None):
            if ds is not None and (ds.precision.get(name) is False or ds.precision.get(other)):
                raise ValueError(f"--{name} contradicts {args.deepspeed}'s fp16/bf16 settings {ds.precision}")
            fields[name] = True
    return TrainConfig(**fields)


def _distributed_settings(args):
    """The --deepspeed file read (once), with --zero-stage checked against it; None without a file."""
    if getattr(args, "deepspeed", None) is None:
        return None
    if getattr(args, "_ds", None) is None:
        from .distributed import load_deepspeed_config

        args._ds = load_deepspeed_config(args.deepspeed)
        if args.zero_stage is not None and args.zero_stage != args._ds.zero_stage:
            raise ValueError(f"--zero-stage {args.zero_stage} contradicts {args.deepspeed}'s zero_optimization.stage="
                             f"{args._ds.zero_stage}")
    return args._ds


def _parallel(args):
    """``(group, zero_stage, bucket_cap_mb, global batch size)`` for this run (one process unless under mpiexec)."""
    from .distributed import init_process_group

    group = init_process_group()
    ds = _distributed_settings(args)
    stage = args.zero_stage if args.zero_stage is not None else (ds.zero_stage if ds else 0)
    bucket = (ds.bucket_cap_mb() if ds else None) or 4.0
    grad_accum = ds.grad_accum_steps if ds and ds.grad_accum_steps else args.grad_accum
    batch = ds.global_batch_size(group.world_size, args.batch_size, grad_accum) if ds else args.batch_size
    if batch % group.world_size:
        raise ValueError(f"--batch-size {batch} (the global batch) must be divisible by the {group.world_size} ranks")
    if group.rank != 0:  # one progress bar and one report: rank 0's
        args.no_progress = True
    return group, stage, bucket, batch


def _claim_out_dir(args, group=None):
    """Before any work: refuse a used --out (unless --resume/--overwrite); with --overwrite, remove
    the old run's saved model so a crash of the new run cannot leave it beside new checkpoints."""
    import shutil

    from .train import check_out_dir

    if args.resume and args.overwrite:
        raise ValueError("--resume and --overwrite contradict each other: keep the run, or replace it")
    check_out_dir(args.out, overwrite=args.overwrite, resume=args.resume)
    if group is not None:
        group.barrier()  # every rank has looked before rank 0 removes anything
        if group.rank != 0:
            return
    if args.overwrite:
        for name in ("model", "adapter"):
            if os.path.isdir(os.path.join(args.out, name)):
                shutil.rmtree(os.path.join(args.out, name))


def _world_paths(args):
    from . import pipeline

    return pipeline.prepare_corpus(args.world_dir)


# ----------------------------------------------------------------------------- commands
def cmd_train_tokenizer(args):
    from . import pipeline

    if os.path.exists(os.path.join(args.out, "tokenizer.json")) and not args.overwrite:
        raise FileExistsError(f"{args.out} already holds a tokenizer (tokenizer.json); pass --overwrite to replace it "
                              "or choose another --out")  # checked before the training, not after
    inputs = args.input or _world_paths(args)["pretrain_train"]
    tok = pipeline.train_tokenizer(inputs, args.vocab_size, args.out)
    print(f"trained a BPE tokenizer with {tok.vocab_size} tokens -> {args.out}/tokenizer.json")


def cmd_pretrain(args):
    import minillm as mi

    from . import pipeline
    from .models.gpt import GPT, GPTConfig
    from .models.llama import ModelConfig, Transformer
    from .tokenizers import load_tokenizer

    mi.manual_seed(args.seed)
    args.lr = 3e-3 if args.lr is None else args.lr
    if (args.data is None) != (args.val is None):
        raise ValueError("--data and --val go together")
    group, zero_stage, bucket, batch_size = _parallel(args)
    say = print if group.rank == 0 else (lambda *a, **k: None)
    _claim_out_dir(args, group)
    # a fresh install: the model's kernels compile on the idle core while the tokenizer and data are prepared
    if args.arch == "llama" and group.world_size == 1:
        planned = ModelConfig.preset(args.preset, vocab_size=args.vocab_size, max_seq_len=max(256, args.block_size))
        pipeline.compile_ahead(planned, batch_size=batch_size, seq_len=args.block_size)
    paths = _world_paths(args) if args.data is None else {"pretrain_train": args.data, "pretrain_val": args.val}
    tok = load_tokenizer(args.tokenizer) if args.tokenizer else _shared_tokenizer(args, paths, group)
    config_cls, model_cls = {"llama": (ModelConfig, Transformer), "gpt": (GPTConfig, GPT)}[args.arch]
    model = model_cls(config_cls.preset(args.preset, vocab_size=tok.vocab_size, max_seq_len=max(256, args.block_size)))
    _gradient_checkpointing(model, args)
    say(f"{args.arch} {args.preset}: {model.num_parameters():,} parameters"
        + (f"; {group.world_size} ranks x {batch_size // group.world_size} sequences, ZeRO stage {zero_stage}"
           if group.world_size > 1 or zero_stage else ""))
    trainer = pipeline.pretrain(model, tok, paths, _train_config(args, args.out), block_size=args.block_size,
                                batch_size=batch_size, resume=args.resume, zero_stage=zero_stage, bucket_cap_mb=bucket)
    if group.rank != 0:
        return
    _save_model_dir(model, tok, os.path.join(args.out, "model"))  # saved first: evaluation can never lose it
    ev = trainer.evaluate()
    print(f"validation loss {ev['val_loss']:.3f}, perplexity {ev['val_ppl']:.2f}")


def _gradient_checkpointing(model, args):
    if args.gradient_checkpointing:
        if not hasattr(model, "gradient_checkpointing_enable"):
            raise ValueError(f"--gradient-checkpointing: {type(model).__name__} has no gradient_checkpointing_enable() "
                             "(the LLaMA of 5.1 has it)")
        model.gradient_checkpointing_enable()


def _shared_tokenizer(args, paths, group):
    """Train the BPE on rank 0 only; under mpiexec the other ranks load what it saved (one tokenizer for all)."""
    from . import pipeline
    from .tokenizers import load_tokenizer

    if group.world_size == 1:
        return pipeline.train_tokenizer(paths["pretrain_train"], args.vocab_size)
    shared = os.path.join(args.out, "tokenizer")
    if group.rank == 0:
        pipeline.train_tokenizer(paths["pretrain_train"], args.vocab_size, shared, show_progress=not args.no_progress)
    group.barrier()
    return load_tokenizer(shared)


def cmd_sft(args):
    import minillm as mi

    from . import pipeline

    mi.manual_seed(args.seed)
    if args.lr is None:
        args.lr = 5e-3 if args.lora else 2e-3
    if (args.data is None) != (args.val is None):
        raise ValueError("--data and --val go together")
    group, zero_stage, bucket, batch_size = _parallel(args)
    _claim_out_dir(args, group)
    model, tok = _load_model_dir(args.model)
    _gradient_checkpointing(model, args)
    paths = _world_paths(args) if args.data is None else {"sft_train": args.data, "sft_val": args.val}
    # read (and check) the held-out records now, with the training data's reader: a bad file stops
    # the run before training instead of after it
    eval_records = pipeline.read_sft_records(paths["sft_val"], limit=args.eval_limit) if args.eval_limit else None
    train_model = model
    if args.lora:
        from .peft import LoraConfig, get_peft_model

        train_model = get_peft_model(model, LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha,
                                                       lora_dropout=args.lora_dropout, target_modules=args.lora_targets))
        if group.rank == 0:
            train_model.print_trainable_parameters()
    pipeline.sft(train_model, tok, paths, _train_config(args, args.out), max_length=args.max_length,
                 batch_size=batch_size, resume=args.resume, zero_stage=zero_stage, bucket_cap_mb=bucket)
    if group.rank != 0:
        return
    if args.lora:
        train_model.save_pretrained(os.path.join(args.out, "adapter"))
        model = train_model.merge_and_unload()
    _save_model_dir(model, tok, os.path.join(args.out, "model"))  # saved first: evaluation can never lose it
    if eval_records:
        result = pipeline.evaluate_sft(model, tok, eval_records)
        print(f"held-out exact match: {pipeline.format_accuracy(result)}")


def _preference_data(args, model, tok):
    """The user's pair files, or on-policy pairs sampled on the built-in world."""
    from . import pipeline
    from .align import read_preference_jsonl, write_preference_jsonl

    if (args.pairs is None) != (args.val is None):
        raise ValueError("--pairs and --val go together")
    if args.pairs:
        return read_preference_jsonl(args.pairs), read_preference_jsonl(args.val)
    pairs = pipeline.world_preference_pairs(model, tok, args.n_prompts, max(16, args.n_prompts // 5), samples=args.samples,
                                            seed=args.seed, world_seed=args.world_seed,
                                            max_pairs_per_prompt=args.pairs_per_prompt)
    for name in ("train", "val"):
        path = write_preference_jsonl(os.path.join(args.out, f"pairs_{name}.jsonl"), pairs[name])
        print(f"{len(pairs[name])} {name} pairs sampled from the model -> {path}")
    return pairs["train"], pairs["val"]


def cmd_reward(args):
    import minillm as mi

    from .align import RewardModel, pairwise_accuracy, save_reward_model, train_reward_model

    mi.manual_seed(args.seed)
    args.lr = 1e-4 if args.lr is None else args.lr  # the sweep in docs/chapter4.md found 1e-4 best
    _claim_out_dir(args)
    model, tok = _load_model_dir(args.model)
    train, val = _preference_data(args, model, tok)
    rm = RewardModel.from_sft(model)
    before = pairwise_accuracy(rm, tok, val, args.max_length)
    train_reward_model(rm, tok, train, val, _train_config(args, args.out), batch_size=args.batch_size,
                       max_length=args.max_length)
    save_reward_model(rm, os.path.join(args.out, "model"))
    tok.save(os.path.join(args.out, "model"))
    after = pairwise_accuracy(rm, tok, val, args.max_length)
    print(f"held-out pairwise accuracy: {before['all']:.1%} before training -> {after['all']:.1%} ({after['n']} pairs)")


def cmd_dpo(args):
    import minillm as mi

    from . import pipeline
    from .align import train_dpo
    from .data.world import generate_sft

    mi.manual_seed(args.seed)
    if args.online_rounds < 0:
        raise ValueError(f"--online-rounds must be >= 0, got {args.online_rounds}")
    if args.online_rounds and args.pairs:
        raise ValueError("--online-rounds samples its pairs from the policy each round; it takes no --pairs")
    args.lr = (1e-4 if args.online_rounds else 2e-4) if args.lr is None else args.lr
    _claim_out_dir(args)
    model, tok = _load_model_dir(args.model)
    train, val = _preference_data(args, model, tok) if not args.online_rounds else (None, None)
    eval_records = generate_sft(args.eval_limit, seed=args.world_seed, split="val") if args.eval_limit else None
    before = pipeline.evaluate_sft(model, tok, eval_records) if eval_records else None
    policy = model
    if args.lora:
        from .peft import LoraConfig, get_peft_model

        policy = get_peft_model(model, LoraConfig(r=8, lora_alpha=32, lora_dropout=0.0,
                                                  target_modules=["wq", "wk", "wv", "wo", "w1", "w2", "w3"]))
    if args.online_rounds:
        from .align.online_dpo import OnlineDPOConfig, train_online_dpo

        if args.lora and args.ref_model == "round":
            raise ValueError("--lora: the reference is the base with the adapters off, the SFT model: give --ref-model sft")
        records = generate_sft(6_000 + args.online_rounds * args.n_prompts, seed=args.world_seed, split="train")[6_000:]
        cfg = OnlineDPOConfig(rounds=args.online_rounds, prompts_per_round=args.n_prompts, samples=args.samples,
                              max_pairs_per_prompt=args.pairs_per_prompt, beta=args.beta, loss_type=args.loss_type,
                              label_smoothing=args.label_smoothing, rpo_alpha=args.rpo_alpha, reference=args.ref_model,
                              lr=args.lr, batch_size=args.batch_size, seed=args.seed)
        train_online_dpo(policy, tok, records, cfg, args.out, progress=not args.no_progress, overwrite=True, log=lambda h: print(
            f"round {h['round']}: {h['sampled_correct']:.1%} of the sampled replies right -> {h['pairs']} pairs, "
            f"{h['steps']} steps, margin {h['rewards/margins']:.3f}", flush=True))
    else:
        train_dpo(policy, tok, train, val, _train_config(args, args.out), beta=args.beta, batch_size=args.batch_size,
                  max_length=args.max_length, rpo_alpha=args.rpo_alpha, loss_type=args.loss_type,
                  label_smoothing=args.label_smoothing)
    if args.lora:
        policy.save_pretrained(os.path.join(args.out, "adapter"))
        model = policy.merge_and_unload()
    _save_model_dir(model, tok, os.path.join(args.out, "model"))
    if eval_records:
        after = pipeline.evaluate_sft(model, tok, eval_records)
        print(f"held-out exact match: SFT {pipeline.format_accuracy(before)}\n                      DPO "
              f"{pipeline.format_accuracy(after)}")


def cmd_ppo(args):
    import minillm as mi

    from . import pipeline
    from .align import load_reward_model, score_replies
    from .align.ppo import PPOConfig, PPOTrainer
    from .data.world import generate_sft
    from .eval import exact_match
    from .train import check_out_dir

    mi.manual_seed(args.seed)
    if (args.reward_model is None) == (not args.rule):
        raise ValueError("give exactly one reward: --reward-model DIR or --rule")
    check_out_dir(args.out, overwrite=args.overwrite)
    model, tok = _load_model_dir(args.model)
    records = generate_sft(6_000 + args.n_prompts, seed=args.world_seed, split="train")[6_000:]
    prompts = [r["messages"][:-1] for r in records]
    if args.rule:
        refs = [r["messages"][-1]["content"] for r in records]

        def score_fn(idx, replies):
            return [1.0 if r.stopped and exact_match(r.text, refs[i]) else -1.0 for i, r in zip(idx, replies)]
    else:
        rm = load_reward_model(args.reward_model)

        def score_fn(idx, replies):
            return score_replies(rm, tok, [prompts[i] for i in idx], [r.text for r in replies])
    import copy

    policy = copy.deepcopy(model)
    cfg = PPOConfig(lr=args.lr, batch_size=args.batch_size, mini_batch_size=max(1, args.batch_size // 2),
                    kl_coef=args.kl_coef, seed=args.seed)
    trainer = PPOTrainer(policy, tok, prompts, score_fn, cfg, args.out, reference=model)
    trainer.train(args.iters, log=lambda h: print(
        f"iteration {h['step']}: score {h['score']:+.3f}, KL {h['kl']:.3f}, clipfrac {h['clipfrac']:.2f}", flush=True))
    _save_model_dir(policy, tok, os.path.join(args.out, "model"))
    if args.eval_limit:
        eval_records = generate_sft(args.eval_limit, seed=args.world_seed, split="val")
        print(f"held-out exact match: SFT {pipeline.format_accuracy(pipeline.evaluate_sft(model, tok, eval_records))}"
              f"\n                      PPO {pipeline.format_accuracy(pipeline.evaluate_sft(policy, tok, eval_records))}")


def _generation_config(args, eos_token_id):
    from .generation import GenerationConfig

    beams = getattr(args, "num_beams", 1)  # `chat` streams one sequence, so it has no --num-beams
    return GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                            top_p=args.top_p, eos_token_id=eos_token_id, seed=args.seed,
                            repetition_penalty=args.repetition_penalty, num_beams=beams,
                            do_sample=False if beams > 1 else None)


def cmd_generate(args):
    from .generation import generate

    model, tok = _load_model_dir(args.model)
    config = _generation_config(args, tok.eos_token_id)
    for prompt in args.prompt:
        new = generate(model, tok.encode(prompt), config)
        print(prompt + tok.decode(new, skip_special_tokens=True))


def _read_message(prompt: str):
    """The user's next line; None ends the session (Ctrl-D, Ctrl-C, a closed or unreadable stdin)."""
    try:
        line = input(prompt)
    except (EOFError, KeyboardInterrupt):
        print()
        return None
    except UnicodeDecodeError as e:  # a strict stdin and a byte that is not UTF-8
        print(f"\n(stdin is not valid UTF-8: {e.reason}; ending the chat)")
        return None
    except (RuntimeError, OSError, ValueError) as e:  # no stdin at all ("lost sys.stdin"), or it was closed
        print(f"\n(no input: {e}; ending the chat)")
        return None
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:  # a stdin decoded with surrogateescape: undecodable bytes became lone surrogates
        print("(that line has bytes that are not UTF-8 text; it was ignored, please type it again)")
        return ""
    return line.strip() or None


def _fit_context(tok, system: list, turns: list, limit: int):
    """``(ids, turns, notes)`` with the encoded conversation no longer than ``limit`` tokens.

    Whole turns are dropped, oldest first and always as a user + assistant pair, so every
    message keeps its ``<|im_start|>role`` header and the system message (``system``) is kept.
    If the newest message alone is still too long, its beginning is cut (its text, never its
    header) and the user is told.
    """
    notes = []
    ids = tok.encode_chat(system + turns, add_generation_prompt=True)
    dropped = 0
    while len(ids) > limit and len(turns) > 1:
        turns = turns[2:]
        dropped += 1
        ids = tok.encode_chat(system + turns, add_generation_prompt=True)
    if dropped:
        notes.append(f"forgot the {dropped} oldest exchange(s) to fit the model's context")
    if len(ids) > limit:
        text, n_before = turns[-1]["content"], len(ids)
        while len(ids) > limit and text:
            text = text[max(1, len(ids) - limit):]  # a token is at least one character: cut at least that many
            ids = tok.encode_chat(system + [{"role": "user", "content": text}], add_generation_prompt=True)
        turns = [{"role": "user", "content": text}]
        notes.append(f"your message ({n_before} tokens with the chat headers) is longer than the context allows "
                     f"({limit}); only its last {len(text)} characters were kept")
    return ids, turns, notes


def cmd_chat(args):
    from .generation import stream_generate

    model, tok = _load_model_dir(args.model)
    end_id = tok.token_to_id("<|im_end|>")
    config = _generation_config(args, end_id)
    system = [{"role": "system", "content": args.system}] if args.system else []
    max_len = model.args.max_seq_len
    reserve = max(1, min(args.max_new_tokens, max_len // 2))  # room always left for the reply
    limit = max_len - reserve
    if len(tok.encode_chat(system + [{"role": "user", "content": ""}], add_generation_prompt=True)) > limit:
        raise ValueError(f"--system is too long for this model's context of {max_len} tokens "
                         f"({reserve} kept for the reply)")
    turns = []  # user/assistant messages after the system message, oldest first
    print("minillm chat — empty line or Ctrl-D to quit, /reset to forget the conversation")
    while True:
        line = _read_message("you> ")
        if line is None:
            return
        if not line:
            continue
        if line == "/reset":
            turns = []  # the system message stays
            continue
        ids, turns, notes = _fit_context(tok, system, turns + [{"role": "user", "content": line}], limit)
        for note in notes:
            print(f"(note: {note})")
        history = system + turns
        budget = max_len - len(ids)
        live = sys.stdout.isatty()  # redraw the line as tokens arrive only on a terminal
        reply_ids = []
        for t in stream_generate(model, ids, config, max_new_tokens=max(1, min(args.max_new_tokens, budget))):
            reply_ids.append(t)
            if live:  # decode the whole reply each time: a multi-byte character may span several tokens
                print("\rbot> " + tok.decode(reply_ids, skip_special_tokens=True), end="", flush=True)
        if not live:
            print("bot> " + tok.decode(reply_ids, skip_special_tokens=True), end="")
        print()
        history.append({"role": "assistant", "content": tok.decode(reply_ids, skip_special_tokens=True)})
        turns = history[len(system):]


def cmd_agent(args):
    from .agent import Agent, ChatModel, Tool, calculate, make_read_file_tool, make_search_tool
    from .agent.tasks import AGENT_SYSTEM, agent_tools

    names = [n.strip() for n in args.tools.split(",") if n.strip()]
    unknown = [n for n in names if n not in _AGENT_TOOLS]
    if unknown:
        raise ValueError(f"--tools: unknown tool(s) {unknown}; choose from {', '.join(_AGENT_TOOLS)}")
    catalogue = {t.name: t for t in agent_tools()} | {"calculate": Tool(calculate)}
    tools = [catalogue[n] for n in names] + ([make_read_file_tool(args.docs)] if args.docs else [])
    if args.search:  # 7.2's retriever as 7.3's tool (happy-llm issue #44: an agent that uses RAG)
        from .rag import BM25Retriever

        retriever = BM25Retriever.from_folder(args.search)
        for err in getattr(retriever, "errors", []):
            print(f"(skipped: {err})")
        tools.append(make_search_tool(retriever))
    model, tok = _load_model_dir(args.model)

    fresh = [True]  # the next piece starts a reply

    def show(piece):  # ChatModel streams each reply here, piece by piece, None at its end
        if piece is None:
            print(flush=True)
            fresh[0] = True
            return
        print(("bot> " if fresh[0] else "") + piece, end="", flush=True)
        fresh[0] = False

    def on_event(kind, *rest):
        if kind == "tool":
            call, content = rest
            print(f"  [{call.name}({json.dumps(call.arguments, ensure_ascii=False)}) -> {content}]", flush=True)
        elif kind == "error":
            print(f"  [error: {rest[0]}]", flush=True)

    llm = ChatModel(model, tok, temperature=args.temperature, seed=args.seed, on_text=show)
    agent = Agent(llm, tools, args.system if args.system is not None else AGENT_SYSTEM, tool_style=args.tool_style,
                  format=args.format, max_steps=args.max_steps, max_new_tokens=args.max_new_tokens,
                  max_total_tokens=args.max_new_tokens * (args.max_steps + 1), on_event=on_event)
    print(f"minillm agent — tools: {', '.join(t.name for t in tools) or 'none'}; empty line or Ctrl-D to quit")
    while True:
        line = _read_message("you> ")
        if line is None:
            return
        res = agent.run(line)
        if res.stopped != "answer":
            print(f"(stopped: {res.stopped})")


def cmd_eval(args):
    from .eval.harness import ModelLM, compare_table, evaluate, format_results, save_results
    from .eval.suite import get_tasks

    tasks = get_tasks(args.tasks, seed=args.world_seed)  # a bad task name or file: main() prints "error: ..."
    board = []
    for model_dir in [args.model] + (args.compare or []):
        model, tok = _load_model_dir(model_dir)
        lm = ModelLM(model, tok, batch_size=args.batch_size, seed=args.seed)
        print(f"== {model_dir}: {len(tasks)} task(s), {args.num_fewshot}-shot, {args.template} template", flush=True)
        results = evaluate(lm, tasks, num_fewshot=args.num_fewshot, limit=args.limit, template=args.template,
                           seed=args.seed, progress=not args.no_progress, model_name=model_dir)
        print(format_results(results))
        print(f"results: {save_results(results, model_dir)}\n")
        board.append((model_dir, results))
    if len(board) > 1:
        print(compare_table(board))


def cmd_rag(args):
    from .rag import BiEncoder, BM25Retriever, DenseRetriever, HybridRetriever, ReadFiles, VectorStore
    from .rag.store import STORE_NAME
    import warnings

    if args.rag_command == "index":
        if os.path.exists(os.path.join(args.out, STORE_NAME)) and not args.overwrite:
            raise ValueError(f"{args.out} already holds a store; pass --overwrite to replace it")
        reader = ReadFiles(args.dir)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the skipped files are printed below instead
            chunks = reader.get_content(args.max_tokens, args.overlap)
        for path, why in reader.errors:
            print(f"skipped {path}: {why}" if not why.startswith(path) else f"skipped {why}")
        if not chunks:
            raise ValueError(f"no readable text in {args.dir}")
        store = VectorStore(chunks)
        if args.encoder:
            store.get_vector(BiEncoder.load(args.encoder))
        store.persist(args.out)
        print(f"{len(reader.file_list) - len(reader.errors)} files, {len(chunks)} chunks"
              + (f", {store.vectors.shape[1]}-d vectors" if store.vectors is not None else "") + f" -> {args.out}/")
        return
    if not 1 <= args.reader_k <= args.k:
        raise ValueError(f"--reader-k must be between 1 and --k ({args.k}), got {args.reader_k}")
    encoder = BiEncoder.load(args.encoder) if args.encoder else None
    store = VectorStore.load_vector(args.store, EmbeddingModel=encoder)
    kind = args.retriever if args.retriever != "auto" else ("hybrid" if encoder else "bm25")
    if kind in ("dense", "hybrid") and encoder is None:
        raise ValueError(f"--retriever {kind} needs --encoder (the bi-encoder the store was indexed with)")
    bm25 = BM25Retriever(store) if kind in ("bm25", "hybrid") else None
    dense = DenseRetriever(store, encoder) if encoder is not None and kind != "bm25" else None
    retriever = {"bm25": bm25, "dense": dense, "hybrid": HybridRetriever([bm25, dense]) if kind == "hybrid" else None}[kind]
    hits = retriever.search(args.question, k=args.k)
    for i, h in enumerate(hits, start=1):
        where = f"{h.source}:{h.metadata['line']}" if "line" in h.metadata else f"{h.source}[{h.start}:{h.end}]"
        print(f"[{i}] {h.score:.4f} {where}" + (f" ({h.heading})" if h.heading else "") + f"\n    {' '.join(h.text.split())}")
    if args.model:
        from .rag import answer_questions, build_prompt, parse_answer

        model, tok = _load_model_dir(args.model)
        hits = hits[:args.reader_k]  # the reader's passages are numbered as printed above
        reply = answer_questions(model, tok, [build_prompt(args.question, [h.text for h in hits])],
                                 max_new_tokens=args.max_new_tokens)[0]
        answer, cited = parse_answer(reply)
        sources = [hits[c - 1].source for c in cited if 1 <= c <= len(hits)]
        print(f"\nanswer: {answer}" + (f"  (from passage {', '.join(map(str, cited))}: {', '.join(sources)})"
                                        if sources else ""))


COMMANDS = {
    "train-tokenizer": cmd_train_tokenizer, "pretrain": cmd_pretrain, "sft": cmd_sft,
    "generate": cmd_generate, "chat": cmd_chat, "eval": cmd_eval, "rag": cmd_rag, "agent": cmd_agent,
    "reward": cmd_reward, "dpo": cmd_dpo, "ppo": cmd_ppo,
}


#: The errors the project raises for bad input (files, arguments, data): shown as one line.
USER_ERRORS = (ValueError, TypeError, OSError, FloatingPointError)


def main(argv=None) -> int:
    """Run one command. A bad input (the project's validation errors, a missing file) prints
    ``error: <message>`` on stderr and returns 2, as argparse does for bad arguments; ``--debug``
    shows the traceback instead."""
    args = build_parser().parse_args(argv)
    from ._runtime import tune_malloc

    tune_malloc()  # a training step reuses its activation memory (MINILLM_MALLOC_TUNING=0 turns it off)
    try:
        if args.kernels:
            import minillm as mi

            mi.set_kernels(args.kernels)
        COMMANDS[args.command](args)
    except KeyboardInterrupt:
        _abort_other_ranks(130)
        if args.debug:
            raise
        print("\ninterrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as e:
        message = str(e).strip() or type(e).__name__
        if not args.debug:
            print(f"error: {message}\n(python -m minillm --debug {args.command} ... shows the traceback)", file=sys.stderr)
        _abort_other_ranks(2)
        if args.debug:
            raise
        return 2
    return 0


def _abort_other_ranks(code: int) -> None:
    """Under mpiexec, an error on one rank must end them all (the others would wait forever)."""
    if "minillm.distributed" not in sys.modules:
        return
    from .distributed.comm import current_process_group

    group = current_process_group()
    if group is not None and group.world_size > 1:
        sys.stderr.flush()
        group.abort(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
