"""minillm._files: the one atomic writer (and its streaming form) every file-writing module uses."""
import os

import pytest

from minillm._files import atomic_path, atomic_write


def test_atomic_write_replaces_and_leaves_no_temp_files(tmp_path):
    p = tmp_path / "a.json"
    atomic_write(p, "first")
    atomic_write(p, b"second")
    assert p.read_bytes() == b"second"
    assert os.listdir(tmp_path) == ["a.json"]


def test_atomic_write_keeps_newlines_and_encodes_utf8(tmp_path):
    p = tmp_path / "t.txt"
    atomic_write(p, "模型\nline\r\n")
    assert p.read_bytes() == "模型\nline\r\n".encode("utf-8")


def test_failed_atomic_write_keeps_the_old_file(tmp_path):
    p = tmp_path / "a.txt"
    atomic_write(p, "good")
    with pytest.raises(TypeError, match="must be bytes or str"):
        atomic_write(p, 123)
    assert p.read_text() == "good"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_atomic_path_publishes_only_on_success(tmp_path):
    p = tmp_path / "tokens.bin"
    with atomic_path(p) as tmp:
        assert os.path.dirname(tmp) == str(tmp_path) and tmp.endswith("-tokens.bin")
        with open(tmp, "wb") as f:
            f.write(b"chunk1")
            f.write(b"chunk2")
        assert not p.exists()  # nothing visible under the real name until the block ends
    assert p.read_bytes() == b"chunk1chunk2"

    with pytest.raises(RuntimeError, match="crash"):
        with atomic_path(p) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"half")
            raise RuntimeError("crash mid-write")
    assert p.read_bytes() == b"chunk1chunk2"  # the old file, untouched
    assert os.listdir(tmp_path) == ["tokens.bin"]  # and no temp file left behind
