"""How a run ends: ``outcome.decide`` over every input, and the same answers through main()."""

from __future__ import annotations

import pytest

from analytics_refresh.cli import main
from analytics_refresh.outcome import Ending, RunFacts, decide
from tests.backend import Answer
from tests.conftest import connect_clients, log_lines
from tests.runs import ALICE, BOB

SIGTERM = "received SIGTERM"
DEADLINE = "deadline of 20s reached"
LOST = "the database session holding the run lock was lost"
UNWRITTEN = "1 job records could not be written to refresh_jobs"

# (facts, status, exit code, note): every input alone, and each pair that competes.
TABLE = [
    # jobs only
    (RunFacts(), "succeeded", 0, None),
    (RunFacts(counts={"succeeded": 3}), "succeeded", 0, None),
    (RunFacts(counts={"skipped": 2}), "succeeded", 0, None),
    (RunFacts(counts={"succeeded": 1, "failed": 1}), "partial", 1, None),
    (RunFacts(counts={"skipped": 1, "failed": 1}), "partial", 1, None),
    (RunFacts(counts={"failed": 2}), "failed", 1, None),
    (
        RunFacts(counts={"succeeded": 1, "not_attempted": 2}),
        "interrupted",
        6,
        "2 jobs not attempted",
    ),
    # a stop: it interrupts only when it kept a job from starting or from its retry
    (RunFacts(counts={"succeeded": 2}, stop_reason=SIGTERM), "succeeded", 0, SIGTERM),
    (RunFacts(counts={"failed": 1}, stop_reason=SIGTERM), "failed", 1, SIGTERM),
    (
        RunFacts(counts={"failed": 1}, stop_reason=SIGTERM, cut_short=True),
        "interrupted",
        6,
        SIGTERM,
    ),
    (
        RunFacts(counts={"succeeded": 1, "not_attempted": 1}, stop_reason=DEADLINE, cut_short=True),
        "interrupted",
        6,
        DEADLINE,
    ),
    (RunFacts(counts={"succeeded": 1}, stop_reason=DEADLINE), "succeeded", 0, DEADLINE),
    # a lost lock interrupts even with every job done
    (RunFacts(counts={"succeeded": 2}, stop_reason=LOST, lock_lost=True), "interrupted", 6, LOST),
    (RunFacts(counts={"failed": 2}, stop_reason=LOST, lock_lost=True), "interrupted", 6, LOST),
    # records that could not be written outrank every job outcome and the lost lock
    (
        RunFacts(counts={"succeeded": 2}, unrecorded=1),
        "failed",
        4,
        "1 job records could not be written to refresh_jobs",
    ),
    (
        RunFacts(counts={"failed": 1}, stop_reason=LOST, lock_lost=True, unrecorded=3),
        "failed",
        4,
        "3 job records could not be written to refresh_jobs",
    ),
    # an error that ended the run early outranks everything
    (RunFacts(error_code=4, error_note="database error: x"), "failed", 4, "database error: x"),
    (RunFacts(error_code=3, error_note="bad"), "failed", 3, "bad"),
    (RunFacts(error_code=1, error_note="bug"), "failed", 1, "bug"),
    (RunFacts(error_code=5, error_note="held"), "skipped", 5, "held"),
    (RunFacts(error_code=6, error_note=DEADLINE), "interrupted", 6, DEADLINE),
    (
        RunFacts(counts={"succeeded": 1}, unrecorded=2, error_code=6, error_note=SIGTERM),
        "interrupted",
        6,
        SIGTERM,
    ),
    (RunFacts(counts={"failed": 1}, error_code=0), "failed", 1, None),  # 0 is no error
    # the manual run's cache check: a succeeded run whose cache rows were not rewritten
    (
        RunFacts(counts={"succeeded": 2}, stale_caches=1),
        "succeeded",
        1,
        "1 jobs succeeded but their cache row is older than the run",
    ),
    (RunFacts(counts={"succeeded": 1, "failed": 1}, stale_caches=1), "partial", 1, None),
    (RunFacts(counts={"succeeded": 1}, stale_caches=1, unrecorded=1), "failed", 4, UNWRITTEN),
]


@pytest.mark.parametrize(("facts", "status", "code", "note"), TABLE)
def test_decide(facts, status, code, note):
    assert decide(facts) == Ending(status, code, note)


def run_row(db):
    with db.cursor() as cur:
        cur.execute("SELECT status, exit_code, note FROM refresh_runs")
        (row,) = cur.fetchall()
    return row


@pytest.fixture
def two_keys(db):
    connect_clients(db, {ALICE: ("shopify",), BOB: ("shopify",)})


def test_main_all_succeeded(run_env, db, backend, two_keys):
    env = {**run_env, "REFRESH_PLATFORMS": "shopify"}
    assert main(["run"], env) == 0
    assert run_row(db) == ("succeeded", 0, None)


def test_main_one_failed(run_env, db, backend, two_keys):
    backend.script(BOB, "shopify", Answer(404, {"error": "no such client"}))
    env = {**run_env, "REFRESH_PLATFORMS": "shopify"}
    assert main(["run"], env) == 1
    assert run_row(db) == ("partial", 1, None)


def test_main_every_job_failed(run_env, db, backend, two_keys):
    backend.default = Answer(404, {"error": "no such client"})
    env = {**run_env, "REFRESH_PLATFORMS": "shopify"}
    assert main(["run"], env) == 1
    assert run_row(db) == ("failed", 1, None)


def test_main_deadline_with_jobs_left(run_env, db, backend, two_keys):
    backend.default = Answer(sleep=2.5)
    env = {**run_env, "REFRESH_PLATFORMS": "shopify", "REFRESH_CONCURRENCY": "1"}
    assert main(["run", "--deadline", "2"], env) == 6
    status, code, note = run_row(db)
    assert (status, code) == ("interrupted", 6)
    assert note == "deadline of 2s reached"


def test_main_a_record_the_database_refuses_fails_the_run_with_4(run_env, db, backend, two_keys):
    """One job's row is refused (a trigger): the other is written, the run says exactly how
    many could not be, and exits 4."""
    with db.cursor() as cur:
        cur.execute(
            "CREATE FUNCTION refuse_bob() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF NEW.client_id = '{BOB}' AND NEW.status <> 'not_attempted' THEN "
            "RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$"
        )
        cur.execute(
            "CREATE TRIGGER refuse_bob BEFORE UPDATE ON refresh_jobs "
            "FOR EACH ROW EXECUTE FUNCTION refuse_bob()"
        )
    env = {**run_env, "REFRESH_PLATFORMS": "shopify"}
    assert main(["run"], env) == 4
    assert run_row(db) == ("failed", 4, "1 job records could not be written to refresh_jobs")
    with db.cursor() as cur:
        cur.execute("SELECT client_id::text, status FROM refresh_jobs ORDER BY client_id")
        rows = dict(cur.fetchall())
    assert rows == {ALICE: "succeeded", BOB: "not_attempted"}
    assert any("record of this run is incomplete (exit 4)" in line for line in log_lines(env))


def test_token_status_and_check_do_not_load_the_run(run_env, tmp_path):
    """The process wrapper and the metrics ask outcome.py, so the commands that do not run
    never import the run's modules (a broken run stack cannot break `token` or `status`)."""
    import os
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from analytics_refresh.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "run = ('runner', 'jobs', 'claim', 'writes', 'pending', 'takeover', 'concurrency')\n"
        "loaded = [m for m in run if 'analytics_refresh.' + m in sys.modules]\n"
        "print(code, ','.join(loaded) or '-')\n"
    )
    env = {**os.environ, **run_env}
    for argv in (["token", ALICE], ["status"], ["check"]):
        done = subprocess.run(
            [sys.executable, "-c", probe, *argv],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        last = done.stdout.strip().splitlines()[-1]
        assert last.split(" ", 1)[1] == "-", (argv, last, done.stderr[-500:])
