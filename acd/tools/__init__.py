"""Operator and test tools built on the ground layers, never imported by them.

`demo`, `drill` and `backup` are `acd` subcommands; `launcher` runs a local cluster as real
processes (the demo, drills, load tests, benchmarks and process-level tests use it); `client`
follows the writable primary with one retry decision (`client.retry_decision`, also used by the
Locust client); `proxy` is a cuttable TCP link for fault tests; `identity` checks that an
address answers for the configured cluster and node before a command writes or signals.
"""
