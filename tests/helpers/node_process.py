"""Run a node as a subprocess on free loopback ports, the way an operator runs it.

    node = NodeProcess(tmp_path)          # a config from examples/standalone.toml, data in tmp_path
    node.start()                          # `python -m acd serve ...`, waits for /healthz
    httpx.get(node.url + "/v1/stats")
    node.kill()                           # SIGKILL; node.stop() is SIGTERM and a clean exit

The process is started and stopped by the project's one launcher (`acd.tools.launcher.spawn`
and `stop`), as the local clusters of the tools are. Nothing here sleeps to wait for something:
`wait_until` polls a condition against a deadline and fails with what it last saw.
"""

from __future__ import annotations

import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from acd.tools import launcher
from acd.tools.launcher import free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "standalone.toml"


def child_environment() -> dict[str, str]:
    """The environment of node subprocesses: compiled modules cached outside the work tree.

    `make test` sets PYTHONDONTWRITEBYTECODE (no .pyc files in the tree), which makes every
    node start compile the project's modules again; the tests start dozens of nodes, so they
    cache the bytecode under the temporary directory instead.
    """
    env = launcher.child_environment(PYTHONPYCACHEPREFIX=str(Path(tempfile.gettempdir()) / "acd-test-pycache"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def wait_until(condition: Callable[[], Any], *, timeout: float = 10.0, interval: float = 0.02, what: str = "condition") -> Any:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = condition()
        except Exception as error:  # noqa: BLE001 - keep polling, report the last failure
            last = error
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout} s (last: {last!r})")
        time.sleep(interval)


def as_(node: NodeProcess, token: str | None) -> httpx.Client:
    """An HTTP client for `node` that sends `token` as a bearer token (none: anonymous)."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=node.url, headers=headers, timeout=10)


def node_config(
    data_dir: Path, port: int, *, cluster: str = "standalone", store: dict[str, Any] | None = None,
    limits: dict[str, Any] | None = None, tokens: list[dict[str, str]] | None = None, extra: str = "",
) -> str:
    """examples/standalone.toml with this port, data directory and extra sections."""
    text = EXAMPLE.read_text(encoding="utf-8")
    text = re.sub(r'(?m)^api = ".*"$', f'api = "127.0.0.1:{port}"', text, count=1)
    text = re.sub(r'(?m)^data_dir = ".*"$', f'data_dir = "{data_dir}"', text, count=1)
    text = re.sub(r'(?m)^name = "standalone"$', f'name = "{cluster}"', text, count=1)
    sections = []
    for name, values in (("store", store), ("limits", limits)):
        if values:
            body = "\n".join(f"{key} = {_toml(value)}" for key, value in values.items())
            sections.append(f"[{name}]\n{body}\n")
    for token in tokens or []:
        body = "\n".join(f"{key} = {_toml(value)}" for key, value in token.items())
        sections.append(f"[[tokens]]\n{body}\n")
    return text + "\n" + "\n".join(sections) + extra


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


class NodeProcess:
    """One `acd serve` subprocess with its config file and data directory under `directory`."""

    def __init__(self, directory: Path, *, port: int | None = None, log_level: str = "warning", **config: Any) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.directory / "data"
        self.port = port or free_port()
        self.config_path = self.directory / "node.toml"
        self.log_path = self.directory / "node.log"
        self.log_level = log_level
        self.config = config
        self.write_config()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_config(self, **changes: Any) -> None:
        self.config.update(changes)
        self.config_path.write_text(node_config(self.data_dir, self.port, **self.config), encoding="utf-8")

    def command(self, *args: str) -> list[str]:
        return launcher.acd_command(list(args))

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start the process without waiting for it to serve."""
        assert self.process is None or self.process.poll() is not None, "already running"
        self.process = launcher.spawn(
            self.command("serve", "--config", str(self.config_path), "--node", "a", "--log-level", self.log_level),
            self.log_path, env=child_environment(), cwd=ROOT,
        )
        return self.process

    def start(self, timeout: float = 15.0) -> NodeProcess:
        process = self.spawn()

        def healthy() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"the node exited with {process.returncode}:\n{self.log_tail()}")
            try:
                return httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200
            except httpx.TransportError:
                return False

        deadline = time.monotonic() + timeout
        while not healthy():
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"the node did not answer /healthz within {timeout} s:\n{self.log_tail()}")
            time.sleep(0.02)
        return self

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as in a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self._reap()

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait for a clean exit; returns the exit code (fails when it had to be
        killed after `timeout`)."""
        if self.process is None:
            return 0
        running = self.process.poll() is None
        code = launcher.stop(self.process, timeout)
        if running and code == -signal.SIGKILL:
            raise TimeoutError(f"the node did not exit within {timeout} s of SIGTERM:\n{self.log_tail()}")
        return code

    def wait(self, timeout: float = 15.0) -> int:
        """Wait for the process to exit by itself (after a signal already sent); its exit code."""
        assert self.process is not None
        self.process.wait(timeout)
        return self._reap()

    def _reap(self) -> int:
        return self.process.wait() if self.process is not None else 0

    def run_cli(self, *args: str, timeout: float = 30.0, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args), cwd=ROOT, capture_output=True, text=True, timeout=timeout, input=input, env=child_environment(),
        )

    def serve_once(self, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
        """Run `acd serve` expecting it to refuse to start; returns its exit code and output."""
        return self.run_cli("serve", "--config", str(self.config_path), "--node", "a", timeout=timeout)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> NodeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


def assert_refused_before_start(command: list[str], tmp_path: Path, message: str) -> None:
    """`command` (with `{bad}`: a config file with a wrong type at line 2, and its run folder
    as `--out`) exits 2 with `message` on stderr, no traceback, and creates no run folder."""
    bad = tmp_path / "bad.toml"
    bad.write_text("[cluster]\nname = 3\n", encoding="utf-8")
    out = tmp_path / "out"
    command = [str(bad) if arg == "{bad}" else arg for arg in command]
    completed = subprocess.run([*command, "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert completed.returncode == 2
    assert message in completed.stderr
    assert "Traceback" not in completed.stderr
    assert not out.exists(), "nothing is started for a refused command"
