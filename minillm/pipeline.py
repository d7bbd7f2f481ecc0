"""The whole training recipe of Happy LLM chapters 5–6 as a few functions:
corpus → tokenizer → pretraining → SFT → evaluation.

``examples/train_tiny_llama.py`` and ``python -m minillm ...`` are thin command lines over
these; read this file to see every step of the pipeline in order. At its end, the command-line
pattern every example shares (``example_parser``, ``add_setting_flags``, ``apply_defaults``: a
default run of minutes, ``--quick`` in seconds) and its section ``banner``.

    compile_ahead(ModelConfig.preset("tiny", vocab_size=2048))    # fresh install: the model's kernels compile on the idle core
    paths = prepare_corpus("out/data")                            # 5.3.1 the data
    tok = train_tokenizer(paths["pretrain_train"], 2048, "out/tokenizer")   # 5.2 BPE
    model = Transformer(ModelConfig.preset("tiny", vocab_size=tok.vocab_size))  # 5.1
    pretrain(model, tok, paths, TrainConfig(out_dir="out/pretrain", max_steps=1500))  # 5.3 / 6.1
    sft(model, tok, paths, TrainConfig(out_dir="out/sft", max_steps=1500))           # 6.2
    evaluate_sft(model, tok, paths["sft_val"])                    # exact-match accuracy
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import time
from typing import Sequence

from ._ahead import compile_ahead
from ._files import atomic_write
from .data import (
    DataLoader, PretrainDataset, SFTDataset, build_token_file, check_eval_conversation, collate_sft,
    read_pretrain_texts, read_sft_conversations, write_default_corpus,
)
from .data import read_sft_records as _read_records
from .distributed import DistributedTrainer, init_process_group
from .eval import score_sft
from .eval.harness import ModelLM
from .eval.tasks import GenerationConfig as EvalGenerationSettings
from .io.jsonfile import read_json_object
from .tokenizers import BPETokenizer
from .train import Trainer, TrainConfig, check_out_dir, make_sample_fn

__all__ = [
    "compile_ahead", "prepare_corpus", "train_tokenizer", "pretrain", "sft", "evaluate_sft", "read_sft_records", "make_trainer",
    "world_preference_pairs", "DEFAULT_PROMPTS", "example_parser", "add_setting_flags", "apply_defaults", "banner",
]

# Continuations printed while pretraining: one English, one Chinese story opening. Each ends
# where the tokenizer's pre-split ends a chunk ("，汤姆"), so the prompt ids look like training ids.
DEFAULT_PROMPTS = ("In the morning, Tom", "早上，汤姆")


def prepare_corpus(data_dir: str, n_stories: int = 30_000, n_sft: int = 6_000, seed: int = 0, rebuild: bool = False) -> dict:
    """Write the built-in world corpus to ``data_dir`` (once) and return its file paths.

    Keys: ``pretrain_train``, ``pretrain_val``, ``sft_train``, ``sft_val``. An existing corpus
    written with the same settings is reused.
    """
    stamp_path = os.path.join(data_dir, "corpus.json")
    stamp = {"n_stories": n_stories, "n_sft": n_sft, "seed": seed}
    names = ("pretrain_train", "pretrain_val", "sft_train", "sft_val")
    paths = {k: os.path.join(data_dir, f"{k}.jsonl") for k in names}
    if not rebuild and os.path.exists(stamp_path) and all(os.path.exists(p) for p in paths.values()):
        try:
            if read_json_object(stamp_path) == stamp:
                return paths
        except ValueError:  # a damaged stamp: write the corpus again
            pass
    group = init_process_group()  # under mpiexec: rank 0 writes the corpus, the others wait for it
    if group.rank == 0:
        write_default_corpus(data_dir, n_stories=n_stories, n_sft=n_sft, seed=seed)
        atomic_write(stamp_path, json.dumps(stamp))
    group.barrier()
    return paths


def train_tokenizer(pretrain_paths, vocab_size: int, out_dir: str | None = None, show_progress: bool = True) -> BPETokenizer:
    """Train a byte-level BPE on the pretraining texts (5.2) and save it to ``out_dir``."""
    tok = BPETokenizer.train(read_pretrain_texts(pretrain_paths), vocab_size=vocab_size, show_progress=show_progress)
    if out_dir is not None:
        tok.save(out_dir)
    return tok


def _token_file(tok, texts_path, out_path: str, show_progress: bool) -> str:
    group = init_process_group()  # under mpiexec: rank 0 writes the file, the other ranks wait and read it
    if group.rank == 0:
        build_token_file(read_pretrain_texts(texts_path), tok, out_path, show_progress=show_progress)
    group.barrier()
    return out_path


def make_trainer(model, train_loader, val_loader, config: TrainConfig, sample_fn=None, zero_stage: int = 0,
                 bucket_cap_mb: float = 4.0) -> Trainer:
    """A ``Trainer``, or a ``DistributedTrainer`` when the script runs under ``mpiexec -n N`` (N > 1) or
    ZeRO is asked for (6.1.5). The loader's ``batch_size`` is the global batch: each rank reads its share."""
    group = init_process_group()  # one process unless started by mpiexec -n N
    if group.world_size == 1 and zero_stage == 0:
        return Trainer(model, None, train_loader, val_loader, config, sample_fn=sample_fn)
    return DistributedTrainer(model, None, train_loader, val_loader, config, sample_fn=sample_fn, group=group,
                              zero_stage=zero_stage, bucket_cap_mb=bucket_cap_mb)


def pretrain(model, tokenizer, paths: dict, config: TrainConfig, block_size: int = 256, batch_size: int = 8,
             prompts: Sequence[str] = DEFAULT_PROMPTS, resume: bool = False, zero_stage: int = 0,
             bucket_cap_mb: float = 4.0) -> Trainer:
    """Next-token pretraining (5.3 / 6.1) on packed blocks of ``block_size`` tokens.

    The texts are tokenized once into ``config.out_dir/{train,val}.bin`` (EOS after every
    document); a ``Trainer`` runs ``config.max_steps`` AdamW updates with warmup + cosine
    decay, evaluating validation loss/perplexity and printing sample continuations.
    Under ``mpiexec -n N`` the N ranks share each batch of ``batch_size`` (6.1.5, ``make_trainer``).
    """
    if block_size > model.args.max_seq_len:
        raise ValueError(f"pretrain: block_size {block_size} exceeds the model's max_seq_len {model.args.max_seq_len}")
    check_out_dir(config.out_dir, overwrite=config.overwrite, resume=resume)  # before the tokenizing, not after
    os.makedirs(config.out_dir, exist_ok=True)
    show = config.progress
    train_bin = _token_file(tokenizer, paths["pretrain_train"], os.path.join(config.out_dir, "train.bin"), show)
    val_bin = _token_file(tokenizer, paths["pretrain_val"], os.path.join(config.out_dir, "val.bin"), show)
    train_ds, val_ds = PretrainDataset(train_bin, block_size), PretrainDataset(val_bin, block_size)
    if len(train_ds) < batch_size or len(val_ds) < 1:
        raise ValueError(
            f"pretrain: not enough tokens for blocks of {block_size}: {len(train_ds)} train / {len(val_ds)} val blocks"
        )
    train_loader = DataLoader(train_ds, batch_size, shuffle=True, seed=config.seed, drop_last=True)
    val_loader = DataLoader(val_ds, min(batch_size, len(val_ds)), shuffle=False, drop_last=True)
    sample_fn = make_sample_fn(tokenizer, list(prompts), max_new_tokens=48, temperature=0.0) if prompts else None
    trainer = make_trainer(model, train_loader, val_loader, config, sample_fn, zero_stage, bucket_cap_mb)
    if resume:
        trainer.resume()
    trainer.train()
    return trainer


def read_sft_records(path, limit: int | None = None) -> list:
    """Evaluation records ``{"messages": [...], "meta": {...}}`` of an SFT file, read by the same
    reader as the training data (``minillm.data.read_sft_records``: both shapes, a BOM, errors by
    file:line) and checked to end with a user turn and its reference reply. Read it *before*
    training, so a bad file can never cost a trained model."""
    records = list(_read_records(path, for_evaluation=True))
    return records if limit is None else records[:limit]


def sft(model, tokenizer, paths: dict, config: TrainConfig, max_length: int = 256, batch_size: int = 16,
        resume: bool = False, zero_stage: int = 0, bucket_cap_mb: float = 4.0) -> Trainer:
    """Supervised fine-tuning (6.2): train only on the assistant replies (and their ``<|im_end|>``).

    Under ``mpiexec -n N`` each rank takes ``batch_size / N`` conversations of a batch; each rank's loss
    is weighted by its share of the batch's reply tokens, so the step is the one-process step."""
    check_out_dir(config.out_dir, overwrite=config.overwrite, resume=resume)
    pad_id = tokenizer.pad_token_id
    max_length = min(max_length, model.args.max_seq_len)
    train_ds = SFTDataset(list(read_sft_conversations(paths["sft_train"])), tokenizer, max_length)
    val_ds = SFTDataset(list(read_sft_conversations(paths["sft_val"])), tokenizer, max_length)
    collate = functools.partial(collate_sft, pad_id=pad_id)
    train_loader = DataLoader(train_ds, batch_size, shuffle=True, seed=config.seed, drop_last=True, collate_fn=collate)
    val_loader = DataLoader(val_ds, min(batch_size, len(val_ds)), shuffle=False, drop_last=True, collate_fn=collate)
    trainer = make_trainer(model, train_loader, val_loader, config, None, zero_stage, bucket_cap_mb)
    if resume:
        trainer.resume()
    trainer.train()
    return trainer


def evaluate_sft(model, tokenizer, records_or_path, limit: int | None = None, max_new_tokens: int = 32) -> dict:
    """Exact-match accuracy of greedy answers on SFT records, overall and per skill.

    The replies come from the evaluation harness (``minillm.eval.harness.ModelLM``: the chat
    template SFT trained on, left-padded batches, each reply stopped at ``<|im_end|>``), the
    same generation ``python -m minillm eval`` uses, so the two never disagree.
    Returns ``{"all": acc, "qa": ..., "translate": ..., "math": ..., "n": count, "examples": [...]}``.
    """
    records = read_sft_records(records_or_path) if isinstance(records_or_path, (str, os.PathLike)) else list(records_or_path)
    if limit is not None:
        records = records[:limit]
    for i, r in enumerate(records):
        try:
            check_eval_conversation(r["messages"])
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"evaluate_sft: record {i}: {e}") from None
    lm = ModelLM(model, tokenizer, batch_size=32)
    settings = EvalGenerationSettings(max_new_tokens=max_new_tokens, until=())  # greedy, stop at <|im_end|> only
    prompts = [tuple((m["role"], m["content"]) for m in r["messages"][:-1]) for r in records]
    preds = [texts[0].strip() for texts in lm.generate([(p, settings) for p in prompts])]
    result = score_sft(records, preds)
    result["examples"] = [
        {"question": r["messages"][-2]["content"], "reference": r["messages"][-1]["content"], "prediction": p}
        for r, p in zip(records, preds)
    ]
    return result


def world_seed_of(model_dir) -> int | None:
    """The world seed an SFT model dir was trained on: ``examples/train_tiny_llama.py`` writes its
    ``--seed`` to ``OUT/report.json`` beside ``OUT/model`` (and ``OUT/base_model``). None if
    there is no such file, so the caller falls back to an explicit ``--world-seed``."""
    path = os.path.join(os.path.dirname(os.path.abspath(model_dir)), "report.json")
    try:
        seed = read_json_object(path)["args"]["seed"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def world_preference_pairs(model, tokenizer, n_prompts: int, n_val_prompts: int, samples: int = 4,
                           max_new_tokens: int = 24, seed: int = 0, skip_train: int = 6_000, skip_val: int = 300,
                           world_seed: int | None = None, greedy: bool = False, max_pairs_per_prompt: int = 1) -> dict:
    """On-policy preference pairs (4.2.3 / 6.4) for an SFT model of the built-in world.

    The model answers ``n_prompts`` training questions ``samples`` times each (temperature 1);
    every reply is labelled by the world's answer (``minillm.align.on_policy_pairs``). The
    questions come after the first ``skip_train`` of the train split (the default SFT run trained
    on those) and, for the validation pairs, after the first ``skip_val`` of the val split (the
    held-out questions ``evaluate_sft`` scores), so no pair repeats what is trained or scored.
    ``world_seed`` (default ``seed``) is the seed of the world the model was trained on; ``seed``
    drives the sampling. ``greedy=True`` also asks each question greedily and makes a wrong
    greedy answer the rejected reply (``on_policy_pairs(greedy=...)``): the mistake exact match
    counts (at temperature 1 many wrong samples are unlucky draws, not the model's answer).
    ``max_pairs_per_prompt`` > 1 makes a pair of each distinct wrong reply (up to that many):
    more pairs from the same sampling, which the reward model needs.
    Returns ``{"train": pairs, "val": pairs, "train_records": ..., "stats_train": ...,
    "stats_val": ...}``.
    """
    from .align import on_policy_pairs
    from .align.rollout import generate_replies
    from .data.world import generate_sft

    out = {}
    splits = (("train", skip_train, n_prompts), ("val", skip_val, n_val_prompts))
    for name, skip, n in splits:
        records = generate_sft(skip + n, seed=seed if world_seed is None else world_seed, split=name)[skip:]
        prompts = [r["messages"][:-1] for r in records]
        replies = generate_replies(model, tokenizer, prompts, n=samples, temperature=1.0,
                                   max_new_tokens=max_new_tokens, seed=seed + (name == "val"))
        first = None
        if greedy:
            first = [r[0] for r in generate_replies(model, tokenizer, prompts, temperature=0.0,
                                                    max_new_tokens=max_new_tokens)]
        out[name], out[f"stats_{name}"] = on_policy_pairs(records, replies, seed=seed, greedy=first,
                                                          max_pairs_per_prompt=max_pairs_per_prompt)
        out[f"{name}_records"] = records
    return out


def timed(fn, *args, **kwargs):
    """``(result, seconds)`` of one call."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def format_accuracy(result: dict) -> str:
    skills = [k for k in result if k not in ("all", "n", "examples")]
    parts = [f"{100 * result['all']:.1f}% of {result['n']}"] + [f"{k} {100 * result[k]:.0f}%" for k in sorted(skills)]
    return ", ".join(parts)


# ----------------------------------------------------------------------------- the examples' command lines
# Every example under examples/ runs with no arguments (a run of minutes: its DEFAULTS) and with
# --quick (seconds: its QUICK settings, the example's end-to-end test); any setting given on the
# command line wins over both. These three helpers are that pattern, written once.
def example_parser(description: str, out_dir: str, quick_help: str = "a smoke run in seconds",
                   out_help: str = "where everything is written", progress: bool = True,
                   overwrite_help: str | None = None) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` with the flags every example has: ``--quick``, ``--out-dir`` (default
    ``out_dir``), ``--seed`` (0), ``--no-progress`` (unless ``progress=False``) and, given its help
    text, ``--overwrite``. The example adds its own flags, then parses."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--out-dir", default=out_dir, help=out_help + " (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    if progress:
        p.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
    if overwrite_help is not None:
        p.add_argument("--overwrite", action="store_true", help=overwrite_help)
    return p


def add_setting_flags(parser, defaults: dict, skip=()) -> None:
    """One flag per setting of ``defaults`` (``n_stories`` -> ``--n-stories``), typed like its
    default value and defaulting to None, so ``apply_defaults`` can tell "not given" from a value.
    Settings named in ``skip`` get no flag here (the example declares those itself)."""
    for name, value in defaults.items():
        if name in skip:
            continue
        if type(value) not in (int, float, str):  # type=bool would read "False" as True; tuples need nargs
            raise TypeError(f"add_setting_flags: setting {name!r} is a {type(value).__name__}; only int, float "
                            "and str settings get a flag here: declare it yourself and pass skip=[...]")
        parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=None)


def apply_defaults(args: argparse.Namespace, defaults: dict) -> argparse.Namespace:
    """Give every setting of ``defaults`` that the command line left out (None, or no such flag)
    its value there: the example passes ``QUICK if args.quick else DEFAULTS``. Returns ``args``."""
    for name, value in defaults.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    return args


def banner(text: str) -> None:
    """An example's section heading: ``=== text ===`` after a blank line, flushed (so it shows up in
    order with progress bars and in logs)."""
    print(f"\n=== {text} ===", flush=True)
