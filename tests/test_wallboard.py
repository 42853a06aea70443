"""The wallboard (GET /wallboard) in a real browser: headless Chromium, Debian's package.

The test opens the page on a running node, waits until it follows the event stream, creates
calls and changes agents through the API, and checks that the figures on the page follow
without a reload. It saves screenshots before and after under the test's temporary folder
and prints their paths, so a person can look at them.

Chromium is driven over the DevTools protocol (a WebSocket spoken with wsproto, which the
node's own HTTP server already depends on). CI must prove this, not skip it: `make test`
installs Chromium (scripts/system-deps.sh); with CI=true a missing browser fails the test.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import wsproto
import wsproto.events

from acd.tools.launcher import LocalCluster, prepare_config, wait_for
from tests.helpers.tools import system_tool

ROOT = Path(__file__).resolve().parent.parent
WIDTH, HEIGHT = 1920, 1080  # a wall screen




class DevTools:
    """A DevTools-protocol session with one page: call(method, **params) -> result."""

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        self.socket = socket.create_connection((parts.hostname, parts.port), timeout=30)
        self.connection = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        self.socket.sendall(self.connection.send(wsproto.events.Request(host=parts.netloc, target=parts.path)))
        self.sequence = 0
        self.exceptions: list[str] = []
        self._text: list[str] = []
        while not any(isinstance(event, wsproto.events.AcceptConnection) for event in self._events()):
            pass

    def _events(self) -> Iterator[wsproto.events.Event]:
        data = self.socket.recv(1 << 20)
        if not data:
            raise ConnectionError("Chromium closed the DevTools connection")
        self.connection.receive_data(data)
        yield from self.connection.events()

    def _messages(self) -> Iterator[dict[str, Any]]:
        for event in self._events():
            if isinstance(event, wsproto.events.TextMessage):
                self._text.append(str(event.data))
                if event.message_finished:
                    text, self._text = "".join(self._text), []
                    yield json.loads(text)
            elif isinstance(event, wsproto.events.Ping):
                self.socket.sendall(self.connection.send(event.response()))

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.sequence += 1
        sequence = self.sequence
        message = json.dumps({"id": sequence, "method": method, "params": params})
        self.socket.sendall(self.connection.send(wsproto.events.TextMessage(data=message)))
        while True:
            for reply in self._messages():
                if reply.get("method") == "Runtime.exceptionThrown":
                    details = reply["params"]["exceptionDetails"]
                    self.exceptions.append(str(details.get("exception", {}).get("description") or details.get("text")))
                if reply.get("id") == sequence:
                    assert "error" not in reply, (method, reply["error"])
                    return dict(reply.get("result", {}))

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.socket.sendall(self.connection.send(wsproto.events.CloseConnection(code=1000)))
        except (OSError, wsproto.utilities.LocalProtocolError):
            pass
        self.socket.close()


class Browser:
    """Headless Chromium with a fresh profile; `open(url)` gives a DevTools session on a page."""

    def __init__(self, binary: str, workdir: Path) -> None:
        profile = workdir / "chromium-profile"
        profile.mkdir(parents=True)
        self.log = workdir / "chromium.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [
                    binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--no-default-browser-check", "--mute-audio", "--hide-scrollbars", "--force-device-scale-factor=1",
                    f"--window-size={WIDTH},{HEIGHT}", f"--user-data-dir={profile}", "--remote-debugging-port=0",
                    "about:blank",
                ],
                stdout=log, stderr=subprocess.STDOUT,
            )
        # Chromium writes the port it chose into the profile.
        active = profile / "DevToolsActivePort"
        port = wait_for(lambda: self._port(active), 30, interval=0.05, what="Chromium's DevTools port")
        self.endpoint = f"http://127.0.0.1:{port}"
        self.sessions: list[DevTools] = []

    def _port(self, active: Path) -> int | None:
        assert self.process.poll() is None, self.log.read_text(errors="replace")
        try:
            return int(active.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def open(self, url: str) -> DevTools:
        pages = wait_for(
            lambda: [target for target in httpx.get(f"{self.endpoint}/json/list").json() if target["type"] == "page"],
            10, what="a page in Chromium",
        )
        page = DevTools(pages[0]["webSocketDebuggerUrl"])
        self.sessions.append(page)
        page.call("Runtime.enable")
        page.call("Page.enable")
        page.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1, mobile=False)
        page.call("Page.navigate", url=url)
        return page

    def close(self) -> None:
        for session in self.sessions:
            session.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# What the page shows, read from its DOM: the connection state, every [data-figure], and the
# cells of every queue row (only the state while the page is still loading: a document still
# being parsed may have the table but not yet the elements after it).
FIGURES = """document.readyState === "loading" || !document.querySelector("#queues") || !document.querySelector("#message")
  ? '{"state": "not loaded"}' : JSON.stringify({
  state: document.body.dataset.state,
  figures: Object.fromEntries([...document.querySelectorAll("[data-figure]")].map((e) => [e.dataset.figure, e.textContent.trim()])),
  queues: Object.fromEntries([...document.querySelectorAll("#queues tbody tr")].map((row) => [row.dataset.queue,
    Object.fromEntries([...row.querySelectorAll("[data-field]")].map((cell) => [cell.dataset.field, cell.textContent.trim()]))])),
  message: document.querySelector("#message").textContent,
  href: location.href,
})"""


def read(page: DevTools) -> dict[str, Any]:
    return dict(json.loads(page.evaluate(FIGURES)))


def start_cluster(tmp_path: Path) -> LocalCluster:
    """The sample center (examples/busan-120.toml): two nodes and a witness, always open."""
    cluster = LocalCluster(prepare_config(ROOT / "examples" / "busan-120.toml", tmp_path / "cluster", always_open=True), tmp_path / "cluster")
    try:
        cluster.start()
    except BaseException:
        cluster.close()
        raise
    return cluster


def start_node(tmp_path: Path, tokens: str = "", token: str = "") -> LocalCluster:
    """A standalone node (examples/standalone.toml) on free ports, with `tokens` appended."""
    config = prepare_config(ROOT / "examples" / "standalone.toml", tmp_path / "node")
    config.write_text(config.read_text() + tokens)
    cluster = LocalCluster(config, tmp_path / "node")
    if not tokens:
        cluster.start()
        return cluster
    # LocalCluster.start reads /v1/queues without a token; with auth on, wait here instead.
    cluster.start_node("a")
    base = cluster.api("a")
    headers = {"authorization": f"Bearer {token}"}
    wait_for(lambda: cluster.primary() == "a", 20, what="the node to be primary")
    wait_for(lambda: httpx.get(base + "/v1/queues", headers=headers).json(), 20, what="the center's configuration")
    return cluster


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[Browser]:
    browser = Browser(system_tool("chromium", "chromium"), tmp_path)
    try:
        yield browser
    finally:
        browser.close()


def test_wallboard_figures_follow_calls_and_agents_live(tmp_path: Path, chromium: Browser) -> None:
    started = time.monotonic()
    cluster = start_cluster(tmp_path)
    api = httpx.Client(timeout=5)
    try:
        primary = cluster.primary()
        assert primary is not None
        base = cluster.api(primary)
        api.base_url = httpx.URL(base)
        for agent in ("kim", "lee", "park"):
            assert api.post(f"/v1/agents/{agent}/login").status_code == 200
        for agent in ("kim", "lee"):
            assert api.post(f"/v1/agents/{agent}/ready").status_code == 200

        page = chromium.open(base + "/wallboard")
        before = wait_for(
            lambda: (shown := read(page))["state"] == "live" and shown["figures"]["waiting"] == "0" and shown,
            15, interval=0.1, what="the wallboard to load and follow the event stream",
        )
        assert before["figures"]["agents-ready"] == "2" and before["figures"]["agents-not_ready"] == "1"
        assert before["figures"]["agents-logged_out"] == "25"
        assert len(before["queues"]) == 12 and "district" not in before["queues"]  # external queues left out (the drill queue is shown)
        first = page.screenshot(tmp_path / "wallboard-before.png")

        # Calls arrive: two ring at the ready agents, three wait; kim answers.
        for number in range(5):
            response = api.post("/v1/calls", json={"id": f"wall-{number}", "queue": "transport", "caller": f"0105550000{number}"})
            assert response.status_code == 201, response.text
        offered = api.get("/v1/agents/kim").json()["offer"]
        assert api.post(f"/v1/calls/{offered}/answer", json={"agent": "kim"}).status_code == 200
        queue = api.get("/v1/queues/transport").json()
        assert queue["waiting"] == 3

        def followed() -> dict[str, Any] | None:
            shown = read(page)
            figures, row = shown["figures"], shown["queues"]["transport"]
            expected = (figures["waiting"], row["waiting"], figures["agents-busy"], figures["agents-offered"], figures["agents-ready"])
            return shown if expected == ("3", "3", "1", "1", "0") else None

        after = wait_for(followed, 10, interval=0.1, what="the wallboard to show the new calls")
        assert after["state"] == "live" and after["href"] == before["href"]  # no reload
        assert after["figures"]["ringing"] == "1 ringing"
        # The longest wait ticks in the page between events.
        wait_for(lambda: read(page)["queues"]["transport"]["longest-wait"] not in ("–", "0:00"), 5, interval=0.2, what="the longest wait to tick")
        second = page.screenshot(tmp_path / "wallboard-after.png")
        assert page.exceptions == []
        assert first.stat().st_size > 10_000 and second.stat().st_size > 10_000
        assert first.read_bytes() != second.read_bytes()

        # The node that served the page dies: the page says so and dims its figures; the
        # standby takes over; the old node comes back as standby and the page, which may only
        # call its own origin, follows it again and shows what the new primary records.
        cluster.kill(primary)
        wait_for(lambda: read(page)["state"] in ("reconnecting", "offline"), 10, interval=0.1, what="the page to notice its node is gone")
        third = page.screenshot(tmp_path / "wallboard-reconnecting.png")
        survivor = cluster.wait_primary(10, other_than=primary)
        cluster.restart(primary)
        wait_for(lambda: cluster.healthy(cluster.settings.node(primary).api), 20, what=f"{primary} to come back")
        with httpx.Client(base_url=cluster.api(survivor), timeout=5) as new_primary:
            response = new_primary.post("/v1/calls", json={"id": "wall-after-failover", "queue": "transport", "caller": "01055500009"})
            assert response.status_code == 201, response.text
            # The API's figure, not a constant: a ring timeout may have put the ringing call back.
            def waiting_now() -> int:
                return sum(queue["waiting"] for queue in new_primary.get("/v1/queues").json() if not queue["external"])

            wait_for(
                lambda: (shown := read(page))["state"] == "live" and shown["figures"]["waiting"] == str(waiting_now()) and waiting_now() >= 4,
                20, interval=0.1, what="the page to follow the restarted node",
            )
        assert page.exceptions == []
        print(f"wallboard screenshots: {first} {second} {third} ({time.monotonic() - started:.1f} s)")
    finally:
        api.close()
        cluster.close()


def test_wallboard_is_public_and_reads_the_api_with_the_token_from_its_fragment(tmp_path: Path, chromium: Browser) -> None:
    token = "wallboard-test-token"
    node = start_node(tmp_path, tokens=(
        '\n[[tokens]]\nname = "wall"\nrole = "supervisor"\n'
        f'hash = "sha256:{hashlib.sha256(token.encode()).hexdigest()}"\n'
    ), token=token)
    try:
        base = node.api("a")
        page_response = httpx.get(base + "/wallboard")
        assert page_response.status_code == 200 and page_response.headers["content-type"].startswith("text/html")
        assert "connect-src 'self'" in page_response.headers["content-security-policy"]
        assert httpx.get(base + "/v1/stats").status_code == 401

        page = chromium.open(base + "/wallboard")
        refused = wait_for(lambda: (shown := read(page))["state"] == "unauthorized" and shown, 10, interval=0.1, what="the page to ask for a token")
        assert "#token=" in refused["message"]

        page.call("Page.navigate", url=f"{base}/wallboard#token={token}")  # as typed into the address bar
        shown = wait_for(lambda: (shown := read(page))["state"] == "live" and shown, 15, interval=0.1, what="the page to go live with the token")
        assert shown["figures"]["agents-logged_out"] == "5"
        assert token not in shown["href"]  # taken off the address bar, kept in sessionStorage
        page.call("Page.reload")
        wait_for(lambda: read(page)["state"] == "live", 15, interval=0.1, what="a reload to keep the token")
        assert page.exceptions == []
    finally:
        node.close()
