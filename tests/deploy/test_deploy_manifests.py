"""What each manifest promises: the right command, user, limits, settings and secrets.

No Docker engine or cluster runs here, so these read the files the way the platform
would and check the decisions that make a run work (or not) once deployed.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import ROOT

INTERVAL_SECONDS = 2 * 60 * 60
REFRESH_DEADLINE_DEFAULT = 6600  # README's settings table: the run stops starting jobs after this


# -- Dockerfile and .dockerignore -----------------------------------------------------------
def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's (INSTRUCTION, arguments) pairs, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text(encoding="utf-8"))
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, rest))
    return result


def final_stage() -> list[tuple[str, str]]:
    return stages()[-1]


def test_image_is_multi_stage_with_a_slim_python_base():
    froms = [rest for keyword, rest in instructions() if keyword == "FROM"]
    assert len(froms) >= 2
    args = dict(
        rest.split("=", 1) for keyword, rest in instructions() if keyword == "ARG" and "=" in rest
    )
    base = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.\d+-slim(-\w+)?", base), base


def test_dependencies_are_installed_before_the_code_is_copied():
    build = next(s for s in stages() if any("pip install" in r for k, r in s if k == "RUN"))
    steps = [f"{k} {r}" for k, r in build]
    requirements = next(i for i, s in enumerate(steps) if s.startswith("COPY requirements.lock"))
    install = next(
        i for i, s in enumerate(steps) if "pip install --require-hashes --requirement" in s
    )
    code = next(i for i, s in enumerate(steps) if s.startswith("COPY analytics_refresh/"))
    assert requirements < install < code


def test_runtime_runs_supercronic_on_docker_cron_as_a_non_root_user():
    runtime = dict(final_stage()[1:])  # last occurrence of each instruction wins
    env = " ".join(rest for keyword, rest in final_stage() if keyword == "ENV")
    assert "PYTHONUNBUFFERED=1" in env
    assert "LOG_FORMAT=json" in env
    user = runtime["USER"].split(":")[0]
    assert user.isdigit()
    assert int(user) != 0
    cmd = yaml.safe_load(runtime["CMD"])  # JSON (exec) form
    assert cmd[0] == "supercronic"
    assert cmd[-1] == "/app/docker-cron"
    assert "analytics-refresh" in runtime["HEALTHCHECK"]
    assert "status" in runtime["HEALTHCHECK"]


def test_supercronic_is_pinned_and_checked_against_its_published_sha1():
    args = dict(
        rest.split("=", 1) for keyword, rest in instructions() if keyword == "ARG" and "=" in rest
    )
    assert re.fullmatch(r"v\d+\.\d+\.\d+", args["SUPERCRONIC_VERSION"])
    assert re.fullmatch(r"[0-9a-f]{40}", args["SUPERCRONIC_SHA1SUM"])
    runs = " ".join(rest for keyword, rest in instructions() if keyword == "RUN")
    assert '${SUPERCRONIC_SHA1SUM}  /supercronic" | sha1sum --check' in runs


def dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*", "[^/]*")
        if any(re.fullmatch(regex, candidate) for candidate in candidates):
            excluded = not negated
    return excluded


def copied_sources() -> list[str]:
    sources = []
    for keyword, rest in instructions():
        if keyword == "COPY" and "--from=" not in rest:
            words = [w for w in shlex.split(rest) if not w.startswith("--")]
            sources += words[:-1]
    return sources


@pytest.mark.parametrize("source", copied_sources())
def test_every_copied_file_exists_and_is_in_the_build_context(source):
    assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which does not exist"
    assert not dockerignore_excludes(source.rstrip("/"))


@pytest.mark.parametrize(
    "path", [".env", ".venv/bin/python", ".data/postgres/PG_VERSION", "logs/x.log", ".git/HEAD"]
)
def test_local_secrets_and_state_never_reach_the_image(path):
    assert dockerignore_excludes(path)


def build_context(target: Path) -> None:
    """Copy what `docker build` would send: the files .dockerignore lets through."""
    for directory, subdirs, files in os.walk(ROOT):
        relative = Path(directory).relative_to(ROOT)
        subdirs[:] = [d for d in subdirs if not dockerignore_excludes((relative / d).as_posix())]
        for name in files:
            path = (relative / name).as_posix()
            if not dockerignore_excludes(path):
                (target / path).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / path, target / path)


def test_the_build_context_builds_the_package(tmp_path):
    """The image's `pip install .` sees only the build context: build a wheel from exactly
    that, and check the code, its SQL and the shared token module are in it."""
    context = tmp_path / "context"
    build_context(context)

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "--disable-pip-version-check",
            "--wheel-dir",
            str(tmp_path / "dist"),
            str(context),
        ],
        capture_output=True,
        text=True,
    )

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [wheel] = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "api_key_auth.py" in names
    assert "analytics_refresh/cli.py" in names
    assert any(fnmatch.fnmatch(n, "analytics_refresh/sql/*.sql") for n in names)
    assert "dashboard_api/schema.sql" in names


# -- compose.yaml ---------------------------------------------------------------------------
def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_compose_initialises_the_database_before_the_api_and_the_scheduler():
    services = compose()["services"]
    assert services["db-init"]["command"] == [
        "analytics-refresh",
        "db",
        "init",
        "--with-api-schema",
    ]
    assert services["db-init"]["restart"] == "no"
    for name in ("api", "cron"):
        depends = services[name]["depends_on"]
        assert depends["db-init"]["condition"] == "service_completed_successfully"
    assert services["db-init"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_compose_runs_the_api_with_gunicorn_and_the_scheduler_with_the_image_default():
    services = compose()["services"]
    assert services["api"]["command"][0] == "gunicorn"
    assert services["api"]["command"][-1] == "dashboard_api:create_app()"
    assert "command" not in services["cron"]  # the image's CMD: supercronic on docker-cron
    assert services["cron"]["environment"]["ANALYTICS_API_URL"] == "http://api:5000"
    assert "@postgres:5432/" in services["cron"]["environment"]["DATABASE_URL"]


def test_compose_commits_no_secret():
    text = (ROOT / "compose.yaml").read_text()
    assert "${API_SECRET_KEY:?" in text
    assert "${POSTGRES_PASSWORD:?" in text
    env = compose()["services"]["cron"]["environment"]
    assert env["API_SECRET_KEY"].startswith("${")


# -- Kubernetes -----------------------------------------------------------------------------
def kube(name: str) -> dict:
    return yaml.safe_load((ROOT / "deploy" / "kubernetes" / name).read_text())


def test_cronjob_never_overlaps_and_ends_before_the_next_slot():
    spec = kube("cronjob.yaml")["spec"]
    job = spec["jobTemplate"]["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert 0 < spec["startingDeadlineSeconds"] < INTERVAL_SECONDS
    assert spec["successfulJobsHistoryLimit"] >= 1
    assert spec["failedJobsHistoryLimit"] >= 1
    deadline = int(kube("configmap.yaml")["data"].get("REFRESH_DEADLINE", REFRESH_DEADLINE_DEFAULT))
    # The runner's own deadline comes first, so it records the run before being killed.
    assert deadline < job["activeDeadlineSeconds"] < INTERVAL_SECONDS
    assert job["template"]["spec"]["restartPolicy"] == "Never"


def test_cronjob_takes_its_settings_from_the_configmap_and_the_secret():
    pod = kube("cronjob.yaml")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    sources = {next(iter(s)): s[next(iter(s))]["name"] for s in container["envFrom"]}
    assert sources["configMapRef"] == kube("configmap.yaml")["metadata"]["name"]
    assert sources["secretRef"] == kube("secret.example.yaml")["metadata"]["name"]
    assert container["command"] == ["python", "analytics_refresh_cron.py"]
    secret_keys = set(kube("secret.example.yaml")["stringData"])
    assert {"DATABASE_URL", "API_SECRET_KEY"} <= secret_keys
    assert not secret_keys & set(kube("configmap.yaml")["data"])


def test_cronjob_runs_as_the_images_non_root_user():
    pod = kube("cronjob.yaml")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    user = dict(final_stage()[1:])["USER"].split(":")[0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == int(user)
    [container] = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # With a read-only root, the runner's log directory must be a volume.
    assert "/app/logs" in {m["mountPath"] for m in container["volumeMounts"]}


# -- Render ---------------------------------------------------------------------------------
def test_render_runs_one_refresh_per_slot_and_commits_no_secret():
    blueprint = yaml.safe_load((ROOT / "render.yaml").read_text())
    [cron] = [s for s in blueprint["services"] if s["type"] == "cron"]
    # Render bills a cron job while it runs: the image's supercronic would never exit.
    assert cron["dockerCommand"] == "python analytics_refresh_cron.py"
    [group_ref] = cron["envVars"]
    [group] = [g for g in blueprint["envVarGroups"] if g["name"] == group_ref["fromGroup"]]
    variables = {v["key"]: v for v in group["envVars"]}
    for secret in ("DATABASE_URL", "API_SECRET_KEY", "ANALYTICS_API_URL"):
        assert variables[secret] == {"key": secret, "sync": False}


# -- systemd --------------------------------------------------------------------------------
def unit(name: str) -> dict[str, str]:
    text = (ROOT / "deploy" / "systemd" / name).read_text()
    return dict(re.findall(r"^(\w+)=(.*)$", text, re.M))


def seconds(span: str) -> int:
    """A systemd time span such as 115min or 1h 55min, in seconds."""
    units = {"h": 3600, "min": 60, "s": 1}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)\s*(h|min|s)\b", span))


def test_service_is_a_oneshot_run_as_a_dedicated_user_from_the_project_directory():
    service = unit("analytics-refresh.service")
    assert service["Type"] == "oneshot"
    assert service["User"] not in ("", "root")
    assert service["ExecStart"].startswith(service["WorkingDirectory"] + "/.venv/bin/python ")
    assert service["ExecStart"].endswith(" analytics_refresh_cron.py")
    assert service["EnvironmentFile"].startswith("/")
    # The runner's deadline ends the run first; systemd's timeout before the next slot.
    assert REFRESH_DEADLINE_DEFAULT < seconds(service["TimeoutStartSec"]) < INTERVAL_SECONDS


def test_timer_catches_up_after_downtime_and_starts_the_service():
    timer = unit("analytics-refresh.timer")
    assert timer["Persistent"] == "true"
    assert timer["Unit"] == "analytics-refresh.service"
    assert timer["WantedBy"] == "timers.target"


# -- settings -------------------------------------------------------------------------------
def documented_variables() -> set[str]:
    example = ROOT / ".env.example"
    assert example.exists(), ".env.example (every setting, with its default) is missing"
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", example.read_text(), re.M))


def manifest_variables() -> dict[str, set[str]]:
    compose_env = compose()["services"]["cron"]["environment"]
    render = yaml.safe_load((ROOT / "render.yaml").read_text())
    return {
        "compose.yaml": set(compose_env),
        "configmap.yaml": set(kube("configmap.yaml")["data"]),
        "secret.example.yaml": set(kube("secret.example.yaml")["stringData"]),
        "render.yaml": {v["key"] for g in render["envVarGroups"] for v in g["envVars"]},
    }


@pytest.mark.parametrize("manifest", list(manifest_variables()))
def test_manifests_set_only_settings_the_runner_knows(manifest):
    unknown = manifest_variables()[manifest] - documented_variables()
    assert not unknown, f"{manifest} sets {unknown}, which .env.example does not list"


def test_the_entry_point_the_manifests_run_exists():
    assert (ROOT / "analytics_refresh_cron.py").is_file()
    assert Path(ROOT / "docker-cron").read_text().count("analytics_refresh_cron.py") == 1
