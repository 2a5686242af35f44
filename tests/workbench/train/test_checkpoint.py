"""Checkpoint files (``workbench.train.checkpoint``): the checksum is the SHA-256 of what the file
holds, the file is the one safetensors writes, and its write errors are one line."""

import hashlib
import json
import struct

import pytest
import safetensors.torch
import torch
from safetensors import safe_open

from workbench.errors import WorkbenchError
from workbench.files import temporary_name
from workbench.train import checkpoint as ckpt


def _tensors() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {"model.w": torch.randn(3, 5), "model.b": torch.arange(7, dtype=torch.float64),
            "rng.torch": torch.arange(200, dtype=torch.uint8), "optim.state.0.step": torch.tensor(4.0)}


def _split(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def test_the_checksum_is_the_sha256_of_the_index_and_the_bytes_on_disk(tmp_path):
    path = ckpt.save_checkpoint(tmp_path / "last.safetensors", _tensors(), {"step": 2, "note": "x" * 64})
    header, data = _split(path)
    index = {k: v for k, v in header.items() if k != "__metadata__"}
    expected = hashlib.sha256(json.dumps(index, sort_keys=True).encode() + data).hexdigest()
    assert header["__metadata__"][ckpt.DIGEST_KEY] == expected
    assert ckpt.verify_checkpoint(path)
    tensors, state = ckpt.load_checkpoint(path)
    assert state == {"step": 2, "note": "x" * 64}
    for key, value in _tensors().items():
        assert torch.equal(tensors[key], value) and tensors[key].dtype == value.dtype


def test_the_data_are_laid_out_as_safetensors_writes_them(tmp_path):
    """Same tensor index and data bytes as a plain ``save_file``: any safetensors reader opens it."""
    path = ckpt.save_checkpoint(tmp_path / "c.safetensors", _tensors(), {"step": 1})
    plain = tmp_path / "plain.safetensors"
    safetensors.torch.save_file(_tensors(), str(plain))
    (ours, our_data), (theirs, their_data) = _split(path), _split(plain)
    assert our_data == their_data
    assert {k: v for k, v in ours.items() if k != "__metadata__"} == theirs
    with safe_open(str(path), framework="pt") as fh:
        assert sorted(fh.keys()) == sorted(_tensors())
        assert fh.metadata()["workbench_format"] == ckpt.FORMAT


def test_a_second_save_gets_its_own_checksum(tmp_path):
    path = tmp_path / "last.safetensors"
    ckpt.save_checkpoint(path, {"model.w": torch.zeros(8)}, {"step": 1})
    first = _split(path)[0]["__metadata__"][ckpt.DIGEST_KEY]
    ckpt.save_checkpoint(path, {"model.w": torch.ones(8)}, {"step": 2})
    second = _split(path)[0]["__metadata__"][ckpt.DIGEST_KEY]
    assert first != second and ckpt.verify_checkpoint(path)
    assert ckpt.read_state(path) == {"step": 2}


def test_a_write_safetensors_refuses_is_one_line_and_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.safetensors"
    ckpt.save_checkpoint(path, {"model.w": torch.ones(4)}, {"step": 1})
    temporary_name(path).mkdir()  # the temporary name is taken by a folder: safetensors cannot write it
    with pytest.raises(WorkbenchError, match="last.safetensors: could not be written") as e:
        ckpt.save_checkpoint(path, {"model.w": torch.zeros(4)}, {"step": 2})
    assert "\n" not in str(e.value)
    tensors, state = ckpt.load_checkpoint(path)
    assert state == {"step": 1} and torch.equal(tensors["model.w"], torch.ones(4))


def test_a_file_shorter_than_its_header_says_is_refused_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """A full disk can leave safetensors' file short without an error from it: the seal compares
    the file with the tensors its header lists before anything is replaced."""
    path = tmp_path / "last.safetensors"
    ckpt.save_checkpoint(path, {"model.w": torch.ones(4)}, {"step": 1})
    real = safetensors.torch.save_file

    def short_write(tensors, filename, metadata=None):
        real(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as fh:
            fh.truncate(fh.seek(0, 2) - 4)

    monkeypatch.setattr(ckpt.safetensors.torch, "save_file", short_write)
    with pytest.raises(WorkbenchError, match="last.safetensors: the checkpoint did not write completely"):
        ckpt.save_checkpoint(path, {"model.w": torch.zeros(4)}, {"step": 2})
    monkeypatch.undo()
    tensors, state = ckpt.load_checkpoint(path)
    assert state == {"step": 1} and torch.equal(tensors["model.w"], torch.ones(4))
    assert not temporary_name(path).exists()
