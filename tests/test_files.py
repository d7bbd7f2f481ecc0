"""minillm._files.atomic_write: the one atomic writer every file-writing module uses."""
import os

import pytest

from minillm._files import atomic_write


def test_atomic_write_replaces_and_leaves_no_temp_files(tmp_path):
    p = tmp_path / "a.json"
    atomic_write(p, "first")
    atomic_write(p, b"second")
    assert p.read_bytes() == b"second"
    assert os.listdir(tmp_path) == ["a.json"]


def test_failed_atomic_write_keeps_the_old_file(tmp_path):
    p = tmp_path / "a.txt"
    atomic_write(p, "good")
    with pytest.raises(TypeError, match="must be bytes or str"):
        atomic_write(p, 123)
    assert p.read_text() == "good"
    assert os.listdir(tmp_path) == ["a.txt"]
