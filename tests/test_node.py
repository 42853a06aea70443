"""The durable node in-process: group commit, restart, snapshots and truncation, a full store."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from acd.core import Rejection, commands
from acd.node.node import Accepted, Node
from acd.node.snapshots import CAN_FORK
from acd.node.verify import verify
from acd.settings import Settings
from tests.helpers.inprocess import running_node, write_settings


def arrive(number: int, queue: str = "general", **extra: object) -> commands.Arrive:
    return commands.Arrive(id=f"call-{number}", queue=queue, caller=f"0105555{number:04d}", **extra)  # type: ignore[arg-type]


def batch_totals(node: Node) -> tuple[float, float]:
    histogram = node.metrics.batch_records
    samples = {sample.name: sample.value for metric in histogram.collect() for sample in metric.samples}
    return samples["acd_commit_batch_records_sum"], samples["acd_commit_batch_records_count"]


def test_one_client_commits_one_command_per_batch(tmp_path: Path) -> None:
    settings = write_settings(tmp_path)

    async def main() -> None:
        async with running_node(settings) as running:
            before = batch_totals(running.node)
            for number in range(20):
                result = await running.node.submit(arrive(number))
                assert isinstance(result, Accepted)
            total, count = batch_totals(running.node)
            # A tick may ride along with a command; each batch still holds one client command.
            assert count - before[1] == 20
            assert total - before[0] <= 21

    trio.run(main)


def test_concurrent_clients_share_durable_commits(tmp_path: Path) -> None:
    settings = write_settings(tmp_path)
    clients = 64

    async def main() -> None:
        async with running_node(settings) as running:
            node = running.node
            before_total, before_count = batch_totals(node)
            results: list[Accepted | Rejection] = []

            async def client(number: int) -> None:
                results.append(await node.submit(arrive(number)))

            async with trio.open_nursery() as nursery:
                for number in range(clients):
                    nursery.start_soon(client, number)
            total, count = batch_totals(node)
            assert all(isinstance(result, Accepted) for result in results)
            assert total - before_total >= clients
            # 64 commands in far fewer commits: the batch grows while a commit runs.
            assert count - before_count <= clients // 4
            # Every acknowledged write has its own LSN, and the store holds them all.
            lsns = sorted(result.lsn for result in results if isinstance(result, Accepted))
            assert len(set(lsns)) == clients
            assert node.store.last_lsn() == node.lsn >= lsns[-1]

    trio.run(main)


def test_acknowledged_writes_survive_a_restart_with_the_same_state(tmp_path: Path) -> None:
    settings = write_settings(tmp_path)
    digest: dict[str, object] = {}

    async def write() -> None:
        async with running_node(settings) as running:
            node = running.node
            await node.submit(commands.Login(agent="kim"))
            await node.submit(commands.Ready(agent="kim"))
            for number in range(10):
                await node.submit(arrive(number, queue="transport"))
            await node.submit(commands.Answer(call="call-0", agent="kim"))
            digest.update(lsn=node.lsn, hash=node.center.state_hash())

    async def reopen() -> None:
        node = Node(settings, "a")
        try:
            assert node.lsn == digest["lsn"]
            assert node.center.state_hash() == digest["hash"]
            assert node.center.state.interactions["call-0"].state.value == "connected"
        finally:
            node.close()

    trio.run(write)
    trio.run(reopen)
    report = verify(settings, "a")
    assert report.ok, report.problems
    assert report.full_replay and report.state_hash == digest["hash"]


def _assert_restart_recovers(settings: Settings, digest: dict[str, object]) -> None:
    """A node started again on the data directory has the LSN and state hash in `digest`."""
    node = Node(settings, "a")
    try:
        assert (node.lsn, node.center.state_hash()) == (digest["lsn"], digest["hash"])
    finally:
        node.close()


def test_snapshots_and_log_truncation_keep_the_state(tmp_path: Path) -> None:
    settings = write_settings(tmp_path, store={"snapshot_every_records": 10, "retention_records": 15})
    digest: dict[str, object] = {}

    async def write() -> None:
        async with running_node(settings) as running:
            node = running.node
            for number in range(60):
                assert isinstance(await node.submit(arrive(number)), Accepted)
                if number % 3 == 0:
                    assert isinstance(await node.submit(commands.Abandon(call=f"call-{number}")), Accepted)
            await node.snapshot_settled()
            statistics = node.store.statistics()
            assert statistics.snapshot_lsn > 15
            # Retention pruned the head of the log: it keeps 15 records up to the latest
            # snapshot (snapshots are written in the background, one at a time, so more than
            # 10 records may follow it).
            assert statistics.first_lsn == statistics.snapshot_lsn - 15 + 1
            assert statistics.records == statistics.last_lsn - statistics.first_lsn + 1
            digest.update(lsn=node.lsn, hash=node.center.state_hash())

    trio.run(write)
    _assert_restart_recovers(settings, digest)
    report = verify(settings, "a")
    assert report.ok and not report.full_replay
    assert report.state_hash == digest["hash"]


def test_a_snapshot_is_written_in_the_background_while_commits_go_on(tmp_path: Path) -> None:
    import threading

    settings = write_settings(tmp_path, store={"snapshot_every_records": 10})
    digest: dict[str, object] = {}

    async def write() -> None:
        async with running_node(settings) as running:
            node = running.node
            release = threading.Event()
            original = node._write_snapshot
            taken: list[int] = []

            def held_write(lsn: int, epoch: int, at: float, state: bytes | None, encoded: memoryview | None = None) -> int:
                taken.append(lsn)
                release.wait(10)  # the disk is slow: the write's worker thread waits here
                return original(lsn, epoch, at, state, encoded)

            node._write_snapshot = held_write  # type: ignore[method-assign]
            number = 0
            while not taken:
                assert isinstance(await node.submit(arrive(number)), Accepted)
                number += 1
                await trio.sleep(0)
            with trio.fail_after(5):  # with the write held, commits still go on
                for more in range(number, number + 25):
                    assert isinstance(await node.submit(arrive(more)), Accepted)
            assert taken == [taken[0]] and node.store.statistics().snapshot_lsn < taken[0]  # one at a time, not written yet
            release.set()
            await node.snapshot_settled()
            assert node.store.statistics().snapshot_lsn >= taken[0]
            assert node.store.latest_snapshot() is not None
            digest.update(lsn=node.lsn, hash=node.center.state_hash())

    trio.run(write)
    _assert_restart_recovers(settings, digest)


def test_the_periodic_snapshot_is_encoded_by_a_forked_child_and_a_failed_child_skips_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import os

    from acd.node import snapshots

    settings = write_settings(tmp_path, store={"snapshot_every_records": 10})
    forked: list[int] = []
    real_fork_encoder = snapshots.fork_encoder

    def recording_fork_encoder(center: object, **position: object) -> snapshots.EncodingChild:
        child = real_fork_encoder(center, **position)  # type: ignore[arg-type]
        forked.append(child.pid)
        return child

    monkeypatch.setattr(snapshots, "fork_encoder", recording_fork_encoder)
    real_encode = snapshots._encode_and_exit
    monkeypatch.setattr(snapshots, "_encode_and_exit", lambda center, read_fd, write_fd, **position: os._exit(3))  # the child fails
    digest: dict[str, object] = {}

    async def write() -> None:
        async with running_node(settings) as running:
            node = running.node
            assert node.snapshot_fork == snapshots.CAN_FORK
            number = 0
            while not forked:
                assert isinstance(await node.submit(arrive(number)), Accepted)
                number += 1
            await node.snapshot_settled()
            assert node.store.latest_snapshot() is None  # skipped, and the node goes on
            assert "ended with exit code 3" in caplog.text
            monkeypatch.setattr(snapshots, "_encode_and_exit", real_encode)
            while len(forked) < 2:
                assert isinstance(await node.submit(arrive(number)), Accepted)
                number += 1
            await node.snapshot_settled()
            snapshot = node.store.latest_snapshot()
            assert snapshot is not None and snapshot.lsn > 10
            digest.update(lsn=node.lsn, hash=node.center.state_hash())

    if not snapshots.CAN_FORK:
        pytest.skip("this platform cannot fork")
    trio.run(write)
    _assert_restart_recovers(settings, digest)  # the child's snapshot plus the log = the state
    report = verify(settings, "a")
    assert report.ok and report.state_hash == digest["hash"]


def _full_store_settings(tmp_path: Path) -> Settings:
    # The smallest map the config allows, and a snapshot interval too long to matter.
    return write_settings(tmp_path, store={"map_size_bytes": 2**20, "map_size_max_bytes": 2**20, "snapshot_every_records": 100_000})


def _bulky(number: int) -> dict[str, object]:
    return {"id": f"bulky-{number}", "queue": "general", "caller": "01012345678",
            "attributes": {f"note{index}": "x" * 200 for index in range(40)}}


def test_full_store_refuses_writes_with_507_keeps_reads_and_recovers(tmp_path: Path) -> None:
    settings = _full_store_settings(tmp_path)
    digest: dict[str, object] = {}

    async def main() -> None:
        async with running_node(settings) as running:
            client, node = running.client, running.node
            accepted = []
            for number in range(200):
                response = await client.post("/v1/calls", json=_bulky(number))
                if response.status_code == 507:
                    break
                assert response.status_code == 201, response.text
                accepted.append(number)
            else:
                pytest.fail("the 1 MiB store never filled up")
            assert response.json()["error"] == "storage_full"
            lsn = node.lsn
            # Nothing of the refused batch was applied; reads keep working.
            assert f"bulky-{number}" not in node.center.state.interactions
            assert (await client.get(f"/v1/calls/bulky-{accepted[-1]}")).status_code == 200
            assert (await client.get("/v1/stats")).status_code == 200
            assert (await client.post("/v1/calls", json=_bulky(number + 1))).status_code == 507
            assert node.lsn == lsn == node.store.last_lsn()
            # Room again: the operator raises the limit and reloads the config; writes work.
            write_settings(tmp_path, store={"map_size_bytes": 2**20, "map_size_max_bytes": 16 * 2**20, "snapshot_every_records": 100_000})
            reloaded = await client.post("/v1/config/reload")
            assert reloaded.status_code == 200 and reloaded.json()["changed"] is False
            response = await client.post("/v1/calls", json=_bulky(number))
            assert response.status_code == 201, response.text
            assert (await client.post("/v1/agents/kim/login")).status_code == 200
            digest.update(lsn=node.lsn, hash=node.center.state_hash())

    trio.run(main)
    report = verify(settings, "a")
    assert report.ok, report.problems
    assert (report.lsn, report.state_hash) == (digest["lsn"], digest["hash"])


def test_storage_full_does_not_replay_events_to_stream_readers(tmp_path: Path) -> None:
    settings = _full_store_settings(tmp_path)

    async def main() -> None:
        async with running_node(settings) as running:
            client, node = running.client, running.node
            subscription = node.broker.subscribe(node.lsn)
            seen = []
            for number in range(200):
                response = await client.post("/v1/calls", json=_bulky(number))
                while True:
                    try:
                        seen.append(subscription.receive.receive_nowait())
                    except trio.WouldBlock:
                        break
                if response.status_code == 507:
                    break
            assert response.status_code == 507
            lsns = [item.lsn for item in seen]
            assert lsns == sorted(lsns)
            assert max(lsns) == node.lsn
            assert len({(item.lsn, repr(item.event)) for item in seen}) == len(seen)  # nothing repeated

    trio.run(main)


def test_refused_command_is_not_logged(tmp_path: Path) -> None:
    settings = write_settings(tmp_path)

    async def main() -> None:
        async with running_node(settings) as running:
            node = running.node
            lsn = node.lsn
            result = await node.submit(commands.Answer(call="nobody", agent="kim"))
            assert isinstance(result, Rejection) and result.code == "unknown_call"
            assert node.store.last_lsn() == lsn

    trio.run(main)


def test_gc_pauses_are_timed_by_generation_while_installed() -> None:
    import gc

    from acd.node.metrics import GcPauses, NodeMetrics

    metrics = NodeMetrics("a")
    pauses = GcPauses(metrics)

    def count(generation: str) -> float:
        return metrics.registry.get_sample_value("acd_gc_pause_seconds_count", {"generation": generation}) or 0.0

    pauses.install()
    try:
        gc.collect(2)
        gc.collect(0)
    finally:
        pauses.remove()
    assert count("2") >= 1 and count("0") >= 1
    assert (metrics.registry.get_sample_value("acd_gc_pause_seconds_sum", {"generation": "2"}) or 0.0) > 0
    before = count("2")
    gc.collect(2)
    assert count("2") == before, "removed: no longer timed"
    assert pauses not in gc.callbacks


@pytest.mark.skipif(not CAN_FORK, reason="the snapshot child is forked where fork exists")
def test_a_snapshot_child_lets_go_of_the_store_lock_before_it_slows_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node killed while its snapshot child runs must be able to start again at once: the
    child closes the store's descriptors (and with them its share of the store's lock) before
    it lowers its priority, which on a busy machine can keep it off the CPU for a long while."""
    import os
    import select
    import time

    from acd.core import Center
    from acd.node import snapshots
    from acd.store import Store, StoreError

    # The child says when it reaches its slow part through a named pipe (it closes every
    # descriptor it inherited before that). The test's end is opened for reading and writing:
    # that open never blocks and never sees an end of file, so it waits for the child's byte.
    reached = tmp_path / "slow-part"
    os.mkfifo(reached)
    signal_end = os.open(reached, os.O_RDWR)

    def slow_child() -> None:
        announce = os.open(reached, os.O_WRONLY)
        os.write(announce, b"!")
        os.close(announce)
        time.sleep(3.0)  # a niced child starved of CPU

    monkeypatch.setattr(snapshots, "_stay_out_of_the_way", slow_child)

    path = tmp_path / "data"
    store = Store(path, cluster="c", node="a")
    child = snapshots.fork_encoder(Center(), lsn=1, epoch=1, at=0.0)
    try:
        readable, _, _ = select.select([signal_end], [], [], 30.0)
        assert readable and os.read(signal_end, 1) == b"!", "the child did not reach its slow part"
        store.close()    # the node is gone; only the child could still hold the lock
        try:
            again = Store(path, cluster="c", node="a")
        except StoreError as error:
            raise AssertionError(f"the snapshot child still holds the store: {error}") from None
        again.close()
        assert len(child.collect()) > 0  # and the child still delivers its snapshot
    finally:
        os.close(signal_end)
        try:
            os.kill(child.pid, 9)
        except ProcessLookupError:
            pass
