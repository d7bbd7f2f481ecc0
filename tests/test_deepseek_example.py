"""examples/train_deepseek.py end to end at a toy size."""

from _helpers import load_example

train_deepseek = load_example("train_deepseek")


def test_example_runs_at_toy_size(tmp_path):
    report = train_deepseek.main(["--quick", "--no-progress", "--out-dir", str(tmp_path / "run"), "--n-stories", "300",
                                  "--vocab-size", "300", "--steps", "2", "--batch-size", "2", "--block-size", "32"])
    models = report["models"]
    assert set(models) == {"MoE + balance loss", "MoE + aux-free bias", "MoE, no balancing", "dense, equal active"}
    dense, moe = models["dense, equal active"], models["MoE + balance loss"]
    assert abs(dense["active_params"] - moe["active_params"]) < 0.02 * dense["active_params"]  # equal active size
    assert moe["params"] > 1.5 * dense["params"]
    assert len(moe["busiest_expert_share_last20pct"]) == 4 and all(1 / 8 <= s <= 1 for s in moe["busiest_expert_share_last20pct"])
    kv = {row[0].split()[0]: row[1:] for row in report["kv_cache_bytes_per_token"]}
    assert all(formula == measured for formula, measured in kv.values())
    assert kv["MLA"][0] < kv["MQA"][0] < kv["GQA"][0] < kv["MHA"][0]
    assert (tmp_path / "run" / "expert_load_MoE_balance_loss.png").exists()
