"""examples/train_t5.py end to end at a toy size."""
import json

from _helpers import load_example

train_t5 = load_example("train_t5")


def test_example_runs_at_toy_size(tmp_path):
    report = train_t5.main(["--quick", "--no-progress", "--out-dir", str(tmp_path / "run"), "--n-stories", "300",
                            "--vocab-size", "700", "--pretrain-docs", "40", "--pretrain-steps", "3",
                            "--finetune-examples", "40", "--finetune-steps", "3", "--batch-size", "4", "--n-eval", "6"])
    em = report["exact_match"]["span corruption + fine-tuning|3"]
    assert set(em) == {"qa", "en2zh", "zh2en", "math", "all"} and 0.0 <= em["all"] <= 1.0
    assert report["span_corruption_val_loss"] > 0
    assert set(report["finetune_val_loss"]) == {"span corruption + fine-tuning|3", "fine-tuning only (random init)|3"}
    paired = report["paired_gain"]["3"]["all"]  # the same 6 examples scored by both arms
    assert paired["n"] == 6 and abs(paired["gain"] * 6 - (paired["only_pretrained"] - paired["only_control"])) < 1e-9
    ctl = report["exact_match"]["fine-tuning only (random init)|3"]["all"]
    assert abs(paired["gain"] - (em["all"] - ctl)) < 1e-9
    saved = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert saved["model_type"] == "minillm-t5"
    from minillm.tokenizers import Tokenizer, UnigramTokenizer

    tok = Tokenizer.load(tmp_path / "run" / "tokenizer")  # T5's tokenizer is the Unigram LM, saved as tokenizer.json
    assert isinstance(tok, UnigramTokenizer) and tok.token_to_id("<extra_id_0>") == 3
