"""Happy LLM chapter 2, trained: an encoder-decoder Transformer that translates English into Chinese.

    python examples/train_transformer.py            # a few minutes on 2 CPU cores
    python examples/train_transformer.py --quick    # seconds: a smoke run
    python examples/train_transformer.py --help

What it does:
1. builds EN->ZH sentence pairs from the built-in world (``minillm/data/translation.py``) and a
   held-out set of sentences never seen in training;
2. trains a word-level English tokenizer and a character-level Chinese one (the world has ~170
   English words and ~230 Chinese characters: whole units make the shortest sequences, and
   nothing held out is out of vocabulary);
3. trains ``minillm.models.transformer.Transformer`` (pre-norm by default) with the ``Trainer``;
4. translates the held-out sentences with ``minillm.generation.generate`` (encode once, KV-cached
   decoder), greedily and with beam search, and prints corpus BLEU (``minillm.eval.bleu``,
   sacrebleu's "zh" tokenisation) and exact match for both;
5. saves the model (``model.safetensors``, ``config.json``), both tokenizers, ``report.json``
   and ``cross_attention.png`` (last decoder layer, mean over heads, for one held-out sentence)
   with its token labels in ``cross_attention.txt``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from functools import partial

import numpy as np

import minillm as mi
from minillm._files import atomic_write
from minillm.plot import heatmap_rgb, write_png
from minillm.data import DataLoader
from minillm.data.translation import TranslationDataset, collate_translation, translation_pairs
from minillm.eval.bleu import corpus_bleu
from minillm.generation import generate
from minillm.io.safetensors import save_safetensors
from minillm.models.transformer import ModelArgs, Transformer
from minillm.tokenizers import CharTokenizer, WordTokenizer
from minillm.train import TrainConfig, Trainer


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out-dir", default="runs/transformer", help="where the model, tokenizers, report and heatmap go")
    p.add_argument("--quick", action="store_true", help="a tiny run in seconds (smoke test)")
    p.add_argument("--steps", type=int, default=600, help="optimizer updates")
    p.add_argument("--batch-size", type=int, default=64, help="sentence pairs per update")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (warmup + cosine)")
    p.add_argument("--dim", type=int, default=128, help="model width")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--layers", type=int, default=2, help="encoder layers (and as many decoder layers)")
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--num-beams", type=int, default=4, help="beams for the beam-search evaluation (greedy is always run too)")
    p.add_argument("--post-norm", action="store_true", help="post-norm as in the 2017 paper (default: pre-norm)")
    p.add_argument("--train-stories", type=int, default=20000, help="world stories whose sentences make the training pairs")
    p.add_argument("--heldout", type=int, default=500, help="held-out sentence pairs (never seen in training)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.batch_size, args.dim, args.layers, args.train_stories, args.heldout = 80, 32, 64, 1, 300, 40
        args.lr = 3e-3
    return args


# ----------------------------------------------------------------------------- decoding
def translate_all(model, dataset: TranslationDataset, tgt_tok, pad_id, num_beams=1, batch_size=128, max_new_tokens=40):
    """Translate every sentence of ``dataset`` with ``minillm.generation.generate``: the source
    is encoded once, the decoder runs token by token with its KV cache; greedy for
    ``num_beams=1``, beam search otherwise. Returns the decoded Chinese strings."""
    hyps = []
    for i in range(0, len(dataset), batch_size):
        batch = collate_translation([dataset[j] for j in range(i, min(i + batch_size, len(dataset)))], pad_id)
        ids = generate(model, batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=max_new_tokens,
                       num_beams=num_beams, do_sample=False, decoder_start_token_id=dataset.bos_id,
                       eos_token_id=dataset.eos_id, pad_token_id=pad_id)
        hyps.extend(tgt_tok.decode(r) for r in ids)
    return hyps


# ----------------------------------------------------------------------------- the heatmap
def cross_attention(model: Transformer, src, src_mask, tgt) -> np.ndarray:
    """The last decoder layer's cross-attention probabilities, mean over heads: (T, S)."""
    attn = model.transformer.decoder.layers[-1].attention
    attn.keep_weights = True  # the module records its probabilities in attn.last_weights
    try:
        with mi.no_grad(), model.mode(training=False):
            model(src, tgt, src_mask=src_mask)
    finally:
        attn.keep_weights = False
    return attn.last_weights[0].mean(axis=0)  # (B, H, T, S) -> (H, T, S) -> (T, S)






# ----------------------------------------------------------------------------- main
def main(argv=None) -> dict:
    args = parse_args(argv)
    t_start = time.perf_counter()
    os.makedirs(args.out_dir, exist_ok=True)
    mi.manual_seed(args.seed)

    # 1. data
    data = translation_pairs(args.train_stories, args.heldout, seed=args.seed)
    train_pairs, heldout_pairs = data["train"], data["heldout"]
    print(f"data: {len(train_pairs):,} unique training pairs, {len(heldout_pairs)} held-out pairs of unseen sentences")
    print(f"  e.g. {train_pairs[0][0]!r} -> {train_pairs[0][1]!r}")

    # 2. tokenizers: English words, Chinese characters (ids 0-5 are <unk> <s> </s> ... <pad>)
    src_tok = WordTokenizer.train([en for en, _ in train_pairs])
    tgt_tok = CharTokenizer.train([zh for _, zh in train_pairs])
    pad_id = tgt_tok.pad_token_id
    assert src_tok.pad_token_id == pad_id
    src_tok.save(os.path.join(args.out_dir, "src_tokenizer"))
    tgt_tok.save(os.path.join(args.out_dir, "tgt_tokenizer"))
    max_len = 48
    train_ds = TranslationDataset(train_pairs, src_tok, tgt_tok, max_len)
    heldout_ds = TranslationDataset(heldout_pairs, src_tok, tgt_tok, max_len)
    print(f"tokenizers: {src_tok.vocab_size} English words, {tgt_tok.vocab_size} Chinese characters")

    # 3. model and training
    margs = ModelArgs(dim=args.dim, n_heads=args.heads, n_layer=args.layers, dropout=args.dropout, max_seq_len=max_len,
                      vocab_size=max(src_tok.vocab_size, tgt_tok.vocab_size), src_vocab_size=src_tok.vocab_size,
                      tgt_vocab_size=tgt_tok.vocab_size, norm_first=not args.post_norm, pad_token_id=pad_id)
    model = Transformer(margs)
    print(f"model: {model.get_num_params():,} parameters ({'post' if args.post_norm else 'pre'}-norm, "
          f"dim {args.dim}, {args.layers}+{args.layers} layers, {args.heads} heads)")
    collate = partial(collate_translation, pad_id=pad_id)
    train_loader = DataLoader(train_ds, batch_size=args.batch_size, shuffle=True, seed=args.seed, collate_fn=collate)
    val_loader = DataLoader(heldout_ds, batch_size=min(100, len(heldout_ds)), shuffle=False, drop_last=False, collate_fn=collate)

    def forward_fn(m, b):
        return m(b["input_ids"], b["decoder_input_ids"], targets=b["labels"], src_mask=b["attention_mask"],
                 tgt_mask=b["decoder_attention_mask"])

    config = TrainConfig(out_dir=os.path.join(args.out_dir, "train"), max_steps=args.steps, lr=args.lr, min_lr=args.lr / 10,
                         warmup_steps=min(100, args.steps // 10), weight_decay=0.01, betas=(0.9, 0.98),
                         eval_interval=max(args.steps // 4, 1), eval_batches=None, log_interval=10,
                         checkpoint_interval=0, keep_last=1, seed=args.seed, progress=not args.no_progress, plot=False)
    trainer = Trainer(model, None, train_loader, val_loader, config, forward_fn=forward_fn)
    t0 = time.perf_counter()
    last = trainer.train()
    train_seconds = time.perf_counter() - t0
    print(f"trained {args.steps} steps in {train_seconds:.0f} s: train loss {trainer.losses[-1]:.3f}, "
          f"held-out loss {last.get('val_loss', float('nan')):.3f}")

    # 4. translate the held-out sentences, greedy and with beam search
    refs = [zh for _, zh in heldout_pairs]
    scores = {}
    for name, beams in (("greedy", 1), (f"beam {args.num_beams}", args.num_beams)):
        t0 = time.perf_counter()
        out = translate_all(model, heldout_ds, tgt_tok, pad_id, num_beams=beams)
        bleu = corpus_bleu(out, refs, tokenize="zh")
        exact = float(np.mean([h == r for h, r in zip(out, refs)]))
        scores[name] = (bleu, exact, out)
        print(f"held-out {name}: BLEU {bleu.score:.2f}, exact match {100 * exact:.1f} % of {len(refs)} "
              f"(decoded in {time.perf_counter() - t0:.1f} s)")
        print(f"  {bleu}")
    bleu, exact, hyps = scores["greedy"]
    beam_bleu, beam_exact, _ = scores[f"beam {args.num_beams}"]
    for (en, zh), hyp in list(zip(heldout_pairs, hyps))[:6]:
        print(f"  {'✓' if hyp == zh else '✗'} {en}\n      model: {hyp}" + ("" if hyp == zh else f"\n      ref:   {zh}"))

    # 5. files: model, report, cross-attention heatmap
    atomic_write(os.path.join(args.out_dir, "config.json"), json.dumps(margs.to_dict(), indent=1))
    save_safetensors(model.state_dict(), os.path.join(args.out_dir, "model.safetensors"))
    example = collate_translation([heldout_ds[0]], pad_id)
    weights = cross_attention(model, example["input_ids"], example["attention_mask"], example["decoder_input_ids"])  # (T, S)
    write_png(os.path.join(args.out_dir, "cross_attention.png"), heatmap_rgb(weights, cell=24))
    src_tokens = [src_tok.id_to_token(i) for i in example["input_ids"][0]]
    tgt_tokens = [tgt_tok.id_to_token(i) for i in example["decoder_input_ids"][0]]
    lines = ["cross-attention of the last decoder layer (mean over heads): rows = decoder inputs, columns = source tokens",
             "source: " + " ".join(src_tokens), ""]
    lines += [f"{t:>4} " + " ".join(f"{w:4.2f}" for w in row) + f"   -> {src_tokens[int(row.argmax())]}" for t, row in zip(tgt_tokens, weights)]
    atomic_write(os.path.join(args.out_dir, "cross_attention.txt"), "\n".join(lines) + "\n")
    wall = time.perf_counter() - t_start
    report = {"heldout_bleu_greedy": bleu.score, "heldout_exact_match_greedy": exact, "heldout_size": len(refs),
              "heldout_bleu_beam": beam_bleu.score, "heldout_exact_match_beam": beam_exact, "num_beams": args.num_beams,
              "train_pairs": len(train_pairs), "steps": args.steps, "train_seconds": train_seconds, "wall_seconds": wall,
              "parameters": model.get_num_params(), "final_train_loss": trainer.losses[-1],
              "heldout_loss": last.get("val_loss"), "bleu": str(bleu)}
    atomic_write(os.path.join(args.out_dir, "report.json"), json.dumps(report, indent=1, ensure_ascii=False))
    print(f"saved the model, tokenizers, report.json and cross_attention.png/.txt in {args.out_dir} "
          f"({wall / 60:.1f} min in all)")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
