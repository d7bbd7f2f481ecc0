"""Chapter 4.2.3: preference pairs, the reward model and DPO (minillm/align/)."""
import copy
import dataclasses
import json
import math

import numpy as np
import pytest

import minillm as mi
import minillm.nn.functional as F
from minillm.align import (
    PreferenceDataset, PreferencePair, RewardModel, bradley_terry_loss, collate_pairs, dpo_loss, label_reply,
    make_mistake, offline_pairs, on_policy_pairs, pairwise_accuracy, precompute_reference_logps,
    read_preference_jsonl, score_replies, sequence_logps, tokenize_pair, train_dpo, train_reward_model,
    write_preference_jsonl,
)
from minillm.align.dpo import response_targets
from minillm.align.reward import last_token_index
from minillm.data.world import generate_sft, generate_stories
from minillm.eval import exact_match
from minillm.models import ModelConfig, Transformer
from minillm.peft import LoraConfig, get_peft_model
from minillm.testing import gradcheck
from minillm.tokenizers import BPETokenizer
from minillm.train import TrainConfig


@pytest.fixture(scope="module")
def tok():
    return BPETokenizer.train(generate_stories(150, seed=0), vocab_size=400, show_progress=False)


def _model(vocab, dtype=None, **kw):
    mi.manual_seed(0)
    cfg = ModelConfig(**{**dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=vocab, max_seq_len=256,
                                hidden_dim=48), **kw})
    m = Transformer(cfg)
    return m.to(dtype) if dtype is not None else m


def _pairs(n=24, split="train", seed=0):
    return offline_pairs(generate_sft(n, seed=0, split=split), seed=seed)


# ----------------------------------------------------------------------------- the backbone
def test_hidden_states_are_what_the_lm_head_reads():
    model = _model(64)
    x = mi.tensor(np.random.default_rng(0).integers(0, 64, size=(2, 7)))
    h = model.hidden_states(x)
    assert h.shape == (2, 7, 32)
    np.testing.assert_array_equal(model.output(h).numpy(), model(x).logits.numpy())


# ----------------------------------------------------------------------------- preference data
def test_offline_pairs_reject_a_wrong_answer_of_each_kind():
    records = generate_sft(200, seed=0, split="train")
    pairs = offline_pairs(records)
    assert len(pairs) == len(records)  # every record has at least one applicable mistake
    kinds = {p.meta["kind"] for p in pairs}
    assert kinds == {"wrong_entity", "arithmetic", "no_stop", "wrong_language"}
    for rec, p in zip(records, pairs):
        assert p.chosen == rec["messages"][-1]["content"]
        assert not exact_match(p.rejected, p.chosen)
        assert label_reply(p.rejected, p.chosen, rec["messages"][-2]["content"]) == p.meta["kind"] or (
            p.meta["kind"] == "wrong_entity" and p.meta["skill"] == "translate")  # a wrong word may be the other language
        if p.meta["kind"] == "arithmetic":
            assert p.rejected.isdigit() and p.meta["skill"] == "math"


def test_wrong_entities_come_from_the_story_when_it_has_them():
    rec = {"messages": [
        {"role": "user", "content": "One day, Tom went to the park. There, Tom met Amy. Amy saw a fox.\nQuestion: Who did Tom meet?"},
        {"role": "assistant", "content": "Amy."}], "meta": {"skill": "qa", "lang": "en", "qtype": "who_met"}}
    import random
    for s in range(5):
        assert make_mistake(rec, "wrong_entity", random.Random(s)) == "Tom."  # the only other name in the story
    assert make_mistake(rec, "wrong_language", random.Random(0)) == "艾米。"
    assert make_mistake(rec, "arithmetic", random.Random(0)) is None
    with pytest.raises(ValueError, match="kind must be one of"):
        make_mistake(rec, "typo", random.Random(0))


def test_label_reply_names_the_failure_mode():
    assert label_reply("The market", "the market.") == "correct"
    assert label_reply("the market. the market. the", "the market.") == "no_stop"
    assert label_reply("市场。", "the market.") == "wrong_language"
    assert label_reply("13", "12") == "arithmetic"
    assert label_reply("the park.", "the market.") == "wrong_entity"
    assert label_reply("", "12") == "other"
    assert label_reply("the market.", "the market.", stopped=False) == "no_stop"  # cut at the token budget


def test_on_policy_pairs_prefer_a_right_sample_else_the_reference():
    records = generate_sft(3, seed=0, split="val")
    refs = [r["messages"][-1]["content"] for r in records]
    replies = [[refs[0], "zzz", refs[0]], [refs[1], refs[1]], ["wrong", "also wrong"]]
    pairs, stats = on_policy_pairs(records, replies, seed=0)
    assert len(pairs) == 2  # the second prompt is always right: nothing to learn from it
    assert (pairs[0].chosen, pairs[0].rejected) == (refs[0], "zzz") and pairs[0].meta["chosen_sampled"]
    assert pairs[1].chosen == refs[2] and not pairs[1].meta["chosen_sampled"]
    assert stats["correct"] == 4 and sum(stats.values()) == 7
    with pytest.raises(ValueError, match="3 records but 2"):
        on_policy_pairs(records, replies[:2])
    # online DPO: both sides must be the model's own samples, so the never-right prompt gives no pair
    own, own_stats = on_policy_pairs(records, replies, seed=0, sampled_chosen_only=True)
    assert [(p.chosen, p.rejected) for p in own] == [(refs[0], "zzz")] and own_stats == stats


def test_on_policy_pairs_reject_the_greedy_mistake_first():
    records = generate_sft(3, seed=0, split="val")
    refs = [r["messages"][-1]["content"] for r in records]
    samples = [["wrong a", "wrong b", "wrong c", refs[0]], [refs[1], "wrong d"], [refs[2]]]
    greedy = ["greedy mistake", refs[1], refs[2]]
    for seed in range(5):  # the other wrong replies are shuffled; the greedy one always comes first
        pairs, stats = on_policy_pairs(records, samples, seed=seed, max_pairs_per_prompt=2, greedy=greedy)
        assert [(p.chosen, p.rejected) for p in pairs][:1] == [(refs[0], "greedy mistake")]
        assert [p.meta["greedy_rejected"] for p in pairs] == [True, False, False]
        assert pairs[2].rejected == "wrong d"  # a right greedy answer: pairs still come from the samples
        assert stats["correct"] == 5 and sum(stats.values()) == 10  # greedy replies are counted too
    with pytest.raises(ValueError, match="3 records but 2 greedy"):
        on_policy_pairs(records, samples, greedy=greedy[:2])


def test_jsonl_round_trip_and_per_line_errors(tmp_path):
    pairs = _pairs(5)
    path = write_preference_jsonl(tmp_path / "p.jsonl", pairs)
    back = read_preference_jsonl(path)
    assert [(p.prompt, p.chosen, p.rejected, p.meta) for p in back] == [(p.prompt, p.chosen, p.rejected, p.meta) for p in pairs]
    # TRL's conversational shape is read too
    conv = {"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant", "content": "a"}],
            "rejected": [{"role": "assistant", "content": "b"}]}
    bad_lines = {
        "not valid JSON": "{oops",
        "missing field(s) ['rejected']": json.dumps({"prompt": "q", "chosen": "a"}),
        "nothing to prefer": json.dumps({"prompt": "q", "chosen": "a", "rejected": "a"}),
        "must end with a user message": json.dumps({"prompt": [{"role": "assistant", "content": "x"}], "chosen": "a", "rejected": "b"}),
        "'chosen' must be a string": json.dumps({"prompt": "q", "chosen": 3, "rejected": "b"}),
        "'prompt' is an empty string": json.dumps({"prompt": " ", "chosen": "a", "rejected": "b"}),
    }
    for what, line in bad_lines.items():
        f = tmp_path / "bad.jsonl"
        f.write_text(json.dumps(conv) + "\n\n" + line + "\n", encoding="utf-8")
        with pytest.raises(ValueError, match=r"bad\.jsonl:3: .*" + __import__("re").escape(what)):
            read_preference_jsonl(f)
    f.write_text(json.dumps(conv) + "\n", encoding="utf-8")
    assert read_preference_jsonl(f)[0].chosen == "a"
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_preference_jsonl(tmp_path / "nope.jsonl")


def test_tokenize_pair_uses_the_sft_template_and_ends_at_im_end(tok):
    pair = PreferencePair([{"role": "user", "content": "What is 7 + 5?"}], "12", "13")
    t = tokenize_pair(pair, tok, 64)
    im_end = tok.token_to_id("<|im_end|>")
    prompt = tok.encode_chat(pair.prompt, add_generation_prompt=True)
    assert t.prompt_len == len(prompt)
    assert list(t.chosen_ids) == prompt + tok.encode("12", allowed_special="none") + [im_end]
    assert list(t.rejected_ids[: t.prompt_len]) == prompt
    # a long story keeps its question (the end of the prompt) and the replies
    long = PreferencePair([{"role": "user", "content": "word " * 200 + "Question: What is 7 + 5?"}], "12", "13")
    t = tokenize_pair(long, tok, 32)
    assert len(t.chosen_ids) <= 32 and t.chosen_ids[-1] == im_end
    assert "5?" in tok.decode(list(t.chosen_ids[: t.prompt_len]))


def test_response_targets_mask_the_prompt_and_padding():
    ids = np.array([[5, 6, 7, 8, 9], [5, 6, 7, 0, 0]])
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    x, y = response_targets(ids, mask, np.array([3, 2]))
    np.testing.assert_array_equal(x, ids[:, :-1])
    np.testing.assert_array_equal(y, [[-100, -100, 8, 9], [-100, 7, -100, -100]])


# ----------------------------------------------------------------------------- reward model
def test_bradley_terry_loss_by_hand_and_stable_at_huge_margins():
    rc, rr = mi.tensor([2.0, 0.0, -1.0]), mi.tensor([0.0, 0.0, 1.0])
    expected = np.mean([math.log1p(math.exp(-2)), math.log(2), math.log1p(math.exp(2))])
    assert bradley_terry_loss(rc, rr).item() == pytest.approx(expected, rel=1e-6)
    big = bradley_terry_loss(mi.tensor([1e4, -1e4], dtype=mi.float64), mi.tensor([0.0, 0.0], dtype=mi.float64))
    assert big.item() == pytest.approx(1e4 / 2)  # -log σ(1e4) = 0, -log σ(-1e4) = 1e4
    gradcheck(bradley_terry_loss, [np.array([1e4, -1e4, 0.3]), np.array([0.0, 0.5, -0.2])])
    with pytest.raises(ValueError, match="same shape"):
        bradley_terry_loss(mi.zeros(3), mi.zeros(2))


def test_reward_reads_the_last_real_token_whatever_the_padding():
    rm = RewardModel(_model(64))
    rng = np.random.default_rng(0)
    a, b = rng.integers(1, 64, size=5), rng.integers(1, 64, size=3)
    alone = [rm(mi.tensor(s[None, :])).item() for s in (a, b)]
    ids = np.zeros((2, 5), dtype=np.int64)
    ids[0], ids[1, :3] = a, b
    mask = np.array([[1] * 5, [1, 1, 1, 0, 0]])
    np.testing.assert_allclose(rm(ids, mask).numpy(), alone, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(last_token_index(mask), [4, 2])
    with pytest.raises(ValueError, match="right-padded"):
        last_token_index(np.array([[0, 1, 1]]))
    with pytest.raises(ValueError, match=r"row\(s\) \[1\] have no real token"):
        last_token_index(np.array([[1, 1], [0, 0]]))
    with pytest.raises(TypeError, match="hidden_states"):
        RewardModel(mi.nn.Linear(2, 2))


def test_reward_model_gradcheck_float64():
    previous = mi.get_kernels()
    mi.set_kernels("numpy")
    try:
        rm = RewardModel(_model(32, dtype=mi.float64, dim=8, n_layers=1, n_heads=2, n_kv_heads=1, hidden_dim=8))
        ids = np.array([[3, 4, 5, 6], [7, 8, 9, 0]])
        mask = np.array([[1, 1, 1, 1], [1, 1, 1, 0]])
        w = rm.model.layers[0].feed_forward.w2.weight

        def loss(score, w2):
            r = rm(ids, mask)
            return bradley_terry_loss(r[:1], r[1:])

        assert gradcheck(loss, [rm.score.weight, w], name="reward model")
    finally:
        mi.set_kernels(previous)


def test_reward_model_learns_offline_pairs(tok, tmp_path):
    # mistakes an untrained backbone can see on the surface (a long repeated reply, the other
    # script): the test shows the head + backbone + loss learn, in seconds
    kinds = ("no_stop", "wrong_language")
    train = offline_pairs(generate_sft(48, seed=0, split="train"), kinds=kinds)
    val = offline_pairs(generate_sft(16, seed=0, split="val"), kinds=kinds)
    rm = RewardModel.from_sft(_model(tok.vocab_size))
    before = pairwise_accuracy(rm, tok, val)
    cfg = TrainConfig(out_dir=str(tmp_path / "rm"), max_steps=20, lr=3e-3, warmup_steps=2, eval_interval=10,
                      progress=False, plot=False)
    trainer = train_reward_model(rm, tok, train, val, cfg, batch_size=8)
    after = pairwise_accuracy(rm, tok, val)
    assert after["all"] > before["all"] and after["all"] >= 0.75, (before, after)
    logged = [json.loads(line) for line in open(trainer.metrics.path)]
    assert any("accuracy" in r for r in logged) and any("val_accuracy" in r for r in logged)
    r = score_replies(rm, tok, [val[0].prompt, val[0].prompt], [val[0].chosen, val[0].rejected])
    assert r.shape == (2,)


# ----------------------------------------------------------------------------- DPO
def test_dpo_loss_on_hand_computed_numbers():
    beta = 0.5
    pc, pr = mi.tensor([-1.0, -3.0], dtype=mi.float64), mi.tensor([-2.0, -1.0], dtype=mi.float64)
    rc, rr = np.array([-1.5, -2.0]), np.array([-1.5, -2.0])
    loss, cr, rj = dpo_loss(pc, pr, rc, rr, beta=beta)
    # pair 0: logits = (-1 - -2) - (-1.5 - -1.5) = 1    -> -log σ(0.5) = 0.474077
    # pair 1: logits = (-3 - -1) - (-2 - -2)     = -2   -> -log σ(-1.0) = 1.313262
    assert loss.item() == pytest.approx((0.4740769841801067 + 1.3132616875182228) / 2, rel=1e-12)
    np.testing.assert_allclose(cr, [0.25, -0.5])  # β·(π - ref)
    np.testing.assert_allclose(rj, [-0.25, 0.5])
    gradcheck(lambda a, b: dpo_loss(a, b, rc, rr, beta)[0], [np.array([-1.0, -3.0]), np.array([-2.0, -1.0])])
    with pytest.raises(ValueError, match="beta must be"):
        dpo_loss(pc, pr, rc, rr, beta=0)
    with pytest.raises(ValueError, match="same"):
        dpo_loss(pc, pr, rc[:1], rr, beta)
    with pytest.raises(ValueError, match="precomputed"):
        dpo_loss(pc, pr, np.array([np.nan, 0.0]), rr, beta)


def test_dpo_loss_equals_trls_formula_in_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    pc, pr, rc, rr = (rng.normal(-20, 8, size=16) for _ in range(4))
    pc[0], pr[0] = 5e3, -5e3  # a huge margin: both must stay finite
    beta = 0.1
    # trl/trainer/dpo_trainer.py, loss_type="sigmoid", label_smoothing=0
    t = [torch.tensor(v, requires_grad=i < 2) for i, v in enumerate((pc, pr, rc, rr))]
    logits = (t[0] - t[1]) - (t[2] - t[3])
    ref_loss = (-torch.nn.functional.logsigmoid(beta * logits)).mean()
    ref_loss.backward()
    a, b = mi.tensor(pc, requires_grad=True), mi.tensor(pr, requires_grad=True)
    loss, cr, rj = dpo_loss(a, b, rc, rr, beta)
    loss.backward()
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-12)
    np.testing.assert_allclose(a.grad.numpy(), t[0].grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(b.grad.numpy(), t[1].grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(cr, beta * (pc - rc))


def test_cdpo_and_ipo_losses_on_hand_computed_numbers():
    beta = 0.5  # the numbers of the test above: h = [1, -2]
    pc, pr = mi.tensor([-1.0, -3.0], dtype=mi.float64), mi.tensor([-2.0, -1.0], dtype=mi.float64)
    rc, rr = np.array([-1.5, -2.0]), np.array([-1.5, -2.0])
    # cDPO, ε = 0.1: -(0.9)·log σ(β h) - 0.1·log σ(-β h); -log σ(x) = log(1 + e^-x)
    # pair 0: 0.9·0.474077 + 0.1·0.974077 = 0.524077; pair 1: 0.9·1.313262 + 0.1·0.313262 = 1.213262
    loss, _, _ = dpo_loss(pc, pr, rc, rr, beta=beta, label_smoothing=0.1)
    assert loss.item() == pytest.approx((0.5240769841801067 + 1.2132616875182228) / 2, rel=1e-12)
    # IPO: (h - 1/(2β))² = (1 - 1)² and (-2 - 1)² -> mean 4.5
    loss, cr, _ = dpo_loss(pc, pr, rc, rr, beta=beta, loss_type="ipo")
    assert loss.item() == pytest.approx(4.5, rel=1e-12)
    np.testing.assert_allclose(cr, [0.25, -0.5])
    for kw in (dict(label_smoothing=0.1), dict(loss_type="ipo")):
        gradcheck(lambda a, b: dpo_loss(a, b, rc, rr, beta, **kw)[0], [np.array([-1.0, -3.0]), np.array([-2.0, -1.0])])
    with pytest.raises(ValueError, match="loss_type must be one of"):
        dpo_loss(pc, pr, rc, rr, beta, loss_type="hinge")
    with pytest.raises(ValueError, match=r"label_smoothing must be a number in \[0, 0.5\), got 0.5"):
        dpo_loss(pc, pr, rc, rr, beta, label_smoothing=0.5)
    with pytest.raises(ValueError, match="IPO has no labels"):
        dpo_loss(pc, pr, rc, rr, beta, loss_type="ipo", label_smoothing=0.1)


def test_cdpo_and_ipo_equal_trls_formulas_in_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    pc, pr, rc, rr = (rng.normal(-2, 1, size=16) for _ in range(4))
    beta, eps = 0.1, 0.2
    for loss_type in ("sigmoid", "ipo"):  # trl/trainer/dpo_trainer.py, DPOTrainer.dpo_loss
        t = [torch.tensor(v, requires_grad=i < 2) for i, v in enumerate((pc, pr, rc, rr))]
        logits = (t[0] - t[1]) - (t[2] - t[3])
        if loss_type == "sigmoid":
            ref = (-torch.nn.functional.logsigmoid(beta * logits) * (1 - eps)
                   - torch.nn.functional.logsigmoid(-beta * logits) * eps).mean()
        else:
            ref = ((logits - 1 / (2 * beta)) ** 2).mean()
        ref.backward()
        a, b = mi.tensor(pc, requires_grad=True), mi.tensor(pr, requires_grad=True)
        loss, _, _ = dpo_loss(a, b, rc, rr, beta, loss_type, eps if loss_type == "sigmoid" else 0.0)
        loss.backward()
        assert loss.item() == pytest.approx(ref.item(), rel=1e-12)
        np.testing.assert_allclose(a.grad.numpy(), t[0].grad.numpy(), rtol=1e-10)
        np.testing.assert_allclose(b.grad.numpy(), t[1].grad.numpy(), rtol=1e-10)


def test_ipo_step_uses_per_token_mean_logps(tok):
    from minillm.align.dpo import dpo_forward
    pairs = _pairs(4)
    model = _model(tok.vocab_size)
    ds = PreferenceDataset(pairs, tok, 128)
    ds.ref_chosen_logps[:] = -3.0
    ds.ref_rejected_logps[:] = -5.0
    batch = collate_pairs([ds[i] for i in range(4)], tok.pad_token_id)
    lp = sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["prompt_lens"]).numpy()
    n = (response_targets(batch["input_ids"], batch["attention_mask"], batch["prompt_lens"])[1] != -100).sum(1)
    h = (lp[:4] / n[:4] - lp[4:] / n[4:]) - (-3.0 / n[:4] - -5.0 / n[4:])  # TRL averages the log-probs for IPO
    out = dpo_forward(model, batch, beta=0.25, loss_type="ipo")
    assert out.loss.item() == pytest.approx(np.mean((h - 2.0) ** 2), rel=1e-5)
    assert n[0] != n[4] or n[1] != n[5]  # replies of different lengths: the averaging matters


def test_sequence_logps_sum_the_reply_tokens_only():
    model = _model(64)
    ids = np.array([[5, 6, 7, 8, 9], [5, 6, 7, 0, 0]])
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    got = sequence_logps(model, ids, mask, np.array([3, 2])).numpy()
    logits = model(mi.tensor(ids[:, :-1])).logits.numpy().astype(np.float64)
    lp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = [lp[0, 2, 8] + lp[0, 3, 9], lp[1, 1, 7]]
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    with pytest.raises(ValueError, match="no reply token"):
        sequence_logps(model, ids, mask, np.array([5, 2]))


def test_lora_reference_is_the_base_with_adapters_off(tok):
    pairs = _pairs(6)
    model = _model(tok.vocab_size)
    plain = PreferenceDataset(pairs, tok, 128)
    precompute_reference_logps(model, plain, tok.pad_token_id)
    peft = get_peft_model(model, LoraConfig(r=4, lora_dropout=0.0, target_modules=["wq", "wv"]))
    for _, layer in peft.lora_layers():  # adapters that change the output
        layer.lora_B.weight.data[...] = 0.5
    lora = PreferenceDataset(pairs, tok, 128)
    precompute_reference_logps(peft, lora, tok.pad_token_id)
    np.testing.assert_allclose(lora.ref_chosen_logps, plain.ref_chosen_logps, rtol=1e-6)
    np.testing.assert_allclose(lora.ref_rejected_logps, plain.ref_rejected_logps, rtol=1e-6)
    batch = collate_pairs([lora[i] for i in range(2)], tok.pad_token_id)
    with_adapters = sequence_logps(peft, batch["input_ids"], batch["attention_mask"], batch["prompt_lens"]).numpy()
    assert not np.allclose(with_adapters, batch["ref_logps"])  # the adapters are on again afterwards


def test_dpo_raises_the_chosen_over_the_rejected(tok, tmp_path):
    kinds = ("no_stop", "wrong_language")
    train = offline_pairs(generate_sft(48, seed=0, split="train"), kinds=kinds)
    val = offline_pairs(generate_sft(16, seed=0, split="val"), kinds=kinds)
    model = _model(tok.vocab_size)
    cfg = TrainConfig(out_dir=str(tmp_path / "dpo"), max_steps=16, lr=3e-3, warmup_steps=1, eval_interval=8,
                      progress=False, plot=False)
    trainer = train_dpo(model, tok, train, val, cfg, beta=0.5, batch_size=8)
    logged = [json.loads(line) for line in open(trainer.metrics.path)]
    train_rows = [r for r in logged if "rewards/margins" in r]
    val_rows = [r for r in logged if "val_rewards/margins" in r]
    assert train_rows and val_rows
    for key in ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins"):
        assert key in train_rows[-1]
    assert val_rows[-1]["val_rewards/margins"] > 0.1 and val_rows[-1]["val_rewards/accuracies"] > 0.6
    assert val_rows[-1]["val_loss"] < math.log(2)  # below the loss of a policy equal to its reference


# ----------------------------------------------------------------------------- online DPO
def _fake_policy_samples(monkeypatch, calls):
    """generate_replies for online DPO: prompt i gets a right and a wrong reply, except every
    third prompt, which is always wrong (no pair: nothing of the policy's own to prefer)."""
    from minillm.align import online_dpo
    from minillm.align.rollout import Reply

    def fake(model, tokenizer, prompts, n, temperature, max_new_tokens, seed):
        calls.append({"n": n, "temperature": temperature, "seed": seed, "first": prompts[0][-1]["content"]})
        refs = {r["messages"][-2]["content"]: r["messages"][-1]["content"] for r in generate_sft(40, seed=0, split="train")}
        out = []
        for i, p in enumerate(prompts):
            ref = refs[p[-1]["content"]]
            right = [ref] if i % 3 else ["wrong 0"]
            out.append([Reply(t, [1], [0], True) for t in (right + [f"wrong {k}" for k in range(1, n)])])
        return out
    monkeypatch.setattr(online_dpo, "generate_replies", fake)


def test_online_dpo_samples_the_current_policy_each_round(tok, tmp_path, monkeypatch):
    from minillm.align import online_dpo
    from minillm.align.online_dpo import OnlineDPOConfig, train_online_dpo
    calls, trained = [], []
    _fake_policy_samples(monkeypatch, calls)
    real_train = real_train_dpo = online_dpo.train_dpo

    def spy(model, tokenizer, pairs, val, cfg, **kw):
        trained.append({"pairs": pairs, "ref_model": kw["ref_model"], "out": cfg.out_dir, "steps": cfg.max_steps})
        return real_train(model, tokenizer, pairs, val, cfg, **kw)
    monkeypatch.setattr(online_dpo, "train_dpo", spy)
    records = generate_sft(40, seed=0, split="train")
    model = _model(tok.vocab_size)
    cfg = OnlineDPOConfig(rounds=2, prompts_per_round=12, samples=3, max_pairs_per_prompt=1, batch_size=4, lr=1e-3)
    hist = train_online_dpo(model, tok, records, cfg, str(tmp_path))
    assert [c["first"] for c in calls] == [records[0]["messages"][-2]["content"], records[12]["messages"][-2]["content"]]
    assert [c["seed"] for c in calls] == [0, 1000] and calls[0]["n"] == 3 and calls[0]["temperature"] == 1.0
    assert [h["pairs"] for h in hist] == [8, 8]  # 12 prompts, every third never right: 8 pairs per round
    assert hist[0]["sampled_correct"] == pytest.approx(8 / 36) and hist[0]["steps"] == 2
    for t in trained:  # chosen = the policy's own right sample, rejected = its own wrong one; reference = the policy
        assert all(p.meta["chosen_sampled"] and p.rejected.startswith("wrong") for p in t["pairs"])
        assert t["ref_model"] is None and t["steps"] == 2
    assert trained[1]["out"].endswith("round2") and hist[1]["rewards/margins"] is not None

    trained.clear()
    real_train = lambda model, tokenizer, pairs, val, cfg, **kw: real_train_dpo(  # noqa: E731  (one step: only the reference is checked)
        model, tokenizer, pairs[:4], val, dataclasses.replace(cfg, max_steps=1), **kw)
    sft_ref = OnlineDPOConfig(rounds=2, prompts_per_round=12, samples=3, max_pairs_per_prompt=1, batch_size=4,
                              reference="sft")
    before = copy.deepcopy(model.state_dict())
    train_online_dpo(model, tok, records, sft_ref, str(tmp_path / "sft_ref"))
    ref = trained[0]["ref_model"]
    assert ref is trained[1]["ref_model"] and ref is not model  # one frozen copy of the starting model
    for k, v in ref.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), before[k].numpy())


def test_online_dpo_refuses_bad_settings(tok, tmp_path, monkeypatch):
    from minillm.align.online_dpo import OnlineDPOConfig, train_online_dpo
    for bad, match in ((dict(samples=1), "samples must be >= 2"), (dict(reference="start"), "'round' or 'sft'"),
                       (dict(rounds=0), "rounds must be an int >= 1, got 0"), (dict(beta=0), "beta must be"),
                       (dict(rpo_alpha=-1), "rpo_alpha"), (dict(loss_type="hinge"), "loss_type must be one of"),
                       (dict(loss_type="ipo", label_smoothing=0.1), "IPO has no labels")):
        with pytest.raises(ValueError, match=match):
            OnlineDPOConfig(**bad)
    _fake_policy_samples(monkeypatch, [])
    records = generate_sft(40, seed=0, split="train")
    with pytest.raises(ValueError, match="round 1 gave 2 pairs, fewer than one batch of 16"):
        train_online_dpo(_model(tok.vocab_size), tok, records, OnlineDPOConfig(prompts_per_round=3, samples=2),
                         str(tmp_path))
    with pytest.raises(ValueError, match="record 0"):
        train_online_dpo(None, tok, [{"messages": []}], OnlineDPOConfig(), str(tmp_path))
    with pytest.raises(ValueError, match="kinds must be some of"):
        OnlineDPOConfig(kinds=("typo",))
    peft = get_peft_model(_model(tok.vocab_size), LoraConfig(r=2, target_modules=["wq"]))
    with pytest.raises(ValueError, match="use reference='sft'"):  # LoRA's reference is the base: the starting model
        train_online_dpo(peft, tok, records, OnlineDPOConfig(), str(tmp_path))


# ----------------------------------------------------------------------------- PPO
from minillm.align.ppo import ActorCritic, PPOConfig, PPOTrainer, gae, per_token_rewards, ppo_losses  # noqa: E402


def _gae_naive(r, v, gamma, lam):
    """The textbook definition for one row without padding: A_t = Σ_k (γλ)^k δ_{t+k}."""
    T = len(r)
    v_next = np.append(v[1:], 0.0)
    delta = r + gamma * v_next - v
    return np.array([sum((gamma * lam) ** k * delta[t + k] for k in range(T - t)) for t in range(T)])


def test_gae_equals_the_sum_of_discounted_deltas_and_skips_padding():
    rng = np.random.default_rng(0)
    r, v = rng.normal(size=5), rng.normal(size=5)
    for gamma, lam in ((1.0, 0.95), (0.9, 0.5), (1.0, 1.0), (0.99, 0.0)):
        expected = _gae_naive(r, v, gamma, lam)
        # the same row after 2 prompt positions and before 3 padding positions
        R = np.zeros((1, 10)); V = np.zeros((1, 10)); M = np.zeros((1, 10))
        R[0, 2:7], V[0, 2:7], M[0, 2:7] = r, v, 1
        V[0, 7:] = 5.0  # values of padding must not leak in
        adv, ret = gae(R, V, M, gamma, lam)
        np.testing.assert_allclose(adv[0, 2:7], expected, rtol=1e-12)
        np.testing.assert_allclose(ret[0, 2:7], expected + v, rtol=1e-12)
        assert not adv[0, :2].any() and not adv[0, 7:].any()
    # λ = 1, γ = 1: the advantage is the sum of rewards to go minus the value
    adv, _ = gae(np.array([[0.0, 0.0, 1.0]]), np.array([[0.2, 0.5, 0.1]]), np.ones((1, 3)), 1.0, 1.0)
    np.testing.assert_allclose(adv, [[0.8, 0.5, 0.9]])
    with pytest.raises(ValueError, match="must be equal"):
        gae(np.zeros((1, 3)), np.zeros((1, 2)), np.ones((1, 3)), 1.0, 1.0)


def test_per_token_rewards_put_the_score_on_the_last_reply_token():
    mask = np.array([[0, 1, 1, 0], [1, 1, 1, 1]], dtype=float)
    logp, ref = np.full((2, 4), -1.0), np.full((2, 4), -1.5)
    rewards, kl = per_token_rewards(np.array([2.0, -1.0]), logp, ref, mask, kl_coef=0.1)
    np.testing.assert_allclose(kl, 0.5 * mask)
    np.testing.assert_allclose(rewards, [[0, -0.05, 1.95, 0], [-0.05, -0.05, -0.05, -1.05]])


def test_ppo_losses_clip_as_the_paper_says_and_gradcheck():
    mask = np.array([[1.0, 1.0, 0.0]])
    old = np.array([[-1.0, -1.0, 0.0]])
    adv = np.array([[1.0, -1.0, 0.0]])
    lp = mi.tensor([[-0.5, -0.5, 0.0]], dtype=mi.float64, requires_grad=True)  # ratio e^0.5 = 1.65 on both
    v = mi.tensor([[0.5, 0.0, 0.0]], dtype=mi.float64, requires_grad=True)
    pg, vf, st = ppo_losses(lp, v, old, np.zeros((1, 3)), adv, np.array([[1.0, 1.0, 0.0]]), mask, 0.2, 0.2)
    r = math.exp(0.5)
    # token 0 (A = 1): min(r, 1.2)·A = 1.2 -> loss -1.2; token 1 (A = -1): max(r, 1.2)·1 -> loss r
    assert pg.item() == pytest.approx((-1.2 + r) / 2)
    # value 0.5 clipped to 0.2: max((0.5-1)², (0.2-1)²) = 0.64; value 0: 1.0
    assert vf.item() == pytest.approx(0.5 * (0.64 + 1.0) / 2)
    assert st["clipfrac"] == 1.0
    rng = np.random.default_rng(1)
    old2, adv2, v0, ret = (rng.normal(size=(2, 3)) for _ in range(4))

    def total(logp, values):
        pg, vf, _ = ppo_losses(logp, values, old2, v0, adv2, ret, np.ones((2, 3)), 0.2, 0.2)
        return pg + 0.5 * vf

    # points away from the clip kinks (|ratio - 1| != 0.2, |v - v0| != 0.2)
    gradcheck(total, [old2 + rng.uniform(-0.1, 0.1, size=(2, 3)), v0 + rng.choice([-0.5, 0.05, 0.5], size=(2, 3))])


def test_ppo_trainer_runs_and_logs(tok, tmp_path):
    model = _model(tok.vocab_size)
    records = generate_sft(8, seed=0, split="train")
    cfg = PPOConfig(batch_size=4, mini_batch_size=2, ppo_epochs=1, max_new_tokens=6, lr=1e-3)
    # a rule reward: +1 for a reply that stops, -1 for one that does not
    trainer = PPOTrainer(model, tok, [r["messages"][:-1] for r in records],
                         lambda idx, replies: [1.0 if r.stopped else -1.0 for r in replies], cfg, str(tmp_path))
    history = trainer.train(2)
    assert [h["step"] for h in history] == [1, 2]
    for key in ("score", "kl", "pg_loss", "vf_loss", "clipfrac", "approx_kl"):
        assert all(math.isfinite(h[key]) for h in history), key
    assert history[0]["kl"] == pytest.approx(0.0, abs=1e-4)  # the first rollout comes from the reference itself
    assert len(open(tmp_path / "metrics.jsonl").readlines()) == 2
    assert isinstance(trainer.ac, ActorCritic) and trainer.policy is model
    with pytest.raises(ValueError, match="mini_batch_size"):
        PPOConfig(batch_size=2, mini_batch_size=4)


def test_the_books_critic_is_the_reward_model_read_at_every_token(tok, tmp_path):
    model = _model(64)
    rm = RewardModel.from_sft(model)
    ac = ActorCritic(model, critic=copy.deepcopy(rm))
    ids = np.random.default_rng(0).integers(0, 64, size=(2, 6))
    logits, values = ac(ids)
    np.testing.assert_array_equal(logits.numpy(), model(ids).logits.numpy())
    np.testing.assert_allclose(values.numpy()[:, -1], rm(ids).numpy(), rtol=1e-5, atol=1e-6)  # last token = the reward
    names = [n for n, _ in ac.named_parameters()]
    assert any(n.startswith("critic.score") for n in names) and not any(n.startswith("v_head") for n in names)
    with pytest.raises(TypeError, match="RewardModel"):
        ActorCritic(model, critic=mi.nn.Linear(2, 2))
    # one PPO iteration with the book's four models
    big = _model(tok.vocab_size)
    records = generate_sft(4, seed=0, split="train")
    trainer = PPOTrainer(big, tok, [r["messages"][:-1] for r in records], lambda idx, reps: np.zeros(len(reps)),
                         PPOConfig(batch_size=2, mini_batch_size=2, ppo_epochs=1, max_new_tokens=4), str(tmp_path),
                         critic=RewardModel.from_sft(big))
    assert math.isfinite(trainer.step()["vf_loss"])


def test_reward_model_directory_round_trip(tmp_path):
    from minillm.align import load_reward_model, save_reward_model

    rm = RewardModel(_model(64))
    save_reward_model(rm, tmp_path / "rm")
    back = load_reward_model(tmp_path / "rm")
    ids = np.random.default_rng(0).integers(0, 64, size=(2, 5))
    np.testing.assert_array_equal(back(ids).numpy(), rm(ids).numpy())
    (tmp_path / "rm" / "score.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="score.safetensors is missing"):
        load_reward_model(tmp_path / "rm")


def test_world_seed_of_reads_the_training_runs_report(tmp_path):
    from minillm.pipeline import world_seed_of

    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    assert world_seed_of(run / "model") is None  # no report.json: the caller asks for --world-seed
    (run / "report.json").write_text(json.dumps({"args": {"seed": 2}}), encoding="utf-8")
    assert world_seed_of(run / "model") == 2
    for bad in ('{"args": {"seed": true}}', '{"args": {}}', "not json", '{"args": {"seed": "2"}}'):
        (run / "report.json").write_text(bad, encoding="utf-8")
        assert world_seed_of(run / "model") is None, bad


# ----------------------------------------------------------------------------- held-out correctness
def test_correctness_counts_labels_per_prompt(monkeypatch):
    from minillm.align import evaluate
    from minillm.align.rollout import Reply
    records = generate_sft(3, seed=0, split="val")
    refs = [r["messages"][-1]["content"] for r in records]
    fake = [[refs[0], refs[0], "zzz", refs[0]], [refs[1] * 6, refs[1], refs[1], refs[1]], ["?", "?", "?", "?"]]
    stopped = [[True] * 4, [True, False, True, True], [True] * 4]  # the second prompt's second sample never stopped

    def fake_generate(model, tokenizer, prompts, n, temperature, **kw):
        assert n == 4 and temperature == 1.0 and len(prompts) == 3
        return [[Reply(t, [1], [0], s) for t, s in zip(ts, ss)] for ts, ss in zip(fake, stopped)]

    monkeypatch.setattr(evaluate, "generate_replies", fake_generate)
    out = evaluate.correctness(None, None, records, temperature=1.0, samples=4)
    np.testing.assert_allclose(out["per_prompt"], [0.75, 0.5, 0.0])
    assert out["acc"] == pytest.approx(1.25 / 3) and out["n"] == 3
    assert out["se"] == pytest.approx(np.std([0.75, 0.5, 0.0], ddof=1) / np.sqrt(3))
    assert out["kinds"]["correct"] == pytest.approx(5 / 12) and out["kinds"]["no_stop"] == pytest.approx(2 / 12)
    assert sum(out["kinds"].values()) == pytest.approx(1.0)
    d, se = evaluate.paired_difference([1.0, 0.5, 0.0, 1.0], [0.5, 0.5, 0.0, 0.0])
    assert d == pytest.approx(0.375) and se == pytest.approx(np.std([0.5, 0, 0, 1], ddof=1) / 2)


def test_correctness_runs_the_generator_and_refuses_bad_settings(tok):
    from minillm.align import correctness
    model = _model(tok.vocab_size)
    records = generate_sft(4, seed=0, split="val")
    a = correctness(model, tok, records, temperature=1.0, samples=2, max_new_tokens=4, seed=3)
    b = correctness(model, tok, records, temperature=1.0, samples=2, max_new_tokens=4, seed=3)
    assert a["per_prompt"].shape == (4,) and a["samples"] == 2
    np.testing.assert_array_equal(a["per_prompt"], b["per_prompt"])  # seeded: the same draws
    assert sum(a["kinds"].values()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="samples=2"):
        correctness(model, tok, records, temperature=0.0, samples=2)
    with pytest.raises(ValueError, match="samples must be an int >= 1, got 0"):
        correctness(model, tok, records, temperature=1.0, samples=0)
    with pytest.raises(ValueError, match="record 0"):
        correctness(model, tok, [{"messages": []}])
    with pytest.raises(ValueError, match=r"after \(2,\) and before \(3,\)"):
        from minillm.align import paired_difference
        paired_difference([1, 0], [1, 0, 1])
