"""Links: every setting's value survives the round trip, and hostile links are answered in words.

A link's value is parsed by its setting's declaration; whatever is ignored or adjusted is named
(``read_link``'s problems, shown on the page as "Ignored from the link: ...")."""

from __future__ import annotations

import pytest

from tests.pages import fresh_caches, open_page, status  # noqa: F401
from ui.controls import SETTINGS, SHOWN_LINK_CHARACTERS, parse_link_value, preset_values, read_link


def _valid_values(d):
    if d.choices is not None:
        return list(d.choices)
    if d.kind is bool:
        return [True, False]
    s = d.setting
    low = s.low if not s.open_low else (s.stops[0] if s.stops else s.high / 2)
    high = s.high if not s.open_high else s.stops[-1]
    return [low, high, *s.stops]


@pytest.mark.parametrize("key", sorted(SETTINGS))
def test_every_valid_value_of_every_setting_survives_the_link(key):
    d = SETTINGS[key]
    for value in _valid_values(d):
        text = str(value).lower() if isinstance(value, bool) else str(value)
        assert parse_link_value(d, text) == value


def test_a_huge_link_value_is_cut_in_its_warning():
    _, values, problems = read_link({"T": ["9" * 100_000]})
    (problem,) = problems
    assert problem == ("T='" + "9" * SHOWN_LINK_CHARACTERS + "'… (100,000 characters) "
                       "(too long to be a value of this setting; allowed: a whole number from 1 to 4000)")
    assert len(problem) < 200 and values["T"] == preset_values("reference")["T"]


@pytest.mark.parametrize("key,raw", [("seed", "٣"), ("T", "１０"), ("hidden", "6４")])
def test_digits_other_than_0_to_9_are_refused_in_words(key, raw):
    _, values, problems = read_link({key: [raw]})
    assert problems == [f"{key}={raw!r} (not a whole number written with the digits 0-9; allowed: "
                        f"{SETTINGS[key].allowed()})"]
    assert values[key] == preset_values("reference")[key]


def test_a_number_that_rounds_to_zero_or_infinity_is_refused_not_changed():
    _, values, problems = read_link({"eta": ["1e-400"], "lr": ["1e400"]})
    assert problems == [
        "eta='1e-400' (too small: it rounds to 0; write 0 if you mean it. Allowed: in [0, 1])",
        "lr='1e400' (too large to use; allowed: in (0, 1])",
    ]
    assert values["eta"] == 0.0 and values["lr"] == 1e-3  # the preset's, not a silent 0 or inf


def test_a_repeated_key_uses_the_last_value_and_says_so():
    _, values, problems = read_link({"seed": ["1", "2"]})
    assert values["seed"] == 2
    assert problems == ["seed was given 2 times; the last one, '2', is used"]


def test_an_old_link_key_still_works():
    _, values, problems = read_link({"ddim_steps": ["25"], "sampler": ["ddim"]})
    assert values["sample_steps"] == 25 and problems == []


def test_a_tied_range_is_enforced_on_the_link_by_name():
    _, values, problems = read_link({"T": ["20"], "sample_steps": ["80"]})
    assert problems == ["sample_steps=80 (at most schedule.num_timesteps for DDIM)"]
    assert values["sample_steps"] == 20


def test_the_page_shows_the_hostile_link_problems_and_still_trains():
    at = open_page(seed="٣", eta="1e-400")
    warnings = [w.value for w in at.sidebar.warning]
    assert any(w.startswith("Ignored from the link: seed='٣' (not a whole number") for w in warnings)
    assert any(w.startswith("Ignored from the link: eta='1e-400' (too small") for w in warnings)
    assert not at.exception and "**" in status(at)


def test_an_upload_error_shows_in_the_same_run_and_the_old_points_are_not_used():
    at = open_page(dataset="points")
    good = "x,y\n" + "\n".join(f"{i},{i % 7}" for i in range(60))
    at.file_uploader(key="points_file").upload("good.csv", good.encode(), "text/csv").run()
    assert any(c.value == "60 points from good.csv, standardised." for c in at.sidebar.caption)
    at.file_uploader(key="points_file").upload("bad.csv", b"a,b\n1,2\n", "text/csv").run()
    assert [e.value for e in at.sidebar.error] == ["bad.csv: the header must name columns x and y; found a, b"]
    assert not any("points" in c.value and "standardised" in c.value for c in at.sidebar.caption)
    assert not at.get("progress")  # nothing trains on the old points meanwhile
