"""Helpers shared by the process-level tests (and the API benchmark)."""

from .node_process import NodeProcess, free_port, node_config, wait_until

__all__ = ["NodeProcess", "free_port", "node_config", "wait_until"]
