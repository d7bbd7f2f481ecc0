"""examples/peft_compare.py --quick runs end to end and reports what it promises."""
import os
from _helpers import load_example


def test_quick_run_end_to_end(tmp_path, capsys):
    report = load_example("peft_compare").main(["--quick", "--out-dir", str(tmp_path / "run"), "--no-progress"])
    text = capsys.readouterr().out
    assert "the comparison" in text and "held-out exact match" in text and "decode tok/s" in text and "<|im_end|> greedy" in text
    runs = {r["method"]: r for r in report["runs"]}
    assert sorted(runs) == sorted(["full", "lora", "qlora", "adapter", "prefix", "prompt", "ptuning"])
    for name, r in runs.items():
        assert r["trainable"] == r["formula"], name  # every count is its formula
        assert 0 <= r["accuracy"]["all"] <= 1 and r["seconds_per_step"] > 0 and r["step_peak_bytes"] > 0
        assert r["fwd_bwd_cpu_seconds"] > 0 and 0 <= r["begins_with_reference"] <= 1
        assert r["reply_loss"]["content"] > 0 and r["reply_loss"]["stop"] > 0 and 0 <= r["reply_loss"]["stop_is_top1"] <= 1
        if name != "full":
            assert r["trainable"] < runs["full"]["trainable"] and r["optimizer_bytes"] < runs["full"]["optimizer_bytes"]
            assert r["adapter"]["reload_max_abs_diff"] < 1e-5
            assert sorted(os.listdir(r["adapter"]["dir"])) == ["adapter_config.json", "adapter_model.safetensors"]
    assert runs["full"]["trainable"] == runs["full"]["total"]
    assert runs["qlora"]["trainable"] == runs["lora"]["trainable"]
    assert runs["qlora"]["weight_bytes"] < 0.6 * runs["lora"]["weight_bytes"]  # the NF4 base
    q = {r["name"]: r for r in report["quantization"]}
    assert q["float32"]["disk_bytes"] > q["int8"]["disk_bytes"] > q["nf4"]["disk_bytes"] > q["nf4+dq"]["disk_bytes"]
    assert 0 < q["int8"]["max_rel_err"] < q["nf4"]["mean_rel_err"] < 0.2
