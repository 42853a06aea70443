"""Authentication at the edge (issue 20, "The HTTP API"): two Authorization headers, requests
failing authentication limited per source address, and caller numbers masked in the logs
wherever they appear (paths, dotted forms)."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import httpx
import trio

from acd.api.auth import FailureLimiter
from acd.logs import configure, mask_numbers
from acd.settings import hash_token
from tests.helpers.inprocess import running_node, write_settings

TOKENS = [{"name": "boss", "role": "supervisor", "hash": hash_token("boss-token")}]
BOSS = {"authorization": "Bearer boss-token"}


def _client(running: Any, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=running.api, client=(address, 40000))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://node")


def test_two_authorization_headers_get_400(tmp_path: Path) -> None:
    settings = write_settings(tmp_path, tokens=TOKENS)

    async def main() -> None:
        async with running_node(settings) as running:
            for pair in (["Bearer boss-token", "Bearer wrong"], ["Bearer wrong", "Bearer boss-token"], ["Bearer boss-token"] * 2):
                headers = [("authorization", value) for value in pair]
                response = await running.client.get("/v1/stats", headers=headers)
                assert response.status_code == 400 and response.json()["error"] == "bad_request", response.text
            assert (await running.client.get("/v1/stats", headers=BOSS)).status_code == 200
            # Other repeated headers are not refused.
            assert (await running.client.get("/v1/stats", headers=[*BOSS.items(), ("accept", "a"), ("accept", "b")])).status_code == 200

    trio.run(main)


def test_requests_failing_authentication_are_limited_per_source_address(tmp_path: Path) -> None:
    settings = write_settings(tmp_path, tokens=TOKENS, limits={"unauthorized_per_second_per_address": 2})

    async def main() -> None:
        async with running_node(settings) as running:
            async with _client(running, "192.0.2.7") as stranger, _client(running, "192.0.2.8") as other:
                statuses = [(await stranger.get("/v1/stats", headers={"authorization": "Bearer guess"})).status_code for _ in range(6)]
                assert statuses[:4] == [401] * 4 and statuses[4:] == [429, 429]  # a burst of twice the rate
                limited = await stranger.get("/v1/stats")
                assert limited.status_code == 429 and limited.json()["error"] == "too_many_unauthorized"
                assert limited.headers["retry-after"] == "1" and limited.headers["connection"] == "close"
                # A valid token from the same address is never refused by it; public endpoints neither.
                assert (await stranger.get("/v1/stats", headers=BOSS)).status_code == 200
                assert (await stranger.get("/readyz")).status_code == 200
                # Another address has its own allowance.
                assert (await other.get("/v1/stats")).status_code == 401
                metrics = (await other.get("/metrics")).text
                assert 'acd_api_limited_total{limit="unauthorized_per_second_per_address"}' in metrics

    trio.run(main)


def test_the_failure_limiter_refills_and_stays_bounded() -> None:
    limiter = FailureLimiter()
    limiter.failed("a", 1.0, now=0.0)
    limiter.failed("a", 1.0, now=0.0)
    try:
        limiter.failed("a", 1.0, now=0.0)
        raise AssertionError("a third failure at once is past a burst of two")
    except Exception as error:  # noqa: BLE001
        assert getattr(error, "status", None) == 429
    limiter.failed("a", 1.0, now=1.0)  # one more a second later
    for index in range(FailureLimiter.MAX_ADDRESSES + 10):
        limiter.failed(f"10.0.{index // 256}.{index % 256}", 1.0, now=100.0 + index)
    assert len(limiter._buckets) <= FailureLimiter.MAX_ADDRESSES


def test_numbers_in_paths_and_dotted_numbers_are_masked() -> None:
    assert mask_numbers("request failed method=POST path=/v1/calls/01099998888/answer") == (
        "request failed method=POST path=/v1/calls/*******8888/answer"
    )
    assert mask_numbers("path=/v1/calls/010-9999-8888") == "path=/v1/calls/***-****-8888"
    assert mask_numbers("caller 010.1234.5678 hung up") == "caller ***.****.5678 hung up"
    assert mask_numbers("caller=010.1234.5678") == "caller=***.****.5678"
    assert mask_numbers("from +82.10.1234.5678") == "from +**.**.****.5678"
    # Not numbers: decimals, addresses, versions, numeric fields, ids glued to a word.
    for text in ("took 0.1234567 s", "listen=10.123.145.200:8120", "version 3.11.7", "lsn=123456789", "call c-01099998888"):
        assert mask_numbers(text) == text


def test_a_failed_request_line_masks_the_number_in_its_path() -> None:
    stream = io.StringIO()
    configure("info", stream)
    try:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("acd.api").exception("request failed method=%s path=%s", "POST", "/v1/calls/01099998888/answer")
    finally:
        configure("warning")
    line = stream.getvalue()
    assert "path=/v1/calls/*******8888/answer" in line and "01099998888" not in line
