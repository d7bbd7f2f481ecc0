"""Happy LLM 4.1.2: in-context learning, measured on the world's arithmetic.

    python examples/train_tiny_llama.py     # first: runs/tiny_llama/base_model (pretrained) and model (SFT)
    python examples/in_context.py           # then this (a minute or two on 2 idle cores)
    python examples/in_context.py --quick   # a smoke run in seconds (untrained micro models: the numbers mean nothing)

The book's 4.1.2 names in-context learning (ICL) as an *emergent* ability: a large model given
a few solved examples in its prompt does a task it was never tuned for, while a small model
does not. We measure it on held-out "a + b" / "a - b" questions of the built-in world, greedy
answers scored by their first integer, with k = 0, 1, 3 demonstrations (drawn from the
training split; the same k demonstrations for every model):

  base model, the pretraining format   "7 + 5 =" (the corpus has lines "7 + 5 = 12")
  base model, a format new for sums    "Question: What is 7 + 5?\\nAnswer:" (the corpus uses it only
                                       after stories, for story questions)
  SFT model, its chat template         demonstrations as earlier user/assistant turns

Writes OUT/report.json.
"""
import argparse
import json
import os
import random
import re
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

import minillm as mi  # noqa: E402
from minillm import pipeline  # noqa: E402
from minillm._files import atomic_write  # noqa: E402
from minillm.data.world import generate_sft  # noqa: E402
from minillm.generation import generate  # noqa: E402
from minillm.io import load_model  # noqa: E402
from minillm.models.llama import ModelConfig, Transformer  # noqa: E402
from minillm.tokenizers import load_tokenizer  # noqa: E402
from minillm.train import check_out_dir  # noqa: E402

FORMATS = {  # name -> (question, answer) templates; {a} {op} {b} {c}
    "equation": ("{a} {op} {b} =", " {c}\n"),
    "question": ("Question: What is {a} {op} {b}?\nAnswer:", " {c}\n\n"),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smoke run in seconds on untrained micro models")
    p.add_argument("--base-model", default="runs/tiny_llama/base_model", metavar="DIR",
                   help="the pretrained model (default: %(default)s)")
    p.add_argument("--sft-model", default="runs/tiny_llama/model", metavar="DIR",
                   help="the SFT model (default: %(default)s)")
    p.add_argument("--world-seed", type=int,
                   help="seed of the world the models were trained on (default: from DIR/../report.json, else 0)")
    p.add_argument("--n", type=int, help="held-out questions (default: 300; --quick: 8)")
    p.add_argument("--shots", type=int, nargs="+", default=[0, 1, 3], help="demonstrations per prompt (default: 0 1 3)")
    p.add_argument("--out-dir", default="runs/in_context")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    if args.n is None:
        args.n = 8 if args.quick else 300
    if args.n < 1 or min(args.shots) < 0:
        p.error(f"--n must be >= 1 and --shots >= 0, got --n {args.n} --shots {args.shots}")
    return args


def arithmetic(n, world_seed, split):
    """``n`` English arithmetic questions of the world as ``(a, op, b, answer)``."""
    out = []
    for r in generate_sft(6 * n + 40, seed=world_seed, split=split, skills=("math",)):
        if r["meta"]["lang"] == "en":
            a, op, b = re.search(r"(\d+) ([+-]) (\d+)", r["messages"][-2]["content"]).groups()
            out.append((a, op, b, r["messages"][-1]["content"]))
    if len(out) < n:
        raise ValueError(f"only {len(out)} English arithmetic questions for --n {n}")
    return out[:n]


def first_integer(text):
    m = re.search(r"-?\d+", text.split("\n")[0])
    return m.group(0) if m else None


def score(model, tok, prompts, answers, stop_id, max_new_tokens=6, batch_size=32):
    """Exact match of the first integer of each greedy reply (its first line)."""
    replies = []
    for b0 in range(0, len(prompts), batch_size):
        replies += generate(model, prompts[b0: b0 + batch_size], max_new_tokens=max_new_tokens, temperature=0,
                            eos_token_id=stop_id, pad_token_id=tok.pad_token_id)
    texts = [tok.decode(r, skip_special_tokens=True) for r in replies]
    return float(np.mean([first_integer(t) == a for t, a in zip(texts, answers)])), texts


def plain_prompts(tok, fmt, questions, demos):
    q, a = FORMATS[fmt]
    out = []
    for (x, op, y, _), shots in zip(questions, demos):
        text = "".join(q.format(a=s[0], op=s[1], b=s[2]) + a.format(c=s[3]) for s in shots) + q.format(a=x, op=op, b=y)
        out.append([tok.eos_token_id] + tok.encode(text))  # every pretraining document starts after an EOS
    return out


def chat_prompts(tok, questions, demos):
    out = []
    for (x, op, y, _), shots in zip(questions, demos):
        msgs = []
        for s in shots:
            msgs += [{"role": "user", "content": f"What is {s[0]} {s[1]} {s[2]}?"}, {"role": "assistant", "content": s[3]}]
        msgs.append({"role": "user", "content": f"What is {x} {op} {y}?"})
        out.append(tok.encode_chat(msgs, add_generation_prompt=True))
    return out


def micro_models(out_dir):
    """--quick: a tokenizer trained on a few world documents and an untrained 1-layer model."""
    data = pipeline.prepare_corpus(os.path.join(out_dir, "data"), n_stories=200, n_sft=10)
    tok = pipeline.train_tokenizer(data["pretrain_train"], 320, show_progress=False)
    model = Transformer(ModelConfig(dim=32, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=tok.vocab_size,
                                    max_seq_len=256))
    return model, model, tok


def main(argv=None):
    args = parse_args(argv)
    mi.tune_malloc()
    mi.manual_seed(0)
    check_out_dir(args.out_dir, overwrite=args.overwrite)
    os.makedirs(args.out_dir, exist_ok=True)
    t0 = time.time()
    if args.quick:
        base, sft, tok = micro_models(args.out_dir)
        args.world_seed = 0 if args.world_seed is None else args.world_seed
    else:
        for d in (args.base_model, args.sft_model):
            if not os.path.isdir(d):
                raise SystemExit(f"error: no model at {d}: run python examples/train_tiny_llama.py first")
        base, sft = load_model(args.base_model), load_model(args.sft_model)
        tok = load_tokenizer(os.path.join(args.sft_model, "tokenizer.json"))
        if args.world_seed is None:
            seed = pipeline.world_seed_of(args.sft_model)
            args.world_seed = 0 if seed is None else seed
    questions = arithmetic(args.n, args.world_seed, "val")
    pool = arithmetic(200, args.world_seed, "train")
    answers = [q[3] for q in questions]
    im_end = tok.token_to_id("<|im_end|>")
    report = {"args": vars(args), "exact_match": {}}
    print(f"{args.n} held-out arithmetic questions of world {args.world_seed}, greedy, first integer scored")
    print(f"{'model and prompt':<40}" + "".join(f"{k:>3}-shot" for k in args.shots))
    rows = (("base, equation (pretraining format)", base, "equation"), ("base, question (new for sums)", base, "question"),
            ("SFT, chat template", sft, "chat"))
    for name, model, fmt in rows:
        accs = []
        for k in args.shots:
            demos = [random.Random(f"icl/{i}/{k}").sample(pool, k) for i in range(len(questions))]
            prompts = chat_prompts(tok, questions, demos) if fmt == "chat" else plain_prompts(tok, fmt, questions, demos)
            acc, _ = score(model, tok, prompts, answers, im_end if fmt == "chat" else tok.eos_token_id)
            accs.append(acc)
            report["exact_match"][f"{fmt if fmt == 'chat' else 'base_' + fmt}/{k}"] = acc
        print(f"{name:<40}" + "".join(f"{a:>9.1%}" for a in accs), flush=True)
    report["minutes"] = (time.time() - t0) / 60
    atomic_write(os.path.join(args.out_dir, "report.json"), json.dumps(report, indent=1))
    print(f"report: {args.out_dir}/report.json; done in {report['minutes']:.1f} minutes")
    return report


if __name__ == "__main__":
    main()
