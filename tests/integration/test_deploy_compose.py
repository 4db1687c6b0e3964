"""deploy/compose.yaml: valid for docker-compose, one service per built-in worker plus the scheduler, whose
command lines parse with the real CLI and whose environments are valid settings.

Tools and the CI rule (a missing tool skips, except under CI=true, where it fails; kubectl is optional):
see tests/integration/deploy_support.py.
"""
from __future__ import annotations

import json
import re

import pytest

from tests.integration.deploy_support import (DEPLOY, ROOT, WORKERS, check_schedule_args, load_settings_in_subprocess,
                                              parse_cli, require_tool, run, seconds)

pytestmark = pytest.mark.integration


# ---- docker-compose --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose_config(yaml):
    docker_compose = require_tool("docker-compose")
    result = run([docker_compose, "-f", str(DEPLOY / "compose.yaml"), "config"], cwd=ROOT)
    return yaml.safe_load(result.stdout)


def test_compose_file_is_valid():
    # Given the compose file
    docker_compose = require_tool("docker-compose")
    # When docker-compose validates it
    result = run([docker_compose, "-f", str(DEPLOY / "compose.yaml"), "config", "-q"], cwd=ROOT)
    # Then it is valid
    assert result.stderr.strip() == ""


def test_compose_runs_one_service_per_worker_plus_infrastructure(compose_config):
    # Given the resolved compose configuration
    services = compose_config["services"]
    # When its services are listed
    # Then there is the infrastructure and one service per worker, each running `appsvc-dr worker <name>`
    assert {"rabbitmq", "minio", "minio-init", "prometheus", "grafana"} <= services.keys()
    for name in WORKERS:
        service = services[name]
        assert service["command"] == ["worker", name]
        env = service["environment"]
        assert env["APPSVC_DR_BROKER__HOST"] == "rabbitmq"
        assert env["APPSVC_DR_METRICS__HOST"] == "0.0.0.0"
        assert env["APPSVC_DR_STORE__KIND"] == "s3" and env["APPSVC_DR_STORE__S3_ENDPOINT"] == "minio:9000"
        # And docker waits longer than the worker's own grace period before killing it
        grace = float(env.get("APPSVC_DR_WORKER__GRACE_PERIOD", 60))
        assert seconds(service["stop_grace_period"]) > grace, name
    assert services["rabbitmq"]["image"].startswith("rabbitmq:3.13-management")


def test_deploy_covers_every_built_in_worker():
    # Given the runtime's built-in workers
    from workers.app import BUILTIN, builtin_bindings
    # When compared with the workers deploy/ runs
    # Then each one is deployed (and nothing else), and `appsvc-dr worker <name>` parses for each
    assert set(WORKERS) == set(BUILTIN) == set(builtin_bindings())
    for name in WORKERS:
        assert parse_cli(["worker", name]).name == name


def test_compose_worker_services_are_exactly_the_worker_specs(compose_config):
    # Given the worker specs the runtime declares (workers/app.py BUILTIN, each module's SPEC)
    from workers.app import BUILTIN, builtin_bindings
    bindings = builtin_bindings()
    # When the compose services that run `appsvc-dr worker <name>` are listed
    services = compose_config["services"]
    running = {name: svc["command"][1] for name, svc in services.items()
               if list(svc.get("command") or [])[:1] == ["worker"]}
    # Then there is one per spec, named after it, and none for a worker the runtime does not know
    assert running == {name: name for name in BUILTIN}
    for name in BUILTIN:
        assert bindings[name], f"{name}: a worker spec without event types would never get a job"
        # And each is scrapable by Prometheus on the metrics port the alerts expect
        assert services[name]["environment"]["APPSVC_DR_METRICS__PORT"] == "9464"


def test_compose_rabbitmq_exports_per_queue_metrics_for_prometheus(compose_config):
    # Given the compose RabbitMQ service and the files it mounts
    rabbit = compose_config["services"]["rabbitmq"]
    mounts = {v.split(":")[1] if isinstance(v, str) else v["target"]: v for v in rabbit["volumes"]}
    plugins = (DEPLOY / "rabbitmq" / "enabled_plugins").read_text()
    conf = (DEPLOY / "rabbitmq" / "rabbitmq.conf").read_text()
    # When the plugin list and configuration are read
    # Then rabbitmq_prometheus is enabled, per-queue metrics are on, and Prometheus can reach port 15692
    assert "/etc/rabbitmq/enabled_plugins" in mounts and "rabbitmq_prometheus" in plugins
    assert re.search(r"^prometheus\.return_per_object_metrics\s*=\s*true", conf, re.M)
    assert "15692" in [str(p) for p in rabbit.get("expose", [])]


def test_compose_runs_one_scheduler_with_cron_settings_store_and_metrics(compose_config):
    # Given the resolved compose configuration
    scheduler = compose_config["services"]["scheduler"]
    # When the scheduler service is inspected
    # Then it runs `appsvc-dr schedule` with cron settings (daily, a full set, by default) as a single container
    env = scheduler["environment"]
    assert check_schedule_args(scheduler["command"], env) == ["secrets+databases+fileshare"]
    assert env["APPSVC_DR_BROKER__HOST"] == "rabbitmq" and env["APPSVC_DR_STAMP"]
    assert "scale" not in scheduler and scheduler.get("deploy", {}).get("replicas", 1) == 1
    # And it reaches the store its slot claims live in, serves metrics like a worker and keeps the image's
    # /healthz HEALTHCHECK
    assert env["APPSVC_DR_STORE__KIND"] == "s3" and env["APPSVC_DR_STORE__S3_ACCESS_KEY"]
    assert "9464" in [str(p) for p in scheduler["expose"]] and env["APPSVC_DR_METRICS__HOST"] == "0.0.0.0"
    assert not scheduler.get("healthcheck", {}).get("disable")
    assert scheduler["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
    assert scheduler["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    # And its environment is valid configuration
    result = load_settings_in_subprocess(env)
    assert result.returncode == 0, result.stderr[-2000:]


def test_compose_catalog_is_a_single_container_with_retention_settings(compose_config):
    # Given the resolved compose configuration
    catalog = compose_config["services"]["catalog"]
    env = catalog["environment"]
    # When the catalog service is inspected
    # Then it is not scaled out and carries the retention settings it applies
    assert "scale" not in catalog and catalog.get("deploy", {}).get("replicas", 1) == 1
    assert int(env["APPSVC_DR_RETENTION__KEEP_LAST"]) >= 1
    assert env["APPSVC_DR_RETENTION__AUTO"] in {"true", "false"}
    assert "APPSVC_DR_ENCRYPTION__CERTIFICATE" not in env  # store access only


def test_compose_db_backup_and_upload_share_the_staging_directory(compose_config):
    # Given db-backup (stages database backups) and upload (reads them from the path in the event)
    services = compose_config["services"]
    top_volumes = compose_config.get("volumes", {})

    def staging(name: str) -> tuple[str, str, str]:
        env = services[name]["environment"]
        directory = env["APPSVC_DR_STAGING__DATABASE_DIR"]
        for volume in services[name].get("volumes", []):
            source, target = (volume.split(":")[:2] if isinstance(volume, str)
                              else (volume.get("source"), volume.get("target")))
            if directory == target or directory.startswith(target.rstrip("/") + "/"):
                return directory, source, target
        raise AssertionError(f"{name}: APPSVC_DR_STAGING__DATABASE_DIR={directory} is not on a mounted volume")

    # When their staging directory and the volume holding it are resolved
    db_backup, upload = staging("db-backup"), staging("upload")
    # Then it is the same directory on the same named volume, mounted at the same place
    assert db_backup == upload
    assert db_backup[1] in top_volumes, f"{db_backup[1]} must be a named volume"
    # And the mount point is the image's working directory (owned by the worker user, so a fresh named
    # volume is writable by uid 10001; a new directory elsewhere would be created as root)
    assert db_backup[2] == "/var/lib/appsvc-dr"
    assert re.search(r"^WORKDIR /var/lib/appsvc-dr$", (DEPLOY / "Dockerfile").read_text(), re.M)


def test_compose_file_hard_codes_no_credentials(yaml):
    # Given the raw compose file (before env files are merged in) and the dev env files
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    secretish = re.compile(r"PASS|SECRET|TOKEN|ACCESS_KEY|_KEY$|URLS$")
    # When environment entries that look like credentials are collected
    envs = [compose.get("x-worker-env", {})]
    envs += [s.get("environment", {}) for s in compose["services"].values()]
    hard_coded = [k for env in envs if isinstance(env, dict) for k in env if secretish.search(k)]
    # Then none is written in compose.yaml itself; they come from env files...
    assert hard_coded == []
    # ...and the committed (dev) env files say DEV ONLY and use obviously-dev values
    for env_file in sorted((DEPLOY / "env" / "dev").rglob("*.env")):
        text = env_file.read_text()
        assert "DEV ONLY" in text, env_file
        for key, value in re.findall(r"^(\w+)=(.*)$", text, re.M):
            if re.search(r"PASS|SECRET_KEY", key):
                assert value.startswith("dev-only-"), f"{env_file.name}: {key} must be an obvious dev value"


def test_compose_worker_environment_is_accepted_by_the_settings(compose_config):
    # Given each worker's resolved environment from docker-compose
    for name in WORKERS:
        env = compose_config["services"][name]["environment"]
        # When the runtime loads its settings from exactly that environment
        result = load_settings_in_subprocess(env)
        # Then it is valid configuration (no unknown or malformed APPSVC_DR_ variables)
        assert result.returncode == 0, f"{name}: {result.stderr[-2000:]}"
        assert result.stdout.split()[:3] == ["s3", "0.0.0.0", "9464"], result.stdout


def test_compose_gives_every_producer_its_own_least_privilege_broker_user(compose_config):
    # Given the resolved compose configuration and the broker users of deploy/rabbitmq/definitions.json
    import json
    services = compose_config["services"]
    definitions = json.loads((DEPLOY / "rabbitmq" / "definitions.json").read_text())
    users = {u["name"] for u in definitions["users"]}
    # When each worker's and the scheduler's broker login is read
    logins = {name: services[name]["environment"]["APPSVC_DR_BROKER__USERNAME"] for name in [*WORKERS, "scheduler"]}
    # Then each logs in as its own role's user from definitions.json, never as the admin (rabbitmq.env)
    assert logins == {name: f"appsvc-dr-{name}" for name in logins} and set(logins.values()) <= users
    # And those users are created first, by the one-shot rabbitmq-users service, from definitions.json
    init = services["rabbitmq-users"]
    assert init["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
    assert "apply_users.py" in " ".join(init["entrypoint"])
    for name in [*WORKERS, "scheduler"]:
        assert services[name]["depends_on"]["rabbitmq-users"]["condition"] == "service_completed_successfully"


def test_compose_drill_of_the_secondary_runs_weekly_from_a_configured_mirror_target(compose_config):
    from workers.cli.drill_cmd import drill_cmd
    from workers.cli.stores import chosen_store
    from workers.runtime.parsing import parse_duration
    services = compose_config["services"]
    # Given the drill-secondary service of the resolved compose configuration, and the primary's drill
    drill, primary = services["drill-secondary"], services["drill"]
    # When its command is parsed by the real CLI
    args = parse_cli(drill["command"])
    # Then it drills a mirror target by name (--store NAME) every week, later in the day than the primary's drill
    assert args.func is drill_cmd and parse_duration(args.every).days == 7 and args.key
    name = chosen_store()                   # (read before another command line is parsed)
    theirs = parse_cli(primary["command"])
    assert name not in (None, "primary") and args.at > theirs.at
    # And only in the "drill" profile, with the key directory read-only
    assert drill["profiles"] == ["drill"]
    mounts = {v.split(":")[1]: v.split(":")[2:] for v in drill["volumes"]}
    assert mounts[str(args.key[0]).rsplit("/", 1)[0]] == ["ro"]
    # And it writes its metrics to a textfile of its own, in the directory the primary's drill writes to
    sources = {v.split(":")[1]: v.split(":")[0] for v in [*drill["volumes"], *primary["volumes"]]}
    assert args.textfile and args.textfile != theirs.textfile
    folder = args.textfile.rsplit("/", 1)[0]
    assert folder == theirs.textfile.rsplit("/", 1)[0] and "ro" not in mounts[folder] and folder in sources
    # And that target is one of the mirror targets its environment configures (the env files compose reads)
    env = dict(drill["environment"])
    targets = json.loads(env["APPSVC_DR_MIRROR__TARGETS"])
    assert name in [t["name"] for t in targets]
    result = load_settings_in_subprocess(env)
    assert result.returncode == 0, result.stderr[-2000:]


def test_compose_drill_runs_weekly_only_in_its_profile_with_the_key_mounted_read_only(compose_config):
    from workers.cli.drill_cmd import drill_cmd
    from workers.runtime.parsing import parse_duration
    services = compose_config["services"]
    # Given the drill service of the resolved compose configuration
    drill = services["drill"]
    # When its command is parsed by the real CLI
    args = parse_cli(drill["command"])
    # Then it drills every week at a fixed UTC time, writing the textfile metric
    assert args.func is drill_cmd and parse_duration(args.every).days == 7 and args.at is not None
    assert args.key and args.textfile
    # And it starts only in the "drill" profile (the host with the private key), the key directory read-only
    assert drill["profiles"] == ["drill"]
    key_dir = str(args.key[0]).rsplit("/", 1)[0]
    mounts = {v.split(":")[1]: v.split(":")[2:] for v in drill["volumes"]}      # source:target[:mode]
    assert mounts[key_dir] == ["ro"]
    assert args.textfile.rsplit("/", 1)[0] in mounts
    # And no worker mounts the key (never on the workers)
    for name in WORKERS:
        assert key_dir not in {v.split(":")[1] for v in services[name].get("volumes", [])}, name
    # And its environment is valid configuration
    result = load_settings_in_subprocess(drill["environment"])
    assert result.returncode == 0, result.stderr[-2000:]
