"""Uploads (issue 6): point files and model files, in the core and on the page.

A point file that can't be used gets a PointsError saying why and what is allowed; a usable one is
standardised (mean 0, std 1). A model file loads only as safetensors with DDPM Lab's config
inside: a pickle is refused without being unpickled, a corrupt or mismatched file gets a clear
message. Both uploads fit ``server.maxUploadSize``.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as hs
from safetensors.torch import save as save_safetensors
from streamlit.testing.v1 import AppTest

from diffusion import checkpoints, reference
from diffusion.config import MAX_DEPTH, MAX_HIDDEN, MAX_POINTS, MAX_TIMESTEPS, ExperimentConfig
from diffusion.datasets import PointsError, load_points
from diffusion.denoiser import Denoiser
from tests.pages import FAST, fresh_caches, open_page, poll_until, status  # noqa: F401
from ui import panels

REPO = Path(__file__).resolve().parents[1]
MB = 1_000_000  # the smaller reading of Streamlit's "megabytes", so the bound holds either way

pytestmark = pytest.mark.usefixtures("fresh_caches")


def read_csv(data: bytes | str, *, standardize: bool = True) -> np.ndarray:
    """The points ``load_points`` reads from a CSV file, as the model trains on them: (N, 2) float32."""
    return load_points(data, standardize=standardize).points.array


def csv_bytes(points: np.ndarray, header: str = "x,y") -> bytes:
    return (header + "\n" + "\n".join(f"{x!r},{y!r}" for x, y in points.tolist()) + "\n").encode()


def rows(n: int) -> bytes:
    return csv_bytes(np.random.default_rng(n).normal(size=(n, 2)))


def max_upload_bytes() -> int:
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    return config["server"]["maxUploadSize"] * MB


NOT_UTF8 = "the file is not UTF-8 text; save it as a UTF-8 CSV with columns x,y"
BINARY = "the file is binary, not CSV text; expected a CSV with columns x,y"
NOT_FINITE = "holds NaN or inf; every x,y must be a finite number"
TOO_MANY = f"the file has more than {MAX_POINTS:,} points, the limit; subsample it"

# name -> (file bytes, the whole message)
BAD_POINTS = {
    "wrong columns": (b"a,b\n1,2\n3,4\n", "the header must name columns x and y; found a, b"),
    "semicolons": (b"x;y\n1;2\n3;4\n", "the header must name columns x and y; found x;y"),
    "text in a cell": (b"x,y\n1,2\n3,four\n", "line 3 is not two numbers x,y: '3,four'"),
    "missing y": (b"x,y\n1,2\n3\n", "line 3 is not two numbers x,y: '3'"),
    "NaN": (b"x,y\n1,2\nnan,4\n5,6\n", f"line 3 {NOT_FINITE}"),
    "inf": (b"x,y\n1,2\n3,4\n5,-inf\n", f"line 4 {NOT_FINITE}"),
    "overflow to inf": (b"x,y\n1,2\n1e400,4\n", f"line 3 {NOT_FINITE}"),
    "empty": (b"", "the file is empty; expected a header row x,y and at least 2 points"),
    "header only": (b"x,y\n", "the file has 0 point(s); at least 2 are needed"),
    "blank lines only": (b"x,y\n\n \n,\n", "the file has 0 point(s); at least 2 are needed"),
    "one point": (b"x,y\n1,2\n", "the file has 1 point(s); at least 2 are needed"),
    "too many rows": (rows(MAX_POINTS + 1), TOO_MANY),
    "huge values": (b"x,y\n1e300,2\n3,4\n", "values beyond 1e15 in size cannot be used; rescale the data"),
    "identical points": (b"x,y\n" + b"2.5,-1\n" * 100, "all points are identical; the data needs some spread"),
    "UTF-16 with BOM": ("x,y\n1,2\n3,4\n".encode("utf-16"), NOT_UTF8),
    "UTF-16 without BOM": ("x,y\n1,2\n3,4\n".encode("utf-16-le"), BINARY),  # decodes as UTF-8, with NULs
    "latin-1": ("x,y,lieu\n1,2,Orléans\n3,4,Nîmes\n".encode("latin-1"), NOT_UTF8),
    "PNG": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10", NOT_UTF8),
    "NUL bytes": (b"x,y\n1,2\n3,\x004\n", BINARY),
    "random bytes": (bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)), NOT_UTF8),
    # csv's default field_size_limit is 131,072 characters
    "a 200k-character cell": (b"x,y\n" + b"1" * 200_000 + b",2\n3,4\n",
                              "line 2 is not CSV: field larger than field limit (131072)"),
}


# --- points: the parser -------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(BAD_POINTS))
def test_a_bad_point_file_gets_a_message_saying_what_is_wrong_and_allowed(case):
    data, expected = BAD_POINTS[case]
    with pytest.raises(PointsError) as error:
        read_csv(data)
    assert str(error.value) == expected


def test_a_file_with_old_mac_cr_line_endings_is_read():
    data = b"x,y\r1,2\r3,4\r"
    np.testing.assert_array_equal(read_csv(data, standardize=False), [[1, 2], [3, 4]])
    np.testing.assert_array_equal(read_csv(data), [[-1, -1], [1, 1]])  # mean (2, 3), std 1


def test_the_largest_allowed_point_set_is_accepted_and_one_more_row_is_refused():
    assert read_csv(rows(MAX_POINTS)).shape == (MAX_POINTS, 2)
    with pytest.raises(PointsError, match=f"{MAX_POINTS:,}"):
        read_csv(rows(MAX_POINTS + 1))


def test_a_million_rows_are_refused_at_the_row_past_the_limit_without_reading_the_rest():
    # the last line is not a number: a parser that read on would report it instead of the limit
    million = b"x,y\n" + b"0.5,-1.25\n" * 1_000_000 + b"not,numbers\n"
    with pytest.raises(PointsError) as error:
        read_csv(million)
    assert str(error.value) == TOO_MANY


@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e12, 1e14])
def test_any_allowed_scale_is_standardised_to_mean_0_and_std_1(scale):
    raw = np.random.default_rng(1).normal(loc=3.0, size=(500, 2)) * scale
    points = read_csv(csv_bytes(raw))
    assert points.dtype == np.float32 and np.isfinite(points).all()
    np.testing.assert_allclose(points.mean(axis=0), 0.0, atol=1e-6)
    assert points.astype(np.float64).std() == pytest.approx(1.0, rel=1e-6)
    expected = (raw - raw.mean(axis=0)) / (raw - raw.mean(axis=0)).std()  # the documented map, in float64
    np.testing.assert_allclose(points, expected, rtol=1e-5, atol=1e-6)


def test_the_size_limit_of_1e15_is_inclusive_and_stated():
    assert read_csv(b"x,y\n1e15,-1e15\n0,0\n").shape == (2, 2)
    with pytest.raises(PointsError, match="beyond 1e15"):
        read_csv(b"x,y\n1.0000001e15,0\n0,0\n")


def test_header_case_spacing_extra_columns_and_a_utf8_bom_are_accepted():
    data = "\ufeff label , Y ,X\nа,2,1\nb,4,3\n".encode()
    np.testing.assert_allclose(read_csv(data, standardize=False), [[1, 2], [3, 4]])


CELL = hs.one_of(hs.floats(allow_nan=True, allow_infinity=True).map(repr), hs.integers().map(str),
                 hs.sampled_from(["", " ", "nan", "-inf", "1e400", "1e-400", "abc", '"1"']),
                 hs.text(alphabet='0123456789.-e+ "xy,\t', max_size=8))


@settings(max_examples=100, deadline=None)
@given(header=hs.sampled_from(["x,y", "X , Y", "y,x", "x,y,z", "a,b", "x", ""]),
       body=hs.lists(hs.lists(CELL, max_size=4).map(",".join), max_size=12),
       newline=hs.sampled_from(["\n", "\r\n"]))
def test_any_csv_text_is_either_standardised_points_or_a_points_error(header, body, newline):
    text = newline.join([header, *body]) + newline
    try:
        points = read_csv(text.encode())
    except PointsError:
        return
    assert points.dtype == np.float32 and points.shape[1] == 2 and 2 <= len(points) <= MAX_POINTS
    assert np.isfinite(points).all()
    assert np.abs(points.mean(axis=0)).max() < 1e-3 and abs(points.astype(np.float64).std() - 1) < 1e-3


# --- upload size ---------------------------------------------------------------------------------


def test_max_upload_size_is_set_and_the_largest_allowed_csv_fits_under_it():
    limit = max_upload_bytes()
    assert 0 < limit <= 200 * MB  # set, and below Streamlit's default of 200 MB
    # the widest plain number a row can hold: 17 significant digits, a sign and an exponent
    widest = np.full((MAX_POINTS, 2), -1.2345678901234567e-100)
    data = csv_bytes(widest)
    assert len(data) < limit, f"{len(data):,} bytes for {MAX_POINTS:,} points, limit {limit:,}"
    assert read_csv(data, standardize=False).shape == (MAX_POINTS, 2)


def largest_model_file() -> bytes:
    config = reference().replace(denoiser={"hidden": MAX_HIDDEN, "depth": MAX_DEPTH}, sampler={"num_samples": 100})
    model = Denoiser(config.denoiser, config.schedule.num_timesteps, torch.Generator().manual_seed(0))
    return checkpoints.to_bytes(model, config)


def test_the_largest_model_the_page_trains_can_be_uploaded_back():
    assert len(largest_model_file()) < max_upload_bytes()


# --- models: only safetensors with the config inside --------------------------------------------


def small_config(**sections) -> ExperimentConfig:
    merged = {"schedule": {"num_timesteps": 100}, "train": {"epochs": 20}}
    for name, fields in sections.items():
        merged[name] = {**merged.get(name, {}), **fields}
    return reference().replace(**merged)


def model_bytes(config: ExperimentConfig, weights_from: ExperimentConfig | None = None) -> bytes:
    source = weights_from or config
    model = Denoiser(source.denoiser, source.schedule.num_timesteps, torch.Generator().manual_seed(0))
    return checkpoints.to_bytes(model, config)


class RunsCodeWhenUnpickled:
    """Unpickling this creates a marker file: proof that a loader executed the pickle."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def pickles(marker: Path) -> dict[str, bytes]:
    payload = RunsCodeWhenUnpickled(str(marker))
    out = {f"protocol {p}": pickle.dumps(payload, protocol=p) for p in range(pickle.HIGHEST_PROTOCOL + 1)}
    buffer = io.BytesIO()
    torch.save({"weights": torch.zeros(2), "payload": payload}, buffer)
    out["torch.save"] = buffer.getvalue()
    return out


PICKLE_REFUSED = ("this is a pickle (torch.save) file; only safetensors files are accepted, because "
                  "loading a pickle can run arbitrary code")
# what follows is safetensors' own reason, which we pass on but don't pin
UNREADABLE = re.escape("not a readable safetensors file (truncated or corrupt?): ")


def test_every_kind_of_pickle_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "ran"
    for name, data in pickles(marker).items():
        with pytest.raises(checkpoints.CheckpointError) as error:
            checkpoints.from_bytes(data)
        assert str(error.value) == PICKLE_REFUSED, name
    assert not marker.exists()


@pytest.mark.parametrize("prefix", [b"\n", b"   ", b"{}", b"\x00" * 8])
def test_a_disguised_pickle_is_refused_as_unreadable_and_never_run(tmp_path, prefix):
    """Bytes before the pickle hide it from the sniffer; the safetensors reader then refuses it."""
    marker = tmp_path / "ran"
    with pytest.raises(checkpoints.CheckpointError, match=f"^{UNREADABLE}"):
        checkpoints.from_bytes(prefix + pickle.dumps(RunsCodeWhenUnpickled(str(marker)), protocol=0))
    assert not marker.exists()


def test_a_file_whose_weights_do_not_match_its_config_names_the_tensor_and_both_shapes():
    data = model_bytes(small_config(denoiser={"hidden": 64}), weights_from=small_config(denoiser={"hidden": 32}))
    with pytest.raises(checkpoints.CheckpointError, match=r"don't match the config: .*net\.0\.weight is "
                                                          r"\(32, 3\), expected \(64, 3\)"):
        checkpoints.from_bytes(data)
    deeper = model_bytes(small_config(denoiser={"depth": 3}), weights_from=small_config(denoiser={"depth": 2}))
    with pytest.raises(checkpoints.CheckpointError, match=r"missing net\.6\.bias, net\.6\.weight"):
        checkpoints.from_bytes(deeper)


@pytest.mark.parametrize("keep", [0, 4, 8, 40, 0.5, -1])
def test_a_truncated_file_is_refused_as_truncated_or_corrupt(keep):
    data = model_bytes(small_config())
    cut = data[: int(len(data) * keep) if isinstance(keep, float) else keep]
    with pytest.raises(checkpoints.CheckpointError, match=f"^{UNREADABLE}"):
        checkpoints.from_bytes(cut)


def raw_safetensors(config_json: str | None, fmt: str = checkpoints.FORMAT) -> bytes:
    model = Denoiser(small_config().denoiser, 100, torch.Generator().manual_seed(0))
    metadata = {"format": fmt} | ({"config": config_json} if config_json is not None else {})
    return save_safetensors({k: v.contiguous() for k, v in model.state_dict().items()}, metadata=metadata)


NOT_OURS = f"this safetensors file was not written by DDPM Lab (no '{checkpoints.FORMAT}' config inside)"
INVALID = "the config stored in the file is invalid: "


@pytest.mark.parametrize("config_json,fmt,expected", [
    (None, checkpoints.FORMAT, NOT_OURS),
    ("{}", "someone-else/1", NOT_OURS),
    ("not json", checkpoints.FORMAT, INVALID + "Expecting value: line 1 column 1 (char 0)"),
    ("[1, 2]", checkpoints.FORMAT,
     INVALID + "config must be a JSON object with sections data, schedule, denoiser, train, sampler"),
    (json.dumps({"schedule": {"num_timesteps": 99999}}), checkpoints.FORMAT,
     INVALID + f"schedule.num_timesteps must be from 1 to {MAX_TIMESTEPS}; got 99999"),
    (json.dumps({"train": {"lr": "fast"}}), checkpoints.FORMAT, INVALID + "train.lr must be a number in (0, 1]; got 'fast'"),
    (json.dumps({"data": {"name": "points"}}), checkpoints.FORMAT,
     INVALID + "data.points is required when data.name is 'points' (upload a CSV)"),
])
def test_a_safetensors_file_without_a_valid_config_inside_is_refused_clearly(config_json, fmt, expected):
    with pytest.raises(checkpoints.CheckpointError) as error:
        checkpoints.from_bytes(raw_safetensors(config_json, fmt))
    assert str(error.value) == expected


def test_non_finite_weights_are_refused():
    config = small_config()
    model = Denoiser(config.denoiser, 100, torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.net[0].bias[0] = float("inf")
    with pytest.raises(checkpoints.CheckpointError, match="^the weights contain NaN or inf$"):
        checkpoints.from_bytes(checkpoints.to_bytes(model, config))


GOOD_MODEL = model_bytes(small_config(denoiser={"hidden": 8}))
# safetensors layout: 8-byte little-endian header length, the JSON header, then the raw tensors
HEADER_END = 8 + int.from_bytes(GOOD_MODEL[:8], "little")
LAYOUT = {name: entry for name, entry in json.loads(GOOD_MODEL[8:HEADER_END]).items() if name != "__metadata__"}


def stored_weights(data: bytes) -> dict[str, np.ndarray]:
    """The tensors as the file lays them out, read with numpy (all float32 here)."""
    assert {entry["dtype"] for entry in LAYOUT.values()} == {"F32"}
    return {name: np.frombuffer(data[HEADER_END + entry["data_offsets"][0]: HEADER_END + entry["data_offsets"][1]],
                                dtype="<f4").reshape(entry["shape"]) for name, entry in LAYOUT.items()}


@settings(max_examples=100, deadline=None)
@given(cut=hs.integers(0, len(GOOD_MODEL) - 1))
def test_a_truncated_model_file_is_always_refused_as_unreadable(cut):
    with pytest.raises(checkpoints.CheckpointError, match=f"^{UNREADABLE}"):
        checkpoints.from_bytes(GOOD_MODEL[:cut])


@settings(max_examples=100, deadline=None)
@given(position=hs.integers(HEADER_END, len(GOOD_MODEL) - 1), byte=hs.integers(0, 255))
def test_a_byte_changed_in_the_weights_loads_those_weights_unless_it_makes_a_nan_or_inf(position, byte):
    data = bytearray(GOOD_MODEL)
    data[position] = byte
    expected = stored_weights(bytes(data))
    if not all(np.isfinite(w).all() for w in expected.values()):
        with pytest.raises(checkpoints.CheckpointError, match="^the weights contain NaN or inf$"):
            checkpoints.from_bytes(bytes(data))
        return
    model, config = checkpoints.from_bytes(bytes(data))
    assert config == checkpoints.from_bytes(GOOD_MODEL)[1]
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), expected[name], err_msg=name)


@settings(max_examples=100, deadline=None)
@given(position=hs.integers(0, HEADER_END - 1), byte=hs.integers(0, 255))
def test_a_byte_changed_in_the_header_gets_a_checkpoint_error_or_loads_the_same_weights(position, byte):
    """A fuzz test of the contract: which outcome depends on the byte (a digit of the lr still loads,
    one of hidden does not), but never another exception, and never weights other than the file's."""
    data = bytearray(GOOD_MODEL)
    data[position] = byte
    try:
        model, config = checkpoints.from_bytes(bytes(data))
    except checkpoints.CheckpointError:
        return
    assert isinstance(config, ExperimentConfig)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), stored_weights(GOOD_MODEL)[name], err_msg=name)


def test_a_header_that_retypes_the_weights_as_integers_is_refused():
    """One byte, F32 -> I32, and the same bytes would load as weights of about 1e9."""
    data = bytearray(GOOD_MODEL)
    data[GOOD_MODEL.index(b'"F32"', 8) + 1] = ord("I")
    with pytest.raises(checkpoints.CheckpointError, match=r"^the weights must be float32; \S+ is torch\.int32$"):
        checkpoints.from_bytes(bytes(data))


# --- the page's uploaders ---------------------------------------------------------------------------



@pytest.fixture(scope="module")
def points_page():
    """One page with the points dataset chosen; each test uploads its own file into it."""
    return open_page(dataset="points")


@pytest.mark.parametrize("case", list(BAD_POINTS))
def test_the_page_shows_why_a_bad_point_file_cannot_be_used_and_keeps_running(points_page, case):
    data, expected = BAD_POINTS[case]
    at = points_page
    at.file_uploader(key="points_file").upload(f"{case}.csv", data, "text/csv").run()
    assert not at.exception, at.exception[0].value
    assert [e.value for e in at.sidebar.error] == [f"{case}.csv: {expected}"]
    assert any("Fix the setting marked in the sidebar" in i.value for i in at.info)  # nothing trains on it
    assert panels.registry().stats()["jobs"] == 0


def test_the_page_accepts_the_largest_allowed_point_set_and_says_it_standardised_it(points_page):
    at = points_page
    at.file_uploader(key="points_file").upload("big.csv", rows(MAX_POINTS), "text/csv").run()
    assert not at.exception and not at.sidebar.error
    assert any(f"{MAX_POINTS:,} points from big.csv, standardised" in c.value for c in at.sidebar.caption)
    (job,) = [run for run in panels.registry()._runs.values() if run.kept]
    assert len(job.key.data.points) == MAX_POINTS
    np.testing.assert_allclose(job.key.data.points.array.mean(axis=0), 0.0, atol=1e-5)


def test_the_page_reads_a_file_with_cr_line_endings(points_page):
    at = points_page
    at.file_uploader(key="points_file").upload("mac.csv", b"x,y\r1,2\r3,4\r", "text/csv").run()
    assert not at.exception, at.exception[0].value
    assert "2 points from mac.csv, standardised." in [c.value for c in at.sidebar.caption]


def uploaded_model_error(at: AppTest, name: str, data: bytes) -> str:
    at.file_uploader(key="model_file").upload(name, data, "application/octet-stream").run()
    assert not at.exception, at.exception[0].value
    errors = [e.value for e in at.sidebar.error if e.value.startswith(f"{name}: ")]
    assert len(errors) == 1, [e.value for e in at.sidebar.error]
    return errors[0]


def test_the_page_refuses_every_pickle_unopened_and_corrupt_files_clearly(tmp_path):
    at = open_page()
    marker = tmp_path / "ran"
    for name, data in pickles(marker).items():
        if name in ("protocol 1", "protocol 3", "protocol 4"):
            continue  # the core test above covers every protocol; the page needs one of each shape
        assert uploaded_model_error(at, f"{name}.safetensors", data) == f"{name}.safetensors: {PICKLE_REFUSED}"
    assert not marker.exists()
    mismatched = model_bytes(small_config(denoiser={"hidden": 64}), weights_from=small_config(denoiser={"hidden": 32}))
    assert "don't match the config" in uploaded_model_error(at, "mismatch.safetensors", mismatched)
    truncated = model_bytes(small_config())[:-100]
    assert re.match(f"cut.safetensors: {UNREADABLE}", uploaded_model_error(at, "cut.safetensors", truncated))
    assert "_loaded_model" not in at.session_state  # nothing was loaded: the page trains as before
    assert at.session_state["epochs"] == int(FAST["epochs"])


def test_the_page_refuses_a_model_whose_config_holds_an_enormous_integer():
    at = open_page()
    config = small_config().to_dict()
    config["train"]["lr"] = 10**400
    assert "config stored in the file is invalid" in uploaded_model_error(at, "big.safetensors",
                                                                          raw_safetensors(json.dumps(config)))


@pytest.mark.parametrize("key,sections,value", [("lr", {"train": {"lr": 0.007}}, 0.007),
                                                ("hidden", {"denoiser": {"hidden": 100}}, 100)],
                         ids=["lr", "hidden"])
def test_a_model_from_the_command_with_a_value_between_slider_stops_is_loaded(key, sections, value):
    """The page's range is 1e-6..1 for lr and 1..512 for hidden; values off the slider's stops are
    added to its options, so the model loads and its settings are shown."""
    at = open_page()
    at.file_uploader(key="model_file").upload("cli.safetensors", model_bytes(small_config(**sections)), "x").run()
    assert not at.exception, at.exception[0].value
    assert not at.sidebar.error, [e.value for e in at.sidebar.error]
    assert "loaded from a model file" in status(at)
    assert at.session_state[key] == value
    assert "Loaded cli.safetensors: its settings are shown above." in [c.value for c in at.sidebar.caption]


def test_a_model_from_the_command_with_any_valid_value_is_loaded_since_the_page_offers_what_the_config_allows():
    """lr = 1e-7 is a valid config (lr in (0, 1]); the page's range comes from the same declaration
    (it used to stop at 1e-6 and refuse such a file)."""
    at = open_page()
    at.file_uploader(key="model_file").upload("cli.safetensors", model_bytes(small_config(train={"lr": 1e-7})), "x").run()
    assert not at.exception, at.exception[0].value
    assert not at.sidebar.error
    assert "loaded from a model file" in status(at)
    assert at.session_state["lr"] == 1e-7 and at.select_slider(key="lr").options[0] == "1e-07"  # shown as a stop
