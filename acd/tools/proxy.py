"""A small TCP proxy that can cut or stall a link: for fault tests and drills on one host.

Each `LinkProxy` listens on one address and forwards to another. `cut()` closes every open
connection and refuses new ones (a partition); `stall()` keeps connections open but forwards
nothing (a black hole, as a dead switch looks to TCP); `heal()` restores forwarding.
"""

from __future__ import annotations

import socket
import threading

from replication.network import split_address


class LinkProxy:
    def __init__(self, listen: str, target: str) -> None:
        self.listen = listen
        self.target = target
        self.mode = "pass"
        self._lock = threading.Lock()
        self._connections: list[socket.socket] = []
        self._server = socket.create_server(split_address(listen), reuse_port=False)
        self._server.settimeout(0.2)
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name=f"proxy {listen}->{target}", daemon=True)
        self._thread.start()

    def cut(self) -> None:
        with self._lock:
            self.mode = "cut"
            connections, self._connections = self._connections, []
        for connection in connections:
            _close(connection)

    def stall(self) -> None:
        self.mode = "stall"

    def heal(self) -> None:
        self.mode = "pass"

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._server.close()
        self._thread.join(timeout=2)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except (TimeoutError, OSError):
                continue
            if self.mode == "cut":
                _close(client)
                continue
            try:
                upstream = socket.create_connection(split_address(self.target), timeout=1.0)
            except OSError:
                _close(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._connections += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                while self.mode == "stall":
                    threading.Event().wait(0.05)
                if self.mode == "cut":
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            _close(source)
            _close(sink)


def _close(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    connection.close()
