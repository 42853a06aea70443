"""The cluster a simulation runs: the sample center of `examples/busan-120.toml`, two nodes, a witness.

Only what the simulation must change is changed: data directories (a scratch directory per
run), the replication mode and failover timeout a scenario asks for, a small store (so that
snapshots and log retention happen within minutes), state comparisons every 5 records (the
divergence alarm), and every calendar always open (a run
may last longer than the sample center's opening hours; the wall clock starts on a weekday
morning anyway). Addresses stay as they are: they are names on the simulated network.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from acd import settings as settings_module
from acd.settings import Settings

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "busan-120.toml"


@functools.lru_cache(maxsize=64)
def cluster_settings(data_root: str, *, mode: str = "sync", failover_timeout: float = 1.5,
                     snapshot_every_records: int = 200, retention_records: int = 0,
                     compare_state_every_records: int = 5) -> Settings:
    text = SAMPLE.read_text(encoding="utf-8")
    text = re.sub(r'^mode = "[a-z]+"', f'mode = "{mode}"', text, count=1, flags=re.MULTILINE)
    text = re.sub(r"^failover_timeout = [0-9.]+", f"failover_timeout = {failover_timeout}", text, count=1, flags=re.MULTILINE)
    # The divergence alarm compares often here (inline, no fork in the simulator): under every
    # fault of a run, an alarm would be a false one (the runner counts it as a violation).
    text = re.sub(r"^(failover_timeout = .*)$", rf"\1\ncompare_state_every_records = {compare_state_every_records}", text, count=1, flags=re.MULTILINE)
    text = re.sub(r'^data_dir = "data/([a-z]+)"', lambda match: f'data_dir = "{data_root}/{match[1]}"', text, flags=re.MULTILINE)
    text = re.sub(r"^\[\[calendars\]\]\n", "[[calendars]]\nalways_open = true\n", text, flags=re.MULTILINE)
    store = (
        "[store]\n"
        f"map_size_bytes = {4 * 2**20}\n"
        f"map_size_max_bytes = {256 * 2**20}\n"
        f"snapshot_every_records = {snapshot_every_records}\n"
        f"retention_records = {retention_records}\n"
        "batch_records_max = 64\n\n"
    )
    text = text.replace("\n[center]\n", "\n" + store + "[center]\n", 1)
    return settings_module.loads(text, str(Path(data_root) / "cluster.toml"))
