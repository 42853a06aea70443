"""Operator logs: key=value lines with levels, and no caller number in clear."""

from __future__ import annotations

import io
import logging

from acd.logs import KeyValueFormatter, configure, mask_numbers


def test_phone_numbers_are_masked_but_numeric_fields_stay() -> None:
    assert mask_numbers("caller 01012345678 hung up") == "caller *******5678 hung up"
    assert mask_numbers("Arrive(id='c1', caller='+82-10-1234-5678')") == "Arrive(id='c1', caller='+**-**-****-5678')"
    assert mask_numbers("caller=01012345678 lsn=123456789 epoch=3") == "caller=*******5678 lsn=123456789 epoch=3"
    assert mask_numbers("took 0.1234567 s at 2026-11-23T12:00:00") == "took 0.1234567 s at 2026-11-23T12:00:00"


def test_lines_are_key_value_with_time_level_and_logger() -> None:
    stream = io.StringIO()
    configure("info", stream)
    try:
        log = logging.getLogger("acd.test")
        log.info("recovered node=%s lsn=%d", "a", 42)
        log.warning("a message with spaces, caller 01012345678")
        log.debug("hidden at info")
        try:
            raise ValueError("bad caller 0105551234")
        except ValueError:
            log.exception("request failed path=/v1/calls")
    finally:
        configure("warning")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("time=") and " level=info logger=acd.test msg=recovered node=a lsn=42" in lines[0]
    assert 'level=warning logger=acd.test msg="a message with spaces, caller *******5678"' in lines[1]
    assert "level=error" in lines[2] and "path=/v1/calls" in lines[2] and "ValueError" in lines[2]
    assert "0105551234" not in lines[2] and "******1234" in lines[2]


def test_formatter_appends_structured_fields() -> None:
    record = logging.LogRecord("acd.x", logging.INFO, __file__, 1, "config reloaded", (), None)
    record.fields = {"actor": "api:root", "note": "two words"}
    line = KeyValueFormatter().format(record)
    assert line.endswith('msg="config reloaded" actor=api:root note="two words"')


def test_dates_times_and_short_numbers_are_not_masked() -> None:
    for text in ("on 2026-11-23 at 12:00:00", "call 120 or 051-120", "12 34 56", "id w1-0a1b2c3d-17"):
        assert mask_numbers(text) == text
