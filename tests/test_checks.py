"""minillm._checks.check_token_ids: the one token-id range check and its message."""
import numpy as np
import pytest

from minillm._checks import IdOutOfRangeError, check_token_ids


@pytest.mark.parametrize("ids", [[], [0, 5, 9], np.array([[0, 9], [3, 4]], dtype=np.uint16), 0, np.int64(9)])
def test_ids_inside_the_range_pass(ids):
    check_token_ids(ids, 10, "x")


@pytest.mark.parametrize("ids, message", [
    ([3, 10, -1], "f: token id 10 at position 1 is outside the valid range [0, 10)"),  # the first bad one, in order
    ([3, -1, 10], "f: token id -1 at position 1 is outside the valid range [0, 10)"),
    (np.array([[1, 2], [3, 64]]), "f: token id 64 at position (1, 1) is outside the valid range [0, 10)"),
    (12, "f: token id 12 is outside the valid range [0, 10)"),  # one id: no position
    ([2**70], f"f: token id {2**70} at position 0 is outside the valid range [0, 10)"),  # too big for int64
])
def test_the_message_names_id_position_and_range(ids, message):
    with pytest.raises(IdOutOfRangeError) as e:
        check_token_ids(ids, 10, "f")
    assert str(e.value) == message


def test_the_error_is_both_an_index_and_a_value_error():
    # PyTorch raises IndexError for a bad embedding index, tokenizers raise ValueError: both keep working
    for kind in (IndexError, ValueError):
        with pytest.raises(kind, match=r"input_ids 7 at position 0 is outside"):
            check_token_ids([7], 5, "Transformer", name="input_ids")
