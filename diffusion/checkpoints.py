"""Save and load a trained denoiser as safetensors plus its config as JSON. Never pickle.

One file is enough: the config JSON also rides in the safetensors header's metadata, so a
``model.safetensors`` downloaded alone can be loaded back.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from .config import ExperimentConfig, PointSet
from .denoiser import Denoiser

FORMAT = "ddpm-lab/1"
_POINTS_KEY = "data.points"
_LABELS_KEY = "data.labels"  # a labelled point set's classes, int64


class CheckpointError(ValueError):
    """A model file that cannot be loaded; the message says why."""


def to_bytes(model: Denoiser, config: ExperimentConfig) -> bytes:
    tensors = {name: value.detach().cpu().contiguous() for name, value in model.state_dict().items()}
    if config.data.points is not None:  # the user's own points travel with the model
        tensors[_POINTS_KEY] = torch.from_numpy(config.data.points.array.copy())
        if config.data.points.labels is not None:
            tensors[_LABELS_KEY] = torch.from_numpy(config.data.points.labels.copy())
    return save_bytes(tensors, metadata={"format": FORMAT, "config": config.to_json()})


def save(model: Denoiser, config: ExperimentConfig, directory: str | Path) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``directory``; returns the model path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "model.safetensors"
    path.write_bytes(to_bytes(model, config))
    (directory / "config.json").write_text(config.to_json())
    return path


def _looks_like_pickle(data: bytes) -> bool:
    """Pickle protocol 2+ starts with PROTO (0x80); torch.save writes a zip ("PK"); protocols 0-1
    start with an opcode such as '(' MARK, 'c' GLOBAL, ']' EMPTY_LIST, '}' EMPTY_DICT, ... and end
    with '.' STOP. Nothing here unpickles: the bytes are only looked at. A safetensors file starts
    with its JSON header's length, 8 bytes little-endian, whose first two bytes may be anything
    (0x80, or an opcode) and whose next six are 0 for any header under 64 KiB; no pickle has six 0
    bytes there (its third byte is an opcode, none of them 0, or after protocol 1's BINPUT 0 the
    next opcode). Such bytes, and anything too short to tell (under 9 bytes), are left to the
    safetensors reader, which calls them unreadable if they are."""
    if len(data) < 9 or not any(data[2:8]):
        return False
    if data[:1] == b"\x80" or data[:2] == b"PK":
        return True
    return data[:1] in (b"(", b"c", b"]", b"}", b")", b"I", b"S", b"V", b"N", b"l", b"d") and data.rstrip()[-1:] == b"."


def _refuse_pickle(data: bytes) -> None:
    if _looks_like_pickle(data):
        raise CheckpointError(
            "this is a pickle (torch.save) file; only safetensors files are accepted, because "
            "loading a pickle can run arbitrary code"
        )


def from_bytes(data: bytes) -> tuple[Denoiser, ExperimentConfig]:
    """Load a model; raises CheckpointError with a clear message for anything else."""
    _refuse_pickle(data)
    try:
        tensors = load_bytes(data)
        header_len = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8 : 8 + header_len]).get("__metadata__") or {}
    except (SafetensorError, ValueError, OverflowError, UnicodeDecodeError) as error:
        raise CheckpointError(f"not a readable safetensors file (truncated or corrupt?): {error}") from None
    if metadata.get("format") != FORMAT or "config" not in metadata:
        raise CheckpointError(f"this safetensors file was not written by DDPM Lab (no '{FORMAT}' config inside)")
    labels = tensors.pop(_LABELS_KEY, None)
    if labels is not None and labels.dtype != torch.int64:
        raise CheckpointError(f"the point labels must be int64; {_LABELS_KEY} is {labels.dtype}")
    for name, value in tensors.items():
        if value.dtype != torch.float32:  # an edited header can retype the same bytes as integers
            raise CheckpointError(f"the weights must be float32; {name} is {value.dtype}")
    points = tensors.pop(_POINTS_KEY, None)
    try:
        raw = json.loads(metadata["config"])
        data = raw.get("data") if isinstance(raw, dict) else None
        classes = tuple(data.get("points_classes") or ()) if isinstance(data, dict) else ()
        if labels is not None and not classes:
            raise ValueError("the file has point labels but its config names no classes")
        points = (PointSet.from_array(points.numpy(), labels=None if labels is None else labels.numpy(), classes=classes)
                  if points is not None else None)
        config = ExperimentConfig.from_dict(raw, points=points)
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"the config stored in the file is invalid: {error}") from None
    model = Denoiser(config.denoiser, config.schedule.num_timesteps, torch.Generator().manual_seed(0),
                     objective=config.schedule.objective, num_classes=config.training.num_classes)
    expected = {name: tuple(value.shape) for name, value in model.state_dict().items()}
    found = {name: tuple(value.shape) for name, value in tensors.items()}
    if expected != found:
        missing = sorted(set(expected) - set(found))
        wrong = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
        raise CheckpointError(
            "the weights don't match the config: "
            + "; ".join(
                ([f"missing {', '.join(missing)}"] if missing else [])
                + [f"{k} is {found[k]}, expected {expected[k]}" for k in wrong]
                + ([f"unexpected {', '.join(sorted(set(found) - set(expected)))}"] if set(found) - set(expected) else [])
            )
        )
    if not all(torch.isfinite(value).all() for value in tensors.values()):
        raise CheckpointError("the weights contain NaN or inf")
    model.load_state_dict(tensors)
    return model.eval(), config


def load(path: str | Path) -> tuple[Denoiser, ExperimentConfig]:
    """Load from a ``.safetensors`` file or a directory holding ``model.safetensors``."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"cannot read {path}: {error.strerror}") from None
    return from_bytes(data)
