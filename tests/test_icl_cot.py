"""4.1.2's emergent abilities, measured by two examples: in-context learning (examples/in_context.py)
and chain-of-thought (examples/chain_of_thought.py). Their prompt / data builders are checked on
hand-made cases; --quick runs each end to end on an untrained micro model."""
import json
import os
import subprocess
import sys

import pytest
from _helpers import example_path, load_example

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _example(name):
    return load_example(name), example_path(name)


def _quick(path, out):
    proc = subprocess.run([sys.executable, path, "--quick", "--out-dir", str(out)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONPATH": ROOT, "OPENBLAS_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads((out / "report.json").read_text())


def test_in_context_example_prompts_and_quick_run(tmp_path):
    """The k-shot prompts are the demonstrations, then the question, in the named format."""
    from minillm.tokenizers import BPETokenizer

    icl, path = _example("in_context")
    tok = BPETokenizer.train(["3 + 4 = 7\nQuestion: What is 5 - 1?\nAnswer: 4"], vocab_size=300, show_progress=False)
    demos = [[("3", "+", "4", "7"), ("9", "-", "2", "7")]]
    (ids,) = icl.plain_prompts(tok, "equation", [("5", "-", "1", "4")], demos)
    assert ids[0] == tok.eos_token_id and tok.decode(ids[1:]) == "3 + 4 = 7\n9 - 2 = 7\n5 - 1 ="
    (ids,) = icl.plain_prompts(tok, "question", [("5", "-", "1", "4")], [[]])
    assert tok.decode(ids[1:]) == "Question: What is 5 - 1?\nAnswer:"
    assert icl.first_integer(" 12\n13") == "12" and icl.first_integer(" -3 apples") == "-3" and icl.first_integer("no") is None
    scores = _quick(path, tmp_path / "icl")["exact_match"]
    assert set(scores) == {f"{f}/{k}" for f in ("base_equation", "base_question", "chat") for k in (0, 1, 3)}
    assert all(0 <= v <= 1 for v in scores.values())


def test_chain_of_thought_data_and_quick_run(tmp_path):
    """Two-step problems: the splits share none, every step is a one-step problem of the world
    (intermediate result in 0..19), the worked steps are right, and the scorer reads the answer."""
    cot, path = _example("chain_of_thought")
    train, val = cot.two_step_problems(2000, "train"), cot.two_step_problems(200, "val")
    assert not set(train) & set(val) and len(set(val)) > 150
    for a, op1, b, op2, c in train + val:
        mid = a + b if op1 == "+" else a - b
        assert 0 <= mid < cot.MAX_NUMBER and 0 <= max(a, b, c) < cot.MAX_NUMBER and cot.answer((a, op1, b, op2, c)) >= 0
    assert cot.worked_steps((7, "+", 5, "-", 3)) == "7 + 5 = 12, 12 - 3 = 9. The answer is 9."
    assert cot.answer((7, "+", 5, "-", 3)) == 9 and cot.question((7, "+", 5, "-", 3)) == "What is 7 + 5 - 3?"
    assert cot.final_number("7 + 5 = 12, 12 - 3 = 9. The answer is 9.") == "9"
    assert cot.final_number("9") == "9" and cot.final_number("12, then 10") == "10" and cot.final_number("") is None
    with pytest.raises(ValueError, match="'test'"):
        cot.two_step_problems(1, "test")
    report = _quick(path, tmp_path / "cot")
    assert set(report["exact_match"]) == {"sft, no fine-tuning", "direct", "steps"}
    assert all(0 <= v <= 1 for v in report["exact_match"].values())
