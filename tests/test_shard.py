"""Sharding: every job in exactly one shard, each shard its own run, and the Indexed
CronJob that hands each pod its shard."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
import yaml

from analytics_refresh.cli import main
from analytics_refresh.config.settings import Settings, Shard
from analytics_refresh.store.plan import build_plan, shard_of
from tests.conftest import connect_clients

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = [str(uuid.UUID(int=i * 7919 + 11, version=4)) for i in range(300)]


def rows(clients=CLIENTS):
    """Credential rows ordered by client, as the database streams them."""
    for n, client_id in enumerate(sorted(clients)):
        yield client_id, "shopify"
        if n % 3 == 0:
            yield client_id, "amazon"


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7])
def test_shards_partition_the_jobs_exactly(count):
    everything = build_plan(rows(), Settings()).jobs
    shards = [set(build_plan(rows(), Settings(shard=Shard(i, count))).jobs) for i in range(count)]
    # Every job in one shard, none in two.
    assert sum(len(s) for s in shards) == len(everything)
    assert set().union(*shards) == set(everything)
    # A client's jobs stay together, in the shard its id hashes into.
    for index, jobs in enumerate(shards):
        assert {shard_of(j.client_id, count) for j in jobs} <= {index}


def test_shard_of_is_stable_and_spreads_the_clients():
    # The same id lands in the same shard on every machine and every run.
    assert shard_of("3b619a14-3cd8-49fa-9c24-d8df5e54c452", 4) == shard_of(
        "3B619A14-3CD8-49FA-9C24-D8DF5E54C452", 4
    )
    sizes = [sum(1 for c in CLIENTS if shard_of(c, 4) == i) for i in range(4)]
    assert min(sizes) > len(CLIENTS) / 4 * 0.7


def test_each_shard_refreshes_its_own_clients_and_records_its_own_run(run_env, backend, db):
    clients = CLIENTS[:40]
    connect_clients(db, {c: ("shopify",) for c in clients})
    env = {**run_env, "REFRESH_PLATFORMS": "shopify"}
    assert main(["run", "--shard", "0/2"], env) == 0
    first = {r.query["client_id"] for r in backend.refreshes()}
    assert main(["run"], {**env, "REFRESH_SHARD": "1/2"}) == 0
    second = {r.query["client_id"] for r in backend.refreshes()} - first

    assert first
    assert second
    assert first.isdisjoint(second)
    assert first | second == set(clients)
    assert len(backend.refreshes()) == len(clients)
    with db.cursor() as cur:
        cur.execute("SELECT shard, status, jobs_total FROM refresh_runs ORDER BY shard")
        assert cur.fetchall() == [
            ("0/2", "succeeded", len(first)),
            ("1/2", "succeeded", len(second)),
        ]


# -- the Indexed CronJob -------------------------------------------------------------------
def manifest() -> dict:
    return yaml.safe_load((ROOT / "deploy" / "kubernetes" / "cronjob-sharded.yaml").read_text())


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(NAME) expansion: names defined earlier expand, others stay as written."""
    return re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), value)


def container_env(index: int) -> dict[str, str]:
    """The pod's environment as Kubernetes builds it for completion index ``index``."""
    pod = manifest()["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env: dict[str, str] = {}
    for entry in container["env"]:
        if "valueFrom" in entry:
            path = entry["valueFrom"]["fieldRef"]["fieldPath"]
            assert path == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
            env[entry["name"]] = str(index)
        else:
            env[entry["name"]] = expand(entry["value"], env)
    # Kubernetes appends JOB_COMPLETION_INDEX after the container's own entries.
    env.setdefault("JOB_COMPLETION_INDEX", str(index))
    return env


def test_indexed_cronjob_runs_every_shard_once_at_the_same_time():
    spec = manifest()["spec"]
    job = spec["jobTemplate"]["spec"]
    assert job["completionMode"] == "Indexed"
    count = job["completions"]
    assert job["parallelism"] == count
    shards = [Settings.from_env(container_env(i)).shard for i in range(count)]
    assert shards == [Shard(i, count) for i in range(count)]
    # A failed shard is neither rerun nor allowed to stop the others.
    assert job["backoffLimitPerIndex"] == 0
    assert "backoffLimit" not in job
    assert job["template"]["spec"]["restartPolicy"] == "Never"


def test_indexed_cronjob_keeps_the_schedule_and_settings_of_the_plain_one():
    sharded = manifest()["spec"]
    plain = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "cronjob.yaml").read_text())["spec"]
    for key in ("schedule", "timeZone", "concurrencyPolicy", "startingDeadlineSeconds"):
        assert sharded[key] == plain[key]
    job, plain_job = sharded["jobTemplate"]["spec"], plain["jobTemplate"]["spec"]
    assert job["activeDeadlineSeconds"] == plain_job["activeDeadlineSeconds"]
    [container] = job["template"]["spec"]["containers"]
    [plain_container] = plain_job["template"]["spec"]["containers"]
    for key in ("image", "command", "workingDir", "envFrom", "securityContext", "volumeMounts"):
        assert container[key] == plain_container[key]
    assert (
        job["template"]["spec"]["securityContext"]
        == (plain_job["template"]["spec"]["securityContext"])
    )
