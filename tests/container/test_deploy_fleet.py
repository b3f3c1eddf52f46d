"""`make deploy-test`, the fleet: two styletx replicas and their Redis, from the manifests a CPU
fleet applies, under `podman kube play`. The replica running a keyed job is killed (SIGKILL) and
the job finishes on the other: its lease lapses (STYLETX_LEASE_SECONDS=15), the survivor takes it
again (attempt 2) and the caller gets the result there.

Rendered by the real kustomize: the CPU overlay with components/fleet and components/fleet/redis
(what overlays/fleet adds to the gpu overlay). Redis runs from the StatefulSet's pod template (its
command and arguments, the password from the Secret, uid 999 on a read-only root, its claim) and
must pass its own readiness probe; the replicas run from the Deployment, STYLETX_STORE built from
the Secret as the component sets it, and must reach SERVING. A manifest whose store URL, ports,
password wiring or Redis settings do not work fails here.

Changes made to the rendered manifests, each what a cluster does for you:
- `hostPort`s on the replicas' ports and on Redis's, so the host and the replicas reach the pods
  (what Services do); podman 4.3 would publish a port without one on its own number, and the two
  replicas' metrics ports would clash;
- `$(NAME)` references in env values and arguments expanded as the kubelet does (podman 4.3 passes
  them on as they are): the password in STYLETX_STORE and in redis-server's `--requirepass`;
- STYLETX_STORE's host:port, the Service `styletx-redis:6379`, becomes 10.0.2.2 and Redis's
  hostPort, where the replicas reach the Redis pod (cluster DNS and the Service's ClusterIP);
- the StatefulSet runs as a one-replica Deployment of its pod template (kube play takes no
  StatefulSet), its volumeClaimTemplate as the claim the controller would make for pod 0
  (`data-styletx-redis-0`), which kube play makes a podman volume;
- the Deployment runs twice, named styletx-a and styletx-b (a ReplicaSet names its pods apart);
- where docker.io/library/redis:7.2.11 cannot be pulled, an equivalent image made from Debian
  packages (tools/redis_image.sh) is tagged under that name for the run, as the styletx image is.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import secrets
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from styletx_client import Event, Progress, Result, StyleTransferClient
from styletx_client.options import StylizeOptions
from styletx_server.security.tenants import DEFAULT_NAME
from styletx_server.store.url import DEFAULT_PREFIX
from tests.container.test_deploy import Obj, one, render
from tests.support import containers
from tests.support.server_process import free_port

pytestmark = pytest.mark.container

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAY = K8S / "overlays" / "cpu"
COMPONENTS = (K8S / "components" / "fleet", K8S / "components" / "fleet" / "redis")
EXAMPLES = ROOT / "examples"
#: What tools/redis_image.sh makes where the StatefulSet's image cannot be pulled.
LOCAL_REDIS = "localhost/styletx-redis:bookworm"
#: Networking: each pod in a slirp4netns namespace of its own, as in test_deploy.py, its
#: hostPorts forwarded from the host; with allow_host_loopback a pod reaches the host's loopback
#: at 10.0.2.2, where Redis's hostPort listens. (podman's CNI bridge works on this machine too,
#: but without the dnsname plugin, which Debian's podman lacks, pods find each other on it by IP
#: only; slirp4netns needs neither a bridge nor iptables rules.)
REPLICA_NETWORK = "slirp4netns:allow_host_loopback=true"
HOST_LOOPBACK = "10.0.2.2"
START_TIMEOUT = 300.0
#: At 64 px about 25 s on two cores (0.2 s an evaluation under podman here): killed a few
#: evaluations in, then run again whole on the survivor.
JOB: StylizeOptions = {"size": 64, "max_evaluations": 120}
CONTENT, STYLE = EXAMPLES / "content_chelsea.png", EXAMPLES / "style_starry_night.jpg"
#: The job record's fields the test reads from the store (store/redis_lua.py's layout).
RECORD_FIELDS = ("state", "attempt", "owner", "lost")
#: `$(NAME)` as Kubernetes expands it in env values, commands and args (`$$` escapes a `$`).
_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
#: The job record under a tenant's request key, as redis-cli runs it (one round trip).
_RECORD_SCRIPT = """
local id = redis.call('GET', KEYS[1])
if not id then return {} end
return redis.call('HMGET', ARGV[1] .. ':job:' .. id, unpack(ARGV, 2))
"""


def render_fleet(directory: Path) -> list[Obj]:
    """The CPU overlay plus the fleet components, as overlays/fleet composes them. kustomize
    refuses absolute paths as roots ("new root cannot be absolute"), so the temporary
    kustomization names them relative to itself; roots outside it are allowed (only files
    are load-restricted)."""
    relative = [os.path.relpath(path, directory) for path in (OVERLAY, *COMPONENTS)]
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        # Again here, as in overlays/fleet: the overlay's namespace reaches only its own objects.
        "namespace": yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())["namespace"],
        "resources": relative[:1],
        "components": relative[1:],
    }
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return render(directory)


def named(objects: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind} objects named {name}"
    return found[0]


def expand(text: str, known: Mapping[str, str]) -> str:
    """`$(NAME)` from `known`, as the kubelet expands it; unknown names stay as they are."""

    def value(match: re.Match[str]) -> str:
        return "$" if match.group(0) == "$$" else known.get(match.group(1), match.group(0))

    return _REFERENCE.sub(value, text)


def expand_container(
    container: Obj, secret_values: Mapping[tuple[str, str], str], config: Mapping[str, str]
) -> dict[str, str]:
    """Expand the container's env values, command and args in place as the kubelet does (a
    value sees the variables defined before it); return the environment it gets."""
    known: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert set(source) == {"configMapRef"}, source
        known.update(config)
    for entry in container.get("env", []):
        if "value" in entry:
            entry["value"] = known[entry["name"]] = expand(entry["value"], known)
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            known[entry["name"]] = secret_values[ref["name"], ref["key"]]
    for field in ("command", "args"):
        if field in container:
            container[field] = [expand(str(item), known) for item in container[field]]
    return known


def publish(container: Obj, port_name: str, host_port: int) -> None:
    found = [entry for entry in container["ports"] if entry["name"] == port_name]
    assert len(found) == 1, container["ports"]
    found[0]["hostPort"] = host_port


def podman_secret(name: str, values: Mapping[str, str], directory: Path) -> None:
    """A Secret as podman takes it: a JSON map of key -> base64 value."""
    file = directory / f"{name}.json"
    file.write_text(
        json.dumps({k: base64.b64encode(v.encode()).decode() for k, v in values.items()})
    )
    containers.run("secret", "rm", name, check=False)
    containers.run("secret", "create", name, str(file))


def redis_image(image: str) -> bool:
    """Make the StatefulSet's image available; True when it is the Debian-made one, tagged
    under the manifest's name for this run (tools/image.sh does the same for its base)."""
    if containers.run("image", "inspect", image, check=False).returncode == 0:
        return False
    if containers.run("pull", "--quiet", image, check=False, timeout=600).returncode == 0:
        return False
    if containers.run("image", "inspect", LOCAL_REDIS, check=False).returncode != 0:
        env = {**os.environ, "ENGINE": containers.engine()}
        script = ROOT / "tools" / "redis_image.sh"
        subprocess.run(["bash", str(script), LOCAL_REDIS], env=env, check=True, timeout=900)
    containers.run("tag", LOCAL_REDIS, image)
    return True


def as_deployment(statefulset: Obj, host_port: int) -> tuple[Obj, list[str]]:
    """The StatefulSet's pod 0 as a one-replica Deployment, and the claims it mounts."""
    spec, name = statefulset["spec"], statefulset["metadata"]["name"]
    template = copy.deepcopy(spec["template"])
    claims = [claim["metadata"]["name"] for claim in spec.get("volumeClaimTemplates", [])]
    template["spec"]["volumes"] = [
        {"name": claim, "persistentVolumeClaim": {"claimName": f"{claim}-{name}-0"}}
        for claim in claims
    ]
    publish(template["spec"]["containers"][0], "redis", host_port)
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": copy.deepcopy(statefulset["metadata"]),
        "spec": {"replicas": 1, "selector": spec["selector"], "template": template},
    }
    return deployment, [f"{claim}-{name}-0" for claim in claims]


@dataclass(frozen=True)
class Replica:
    name: str
    """The pod's name, which podman makes its host name: the store's lease owners begin with it."""
    address: str
    container: str


@dataclass(frozen=True)
class Fleet:
    replicas: tuple[Replica, Replica]
    redis: str
    """The Redis container."""
    token: str
    lease: str
    """STYLETX_LEASE_SECONDS, as the fleet component sets it."""


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    if containers.engine() != "podman":
        pytest.fail("deploy-test needs podman (kube play); docker cannot run Kubernetes YAML")
    tmp = tmp_path_factory.mktemp("fleet")
    (tmp / "render").mkdir()
    objects = render_fleet(tmp / "render")
    deployment, config_map = one(objects, "Deployment"), one(objects, "ConfigMap")
    statefulset = one(objects, "StatefulSet")
    server = deployment["spec"]["template"]["spec"]["containers"][0]
    redis = statefulset["spec"]["template"]["spec"]["containers"][0]

    token, password = secrets.token_hex(16), secrets.token_hex(32)
    secret_values = {("styletx-auth", "token"): token, ("styletx-redis-auth", "password"): password}
    secret_names = sorted({secret for secret, _ in secret_values})

    # Redis: its arguments with the password, as the kubelet passes them.
    redis_env = expand_container(redis, secret_values, {})
    assert "$(" not in " ".join(redis["args"]), redis["args"]
    assert redis_env["REDISCLI_AUTH"] == password
    redis_port = free_port()
    redis_deployment, volumes = as_deployment(statefulset, redis_port)
    redis_file = tmp / "redis.yaml"
    redis_file.write_text(yaml.safe_dump(redis_deployment))

    # The server's store URL names the Service, whose port leads to Redis's container port.
    server_env = expand_container(server, secret_values, config_map["data"])
    service = named(objects, "Service", "styletx-redis")
    (service_port,) = service["spec"]["ports"]
    (redis_container_port,) = redis["ports"]
    assert service_port["targetPort"] == redis_container_port["name"], service_port
    service_address = f"{service['metadata']['name']}:{service_port['port']}"
    store = server_env["STYLETX_STORE"]
    assert store == f"redis://:{password}@{service_address}/0", store.replace(password, "***")
    entry = next(entry for entry in server["env"] if entry["name"] == "STYLETX_STORE")
    entry["value"] = store.replace(service_address, f"{HOST_LOOPBACK}:{redis_port}")
    config_map_file = tmp / "configmap.yaml"
    config_map_file.write_text(yaml.safe_dump(config_map))

    replicas: list[Replica] = []
    files = [redis_file]
    for suffix in ("a", "b"):
        manifest = copy.deepcopy(deployment)
        name = manifest["metadata"]["name"] = f"{deployment['metadata']['name']}-{suffix}"
        port = free_port()
        publish(manifest["spec"]["template"]["spec"]["containers"][0], "grpc", port)
        # kube play publishes a port without a hostPort on its own number: two replicas' 9090s.
        publish(manifest["spec"]["template"]["spec"]["containers"][0], "metrics", free_port())
        files.append(tmp / f"{name}.yaml")
        files[-1].write_text(yaml.safe_dump(manifest))
        replicas.append(Replica(f"{name}-pod-0", f"127.0.0.1:{port}", f"{name}-pod-0-server"))
    redis_container = f"{redis_deployment['metadata']['name']}-pod-0-{redis['name']}"

    image = server["image"]
    assert image.endswith(f":{containers.version()}-cpu"), image
    tagged_redis = False
    try:
        containers.run("tag", containers.image_ref(), image)
        tagged_redis = redis_image(redis["image"])
        for name in secret_names:
            values = {k: v for (secret, k), v in secret_values.items() if secret == name}
            podman_secret(name, values, tmp)
        for volume in volumes:  # a fresh claim: nothing from an earlier run in the store
            containers.run("volume", "rm", "--force", volume, check=False)
        # podman 4.3 makes the tcpSocket liveness probe an `nc -z` healthcheck inside the
        # container (of port 0: it does not resolve named ports); its timers need systemd, absent
        # here, so it never runs. Where it did, it would restart Redis after a minute.
        containers.run("kube", "play", "--network", "slirp4netns", str(redis_file), timeout=300)
        wait_ready(redis_container, redis["readinessProbe"]["exec"]["command"], timeout=60)
        for file in files[1:]:
            containers.run(
                "kube", "play", "--network", REPLICA_NETWORK, "--configmap", str(config_map_file),
                str(file), timeout=300,
            )  # fmt: skip
        lease = config_map["data"]["STYLETX_LEASE_SECONDS"]
        yield Fleet((replicas[0], replicas[1]), redis_container, token, lease)
    finally:
        for replica in replicas:
            print(f"--- {replica.container}\n{containers.logs(replica.container)[-2000:]}")
        print(f"--- {redis_container}\n{containers.logs(redis_container)[-1000:]}")
        for file in reversed(files):
            containers.run("kube", "down", str(file), check=False, timeout=180)
        for volume in volumes:
            containers.run("volume", "rm", "--force", volume, check=False)
        for name in secret_names:
            containers.run("secret", "rm", name, check=False)
        if tagged_redis:
            containers.run("untag", LOCAL_REDIS, redis["image"], check=False)


def wait_ready(container: str, probe: list[str], timeout: float) -> None:
    """Run the manifest's exec readiness probe in the container until it passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if containers.run("exec", container, *probe, check=False).returncode == 0:
            return
        time.sleep(1)
    raise AssertionError(
        f"{container}: readiness probe {probe} failing\n{containers.logs(container)}"
    )


def job_record(redis: str, key: str) -> dict[str, str]:
    """The store's record of the job filed under the request key (redis-cli in the Redis pod
    authenticates with REDISCLI_AUTH, from the Secret); {} when there is none."""
    prefix = "{" + DEFAULT_PREFIX + "}"
    answer = containers.run(
        "exec", redis, "redis-cli", "EVAL", _RECORD_SCRIPT, "1",
        f"{prefix}:key:{DEFAULT_NAME}/{key}", prefix, *RECORD_FIELDS,
    ).stdout.splitlines()  # fmt: skip
    return dict(zip(RECORD_FIELDS, answer, strict=False))


@dataclass
class Followed:
    """What the caller saw after the kill."""

    result: Result | None = None
    second: dict[str, str] | None = None
    """The store's record once a second attempt held the job: its lease names the replica."""
    second_at: float = 0.0


def follow(events: Iterable[Event], redis: str, key: str) -> Followed:
    """Read the job's events to the end of the stream, looking up the store's record at each
    Progress until a second attempt runs the job."""
    seen = Followed()
    for event in events:
        if isinstance(event, Result):
            seen.result = event
        elif seen.second is None and isinstance(event, Progress):
            record = job_record(redis, key)
            if record.get("state") == "running" and record.get("attempt") == "2":
                seen.second, seen.second_at = record, time.monotonic()
    return seen


def test_redis_runs_as_the_statefulset_says(fleet: Fleet) -> None:
    status = containers.run("exec", fleet.redis, "cat", "/proc/1/status").stdout
    assert "\nUid:\t999\t999\t999\t999\n" in status, status
    denied = containers.run("exec", fleet.redis, "touch", "/x", check=False)
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr
    cli = ("exec", fleet.redis, "redis-cli")
    policy = containers.run(*cli, "CONFIG", "GET", "maxmemory-policy").stdout.split()
    assert policy == ["maxmemory-policy", "noeviction"]
    assert containers.run(*cli, "CONFIG", "GET", "appendonly").stdout.split()[-1] == "yes"
    # The append-only file on the claim, written by uid 999.
    listing = containers.run("exec", fleet.redis, "ls", "-n", "/data/appendonlydir").stdout
    assert " 999 999 " in listing, listing


def test_a_job_outlives_the_replica_running_it(fleet: Fleet) -> None:
    started = time.monotonic()
    for replica in fleet.replicas:
        containers.wait_serving(replica.address, START_TIMEOUT, alive=[replica.container])
    print(f"both replicas SERVING after {time.monotonic() - started:.0f} s")

    a, b = fleet.replicas
    key = f"deploy-fleet-{secrets.token_hex(8)}"
    with StyleTransferClient(a.address, token=fleet.token, timeout=300) as caller:
        stream = caller.stream(CONTENT, STYLE, request_key=key, **JOB)
        first = next(event for event in stream if isinstance(event, Progress))
        record = job_record(fleet.redis, key)
        assert record.get("state") == "running" and record.get("attempt") == "1", record
        # A lease's owner is the replica's host name (the pod's name), its pid and a nonce.
        (runner,) = [r for r in fleet.replicas if record["owner"].startswith(f"{r.name}-")]
        survivor = b if runner is a else a
        containers.run("kill", "--signal", "KILL", runner.container)
        killed = time.monotonic()
        print(f"killed {runner.name} at evaluation {first.evaluations} of the job")
        if runner is a:
            # The caller's replica is gone: it re-attaches with the key through the other.
            stream.close()
            with StyleTransferClient(b.address, token=fleet.token, timeout=300) as again:
                seen = follow(
                    again.stream(CONTENT, STYLE, request_key=key, **JOB), fleet.redis, key
                )
        else:
            with stream:
                seen = follow(stream, fleet.redis, key)
    recovery = time.monotonic() - killed

    result = seen.result
    assert result is not None, "the job's events ended without a Result"
    assert (result.width, result.height) == (64, 43)
    state = containers.run(
        "inspect", "--format", "{{.State.Running}} {{.State.ExitCode}}", runner.container
    ).stdout.split()
    assert state == ["false", "137"], state  # SIGKILL; podman did not restart it
    assert seen.second is not None, "no second attempt seen running"
    assert seen.second["owner"].startswith(f"{survivor.name}-"), seen.second
    final = job_record(fleet.redis, key)
    assert final == {"state": "done", "attempt": "2", "owner": "", "lost": "1"}, final
    with StyleTransferClient(survivor.address, token=fleet.token, timeout=60) as client:
        info = client.get_job(key, include_image=False)
    assert info.state == "done" and info.result is not None, info
    assert (info.result.width, info.result.height) == (64, 43)
    assert "leases_reclaimed" in containers.logs(survivor.container)
    print(
        f"recovery: {runner.name} killed; {survivor.name} ran the job again (attempt 2) "
        f"{seen.second_at - killed:.1f} s later (lease {fleet.lease} s), {result.evaluations} "
        f"evaluations in {result.compute_time:.1f} s; the caller had the result "
        f"{recovery:.1f} s after the kill"
    )
