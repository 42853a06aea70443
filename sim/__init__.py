"""The simulator: the real routing core on virtual time, for capacity planning.

    python -m sim mmc --arrivals-per-hour 360 --aht 180 --agents 20 --json   # against Erlang C
    python -m sim day busan-weekday --out out/busan-weekday                 # a 2,000-call day
    python -m sim staff busan-weekday --target 0.8/20                       # agents per interval

Layout: `workload` (scenarios, call and agent models), `engine` (the event loop driving
`acd.core.Center`, M/M/c runs, staffing), `report` (tables, JSON, CSV, charts), `erlang`
(queueing theory), `simpy_baseline` (a bare M/M/c queue in SimPy, for speed comparison).
"""
