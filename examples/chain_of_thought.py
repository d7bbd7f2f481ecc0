"""Happy LLM 4.1.2: chain-of-thought, measured on two-step world arithmetic.

    python examples/train_tiny_llama.py          # first: runs/tiny_llama/model (the SFT model)
    python examples/chain_of_thought.py          # then this (a few minutes on 2 idle cores)
    python examples/chain_of_thought.py --quick  # a smoke run in seconds (an untrained micro model)

The SFT model knows one-step sums ("What is 7 + 5?" -> "12"). Here it is fine-tuned twice, from
the same weights, with the same steps and learning rate, on the same two-step questions
("What is 7 + 5 - 3?"), once with the answer only and once with the worked steps:

    direct   "9"
    steps    "7 + 5 = 12, 12 - 3 = 9. The answer is 9."

and both are scored, greedy, on held-out two-step questions (the final number). Every
intermediate result stays below the world's max_number (20), so each step is a one-step
problem the SFT model was trained on: the steps turn one hard problem into two known ones.
Writes OUT/report.json (and the two fine-tuned models under OUT/direct, OUT/steps).
"""
import copy
import json
import os
import random
import re
import sys
import time
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

import minillm as mi  # noqa: E402
from minillm import pipeline  # noqa: E402
from minillm._files import atomic_write  # noqa: E402
from minillm.align.rollout import generate_replies  # noqa: E402
from minillm.io import load_model  # noqa: E402
from minillm.models.llama import ModelConfig, Transformer  # noqa: E402
from minillm.tokenizers import load_tokenizer  # noqa: E402
from minillm.train import TrainConfig, check_out_dir  # noqa: E402

DEFAULTS = dict(n_train=4000, n_eval=300, steps=400, lr=5e-4, batch_size=16)
QUICK = dict(n_train=64, n_eval=8, steps=2, lr=5e-4, batch_size=4)
MAX_NUMBER = 20  # the world's default: one-step operands are 0..19


def parse_args(argv=None):
    p = pipeline.example_parser(__doc__, out_dir="runs/chain_of_thought", quick_help="a smoke run in seconds on an untrained micro model",
                                progress=False, overwrite_help="replace an earlier run in --out-dir")
    p.add_argument("--sft-model", default="runs/tiny_llama/model", metavar="DIR", help="(default: %(default)s)")
    p.add_argument("--n-train", type=int, help="two-step training questions")
    p.add_argument("--n-eval", type=int, help="held-out two-step questions")
    p.add_argument("--steps", type=int, help="fine-tuning steps of each variant")
    p.add_argument("--lr", type=float, help="peak learning rate of each variant")
    p.add_argument("--batch-size", type=int)
    args = p.parse_args(argv)
    pipeline.apply_defaults(args, QUICK if args.quick else DEFAULTS)
    if min(args.n_train, args.n_eval, args.steps, args.batch_size) < 1:
        p.error("--n-train, --n-eval, --steps and --batch-size must be >= 1")
    return args


def _apply(x, op, y):
    return x + y if op == "+" else x - y


def two_step_problems(n, split, seed=0):
    """``n`` questions ``(a, op1, b, op2, c)`` with 0 <= a op1 b < MAX_NUMBER and a final answer
    >= 0. A problem belongs to "val" when a checksum of it says so (1 in 10), so the two splits
    never share a problem."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    rng = random.Random(f"chain-of-thought/{seed}/{split}")
    out = []
    while len(out) < n:
        a, b, c = (rng.randrange(MAX_NUMBER) for _ in range(3))
        op1, op2 = rng.choice("+-"), rng.choice("+-")
        mid = _apply(a, op1, b)
        if not 0 <= mid < MAX_NUMBER or _apply(mid, op2, c) < 0:
            continue
        if (zlib.crc32(f"{a}{op1}{b}{op2}{c}".encode()) % 10 == 0) == (split == "val"):
            out.append((a, op1, b, op2, c))
    return out


def question(p):
    a, op1, b, op2, c = p
    return f"What is {a} {op1} {b} {op2} {c}?"


def answer(p):
    return _apply(_apply(p[0], p[1], p[2]), p[3], p[4])


def worked_steps(p):
    """The chain of thought: one known one-step problem per line of reasoning, then the answer."""
    a, op1, b, op2, c = p
    mid = _apply(a, op1, b)
    return f"{a} {op1} {b} = {mid}, {mid} {op2} {c} = {answer(p)}. The answer is {answer(p)}."


def final_number(reply):
    """The answer a reply gives: the number after "The answer is" if it says so, else its last number."""
    m = re.search(r"answer is (-?\d+)", reply)
    nums = re.findall(r"-?\d+", reply)
    return m.group(1) if m else (nums[-1] if nums else None)


def write_records(path, problems, steps):
    lines = [json.dumps({"messages": [{"role": "user", "content": question(p)},
                                      {"role": "assistant", "content": worked_steps(p) if steps else str(answer(p))}]})
             for p in problems]
    atomic_write(path, "\n".join(lines) + "\n")
    return path


def accuracy(model, tok, problems, max_new_tokens):
    replies = generate_replies(model, tok, [[{"role": "user", "content": question(p)}] for p in problems],
                               temperature=0.0, max_new_tokens=max_new_tokens)
    texts = [r[0].text for r in replies]
    ok = [final_number(t) == str(answer(p)) for t, p in zip(texts, problems)]
    return float(np.mean(ok)), texts


def main(argv=None):
    args = parse_args(argv)
    mi.tune_malloc()
    mi.manual_seed(args.seed)
    check_out_dir(args.out_dir, overwrite=args.overwrite)
    os.makedirs(args.out_dir, exist_ok=True)
    t0 = time.time()
    if args.quick:
        data = pipeline.prepare_corpus(os.path.join(args.out_dir, "data"), n_stories=200, n_sft=10)
        tok = pipeline.train_tokenizer(data["pretrain_train"], 320, show_progress=False)
        sft = Transformer(ModelConfig(dim=32, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=tok.vocab_size,
                                      max_seq_len=256))
    else:
        if not os.path.isdir(args.sft_model):
            raise SystemExit(f"error: no model at {args.sft_model}: run python examples/train_tiny_llama.py first")
        sft, tok = load_model(args.sft_model), load_tokenizer(os.path.join(args.sft_model, "tokenizer.json"))
    train = two_step_problems(args.n_train, "train", args.seed)
    val = two_step_problems(args.n_eval + 64, "val", args.seed)
    evals, val_loss_set = val[:args.n_eval], val[args.n_eval:]
    report = {"args": vars(args), "exact_match": {}, "examples": {}}
    acc, texts = accuracy(sft, tok, evals, 8)
    report["exact_match"]["sft, no fine-tuning"] = acc
    print(f"{args.n_eval} held-out two-step questions, e.g. {question(evals[0])!r} -> {answer(evals[0])}")
    print(f"  the SFT model as it is: {acc:.1%}   (e.g. {texts[0]!r})", flush=True)
    for name, steps in (("direct", False), ("steps", True)):
        model = copy.deepcopy(sft)
        d = os.path.join(args.out_dir, name)
        os.makedirs(d, exist_ok=True)
        paths = {"sft_train": write_records(os.path.join(d, "train.jsonl"), train, steps),
                 "sft_val": write_records(os.path.join(d, "val.jsonl"), val_loss_set, steps)}
        cfg = TrainConfig(out_dir=os.path.join(d, "sft"), max_steps=args.steps, lr=args.lr, min_lr=args.lr / 10,
                          warmup_steps=max(1, args.steps // 20), eval_interval=args.steps, eval_batches=2,
                          checkpoint_interval=0, keep_last=1, progress=False, plot=False, overwrite=True, seed=args.seed)
        t = time.time()
        pipeline.sft(model, tok, paths, cfg, batch_size=args.batch_size)
        acc, texts = accuracy(model, tok, evals, 40 if steps else 8)
        report["exact_match"][name] = acc
        report["examples"][name] = texts[:5]
        print(f"  fine-tuned on {'worked steps' if steps else 'answers only'} ({args.steps} steps, "
              f"{time.time() - t:.0f}s): {acc:.1%}   (e.g. {texts[0]!r})", flush=True)
    report["minutes"] = (time.time() - t0) / 60
    atomic_write(os.path.join(args.out_dir, "report.json"), json.dumps(report, ensure_ascii=False, indent=1))
    print(f"report: {args.out_dir}/report.json; done in {report['minutes']:.1f} minutes")
    return report


if __name__ == "__main__":
    main()
