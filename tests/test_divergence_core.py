"""The divergence alarm's decisions (`replication.core.StateCheck`), without Trio or I/O."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from acd import settings as settings_module
from acd.cli import main
from replication import core
from replication.core import StateCheck

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "busan-120.toml"


def test_equal_hashes_at_the_same_lsn_agree_in_either_order() -> None:
    check = StateCheck()
    assert check.add_mine(100, "a") == []   # the standby's has not come yet
    [outcome] = check.add_theirs([(100, "a")])
    assert (outcome.lsn, outcome.news) == (100, "agree")
    assert check.add_theirs([(200, "b")]) == []
    [outcome] = check.add_mine(200, "b")
    assert outcome.news == "agree"
    assert check.compared == 2 and check.divergences == 0 and not check.diverged
    assert check.mine == {} and check.theirs == {}   # each LSN is compared once


def test_a_different_hash_raises_the_alarm_with_both_hashes() -> None:
    check = StateCheck()
    check.add_mine(300, "primary-hash")
    [outcome] = check.add_theirs([(300, "standby-hash")])
    assert (outcome.lsn, outcome.mine, outcome.theirs, outcome.news) == (300, "primary-hash", "standby-hash", "diverged")
    assert check.diverged and check.diverged_at == 300 and check.divergences == 1
    assert check.rebuild_wanted and check.last == outcome


def test_hashes_of_other_lsns_are_not_compared() -> None:
    check = StateCheck()
    check.add_mine(100, "a")
    assert check.add_theirs([(200, "b")]) == []
    assert check.compared == 0 and not check.diverged


def test_only_the_newest_hashes_wait_for_the_other_side() -> None:
    check = StateCheck()
    for lsn in range(1, core.STATE_HASHES_KEPT + 11):
        check.add_mine(lsn, "x")
    assert len(check.mine) == core.STATE_HASHES_KEPT and min(check.mine) == 11
    assert check.add_theirs([(5, "y")]) == []   # too old: ours is gone, nothing raised
    assert not check.diverged


def test_reports_of_the_diverged_state_count_for_nothing_until_the_rebuild() -> None:
    check = StateCheck()
    check.add_mine(100, "a")
    check.add_theirs([(100, "z")])
    # Before the snapshot is sent, the standby still reports its diverged state.
    check.add_mine(200, "b")
    [outcome] = check.add_theirs([(200, "b")])
    assert outcome.news == "ignored" and check.diverged and check.compared == 1
    check.add_mine(300, "c")
    [outcome] = check.add_theirs([(300, "other")])
    assert outcome.news == "ignored" and check.divergences == 1


def test_the_rebuilt_standby_clears_the_alarm_once_it_agrees_after_the_snapshot() -> None:
    check = StateCheck()
    check.add_mine(100, "a")
    check.add_theirs([(100, "z")])
    check.add_theirs([(150, "stale")])       # reported before the snapshot: dropped by it
    check.rebuilding(140, "snap")
    assert not check.rebuild_wanted and check.diverged
    check.add_mine(150, "d")
    [outcome] = check.add_theirs([(140, "snap")])
    # The snapshot arrived intact; the alarm holds until the standby's own applying agrees.
    assert outcome.news == "rebuilt" and check.diverged and check.diverged_at == 100
    assert check.theirs == {}                # the stale report of 150 went with the rebuild
    [outcome] = check.add_theirs([(150, "d")])
    assert outcome.news == "cleared"
    assert not check.diverged and check.diverged_at is None and check.divergences == 1
    check.add_mine(160, "e")
    [outcome] = check.add_theirs([(160, "e")])
    assert outcome.news == "agree"


def test_a_rebuilt_standby_that_still_differs_raises_it_again() -> None:
    check = StateCheck()
    check.add_mine(100, "a")
    check.add_theirs([(100, "z")])
    check.rebuilding(90, "snap")
    [outcome] = check.add_theirs([(90, "not-snap")])
    assert outcome.news == "diverged" and check.divergences == 2 and check.diverged_at == 90
    assert check.rebuild_wanted   # another rebuild
    check.rebuilding(110, "snap2")
    check.add_theirs([(110, "snap2")])
    check.add_mine(120, "b")
    [outcome] = check.add_theirs([(120, "still-not-b")])   # intact snapshot, but it drifts again
    assert outcome.news == "diverged" and check.divergences == 3 and check.rebuild_wanted


def test_a_report_older_than_the_snapshot_does_not_clear_it() -> None:
    check = StateCheck()
    check.add_mine(100, "a")
    check.add_theirs([(100, "z")])
    check.rebuilding(200, "snap")
    check.add_mine(150, "b")
    [outcome] = check.add_theirs([(150, "b")])
    assert outcome.news == "ignored" and check.diverged


def test_a_rebuild_cut_short_by_the_connection_is_sent_again() -> None:
    check = StateCheck()
    check.add_mine(100, "a")
    check.add_theirs([(100, "z")])
    check.rebuilding(100, "a")
    check.connection_lost()
    assert check.rebuild_wanted
    # Once the standby showed the snapshot installed, a new connection does not send it again.
    check.rebuilding(120, "s")
    check.add_theirs([(120, "s")])
    check.connection_lost()
    assert not check.rebuild_wanted and check.diverged
    healthy = StateCheck()
    healthy.connection_lost()
    assert not healthy.rebuild_wanted and not healthy.diverged


def test_a_new_term_forgets_the_waiting_hashes_but_not_the_alarm() -> None:
    check = StateCheck()
    check.add_mine(100, "a")
    check.add_theirs([(100, "z")])
    check.add_mine(200, "b")
    check.new_term()
    assert check.mine == {} and check.theirs == {} and check.diverged


def test_hashes_of_withdrawn_records_are_forgotten() -> None:
    # The standby acknowledged (and hashed) a batch whose commit then failed on the primary;
    # the primary writes other records at those LSNs.
    check = StateCheck()
    check.add_theirs([(100, "withdrawn"), (50, "kept")])
    check.withdraw(99)
    assert check.theirs == {50: "kept"}
    assert check.add_mine(100, "rewritten") == []
    [outcome] = check.add_theirs([(100, "rewritten")])
    assert outcome.news == "agree" and not check.diverged


def test_the_rebuild_plan_replaces_the_standby_state() -> None:
    plan = core.rebuild_plan()
    assert plan.snapshot and plan.start == -1 and plan.truncate == ()


def test_the_comparison_interval_is_a_checked_config_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert settings_module.load(EXAMPLE).cluster.compare_state_every_records == 5000
    text = EXAMPLE.read_text().replace("[cluster]\n", "[cluster]\ncompare_state_every_records = -1\n", 1)
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    assert main(["config", "check", str(bad)]) == 2
    [problem] = [line for line in capsys.readouterr().err.splitlines() if line.startswith(str(bad))]
    line = text.splitlines().index("compare_state_every_records = -1") + 1
    assert problem.startswith(f"{bad}:{line}: cluster.compare_state_every_records: "), problem
    off = settings_module.loads(text.replace("= -1", "= 0", 1))
    assert off.cluster.compare_state_every_records == 0   # 0: never compared


def test_the_state_hashes_in_append_reply_interoperate_with_a_release_without_them() -> None:
    from replication.protocol import AppendReply, Message

    class OlderAppendReply(Message, tag="append_reply", frozen=True):
        epoch: int
        ok: bool
        last_lsn: int
        lease_granted: bool = False
        reason: str = ""

    newer = AppendReply(epoch=3, ok=True, last_lsn=100, state_hashes=[(100, "ab" * 32)])
    older = msgspec.msgpack.decode(msgspec.msgpack.encode(newer), type=OlderAppendReply)
    assert (older.epoch, older.ok, older.last_lsn) == (3, True, 100)
    from_older = msgspec.msgpack.decode(msgspec.msgpack.encode(older), type=AppendReply)
    assert from_older.state_hashes == [] and from_older.last_lsn == 100
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(newer), type=AppendReply).state_hashes == [(100, "ab" * 32)]
