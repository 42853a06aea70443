"""Operator and test tools on top of the ground layers. The layers (core, store, node, API,
replication) never import this package; only the command lines (`acd.cli`, `replication.cli`) do.

`demo`, `drill` and `backup` are `acd` subcommands; `launcher` runs a local cluster as real
processes (the demo, drills, load tests, benchmarks and process-level tests use it); `client`
follows the writable primary with one retry decision (`client.retry_decision`, also used by the
Locust client); `proxy` is a cuttable TCP link for fault tests; `identity` checks that an
address answers for the configured cluster and node before a command writes or signals.
"""
