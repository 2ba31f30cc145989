"""Reading the plan a run starts from, and the dry run that only prints it."""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter

from . import db
from .clock import Deadline
from .errors import ConfigError
from .outcome import RunFacts, RunResult, decide
from .plan import Plan, build_plan, stream_connected
from .settings import Settings

log = logging.getLogger(__name__)

DRY_RUN_LISTED_JOBS = 1000


def read_plan(conn, settings: Settings) -> Plan:
    """Read the connected clients and plan the jobs; exit 3 when no --client is connected."""
    db.require_credentials_table(conn)
    plan = build_plan(stream_connected(conn, settings.clients), settings)
    if plan.unknown_clients and len(plan.unknown_clients) == len(settings.clients):
        raise ConfigError(
            "none of the clients given with --client has a connected credential: "
            + ", ".join(plan.unknown_clients),
            hint="check the ids (`analytics-refresh status` lists every connected one)",
        )
    for client_id in plan.unknown_clients:
        log.warning(
            "⚠️ --client %s has no connected credential in client_api_credentials: "
            "nothing to refresh for it",
            client_id,
        )
    log.info("Found %d active clients for analytics refresh", plan.client_count)
    log.info(
        "Processing %d clients × %d platforms = %d refresh jobs",
        plan.client_count,
        len(plan.platforms),
        len(plan.jobs),
    )
    return plan


def dry_run(settings: Settings, deadline: Deadline) -> RunResult:
    """Plan the jobs and print them, one a line, then the count; call nothing."""
    started = time.time()
    url = db.database_url(settings)
    with db.connection(url, deadline=deadline) as conn:
        plan = read_plan(conn, settings)
    out = sys.stdout if sys.stdout is not None else None
    # Every job in the log too, for a plan a person reads; past that, 300,000 lines would
    # cost seconds for nothing, so they go to debug (-v).
    level = logging.INFO if len(plan.jobs) <= DRY_RUN_LISTED_JOBS else logging.DEBUG
    logged = log.isEnabledFor(level)
    for job in plan.jobs:
        line = f"DRY RUN - would refresh {job}"
        if out is not None:
            out.write(line + "\n")
        if logged:
            log.log(level, line, extra={"file_only": True})  # stdout has them already
    if out is not None:
        out.write(f"DRY RUN - {len(plan.jobs)} jobs planned, none called\n")
        out.flush()
    log.info("DRY RUN - %d jobs planned, none called", len(plan.jobs), extra={"file_only": True})
    return RunResult.ended(
        None,
        decide(RunFacts()),
        counts=Counter(planned=len(plan.jobs)),
        started_at=started,
        finished_at=time.time(),
    )
