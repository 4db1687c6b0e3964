"""deploy/k8s: the Kubernetes manifests and their kustomization (offline `kubectl kustomize`), one Deployment
per built-in worker plus the scheduler, KEDA scaling, and environments that are valid settings.

Tools and the CI rule (a missing tool skips, except under CI=true, where it fails; kubectl is optional):
see tests/integration/deploy_support.py.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.integration.deploy_support import (DEPLOY, K8S, SCALED_WORKERS, SINGLE_REPLICA_WORKERS, WORKERS,
                                              check_schedule_args, load_settings_in_subprocess, require_tool, run)

pytestmark = pytest.mark.integration


# ---- Kubernetes ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def k8s_docs(yaml) -> dict[str, list[dict]]:
    return {str(path.relative_to(K8S)): [d for d in yaml.safe_load_all(path.read_text()) if d]
            for path in sorted(K8S.rglob("*.yaml"))}


def test_k8s_manifests_parse_and_are_all_in_the_kustomization(k8s_docs):
    # Given every YAML file under deploy/k8s
    kustomization = k8s_docs["kustomization.yaml"][0]
    # When compared with the kustomization's resources
    listed = set(kustomization["resources"])
    # Then every manifest except the secret template is listed (and the template is not: it must never
    # overwrite real secrets), and every document has apiVersion, kind and metadata.name
    assert listed == set(k8s_docs) - {"kustomization.yaml", "secret.template.yaml"}
    for path, docs in k8s_docs.items():
        assert docs, f"{path} is empty"
        for doc in docs:
            if doc["kind"] != "Kustomization":
                assert doc.get("apiVersion") and doc["metadata"].get("name"), path


def k8s_objects(k8s_docs) -> list[dict]:
    return [d for path, ds in k8s_docs.items() if path != "secret.template.yaml" for d in ds]


def test_k8s_workers_have_probes_grace_periods_and_keda_scaling(k8s_docs):
    # Given the documents of the kustomization
    docs = k8s_objects(k8s_docs)
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    scaled = {d["spec"]["scaleTargetRef"]["name"]: d for d in docs if d["kind"] == "ScaledObject"}
    trigger_auths = {d["metadata"]["name"] for d in docs if d["kind"] == "TriggerAuthentication"}
    for name in WORKERS:
        # When a worker's Deployment (and ScaledObject) are inspected
        deployment = deployments[f"appsvc-dr-{name}"]
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        # Then it runs `appsvc-dr worker <name>` with probes on /healthz and /readyz at port 9464
        assert container["args"] == ["worker", name]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["metrics"] == 9464
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        # And Prometheus finds it by its worker label
        assert deployment["spec"]["template"]["metadata"]["labels"]["appsvc-dr/worker"] == name
        # And Kubernetes waits longer than the worker's grace period before SIGKILL
        assert pod["terminationGracePeriodSeconds"] > float(env["APPSVC_DR_WORKER__GRACE_PERIOD"])
        assert pod["securityContext"]["runAsNonRoot"] is True
        if name in SINGLE_REPLICA_WORKERS:
            # And a single-writer worker runs exactly one pod, also during a rollout, and KEDA never scales it
            assert deployment["spec"]["replicas"] == 1, name
            assert deployment["spec"]["strategy"]["type"] == "Recreate", name
            assert name not in {s.removeprefix("appsvc-dr-") for s in scaled}, name
            continue
        assert "replicas" not in deployment["spec"], "KEDA owns the replica count"
        # And KEDA scales it on its RabbitMQ queue length
        trigger = scaled[f"appsvc-dr-{name}"]["spec"]["triggers"][0]
        assert trigger["type"] == "rabbitmq"
        assert trigger["metadata"]["queueName"] == f"appsvc-dr.{name}"
        assert trigger["metadata"]["mode"] == "QueueLength"
        assert trigger["authenticationRef"]["name"] in trigger_auths
    assert set(scaled) == {f"appsvc-dr-{w}" for w in SCALED_WORKERS}
    assert deployments["appsvc-dr-db-backup"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 3600


def test_k8s_catalog_applies_retention(k8s_docs):
    # Given the catalog Deployment
    deployment = next(d for d in k8s_docs["workers/catalog.yaml"] if d["kind"] == "Deployment")
    env = {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    # When its settings are read
    # Then retention is configured where it is applied, and no certificate is needed
    assert int(env["APPSVC_DR_RETENTION__KEEP_LAST"]) >= 1 and env["APPSVC_DR_RETENTION__AUTO"] == "true"
    assert not any(k.startswith("APPSVC_DR_ENCRYPTION__") for k in env)


def test_k8s_scheduler_is_one_producer_pod_with_cron_settings_and_metrics(k8s_docs):
    # Given the scheduler Deployment, the ConfigMap and the Secret template
    deployment = next(d for d in k8s_docs["scheduler.yaml"] if d["kind"] == "Deployment")
    spec, pod = deployment["spec"], deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    config = k8s_docs["configmap.yaml"][0]["data"]
    secrets = {d["metadata"]["name"]: d["stringData"] for d in k8s_docs["secret.template.yaml"]}
    # When it is inspected
    # Then it runs one replica per site, also during a rollout, not scaled by KEDA
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
    assert deployment["metadata"]["name"] not in {d["spec"]["scaleTargetRef"]["name"] for d in k8s_objects(k8s_docs)
                                                  if d["kind"] == "ScaledObject"}
    # And it serves metrics and health like a worker, scraped under worker="scheduler"
    assert [p["containerPort"] for p in container["ports"]] == [9464]
    assert {"livenessProbe", "readinessProbe", "startupProbe"} <= container.keys()
    assert spec["template"]["metadata"]["labels"]["appsvc-dr/worker"] == "scheduler"
    assert pod["securityContext"]["runAsNonRoot"] is True
    # And it gets the stamp, broker and store from the ConfigMap, its own broker login and only the store
    # login from the Secrets, and the schedule from its cron settings
    assert [e["configMapRef"]["name"] for e in container["envFrom"]] == ["appsvc-dr-config"]
    env = {}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        ref = item["valueFrom"]["secretKeyRef"]
        assert ref["key"] in secrets[ref["name"]], item
        assert ref["name"] == "appsvc-dr-broker-scheduler" or ref["key"].startswith("APPSVC_DR_STORE__"), item
        env[item["name"]] = "sample"
    assert {"APPSVC_DR_BROKER__USERNAME", "APPSVC_DR_BROKER__PASSWORD", "APPSVC_DR_STORE__S3_ACCESS_KEY",
            "APPSVC_DR_STORE__S3_SECRET_KEY"} <= set(env)
    assert check_schedule_args(container["args"], {**config, **env}) == ["secrets+databases+fileshare"]
    result = load_settings_in_subprocess({**config, **env})
    assert result.returncode == 0, result.stderr[-2000:]


def test_k8s_db_backup_and_upload_share_one_rwx_claim_at_the_staging_directory(k8s_docs):
    # Given the staging directory from the ConfigMap and the db-backup / upload Deployments
    directory = k8s_docs["configmap.yaml"][0]["data"]["APPSVC_DR_STAGING__DATABASE_DIR"]
    assert directory.startswith("/"), "a local staging directory (or a UNC path, then drop this test's mounts)"
    claims = {d["metadata"]["name"]: d for d in k8s_objects(k8s_docs) if d["kind"] == "PersistentVolumeClaim"}
    claimed = {}
    for name in ("db-backup", "upload"):
        deployment = next(d for d in k8s_docs[f"workers/{name}.yaml"] if d["kind"] == "Deployment")
        pod = deployment["spec"]["template"]["spec"]
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
        # When the volume mounted at the staging directory is looked up
        volume_name = mounts.get(directory)
        assert volume_name, f"{name}: nothing mounted at {directory} (the root filesystem is read-only)"
        assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
        volume = next(v for v in pod["volumes"] if v["name"] == volume_name)
        # Then it is a PersistentVolumeClaim (an emptyDir would be private to the pod)
        assert "persistentVolumeClaim" in volume, f"{name}: staging is {volume}, not a shared claim"
        claimed[name] = volume["persistentVolumeClaim"]["claimName"]
    # And both mount the same claim, which the kustomization creates, ReadWriteMany (pods on any node)
    assert claimed["db-backup"] == claimed["upload"], claimed
    claim = claims.get(claimed["upload"])
    assert claim is not None, f"no PersistentVolumeClaim {claimed['upload']!r} in the kustomization"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["metadata"]["namespace"] == "appsvc-dr" and claim["spec"]["resources"]["requests"]["storage"]
    readme = (DEPLOY / "README.md").read_text()
    assert "ReadWriteMany" in readme and "APPSVC_DR_STAGING__SMB_USERNAME" in readme


def test_k8s_keda_authenticates_with_a_host_url_every_keda_2_reads(k8s_docs):
    # Given the TriggerAuthentication, the KEDA Secret of the template, and the stated minimum KEDA version
    auth = next(d for d in k8s_objects(k8s_docs) if d["kind"] == "TriggerAuthentication")
    secret = next(d for d in k8s_docs["secret.template.yaml"] if d["metadata"]["name"] == "appsvc-dr-keda-rabbitmq")
    kustomization = (K8S / "kustomization.yaml").read_text()
    stated = re.search(r"KEDA (\d+)\.(\d+)\+", kustomization)
    # When the parameters it passes are compared with what the stated version's rabbitmq scaler accepts
    parameters = {ref["parameter"] for ref in auth["spec"]["secretTargetRef"]}
    # (username/password exist only from KEDA 2.16: keda.sh/docs/2.16/scalers/rabbitmq-queue)
    since = {"host": (2, 0), "username": (2, 16), "password": (2, 16)}
    # Then the stated minimum version supports every parameter, and the Secret has each key referenced
    assert stated, "kustomization.yaml must state the minimum KEDA version"
    minimum = (int(stated.group(1)), int(stated.group(2)))
    assert all(since[p] <= minimum for p in parameters), (parameters, minimum)
    assert {ref["key"] for ref in auth["spec"]["secretTargetRef"]} <= secret["stringData"].keys()
    # And the host URL carries the login (placeholders only) and ends with the slash the scaler needs
    assert re.fullmatch(r"http://REPLACE_ME:REPLACE_ME@[^/@]+:15672/", secret["stringData"]["host"])


def test_k8s_secret_template_holds_placeholders_only(k8s_docs):
    # Given the Secret template
    for secret in k8s_docs["secret.template.yaml"]:
        # When its values are read
        for key, value in secret.get("stringData", {}).items():
            # Then each is a placeholder, an empty list, or a URL without credentials (or with placeholders)
            url_login = re.match(r"https?://([^/]*)@", value)
            ok = value == "REPLACE_ME" or value == "[]" or (
                value.startswith("http") and (url_login is None or url_login.group(1) == "REPLACE_ME:REPLACE_ME"))
            assert ok, f"{secret['metadata']['name']}.{key} looks like a real value: {value!r}"
        assert "data" not in secret


def test_k8s_worker_environment_is_accepted_by_the_settings(k8s_docs):
    # Given the ConfigMap, the secret template's keys with sample values, and a worker's own env
    config = k8s_docs["configmap.yaml"][0]["data"]
    secret = {k: ("[]" if k.endswith("URLS") else "sample") for k in k8s_docs["secret.template.yaml"][0]["stringData"]}
    for path in (f"workers/{name}.yaml" for name in WORKERS):
        deployment = next(d for d in k8s_docs[path] if d["kind"] == "Deployment")
        own = {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        # When the runtime loads its settings from that environment
        result = load_settings_in_subprocess({**config, **secret, **own})
        # Then it is valid configuration
        assert result.returncode == 0, f"{path}: {result.stderr[-2000:]}"


def test_kustomization_builds():
    # Given kubectl's built-in kustomize (works offline)
    kubectl = require_tool("kubectl", optional=True)
    # When the kustomization is built
    result = run([kubectl, "kustomize", str(K8S)])
    # Then it renders every object: namespace, configmap, trigger auth, the staging claim, one Deployment per
    # worker plus the scheduler's, a ScaledObject per KEDA-scaled worker and the drills' CronJobs (the primary's
    # and the secondary copy's)
    kinds = re.findall(r"^kind: (\w+)", result.stdout, re.M)
    assert sorted(kinds) == sorted(["Namespace", "ConfigMap", "TriggerAuthentication", "PersistentVolumeClaim",
                                    "CronJob", "CronJob"]
                                   + ["Deployment"] * (len(WORKERS) + 1) + ["ScaledObject"] * len(SCALED_WORKERS))


def test_k8s_workers_log_in_as_their_own_broker_user(k8s_docs):
    # Given the Secret template and the worker Deployments
    secrets = {d["metadata"]["name"]: d["stringData"] for d in k8s_docs["secret.template.yaml"]}
    assert "APPSVC_DR_BROKER__PASSWORD" not in secrets["appsvc-dr-secrets"], "no shared broker login"
    for name in WORKERS:
        deployment = next(d for d in k8s_docs[f"workers/{name}.yaml"] if d["kind"] == "Deployment")
        refs = [e["secretRef"]["name"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"]
                if "secretRef" in e]
        # When its Secrets are listed, Then the last one (which wins) is its own broker login
        assert refs[-1] == f"appsvc-dr-broker-{name}", refs
        assert set(secrets[refs[-1]]) == {"APPSVC_DR_BROKER__USERNAME", "APPSVC_DR_BROKER__PASSWORD"}


def test_k8s_drill_is_a_weekly_cronjob_and_only_it_mounts_the_private_key(k8s_docs):
    from workers.cli.drill_cmd import drill_cmd
    from tests.integration.deploy_support import parse_cli
    # Given the documents of the kustomization
    docs = k8s_objects(k8s_docs)
    jobs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "CronJob"}
    # When the drill CronJob is inspected
    cron = jobs["appsvc-dr-drill"]
    minute, hour, dom, month, dow = cron["spec"]["schedule"].split()
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    # Then it runs once a week, one at a time, never retried (a failed drill is a result)
    assert (dom, month) == ("*", "*") and re.fullmatch(r"[0-6]", dow) and cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["jobTemplate"]["spec"]["backoffLimit"] == 0 and pod["restartPolicy"] == "Never"
    # And it runs a valid `appsvc-dr drill` with the key and the textfile metric on mounted volumes
    args = parse_cli(container["args"])
    assert args.func is drill_cmd and args.key and args.textfile and not args.every
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    key_mount = mounts[str(Path(args.key[0]).parent)]
    assert key_mount["readOnly"] is True
    assert volumes[key_mount["name"]]["secret"]["secretName"] == "appsvc-dr-drill-key"
    assert volumes[key_mount["name"]]["secret"]["defaultMode"] == 0o400
    assert volumes[mounts[str(Path(args.textfile).parent)]["name"]].get("hostPath")
    assert pod["nodeSelector"] == {"appsvc-dr/drill": "true"} and container["securityContext"]["readOnlyRootFilesystem"]
    # And no other workload mounts the private key (never on the workers; the drill of the secondary copy does)
    for doc in docs:
        if doc["kind"] in ("Deployment", "CronJob") and doc not in (cron, jobs["appsvc-dr-drill-secondary"]):
            spec = doc["spec"]["template"]["spec"]
            assert "appsvc-dr-drill-key" not in str(spec.get("volumes", [])), doc["metadata"]["name"]


def test_k8s_drill_of_the_secondary_copy_is_a_weekly_cronjob_reading_a_configured_mirror_target(k8s_docs):
    from workers.cli.drill_cmd import drill_cmd
    from workers.cli.stores import chosen_store
    from tests.integration.deploy_support import parse_cli
    # Given the drill CronJobs of the kustomization
    jobs = {d["metadata"]["name"]: d for d in k8s_objects(k8s_docs) if d["kind"] == "CronJob"}
    cron, primary = jobs["appsvc-dr-drill-secondary"], jobs["appsvc-dr-drill"]
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    # When its schedule and command line are read (the latter by the real CLI parser)
    minute, hour, dom, month, dow = cron["spec"]["schedule"].split()
    args = parse_cli(container["args"])
    # Then it runs once a week on the primary drill's day, later, one at a time, never retried
    assert (dom, month) == ("*", "*") and dow == primary["spec"]["schedule"].split()[4]
    assert int(hour) > int(primary["spec"]["schedule"].split()[1]) and cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["jobTemplate"]["spec"]["backoffLimit"] == 0 and pod["restartPolicy"] == "Never"
    # And it is a drill of the newest set from a mirror target (--store NAME), with the key mounted read-only
    assert args.func is drill_cmd and args.latest and args.key and not args.every
    assert chosen_store() not in (None, "primary")
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    key_mount = mounts[str(Path(args.key[0]).parent)]
    assert key_mount["readOnly"] is True and volumes[key_mount["name"]]["secret"] == {
        "secretName": "appsvc-dr-drill-key", "defaultMode": 0o400}
    assert pod["nodeSelector"] == {"appsvc-dr/drill": "true"} and container["securityContext"]["readOnlyRootFilesystem"]
    # And its environment names the mirror targets, from which that name resolves to a target
    refs = [e.get("secretRef", e.get("configMapRef"))["name"] for e in container["envFrom"]]
    assert refs == ["appsvc-dr-config", "appsvc-dr-secrets", "appsvc-dr-mirror"]
    config = k8s_docs["configmap.yaml"][0]["data"]
    secrets = {d["metadata"]["name"]: d["stringData"] for d in k8s_docs["secret.template.yaml"]}
    example = json.dumps([{"name": chosen_store(), "kind": "s3", "s3_endpoint": "dr.example:443",
                           "s3_bucket": "appservice-dr", "s3_access_key": "k", "s3_secret_key": "s"}])
    env = {**config, **{k: ("[]" if k.endswith("URLS") else "sample") for k in secrets["appsvc-dr-secrets"]},
           **{**secrets["appsvc-dr-mirror"], "APPSVC_DR_MIRROR__TARGETS": example}}
    result = load_settings_in_subprocess(env)
    assert result.returncode == 0, result.stderr[-2000:]
    # And it writes its metrics to a textfile of its own, in the node's textfile directory the primary's drill
    # writes to (its command line parsed last: parsing one resets the --store choice read above)
    theirs = parse_cli(primary["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"])
    assert args.textfile and args.textfile != theirs.textfile
    folder = str(Path(args.textfile).parent)
    assert folder == str(Path(theirs.textfile).parent)
    assert volumes[mounts[folder]["name"]]["hostPath"]["path"] == "/var/lib/node_exporter/textfile"
