"""A tiny model that learns to call tools, offline (Happy LLM 7.3, the Tiny-Agent).

    python examples/agent.py              # default run (a few minutes on 2 idle cores)
    python examples/agent.py --quick      # a smoke run in seconds
    python -m minillm agent --model runs/agent/model    # then talk to it, tool calls shown

The book's agent lends the thinking to a remote 7B model. Here a 140k-parameter LLaMA2 learns
it from scratch on this laptop:

  1. held-out questions in 8 categories (multi-digit add / mul, (a + b) * c, compare, letters
     in a word, a person's facts, today's date, and word translation that needs no tool);
  2. SFT conversations from the story world and arithmetic: the assistant calls a tool in
     the chat template's <tool_call> format, reads the tool turn, answers (the loss is on the
     calls and the answers, never on the tool results); a quarter answer without tools;
     --copy-drills N adds N conversations that only repeat numbers;
  3. a byte-level BPE with one token per digit and the model trained on them
     (minillm/data/sft.py, minillm/train/); or --init DIR fine-tunes an existing chat model
     (e.g. runs/tiny_llama/model) with its own tokenizer instead;
  4. the agent loop (minillm/agent/core.py) runs every held-out question twice, with the
     tools listed and without, and prints accuracy per category, the share of well-formed
     calls, and how often it rightly called nothing.

Most of the agent's work is copying numbers (question -> call, result -> answer), and a tiny
model learns to copy digits late: the loss falls slowly for a long time before it can (see
docs/chapter7.md, 7.3 "Measured"), which is why the default trains a small model for many steps.
"""
import functools
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import minillm as mi  # noqa: E402
from minillm import pipeline  # noqa: E402
from minillm.pipeline import banner  # noqa: E402
from minillm._files import atomic_write  # noqa: E402
from minillm.agent import Agent, ChatModel, calculate  # noqa: E402
from minillm.agent.tasks import (  # noqa: E402
    AGENT_SYSTEM, CATEGORIES, agent_tools, evaluate_agent, format_table, make_copy_drills, make_dialogues, make_eval_items,
    score_answer,
)
from minillm.data import DataLoader, SFTDataset, collate_sft  # noqa: E402
from minillm.io import load_model, save_model  # noqa: E402
from minillm.models.llama import ModelConfig, Transformer  # noqa: E402
from minillm.tokenizers import BPETokenizer, apply_chat_template, load_tokenizer  # noqa: E402
from minillm.tokenizers.bpe import DIGITS_PATTERN  # noqa: E402
from minillm.train import Trainer, TrainConfig  # noqa: E402

DEFAULTS = dict(copy_drills=10000, n_train=30000, n_eval=25, vocab_size=640, dim=64, n_layers=2, steps=3000, batch_size=16,
                lr=3e-3)
# fine-tuning a pretrained chat model (--init), at SFT's rate (measured: it did not beat the default; docs/chapter7.md)
FINETUNE = dict(steps=400, lr=1e-3)
QUICK = dict(copy_drills=20, n_train=300, n_eval=2, vocab_size=400, dim=32, n_layers=1, steps=8, batch_size=8, lr=3e-3)


def parse_args(argv=None):
    p = pipeline.example_parser(__doc__, out_dir="runs/agent", quick_help="a smoke run in seconds (tiny model, few steps)",
                                out_help="where the model and results go")
    g = p.add_argument_group("sizes (defaults depend on --quick)")
    g.add_argument("--n-train", type=int, help="SFT conversations to generate")
    g.add_argument("--n-eval", type=int, help="held-out questions per category")
    g.add_argument("--vocab-size", type=int, help="BPE vocabulary size")
    g.add_argument("--dim", type=int, help="model width")
    g.add_argument("--n-layers", type=int, help="decoder layers")
    g.add_argument("--steps", type=int, help="optimizer steps")
    g.add_argument("--batch-size", type=int, help="conversations per step")
    g.add_argument("--lr", type=float, help="peak learning rate")
    g.add_argument("--copy-drills", type=int, help="extra conversations that only repeat numbers (make_copy_drills)")
    p.add_argument("--init", metavar="DIR", help="fine-tune this chat model directory (weights + tokenizer.json, e.g. "
                   "runs/tiny_llama/model) instead of training a new tokenizer and model from scratch; --vocab-size, "
                   "--dim and --n-layers are then ignored")
    args = p.parse_args(argv)
    pipeline.apply_defaults(args, (QUICK if args.quick else DEFAULTS) | (FINETUNE if args.init and not args.quick else {}))
    for k in ("n_train", "n_eval", "steps", "batch_size", "dim", "n_layers"):
        if getattr(args, k) < 1:
            p.error(f"--{k.replace('_', '-')} must be >= 1")
    if args.copy_drills < 0:
        p.error("--copy-drills must be >= 0")
    return args


def main(argv=None):
    args = parse_args(argv)
    mi.tune_malloc()
    mi.manual_seed(args.seed)
    show = not args.no_progress
    t_start = time.perf_counter()

    banner("the tools (function_to_json: OpenAI-style schemas from signatures, hints and docstrings)")
    tools = agent_tools()
    for t in tools:
        f = t.schema["function"]
        params = ", ".join(f"{k}: {v['type']}" for k, v in f["parameters"]["properties"].items())
        print(f"  {t.name}({params})  - {f['description'].splitlines()[0]}")
    print(f"  and a calculator that parses instead of eval: calculate('(347 + 589) * 7 / 4') = "
          f"{calculate('(347 + 589) * 7 / 4')}")

    banner("data: SFT traces of tool use, and held-out questions")
    items = make_eval_items(args.n_eval, seed=args.seed)
    records = make_dialogues(args.n_train, seed=args.seed, exclude=items)
    n_direct = sum(not r["meta"]["tools"] for r in records)
    print(f"{len(records)} training conversations ({n_direct} answered without tools), "
          f"{len(items)} held-out questions ({args.n_eval} per category: {', '.join(CATEGORIES)})")
    drills = make_copy_drills(args.copy_drills, seed=args.seed)
    if drills:
        print(f"and {len(drills)} copy drills, e.g. {drills[0]['messages'][1]['content']!r} -> "
              f"{drills[0]['messages'][2]['content']!r}")
    print("one of them, in the chat template SFT trains on (loss only on the assistant turns):\n")
    example = next(r for r in records if r["meta"]["skill"] == "multi" and r["meta"]["tools"])
    print(apply_chat_template(example["messages"]))

    if args.init:
        model, tok = load_model(args.init), load_tokenizer(os.path.join(args.init, "tokenizer.json"))
        if tok.token_to_id("<|im_end|>") is None or model.args.vocab_size != tok.vocab_size:
            raise SystemExit(f"--init {args.init}: needs a chat model whose tokenizer has <|im_end|> and "
                             f"{model.args.vocab_size} tokens (has {tok.vocab_size})")
        max_len = model.args.max_seq_len
        args.vocab_size, args.dim, args.n_layers = tok.vocab_size, model.args.dim, model.args.n_layers  # as reported
    else:
        texts = [apply_chat_template(r["messages"]) for r in records[:3000]]
        # one token per digit: numbers are copied digit by digit into the calls and back (a tiny model
        # copies single digits far better than arbitrary multi-digit BPE pieces)
        tok = BPETokenizer.train(texts, vocab_size=args.vocab_size, pattern=DIGITS_PATTERN, show_progress=show)
        max_len = 192
    train_ds = SFTDataset([r["messages"] for r in records + drills], tok, max_len)
    lengths = train_ds.lengths()
    print(f"BPE vocabulary {tok.vocab_size}; {len(train_ds)} examples, {lengths.mean():.0f} tokens on average "
          f"(longest {lengths.max()}), {train_ds.n_truncated} truncated")

    banner("SFT of a tiny LLaMA2 on the traces" + (f" (starting from {args.init})" if args.init else ""))
    if not args.init:
        cfg = ModelConfig(dim=args.dim, n_layers=args.n_layers, n_heads=4 if args.dim >= 64 else 2,
                          n_kv_heads=2 if args.dim >= 64 else 1, vocab_size=tok.vocab_size, max_seq_len=max_len,
                          dropout=0.0)
        model = Transformer(cfg)
    print(f"{model.num_parameters():,} parameters, {args.steps} steps of {args.batch_size} conversations")
    collate = functools.partial(collate_sft, pad_id=tok.pad_token_id)
    loader = DataLoader(train_ds, args.batch_size, shuffle=True, seed=args.seed, drop_last=True, collate_fn=collate)
    train_cfg = TrainConfig(
        out_dir=os.path.join(args.out_dir, "train"), max_steps=args.steps, lr=args.lr, min_lr=args.lr / 10,
        warmup_steps=max(1, args.steps // 20), weight_decay=0.0, eval_interval=0, checkpoint_interval=0, keep_last=1,
        log_interval=max(1, args.steps // 10), seed=args.seed, progress=show, plot=False, overwrite=True,
    )
    t0 = time.perf_counter()
    trainer = Trainer(model, None, loader, None, train_cfg)
    trainer.train()
    train_seconds = time.perf_counter() - t0
    model_dir = os.path.join(args.out_dir, "model")
    save_model(model, model_dir)
    tok.save(model_dir)
    print(f"trained in {train_seconds:.0f} s; model and tokenizer saved to {model_dir}/")

    # the longest reply the model was taught (a call written character by character by a tokenizer that never
    # saw one is ~65 tokens), with a margin: the loop's per-reply budget
    reply_tokens = 8 + max(len(tok.encode(m["content"], allowed_special="none")) for r in records[:2000]
                           for m in r["messages"] if m["role"] == "assistant")

    banner("one question, step by step (verbose agent)")
    llm = ChatModel(model, tok, batch_size=64)
    demo = next((it for it in items if it.category == "multi"), items[0])
    agent = Agent(llm, agent_tools(), AGENT_SYSTEM, tool_style="brief", max_steps=3, max_new_tokens=reply_tokens,
                  max_total_tokens=4 * reply_tokens, verbose=True)
    print(f"Q: {demo.question}")
    res = agent.run(demo.question)
    print(f"A: {res.answer}   (reference {demo.answer}; stopped: {res.stopped})")

    banner("held-out accuracy: the same model with and without tools")
    t0 = time.perf_counter()
    with_tools = evaluate_agent(llm, items, with_tools=True, max_new_tokens=reply_tokens)
    without = evaluate_agent(llm, items, with_tools=False, max_new_tokens=reply_tokens)
    eval_seconds = time.perf_counter() - t0
    print(format_table(with_tools, without))
    wrong = [e for e in with_tools["examples"] if not score_answer(e["answer"], e["reference"])][:4]
    if wrong:
        print("\nsome misses (with tools):")
        for e in wrong:
            print(f"  [{e['category']}] {e['question']} -> {e['answer']!r} (reference {e['reference']!r}); "
                  f"calls {e['calls']}; errors {e['errors'][:1]}")
    results = {
        "settings": {k: getattr(args, k) for k in DEFAULTS} | {"seed": args.seed, "init": args.init,
                                                              "parameters": model.num_parameters()},
        "with_tools": {k: v for k, v in with_tools.items() if k != "examples"},
        "without_tools": {k: v for k, v in without.items() if k != "examples"},
        "examples_with_tools": with_tools["examples"][:50],
        "seconds": {"train": round(train_seconds, 1), "eval": round(eval_seconds, 1),
                    "total": round(time.perf_counter() - t_start, 1)},
    }
    atomic_write(os.path.join(args.out_dir, "agent_results.json"), json.dumps(results, ensure_ascii=False, indent=1))
    print(f"\nresults in {os.path.join(args.out_dir, 'agent_results.json')}; total {results['seconds']['total']:.0f} s "
          f"(train {train_seconds:.0f} s, evaluation {eval_seconds:.0f} s)")
    return results


if __name__ == "__main__":
    main()
