"""Durations in human units and log-spaced time grids."""

from __future__ import annotations

import pytest

from controller.scenario.durations import format_duration, log_spaced_s, parse_duration_s


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0), ("90min", 5400.0), ("6h", 21600.0), ("30d", 2592000.0), ("1w", 604800.0),
        ("1mo", 2592000.0), ("1y", 31536000.0), ("1h30min", 5400.0), ("2.5 d", 216000.0),
        ("250ms", 0.25), ("3 hours", 10800.0), ("1 year", 31536000.0), (3600, 3600.0),
        (0.5, 0.5), ("42", 42.0),
    ],
)  # fmt: skip
def test_parse_duration(text: str | float, seconds: float) -> None:
    """Human durations and bare numbers (seconds) read as the right number of seconds."""
    assert parse_duration_s(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1 parsec", "unknown time unit"), ("5m", "ambiguous"), ("-1h", "negative"), ("", "empty"),
        ("h", "cannot read"), ("1h 2", "cannot read"), (-3, "negative"), (True, "expected"),
        ("1e999s", "not finite"),
    ],
)  # fmt: skip
def test_bad_durations(text: object, message: str) -> None:
    """Unknown or ambiguous units, negative, empty and malformed durations are refused."""
    with pytest.raises(ValueError, match=message):
        parse_duration_s(text)  # type: ignore[arg-type]


def test_format_duration_round_trips() -> None:
    """Labels use the largest exact unit and read back to the same seconds."""
    for label in ("1s", "1min", "1h", "1d", "1w", "1mo", "1y", "90min", "6h"):
        assert format_duration(parse_duration_s(label)) == label
    assert format_duration(4000.0) == "1.11h"


def test_log_spaced() -> None:
    """A log-spaced grid includes both ends and is evenly spaced in log time."""
    grid = log_spaced_s(1.0, 1e4, 5)
    assert grid == [1.0, 10.0, 100.0, 1000.0, 10000.0]
    with pytest.raises(ValueError):
        log_spaced_s(0.0, 10.0, 3)


def test_a_label_that_is_not_exact_never_reads_as_an_exact_one():
    """1441 h is not two months: its label says so (it once printed as "2mo")."""
    from controller.firmware.durations import format_duration

    assert format_duration(1441 * 3600.0) == "2.001mo"
    assert format_duration(2 * 30 * 86400.0) == "2mo"
    assert format_duration(3601.0) == "1.0003h" and format_duration(3996.0) == "1.11h"
