"""Locust load tests of the real cluster: a center's day, the breaking point, failover under load.

`python -m loadtest run day|stress|soak` starts two nodes and a witness, runs Locust headless in
a subprocess (loadtest/locustfile_acd.py: a PBX, one desk per agent, a supervisor), can kill the
primary part-way, then checks every interaction against the ACD and writes a report. It exits
non-zero when a check fails. loadtest/README.md has the models, the checks and the figures.

Layout: `plan` (the center and the calls, decided in advance), `locustfile_acd` (the users;
imported only by Locust), `runner` (cluster, Locust, failover, reading back), `records`
(journal and timeline files), `checks` (pass/fail), `report` (summary.md, chart.png).
Nothing here except the locustfile imports Locust, and nothing imports Trio.
"""
