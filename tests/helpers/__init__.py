"""Helpers shared by the process-level tests (and the API benchmark)."""

from .node_process import (
    NodeProcess,
    as_,
    assert_refused_before_start,
    free_port,
    node_config,
    wait_until,
)

__all__ = ["NodeProcess", "as_", "assert_refused_before_start", "free_port", "node_config", "wait_until"]
