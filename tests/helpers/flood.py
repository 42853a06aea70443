"""An idle-connection flood against loopback ports, run as its own process by the port tests.

    python -m tests.helpers.flood --seconds 20 --connections 400 127.0.0.1:9129 127.0.0.1:9120

Keeps up to `--connections` idle TCP connections open to every target (they never send a
byte) and opens a new one for each the server closes, as an attacker would, from `--sources`
loopback addresses in turn (127.0.0.1, 127.0.0.2, ...); prints `ready`
once every target has had that many connections opened, and a summary line when it ends,
after `--seconds` at most.
"""

from __future__ import annotations

import argparse
import errno
import resource
import select
import socket
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--connections", type=int, default=400)
    parser.add_argument("--pause", type=float, default=0.005, help="seconds between rounds of (re)opening")
    parser.add_argument("--sources", type=int, default=1, help="loopback source addresses to connect from")
    parser.add_argument("targets", nargs="+")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    targets = [(host, int(port)) for host, _, port in (target.rpartition(":") for target in args.targets)]
    open_now = dict.fromkeys(targets, 0)
    opened = dict.fromkeys(targets, 0)
    closed_by_server = 0
    sockets: dict[int, tuple[socket.socket, tuple[str, int]]] = {}
    poll = select.poll()
    ready = False
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        for target in targets:
            while open_now[target] < args.connections:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                sock.bind((f"127.0.0.{1 + opened[target] % args.sources}", 0))
                code = sock.connect_ex(target)
                if code not in (0, errno.EINPROGRESS):
                    sock.close()
                    break
                sockets[sock.fileno()] = (sock, target)
                poll.register(sock.fileno(), select.POLLIN | select.POLLHUP | select.POLLERR)
                open_now[target] += 1
                opened[target] += 1
        if not ready and all(count >= args.connections for count in opened.values()):
            ready = True
            print("ready", flush=True)
        for fd, _events in poll.poll(int(args.pause * 1000)):
            sock, target = sockets.pop(fd)
            poll.unregister(fd)
            sock.close()
            open_now[target] -= 1
            closed_by_server += 1
        time.sleep(args.pause)
    print(f"opened={sum(opened.values())} closed_by_server={closed_by_server} open_at_end={sum(open_now.values())}", flush=True)
    for sock, _target in sockets.values():
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
