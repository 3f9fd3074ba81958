"""The deployment files in deploy/: valid for their tools, and consistent.

Offline and without Docker. Each file is checked against its schema:

- Kubernetes manifests (every document of every file in deploy/k8s) against
  the Kubernetes 1.30 OpenAPI schemas bundled by ``kubernetes-validate``, in
  strict mode (an unknown field is an error);
- KEDA's ScaledObject against the CRD's openAPIV3Schema, vendored in
  deploy/schemas (strict too);
- deploy/compose.yaml against the Compose Specification schema, vendored;
- deploy/k8s/nats-values.yaml against the keys the NATS chart's templates read;
- deploy/compose/nats.conf with ``nats-server -t``;

then against the facts a deployment relies on: probes on the metrics port,
non-root pods, PDBs that select their Deployment, KEDA triggers naming the
consumers of exactly the capabilities the worker Deployment serves (a wrong
name makes KEDA scale to the maximum), one image for coordinator and worker.

Every checker returns a list of problems; each has a test that feeds it a
broken copy, so a checker that accepts everything fails here.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate.utils as kubernetes_validate  # type: ignore[import-untyped]
import pytest
import typer.main
import yaml

from agenticflow.cli import app as cli_app
from agenticflow.cluster.nats_auth import WorkerGroup, generate
from agenticflow.cluster.nats_server import nats_server_binary
from agenticflow.shared.ops.config import Settings
from agenticflow.shared.wire.names import Names
from agenticflow.worker.app import load_app

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
BASE = K8S / "base"
DEV = K8S / "dev"
NATS_NS = K8S / "nats"
SECCOMP = K8S / "seccomp"
INIT_SH = BASE / "init" / "init.sh"
SCHEMAS = DEPLOY / "schemas"
COMPOSE_FILE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
NATS_VALUES = K8S / "nats-values.yaml"
KUSTOMIZATION = BASE / "kustomization.yaml"
NOT_MANIFESTS = {KUSTOMIZATION.name}
K8S_VERSION = "1.30"
"""Oldest Kubernetes the manifests must apply to (bundled by kubernetes-validate)."""
NATS_RELEASE = "nats"
"""The Helm release name deploy/README.md installs the NATS chart under."""

Doc = dict[str, Any]


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


def load_documents(path: Path) -> list[Doc]:
    """Every non-empty YAML document of a file."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def manifest_files() -> list[Path]:
    """The Kubernetes manifests in deploy/k8s/base (not its kustomization)."""
    return sorted(p for p in BASE.glob("*.yaml") if p.name not in NOT_MANIFESTS)


def manifests() -> list[Doc]:
    """Every document of every manifest file."""
    return [doc for path in manifest_files() for doc in load_documents(path)]


def of_kind(docs: Iterable[Doc], kind: str) -> list[Doc]:
    """The documents of one kind."""
    return [doc for doc in docs if doc.get("kind") == kind]


def one(docs: Iterable[Doc], kind: str, name: str) -> Doc:
    """The single document of a kind and name; fails the test if not exactly one."""
    found = [doc for doc in of_kind(docs, kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def load_json(path: Path) -> Doc:
    """A JSON file as a dict."""
    data: Doc = json.loads(path.read_text())
    return data


@dataclass
class K8s:
    """The parsed deployment: the objects the tests look at."""

    docs: list[Doc]
    coordinator: Doc
    worker: Doc
    configmap: Doc
    scaled_object: Doc
    nats_values: Doc

    @property
    def settings_env(self) -> dict[str, str]:
        """The ConfigMap's variables."""
        return {str(k): str(v) for k, v in self.configmap["data"].items()}


def load_k8s() -> K8s:
    """Parse deploy/k8s."""
    docs = manifests()
    return K8s(
        docs=docs,
        coordinator=one(docs, "Deployment", "agenticflow-coordinator"),
        worker=one(docs, "Deployment", "agenticflow-worker"),
        configmap=one(docs, "ConfigMap", "agenticflow-config"),
        scaled_object=one(docs, "ScaledObject", "agenticflow-worker"),
        nats_values=load_documents(NATS_VALUES)[0],
    )


@pytest.fixture(scope="module")
def k8s() -> K8s:
    """deploy/k8s, parsed once per module; tests deep-copy before breaking it."""
    return load_k8s()


@pytest.fixture(scope="module")
def compose() -> Doc:
    """deploy/compose.yaml, with YAML anchors and merge keys resolved."""
    data: Doc = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


# ---------------------------------------------------------------------------
# Validators
# ---------------------------------------------------------------------------


def kubernetes_problems(doc: Mapping[str, Any]) -> list[str]:
    """Problems of one built-in Kubernetes object against the OpenAPI schema."""
    try:
        kubernetes_validate.validate(dict(doc), K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        where = ".".join(str(part) for part in error.path)
        return [f"{doc.get('kind')}: {where}: {error.message}"]
    except kubernetes_validate.SchemaNotFoundError as error:
        return [f"{doc.get('kind')}: {error.message}"]
    return []


def strict(schema: Any) -> Any:
    """A CRD schema that rejects unknown fields, as ``kubectl --validate=strict``
    does: ``additionalProperties: false`` wherever an object lists its properties."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if "properties" in schema:
        # Property names are not schemas: keep them as they are.
        out["properties"] = {name: strict(sub) for name, sub in schema["properties"].items()}
    return out


def _schema_problems(validator: jsonschema.protocols.Validator, doc: Any) -> list[str]:
    return [
        f"{'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    ]


KEDA_VALIDATOR = jsonschema.Draft7Validator(
    strict(load_json(SCHEMAS / "keda-scaledobject-v1alpha1.json"))
)
COMPOSE_VALIDATOR = jsonschema.Draft7Validator(load_json(SCHEMAS / "compose-spec.json"))
"""compose-spec.json declares draft-07 (its ``$schema`` URL lacks the ``#`` that
jsonschema's lookup wants, hence the explicit class)."""


def keda_problems(doc: Mapping[str, Any]) -> list[str]:
    """Problems of a ScaledObject against KEDA's CRD schema."""
    return _schema_problems(KEDA_VALIDATOR, doc)


def compose_problems(doc: Mapping[str, Any]) -> list[str]:
    """Problems of a compose file against the Compose Specification."""
    return _schema_problems(COMPOSE_VALIDATOR, doc)


def manifest_problems(doc: Mapping[str, Any]) -> list[str]:
    """Schema problems of any manifest document: KEDA's CRD or Kubernetes'."""
    if str(doc.get("apiVersion", "")).startswith("keda.sh/"):
        return keda_problems(doc)
    return kubernetes_problems(doc)


FREE_FORM = "any"


def values_key_problems(values: Any, keys: Any, path: str = "") -> list[str]:
    """Keys of Helm values that the chart does not read (``keys``: the
    skeleton in deploy/schemas/nats-chart-values-keys.yaml)."""
    if keys == FREE_FORM:
        return []
    if keys is None:
        if isinstance(values, dict):
            return [f"{path}: the chart takes a scalar or a list here, not a map"]
        return []
    if not isinstance(values, dict):
        return [f"{path}: the chart takes a map here"]
    problems: list[str] = []
    for key, value in values.items():
        here = f"{path}.{key}" if path else str(key)
        if key not in keys:
            problems.append(f"{here}: not a value of the NATS chart")
        else:
            problems.extend(values_key_problems(value, keys[key], here))
    return problems


# ---------------------------------------------------------------------------
# Facts about the Kubernetes objects
# ---------------------------------------------------------------------------


def pod_spec(deployment: Mapping[str, Any]) -> Doc:
    """The pod template's spec."""
    spec: Doc = deployment["spec"]["template"]["spec"]
    return spec


def pod_labels(deployment: Mapping[str, Any]) -> dict[str, str]:
    """The pod template's labels."""
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"].get("labels", {})
    return labels


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a label selector (matchLabels only) selects these labels."""
    match = selector.get("matchLabels", {})
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def container_port(container: Mapping[str, Any], port: int | str) -> int | None:
    """A probe's port (a number or a container port's name) as a number."""
    if isinstance(port, int):
        return port
    for entry in container.get("ports", []):
        if entry.get("name") == port:
            number: int = entry["containerPort"]
            return number
    return None


def _probe_problems(container: Mapping[str, Any], where: str, metrics_port: int) -> list[str]:
    problems: list[str] = []
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        http = container.get(probe, {}).get("httpGet")
        if http is None:
            problems.append(f"{where}: no {probe} with httpGet")
            continue
        if http.get("path") != path:
            problems.append(f"{where}: {probe} reads {http.get('path')}, not {path}")
        if container_port(container, http.get("port", "")) != metrics_port:
            problems.append(
                f"{where}: {probe} port {http.get('port')} is not the metrics port "
                f"{metrics_port} (AGENTICFLOW_METRICS_PORT)"
            )
    return problems


def _container_problems(
    container: Mapping[str, Any], where: str, pod: Mapping[str, Any]
) -> list[str]:
    """Resources, a locked-down security context, a writable /tmp, the settings."""
    problems: list[str] = []
    resources = container.get("resources", {})
    for kind, needed in (("requests", ("cpu", "memory")), ("limits", ("memory",))):
        missing = [r for r in needed if r not in resources.get(kind, {})]
        if missing:
            problems.append(f"{where}: resources.{kind} lacks {', '.join(missing)}")
    security = container.get("securityContext", {})
    pod_security = pod.get("securityContext", {})
    if security.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{where}: allowPrivilegeEscalation is not false")
    if "ALL" not in security.get("capabilities", {}).get("drop", []):
        problems.append(f"{where}: capabilities do not drop ALL")
    seccomp = security.get("seccompProfile") or pod_security.get("seccompProfile") or {}
    shipped = SECCOMP / Path(str(seccomp.get("localhostProfile", "-"))).name
    if not (
        seccomp.get("type") == "RuntimeDefault"
        or (seccomp.get("type") == "Localhost" and shipped.is_file())
    ):
        problems.append(f"{where}: seccompProfile is not RuntimeDefault or one shipped in seccomp/")
    if security.get("readOnlyRootFilesystem") is not True:
        problems.append(f"{where}: the root filesystem is writable")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    tmp = [m for m in container.get("volumeMounts", []) if m.get("mountPath") == "/tmp"]
    if not tmp or "emptyDir" not in volumes.get(tmp[0]["name"], {}):
        problems.append(f"{where}: no emptyDir mounted on /tmp")
    if not any(
        ref.get("configMapRef", {}).get("name") == "agenticflow-config"
        for ref in container.get("envFrom", [])
    ):
        problems.append(f"{where}: settings not taken from the agenticflow-config ConfigMap")
    return problems


def deployment_problems(deployment: Mapping[str, Any], metrics_port: int) -> list[str]:
    """What a coordinator or worker Deployment must have: probes on the
    metrics port, resources, a non-root locked-down pod, a writable /tmp."""
    name = deployment["metadata"]["name"]
    problems: list[str] = []
    spec = pod_spec(deployment)
    if not selects(deployment["spec"]["selector"], pod_labels(deployment)):
        problems.append(f"{name}: the selector does not select the pod template")
    pod_security = spec.get("securityContext", {})
    if pod_security.get("runAsNonRoot") is not True:
        problems.append(f"{name}: pod securityContext.runAsNonRoot is not true")
    if pod_security.get("runAsUser", 0) == 0:
        problems.append(f"{name}: pod securityContext.runAsUser is missing or root")
    if spec.get("automountServiceAccountToken") is not False:
        problems.append(f"{name}: the pod mounts a service account token it does not need")
    for container in spec["containers"]:
        where = f"{name}/{container['name']}"
        problems.extend(_probe_problems(container, where, metrics_port))
        problems.extend(_container_problems(container, where, spec))
    return problems


def pdb_problems(pdbs: list[Doc], deployments: list[Doc]) -> list[str]:
    """Each Deployment has exactly one PDB, and each PDB selects exactly one
    Deployment's pods."""
    problems: list[str] = []
    for pdb in pdbs:
        selected = [
            d["metadata"]["name"]
            for d in deployments
            if selects(pdb["spec"].get("selector", {}), pod_labels(d))
        ]
        if len(selected) != 1:
            problems.append(f"PDB {pdb['metadata']['name']} selects {selected or 'no Deployment'}")
    for deployment in deployments:
        covering = [
            p for p in pdbs if selects(p["spec"].get("selector", {}), pod_labels(deployment))
        ]
        if len(covering) != 1:
            problems.append(
                f"Deployment {deployment['metadata']['name']} is covered by {len(covering)} PDBs"
            )
    return problems


def worker_app_spec(args: list[str]) -> str | None:
    """The ``--app module:attr`` of a worker command line."""
    for i, arg in enumerate(args):
        if arg == "--app" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--app="):
            return arg.removeprefix("--app=")
    return None


def cli_flag_problems(args: list[str]) -> list[str]:
    """Flags of an ``agenticflow`` command line that its subcommand does not have."""
    if not args:
        return ["empty command line"]
    group = typer.main.get_command(cli_app)
    command = getattr(group, "commands", {}).get(args[0])
    if command is None:
        return [f"agenticflow has no command {args[0]!r}"]
    known = {opt for param in command.params for opt in getattr(param, "opts", [])}
    return [
        f"agenticflow {args[0]} has no option {arg.split('=')[0]}"
        for arg in args[1:]
        if arg.startswith("--") and arg.split("=")[0] not in known
    ]


def expected_consumers(app_spec: str, prefix: str) -> set[str]:
    """The task consumer of every capability of an agent app."""
    names = Names(prefix)
    return {names.task_consumer(cap) for cap in load_app(app_spec).capabilities}


@dataclass
class NatsTopology:
    """Where the NATS chart's servers are, from the Helm values and release."""

    replicas: int
    monitor_port: int
    namespace: str = NATS_RELEASE
    release: str = NATS_RELEASE
    client_port: int = 4222
    tls: bool = False

    @property
    def headless(self) -> str:
        """DNS name of the chart's headless service."""
        return f"{self.release}-headless.{self.namespace}.svc.cluster.local"

    @property
    def client_urls(self) -> list[str]:
        """The URL of every server pod of the StatefulSet."""
        return [
            f"{'tls' if self.tls else 'nats'}://{self.release}-{i}.{self.headless}:{self.client_port}"
            for i in range(self.replicas)
        ]


def nats_topology(values: Mapping[str, Any]) -> NatsTopology:
    """The servers the NATS chart runs with these values."""
    config = values.get("config", {})
    return NatsTopology(
        replicas=int(config.get("cluster", {}).get("replicas", 1)),
        monitor_port=int(config.get("monitor", {}).get("port", 8222)),
        tls=bool(config.get("nats", {}).get("tls", {}).get("enabled", False)),
    )


def _target_problems(spec: Mapping[str, Any], worker: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    target = spec["scaleTargetRef"]
    if target.get("name") != worker["metadata"]["name"]:
        problems.append(f"scaleTargetRef names {target.get('name')!r}, not the worker Deployment")
    kind = (target.get("apiVersion", "apps/v1"), target.get("kind", "Deployment"))
    if kind != ("apps/v1", "Deployment"):
        problems.append("scaleTargetRef is not an apps/v1 Deployment")
    if not 1 <= spec.get("minReplicaCount", 0) <= spec.get("maxReplicaCount", 100):
        problems.append("minReplicaCount must be at least 1 (the workers create the consumers)")
    return problems


def _trigger_problems(
    trigger: Mapping[str, Any], consumers: set[str], stream: str, nats: NatsTopology
) -> list[str]:
    """One nats-jetstream trigger: a consumer of the app, the right stream,
    the NATS monitoring port, numbers as strings."""
    meta = trigger.get("metadata", {})
    label = trigger.get("name") or meta.get("consumer")
    if trigger.get("type") != "nats-jetstream":
        return [f"trigger {label}: type {trigger.get('type')!r}, not nats-jetstream"]
    problems: list[str] = []
    if meta.get("stream") != stream:
        problems.append(f"trigger {label}: stream {meta.get('stream')!r}, not {stream}")
    if meta.get("consumer") not in consumers:
        problems.append(
            f"trigger {label}: consumer {meta.get('consumer')!r} serves no capability of "
            "the worker's app (KEDA would scale to the maximum)"
        )
    if meta.get("account") != "$G":
        problems.append(f"trigger {label}: account {meta.get('account')!r}, not $G")
    endpoint = urlsplit(f"//{meta.get('natsServerMonitoringEndpoint', '')}")
    if endpoint.hostname != nats.headless or endpoint.port != nats.monitor_port:
        problems.append(
            f"trigger {label}: monitoring endpoint {endpoint.netloc!r}, not "
            f"{nats.headless}:{nats.monitor_port}"
        )
    problems.extend(
        f"trigger {label}: {key} is not a whole number"
        for key in ("lagThreshold", "activationLagThreshold")
        if not re.fullmatch(r"\d+", str(meta.get(key, "")))
    )
    if meta.get("useHttps", "false") not in ("true", "false"):
        problems.append(f"trigger {label}: useHttps is not 'true' or 'false'")
    return problems


def scaled_object_problems(
    scaled: Mapping[str, Any], worker: Mapping[str, Any], env: Mapping[str, str], nats: NatsTopology
) -> list[str]:
    """A KEDA ScaledObject scales the worker Deployment on the consumers of
    exactly the capabilities that Deployment serves, read from the right
    stream on the NATS monitoring port."""
    spec = scaled["spec"]
    problems = _target_problems(spec, worker)
    app_spec = worker_app_spec(pod_spec(worker)["containers"][0].get("args", []))
    if app_spec is None:
        return [*problems, "the worker Deployment runs no --app"]
    prefix = env.get("AGENTICFLOW_PREFIX", "af")
    wanted = expected_consumers(app_spec, prefix)
    stream = Names(prefix).tasks_stream
    for trigger in spec["triggers"]:
        problems.extend(_trigger_problems(trigger, wanted, stream, nats))
    seen = [t.get("metadata", {}).get("consumer", "") for t in spec["triggers"]]
    problems.extend(
        f"no trigger for consumer {consumer}: its backlog would not scale workers"
        for consumer in sorted(wanted - set(seen))
    )
    duplicates = sorted({c for c in seen if seen.count(c) > 1})
    if duplicates:
        problems.append(f"several triggers read {', '.join(duplicates)}")
    return problems


def settings_problems(env: Mapping[str, str], nats: NatsTopology) -> list[str]:
    """The ConfigMap's settings parse, and point at every NATS server with
    streams replicated on all of them."""
    # The variables as pydantic-settings reads them, minus the process's own
    # environment: validation only.
    fields = {
        key.removeprefix("AGENTICFLOW_").lower(): value
        for key, value in env.items()
        if key.startswith("AGENTICFLOW_")
    }
    try:
        settings = Settings.model_validate(fields)
    except ValueError as error:
        return [f"the settings do not parse: {error}"]
    problems: list[str] = []
    if settings.servers != nats.client_urls:
        problems.append(f"AGENTICFLOW_NATS_URL {settings.servers} is not {nats.client_urls}")
    if settings.replicas != nats.replicas:
        problems.append(f"AGENTICFLOW_REPLICAS {settings.replicas} != {nats.replicas} servers")
    if settings.metrics_port is None:
        problems.append("AGENTICFLOW_METRICS_PORT is unset: no probes, no metrics")
    return problems


# ---------------------------------------------------------------------------
# Dockerfile
# ---------------------------------------------------------------------------


@dataclass
class Stage:
    """One FROM ... stage of a Dockerfile."""

    base: str
    alias: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        """The arguments of every instruction with this keyword."""
        return [args for kw, args in self.instructions if kw == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages of a Dockerfile: line continuations joined, comments dropped,
    ``${ARG}`` in FROM replaced by the global ARG's default."""
    joined = re.sub(r"\\\n", " ", text)
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG" and not stages and "=" in rest:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), words[0])
            alias = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=base, alias=alias))
        elif stages:
            stages[-1].instructions.append((keyword, rest))
    return stages


def exec_form(args: str) -> list[str] | None:
    """The JSON array of an exec-form ENTRYPOINT/CMD, or None for shell form."""
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        return None
    return [str(v) for v in value] if isinstance(value, list) else None


def dockerfile_problems(text: str) -> list[str]:
    """A multi-stage build whose final stage is python:3.11-slim, holds the
    builder's virtualenv and the examples, runs as a fixed non-root uid, and
    starts ``agenticflow coordinator`` unless told otherwise."""
    stages = parse_dockerfile(text)
    if len(stages) < 2:
        return [f"{len(stages)} stage(s): not a multi-stage build"]
    problems: list[str] = []
    builder, final = stages[0], stages[-1]
    if not any(re.search(r"\bpip install (\S+ )*\.(\s|$)", run) for run in builder.all("RUN")):
        problems.append("the builder does not `pip install .` the project")
    if final.base != "python:3.11-slim":
        problems.append(f"the final stage is based on {final.base}, not python:3.11-slim")
    copies = final.all("COPY")
    if not any(c.startswith(f"--from={builder.alias} ") and "/opt/venv" in c for c in copies):
        problems.append("the final stage does not copy the builder's virtualenv")
    if not any(c.split()[0].rstrip("/") == "examples" for c in copies if c):
        problems.append("the final stage does not copy examples/ (the demo apps)")
    users = final.all("USER")
    uid = users[-1].split(":")[0] if users else ""
    if not uid.isdigit() or int(uid) == 0:
        problems.append(f"the final stage runs as {uid or 'root'}, not a fixed non-root uid")
    entrypoints, cmds = final.all("ENTRYPOINT"), final.all("CMD")
    if not entrypoints or exec_form(entrypoints[-1]) != ["agenticflow"]:
        problems.append('ENTRYPOINT is not ["agenticflow"]')
    if not cmds or exec_form(cmds[-1]) != ["coordinator"]:
        problems.append('CMD is not ["coordinator"]')
    return problems


def dockerignore_patterns() -> list[str]:
    """The patterns of the repository's .dockerignore."""
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex (Go's filepath.Match plus ``**``)."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "[" and "]" in pattern[i:]:
            end = pattern.index("]", i)
            out.append(pattern[i : end + 1])  # a character class, as in Go
            i = end + 1
        else:
            char = pattern[i]
            out.append({"*": "[^/]*", "?": "[^/]"}.get(char, re.escape(char)))
            i += 1
    return re.compile("".join(out))


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore leaves a path (or a directory above it) out of the
    build context; ours uses no ``!`` exceptions."""
    parts = Path(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    regexes = [_pattern_regex(p.strip("/")) for p in patterns]
    return any(regex.fullmatch(prefix) for prefix in prefixes for regex in regexes)


def copied_sources(stages: list[Stage]) -> Iterator[str]:
    """The build-context paths every COPY (not ``--from``) reads."""
    for stage in stages:
        for args in stage.all("COPY"):
            words = [w for w in shlex.split(args) if not w.startswith("--")]
            if args.startswith("--from="):
                continue
            yield from words[:-1]


# ---------------------------------------------------------------------------
# Compose
# ---------------------------------------------------------------------------


def compose_env(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's environment as a dict (map or list form)."""
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def default_services(doc: Mapping[str, Any]) -> dict[str, Doc]:
    """The services ``docker compose up`` starts (no profile)."""
    return {name: svc for name, svc in doc["services"].items() if not svc.get("profiles")}


def nats_services(doc: Mapping[str, Any]) -> dict[str, Doc]:
    """The compose services of the default profile running nats-server."""
    return {
        name: svc
        for name, svc in default_services(doc).items()
        if str(svc.get("image", "")).split("/")[-1].startswith(("nats:", "${NATS_IMAGE:-nats:"))
    }


def init_script(doc: Mapping[str, Any]) -> str:
    """The init service's shell script, as the container runs it (``$$`` is ``$``)."""
    command = doc["services"].get("init", {}).get("command", [""])
    return str(command[-1]).replace("$$", "$")


def route_hosts(doc: Mapping[str, Any]) -> set[str]:
    """The NATS nodes init writes routes to (cluster.conf)."""
    env = compose_env(doc["services"].get("init", {}))
    return set(env.get("NATS_ROUTE_HOSTS", "").split())


def mounted_confs(svc: Mapping[str, Any]) -> list[Path]:
    """The nats-server configurations a service bind-mounts from deploy/."""
    mounts = [str(v) for v in svc.get("volumes", [])]
    return [COMPOSE_FILE.parent / v.split(":")[0] for v in mounts if ".conf:" in v]


def _nats_node_problems(doc: Mapping[str, Any]) -> list[str]:
    """Three NATS nodes, each with its own named volume on /data, a config,
    and init's routes naming all of them."""
    nats = nats_services(doc)
    problems = [] if len(nats) == 3 else [f"{len(nats)} NATS services, not 3"]
    volumes: list[str] = []
    for name, svc in nats.items():
        mounts = [str(v) for v in svc.get("volumes", [])]
        data = [v.split(":")[0] for v in mounts if v.split(":")[1:2] == ["/data"]]
        if len(data) != 1 or data[0] not in (doc.get("volumes") or {}):
            problems.append(f"{name}: no named volume of its own on /data")
        volumes.extend(data)
        confs = mounted_confs(svc)
        if not confs or not all(conf.is_file() for conf in confs):
            problems.append(f"{name}: no nats-server configuration mounted")
    if route_hosts(doc) != set(nats):
        problems.append("init's NATS_ROUTE_HOSTS do not name every NATS node")
    if len(set(volumes)) != len(volumes):
        problems.append("NATS nodes share a volume")
    return problems


def _agenticflow_service_problems(
    name: str, svc: Mapping[str, Any], servers: set[str]
) -> list[str]:
    """A coordinator or worker service: every node, R3, a healthcheck on the
    metrics port, real CLI flags."""
    problems: list[str] = []
    env = compose_env(svc)
    if set(env.get("AGENTICFLOW_NATS_URL", "").split(",")) != servers:
        problems.append(f"{name}: AGENTICFLOW_NATS_URL does not list every NATS node")
    if env.get("AGENTICFLOW_REPLICAS") != "3":
        problems.append(f"{name}: AGENTICFLOW_REPLICAS is not 3")
    port = env.get("AGENTICFLOW_METRICS_PORT", "")
    test = " ".join(svc.get("healthcheck", {}).get("test", []))
    if not port or f":{port}/healthz" not in test:
        problems.append(f"{name}: the healthcheck does not read /healthz on the metrics port")
    if svc.get("user") in ("root", "0", "0:0"):
        problems.append(f"{name}: runs as root")
    problems.extend(f"{name}: {p}" for p in cli_flag_problems(list(svc.get("command", []))))
    return problems


def compose_problems_semantic(doc: Mapping[str, Any]) -> list[str]:
    """What deploy/compose.yaml promises: a 3-node NATS cluster with a volume
    each, workers that scale (no fixed name, no host port), every AgenticFlow
    process pointed at all nodes with R3 streams, healthchecks."""
    services: dict[str, Doc] = doc["services"]
    problems = _nats_node_problems(doc)
    servers = {f"tls://{name}:4222" for name in nats_services(doc)}
    for name in ("coordinator", "worker"):
        if name not in services:
            problems.append(f"no {name} service")
        else:
            problems.extend(_agenticflow_service_problems(name, services[name], servers))
    worker = services.get("worker", {})
    if "container_name" in worker:
        problems.append("worker: container_name prevents --scale worker=N")
    if worker.get("ports"):
        problems.append("worker: ports prevent --scale worker=N (host ports clash)")
    problems.extend(
        f"{name}: no healthcheck"
        for name, svc in default_services(doc).items()
        if name != "init" and "healthcheck" not in svc
    )
    return problems


# ---------------------------------------------------------------------------
# Compose: secure by default
# ---------------------------------------------------------------------------

SECRETS_MOUNT = "/etc/agenticflow"
"""Where init generates everything, and where every other service mounts its
role's volume (so the paths nats-config writes hold in every container)."""
EXPORT_ROOT = "/srv/agenticflow"
SECRET_SUFFIXES = (".nk", ".key", "-key.pem", "data-keys.json", "cluster.conf")
"""Files that hold a secret (a seed, a signing or TLS key, the data key, the
route password)."""


def shared_files(doc: Mapping[str, Any]) -> dict[str, list[str]]:
    """Role volume (as init mounts it) -> the files init's ``share`` copies there."""
    init = doc["services"].get("init", {})
    mounts = {target: source for source, target in _volume_pairs(init)}
    shared: dict[str, list[str]] = {}
    for line in init_script(doc).splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "share":
            volume = mounts.get(f"{EXPORT_ROOT}/{words[1]}", f"<unmounted {words[1]}>")
            shared[volume] = words[2:]
    return shared


def _volume_pairs(svc: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(named volume, mount path) of a service's short-syntax volumes."""
    pairs = []
    for entry in svc.get("volumes", []):
        source, target = [*str(entry).split(":"), ""][:2]
        if not source.startswith((".", "/")):
            pairs.append((source, target))
    return pairs


def secret_volume(svc: Mapping[str, Any]) -> str | None:
    """The named volume a service mounts on /etc/agenticflow."""
    found = [source for source, target in _volume_pairs(svc) if target == SECRETS_MOUNT]
    return found[0] if len(found) == 1 else None


def _role_files_problems(name: str, svc: Mapping[str, Any], shared: list[str]) -> list[str]:
    """An AgenticFlow service: TLS, its own NATS seed and signing key from its
    own volume, and no secret of another role there."""
    env = compose_env(svc)
    problems: list[str] = []
    if not env.get("AGENTICFLOW_NATS_URL", "").startswith("tls://"):
        problems.append(f"{name}: AGENTICFLOW_NATS_URL is not tls://")
    wanted = {
        "AGENTICFLOW_NATS_TLS_CA_FILE": "nats/ca.pem",
        "AGENTICFLOW_NATS_NKEY_SEED_FILE": None,
        "AGENTICFLOW_SECURITY_DIR": "keys",
    }
    for key, expected in wanted.items():
        value = env.get(key, "")
        if not value.startswith(SECRETS_MOUNT + "/"):
            problems.append(f"{name}: {key} is not in its own volume ({SECRETS_MOUNT})")
        elif expected is not None and value != f"{SECRETS_MOUNT}/{expected}":
            problems.append(f"{name}: {key} is {value}, not {SECRETS_MOUNT}/{expected}")
    seed = env.get("AGENTICFLOW_NATS_NKEY_SEED_FILE", "").removeprefix(SECRETS_MOUNT + "/")
    principal = env.get("AGENTICFLOW_PRINCIPAL") or str((svc.get("command") or [""])[0])
    own = {seed, f"keys/{principal}.key"}
    missing = sorted(own - set(shared))
    if missing:
        problems.append(f"{name}: init does not give it {', '.join(missing)}")
    foreign = sorted(f for f in shared if f.endswith(SECRET_SUFFIXES[:3]) and f not in own)
    foreign += [f for f in shared if f.endswith("cluster.conf")]
    if foreign:
        problems.append(f"{name}: its volume holds other roles' secrets: {', '.join(foreign)}")
    return problems


NATS_FILES = [
    "nats/cluster.conf",
    "nats/nats-server.conf",
    "nats/server-key.pem",
    "nats/server.pem",
]
"""What init gives the NATS nodes: no client seed, no signing key, no CA key."""


def _nats_conf_problems(name: str, conf: Path) -> list[str]:
    """A node's config includes init's users, TLS and routes, and keeps
    monitoring on loopback."""
    text = conf.read_text() if conf.is_file() else ""
    problems = [
        f"{name}: {conf.name} does not include {needed} (init's)"
        for needed in ("nats/nats-server.conf", "nats/cluster.conf")
        if not re.search(rf'^\s*include\s+"[^"]*{re.escape(needed)}"', text, re.M)
    ]
    http = re.findall(r"^\s*http(?:_port)?\s*:\s*(\S+)", text, re.M)
    if http != ["127.0.0.1:8222"]:
        problems.append(f"{name}: monitoring on {http or 'nothing'}, not 127.0.0.1:8222")
    if re.search(r"^\s*(no_auth_user|authorization)\b", text, re.M):
        problems.append(f"{name}: {conf.name} changes the users init generated")
    return problems


def _volume_sharing_problems(services: Mapping[str, Doc]) -> list[str]:
    """Only init mounts the volume holding everything; no two roles share one."""
    users: dict[str, list[str]] = {}
    for name, svc in services.items():
        for source, _ in _volume_pairs(svc):
            if source.endswith("secrets"):
                users.setdefault(source, []).append(name)
    problems = []
    if users.get("secrets") != ["init"]:
        problems.append(f"the volume holding every secret is mounted by {users.get('secrets')}")
    for volume, mounted_by in users.items():
        kinds = {"nats" if n.startswith("nats-") else n for n in mounted_by} - {"init"}
        if volume != "secrets" and len(kinds) > 1:
            problems.append(f"{volume} is shared by {sorted(kinds)}")
    return problems


def compose_security_problems(doc: Mapping[str, Any]) -> list[str]:
    """The default profile is secure: NATS with TLS and users (the init's
    nats-config output included), monitoring on loopback, no host port; every
    AgenticFlow service reads its own role's volume and nothing else; only init
    mounts the volume holding everything."""
    services: dict[str, Doc] = doc["services"]
    problems: list[str] = []
    shared = shared_files(doc)
    for name, svc in nats_services(doc).items():
        if svc.get("ports"):
            problems.append(f"{name}: publishes {svc['ports']} on the host")
        for conf in mounted_confs(svc):
            problems.extend(_nats_conf_problems(name, conf))
        files = sorted(shared.get(secret_volume(svc) or "", []))
        if files != NATS_FILES:
            problems.append(f"{name}: its volume is not the NATS files of init ({files})")
    for name in ("coordinator", "worker", "cli"):
        role: Doc | None = services.get(name)
        volume = secret_volume(role) if role is not None else None
        if role is None or volume is None:
            problems.append(f"{name}: no service with a role volume on {SECRETS_MOUNT}")
            continue
        problems.extend(_role_files_problems(name, role, shared.get(volume, [])))
    return problems + _volume_sharing_problems(services)


def insecure_services(doc: Mapping[str, Any]) -> list[str]:
    """Services that talk to NATS without TLS or run NATS without users."""
    found = []
    for name, svc in doc["services"].items():
        env = compose_env(svc)
        url = env.get("AGENTICFLOW_NATS_URL", "")
        if url and not url.startswith("tls://"):
            found.append(name)
        image = str(svc.get("image", ""))
        if "nats:" in image and "--config" not in svc.get("command", []):
            found.append(name)
    return found


# ===========================================================================
# Tests: Kubernetes schemas
# ===========================================================================


def test_every_manifest_document_is_valid_for_its_schema() -> None:
    docs = manifests()
    kinds = sorted({doc["kind"] for doc in docs})
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "Job",
        "Namespace",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "ScaledObject",
        "Service",
        "ServiceAccount",
    ]
    nats_docs = [doc for path in sorted(NATS_NS.glob("*.yaml")) for doc in load_documents(path)]
    docs += [doc for doc in nats_docs if doc.get("kind") != "Kustomization"]
    problems = [p for doc in docs for p in manifest_problems(doc)]
    assert problems == []


def test_kubernetes_validation_rejects_an_unknown_field_and_a_wrong_type(k8s: K8s) -> None:
    typo = copy.deepcopy(k8s.worker)
    container = pod_spec(typo)["containers"][0]
    container["resource"] = container.pop("resources")
    assert any("resource" in p for p in kubernetes_problems(typo))
    wrong_type = copy.deepcopy(k8s.coordinator)
    wrong_type["spec"]["replicas"] = "two"
    assert kubernetes_problems(wrong_type) != []
    assert kubernetes_problems({"apiVersion": "v1", "kind": "Nonsense", "metadata": {}}) != []


def test_the_keda_schema_rejects_unknown_fields_and_non_string_metadata(k8s: K8s) -> None:
    assert keda_problems(k8s.scaled_object) == []
    unknown = copy.deepcopy(k8s.scaled_object)
    unknown["spec"]["maxReplicas"] = 5  # the HPA's name for maxReplicaCount
    assert any("maxReplicas" in p for p in keda_problems(unknown))
    number = copy.deepcopy(k8s.scaled_object)
    number["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 8  # KEDA takes strings
    assert any("lagThreshold" in p for p in keda_problems(number))
    untyped = copy.deepcopy(k8s.scaled_object)
    del untyped["spec"]["triggers"][0]["type"]
    assert any("'type' is a required property" in p for p in keda_problems(untyped))


def test_kustomization_lists_every_manifest_in_one_namespace(k8s: K8s) -> None:
    kustomization = load_documents(KUSTOMIZATION)[0]
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == [p.name for p in manifest_files()]
    namespace = kustomization["namespace"]
    assert [ns["metadata"]["name"] for ns in of_kind(k8s.docs, "Namespace")] == [namespace]
    assert {doc["metadata"].get("namespace") for doc in k8s.docs if doc["kind"] != "Namespace"} == {
        namespace
    }
    images = {image["name"] for image in kustomization.get("images", [])}
    used = {
        c["image"].split(":")[0]
        for d in of_kind(k8s.docs, "Deployment")
        for c in pod_spec(d)["containers"]
    }
    assert used == images == {"agenticflow"}, "one image for coordinator and worker"


# ===========================================================================
# Tests: Kubernetes semantics
# ===========================================================================


def test_deployments_probe_the_metrics_port_and_run_locked_down(k8s: K8s) -> None:
    port = int(k8s.settings_env["AGENTICFLOW_METRICS_PORT"])
    for deployment in (k8s.coordinator, k8s.worker):
        assert deployment_problems(deployment, port) == []


def test_deployment_checks_catch_a_probe_on_the_wrong_port_and_root(k8s: K8s) -> None:
    port = int(k8s.settings_env["AGENTICFLOW_METRICS_PORT"])
    broken = copy.deepcopy(k8s.worker)
    container = pod_spec(broken)["containers"][0]
    container["readinessProbe"]["httpGet"]["port"] = port + 1
    container["livenessProbe"]["httpGet"]["path"] = "/metrics"
    pod_spec(broken)["securityContext"]["runAsUser"] = 0
    del container["resources"]["limits"]
    container["securityContext"]["readOnlyRootFilesystem"] = False
    problems = " | ".join(deployment_problems(broken, port))
    for expected in (
        "readinessProbe port",
        "livenessProbe reads /metrics",
        "runAsUser",
        "resources.limits",
        "root filesystem is writable",
    ):
        assert expected in problems


def test_coordinators_are_two_active_partition_owners(k8s: K8s) -> None:
    assert k8s.coordinator["spec"]["replicas"] == 2
    assert pod_spec(k8s.coordinator)["containers"][0]["args"] == ["coordinator"]
    partitions = int(k8s.settings_env["AGENTICFLOW_PARTITIONS"])
    assert partitions >= k8s.coordinator["spec"]["replicas"], "a coordinator without a partition"


def test_the_worker_deployment_leaves_its_replica_count_to_keda(k8s: K8s) -> None:
    assert "replicas" not in k8s.worker["spec"]
    args = pod_spec(k8s.worker)["containers"][0]["args"]
    assert args[0] == "worker"
    assert cli_flag_problems(args) == []
    assert cli_flag_problems(["worker", "--app", "x:y", "--concurency", "8"]) == [
        "agenticflow worker has no option --concurency"
    ]


def test_each_deployment_has_one_pdb_selecting_its_pods(k8s: K8s) -> None:
    pdbs = of_kind(k8s.docs, "PodDisruptionBudget")
    deployments = of_kind(k8s.docs, "Deployment")
    assert pdb_problems(pdbs, deployments) == []
    loose = copy.deepcopy(pdbs)
    loose[0]["spec"]["selector"]["matchLabels"] = {"app.kubernetes.io/name": "agenticflow"}
    assert pdb_problems(loose, deployments) != []  # now it selects both Deployments
    assert pdb_problems(pdbs[:1], deployments) != []  # one Deployment left without


def test_the_metrics_service_reaches_every_agenticflow_pod(k8s: K8s) -> None:
    (service,) = of_kind(k8s.docs, "Service")
    port = int(k8s.settings_env["AGENTICFLOW_METRICS_PORT"])
    for deployment in (k8s.coordinator, k8s.worker):
        assert selects({"matchLabels": service["spec"]["selector"]}, pod_labels(deployment))
        container = pod_spec(deployment)["containers"][0]
        for entry in service["spec"]["ports"]:
            assert container_port(container, entry["targetPort"]) == port


def test_the_configmap_settings_point_at_every_nats_server(k8s: K8s) -> None:
    nats = nats_topology(k8s.nats_values)
    assert nats.replicas == 3
    assert settings_problems(k8s.settings_env, nats) == []
    two_servers = dict(k8s.settings_env, AGENTICFLOW_NATS_URL=",".join(nats.client_urls[:2]))
    assert "AGENTICFLOW_NATS_URL" in settings_problems(two_servers, nats)[0]
    r1 = dict(k8s.settings_env, AGENTICFLOW_REPLICAS="1")
    assert any("AGENTICFLOW_REPLICAS" in p for p in settings_problems(r1, nats))
    assert "do not parse" in settings_problems(dict(r1, AGENTICFLOW_REPLICAS="9"), nats)[0]


# ===========================================================================
# Tests: KEDA autoscaling
# ===========================================================================


def test_keda_scales_the_worker_on_exactly_its_apps_consumers(k8s: K8s) -> None:
    nats = nats_topology(k8s.nats_values)
    assert scaled_object_problems(k8s.scaled_object, k8s.worker, k8s.settings_env, nats) == []
    app_spec = worker_app_spec(pod_spec(k8s.worker)["containers"][0]["args"])
    assert app_spec == "agenticflow.examples.customer_service.app:app"
    consumers = {t["metadata"]["consumer"] for t in k8s.scaled_object["spec"]["triggers"]}
    names = Names(k8s.settings_env["AGENTICFLOW_PREFIX"])
    assert consumers == {names.task_consumer(c) for c in load_app(app_spec).capabilities}
    assert {t["metadata"]["stream"] for t in k8s.scaled_object["spec"]["triggers"]} == {"AF_TASKS"}


def test_keda_checks_catch_a_wrong_consumer_stream_target_and_a_missing_trigger(
    k8s: K8s,
) -> None:
    nats = nats_topology(k8s.nats_values)

    def problems_after(change: str) -> str:
        scaled = copy.deepcopy(k8s.scaled_object)
        triggers = scaled["spec"]["triggers"]
        if change == "consumer":
            triggers[0]["metadata"]["consumer"] = "task_triag"
        elif change == "stream":
            triggers[1]["metadata"]["stream"] = "TASKS"
        elif change == "target":
            scaled["spec"]["scaleTargetRef"]["name"] = "agenticflow-workers"
        elif change == "missing":
            triggers.pop()
        elif change == "port":
            triggers[0]["metadata"]["natsServerMonitoringEndpoint"] = f"{nats.headless}:4222"
        return " | ".join(scaled_object_problems(scaled, k8s.worker, k8s.settings_env, nats))

    assert "consumer 'task_triag' serves no capability" in problems_after("consumer")
    assert "stream 'TASKS', not AF_TASKS" in problems_after("stream")
    assert "scaleTargetRef names 'agenticflow-workers'" in problems_after("target")
    assert "no trigger for consumer task_manager_escalation" in problems_after("missing")
    assert "monitoring endpoint" in problems_after("port")
    other_prefix = dict(k8s.settings_env, AGENTICFLOW_PREFIX="shop")
    assert "not SHOP_TASKS" in " ".join(
        scaled_object_problems(k8s.scaled_object, k8s.worker, other_prefix, nats)
    )


def test_one_scaled_object_per_scale_target(k8s: K8s) -> None:
    targets = [so["spec"]["scaleTargetRef"]["name"] for so in of_kind(k8s.docs, "ScaledObject")]
    assert sorted(targets) == sorted(set(targets)), "KEDA refuses two ScaledObjects per target"


# ===========================================================================
# Tests: NATS Helm values
# ===========================================================================


def test_nats_values_use_only_keys_the_chart_reads(k8s: K8s) -> None:
    keys = load_documents(SCHEMAS / "nats-chart-values-keys.yaml")[0]
    assert values_key_problems(k8s.nats_values, keys) == []
    old = copy.deepcopy(k8s.nats_values)
    old["config"]["jetstream"]["fileStorage"] = {"enabled": True}  # the 0.x chart's key
    old["cluster"] = {"enabled": True}  # 0.x: top-level
    assert values_key_problems(old, keys) == [
        "config.jetstream.fileStorage: not a value of the NATS chart",
        "cluster: not a value of the NATS chart",
    ]
    assert values_key_problems({"config": {"monitor": {"port": {"x": 1}}}}, keys) != []


def test_nats_values_give_a_3_node_jetstream_cluster_on_disk_with_monitoring(k8s: K8s) -> None:
    config = k8s.nats_values["config"]
    assert {k: config["cluster"][k] for k in ("enabled", "replicas")} == {
        "enabled": True,
        "replicas": 3,
    }
    jetstream = config["jetstream"]
    assert jetstream["enabled"] is True
    assert jetstream["fileStore"]["enabled"] is True
    assert jetstream["fileStore"]["pvc"]["enabled"] is True
    assert re.fullmatch(r"\d+[GT]i", jetstream["fileStore"]["pvc"]["size"])
    assert config["monitor"] == {"enabled": True, "port": 8222}
    assert k8s.nats_values["container"]["image"]["tag"].startswith("2.11")


# ===========================================================================
# Tests: Kubernetes, secure by default
# ===========================================================================

ROLE_SECRETS = {
    "agenticflow-coordinator": ("coordinator", "coordinator.nk"),
    "agenticflow-worker": ("worker", "worker-agents.nk"),
}


def init_secrets() -> dict[str, str]:
    """NAMESPACE/NAME -> role directory, as init/init.sh publishes them."""
    found = re.search(r'^secrets_list="([^"]*)"', INIT_SH.read_text(), re.M)
    assert found is not None, "init.sh names no Secrets"
    return dict(item.split("=", 1) for item in found.group(1).split())


def init_shares(script: str) -> dict[str, list[str]]:
    """Role directory -> the files a script's ``share`` lines give it."""
    shares: dict[str, list[str]] = {}
    for line in script.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "share":
            shares[words[1]] = words[2:]
    return shares


def credentials_problems(deployment: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """A Deployment mounts exactly one Secret, its own role's, on
    /etc/agenticflow, with the files init gives that role and nothing else, and
    its settings point into it."""
    name = deployment["metadata"]["name"]
    role, seed_file = ROLE_SECRETS.get(name, ("?", "?"))
    spec = pod_spec(deployment)
    secrets = [v for v in spec.get("volumes", []) if "secret" in v]
    problems: list[str] = []
    if [v["secret"]["secretName"] for v in secrets] != [name]:
        return [
            f"{name}: mounts Secrets {[v['secret']['secretName'] for v in secrets]}, not {name}"
        ]
    items = {i["key"]: i["path"] for i in secrets[0]["secret"].get("items", [])}
    published = init_shares(INIT_SH.read_text()).get(init_secrets().get(f"agenticflow/{name}", ""))
    if published is None:
        problems.append(f"{name}: the init Job does not publish its Secret")
    elif sorted(items.values()) != sorted(published):
        problems.append(f"{name}: mounts {sorted(items.values())}, init gives {sorted(published)}")
    mounts = [
        m
        for c in spec["containers"]
        for m in c.get("volumeMounts", [])
        if m["name"] == secrets[0]["name"]
    ]
    if [m["mountPath"] for m in mounts] != [SECRETS_MOUNT] or not mounts[0].get("readOnly"):
        problems.append(f"{name}: its Secret is not mounted read-only on {SECRETS_MOUNT}")
    container_env = {
        e["name"]: e.get("value", "") for c in spec["containers"] for e in c.get("env", [])
    }
    merged = {**env, **container_env}
    expected = {
        "AGENTICFLOW_NATS_NKEY_SEED_FILE": f"{SECRETS_MOUNT}/nats/{seed_file}",
        "AGENTICFLOW_NATS_TLS_CA_FILE": f"{SECRETS_MOUNT}/nats/ca.pem",
        "AGENTICFLOW_SECURITY_DIR": f"{SECRETS_MOUNT}/keys",
        "AGENTICFLOW_PRINCIPAL": role,
    }
    problems.extend(
        f"{name}: {k} is {merged.get(k)!r}, not {v!r}"
        for k, v in expected.items()
        if merged.get(k) != v
    )
    if f"nats/{seed_file}" not in items.values() or f"keys/{role}.key" not in items.values():
        problems.append(f"{name}: its own seed or signing key is not mounted")
    return problems


def test_every_pod_mounts_only_its_own_roles_secret(k8s: K8s) -> None:
    for deployment in (k8s.coordinator, k8s.worker):
        assert credentials_problems(deployment, k8s.settings_env) == []
    # Only the init Job's pod gets an API token (it creates the Secrets).
    tokens = [
        d["metadata"]["name"]
        for d in k8s.docs
        if d["kind"] in ("Deployment", "Job")
        and pod_spec(d).get("automountServiceAccountToken") is not False
    ]
    assert tokens == ["agenticflow-init"]
    assert init_secrets() == {
        "agenticflow/agenticflow-coordinator": "coordinator",
        "agenticflow/agenticflow-worker": "worker",
        "agenticflow/agenticflow-cli": "cli",
        "nats/nats-auth": "nats",
    }


def test_credential_checks_catch_a_foreign_secret_and_an_extra_key(k8s: K8s) -> None:
    worker = copy.deepcopy(k8s.worker)
    pod_spec(worker)["volumes"][-1]["secret"]["secretName"] = "agenticflow-coordinator"
    assert (
        "mounts Secrets ['agenticflow-coordinator']"
        in credentials_problems(worker, k8s.settings_env)[0]
    )
    worker = copy.deepcopy(k8s.worker)
    items = pod_spec(worker)["volumes"][-1]["secret"]["items"]
    items.append({"key": "coordinator.key", "path": "keys/coordinator.key"})
    assert "init gives" in " ".join(credentials_problems(worker, k8s.settings_env))
    env = dict(k8s.settings_env, AGENTICFLOW_SECURITY_DIR="/tmp/keys")
    assert "AGENTICFLOW_SECURITY_DIR" in " ".join(credentials_problems(k8s.worker, env))


def test_the_k8s_init_job_generates_what_the_compose_init_does(compose: Doc) -> None:
    """Same commands (nats-config, keys init, route password) and the same
    files per role; only NATS's share differs (the chart writes its own config)."""
    k8s_script = INIT_SH.read_text()
    compose_lines = [
        line
        for line in init_script(compose).splitlines()
        if not line.startswith(("share nats ", "echo "))
    ]
    k8s_lines = k8s_script.splitlines()
    start = k8s_lines.index(compose_lines[0])
    assert k8s_lines[start : start + len(compose_lines)] == compose_lines
    shares = init_shares(k8s_script)
    assert {r: f for r, f in shares.items() if r != "nats"} == {
        r: f for r, f in init_shares(init_script(compose)).items() if r != "nats"
    }
    assert sorted(shares["nats"]) == ["nats/cluster.conf", "nats/server-key.pem", "nats/server.pem"]
    assert "sed -n '/^authorization {/,$p'" in k8s_script  # the users block, into auth.conf
    job = one(manifests(), "Job", "agenticflow-init")
    (container,) = pod_spec(job)["containers"]
    mounted = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(job)["volumes"]}
    for path in (SECRETS_MOUNT, EXPORT_ROOT):
        assert volumes[mounted[path]]["emptyDir"]["medium"] == "Memory", path
    assert container["command"] == ["sh", "/opt/agenticflow-init/init.sh"]
    generator = load_documents(KUSTOMIZATION)[0]["configMapGenerator"][0]
    assert generator["files"] == ["init/init.sh", "init/publish_secrets.py"]
    assert volumes[mounted["/opt/agenticflow-init"]]["configMap"]["name"] == generator["name"]
    hosts = {e["name"]: e.get("value") for e in container["env"]}["NATS_ROUTE_HOSTS"].split()
    assert hosts == [f"{NATS_RELEASE}-{i}.{NATS_RELEASE}-headless" for i in range(3)]


def test_nats_values_turn_on_tls_users_and_route_credentials(k8s: K8s) -> None:
    config = k8s.nats_values["config"]
    tls = config["nats"]["tls"]
    assert tls == {
        "enabled": True,
        "secretName": "nats-auth",
        "cert": "server.pem",
        "key": "server-key.pem",
    }
    # The chart mounts the secret on /etc/nats-certs/nats; includes are
    # relative to /etc/nats-config.
    assert config["merge"]["00$include"] == "../nats-certs/nats/auth.conf"
    assert config["cluster"]["merge"]["00$include"] == "../nats-certs/nats/cluster.conf"
    assert {"op": "remove", "path": "/routes"} in config["cluster"]["patch"]
    assert "nats/nats-auth" in init_secrets()
    assert "routeURLs" not in config["cluster"], "route credentials in values would be public"
    dev = load_documents(DEV / "nats-values.yaml")[0]["config"]
    assert "tls" not in dev.get("nats", {})
    assert "00$include" not in dev.get("merge", {})


def test_the_nats_network_policy_admits_clients_peers_and_keda_only() -> None:
    (policy,) = [
        d for d in load_documents(NATS_NS / "network-policy.yaml") if d["kind"] == "NetworkPolicy"
    ]
    assert kubernetes_problems(policy) == []
    assert policy["metadata"]["namespace"] == NATS_RELEASE
    labels = {"app.kubernetes.io/name": "nats", "app.kubernetes.io/component": "nats"}
    assert policy["spec"]["podSelector"]["matchLabels"] == labels  # the chart's pod labels
    rules = {rule["ports"][0]["port"]: rule["from"][0] for rule in policy["spec"]["ingress"]}
    assert rules == {
        4222: {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "agenticflow"}}
        },
        6222: {"podSelector": {"matchLabels": labels}},
        8222: {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}},
    }
    rbac = {d["kind"]: d for d in load_documents(NATS_NS / "init-rbac.yaml")}
    assert rbac["RoleBinding"]["subjects"] == [
        {"kind": "ServiceAccount", "name": "agenticflow-init", "namespace": "agenticflow"}
    ]
    assert rbac["Role"]["rules"][1]["resourceNames"] == ["nats-auth"]


def seccomp_problems(profile: Mapping[str, Any]) -> list[str]:
    """A Localhost profile that denies by default and allows, beyond what
    RuntimeDefault allows a container without capabilities, only unshare of
    user, pid and network namespaces, and chroot."""
    problems: list[str] = []
    if profile.get("defaultAction") != "SCMP_ACT_ERRNO":
        problems.append(f"defaultAction is {profile.get('defaultAction')}, not SCMP_ACT_ERRNO")
    allowed: dict[str, list[Any]] = {}
    for rule in profile.get("syscalls", []):
        if rule.get("action") == "SCMP_ACT_ALLOW":
            for name in rule["names"]:
                allowed.setdefault(name, []).append(rule.get("args"))
    never = (
        "mount",
        "umount2",
        "setns",
        "bpf",
        "pivot_root",
        "init_module",
        "kexec_load",
        "clone3",
    )
    problems.extend(f"allows {name}" for name in never if name in allowed)
    unshare = allowed.get("unshare", [])
    sandbox = 0x10000000 | 0x20000000 | 0x40000000
    wanted = [
        [{"index": 0, "value": 0xFFFFFFFF & ~sandbox, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]
    ]
    if unshare != wanted:
        problems.append(f"unshare is allowed as {unshare}, not for user, pid and network only")
    clone = allowed.get("clone", [])
    if any(not args for args in clone):
        problems.append("clone is allowed with namespace flags")
    if allowed.get("chroot") != [None]:
        problems.append("chroot is not allowed")
    return problems


def test_the_worker_pod_lets_the_sandbox_unshare_and_nothing_more(k8s: K8s) -> None:
    spec = pod_spec(k8s.worker)
    assert spec["hostUsers"] is False
    seccomp = spec["securityContext"]["seccompProfile"]
    assert seccomp == {"type": "Localhost", "localhostProfile": "profiles/agenticflow-worker.json"}
    profile = load_json(SECCOMP / "agenticflow-worker.json")
    assert seccomp_problems(profile) == []
    names = {n for rule in profile["syscalls"] for n in rule["names"]}
    assert {"read", "write", "openat", "execve", "socket", "clone", "unshare", "chroot"} <= names
    # Neither AppArmor nor capabilities are loosened; the coordinator keeps RuntimeDefault.
    assert "appArmorProfile" not in json.dumps(k8s.worker)
    assert pod_spec(k8s.coordinator)["securityContext"]["seccompProfile"] == {
        "type": "RuntimeDefault"
    }
    loose = copy.deepcopy(profile)
    loose["syscalls"].append({"names": ["unshare", "mount"], "action": "SCMP_ACT_ALLOW"})
    loose["syscalls"] = [r for r in loose["syscalls"] if r["names"] != ["chroot"]]
    problems = " | ".join(seccomp_problems(loose))
    assert "allows mount" in problems
    assert "not for user, pid and network only" in problems
    assert "chroot is not allowed" in problems


def _kustomize(path: Path) -> list[Doc]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (kustomize) is not installed")
    built = subprocess.run(  # noqa: PLW1510 - the return code is checked
        [kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=60
    )
    assert built.returncode == 0, built.stderr
    return [doc for doc in yaml.safe_load_all(built.stdout) if doc]


def insecure_objects(docs: list[Doc]) -> list[str]:
    """Objects that talk to NATS in plain text, run without their credentials,
    or let sandboxed tools run without isolation."""
    found = []
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] == "ConfigMap" and str(
            doc.get("data", {}).get("AGENTICFLOW_NATS_URL", "tls://")
        ).startswith("nats://"):
            found.append(name)
        if doc["kind"] == "Deployment":
            text = json.dumps(pod_spec(doc))
            if "secretName" not in text or "AGENTICFLOW_ALLOW_WEAK_SANDBOX" in text:
                found.append(name)
    return found


def test_the_dev_overlay_is_the_only_insecure_kubernetes_variant() -> None:
    secure = _kustomize(K8S)
    assert insecure_objects(secure) == []
    assert {d["kind"] for d in secure} >= {"Job", "Role", "RoleBinding", "Deployment"}
    dev = _kustomize(DEV)
    assert insecure_objects(dev) == [
        "ConfigMap/agenticflow-config",
        "Deployment/agenticflow-coordinator",
        "Deployment/agenticflow-worker",
    ]
    assert not [d for d in dev if "init" in d["metadata"]["name"]]
    # No other file in deploy/k8s names a plain nats:// URL or the weak sandbox.
    for path in K8S.rglob("*.yaml"):
        if DEV in path.parents:
            continue
        text = "\n".join(
            line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")
        )
        assert "nats://nats-" not in text, path
        assert "ALLOW_WEAK_SANDBOX" not in text, path


# ===========================================================================
# Tests: compose
# ===========================================================================


def test_compose_file_is_valid_for_the_compose_spec(compose: Doc) -> None:
    assert compose_problems(compose) == []


def test_compose_schema_rejects_an_unknown_service_key(compose: Doc) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["worker"]["replica"] = 3
    assert any("replica" in p for p in compose_problems(broken))
    broken = copy.deepcopy(compose)
    broken["services"]["nats-1"]["healthcheck"]["interval"] = 5
    assert compose_problems(broken) != []


def test_compose_runs_a_3_node_cluster_and_scalable_workers(compose: Doc) -> None:
    assert compose_problems_semantic(compose) == []
    assert set(nats_services(compose)) == {"nats-1", "nats-2", "nats-3"}
    worker = compose["services"]["worker"]
    assert worker_app_spec(worker["command"]) == "agenticflow.examples.customer_service.app:app"
    assert load_app("agenticflow.examples.customer_service.app:app").capabilities
    for name in ("init", "coordinator", "worker", "cli"):
        build = compose["services"][name]["build"]
        assert (COMPOSE_FILE.parent / build["context"] / build["dockerfile"]).resolve() == (
            DOCKERFILE
        )
        assert compose["services"][name]["image"] == worker["image"]
    for name in ("coordinator", "worker"):
        assert compose_env(compose["services"][name])["AGENTICFLOW_PARTITIONS"] == "8"


def test_compose_checks_catch_a_pinned_worker_and_a_shared_volume(compose: Doc) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["worker"]["container_name"] = "worker"
    broken["services"]["worker"]["ports"] = ["9464:9464"]
    broken["services"]["nats-3"]["volumes"][2] = "nats-2-data:/data"
    broken["services"]["coordinator"]["environment"]["AGENTICFLOW_REPLICAS"] = "1"
    broken["services"]["init"]["environment"]["NATS_ROUTE_HOSTS"] = "nats-1 nats-2"
    del broken["services"]["nats-2"]["healthcheck"]
    problems = " | ".join(compose_problems_semantic(broken))
    for expected in (
        "container_name",
        "ports prevent",
        "share a volume",
        "coordinator: AGENTICFLOW_REPLICAS",
        "NATS_ROUTE_HOSTS",
        "nats-2: no healthcheck",
    ):
        assert expected in problems


def test_the_default_profile_runs_nats_with_tls_users_and_private_monitoring(
    compose: Doc,
) -> None:
    assert compose_security_problems(compose) == []
    insecure = insecure_services(compose)
    assert insecure == ["dev-nats", "dev-coordinator", "dev-worker"]
    for name in insecure:
        assert compose["services"][name]["profiles"] == ["dev"], name
    assert set(default_services(compose)) == {
        "init",
        "nats-1",
        "nats-2",
        "nats-3",
        "coordinator",
        "worker",
    }
    assert compose["services"]["cli"]["profiles"] == ["cli"]
    # Every service waits for init; NATS waits for it to have finished.
    for name in nats_services(compose):
        depends = compose["services"][name]["depends_on"]
        assert depends["init"]["condition"] == "service_completed_successfully"
    # The worker group's credentials cover exactly the app the workers run.
    spec = worker_app_spec(compose["services"]["worker"]["command"])
    assert spec is not None
    group = re.search(r"--worker agents=(\S+)", init_script(compose))
    assert group is not None
    assert set(group.group(1).split(",")) == set(load_app(spec).capabilities)


def test_security_checks_catch_open_nats_shared_secrets_and_public_monitoring(
    compose: Doc, tmp_path: Path
) -> None:
    def problems_after(change: str) -> str:
        broken = copy.deepcopy(compose)
        services = broken["services"]
        if change == "port":
            services["nats-1"]["ports"] = ["127.0.0.1:4222:4222"]
        elif change == "everything":
            services["worker"]["volumes"] = ["secrets:/etc/agenticflow:ro"]
        elif change == "coordinator key":
            broken["services"]["init"]["command"] = [
                init_script(compose).replace(
                    "share worker nats/ca.pem", "share worker keys/coordinator.key nats/ca.pem"
                )
            ]
        elif change == "plain":
            services["worker"]["environment"]["AGENTICFLOW_NATS_URL"] = "nats://nats-1:4222"
        elif change == "shared volume":
            services["cli"]["volumes"] = ["worker-secrets:/etc/agenticflow:ro"]
        elif change == "conf":
            conf = tmp_path / "nats.conf"
            text = (DEPLOY / "compose" / "nats.conf").read_text()
            conf.write_text(
                text.replace("127.0.0.1:8222", "0.0.0.0:8222").replace(
                    'include "../agenticflow/nats/nats-server.conf"', ""
                )
            )
            for name in nats_services(broken):
                services[name]["volumes"][0] = f"{conf}:/etc/nats/agenticflow.conf:ro"
        return " | ".join(compose_security_problems(broken))

    assert "nats-1: publishes" in problems_after("port")
    assert "the volume holding every secret is mounted by ['init', 'worker']" in problems_after(
        "everything"
    )
    assert "worker: its volume holds other roles' secrets: keys/coordinator.key" in (
        problems_after("coordinator key")
    )
    assert "worker: AGENTICFLOW_NATS_URL is not tls://" in problems_after("plain")
    assert "worker-secrets is shared by ['cli', 'worker']" in problems_after("shared volume")
    opened = problems_after("conf")
    assert "does not include nats/nats-server.conf" in opened
    assert "monitoring on ['0.0.0.0:8222']" in opened
    assert insecure_services({"services": {"n": {"image": "nats:2.11", "command": ["-js"]}}}) == [
        "n"
    ]


def test_the_tracing_profile_sends_spans_to_jaeger(compose: Doc) -> None:
    services = compose["services"]
    assert services["otel-collector"]["profiles"] == ["tracing"]
    assert services["jaeger"]["profiles"] == ["tracing"]
    (mount,) = services["otel-collector"]["volumes"]
    collector = load_documents(COMPOSE_FILE.parent / mount.split(":")[0])[0]
    pipeline = collector["service"]["pipelines"]["traces"]
    assert pipeline["receivers"] == ["otlp"]
    (exporter,) = pipeline["exporters"]
    assert collector["exporters"][exporter]["endpoint"].split(":")[0] in services
    http = collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    assert http == "0.0.0.0:4318"
    # Tracing is off unless the variable is set (README: the tracing profile).
    env = compose_env(services["worker"])
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "${OTEL_EXPORTER_OTLP_ENDPOINT:-}"


def test_the_compose_nats_config_passes_nats_server_check(tmp_path: Path) -> None:
    """With what init generates beside it, as the containers mount it."""
    binary = nats_server_binary()
    etc = tmp_path / "etc"
    auth = generate(
        etc / "agenticflow" / "nats",
        workers=[WorkerGroup("agents", ("triage",))],
        host="0.0.0.0",
    )
    (auth.directory / "cluster.conf").write_text(
        'authorization { user: "route", password: "x" }\nroutes: ["nats-route://route:x@nats-1:6222"]\n'
    )
    conf = etc / "nats" / "agenticflow.conf"
    conf.parent.mkdir()
    conf.write_text((DEPLOY / "compose" / "nats.conf").read_text())
    env = {"PATH": os.environ.get("PATH", ""), "SERVER_NAME": "nats-1"}
    result = subprocess.run(  # noqa: PLW1510 - the return code is the assertion
        [binary, "-c", str(conf), "-t"], capture_output=True, text=True, env=env, timeout=30
    )
    assert result.returncode == 0, result.stderr
    conf.write_text(conf.read_text().replace("cluster {", "cluster {{"))
    result = subprocess.run(  # noqa: PLW1510
        [binary, "-c", str(conf), "-t"], capture_output=True, text=True, env=env, timeout=30
    )
    assert result.returncode != 0


# ===========================================================================
# Tests: Dockerfile and build context
# ===========================================================================


def test_the_dockerfile_builds_one_non_root_image_for_both_roles() -> None:
    text = DOCKERFILE.read_text()
    assert dockerfile_problems(text) == []
    stages = parse_dockerfile(text)
    assert [s.alias for s in stages] == ["builder", "runtime"]
    assert "AGENTICFLOW_METRICS_PORT=9464" in " ".join(stages[-1].all("ENV"))


def test_dockerfile_checks_catch_root_a_single_stage_and_a_shell_entrypoint() -> None:
    text = DOCKERFILE.read_text()
    assert "not a fixed non-root uid" in " ".join(
        dockerfile_problems(text.replace("USER 10001:10001", "USER root"))
    )
    assert "not a fixed non-root uid" in " ".join(
        dockerfile_problems(text.replace("USER 10001:10001", ""))
    )
    single = "FROM python:3.11-slim\nRUN pip install .\nENTRYPOINT agenticflow\n"
    assert dockerfile_problems(single) == ["1 stage(s): not a multi-stage build"]
    shell = text.replace('ENTRYPOINT ["agenticflow"]', "ENTRYPOINT agenticflow coordinator")
    assert 'ENTRYPOINT is not ["agenticflow"]' in dockerfile_problems(shell)
    assert "not python:3.11-slim" in " ".join(
        dockerfile_problems(text.replace("python:3.11-slim", "python:3.12"))
    )


def test_everything_the_dockerfile_copies_is_in_the_build_context() -> None:
    patterns = dockerignore_patterns()
    sources = list(copied_sources(parse_dockerfile(DOCKERFILE.read_text())))
    assert {"pyproject.toml", "README.md", "examples/"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not ignored(source.rstrip("/"), patterns), f"{source} is in .dockerignore"
    for heavy in (".venv", ".git", "data", "benchmarks/results", "shared/__pycache__", "x.pyc"):
        assert ignored(heavy, patterns), f"{heavy} would be sent to the Docker daemon"


def test_the_image_entrypoint_is_the_projects_console_script() -> None:
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["agenticflow"] == "agenticflow.cli:main"
    assert cli_flag_problems(["coordinator"]) == []
    assert cli_flag_problems(["coordinate"]) == ["agenticflow has no command 'coordinate'"]


def test_the_readme_names_only_files_that_exist() -> None:
    readme = (DEPLOY / "README.md").read_text()
    # Files only: `kubectl exec deploy/NAME` is a Deployment, not a path.
    paths = set(re.findall(r"\bdeploy/(?:[\w./-]*\.(?:yaml|conf|json|md)|Dockerfile)\b", readme))
    assert {"deploy/Dockerfile", "deploy/compose.yaml", "deploy/k8s/nats-values.yaml"} <= paths
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert missing == []
    assert "come in a later issue" not in readme


# ===========================================================================
# Optional: a real image build
# ===========================================================================


def _docker_works() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        return subprocess.run([docker, "info"], capture_output=True, timeout=20).returncode == 0  # noqa: PLW1510
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.docker
@pytest.mark.timeout(1800)
@pytest.mark.skipif(not _docker_works(), reason="no reachable Docker engine")
def test_the_image_builds_and_runs_as_uid_10001() -> None:
    docker = shutil.which("docker") or "docker"
    tag = "agenticflow:test-deploy"
    build = [docker, "build", "-f", str(DOCKERFILE), "-t", tag, str(ROOT)]
    subprocess.run(build, check=True, capture_output=True, timeout=1700)
    uid = subprocess.run(
        [docker, "run", "--rm", "--entrypoint", "id", tag, "-u"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert uid.stdout.strip() == "10001"
    help_text = subprocess.run(
        [docker, "run", "--rm", tag, "worker", "--help"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "--app" in help_text.stdout
