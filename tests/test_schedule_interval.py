"""The interval the installers write for a cron schedule: its longest gap between two runs."""

from __future__ import annotations

import pytest

from analytics_refresh.schedule import interval_minutes, main


@pytest.mark.parametrize(
    ("expression", "minutes"),
    [
        ("0 */2 * * *", 120),
        ("*/10 * * * *", 10),
        ("*/15 * * * *", 15),
        ("7 * * * *", 60),
        ("0,30 8-18 * * *", 810),  # the night is the longest gap
        ("30 2 * * *", 1440),
        ("0 9 * * 1-5", 3 * 1440),  # Friday 09:00 to Monday 09:00
        ("0 0 * * 0,7", 7 * 1440),  # 0 and 7 are both Sunday
        ("*/20 */3 * * *", 140),
    ],
)
def test_the_interval_is_the_longest_gap(expression, minutes):
    assert interval_minutes(expression) == minutes


@pytest.mark.parametrize("expression", ["* * * *", "61 * * * *", "*/0 * * * *", "5-1 * * * *"])
def test_a_schedule_it_cannot_read_exits_2(expression, capsys):
    assert main([expression]) == 2
    assert f"schedule {expression!r}:" in capsys.readouterr().err
