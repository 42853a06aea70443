"""A reference PBX connector: plays the phone system's side of the ACD over HTTP and the event stream.

It does what docs/pbx.md describes, for a set of agents and their devices:

- callers arrive: the PBX parks each one (music, announcements) and reports it with
  `POST /v1/calls` under an id of its own (the same id on every retry);
- it follows `GET /v1/events` (Server-Sent Events), resuming from the last event id after any
  disconnection, on whichever node answers;
- on `call.offered` it rings the agent's device (here: a short, simulated ring) and reports the
  answer (`/answer`) or, when the device is busy or rings out, `/reject` (which makes the agent
  not ready in the ACD: once the device is free it reports `/v1/agents/{name}/ready`);
- after the conversation it reports `/hangup`, then the agent's `/wrapup`;
- a caller who gives up while parked is reported with `/abandon`;
- every request is retried with the same id and body through a failover: on a connection error
  or `503 not_primary` it follows the `primary` address the node names, or tries the next
  address (a single HAProxy address works the same way);
- at the end it waits until every call it reported is in a final state and prints a summary
  (JSON with `--json`): exit status 0 when every call ended, 1 otherwise.

    python examples/pbx_connector.py --api 127.0.0.1:8120,127.0.0.1:8121 \\
        --agent kim=sip:1001 --agent lee=sip:1002 --queue transport --calls 40 --rate 4

It needs only httpx and trio (both installed with the project).
"""

from __future__ import annotations

import argparse
import json
import random
import ssl
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio

FINAL = {"completed", "abandoned", "transferred", "closed"}


class Unavailable(Exception):
    """No node accepted the request before its deadline."""


@dataclass
class Acd:
    """The ACD's HTTP API behind one or more addresses, with retries through a failover."""

    addresses: list[str]
    client: httpx.AsyncClient
    scheme: str = "http"
    current: int = 0
    retries: int = 0

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None, *, deadline: float = 30.0) -> httpx.Response:
        give_up = time.monotonic() + deadline
        while True:
            address = self.addresses[self.current]
            try:
                response = await self.client.request(method, f"{self.scheme}://{address}{path}", json=body, timeout=3.0)
            except httpx.HTTPError:
                response = None
            if response is not None and response.status_code != 503:
                return response
            # A connection error or 503: the request may or may not have taken effect. Commands
            # are idempotent, so the same request is sent again, to the primary if one is named.
            self.retries += 1
            named = None
            if response is not None:
                try:
                    named = response.json().get("primary")
                except ValueError:
                    named = None
            if named in self.addresses:
                self.current = self.addresses.index(named)
            else:
                self.current = (self.current + 1) % len(self.addresses)
            if time.monotonic() > give_up:
                raise Unavailable(f"{method} {path}: no node accepted it within {deadline} s")
            await trio.sleep(0.1)


@dataclass
class Pbx:
    acd: Acd
    devices: dict[str, str]  # agent name -> device (extension, SIP URI)
    queue: str
    ring_seconds: float = 0.2
    talk_seconds: float = 1.0
    patience_seconds: float = 30.0
    busy_share: float = 0.1
    random: random.Random = field(default_factory=lambda: random.Random(1))
    calls: dict[str, str] = field(default_factory=dict)  # call id -> what the PBX last saw
    answered: set[str] = field(default_factory=set)
    offers: int = 0
    rejects: int = 0
    last_event_id: str = ""
    log: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------ agents

    async def log_in_agents(self) -> None:
        for agent in self.devices:
            for action in ("login", "ready"):
                response = await self.acd.request("POST", f"/v1/agents/{agent}/{action}", {})
                if response.status_code != 200:
                    raise SystemExit(f"agent {agent}: {action} refused: HTTP {response.status_code} {response.text[:200]}")

    # ------------------------------------------------------------------ callers

    async def caller(self, number: int, nursery: trio.Nursery) -> None:
        """One caller: parked by the PBX, reported to the ACD, gone after their patience if not answered."""
        call_id = f"pbx-{int(time.time())}-{number}"
        body = {"id": call_id, "queue": self.queue, "caller": f"010{number:08d}", "channel": "voice"}
        self.calls[call_id] = "reporting"  # its offer may come on the event stream before the reply
        response = await self.acd.request("POST", "/v1/calls", body)
        if response.status_code != 201:
            self.log.append(f"{call_id}: refused: HTTP {response.status_code} {response.text[:200]}")
            self.calls.pop(call_id, None)
            return
        reply = response.json()
        if self.calls.get(call_id) == "reporting":
            self.calls[call_id] = reply["state"]
        # Here a real PBX plays the announcement: position reply["position"], about reply["ewt"] s.
        nursery.start_soon(self.patience, call_id)

    async def patience(self, call_id: str) -> None:
        await trio.sleep(self.patience_seconds * (0.5 + self.random.random()))
        if call_id not in self.answered and self.calls.get(call_id) not in FINAL:
            response = await self.acd.request("POST", f"/v1/calls/{call_id}/abandon", {})
            if response.status_code == 200:
                self.calls[call_id] = response.json()["state"]

    # ------------------------------------------------------------------ the agents' devices

    async def ring(self, call_id: str, agent: str) -> None:
        """Ring the agent's device; report the answer or the refusal; then talk, hang up, wrap up."""
        device = self.devices[agent]
        self.offers += 1
        await trio.sleep(self.ring_seconds)  # a real PBX rings `device` here
        if self.random.random() < self.busy_share:
            # The device is busy with a call the ACD does not route (a private one). Refusing
            # the offer makes the agent not ready in the ACD; once the device is free again
            # the PBX says so, or every busy agent would be lost to the queue for good.
            self.rejects += 1
            await self.acd.request("POST", f"/v1/calls/{call_id}/reject", {"agent": agent})
            await trio.sleep(self.talk_seconds)
            response = await self.acd.request("POST", f"/v1/agents/{agent}/ready", {})
            if response.status_code != 200:
                self.log.append(f"{agent}: ready after a busy device refused: {response.text[:120]}")
            return
        response = await self.acd.request("POST", f"/v1/calls/{call_id}/answer", {"agent": agent})
        if response.status_code != 200:
            # The offer was withdrawn meanwhile (the caller left, or it rang out): drop the ring.
            self.log.append(f"{call_id}: answer at {device} refused: {response.text[:120]}")
            return
        self.answered.add(call_id)
        self.calls[call_id] = "connected"
        await trio.sleep(self.talk_seconds)
        await self.acd.request("POST", f"/v1/calls/{call_id}/hangup", {})
        response = await self.acd.request("POST", f"/v1/calls/{call_id}/wrapup", {"agent": agent, "disposition": "resolved"})
        if response.status_code == 200:
            self.calls[call_id] = response.json()["state"]

    # ------------------------------------------------------------------ the event stream

    async def follow_events(self, nursery: trio.Nursery) -> None:
        """Read /v1/events forever, resuming after the last event id on any node."""
        ringing: set[tuple[str, str]] = set()
        while True:
            address = self.acd.addresses[self.acd.current]
            headers = {"last-event-id": self.last_event_id} if self.last_event_id else {}
            try:
                async with self.acd.client.stream("GET", f"{self.acd.scheme}://{address}/v1/events", headers=headers,
                                                  timeout=httpx.Timeout(5.0, read=30.0)) as response:
                    if response.status_code != 200:
                        raise httpx.HTTPError(f"HTTP {response.status_code}")
                    event, data, event_id = "", "", ""
                    async for line in response.aiter_lines():
                        if line.startswith("id:"):
                            event_id = line[3:].strip()
                        elif line.startswith("event:"):
                            event = line[6:].strip()
                        elif line.startswith("data:"):
                            data = line[5:].strip()
                        elif line == "":
                            if event_id:
                                self.last_event_id = event_id
                            if event == "stream.closed":
                                break
                            if event and data:
                                self.on_event(event, json.loads(data), ringing, nursery)
                            event, data = "", ""
            except (httpx.HTTPError, ValueError):
                pass
            self.acd.current = (self.acd.current + 1) % len(self.acd.addresses)
            await trio.sleep(0.2)

    def on_event(self, event: str, data: dict[str, Any], ringing: set[tuple[str, str]], nursery: trio.Nursery) -> None:
        call_id = data.get("call", "")
        if call_id not in self.calls:
            return  # another PBX's call, or a call-back this connector did not create
        if event == "call.offered" and data.get("agent") in self.devices:
            key = (call_id, data["agent"])
            if key not in ringing and call_id not in self.answered:
                ringing.add(key)
                nursery.start_soon(self.ring, call_id, data["agent"])
        elif event == "call.offer_withdrawn":
            ringing.discard((call_id, data.get("agent", "")))  # a new offer to the same agent rings again
        elif event in ("call.abandoned", "call.closed", "call.transferred", "call.wrapped_up"):
            self.calls[call_id] = {"call.abandoned": "abandoned", "call.closed": "closed",
                                   "call.transferred": "transferred", "call.wrapped_up": "completed"}[event]

    # ------------------------------------------------------------------ the end

    async def settle(self, timeout: float) -> dict[str, int]:
        """Wait until every call the PBX reported is in a final state (read back from the ACD)."""
        deadline = time.monotonic() + timeout
        while True:
            states: dict[str, int] = {}
            for call_id in self.calls:
                response = await self.acd.request("GET", f"/v1/calls/{call_id}")
                state = response.json().get("state", "unknown") if response.status_code == 200 else "missing"
                self.calls[call_id] = state
                states[state] = states.get(state, 0) + 1
            if set(states) <= FINAL or time.monotonic() > deadline:
                return states
            await trio.sleep(0.5)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    devices = dict(pair.split("=", 1) for pair in args.agent)
    verify = ssl.create_default_context(cafile=args.ca) if args.ca else True
    async with httpx.AsyncClient(verify=verify, headers={"authorization": f"Bearer {args.token}"} if args.token else {},
                                 limits=httpx.Limits(max_connections=100)) as client:
        acd = Acd(addresses=args.api.split(","), client=client, scheme="https" if args.ca else "http")
        pbx = Pbx(acd=acd, devices=devices, queue=args.queue, ring_seconds=args.ring, talk_seconds=args.talk,
                  patience_seconds=args.patience, random=random.Random(args.seed))
        if args.login:
            await pbx.log_in_agents()
        started = time.monotonic()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pbx.follow_events, nursery)
            async with trio.open_nursery() as callers:
                for number in range(args.calls):
                    callers.start_soon(pbx.caller, number, callers)
                    await trio.sleep(pbx.random.expovariate(args.rate))
            states = await pbx.settle(args.settle)
            nursery.cancel_scope.cancel()
        return {
            "calls": len(pbx.calls), "final_states": states, "all_final": set(states) <= FINAL and len(pbx.calls) == args.calls,
            "offers_rung": pbx.offers, "rejected_busy": pbx.rejects, "retries": acd.retries,
            "seconds": round(time.monotonic() - started, 1), "notes": pbx.log[:20],
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pbx_connector", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--api", required=True, metavar="ADDR[,ADDR]", help="HAProxy's address, or every node's API address")
    parser.add_argument("--agent", action="append", required=True, metavar="NAME=DEVICE", help="an agent and its device (repeat)")
    parser.add_argument("--queue", required=True, help="the queue the callers ask for")
    parser.add_argument("--calls", type=int, default=20, help="callers to place (default: %(default)s)")
    parser.add_argument("--rate", type=float, default=2.0, help="callers per second (default: %(default)s)")
    parser.add_argument("--ring", type=float, default=0.2, metavar="SECONDS", help="ring time before an answer (default: %(default)s)")
    parser.add_argument("--talk", type=float, default=1.0, metavar="SECONDS", help="conversation length (default: %(default)s)")
    parser.add_argument("--patience", type=float, default=30.0, metavar="SECONDS", help="mean time a caller waits (default: %(default)s)")
    parser.add_argument("--settle", type=float, default=120.0, metavar="SECONDS", help="how long to wait for every call to end")
    parser.add_argument("--login", action="store_true", help="log the agents in and make them ready first")
    parser.add_argument("--token", default="", help="a pbx token (an admin token with --login)")
    parser.add_argument("--ca", default="", metavar="FILE", help="the CA of an API served over HTTPS")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    if args.calls < 1 or args.rate <= 0 or "=" not in "".join(args.agent):
        parser.error("--calls >= 1, --rate > 0 and --agent NAME=DEVICE are needed")
    try:
        summary = trio.run(run, args)
    except Unavailable as error:
        print(f"pbx_connector: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{summary['calls']} calls, final states {summary['final_states']}, {summary['offers_rung']} offers rung, "
              f"{summary['retries']} retried requests, {summary['seconds']} s")
    return 0 if summary["all_final"] else 1


if __name__ == "__main__":
    sys.exit(main())
