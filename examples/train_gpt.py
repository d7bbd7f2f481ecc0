"""Pretrain a tiny GPT-2 on your CPU and prompt it with 0, 1 and 3 demonstrations (Happy LLM 3.3.1).

    python examples/train_gpt.py            # the default run (see docs/chapter3.md for its time and numbers)
    python examples/train_gpt.py --quick    # a smoke run of seconds

3.3.1 introduces GPT's idea that one pretrained language model can do a task it was never
fine-tuned on, if the prompt shows the task: zero-shot (just the question), one-shot and
few-shot (a few solved examples first, "in-context learning"). This script:

  1. generates the built-in bilingual story world and trains a byte-level BPE on it;
  2. pretrains ``minillm.models.gpt.GPT`` (learned positions, pre-LN, tanh GELU, tied head)
     with the same ``pipeline.pretrain`` / ``Trainer`` as the LLaMA example -- no SFT at all;
  3. asks held-out questions of four kinds with k = 0, 1, 3 solved demonstrations in the
     prompt, decodes greedily with ``minillm.generation.generate`` (KV cache) up to the end of
     the line, and prints exact match per task and k as a table:

     qa            "{story}\\nQuestion: {q}\\nAnswer:" (the format of the corpus' reading-comprehension documents)
     qa (Q:/A:)    the same questions in a format pretraining never showed: "{story}\\nQ: {q}\\nA:"
     translate     "cat =" -> "猫" (the corpus' word lists write "cat = 猫")
     math          "7 + 5 =" -> "12"

Demonstrations come from the training split, in the test item's language; test items from the
held-out split (stories never seen in pretraining). The qa rows are also split by language. Everything is written to ``--out-dir`` (model, tokenizer, metrics).
"""
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import minillm as mi  # noqa: E402
from minillm import pipeline  # noqa: E402
from minillm._files import atomic_write  # noqa: E402
from minillm.data.world import WorldConfig, generate_sft  # noqa: E402
from minillm.eval import exact_match  # noqa: E402
from minillm.generation import generate  # noqa: E402
from minillm.io import save_model  # noqa: E402
from minillm.models.gpt import PRESETS, GPT, GPTConfig  # noqa: E402
from minillm.train import TrainConfig  # noqa: E402

DEFAULTS = dict(n_stories=30_000, vocab_size=2048, block_size=256, batch_size=8, steps=3000, lr=3e-3, n_eval=200)
QUICK = dict(n_stories=2_000, vocab_size=512, block_size=128, batch_size=8, steps=40, lr=3e-3, n_eval=12)
SHOTS = (0, 1, 3)
MAX_NEW = 12


def parse_args(argv=None):
    p = pipeline.example_parser(__doc__, out_dir="runs/tiny_gpt", quick_help="a ~1 minute run on a small corpus (smoke test)")
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="model size (default: %(default)s)")
    p.add_argument("--n-stories", type=int, help="pretraining documents to generate")
    p.add_argument("--vocab-size", type=int, help="BPE vocabulary size")
    p.add_argument("--block-size", type=int, help="pretraining sequence length (tokens); also the prompt limit")
    p.add_argument("--batch-size", type=int, help="sequences per step")
    p.add_argument("--steps", type=int, help="pretraining optimizer steps")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--n-eval", type=int, help="held-out items per task")
    args = p.parse_args(argv)
    return pipeline.apply_defaults(args, QUICK if args.quick else DEFAULTS)


# ----------------------------------------------------------------------------- the tasks
def task_items(task: str, n: int, split: str, seed: int) -> list:
    """``n`` (prompt_without_answer, answer, kind) triples of one task from the world's ``split``.
    ``kind`` is the question's language for qa ("en"/"zh") and the task's name otherwise: the
    demonstrations for an item are drawn from items of its kind, so they show the answer's
    language and format (as a person writing a few-shot prompt would pick them).
    Stories are kept short (<= 4 sentences) so that three demonstrations and the question
    fit in the context the model was trained on."""
    short = WorldConfig(seed=0, min_sentences=3, max_sentences=4)
    skill = {"qa": "qa", "qa (Q:/A:)": "qa", "translate": "translate", "math": "math"}[task]
    # The records' own order is fixed by the world's seed; vary which ones we take by `seed`.
    recs = generate_sft(4 * n, split=split, skills=(skill,), config=short)
    random.Random(f"{task}/{split}/{seed}").shuffle(recs)
    out = []
    for r in recs:
        user, ans, meta = r["messages"][0]["content"], r["messages"][1]["content"], r["meta"]
        lang = meta["lang"]
        if skill == "qa":
            story, q = user.rsplit("\n", 1)
            zh = meta["lang"] == "zh"
            q = q.split("：", 1)[1] if zh else q.split(": ", 1)[1]
            if task == "qa":
                out.append((f"{story}\n问题：{q}\n答案：" if zh else f"{story}\nQuestion: {q}\nAnswer:", ans, lang))
            else:
                out.append((f"{story}\nQ: {q}\nA:", ans, lang))
        elif skill == "translate":
            if meta["qtype"] != "en2zh":
                continue
            en = user.split(": ", 1)[1] if user.startswith("Translate") else user.split(" 用中文", 1)[0]
            out.append((f"{en} =", ans, "en2zh"))
        else:
            if meta["qtype"] not in ("add", "sub"):
                continue
            expr = user.replace("What is ", "").replace("?", "").replace(" = ", "").replace(" 等于几？", "")
            expr = expr.replace(" 加 ", " + ").replace(" 减 ", " - ").strip()
            out.append((f"{expr} =", ans, "math"))
        if len(out) == n:
            break
    return out


def solved(prompt: str, answer: str) -> str:
    """A demonstration: the prompt and its answer (after a space, except after a Chinese colon)."""
    return prompt + ("" if prompt.endswith("：") else " ") + answer


def few_shot_prompt(demos: list, prompt: str) -> str:
    """k solved examples, one after another, then the unsolved one (the model writes its answer)."""
    return "".join(solved(p, a) + "\n" for p, a in demos) + prompt


def evaluate_few_shot(model, tok, n_eval: int, seed: int, max_len: int) -> tuple[dict, list]:
    """Exact match per task and number of demonstrations (a list of 0/1 hits per item, so the
    caller can give a standard error); also a few examples to print. The same held-out items
    are asked with k = 0, 1 and 3 demonstrations, drawn from training-split items of the same kind."""
    table, shown = {}, []
    for task in ("qa", "qa (Q:/A:)", "translate", "math"):
        tests = task_items(task, n_eval, "val", seed)
        pool = {}
        for item in task_items(task, 400, "train", seed):
            pool.setdefault(item[2], []).append(item[:2])
        rng = random.Random(f"demos/{task}/{seed}")
        for k in SHOTS:
            prompts, refs = [], []
            for prompt, ans, kind in tests:
                demos = rng.sample(pool[kind], k)
                ids = tok.encode(few_shot_prompt(demos, prompt))
                prompts.append(ids[-(max_len - MAX_NEW):])  # keep the question; in rare cases cut the oldest demo
                refs.append(ans)
            preds = []
            for i in range(0, len(prompts), 32):
                # stop at EOS: pretraining ends every document with it, and a model that has
                # answered often closes the document and starts a new story on the same line
                outs = generate(model, prompts[i : i + 32], MAX_NEW, temperature=0, pad_token_id=tok.pad_token_id,
                                eos_token_id=tok.eos_token_id)
                preds += [tok.decode(o, skip_special_tokens=True).split("\n")[0].strip() for o in outs]
            table[(task, k)] = [int(exact_match(p, r)) for p, r in zip(preds, refs)]
            if task.startswith("qa"):  # English and Chinese questions behave differently: one row each too
                for lang in ("en", "zh"):
                    hits = [h for h, t in zip(table[(task, k)], tests) if t[2] == lang]
                    if hits:
                        table[(f"{task} · {lang}", k)] = hits
            if k in (0, 3):
                shown.append((task, k, tok.decode(prompts[0])[-160:], preds[0], refs[0]))
    return table, shown


def mean_and_stderr(hits: list) -> tuple[float, float]:
    """The hit rate and its binomial standard error sqrt(p (1 - p) / n)."""
    p = sum(hits) / len(hits)
    return p, (p * (1 - p) / len(hits)) ** 0.5


def format_table(table: dict) -> str:
    tasks = list(dict.fromkeys(t for t, _ in table))
    lines = ["| task | n | " + " | ".join(f"{k}-shot" for k in SHOTS) + " |", "|---|---:|" + "---:|" * len(SHOTS)]
    for t in tasks:
        cells = [mean_and_stderr(table[(t, k)]) for k in SHOTS]
        lines.append(f"| {t} | {len(table[(t, 0)])} | " + " | ".join(f"{100 * p:.1f} ± {100 * se:.1f} %" for p, se in cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    mi.manual_seed(args.seed)
    os.makedirs(args.out_dir, exist_ok=True)
    show = not args.no_progress
    t0 = time.time()

    print("\n=== 1. corpus and tokenizer ===", flush=True)
    paths = pipeline.prepare_corpus(os.path.join(args.out_dir, "data"), n_stories=args.n_stories, n_sft=100, seed=args.seed)
    tok, secs = pipeline.timed(pipeline.train_tokenizer, paths["pretrain_train"], args.vocab_size,
                               os.path.join(args.out_dir, "tokenizer"), show_progress=show)
    print(f"vocab size {tok.vocab_size}, trained in {secs:.1f}s")

    print(f"\n=== 2. pretraining the '{args.preset}' GPT-2 ===", flush=True)
    model = GPT(GPTConfig.preset(args.preset, vocab_size=tok.vocab_size, max_seq_len=args.block_size))
    print(f"{model.num_parameters():,} parameters; {args.steps} steps of {args.batch_size}×{args.block_size} tokens")
    cfg = TrainConfig(out_dir=os.path.join(args.out_dir, "pretrain"), max_steps=args.steps, lr=args.lr, min_lr=args.lr / 10,
                      warmup_steps=max(1, args.steps // 20), eval_interval=max(1, args.steps // 4), eval_batches=10,
                      checkpoint_interval=0, keep_last=1, seed=args.seed, progress=show)
    trainer = pipeline.pretrain(model, tok, paths, cfg, block_size=args.block_size, batch_size=args.batch_size)
    ev = trainer.evaluate()
    print(f"validation loss {ev['val_loss']:.3f}, perplexity {ev['val_ppl']:.2f}")

    print("\n=== 3. zero-, one- and few-shot prompting (exact match on held-out items) ===", flush=True)
    table, shown = evaluate_few_shot(model, tok, args.n_eval, args.seed, args.block_size)
    for task, k, prompt, pred, ref in shown:
        print(f"  [{task}, {k}-shot] …{prompt!r}\n      model: {pred!r}   reference: {ref!r}")
    print(f"\n{args.n_eval} held-out items per task (exact match ± standard error):\n" + format_table(table))

    save_model(model, os.path.join(args.out_dir, "model"))
    report = {"args": vars(args), "val_loss": ev["val_loss"], "val_ppl": ev["val_ppl"], "steps": trainer.step,
              "few_shot_exact_match": {f"{t}|{k}": mean_and_stderr(v)[0] for (t, k), v in table.items()},
              "few_shot_stderr": {f"{t}|{k}": mean_and_stderr(v)[1] for (t, k), v in table.items()}, "seconds": time.time() - t0}
    atomic_write(os.path.join(args.out_dir, "metrics.json"), json.dumps(report, indent=2, ensure_ascii=False))
    print(f"\nsaved to {args.out_dir} in {time.time() - t0:.0f}s")
    return report


if __name__ == "__main__":
    main()
