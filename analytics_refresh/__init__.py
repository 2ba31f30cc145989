"""analytics-refresh: keeps every client's dashboard cache fresh.

The runner's layers, each a package; imports point down this list, never up:

    errors, text, clock, logs   the ground: exceptions and exit codes, outside text made
                                plain, the run's deadline, logging set up once
    config/   the settings, read once from the environment and .env, and their rules
    model/    the run's types and pure decisions: how a run ends, the promise, the gate
    store/    PostgreSQL: connections bounded by the client, every statement, the record
    http/     the requests the runner sends: refreshes, heartbeat pings, pushes
    run/      one refresh run: plan, change decisions, order, jobs, the claim on its ground
    listen/   the listener: the run's job path, woken by the database
    ui/       terminal rendering (rich), for the commands a person reads
    ops/      the commands around the run: check, status, metrics, the manual run, the demo
    report/   the freshness report
    cli.py    the commands, each through ops.process, where exceptions become exit codes

The reference API (dashboard_api/) is reached only lazily, by serve, demo and db init.
"""

__version__ = "1.0.0"
