"""The fleet overlay: styletx replicas sharing one Redis 7 store (deploy/k8s/overlays/fleet).

Rendered with the real kustomize by tests/unit/test_deploy.py's helpers and validated against the
Kubernetes schemas like the other overlays; then checked for what the store needs (append-only
file on a PersistentVolumeClaim, no eviction, a password only ever taken from a Secret), for the
server's STYLETX_STORE naming that password and the Redis Service, for the NetworkPolicy in
front of Redis, and for requests and probes on every container. A local `redis-server` started
with the StatefulSet's arguments shows the settings take effect and the readiness probe tells a
right password from a wrong one. deploy/README.md's managed-Redis example is rendered too.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import redis
import yaml

from styletx_server.ops.config import SETTINGS, load_config
from styletx_server.store.url import StoreURL, parse_store_url
from tests.support.redis_server import MISSING, find_redis_server, free_port
from tests.unit.test_deploy import (
    ADAPTER_RULES,
    K8S,
    K8S_VERSIONS,
    README,
    Obj,
    Rendered,
    promql_tests_pass,
    quantity,
    render,
    selects,
    server_variables,
)

FLEET = K8S / "overlays" / "fleet"
#: The Service (and StatefulSet) of the in-cluster store, as STYLETX_STORE names it.
REDIS_SERVICE = "styletx-redis"
REDIS_PORT = 6379
#: The server's variables the fleet sets, and the values the issue asks for.
FLEET_SETTINGS = {"STYLETX_LEASE_SECONDS": "15", "STYLETX_MAX_ATTEMPTS": "3"}
README_SECTION = "Fleet: replicas sharing one Redis store"
#: Redis arguments that carry a password.
PASSWORD_OPTIONS = frozenset({"requirepass", "masterauth"})
#: Redis's memory units (redis.conf: 1k = 1000 bytes, 1kb = 1024 bytes, ...).
_REDIS_UNITS = {
    "": 1, "b": 1, "k": 10**3, "kb": 2**10, "m": 10**6, "mb": 2**20, "g": 10**9, "gb": 2**30,
}  # fmt: skip
_REDIS_MEMORY = re.compile(r"^([0-9]+)([a-z]*)$")
#: `$(NAME)` as Kubernetes expands it in env values, commands and args (`$$` escapes a `$`).
_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
_VARIABLE = re.compile(r"^\$\(([A-Za-z_][A-Za-z0-9_]*)\)$")
#: `scheme://user:password@` in any URL.
_URL_CREDENTIALS = re.compile(r"[a-z][a-z0-9+.-]*://[^:@/\s]*:([^@\s]*)@", re.IGNORECASE)


@pytest.fixture(scope="module")
def fleet() -> Rendered:
    return Rendered("fleet", render(FLEET))


# --------------------------------------------------------------------------------------------
# Helpers: the Redis objects, its arguments, and the environment as the kubelet builds it.
# --------------------------------------------------------------------------------------------


def redis_statefulset(rendered: Rendered) -> Obj:
    return rendered.one("StatefulSet", REDIS_SERVICE)


def redis_pod_spec(rendered: Rendered) -> Obj:
    spec: Obj = redis_statefulset(rendered)["spec"]["template"]["spec"]
    return spec


def redis_pod_labels(rendered: Rendered) -> dict[str, str]:
    labels: dict[str, str] = redis_statefulset(rendered)["spec"]["template"]["metadata"]["labels"]
    return labels


def redis_container(rendered: Rendered) -> Obj:
    containers: list[Obj] = redis_pod_spec(rendered)["containers"]
    (container,) = [c for c in containers if c["name"] == "redis"]
    return container


def redis_options(args: list[str]) -> dict[str, str]:
    """redis-server's `--name value...` arguments as {name: value} (values joined by a space)."""
    options: dict[str, str] = {}
    name: str | None = None
    values: list[str] = []
    for arg in [*args, "--"]:
        if arg.startswith("--"):
            if name is not None:
                options[name] = " ".join(values)
            name, values = arg[2:], []
        else:
            assert name is not None, f"a value before any --option: {args}"
            values.append(arg)
    return options


def test_redis_options_reads_names_and_values() -> None:
    assert redis_options(["--save", "", "--port", "6379", "--save", "900", "1"]) == {
        "save": "900 1",
        "port": "6379",
    }


def with_options(args: list[str], replaced: Mapping[str, str]) -> list[str]:
    """`args` with the values of the options in `replaced` changed (each must be there)."""
    result = list(args)
    for name, value in replaced.items():
        index = result.index(f"--{name}")
        result[index + 1] = value
    return result


def redis_bytes(text: str) -> int:
    """A Redis memory size ("2gb", "100mb", "1g", "1024") in bytes."""
    match = _REDIS_MEMORY.match(text.strip().lower())
    assert match and match.group(2) in _REDIS_UNITS, f"not a Redis memory size: {text!r}"
    return int(match.group(1)) * _REDIS_UNITS[match.group(2)]


def test_redis_bytes_follows_redis_units() -> None:
    assert redis_bytes("2gb") == 2 * 2**30
    assert redis_bytes("1g") == 10**9
    assert redis_bytes("512MB") == 512 * 2**20
    assert redis_bytes("1000") == 1000


def fake_secret(name: str, key: str) -> str:
    """A stand-in for a Secret's value: the same for the same Secret and key, else different."""
    return hashlib.sha256(f"{name}/{key}".encode()).hexdigest()[:32]


def expand(text: str, defined: Mapping[str, str]) -> str:
    """`text` with `$(NAME)` replaced as the kubelet does: only names defined so far, `$$`
    stands for `$`, and an undefined reference stays as written."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return defined.get(match.group(1), match.group(0))

    return _REFERENCE.sub(one, text)


def test_expand_follows_the_kubelet() -> None:
    assert expand("redis://:$(P)@h", {"P": "pw"}) == "redis://:pw@h"
    assert expand("$(LATER) $$(P)", {"P": "pw"}) == "$(LATER) $(P)"


def environment(rendered: Rendered, container: Obj) -> dict[str, str]:
    """The container's environment as the kubelet builds it: `envFrom` ConfigMaps, then `env` in
    order, each value expanded against what came before; Secrets read as `fake_secret`."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert set(source) == {"configMapRef"}, source
        env.update(rendered.one("ConfigMap", source["configMapRef"]["name"])["data"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = expand(item["value"], env)
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = fake_secret(ref["name"], ref["key"])
    return env


def secret_ref(container: Obj, variable: str) -> dict[str, Any]:
    """The secretKeyRef `variable` of `container` comes from (fails if it has a plain value)."""
    (item,) = [e for e in container.get("env", []) if e["name"] == variable]
    assert "value" not in item, f"{variable} is written in the manifest"
    ref: dict[str, Any] = item["valueFrom"]["secretKeyRef"]
    return ref


def container_port(container: Obj, port: int | str) -> int:
    """A port number, or the number of the container port of that name."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    assert isinstance(number, int)
    return number


def strings(node: Any) -> Iterator[str]:
    """Every string value anywhere in `node`."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def workload_containers(rendered: Rendered) -> list[tuple[str, Obj]]:
    """(workload name, container) for every container of every Deployment and StatefulSet."""
    return [
        (workload["metadata"]["name"], container)
        for workload in rendered.all("Deployment") + rendered.all("StatefulSet")
        for container in workload["spec"]["template"]["spec"]["containers"]
        + workload["spec"]["template"]["spec"].get("initContainers", [])
    ]


def readme_section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def readme_overlay_files(section: str) -> dict[str, str]:
    """The YAML blocks of `section` whose first line names a file, `# overlays/NAME/FILE`."""
    files: dict[str, str] = {}
    for block in re.findall(r"```yaml\n(.*?)```", section, flags=re.DOTALL):
        first = block.splitlines()[0]
        match = re.fullmatch(r"# (overlays/[\w.-]+/[\w.-]+\.yaml)", first)
        if match:
            files[match.group(1)] = block
    return files


# --------------------------------------------------------------------------------------------
# Rendering and schemas
# --------------------------------------------------------------------------------------------


def test_fleet_is_the_gpu_overlay_plus_one_redis_in_its_namespace(fleet: Rendered) -> None:
    gpu = Rendered("gpu", render(K8S / "overlays" / "gpu"))

    def named(rendered: Rendered) -> set[tuple[str, str]]:
        # The ConfigMap's name carries a hash of its content, which the fleet adds to.
        return {
            (o["kind"], o["metadata"]["name"]) for o in rendered.objects if o["kind"] != "ConfigMap"
        }

    assert named(gpu) <= named(fleet)
    assert len(fleet.all("ConfigMap")) == 1
    assert redis_statefulset(fleet)["spec"]["replicas"] == 1
    assert fleet.one("Service", REDIS_SERVICE)
    namespaces = {o["metadata"].get("namespace") for o in fleet.objects}
    assert namespaces == {gpu.deployment["metadata"]["namespace"]}
    # Several replicas: the HPA's floor, and no replica count for re-applying to reset.
    hpa = fleet.one("HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"]["name"] == fleet.deployment["metadata"]["name"]
    assert hpa["minReplicas"] >= 2
    assert "replicas" not in fleet.deployment["spec"]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_builtin_object_validates_strictly(fleet: Rendered, version: str) -> None:
    checked = set()
    for obj in fleet.objects:
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # custom resources: test_deploy.py checks them by hand
        kubernetes_validate.validate(obj, version, strict=True)
        checked.add(obj["kind"])
    assert {"StatefulSet", "Service", "NetworkPolicy", "Deployment"} <= checked


def test_strict_validation_rejects_an_unknown_field_in_the_statefulset(fleet: Rendered) -> None:
    """Guards the check above against passing vacuously."""
    broken = copy.deepcopy(redis_statefulset(fleet))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["ping"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)


# --------------------------------------------------------------------------------------------
# Redis: persistence, eviction, password
# --------------------------------------------------------------------------------------------


def test_redis_keeps_an_append_only_file_and_never_evicts(fleet: Rendered) -> None:
    container = redis_container(fleet)
    assert container["command"] == ["redis-server"]
    options = redis_options(container["args"])
    assert options["appendonly"] == "yes"
    assert options["appendfsync"] in {"everysec", "always"}
    assert options["maxmemory-policy"] == "noeviction"
    assert redis_bytes(options["maxmemory"]) > 0
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert options["dir"] in mounts, "the append-only file must be on the data volume"


def test_the_append_only_file_is_on_a_persistent_volume_claim(fleet: Rendered) -> None:
    container = redis_container(fleet)
    options = redis_options(container["args"])
    (volume,) = [m["name"] for m in container["volumeMounts"] if m["mountPath"] == options["dir"]]
    claims = {
        c["metadata"]["name"]: c for c in redis_statefulset(fleet)["spec"]["volumeClaimTemplates"]
    }
    assert volume in claims, f"{options['dir']} is not on a volumeClaimTemplate"
    pod_volumes = {v["name"] for v in redis_pod_spec(fleet).get("volumes", [])}
    assert volume not in pod_volumes, "a pod volume of that name would shadow the claim"
    claim = claims[volume]["spec"]
    assert "ReadWriteOnce" in claim["accessModes"]
    # A rewrite writes a new file beside one that grew to twice the last rewrite's size.
    storage = quantity(claim["resources"]["requests"]["storage"])
    assert storage >= 3 * redis_bytes(options["maxmemory"])
    retention = redis_statefulset(fleet)["spec"].get("persistentVolumeClaimRetentionPolicy", {})
    assert retention.get("whenDeleted", "Retain") == "Retain"


def test_redis_password_comes_from_the_servers_secret(fleet: Rendered) -> None:
    container = redis_container(fleet)
    match = _VARIABLE.match(redis_options(container["args"])["requirepass"])
    assert match, "--requirepass must be $(VARIABLE), expanded from the environment"
    ref = secret_ref(container, match.group(1))
    assert ref["name"] and ref["key"]
    assert not ref.get("optional", False), "a missing Secret must not start an open Redis"
    # The server's password and the probe's are the same Secret key.
    assert secret_ref(fleet.container, "STYLETX_REDIS_PASSWORD") == ref
    assert secret_ref(container, "REDISCLI_AUTH") == ref


def test_no_password_is_written_in_the_rendered_manifests(fleet: Rendered) -> None:
    assert not fleet.all("Secret"), "passwords are created out of band, never committed"
    for text in strings(fleet.objects):
        for password in _URL_CREDENTIALS.findall(text):
            assert _VARIABLE.match(password), f"a password written in a URL: {text!r}"
        if "redis-cli" in text:
            assert not re.search(r"(^|\s)(-a|--pass|--user)\s", text), text
    for workload, container in workload_containers(fleet):
        args = [*container.get("command", []), *container.get("args", [])]
        for option, value in itertools.pairwise(args):
            if option.lstrip("-") in PASSWORD_OPTIONS:
                assert _VARIABLE.match(value), f"{workload}: {option} written in the manifest"
        for item in container.get("env", []):
            if "PASSWORD" in item["name"] or item["name"] == "REDISCLI_AUTH":
                assert "secretKeyRef" in item.get("valueFrom", {}), f"{workload}: {item}"


def test_readme_states_the_manifests_redis_settings(fleet: Rendered) -> None:
    section = readme_section(README_SECTION)
    options = redis_options(redis_container(fleet)["args"])
    for name in ("appendonly", "appendfsync", "maxmemory", "maxmemory-policy"):
        assert f"--{name} {options[name]}" in section, name
    assert "--result-ttl" in section, "maxmemory is sized for the results kept for --result-ttl"


# --------------------------------------------------------------------------------------------
# The server's side: STYLETX_STORE and the fleet's settings
# --------------------------------------------------------------------------------------------


def store_url(rendered: Rendered) -> StoreURL:
    """STYLETX_STORE as the server reads it (the server's own parser and flag check)."""
    env = environment(rendered, rendered.container)
    config = load_config(argv=[], env=env)
    assert config.store == env["STYLETX_STORE"]
    return parse_store_url(config.store)


def test_store_url_takes_the_password_variable_defined_before_it(fleet: Rendered) -> None:
    names = [e["name"] for e in fleet.container["env"]]
    (store,) = [e for e in fleet.container["env"] if e["name"] == "STYLETX_STORE"]
    assert "$(STYLETX_REDIS_PASSWORD)" in store["value"]
    assert names.index("STYLETX_REDIS_PASSWORD") < names.index("STYLETX_STORE"), (
        "Kubernetes expands $(NAME) only from variables listed before"
    )
    redis_env = environment(fleet, redis_container(fleet))
    requirepass = expand(redis_options(redis_container(fleet)["args"])["requirepass"], redis_env)
    assert store_url(fleet).password == requirepass


def test_store_url_names_the_redis_service_and_its_port(fleet: Rendered) -> None:
    url = store_url(fleet)
    assert url.scheme == "redis"
    assert url.host == REDIS_SERVICE
    assert url.db == 0
    service = fleet.one("Service", url.host)["spec"]
    assert service.get("type", "ClusterIP") == "ClusterIP"
    assert selects(service["selector"], redis_pod_labels(fleet))
    (port,) = [p for p in service["ports"] if p["port"] == url.port]
    assert container_port(redis_container(fleet), port["targetPort"]) == REDIS_PORT
    assert redis_options(redis_container(fleet)["args"]).get("port", str(REDIS_PORT)) == str(
        REDIS_PORT
    )


def test_fleet_sets_the_lease_and_the_attempts(fleet: Rendered) -> None:
    env = environment(fleet, fleet.container)
    for name, value in FLEET_SETTINGS.items():
        assert env.get(name) == value, name


def test_server_reads_the_fleet_settings_and_accepts_their_values(fleet: Rendered) -> None:
    assert set(FLEET_SETTINGS) <= server_variables(), "variables the server would ignore"
    config = load_config(argv=[], env=environment(fleet, fleet.container))
    for setting in SETTINGS:
        if setting.env in FLEET_SETTINGS:
            assert getattr(config, setting.name) == float(FLEET_SETTINGS[setting.env])


def test_service_links_cannot_add_styletx_variables(fleet: Rendered) -> None:
    """A Service named styletx-redis gives every pod STYLETX_REDIS_* variables unless the pod
    turns service links off; STYLETX_* names are the server's settings."""
    services = {s["metadata"]["name"] for s in fleet.all("Service")}
    assert REDIS_SERVICE in services
    assert fleet.pod_spec.get("enableServiceLinks") is False


# --------------------------------------------------------------------------------------------
# Network, labels, resources, probes, security
# --------------------------------------------------------------------------------------------


def test_networkpolicy_admits_only_styletx_server_pods_to_redis_on_6379(fleet: Rendered) -> None:
    redis_labels = redis_pod_labels(fleet)
    policies = [
        p["spec"]
        for p in fleet.all("NetworkPolicy")
        if selects(p["spec"]["podSelector"].get("matchLabels", {}), redis_labels)
    ]
    assert len(policies) == 1, "exactly one NetworkPolicy selects the Redis pods"
    (policy,) = policies
    assert "matchExpressions" not in policy["podSelector"]
    assert "Ingress" in policy["policyTypes"]
    (rule,) = policy["ingress"]
    (peer,) = rule["from"]
    assert set(peer) == {"podSelector"}, "pods of this namespace only: no namespace or IP block"
    selector = peer["podSelector"]
    assert set(selector) == {"matchLabels"}
    assert selects(selector["matchLabels"], fleet.pod_labels)
    assert not selects(selector["matchLabels"], redis_labels)
    (port,) = rule["ports"]
    assert port.get("protocol", "TCP") == "TCP"
    assert container_port(redis_container(fleet), port["port"]) == REDIS_PORT


def test_redis_pods_are_not_the_servers_pods(fleet: Rendered) -> None:
    """The server's Services, NetworkPolicy and PodDisruptionBudget must not pick up Redis, nor
    Redis's Service the server's pods."""
    redis_labels = redis_pod_labels(fleet)
    assert not selects(fleet.deployment["spec"]["selector"]["matchLabels"], redis_labels)
    for service in fleet.all("Service"):
        picks_redis = selects(service["spec"].get("selector", {}), redis_labels)
        picks_server = selects(service["spec"].get("selector", {}), fleet.pod_labels)
        assert picks_redis == (service["metadata"]["name"] == REDIS_SERVICE), service["metadata"]
        assert not (picks_redis and picks_server)
    for policy in fleet.all("NetworkPolicy"):
        selector = policy["spec"]["podSelector"].get("matchLabels", {})
        assert selects(selector, redis_labels) != selects(selector, fleet.pod_labels)
    for budget in fleet.all("PodDisruptionBudget"):
        assert not selects(budget["spec"]["selector"]["matchLabels"], redis_labels)
    selector = redis_statefulset(fleet)["spec"]["selector"]["matchLabels"]
    assert selects(selector, redis_labels)
    assert not selects(selector, fleet.pod_labels)


def test_every_container_has_requests_limits_and_probes(fleet: Rendered) -> None:
    containers = workload_containers(fleet)
    assert {name for name, _ in containers} == {"styletx", REDIS_SERVICE}
    for workload, container in containers:
        where = f"{workload}/{container['name']}"
        resources = container.get("resources", {})
        assert {"cpu", "memory"} <= set(resources.get("requests", {})), where
        assert "memory" in resources.get("limits", {}), where
        assert quantity(resources["limits"]["memory"]) >= quantity(
            resources["requests"]["memory"]
        ), where
        assert container.get("readinessProbe"), where
        assert container.get("livenessProbe"), where


def test_redis_memory_leaves_room_for_the_rewrite_fork(fleet: Rendered) -> None:
    container = redis_container(fleet)
    resources = container["resources"]
    limit = quantity(resources["limits"]["memory"])
    assert quantity(resources["requests"]["memory"]) == limit, "no eviction under node pressure"
    assert redis_bytes(redis_options(container["args"])["maxmemory"]) <= 0.75 * limit


def test_redis_probes_ask_redis_itself(fleet: Rendered) -> None:
    container = redis_container(fleet)
    readiness = container["readinessProbe"]
    command = " ".join(readiness["exec"]["command"])
    assert "redis-cli" in command and "ping" in command.lower() and "PONG" in command
    liveness = container["livenessProbe"]
    assert container_port(container, liveness["tcpSocket"]["port"]) == REDIS_PORT


def test_redis_runs_non_root_with_a_read_only_root_and_no_capabilities(fleet: Rendered) -> None:
    pod = redis_pod_spec(fleet)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["fsGroup"], "the volume must be writable for the user"
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    security = redis_container(fleet)["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]


# --------------------------------------------------------------------------------------------
# The arguments on a real redis-server
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_binary(tmp_path_factory: pytest.TempPathFactory) -> str:
    binary = find_redis_server(tmp_path_factory.getbasetemp().parent)
    if binary is None or shutil.which("redis-cli") is None:
        pytest.skip(MISSING)
    return binary


def run_exec_probe(probe: Obj, env: Mapping[str, str], port: int) -> int:
    """The exit status of an exec probe run like the kubelet runs it in the container (its
    environment), against the test server's port instead of 6379."""
    command: list[str] = probe["exec"]["command"]
    assert any(f"-p {REDIS_PORT}" in part for part in command), "the probe must name the port"
    local = [part.replace(f"-p {REDIS_PORT}", f"-p {port}") for part in command]
    done = subprocess.run(
        local,
        env={"PATH": os.environ.get("PATH", ""), **env},
        capture_output=True,
        timeout=probe.get("timeoutSeconds", 1) + 10,
        check=False,
    )
    return done.returncode


def test_redis_with_the_manifests_arguments_persists_refuses_strangers_and_probes_right(
    fleet: Rendered, redis_binary: str, tmp_path: Path
) -> None:
    container = redis_container(fleet)
    env = environment(fleet, container)
    args = [expand(arg, env) for arg in container["args"]]
    assert "$(" not in " ".join(args), "every reference must be defined in the container"
    port = free_port()
    local = with_options(args, {"dir": str(tmp_path), "port": str(port)})
    process = subprocess.Popen(
        [redis_binary, *local, "--bind", "127.0.0.1", "--logfile", str(tmp_path / "redis.log")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    try:
        client = redis.Redis(port=port, password=env["REDIS_PASSWORD"], socket_timeout=5)
        deadline = time.monotonic() + 15
        while True:
            assert process.poll() is None, (tmp_path / "redis.log").read_text(errors="replace")
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not answer"
                time.sleep(0.05)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        maxmemory = redis_options(container["args"])["maxmemory"]
        assert client.config_get("maxmemory") == {"maxmemory": str(redis_bytes(maxmemory))}
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, socket_timeout=5).ping()
        # The readiness probe passes with the container's environment, and fails without the
        # right password (redis-cli exits 0 on an error reply: the probe must look at it).
        assert run_exec_probe(container["readinessProbe"], env, port) == 0
        assert run_exec_probe(container["readinessProbe"], {**env, "REDISCLI_AUTH": "x"}, port)
        # Written through to the append-only file; when full, refused, and nothing evicted.
        client.set("job", "kept")
        assert list(tmp_path.rglob("*.aof")), "no append-only file in --dir"
        client.config_set("maxmemory", "1")
        with pytest.raises(redis.ResponseError, match="maxmemory"):
            client.set("another", "refused")
        assert client.get("job") == b"kept"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


# --------------------------------------------------------------------------------------------
# deploy/README.md
# --------------------------------------------------------------------------------------------


def test_readme_creates_the_secret_the_manifests_read(fleet: Rendered) -> None:
    section = readme_section(README_SECTION)
    ref = secret_ref(fleet.container, "STYLETX_REDIS_PASSWORD")
    namespace = fleet.deployment["metadata"]["namespace"]
    command = (
        f"kubectl -n {namespace} create secret generic {ref['name']} --from-literal={ref['key']}="
    )
    assert command in section
    assert f"kubectl apply -k {FLEET.relative_to(README.parents[1])}" in section


def test_readme_managed_redis_example_renders_without_the_in_cluster_redis(
    tmp_path: Path,
) -> None:
    section = readme_section(README_SECTION)
    assert "rediss://" in section
    files = readme_overlay_files(section)
    assert files, "the managed-Redis example's files (```yaml blocks headed # overlays/...)"
    tree = tmp_path / "k8s"
    shutil.copytree(K8S, tree)
    (overlay,) = {PurePosixPath(path).parts[1] for path in files}
    for path, text in files.items():
        (tree / path).parent.mkdir(parents=True, exist_ok=True)
        (tree / path).write_text(text, encoding="utf-8")
    managed = Rendered(overlay, render(tree / "overlays" / overlay))
    assert not managed.all("StatefulSet")
    assert REDIS_SERVICE not in {s["metadata"]["name"] for s in managed.all("Service")}
    url = store_url(managed)
    assert url.tls
    assert url.host != REDIS_SERVICE
    ref = secret_ref(managed.container, "STYLETX_REDIS_PASSWORD")
    assert url.password == fake_secret(ref["name"], ref["key"])
    env = environment(managed, managed.container)
    for name, value in FLEET_SETTINGS.items():
        assert env.get(name) == value, name
    for obj in managed.objects:
        if not obj["apiVersion"].startswith("monitoring.coreos.com/"):
            kubernetes_validate.validate(obj, K8S_VERSIONS[0], strict=True)


def test_fleet_components_are_components() -> None:
    for path in (K8S / "components" / "fleet", K8S / "components" / "fleet" / "redis"):
        kustomization = yaml.safe_load((path / "kustomization.yaml").read_text(encoding="utf-8"))
        assert kustomization["kind"] == "Component", path


# --------------------------------------------------------------------------------------------
# Autoscaling: on the fleet's queue, not one pod's.
# --------------------------------------------------------------------------------------------


def external_rules() -> list[Obj]:
    rules: list[Obj] = yaml.safe_load(ADAPTER_RULES.read_text(encoding="utf-8"))["externalRules"]
    return rules


def test_the_fleet_scales_on_its_shared_queue_served_by_the_adapter(fleet: Rendered) -> None:
    hpa = fleet.one("HorizontalPodAutoscaler")["spec"]
    (metric,) = hpa["metrics"]  # the gpu overlay's per-pod busyness is replaced, not added to
    assert metric["type"] == "External"
    assert metric["external"]["target"]["type"] == "AverageValue"  # per replica
    assert quantity(metric["external"]["target"]["averageValue"]) < 1  # headroom, as busyness
    (rule,) = external_rules()
    assert rule["name"]["as"] == metric["external"]["metric"]["name"] == "styletx_fleet_jobs"
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}}


def test_the_adapter_counts_each_fleet_job_once_whatever_the_replicas(tmp_path: Path) -> None:
    """Every replica reports the same fleet-wide counts: the query must not add them up."""
    (rule,) = external_rules()
    query = (
        rule["metricsQuery"]
        .replace("<<.Series>>", "styletx_fleet_jobs")
        .replace("<<.LabelMatchers>>", 'namespace="styletx"')
        .replace("<<.GroupBy>>", "namespace")
    )
    series = []
    for pod in ("styletx-a", "styletx-b", "styletx-c"):  # three replicas, one fleet
        for state, tenant, value in (
            ("queued", "shop", 3),
            ("running", "shop", 2),
            ("running", "batch", 1),
        ):
            labels = f'namespace="styletx", pod="{pod}", state="{state}", tenant="{tenant}"'
            series.append({"series": f"styletx_fleet_jobs{{{labels}}}", "values": f"{value}x20"})
    other = 'namespace="other", pod="x", state="queued", tenant="shop"'
    series.append({"series": f"styletx_fleet_jobs{{{other}}}", "values": "50x20"})
    tests = {
        "rule_files": [],
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": series,
                "promql_expr_test": [
                    {
                        "expr": query,
                        "eval_time": "4m",
                        "exp_samples": [{"labels": '{namespace="styletx"}', "value": 6}],
                    }
                ],
            }
        ],
    }
    promql_tests_pass(tests, tmp_path)
