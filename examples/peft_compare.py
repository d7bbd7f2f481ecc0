"""Every fine-tuning method of Happy LLM 6.3.1 on the same base and the same SFT data.

    python examples/peft_compare.py              # default run (20 min on the shared 2-core box at load ~15)
    python examples/peft_compare.py --quick      # smoke run, ~1 min at load ~25 (its test)

    # from a strong base: the pretrained model of examples/train_tiny_llama.py (its base_model/ and
    # data/), and int8/NF4 of the SFT model of the same run; about an hour on the shared box (docs/lora.md)
    python examples/peft_compare.py --base runs/tiny_llama/base_model --data-dir runs/tiny_llama/data \
        --quant-model runs/tiny_llama/model --sft-steps 300 --sft-batch-size 8 --eval-limit 200

One pretrained tiny LLaMA (pretrained here once, as in examples/lora_sft.py, and reused), one
SFT dataset, the same batches in the same order, and seven ways to fine-tune it:

  full FT        every weight trains                                        6.2
  LoRA           B·A (rank r) beside every projection                       6.3.2-6.3.5
  QLoRA          the same LoRA, on a base whose Linear weights are NF4      QLoRA (Dettmers et al.)
  adapter        Houlsby bottleneck MLPs after wo and w2                    6.3.1 (Adapter Tuning)
  prefix         per-layer key/value prefixes, MLP-reparameterised          6.3.1 (Prefix Tuning)
  prompt         virtual input embeddings, initialised from a text          6.3.1 (Prompt Tuning)
  P-tuning       virtual input embeddings made by a bi-LSTM + MLP           6.3.1 (P-Tuning)

It prints one table: trainable parameters (and their share), the formula's count, the bytes
the weights take, the optimizer state, the peak memory one training step allocates
(tracemalloc over a forward + backward), seconds per step, and held-out exact match. Then it
saves each adapter (safetensors + JSON), reloads it on a fresh base and checks the logits.

Before the runs it measures weight-only quantization of the base (int8, NF4, NF4 with double
quantization): the per-layer reconstruction error, the size on disk, the held-out loss and
perplexity, and greedy decode speed against float32.
"""
import functools
import json
import os
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import minillm as mi  # noqa: E402
from minillm import pipeline  # noqa: E402
from minillm.data import (  # noqa: E402
    DataLoader, PretrainDataset, SFTDataset, build_token_file, collate_sft, read_pretrain_texts, read_sft_conversations,
)
from minillm.io import load_model  # noqa: E402
from minillm.io import save_model  # noqa: E402
from minillm.tokenizers import load_tokenizer  # noqa: E402
from minillm.peft import (  # noqa: E402
    save_quantized, LLAMA_ALL_LINEAR_TARGETS, BottleneckConfig, LoraConfig, PeftModel, PrefixTuningConfig, PromptEncoderConfig,
    PromptTuningConfig, get_peft_model, quantize_model,
)
from minillm.nn.quant import QuantLinear  # noqa: E402
from minillm.train import Trainer, TrainConfig, check_out_dir  # noqa: E402
from lora_sft import QUICK as LORA_QUICK, DEFAULTS as LORA_DEFAULTS, fmt_bytes, get_base, optimizer_state_bytes  # noqa: E402

DEFAULTS = dict(LORA_DEFAULTS, sft_steps=100, eval_limit=100)
QUICK = dict(LORA_QUICK, n_stories=300, n_sft=80, vocab_size=300, block_size=32, pretrain_steps=4, sft_steps=3,
             sft_batch_size=4, eval_limit=4)
METHODS = ("full", "lora", "qlora", "adapter", "prefix", "prompt", "ptuning")
LR = dict(full=1e-3, lora=5e-3, qlora=5e-3, adapter=5e-3, prefix=1e-2, prompt=1e-1, ptuning=3e-2)
NUM_VIRTUAL_TOKENS = 10
PROMPT_INIT_TEXT = "Answer the question in a few words."


def parse_args(argv=None):
    p = pipeline.example_parser(__doc__, out_dir="runs/peft_compare", quick_help="a small corpus and a few steps",
                                overwrite_help="replace the runs of an earlier call in --out-dir")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of %(default)s")
    p.add_argument("--sft-steps", type=int, help="optimizer steps of each run")
    p.add_argument("--eval-limit", type=int, help="held-out questions answered by each model")
    p.add_argument("--sft-batch-size", type=int, help="SFT conversations per step")
    p.add_argument("--base", help="a pretrained model directory to fine-tune (with its tokenizer.json), e.g. the base_model/ "
                                  "of examples/train_tiny_llama.py; default: pretrain a small one here")
    p.add_argument("--data-dir", help="a corpus directory with sft_train/sft_val/pretrain_val .jsonl (the one the base was "
                                      "trained with); default: generate the built-in world into OUT_DIR/data")
    p.add_argument("--quant-model", help="the model whose int8/NF4 quantization is measured, with held-out exact match "
                                         "(e.g. an SFT model); default: the base (perplexity only)")
    p.add_argument("--lr", action="append", default=[], metavar="METHOD=LR",
                   help="a method's peak learning rate (repeatable), e.g. --lr prompt=3e-2; defaults: "
                        + ", ".join(f"{k}={v:g}" for k, v in LR.items()))
    p.add_argument("--skip-quantization", action="store_true", help="no quantization table (section 2)")
    p.add_argument("--skip-base-eval", action="store_true", help="do not answer the held-out questions with the base model")
    args = p.parse_args(argv)
    pipeline.apply_defaults(args, QUICK if args.quick else DEFAULTS)
    args.tokenizer = None  # get_base (from lora_sft.py): --base, or pretrain one into OUT_DIR/base
    args.lrs = dict(LR)
    for item in args.lr:
        name, _, value = item.partition("=")
        try:
            if name not in LR:
                raise ValueError
            args.lrs[name] = float(value)
        except ValueError:
            p.error(f"--lr {item!r}: expected METHOD=LR with METHOD one of {', '.join(METHODS)}")
    for flag in ("base", "data_dir", "quant_model"):
        if getattr(args, flag) and not os.path.isdir(getattr(args, flag)):
            p.error(f"--{flag.replace('_', '-')} {getattr(args, flag)!r} is not a directory")
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]  # "" = the quantization report only
    bad = [m for m in args.methods if m not in METHODS]
    if bad:
        p.error(f"--methods: unknown {bad}; choose from {', '.join(METHODS)}")
    return args


def make_model(method, base_dir, tok_path):
    """The base model prepared for ``method`` (weights freshly loaded each time)."""
    model = load_model(base_dir)
    if method == "full":
        return model
    if method == "lora":
        return get_peft_model(model, LoraConfig(r=8, lora_alpha=32, lora_dropout=0.1, target_modules=LLAMA_ALL_LINEAR_TARGETS))
    if method == "qlora":
        quantize_model(model, "nf4", double_quant=True)  # frozen NF4 base (the tied embedding/output head stays float)
        return get_peft_model(model, LoraConfig(r=8, lora_alpha=32, lora_dropout=0.1, target_modules=LLAMA_ALL_LINEAR_TARGETS))
    if method == "adapter":
        return get_peft_model(model, BottleneckConfig(bottleneck_dim=16, target_modules=["wo", "w2"]))
    if method == "prefix":
        return get_peft_model(model, PrefixTuningConfig(num_virtual_tokens=NUM_VIRTUAL_TOKENS, prefix_projection=True,
                                                        encoder_hidden_size=64))
    if method == "prompt":
        return get_peft_model(model, PromptTuningConfig(num_virtual_tokens=NUM_VIRTUAL_TOKENS, prompt_tuning_init="TEXT",
                                                        prompt_tuning_init_text=PROMPT_INIT_TEXT, tokenizer_name_or_path=tok_path))
    return get_peft_model(model, PromptEncoderConfig(num_virtual_tokens=NUM_VIRTUAL_TOKENS, encoder_reparameterization_type="LSTM",
                                                     encoder_hidden_size=64, encoder_num_layers=1))


def weight_bytes(model) -> int:
    """Bytes of every parameter and persistent buffer (a tied weight once)."""
    seen, n = set(), 0
    for t in list(model.parameters()) + [b for name, b in model.named_buffers() if not name.endswith(("freqs_cos", "freqs_sin"))]:
        if id(t) not in seen:
            seen.add(id(t))
            n += t.data.nbytes
    return n


def step_peak_bytes(model, batch) -> int:
    """Peak bytes allocated by one forward + backward (activations, gradients), by tracemalloc."""
    x, y, mask = batch
    tracemalloc.start()
    try:
        model(mi.tensor(x), targets=mi.tensor(y), attention_mask=mi.tensor(mask)).loss.backward()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    model.zero_grad()
    return peak


def best_step_cpu_seconds(model, batch, repeats=3) -> float:
    """The least CPU time (all threads) of ``repeats`` forward + backward passes on one batch: the
    work a step costs, nearly independent of how busy the machine is (wall-clock time is not: on a
    shared machine it is mostly waiting for a core). The optimizer step is not included."""
    x, y, mask = batch
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        model(mi.tensor(x), targets=mi.tensor(y), attention_mask=mi.tensor(mask)).loss.backward()
        best = min(best, time.process_time() - t0)
        model.zero_grad()
    return best


def run(method, args, base_dir, tok, tok_path, loader, loader_start, eval_records, reply_batches, show):
    mi.manual_seed(args.seed)
    model = make_model(method, base_dir, tok_path)
    loader.load_state_dict(loader_start)
    batch = next(iter(loader))
    model(mi.tensor(batch[0]), targets=mi.tensor(batch[1]), attention_mask=mi.tensor(batch[2])).loss.backward()  # warm-up
    model.zero_grad()
    peak = step_peak_bytes(model, batch)
    fwd_bwd = best_step_cpu_seconds(model, batch, repeats=1 if args.quick else 3)
    formula = model.expected_trainable_parameters() if hasattr(model, "expected_trainable_parameters") else model.num_parameters()
    cfg = TrainConfig(
        out_dir=os.path.join(args.out_dir, method), max_steps=args.sft_steps, lr=args.lrs[method], min_lr=args.lrs[method] / 10,
        warmup_steps=max(1, args.sft_steps // 10), weight_decay=0.0, eval_interval=0, checkpoint_interval=0, keep_last=1,
        seed=args.seed, progress=show, plot=False, overwrite=args.overwrite,
    )
    loader.load_state_dict(loader_start)  # every run sees the same batches
    trainer = Trainer(model, None, loader, None, cfg)
    t0 = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - t0
    seconds = train_seconds / args.sft_steps
    acc = pipeline.evaluate_sft(model, tok, eval_records)
    # a diagnostic beside exact match: the reply begins with the reference (right answer, but maybe no <|im_end|> after it)
    begins = float(np.mean([e["prediction"].startswith(e["reference"]) for e in acc["examples"]])) if acc["examples"] else 0.0
    # every weight the model computes with, a quantized one too (num_parameters counts Parameters only)
    quantized = sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, QuantLinear) or getattr(m, "quantized", False))
    stats = dict(method=method, trainable=model.num_parameters(trainable_only=True), total=model.num_parameters() + quantized,
                 formula=int(formula), weight_bytes=weight_bytes(model), optimizer_bytes=optimizer_state_bytes(trainer.optimizer),
                 step_peak_bytes=peak, seconds_per_step=seconds, fwd_bwd_cpu_seconds=fwd_bwd, final_train_loss=trainer.losses[-1],
                 accuracy={k: v for k, v in acc.items() if k != "examples"}, begins_with_reference=begins,
                 sample_predictions=acc["examples"][:3], train_seconds=train_seconds,
                 reply_loss=reply_loss_split(model, reply_batches, tok.im_end_id))
    if method != "full":
        stats["adapter"] = save_and_reload(method, model, args, base_dir, batch[0])
    return stats


def reply_loss_split(model, batches, stop_id) -> dict:
    """Held-out reply loss split in two: the answer's own tokens, and the ``<|im_end|>`` that ends
    it (generation stops only there, so an answer without it never matches exactly). Also the
    share of ``<|im_end|>`` positions where it is the greedy choice."""
    nll = {"content": [], "stop": []}
    top1 = []
    with mi.no_grad(), model.mode(training=False):
        for x, y, m in batches:
            logits = model(mi.tensor(x), attention_mask=mi.tensor(m)).logits.data.astype(np.float64)  # (B, T, V)
            logp = logits - logits.max(-1, keepdims=True)
            logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
            keep = y != -100
            picked = -np.take_along_axis(logp, np.where(keep, y, 0)[..., None], -1)[..., 0]  # (B, T)
            stop = keep & (y == stop_id)
            nll["content"].extend(picked[keep & ~stop].tolist())
            nll["stop"].extend(picked[stop].tolist())
            top1.extend((logits.argmax(-1)[stop] == stop_id).tolist())
    return dict(content=float(np.mean(nll["content"])), stop=float(np.mean(nll["stop"])), stop_is_top1=float(np.mean(top1)))


def save_and_reload(method, model, args, base_dir, ids):
    """Save the adapter, load it onto a freshly loaded base, compare logits."""
    adir = os.path.join(args.out_dir, f"{method}_adapter")
    model.save_pretrained(adir)
    fresh = load_model(base_dir)
    if method == "qlora":
        quantize_model(fresh, "nf4", double_quant=True)  # deterministic: the same codes as the trained base
    ids = mi.tensor(ids[:2, :32])
    with mi.no_grad(), model.mode(training=False):
        want = model(ids).logits.data
        got = PeftModel.from_pretrained(fresh, adir)(ids).logits.data
    size = sum(os.path.getsize(os.path.join(adir, f)) for f in os.listdir(adir))
    return dict(dir=adir, bytes=size, reload_max_abs_diff=float(np.abs(got - want).max()))


def dir_bytes(path) -> int:
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))


def mean_loss(model, batches) -> float:
    """Mean of the batches' losses (each the mean over its target tokens)."""
    return float(np.mean([float(model(mi.tensor(x), targets=mi.tensor(y), attention_mask=mi.tensor(m)).loss.data)
                          for x, y, m in batches]))


def quantization_report(model_dir, val_batches, prompt, out_dir, n_new, tok=None, eval_records=None, reply_batches=None):
    """int8 / NF4 / NF4+double quantization of ``model_dir`` against float32 (rows of a table);
    with ``eval_records`` also each variant's held-out exact match (the same prompts), with
    ``reply_batches`` (held-out SFT conversations) the perplexity of the replies."""
    ref = load_model(model_dir)
    ref_w = {n: m.weight.data for n, m in ref.named_modules() if type(m).__name__ == "Linear"}
    rows = []
    for name, qt, dq in (("float32", None, False), ("int8", "int8", False), ("nf4", "nf4", False), ("nf4+dq", "nf4", True)):
        model = load_model(model_dir)
        qdir = os.path.join(out_dir, f"quantized_{name}")
        if qt:
            quantize_model(model, qt, double_quant=dq)
            save_quantized(model, qdir)
        else:
            save_model(model, qdir)
        errs = [(float(np.linalg.norm(m.dequantize() - ref_w[n]) / np.linalg.norm(ref_w[n])), n)
                for n, m in model.named_modules() if isinstance(m, QuantLinear)]
        with mi.no_grad(), model.mode(training=False):
            loss = mean_loss(model, val_batches)
            reply_loss = mean_loss(model, reply_batches) if reply_batches else None
            speeds = {}
            for fused in ((True, False) if not qt else (False,)):
                model.generate(prompt, max_new_tokens=4, temperature=0, fused_decode=fused)  # warm-up
                t0 = time.perf_counter()
                model.generate(prompt, max_new_tokens=n_new, temperature=0, fused_decode=fused)
                speeds[fused] = n_new / (time.perf_counter() - t0)
        acc = None
        if eval_records:
            acc = {k: v for k, v in pipeline.evaluate_sft(model, tok, eval_records).items() if k != "examples"}
        rows.append(dict(name=name, disk_bytes=dir_bytes(qdir), weight_bytes=weight_bytes(model),
                         mean_rel_err=float(np.mean([e for e, _ in errs])) if errs else 0.0,
                         max_rel_err=max(errs)[0] if errs else 0.0, worst_layer=max(errs)[1] if errs else "-",
                         loss=loss, ppl=float(np.exp(loss)), reply_loss=reply_loss,
                         reply_ppl=float(np.exp(reply_loss)) if reply_batches else None, tok_s_modules=speeds[False], tok_s_fused=speeds.get(True),
                         accuracy=acc))
    head = (f"{'weights':<9}{'on disk':>10}{'in memory':>11}{'rel. error mean / max (layer)':>46}{'loss':>8}{'ppl':>9}"
            + (f"{'reply ppl':>11}" if reply_batches else "") + f"{'decode tok/s':>18}"
            + ("  held-out exact match" if eval_records else ""))
    print(head)
    print("-" * len(head))
    for r in rows:
        err = "-" if r["name"] == "float32" else f"{r['mean_rel_err']:.4f} / {r['max_rel_err']:.4f} ({r['worst_layer']})"
        speed = f"{r['tok_s_modules']:.1f}" + (f" (fused {r['tok_s_fused']:.0f})" if r["tok_s_fused"] else "")
        em = f"  {pipeline.format_accuracy(r['accuracy'])}" if r["accuracy"] else ""
        reply = f"{r['reply_ppl']:>11.4f}" if reply_batches else ""
        print(f"{r['name']:<9}{fmt_bytes(r['disk_bytes']):>10}{fmt_bytes(r['weight_bytes']):>11}{err:>46}{r['loss']:>8.4f}"
              f"{r['ppl']:>9.3f}{reply}{speed:>18}{em}")
    print("(rel. error: ||W - Ŵ|| / ||W|| per quantized Linear; loss/ppl: held-out pretraining stories; reply ppl: the\n"
          " replies of held-out SFT conversations; in memory: parameters + buffers, the tied embedding once; decode: greedy,\n"
          " batch 1, through the modules; quantized layers dequantize their whole weight at every call, so they decode\n"
          " slower than float32; the fused one-kernel float32 step is shown in brackets)")
    return rows


def print_table(base_acc, rows):
    head = (f"{'method':<9}{'trainable (share)':>22}{'formula':>10}{'weights':>10}{'optim':>10}{'step peak':>11}"
            f"{'cpu f+b':>9}{'s/step':>8}{'loss':>7}{'begins':>8}  held-out exact match")
    print(head)
    print("-" * len(head))
    if base_acc is not None:
        print(f"{'base':<9}{'-':>22}{'-':>10}{'':>10}{'':>10}{'':>11}{'':>9}{'':>8}{'':>7}{'':>8}  {pipeline.format_accuracy(base_acc)}")
    for s in rows:
        share = f"{s['trainable']:,} ({100 * s['trainable'] / s['total']:.2f}%)"
        print(f"{s['method']:<9}{share:>22}{s['formula']:>10,}{fmt_bytes(s['weight_bytes']):>10}{fmt_bytes(s['optimizer_bytes']):>10}"
              f"{fmt_bytes(s['step_peak_bytes']):>11}{s['fwd_bwd_cpu_seconds']:>9.3f}{s['seconds_per_step']:>8.3f}{s['final_train_loss']:>7.3f}"
              f"{100 * s['begins_with_reference']:>7.1f}%  {pipeline.format_accuracy(s['accuracy'])}")


def quantize_section(args, paths, base, base_dir, tok, eval_records, max_length):
    """Section 2: int8 / NF4 of --quant-model (default: the base) against float32."""
    print("\n=== 2. weight-only quantization ===")
    # held-out perplexity on the pretraining validation stories (what the base model was trained to predict)
    val_bin = os.path.join(args.out_dir, "quant_val.bin")
    build_token_file(read_pretrain_texts(paths["pretrain_val"]), tok, val_bin, show_progress=False)
    val_ds = PretrainDataset(val_bin, min(128, base.args.max_seq_len))
    blocks = [val_ds[i] for i in range(min(len(val_ds), 8 if args.quick else 64))]
    val_batches = [(np.stack([x for x, _ in blocks[i:i + 8]]), np.stack([y for _, y in blocks[i:i + 8]]),
                    np.ones((len(blocks[i:i + 8]), val_ds.block_size), dtype=np.int64)) for i in range(0, len(blocks), 8)]
    prompt = tok.encode_chat(eval_records[0]["messages"][:-1], add_generation_prompt=True)
    qdir = args.quant_model or base_dir
    qtok = load_tokenizer(os.path.join(qdir, "tokenizer.json")) if args.quant_model else tok
    print(f"quantizing {qdir}/" + (" (held-out exact match of each)" if args.quant_model else ""))
    reply_batches = None
    if args.quant_model:  # an SFT model: also the perplexity of held-out replies (what SFT trained it to predict)
        val_sft = SFTDataset(list(read_sft_conversations(paths["sft_val"])), qtok, max_length)
        val_sft_loader = DataLoader(val_sft, 16, shuffle=False, drop_last=False,
                                    collate_fn=functools.partial(collate_sft, pad_id=qtok.pad_token_id))
        reply_batches = list(val_sft_loader)
    quant_rows = quantization_report(qdir, val_batches, prompt, args.out_dir, n_new=8 if args.quick else 48,
                                     tok=qtok, eval_records=eval_records if args.quant_model else None,
                                     reply_batches=reply_batches)
    return quant_rows


def main(argv=None):
    args = parse_args(argv)
    mi.tune_malloc()
    mi.manual_seed(args.seed)
    for m in args.methods:
        check_out_dir(os.path.join(args.out_dir, m), overwrite=args.overwrite)
    os.makedirs(args.out_dir, exist_ok=True)
    show = not args.no_progress
    t_start = time.time()

    print("=== 1. data and the pretrained base model ===")
    if args.data_dir:
        paths = {k: os.path.join(args.data_dir, f"{k}.jsonl") for k in ("pretrain_train", "pretrain_val", "sft_train", "sft_val")}
        missing = [p for k, p in paths.items() if k != "pretrain_train" and not os.path.isfile(p)]
        if missing:
            raise SystemExit(f"--data-dir {args.data_dir!r}: missing {', '.join(missing)}")
    else:
        paths = pipeline.prepare_corpus(os.path.join(args.out_dir, "data"), n_stories=args.n_stories, n_sft=args.n_sft, seed=args.seed)
    eval_records = pipeline.read_sft_records(paths["sft_val"], limit=args.eval_limit)
    base_dir, tok = get_base(args, paths, show)
    tok_path = os.path.join(base_dir, "tokenizer.json")
    base = load_model(base_dir)
    max_length = base.args.max_seq_len - NUM_VIRTUAL_TOKENS  # room for the virtual tokens: the same data for every method
    train_ds = SFTDataset(list(read_sft_conversations(paths["sft_train"])), tok, max_length)
    loader = DataLoader(train_ds, args.sft_batch_size, shuffle=True, seed=args.seed, drop_last=True,
                        collate_fn=functools.partial(collate_sft, pad_id=tok.pad_token_id))
    loader_start = loader.state_dict()
    val_sft = SFTDataset(list(read_sft_conversations(paths["sft_val"]))[:8 if args.quick else 64], tok, max_length)
    reply_batches = list(DataLoader(val_sft, 16, shuffle=False, drop_last=False,
                                    collate_fn=functools.partial(collate_sft, pad_id=tok.pad_token_id)))
    base_acc = None if args.skip_base_eval else pipeline.evaluate_sft(base, tok, eval_records)
    print(f"base: {base.num_parameters():,} parameters; held-out exact match "
          f"{'(skipped)' if base_acc is None else pipeline.format_accuracy(base_acc)}")

    quant_rows = []
    if not args.skip_quantization:
        quant_rows = quantize_section(args, paths, base, base_dir, tok, eval_records, max_length)

    rows = []
    print("\n=== 3. fine-tuning, one method at a time ===")
    for method in args.methods:
        print(f"\n=== {method} (lr {args.lrs[method]:g}) ===", flush=True)
        rows.append(run(method, args, base_dir, tok, tok_path, loader, loader_start, eval_records, reply_batches, show))
        print(f"{method}: exact match {pipeline.format_accuracy(rows[-1]['accuracy'])}", flush=True)

    print("\n=== 4. the comparison (same base, same batches, same steps) ===")
    print_table(base_acc, rows)
    print("(weights: parameters + buffers as stored, tied embedding once; optim: AdamW's m and v; step peak:\n"
          " tracemalloc's peak over one forward + backward of a batch; cpu f+b: the least CPU seconds of 3 forward +\n"
          " backward passes; s/step: wall clock of the whole run per step, noisy on a shared machine; begins: replies\n"
          " that begin with the reference answer)")
    for s in rows:
        if "adapter" in s:
            a = s["adapter"]
            print(f"{s['method']:<9} adapter file {fmt_bytes(a['bytes']):>9}; reloaded on a fresh base: "
                  f"max |Δlogits| = {a['reload_max_abs_diff']:.1e}")
    print("held-out reply loss (nats/token), answer tokens vs the <|im_end|> that ends the answer; how often <|im_end|> is")
    print("the greedy choice where it belongs (generation stops only there, so without it no answer matches exactly):")
    base_split = reply_loss_split(base, reply_batches, tok.im_end_id)
    for name, r in [("base", base_split)] + [(s["method"], s["reply_loss"]) for s in rows]:
        print(f"  {name:<9} answer {r['content']:6.3f}   <|im_end|> {r['stop']:7.3f}   <|im_end|> greedy {100 * r['stop_is_top1']:5.1f}%")
    report = dict(args={k: v for k, v in vars(args).items()},
                  base_reply_loss=base_split, base_accuracy=None if base_acc is None else {k: v for k, v in base_acc.items() if k != "examples"},
                  runs=rows, quantization=quant_rows, minutes=(time.time() - t_start) / 60)
    with open(os.path.join(args.out_dir, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    print(f"\nreport: {args.out_dir}/report.json; done in {report['minutes']:.1f} minutes")
    return report


if __name__ == "__main__":
    main()
