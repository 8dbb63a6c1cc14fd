"""Checkpoints: safetensors + JSON round trip; pickles, corrupt and mismatched files refused."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save as save_safetensors

from diffusion import checkpoints
from diffusion.checkpoints import CheckpointError, from_bytes, load, save, to_bytes
from diffusion.config import DataConfig, PointSet, improved, reference
from diffusion.denoiser import Denoiser
from diffusion.training import Trainer


def _trained(config, epochs=15):
    config = config.replace(train={"epochs": epochs})
    return Trainer(config).train().model, config


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


@pytest.mark.parametrize("preset", [reference, improved])
def test_save_load_round_trip(tmp_path, preset, gen):
    model, config = _trained(preset())
    path = save(model, config, tmp_path / "run")
    assert path.name == "model.safetensors"
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == config.to_dict()
    for where in [path, tmp_path / "run"]:  # the file, or the directory holding it
        loaded, loaded_config = load(where)
        assert loaded_config == config
        _assert_same_weights(loaded, model)
        assert not loaded.training  # ready to sample
        x, t = torch.randn(16, 2, generator=gen(0)), torch.randint(0, 1000, (16,), generator=gen(1))
        with torch.no_grad():
            assert torch.equal(loaded(x, t), model(x, t))


def test_round_trip_with_a_users_point_set():
    points = PointSet.from_array(np.random.default_rng(0).normal(size=(64, 2)))
    model, config = _trained(reference().replace(data=DataConfig("points", points), train={"batch_size": 32}), epochs=3)
    loaded, loaded_config = from_bytes(to_bytes(model, config))
    assert loaded_config == config
    np.testing.assert_array_equal(loaded_config.data.points.array, points.array)
    _assert_same_weights(loaded, model)


class _Exploit:
    """Unpickling this would create the marker file: proof that a loader ran pickle."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_a_crafted_pickle_is_refused_and_never_run(tmp_path, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps(_Exploit(marker), protocol=protocol))
    with pytest.raises(CheckpointError, match="pickle"):
        load(path)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 1])
def test_an_old_protocol_pickle_is_refused_and_never_run(tmp_path, protocol):
    marker = tmp_path / "pwned"
    with pytest.raises(CheckpointError):
        from_bytes(pickle.dumps(_Exploit(marker), protocol=protocol))
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 1])
def test_an_old_protocol_pickle_is_named_as_a_pickle(tmp_path, protocol):
    with pytest.raises(CheckpointError, match="pickle"):
        from_bytes(pickle.dumps(_Exploit(tmp_path / "pwned"), protocol=protocol))


def test_a_torch_save_file_is_refused_as_pickle(tmp_path):
    model, config = _trained(reference(), epochs=1)
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(CheckpointError, match="pickle"):
        load(path)
    legacy = tmp_path / "legacy.pt"
    torch.save(model.state_dict(), legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="pickle"):
        load(legacy)


@pytest.mark.parametrize("keep", [0, 4, 8, 40, 0.5, -1])
def test_a_truncated_file_is_refused(keep):
    model, config = _trained(reference(), epochs=1)
    data = to_bytes(model, config)
    cut = data[: int(len(data) * keep)] if isinstance(keep, float) else data[:keep]
    with pytest.raises(CheckpointError, match="truncated or corrupt|safetensors"):
        from_bytes(cut)


def test_garbage_and_foreign_files_are_refused():
    with pytest.raises(CheckpointError):
        from_bytes(b"hello, this is not a model at all")
    with pytest.raises(CheckpointError):
        from_bytes(b"x,y\n1,2\n")
    # a valid safetensors file, but not one of ours: no config inside
    foreign = save_safetensors({"weight": torch.zeros(3)})
    with pytest.raises(CheckpointError, match="ddpm-lab"):
        from_bytes(foreign)


def _with_weights(config, **denoiser_changes) -> bytes:
    """Weights from a different architecture, labelled with ``config``."""
    other = Denoiser(
        config.denoiser.__class__(**{**config.denoiser.__dict__, **denoiser_changes}),
        1000,
        torch.Generator().manual_seed(0),
    )
    return to_bytes(other, config)


def test_weights_of_the_wrong_shape_are_refused_naming_the_tensor():
    config = reference()
    with pytest.raises(CheckpointError) as info:
        from_bytes(_with_weights(config, hidden=32))
    message = str(info.value)
    assert "net.0.weight" in message and "(32, 3)" in message and "(64, 3)" in message


def test_missing_and_unexpected_weights_are_refused_by_name():
    with pytest.raises(CheckpointError, match="missing net.4"):
        from_bytes(_with_weights(reference(), depth=1))
    with pytest.raises(CheckpointError, match="unexpected net.6"):
        from_bytes(_with_weights(reference(), depth=3))


def test_non_finite_weights_are_refused():
    model, config = _trained(reference(), epochs=1)
    with torch.no_grad():
        model.net[2].weight[0, 0] = float("nan")
    with pytest.raises(CheckpointError, match="NaN or inf"):
        from_bytes(to_bytes(model, config))


def test_an_invalid_stored_config_is_refused_naming_the_field():
    model, config = _trained(reference(), epochs=1)
    raw = config.to_dict()
    raw["train"]["lr"] = 5.0
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    data = save_safetensors(tensors, metadata={"format": checkpoints.FORMAT, "config": json.dumps(raw)})
    with pytest.raises(CheckpointError, match=r"train\.lr"):
        from_bytes(data)


def test_a_missing_file_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="cannot read"):
        load(tmp_path / "nowhere.safetensors")
    with pytest.raises(CheckpointError, match="cannot read"):
        load(tmp_path)  # a directory without model.safetensors


def test_a_safetensors_header_whose_length_starts_with_0x80_is_not_taken_for_a_pickle():
    """The header's length is 8 bytes little-endian: its first byte is pickle's PROTO (0x80) for
    lengths 128, 384, ... (a config one field longer made this happen)."""
    model, config = _trained(reference(), epochs=1)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    raw = json.dumps(config.to_dict())
    for padding in range(256):  # pad the metadata until the header's length is 0x80 modulo 256
        data = save_safetensors(tensors, metadata={"format": checkpoints.FORMAT, "config": raw, "pad": " " * padding})
        if data[0] == 0x80:
            break
    assert data[0] == 0x80
    loaded, loaded_config = from_bytes(data)
    assert loaded_config == config


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_a_pickle_of_any_protocol_is_still_refused_as_a_pickle(protocol):
    with pytest.raises(CheckpointError, match="pickle"):
        from_bytes(pickle.dumps({"net.0.weight": [[0.5, 1.5]], "lr": 0.001}, protocol=protocol))


def test_a_safetensors_file_cut_anywhere_is_never_taken_for_a_pickle():
    model, config = _trained(reference(), epochs=1)
    data = to_bytes(model, config)
    for cut in range(len(data)):
        assert not checkpoints._looks_like_pickle(data[:cut]), cut
