"""The third stage of training (Happy LLM 4.2.3, 6.4): preferences -> reward model -> DPO, measured.

    python examples/train_tiny_llama.py            # first: the SFT model (runs/tiny_llama/model, ~15 CPU minutes)
    python examples/align.py                       # then this (11 minutes on 2 cores shared at load 4-8)
    python examples/align.py --sft-model DIR       # any SFT model dir of train_tiny_llama.py (its world seed is
                                                   # read from DIR/../report.json, or give --world-seed)
    python examples/align.py --quick               # a smoke run: trains its own micro SFT model first

Steps:
  1. load the SFT model (or, if there is none, pretrain + SFT a small one with minillm/pipeline.py)
  2. on-policy preference pairs: ask the SFT model each training prompt of the world greedily and
     sample it 4 times more, and label every reply with the world's answer; a wrong reply (the
     greedy one first: the mistake exact match counts) is "rejected", a right sample (or the world's
     answer) "chosen"; one pair per distinct wrong reply (up to --pairs-per-prompt 4). Written to
     OUT/pairs_{train,val}.jsonl ({"prompt","chosen","rejected"})
  3. reward model: the SFT backbone + a scalar head, Bradley-Terry loss; held-out pairwise accuracy
  4. DPO against the frozen SFT model (its log-probs precomputed once), with --rpo-alpha 1 (the
     chosen replies' NLL, which keeps their likelihood from falling), and its control: the same
     pairs and steps with only that NLL (no preference term), so "DPO − NLL" below is what the
     preference term itself adds (--no-nll-control skips it). --online-rounds 3: online (iterative)
     DPO instead: each round samples the *current* policy 4 times on 2,000 new training questions,
     pairs its own right and wrong replies to the same question and trains one epoch against the
     policy at the round's start (the control then runs the same loop). --quick runs 2 tiny online
     rounds, so the smoke test covers the online loop
  5. PPO (RLHF as in InstructGPT): rollouts from the policy, +1/-1 from the world's answer (or, with
     --ppo-reward rm, the reward model's score), a per-token KL penalty to the SFT model, GAE,
     clipped policy and value losses
  6. held-out questions (never trained on): exact match before/after, win rate over SFT judged by
     the world's answers and by the reward model, KL to SFT, for DPO and for PPO; then correctness
     greedy AND sampled (8 replies per question at temperatures 1.0 and 0.7, how a chat model is
     used), with standard errors, the change against SFT and DPO's against the NLL control (paired),
     and the mistakes by failure mode; curves as PNGs
"""
import copy
import dataclasses
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

import minillm as mi  # noqa: E402
from minillm import pipeline  # noqa: E402
from minillm.align import RewardModel, pairwise_accuracy, score_replies, train_dpo, train_reward_model  # noqa: E402
from minillm.align import correctness, label_reply, paired_difference, write_preference_jsonl  # noqa: E402
from minillm.align.online_dpo import OnlineDPOConfig, train_online_dpo  # noqa: E402
from minillm.align.ppo import PPOConfig, PPOTrainer  # noqa: E402
from minillm.align.rollout import kl_to_reference  # noqa: E402
from minillm.data.world import generate_sft  # noqa: E402
from minillm.eval import exact_match  # noqa: E402
from minillm.io import load_model, save_model  # noqa: E402
from minillm.models.llama import ModelConfig, Transformer  # noqa: E402
from minillm.pipeline import banner  # noqa: E402
from minillm.plot import lines_png  # noqa: E402
from minillm.tokenizers import load_tokenizer  # noqa: E402
from minillm.train import TrainConfig, check_out_dir  # noqa: E402
from minillm.train.metrics import read_metrics  # noqa: E402

# The default recipe is the best one measured on the strong SFT model (docs/chapter4.md). Pairs: each wrong reply
# of the model to 6,000 training questions (its greedy mistake first, then up to 3 more of its 4 samples) against
# a right one: ~4,500 pairs. Reward model: 1 epoch at lr 1e-4 (80 steps at 5e-4 on one pair per prompt left it at
# chance). DPO: TRL's rpo_alpha = 1 (NLL on the chosen replies) at lr 2e-4 for 1 epoch; pure DPO lowered greedy and
# sampled correctness (lr 2e-4: -9 points; lr 1e-4 on these pairs: -4 to -5). PPO: the rule reward (+1/-1 by the
# world's answer); PPO lowered greedy correctness with either reward (reward model -4.3 points, rule -2.1 on 1,000).
# Online DPO (--online-rounds 3: 3 x 2,000 fresh questions, lr 1e-4, RPO alpha 1) gained +2.3 and +2.4 greedy on
# 1,000 (offline RPO: +3.7 and +3.3), and its preference term added +0.2 +- 0.5 over its own NLL control (two
# seeds); so offline RPO stays the default, with the NLL control beside it to show what DPO itself adds.
DEFAULTS = dict(n_prompts=6000, n_val_prompts=200, samples=4, pairs_per_prompt=4, eval_limit=300, eval_samples=8,
                rm_steps=280, batch_size=16, rm_lr=1e-4, dpo_steps=280, beta=0.1, max_new_tokens=24,
                ppo_iters=30, ppo_lr=5e-5, ppo_batch=32, kl_coef=0.05, rpo_alpha=1.0, online_rounds=0,
                prompts_per_round=2000)
QUICK = dict(n_prompts=48, n_val_prompts=16, samples=2, pairs_per_prompt=2, eval_limit=16, eval_samples=2, rm_steps=4,
             dpo_steps=4, batch_size=4, rm_lr=5e-4, dpo_lr=2e-4, beta=0.1, max_new_tokens=12, ppo_iters=2, ppo_lr=2e-5,
             ppo_batch=8, kl_coef=0.1, rpo_alpha=1.0, online_rounds=2, prompts_per_round=24)
N_SFT_TRAIN = 6_000  # the SFT run trained on the first 6000 "train" conversations; our prompts come after them


def parse_args(argv=None):
    # --quick, --out-dir, --seed, --no-progress, --overwrite; the settings' flags below are declared by hand (not
    # add_setting_flags) because each carries its own help text
    p = pipeline.example_parser(__doc__, out_dir="runs/align", quick_help="a smoke run in seconds (trains a micro SFT "
                                "model itself)", overwrite_help="replace an earlier run in --out-dir")
    p.add_argument("--sft-model", "--model", dest="model", default="runs/tiny_llama/model", metavar="DIR",
                   help="the SFT model dir that examples/train_tiny_llama.py writes (default: %(default)s); "
                   "if it is missing, a small one is trained first")
    p.add_argument("--world-seed", type=int,
                   help="seed of the world the SFT model was trained on (default: read from DIR/../report.json, "
                   "which train_tiny_llama.py writes; else --seed)")
    p.add_argument("--n-prompts", type=int, help="training prompts to sample the SFT model on")
    p.add_argument("--n-val-prompts", type=int, help="held-out prompts for the pairs' validation split")
    p.add_argument("--samples", type=int, help="replies sampled per prompt")
    p.add_argument("--pairs-per-prompt", type=int, help="at most this many pairs per prompt (one per distinct wrong reply)")
    p.add_argument("--eval-limit", type=int, help="held-out questions for exact match / win rate")
    p.add_argument("--eval-samples", type=int, help="replies sampled per held-out question (at temperatures 1.0 and 0.7)")
    p.add_argument("--rm-steps", type=int, help="reward-model updates")
    p.add_argument("--dpo-steps", type=int, help="DPO updates")
    p.add_argument("--batch-size", type=int, help="pairs per update")
    p.add_argument("--rm-lr", type=float, help="reward-model peak learning rate")
    p.add_argument("--dpo-lr", type=float, help="DPO peak learning rate (default: 1e-4 online, 2e-4 offline)")
    p.add_argument("--beta", type=float, help="DPO's β: the strength of the pull towards the reference")
    p.add_argument("--max-new-tokens", type=int, help="reply budget when sampling")
    p.add_argument("--rpo-alpha", type=float, help="add this much NLL of the chosen replies to DPO (TRL's rpo_alpha; 0 = pure DPO)")
    p.add_argument("--online-rounds", type=int,
                   help="online (iterative) DPO: rounds of sampling the current policy, pairing its own right and "
                   "wrong replies and training on them; 0 = offline DPO on the pairs of step 2")
    p.add_argument("--prompts-per-round", type=int, help="fresh training questions sampled per online round")
    p.add_argument("--loss-type", choices=["sigmoid", "ipo"], default="sigmoid",
                   help="DPO's loss (TRL's loss_type): sigmoid = DPO (cDPO with --label-smoothing), ipo = IPO")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="cDPO's label noise ε (TRL's label_smoothing)")
    p.add_argument("--dpo-reference", choices=["round", "sft"], default="round",
                   help="online DPO's reference: the policy at the start of each round (default) or the SFT model")
    p.add_argument("--no-nll-control", dest="nll_control", action="store_false",
                   help="skip the control run: the same online loop with the NLL of the chosen replies only (no "
                   "preference term), which tells whether DPO's preference term itself helps")
    p.add_argument("--ppo-iters", type=int, help="PPO iterations (rollout + updates); 0 skips PPO")
    p.add_argument("--ppo-lr", type=float, help="PPO learning rate")
    p.add_argument("--ppo-batch", type=int, help="replies per PPO rollout")
    p.add_argument("--kl-coef", type=float, help="PPO's per-token KL penalty to the SFT model")
    p.add_argument("--ppo-reward", choices=["rm", "rule"], default="rule",
                   help="PPO's reward: +1/-1 from the world's answer (default: the reward model is weak here) or "
                   "the reward model's score (rm, InstructGPT's choice)")
    p.add_argument("--ppo-critic", choices=["value-head", "reward-model"], default="value-head",
                   help="PPO's critic: a value head on the actor (default, one trunk) or, as in the book, "
                   "a copy of the reward model (a second trunk: slower)")
    args = p.parse_args(argv)
    pipeline.apply_defaults(args, QUICK if args.quick else DEFAULTS)  # the settings the command line left out
    if args.dpo_lr is None:  # each the best measured for its loop (docs/chapter4.md)
        args.dpo_lr = 1e-4 if args.online_rounds else 2e-4
    return args


def micro_sft_model(out_dir, quick, show, world_seed):
    """No SFT model given: pretrain + SFT one with the pipeline (a micro one for --quick)."""
    data = pipeline.prepare_corpus(os.path.join(out_dir, "data"), n_stories=1500 if quick else 30_000,
                                   n_sft=400 if quick else N_SFT_TRAIN, seed=world_seed)
    tok = pipeline.train_tokenizer(data["pretrain_train"], 384 if quick else 2048, os.path.join(out_dir, "tokenizer"),
                                   show_progress=False)
    dims = dict(dim=48, n_layers=2, n_heads=4, n_kv_heads=2) if quick else {}
    model = Transformer(ModelConfig.preset("tiny", vocab_size=tok.vocab_size, **dims))
    steps = (30, 30) if quick else (700, 700)
    common = dict(checkpoint_interval=0, keep_last=1, progress=show, eval_interval=0, overwrite=True)
    pipeline.pretrain(model, tok, data, TrainConfig(out_dir=os.path.join(out_dir, "pretrain"), max_steps=steps[0],
                      lr=3e-3, min_lr=3e-4, warmup_steps=max(1, steps[0] // 20), **common),
                      block_size=128 if quick else 256, batch_size=8, prompts=())
    pipeline.sft(model, tok, data, TrainConfig(out_dir=os.path.join(out_dir, "sft"), max_steps=steps[1], lr=2e-3,
                 min_lr=2e-4, warmup_steps=max(1, steps[1] // 20), **common), batch_size=16)
    save_model(model, os.path.join(out_dir, "model"))
    tok.save(os.path.join(out_dir, "model"))
    return model, tok


def mistakes_by_kind(result) -> dict:
    """The held-out mistakes of ``pipeline.evaluate_sft``'s examples, counted by the failure modes
    the pairs name (``label_reply``: wrong entity, arithmetic, no stop, wrong language, other)."""
    counts = {}
    for e in result["examples"]:
        kind = label_reply(e["prediction"], e["reference"], e["question"])
        if kind != "correct":
            counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items()))


TEMPERATURES = (1.0, 0.7)  # how a chat model is used (and how the on-policy pairs and PPO rollouts were drawn)
SHOWN_KINDS = ("wrong_entity", "arithmetic", "no_stop", "wrong_language", "other")


def correctness_rows(models, tok, records, samples, max_new_tokens, seed) -> dict:
    """``correctness`` of each model, greedy and sampled at each of TEMPERATURES (the same seed for
    every model, so they draw the same random numbers), with the change against the first model
    (the SFT one) and its paired standard error."""
    rows = {}
    for name, model in models.items():
        rows[name] = {"greedy": correctness(model, tok, records, 0.0, 1, max_new_tokens, seed)}
        for t in TEMPERATURES:
            rows[name][f"T={t}"] = correctness(model, tok, records, t, samples, max_new_tokens, seed)
    first = next(iter(rows.values()))
    for row in rows.values():
        for key, r in row.items():
            r["delta"], r["delta_se"] = paired_difference(r["per_prompt"], first[key]["per_prompt"])
    return rows


def print_correctness(rows, samples):
    keys = ["greedy"] + [f"T={t}" for t in TEMPERATURES]
    print(f"\nheld-out correctness (± one standard error over prompts; Δ against SFT ± its paired error; "
          f"T = sampled, {samples} replies per question):")
    print(f"  {'':5s}" + "".join(f"{k:>26s}" for k in keys))
    for name, row in rows.items():
        cells = []
        for k in keys:
            r = row[k]
            d = "" if name == next(iter(rows)) else f" Δ {100 * r['delta']:+.1f}±{100 * r['delta_se']:.1f}"
            cells.append(f"{100 * r['acc']:.1f}±{100 * r['se']:.1f}{d}")
        print(f"  {name:5s}" + "".join(f"{c:>26s}" for c in cells))
    for k in keys:
        print(f"  mistakes, {k} (share of replies: " + " / ".join(SHOWN_KINDS) + "): " + "; ".join(
            f"{name} " + " / ".join(f"{100 * row[k]['kinds'][kind]:.1f}" for kind in SHOWN_KINDS) for name, row in rows.items()))
        print(f"  by skill, {k}: " + "; ".join(
            f"{name} " + ", ".join(f"{s} {100 * v:.1f}" for s, v in row[k]["skills"].items()) for name, row in rows.items()))


def curves_png(metrics_paths, png_path, keys):
    """One PNG with the curves ``keys`` of metrics.jsonl files (colours in PALETTE order); several
    files (online DPO's rounds) are one curve, each continuing the step count of the one before."""
    rows, offset = [], 0
    for path in metrics_paths:
        part = read_metrics(path)
        rows += [{**r, "step": r["step"] + offset} for r in part if "step" in r]
        offset = rows[-1]["step"] if rows else offset
    series = []
    for k in keys:
        pts = [(r["step"], r[k]) for r in rows if isinstance(r.get(k), (int, float))]
        if pts:
            series.append(tuple(zip(*pts)))
    if series:
        return lines_png(png_path, series)
    return None


def main(argv=None):
    args = parse_args(argv)
    mi.tune_malloc()
    mi.manual_seed(args.seed)
    for sub in ("", "reward", "dpo", "nll_control", "ppo", "sft_model"):  # before any work, never on top of another run
        check_out_dir(os.path.join(args.out_dir, sub), overwrite=args.overwrite)
    os.makedirs(args.out_dir, exist_ok=True)
    show = not args.no_progress
    t0 = time.time()
    report = {"args": vars(args)}

    banner("1. the SFT model")
    loaded = not args.quick and os.path.isdir(args.model)
    if args.world_seed is None:  # the questions must come from the world the model learned (its held-out split)
        args.world_seed = pipeline.world_seed_of(args.model) if loaded else None
        args.world_seed = args.seed if args.world_seed is None else args.world_seed
    if loaded:
        sft_model, tok = load_model(args.model), load_tokenizer(os.path.join(args.model, "tokenizer.json"))
        print(f"loaded {args.model}: {sft_model.num_parameters():,} parameters; world seed {args.world_seed}")
    else:
        print("no SFT model at " + args.model + ": pretraining + SFT a " + ("micro" if args.quick else "small")
              + " one first (python examples/train_tiny_llama.py makes a strong one)")
        sft_model, tok = micro_sft_model(os.path.join(args.out_dir, "sft_model"), args.quick, show, args.world_seed)
    reference = copy.deepcopy(sft_model)  # the frozen SFT model: for comparison and the KL (DPO precomputes its own)

    # pairs: training prompts the SFT run never saw; held-out prompts from the "val" stories, after the
    # eval_limit questions scored at the end (pipeline.world_preference_pairs says which)
    eval_records = generate_sft(args.eval_limit, seed=args.world_seed, split="val")

    banner("2. on-policy preference pairs")
    t = time.time()
    pairs = pipeline.world_preference_pairs(sft_model, tok, args.n_prompts, args.n_val_prompts, samples=args.samples,
                                            max_new_tokens=args.max_new_tokens, seed=args.seed,
                                            world_seed=args.world_seed, greedy=True, skip_train=N_SFT_TRAIN,
                                            skip_val=args.eval_limit, max_pairs_per_prompt=args.pairs_per_prompt)
    train_records = pairs["train_records"]
    for name in ("train", "val"):
        stats = pairs[f"stats_{name}"]
        total = sum(stats.values())
        path = write_preference_jsonl(os.path.join(args.out_dir, f"pairs_{name}.jsonl"), pairs[name])
        print(f"{name}: {len(pairs[name + '_records'])} prompts × (1 greedy + {args.samples} sampled) replies -> {len(pairs[name])} pairs "
              f"({path}); replies: " + ", ".join(f"{k} {v / total:.0%}" for k, v in stats.items() if v))
        report[f"samples_{name}"] = stats
    print(f"sampled in {time.time() - t:.0f}s")
    for p in pairs["train"][:3]:
        q = p.prompt[-1]["content"].replace("\n", " ")
        print(f"  …{q[-60:]!s}\n      chosen {p.chosen!r}  rejected {p.rejected!r}  ({p.meta['kind']})")
    if len(pairs["train"]) < args.batch_size or not pairs["val"]:
        raise SystemExit("error: the SFT model made too few mistakes to learn from; raise --n-prompts")

    banner("3. reward model (4.2.3)")
    rm = RewardModel.from_sft(sft_model)
    acc0 = pairwise_accuracy(rm, tok, pairs["val"])
    rm_cfg = TrainConfig(out_dir=os.path.join(args.out_dir, "reward"), max_steps=args.rm_steps, lr=args.rm_lr,
                         min_lr=args.rm_lr / 10, warmup_steps=max(1, args.rm_steps // 10),
                         eval_interval=max(1, args.rm_steps // 5), eval_batches=None, checkpoint_interval=0,
                         keep_last=1, progress=show, plot=False, overwrite=args.overwrite, seed=args.seed)
    rm_trainer = train_reward_model(rm, tok, pairs["train"], pairs["val"], rm_cfg, batch_size=args.batch_size)
    acc = pairwise_accuracy(rm, tok, pairs["val"])
    print(f"held-out pairwise accuracy: {acc0['all']:.1%} before training -> {acc['all']:.1%} after ({acc['n']} pairs); "
          "by mistake: " + ", ".join(f"{k} {v:.0%}" for k, v in acc.items() if k not in ("all", "n", "margin")))
    report["reward_model"] = {"accuracy_before": acc0, "accuracy": acc}
    curves_png([rm_trainer.metrics.path], os.path.join(args.out_dir, "reward_curves.png"), ["train_loss", "accuracy", "val_accuracy"])

    policy, control = copy.deepcopy(sft_model), None
    if args.online_rounds:
        banner(f"4. online DPO: {args.online_rounds} rounds of sampling the policy, pairing its own replies, DPO")
        skip = N_SFT_TRAIN + args.n_prompts  # training questions neither SFT nor step 2 used
        online_records = generate_sft(skip + args.online_rounds * args.prompts_per_round, seed=args.world_seed,
                                      split="train")[skip:]
        cfg = OnlineDPOConfig(rounds=args.online_rounds, prompts_per_round=args.prompts_per_round, samples=args.samples,
                              max_new_tokens=args.max_new_tokens, max_pairs_per_prompt=args.pairs_per_prompt,
                              beta=args.beta, loss_type=args.loss_type, label_smoothing=args.label_smoothing,
                              rpo_alpha=args.rpo_alpha, reference=args.dpo_reference, lr=args.dpo_lr,
                              batch_size=args.batch_size, seed=args.seed, own_chosen_only=not args.quick)
        if args.quick:
            print("(--quick: the micro model is never right, so a chosen reply is the world's answer, not its own)")
        runs = [("DPO", policy, cfg)]
        if args.nll_control:  # β -> 0 leaves only rpo_alpha·NLL of the chosen replies: rejection-sampling fine-tuning
            control = copy.deepcopy(sft_model)
            runs.append(("NLL", control, dataclasses.replace(cfg, beta=1e-4, loss_type="sigmoid", label_smoothing=0.0,
                                                              rpo_alpha=args.rpo_alpha or 1.0)))
        for name, model, run_cfg in runs:
            sub = "dpo" if name == "DPO" else "nll_control"
            print("DPO" + (f" + {args.rpo_alpha:g}·NLL of the chosen (RPO)" if args.rpo_alpha else "") if name == "DPO"
                  else "the control: the same loop, only the NLL of the chosen replies (no preference term)")
            t = time.time()
            hist = train_online_dpo(model, tok, online_records, run_cfg, os.path.join(args.out_dir, sub), progress=show,
                                    overwrite=args.overwrite, log=lambda h: print(
                                        f"  round {h['round']}: {h['prompts']} prompts × {args.samples} samples, "
                                        f"{h['sampled_correct']:.1%} right -> {h['pairs']} pairs; "
                                        f"{h['steps']} steps, loss {h['loss']:.3f}, margin {h['rewards/margins']:.3f}",
                                        flush=True))
            print(f"  {time.time() - t:.0f}s")
            report[f"online_{sub}"] = hist
            save_model(model, os.path.join(args.out_dir, sub, "model"))
            tok.save(os.path.join(args.out_dir, sub, "model"))
        curves_png([os.path.join(args.out_dir, "dpo", f"round{r + 1}", "metrics.jsonl") for r in range(args.online_rounds)],
                   os.path.join(args.out_dir, "dpo_curves.png"),
                   ["train_loss", "rewards/chosen", "rewards/rejected", "rewards/margins"])
    else:
        banner("4. DPO (offline: the pairs of step 2)")
        runs = [("DPO", policy, dict(beta=args.beta, rpo_alpha=args.rpo_alpha, loss_type=args.loss_type,
                                     label_smoothing=args.label_smoothing))]
        if args.nll_control:  # β -> 0 leaves only rpo_alpha·NLL of the chosen replies: SFT on them
            control = copy.deepcopy(sft_model)
            runs.append(("NLL", control, dict(beta=1e-4, rpo_alpha=args.rpo_alpha or 1.0)))
        for name, model, loss in runs:
            sub = "dpo" if name == "DPO" else "nll_control"
            print("DPO" + (f" + {args.rpo_alpha:g}·NLL of the chosen (RPO)" if args.rpo_alpha else "") if name == "DPO"
                  else "the control: only the NLL of the same chosen replies (no preference term)")
            dpo_cfg = TrainConfig(out_dir=os.path.join(args.out_dir, sub), max_steps=args.dpo_steps, lr=args.dpo_lr,
                                  min_lr=args.dpo_lr / 10, warmup_steps=max(1, args.dpo_steps // 10),
                                  eval_interval=max(1, args.dpo_steps // 5), eval_batches=None, checkpoint_interval=0,
                                  keep_last=1, progress=show, plot=False, overwrite=args.overwrite, seed=args.seed)
            trainer = train_dpo(model, tok, pairs["train"], pairs["val"], dpo_cfg, batch_size=args.batch_size, **loss)
            last = [r for r in read_metrics(trainer.metrics.path) if "val_rewards/margins" in r][-1]
            print(f"  held-out pairs: loss {last['val_loss']:.3f}, reward accuracy {last['val_rewards/accuracies']:.1%}, "
                  f"margin {last['val_rewards/margins']:.3f}")
            if name == "DPO":
                curves_png([trainer.metrics.path], os.path.join(args.out_dir, "dpo_curves.png"),
                           ["train_loss", "rewards/chosen", "rewards/rejected", "rewards/margins"])
            save_model(model, os.path.join(args.out_dir, sub, "model"))
            tok.save(os.path.join(args.out_dir, sub, "model"))

    banner("5. PPO (RLHF)")
    ppo_policy = None
    if args.ppo_iters > 0:
        ppo_policy = copy.deepcopy(sft_model)
        prompts = [r["messages"][:-1] for r in train_records]
        refs = [r["messages"][-1]["content"] for r in train_records]
        if args.ppo_reward == "rm":
            def score_fn(idx, replies):
                return score_replies(rm, tok, [prompts[i] for i in idx], [r.text for r in replies])
        else:
            def score_fn(idx, replies):
                return [1.0 if r.stopped and exact_match(r.text, refs[i]) else -1.0 for i, r in zip(idx, replies)]
        cfg = PPOConfig(lr=args.ppo_lr, batch_size=args.ppo_batch, mini_batch_size=max(1, args.ppo_batch // 2),
                        kl_coef=args.kl_coef, max_new_tokens=args.max_new_tokens, seed=args.seed)
        critic = copy.deepcopy(rm) if args.ppo_critic == "reward-model" else None
        ppo = PPOTrainer(ppo_policy, tok, prompts, score_fn, cfg, os.path.join(args.out_dir, "ppo"), reference=reference,
                         critic=critic)
        t = time.time()
        every = max(1, args.ppo_iters // 8)
        ppo.train(args.ppo_iters, log=lambda h: h["step"] % every == 0 and print(
            f"  iteration {h['step']}: score {h['score']:+.3f}, KL {h['kl']:.3f}, pg_loss {h['pg_loss']:+.3f}, "
            f"vf_loss {h['vf_loss']:.3f}, clipfrac {h['clipfrac']:.2f}, stopped {h['stopped']:.0%}", flush=True))
        print(f"{args.ppo_iters} iterations of {args.ppo_batch} rollouts in {time.time() - t:.0f}s")
        curves_png([ppo.metrics.path], os.path.join(args.out_dir, "ppo_curves.png"), ["score", "kl", "pg_loss", "vf_loss"])
        save_model(ppo_policy, os.path.join(args.out_dir, "ppo", "model"))

    banner("6. held-out questions")
    prompts = [r["messages"][:-1] for r in eval_records]
    before = pipeline.evaluate_sft(reference, tok, eval_records, max_new_tokens=args.max_new_tokens)
    ok0 = np.array([exact_match(e["prediction"], e["reference"]) for e in before["examples"]])
    r0 = score_replies(rm, tok, prompts, [e["prediction"] for e in before["examples"]])
    print(f"exact match, SFT: {pipeline.format_accuracy(before)}")
    print(f"  mistakes by kind: {mistakes_by_kind(before)}")
    report["eval"] = {"exact_match_sft": {k: v for k, v in before.items() if k != "examples"},
                      "mistakes_sft": mistakes_by_kind(before)}
    for name, policy_model in (("DPO", policy), ("PPO", ppo_policy)):
        if policy_model is None:
            continue
        after = pipeline.evaluate_sft(policy_model, tok, eval_records, max_new_tokens=args.max_new_tokens)
        ok1 = np.array([exact_match(e["prediction"], e["reference"]) for e in after["examples"]])
        r1 = score_replies(rm, tok, prompts, [e["prediction"] for e in after["examples"]])
        win_truth = float(np.mean((ok1 > ok0) + 0.5 * (ok1 == ok0)))
        win_rm = float(np.mean((r1 > r0) + 0.5 * (r1 == r0)))
        kl = kl_to_reference(policy_model, reference, tok, prompts, max_new_tokens=args.max_new_tokens, seed=args.seed)
        print(f"\nexact match, {name}: {pipeline.format_accuracy(after)}")
        print(f"  mistakes by kind: {mistakes_by_kind(after)}")
        print(f"{name} fixed {int(((ok1 == 1) & (ok0 == 0)).sum())} answers and broke {int(((ok1 == 0) & (ok0 == 1)).sum())}")
        print(f"win rate of {name} over SFT (ties count half): {win_truth:.1%} by the world's answers, "
              f"{win_rm:.1%} by the reward model")
        print(f"KL({name} || SFT) = {kl['kl']:.3f} nats per reply (sampled replies, {kl['mean_tokens']:.1f} tokens on average)")
        shown = 0
        for e0, e1 in zip(before["examples"], after["examples"]):
            if shown < 4 and exact_match(e0["prediction"], e0["reference"]) != exact_match(e1["prediction"], e1["reference"]):
                q = e0["question"].replace("\n", " ")
                print(f"  …{q[-70:]}\n      SFT {e0['prediction']!r} -> {name} {e1['prediction']!r}   (answer {e0['reference']!r})")
                shown += 1
        report["eval"][name.lower()] = {
            "exact_match": {k: v for k, v in after.items() if k != "examples"},
            "win_rate_truth": win_truth, "win_rate_reward_model": win_rm, "kl_to_sft": kl,
            "mistakes": mistakes_by_kind(after),
        }
    models = {"SFT": reference, "DPO": policy}
    if control is not None:
        models["NLL"] = control  # the control: the same online loop without the preference term
    if ppo_policy is not None:
        models["PPO"] = ppo_policy
    rows = correctness_rows(models, tok, eval_records, args.eval_samples, args.max_new_tokens, args.seed)
    print_correctness(rows, args.eval_samples)
    if control is not None:  # what the preference term adds: DPO against its own control, paired on the same questions
        report["dpo_minus_nll"] = {}
        for k, r in rows["DPO"].items():
            d, se = paired_difference(r["per_prompt"], rows["NLL"][k]["per_prompt"])
            report["dpo_minus_nll"][k] = {"delta": d, "delta_se": se}
        print("  DPO − NLL control (the preference term's own effect; paired): " + ", ".join(
            f"{k} {100 * v['delta']:+.1f}±{100 * v['delta_se']:.1f}" for k, v in report["dpo_minus_nll"].items()))
    report["correctness"] = {name: {k: {kk: vv for kk, vv in r.items() if kk != "per_prompt"} for k, r in row.items()}
                             for name, row in rows.items()}
    report["minutes"] = (time.time() - t0) / 60
    with open(os.path.join(args.out_dir, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, ensure_ascii=False, indent=1)
    print(f"\ncurves: {args.out_dir}/reward_curves.png (blue: train loss, orange: train accuracy, green: held-out accuracy), "
          f"{args.out_dir}/dpo_curves.png (blue: loss, orange: rewards/chosen, green: rewards/rejected, red: margins), "
          f"{args.out_dir}/ppo_curves.png (blue: score, orange: KL, green: policy loss, red: value loss)")
    print(f"report: {args.out_dir}/report.json; done in {report['minutes']:.1f} minutes")
    return report


if __name__ == "__main__":
    main()
