"""The Kubernetes and Docker Compose files (deployments/kubernetes, deployments/compose) are
well formed and agree with each other and with the code, checked without a cluster or a
Docker daemon: no network, no containers.

- The base job template: Prefect's own server-side validator accepts it, its `variables` are
  a valid JSON Schema whose defaults fit it, every placeholder is a declared variable, and the
  Job it renders to (with Prefect's templating) is a valid Kubernetes Job with the shape
  prefect-kubernetes requires, secrets only by reference, requests within limits.
- The manifests: the structure every object needs, the same secret and resource rules, the
  references between them (selectors, ConfigMaps, claims, service accounts) and, with
  kubernetes-validate installed, Kubernetes' own schemas (strict: unknown fields fail).
- Compose: the compose-spec JSON schema (from check-jsonschema, when installed), `docker
  compose config` when the Compose plugin is there, and structural checks (depends_on,
  volumes, `${VAR}`s against .env.example, build files).
- The ingest's configuration differs from deployments/nginx-rtmp.conf only by the lines
  that open it to private networks, and nginx accepts it (`nginx -t`).

kubectl is not used: even `kubectl create --dry-run=client` asks the API server which kinds
it serves, so it cannot check a file without a cluster.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]
from prefect.server.schemas.actions import validate_base_job_template
from prefect.utilities.templating import PlaceholderType, apply_values, find_placeholders

from recorder.settings import RecorderSettings
from tests.nginx_rtmp import find_nginx, find_rtmp_module

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES = ROOT / "deployments" / "kubernetes"
COMPOSE_DIR = ROOT / "deployments" / "compose"
JOB_TEMPLATE = KUBERNETES / "base-job-template.json"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
DEPLOYED_NGINX_CONF = ROOT / "deployments" / "nginx-rtmp.conf"
CONTAINER_NGINX_CONF = COMPOSE_DIR / "nginx-rtmp.container.conf"
INGEST = KUBERNETES / "ingest.yaml"

MANIFESTS = sorted(KUBERNETES.glob("*.yaml"))
DATA_FILES = [*MANIFESTS, JOB_TEMPLATE, COMPOSE_FILE]
# The Kubernetes release the schemas are checked against: an old enough one that managed
# clusters still run it.
KUBERNETES_VERSION = "1.30.0"
# prefect-kubernetes requires these two in the pod spec (its _get_base_job_manifest), though
# Kubernetes' Job keeps them one level up: the API server ignores them there.
PREFECT_POD_FIELDS = {"parallelism": 1, "completions": 1}
# An environment variable by one of these names holds a secret: never a literal value.
SECRET_NAME = re.compile(r"SECRET|_KEY(S)?$|TOKEN|PASSWORD|USERSIG", re.IGNORECASE)
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?][^}]*)?\}")
QUANTITY = re.compile(r"^([0-9.]+)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
UNITS = {
    None: 1.0,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
}


# --- readers ---------------------------------------------------------------------------------


def load_documents(path: Path) -> list[Any]:
    if path.suffix == ".json":
        return [json.loads(path.read_text())]
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


@cache
def job_template() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(JOB_TEMPLATE.read_text())
    return loaded


@cache
def manifests() -> tuple[dict[str, Any], ...]:
    return tuple(doc for path in MANIFESTS for doc in load_documents(path))


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


def setting_names() -> set[str]:
    return {"RECORDER_" + name.upper() for name in RecorderSettings.model_fields}


def parse_quantity(value: str | int | float) -> float:
    """A Kubernetes resource quantity ("100m", "1", "256Mi") as a number."""
    match = QUANTITY.match(str(value))
    assert match, f"{value!r} is not a resource quantity"
    return float(match.group(1)) * UNITS[match.group(2)]


def pod_specs(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if doc.get("kind") in WORKLOAD_KINDS:
        yield doc["spec"]["template"]["spec"]


# --- checks (each returns what is wrong; the self-tests below feed them mistakes) -------------


def undeclared_placeholders(template: dict[str, Any]) -> set[str]:
    """Placeholders of job_configuration that no variable declares (Prefect's own block and
    variable references, `{{ prefect.… }}`, and `{{ $ENV }}` are resolved elsewhere)."""
    used = {
        p.name for p in find_placeholders(template["job_configuration"]) if p.type is PlaceholderType.STANDARD
    }
    return used - set(template["variables"].get("properties", {}))


def container_problems(spec: dict[str, Any], where: str) -> list[str]:
    """Every container has an image; secrets come by reference; requests within limits."""
    problems = []
    for container in spec.get("containers", []) + spec.get("initContainers", []):
        name = f"{where}/{container.get('name')}"
        if not container.get("image"):
            problems.append(f"{name}: no image")
        for entry in container.get("env", []):
            if SECRET_NAME.search(entry["name"]) and "value" in entry:
                problems.append(f"{name}: {entry['name']} has a literal value, not a secretKeyRef")
        resources = container.get("resources", {})
        requests, limits = resources.get("requests", {}), resources.get("limits", {})
        if not requests:
            problems.append(f"{name}: no resource requests")
        for resource, limit in limits.items():
            if resource in requests and parse_quantity(requests[resource]) > parse_quantity(limit):
                problems.append(f"{name}: {resource} request {requests[resource]} > limit {limit}")
    return problems


def manifest_problems(doc: dict[str, Any]) -> list[str]:
    metadata = doc.get("metadata", {})
    where = f"{doc.get('kind')}/{metadata.get('name') or metadata.get('generateName')}"
    problems = [f"{where}: no {key}" for key in ("apiVersion", "kind") if not doc.get(key)]
    # A flow run's Job is named by Kubernetes from generateName.
    if not (metadata.get("name") or metadata.get("generateName")):
        problems.append(f"{where}: no metadata.name")
    if doc.get("kind") == "Secret":
        problems.append(f"{where}: a Secret in the repository (create it with kubectl, README.md)")
    for spec in pod_specs(doc):
        if not spec.get("containers"):
            problems.append(f"{where}: no containers")
        problems += container_problems(spec, where)
    return problems


def compose_problems(spec: dict[str, Any], env_example: str) -> list[str]:
    """References Compose resolves when it starts things: services, volumes, variables."""
    problems = []
    services = spec.get("services", {})
    volumes = set(spec.get("volumes") or {})
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", env_example, re.MULTILINE))
    for name, service in services.items():
        depends = service.get("depends_on", {})
        for target in depends if isinstance(depends, dict | list) else []:
            if target not in services:
                problems.append(f"{name}: depends_on unknown service {target}")
        for mount in service.get("volumes", []):
            source = mount.split(":")[0] if isinstance(mount, str) else mount.get("source", "")
            if source and not source.startswith((".", "/", "~")) and source not in volumes:
                problems.append(f"{name}: volume {source} is not declared")
        environment = service.get("environment", {})
        for key, value in environment.items() if isinstance(environment, dict) else []:
            if value is None and key not in documented:
                problems.append(f"{name}: {key} is passed through but not in .env.example")
    for variable, rule in ENV_REFERENCE.findall(json.dumps(spec)):
        if not rule and variable not in documented:
            problems.append(f"${{{variable}}} has no default and is not in .env.example")
        if rule.lstrip(":").startswith("?") and variable not in documented:
            problems.append(f"${{{variable}}} is required but not in .env.example")
    return problems


def conf_changes(deployed: str, variant: str) -> list[tuple[str, str]]:
    """(removed, added) lines of the variant against the deployed configuration."""
    removed, added = [], []
    for line in difflib.ndiff(deployed.splitlines(), variant.splitlines()):
        if line.startswith("- "):
            removed.append(line[2:].strip())
        elif line.startswith("+ "):
            added.append(line[2:].strip())
    return [(r, "") for r in removed] + [("", a) for a in added]


# What the container variant may change: open the statistics page to the network, and add
# private networks to who may play or read it (and comments saying so).
ALLOWED_REMOVED = {"listen 127.0.0.1:8088;"}
ALLOWED_ADDED = re.compile(r"^(#.*|listen 8088;|allow( play)? [0-9./]+;|deny all;)$")


def conf_problems(deployed: str, variant: str) -> list[str]:
    problems = []
    for removed, added in conf_changes(deployed, variant):
        if removed and removed not in ALLOWED_REMOVED:
            problems.append(f"the variant lacks {removed!r}")
        if added and not ALLOWED_ADDED.match(added):
            problems.append(f"the variant adds {added!r}")
    return problems


# --- every file ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", DATA_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_file_parses(path: Path) -> None:
    assert load_documents(path)


# --- the base job template -------------------------------------------------------------------


def test_prefect_accepts_the_base_job_template() -> None:
    """The check the Prefect API runs on `prefect work-pool create --base-job-template`."""
    assert validate_base_job_template(job_template()) == job_template()
    assert undeclared_placeholders(job_template()) == set()


def test_the_variables_are_a_json_schema_their_defaults_fit() -> None:
    variables = job_template()["variables"]
    validator = jsonschema.validators.validator_for(variables)
    validator.check_schema(variables)
    defaults = {name: p["default"] for name, p in variables["properties"].items() if "default" in p}
    validator(variables).validate(defaults)
    # Every variable is used: an unused one is a typo in a placeholder.
    used = {p.name for p in find_placeholders(job_template()["job_configuration"])}
    assert set(variables["properties"]) - used == set()


def rendered_job(values: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Job manifest as Prefect's templating fills it from the variables' defaults (and
    the worker's own values: name, labels, command), before prefect-kubernetes adds its
    environment in front of the template's."""
    properties = job_template()["variables"]["properties"]
    filled = {name: p["default"] for name, p in properties.items() if p.get("default") is not None}
    filled |= {
        "name": "brave-otter",
        "labels": {"prefect.io/flow-run-id": "0"},
        "command": "prefect flow-run execute",
    }
    filled |= values or {}
    configuration = apply_values(job_template()["job_configuration"], filled)
    manifest: dict[str, Any] = configuration["job_manifest"]
    # As prefect-kubernetes does with a command given as one string (_populate_command_if_not_present).
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    if isinstance(container.get("args"), str):
        container["args"] = shlex.split(container["args"])
    return manifest


def test_the_rendered_job_has_the_shape_prefect_kubernetes_requires() -> None:
    job = rendered_job()
    assert find_placeholders(job) == set()
    pod = job["spec"]["template"]["spec"]
    assert {key: pod.get(key) for key in PREFECT_POD_FIELDS} == PREFECT_POD_FIELDS
    assert pod["restartPolicy"] == "Never"
    container = pod["containers"][0]
    assert container["name"] == "prefect-job"
    # A list, so the worker puts its own variables (PREFECT_API_URL, the run's id) in front
    # instead of replacing the template's secret references.
    assert isinstance(container["env"], list)
    assert manifest_problems(job) == []


def test_the_rendered_job_keeps_media_on_the_work_volume() -> None:
    pod = rendered_job()["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
    assert mounts["work"] == env["CFS_PATH"]
    assert env["PREFECT_LOCAL_STORAGE_PATH"].startswith(env["CFS_PATH"] + "/")
    defined = {(d["kind"], d["metadata"]["name"]) for d in manifests()}
    assert ("PersistentVolumeClaim", claims["work"]) in defined
    assert ("ServiceAccount", pod["serviceAccountName"]) in defined
    assert ("ConfigMap", container["envFrom"][0]["configMapRef"]["name"]) in defined
    # A deployment's job_variables choose another claim.
    other = rendered_job({"work_volume_claim": "big-disk"})["spec"]["template"]["spec"]
    assert other["volumes"][0]["persistentVolumeClaim"]["claimName"] == "big-disk"


def test_the_rendered_job_is_a_valid_kubernetes_job() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    job = rendered_job()
    pod = job["spec"]["template"]["spec"]
    for key in PREFECT_POD_FIELDS:
        del pod[key]
    kubernetes_validate.validate(job, KUBERNETES_VERSION, strict=True)


# --- the manifests ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "doc", manifests(), ids=lambda d: f"{d.get('kind')}/{d.get('metadata', {}).get('name')}"
)
def test_a_manifest_is_well_formed(doc: dict[str, Any]) -> None:
    assert manifest_problems(doc) == []


@pytest.mark.parametrize(
    "doc", manifests(), ids=lambda d: f"{d.get('kind')}/{d.get('metadata', {}).get('name')}"
)
def test_a_manifest_fits_the_kubernetes_schema(doc: dict[str, Any]) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_manifests_refer_to_what_they_define() -> None:
    defined = {(d["kind"], d["metadata"]["name"]) for d in manifests()}
    workloads = [d for d in manifests() if d["kind"] in WORKLOAD_KINDS]
    for doc in manifests():
        selector = doc["spec"].get("selector") if doc["kind"] == "Service" else None
        if selector:
            assert any(
                selector.items() <= w["spec"]["template"]["metadata"]["labels"].items() for w in workloads
            ), f"Service {doc['metadata']['name']} selects no pod"
    for workload in workloads:
        spec = workload["spec"]["template"]["spec"]
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in defined
        if "serviceAccountName" in spec:
            assert ("ServiceAccount", spec["serviceAccountName"]) in defined


def test_the_settings_configmap_names_real_settings_and_services() -> None:
    settings = next(
        d
        for d in manifests()
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "trtc-recorder-settings"
    )
    names = {key for key in settings["data"] if key.startswith("RECORDER_")}
    assert names and names - setting_names() == set()
    services = {d["metadata"]["name"] for d in manifests() if d["kind"] == "Service"}
    for key in ("RECORDER_RTMP_URL", "RECORDER_RTMP_STAT_URL"):
        host = re.match(r"^\w+://([^:/]+)", settings["data"][key])
        assert host and host.group(1) in services, key


def test_the_ingest_configmap_is_the_container_configuration() -> None:
    config = next(d for d in load_documents(INGEST) if d["kind"] == "ConfigMap")
    assert config["data"]["nginx.conf"] == CONTAINER_NGINX_CONF.read_text()


# --- the ingest's nginx configuration --------------------------------------------------------


def test_the_container_configuration_only_opens_the_deployed_one_to_private_networks() -> None:
    deployed, variant = DEPLOYED_NGINX_CONF.read_text(), CONTAINER_NGINX_CONF.read_text()
    assert conf_problems(deployed, variant) == []
    assert ("listen 127.0.0.1:8088;", "") in conf_changes(deployed, variant)


def test_nginx_accepts_the_container_configuration(tmp_path: Path) -> None:
    nginx = find_nginx()
    conf = CONTAINER_NGINX_CONF.read_text()
    module = find_rtmp_module(nginx)
    assert conf.count("load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;") == 1
    (tmp_path / "nginx.conf").write_text(
        conf.replace("/usr/lib/nginx/modules/ngx_rtmp_module.so", str(module))
    )
    checked = subprocess.run(
        [
            nginx,
            "-t",
            "-c",
            str(tmp_path / "nginx.conf"),
            "-p",
            f"{tmp_path}/",
            "-g",
            f"error_log stderr; pid {tmp_path}/pid;",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stderr


# --- Compose ---------------------------------------------------------------------------------


def test_compose_fits_the_compose_spec_schema() -> None:
    spec = importlib.util.find_spec("check_jsonschema")  # its files, without importing it
    if spec is None or spec.origin is None:
        pytest.skip("the compose-spec schema comes with check-jsonschema: pip install check-jsonschema")
    schema_file = Path(spec.origin).parent / "builtin_schemas" / "vendor" / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    jsonschema.validators.validator_for(schema)(schema).validate(compose())


def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    version = (
        subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30) if docker else None
    )
    if docker is None or version is None or version.returncode != 0:
        pytest.skip("no Docker Compose plugin here (`docker compose version` fails)")
    env_file = tmp_path / ".env"
    env_file.write_text(ENV_EXAMPLE.read_text() + "RECORDER_SERVICE_KEY=x\nRECORDER_API_KEYS=y\n")
    checked = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE_FILE), "--env-file", str(env_file), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr


def test_compose_refers_to_what_it_defines() -> None:
    assert compose_problems(compose(), ENV_EXAMPLE.read_text()) == []


def test_compose_names_real_settings_and_build_files() -> None:
    services = compose()["services"]
    names = {
        key for s in services.values() for key in s.get("environment", {}) if key.startswith("RECORDER_")
    }
    assert names and names - setting_names() == set()
    for service in services.values():
        build = service.get("build")
        if build:
            context = (COMPOSE_DIR / build["context"]).resolve()
            dockerfile = context / build["dockerfile"]
            assert dockerfile.is_file(), dockerfile
            for source in re.findall(r"^COPY (.+) \S+$", dockerfile.read_text(), re.MULTILINE):
                for path in source.split():
                    assert (context / path).exists(), f"{dockerfile.name} copies {path}, which is not there"


def test_env_example_holds_no_secret() -> None:
    for line in ENV_EXAMPLE.read_text().splitlines():
        name, _, value = line.partition("=")
        if SECRET_NAME.search(name) and not line.startswith("#"):
            assert value in ("", "change-me"), f"{name} has a value in .env.example"


# --- the checks can fail ---------------------------------------------------------------------


def test_the_checks_find_planted_mistakes() -> None:
    template = json.loads(JOB_TEMPLATE.read_text())
    template["job_configuration"]["job_manifest"]["spec"]["backoffLimit"] = "{{ backof_limit }}"
    assert undeclared_placeholders(template) == {"backof_limit"}

    pod = {
        "containers": [
            {
                "name": "c",
                "image": "i",
                "env": [{"name": "RECORDER_SERVICE_KEY", "value": "inline"}],
                "resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}},
            },
            {"name": "d", "resources": {"requests": {"cpu": "100m"}}},
        ]
    }
    problems = " ".join(container_problems(pod, "x"))
    assert "RECORDER_SERVICE_KEY has a literal value" in problems
    assert "memory request 2Gi > limit 1Gi" in problems
    assert "x/d: no image" in problems
    assert manifest_problems({"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "s"}})
    assert parse_quantity("250m") == 0.25 and parse_quantity("1Gi") == 2**30

    spec = {
        "services": {
            "a": {
                "depends_on": {"nobody": {"condition": "service_healthy"}},
                "volumes": ["undeclared:/work"],
                "environment": {"X": "${NOT_DOCUMENTED}", "Y": "${REQUIRED:?set it}", "UNLISTED": None},
            }
        }
    }
    problems = " ".join(compose_problems(spec, "REQUIRED=\n"))
    assert "depends_on unknown service nobody" in problems
    assert "volume undeclared is not declared" in problems
    assert "${NOT_DOCUMENTED} has no default" in problems
    assert "UNLISTED is passed through" in problems
    assert "REQUIRED" not in problems

    deployed = DEPLOYED_NGINX_CONF.read_text()
    assert conf_problems(deployed, deployed.replace("deny play all;", "allow play all;"))
    assert conf_problems(deployed, deployed.replace("wait_key off;", "wait_key on;"))
