"""Per-pod CPU, memory and GPU monitoring of the cluster (k8s/monitoring/), checked offline: the
DCGM exporter, kube-state-metrics and cAdvisor jobs of prometheus.yaml, cluster-alerts.yaml with
its promtool unit tests, and grafana-cluster-dashboard.json.

No cluster, exporter or upstream Prometheus is at hand, and Debian's promtool has no Kubernetes
discovery. So the discovery blocks are checked against what Prometheus documents for them and
their relabelling is run on discovered targets as Prometheus runs it (which pods and nodes
become targets, with which labels); metric names are checked against what each exporter
documents, label names against what kube-state-metrics makes of the labels terraform/ and the
step pods carry; and promtool evaluates every dashboard query on a small synthetic cluster.
"""

import functools
import json
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import yaml
from dagster_k8s import K8sRunLauncher

from aiplatform_dagster.defs.compute import GPU_T4, POOL_LABEL, PROFILE_TAG, PROFILES
from aiplatform_dagster_tests.infra import dagster_jobs
from aiplatform_dagster_tests.infra.test_step_jobs import (  # noqa: F401 (fixture)
    launcher,
    terraform_node_pools,
)
from aiplatform_dagster_tests.serving.test_monitoring_config import (
    AMTOOL,
    MONITORING,
    PROMTOOL,
    RECEIVERS,
    alert_rules,
    check_config,
    dashboard_expressions,
    run,
    tool,
)

RULES = "cluster-alerts.yaml"
RULE_TESTS = "cluster-alerts_test.yaml"
DASHBOARD = "grafana-cluster-dashboard.json"
CLUSTER_JOBS = {"kubernetes-cadvisor", "dcgm-exporter", "kube-state-metrics"}
ORIGIN = "__meta_test_discovered_address"
"""A label only the tests give discovered targets, to tell them apart in promtool's output."""
POOL = "label_aiplatform_pool"
PROFILE = "label_aiplatform_compute_profile"
"""The node pool and compute profile labels as the queries name them."""

DOCUMENTED_METRICS = {
    # NVIDIA dcgm-exporter, etc/default-counters.csv (the fields it exports by default).
    "DCGM_FI_DEV_GPU_UTIL": "dcgm-exporter",
    "DCGM_FI_DEV_FB_USED": "dcgm-exporter",
    "DCGM_FI_DEV_FB_FREE": "dcgm-exporter",
    # kube-state-metrics, docs/metrics/workload/pod-metrics.md and cluster/node-metrics.md.
    "kube_pod_status_phase": "kube-state-metrics",
    "kube_pod_labels": "kube-state-metrics",
    "kube_pod_container_resource_limits": "kube-state-metrics",
    "kube_node_labels": "kube-state-metrics",
    "kube_node_created": "kube-state-metrics",
    "kube_node_status_capacity": "kube-state-metrics",
    # cAdvisor as the kubelet serves it at /metrics/cadvisor, docs/storage/prometheus.md.
    "container_cpu_usage_seconds_total": "kubernetes-cadvisor",
    "container_cpu_cfs_periods_total": "kubernetes-cadvisor",
    "container_cpu_cfs_throttled_periods_total": "kubernetes-cadvisor",
    "container_memory_working_set_bytes": "kubernetes-cadvisor",
}
"""Every metric the cluster alerts and dashboard may use, by the prometheus.yaml job that
scrapes it; add one only after finding it in that exporter's documentation."""

PROMQL_WORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "offset",
}  # fmt: skip
KUBERNETES_SD_FIELDS = {
    "api_server", "role", "kubeconfig_file", "namespaces", "selectors", "attach_metadata",
}  # fmt: skip
"""<kubernetes_sd_config> in Prometheus' docs/configuration/configuration.md (its HTTP client
settings left out: in a pod, discovery uses the service account by itself)."""
NODE_META = {
    "node_name", "node_label_*", "node_labelpresent_*", "node_annotation_*",
    "node_annotationpresent_*",
}  # fmt: skip
"""What `attach_metadata: {node: true}` adds to pod and endpointslice targets."""
POD_META = {
    "namespace", "pod_name", "pod_ip", "pod_label_*", "pod_labelpresent_*", "pod_annotation_*",
    "pod_annotationpresent_*", "pod_container_init", "pod_container_name", "pod_container_id",
    "pod_container_image", "pod_container_port_name", "pod_container_port_number",
    "pod_container_port_protocol", "pod_ready", "pod_phase", "pod_node_name", "pod_host_ip",
    "pod_uid", "pod_controller_kind", "pod_controller_name",
}  # fmt: skip
SERVICE_META = {
    "namespace", "service_annotation_*", "service_annotationpresent_*", "service_cluster_ip",
    "service_loadbalancer_ip", "service_external_name", "service_label_*",
    "service_labelpresent_*", "service_name", "service_port_name", "service_port_number",
    "service_port_protocol", "service_type",
}  # fmt: skip
ENDPOINTSLICE_META = {
    "endpointslice_name", "endpointslice_label_*", "endpointslice_labelpresent_*",
    "endpointslice_annotation_*", "endpointslice_annotationpresent_*",
    "endpointslice_address_target_kind", "endpointslice_address_target_name",
    "endpointslice_address_type", "endpointslice_endpoint_conditions_ready",
    "endpointslice_endpoint_conditions_serving", "endpointslice_endpoint_conditions_terminating",
    "endpointslice_endpoint_hostname", "endpointslice_endpoint_node_name",
    "endpointslice_endpoint_zone", "endpointslice_port", "endpointslice_port_name",
    "endpointslice_port_protocol",
}  # fmt: skip
META_LABELS = {
    "node": NODE_META | {"node_provider_id", "node_condition_*", "node_address_*"},
    "pod": POD_META,
    "endpointslice": ENDPOINTSLICE_META | SERVICE_META | POD_META,
}
"""The meta labels (less ``__meta_kubernetes_``) each discovery role gives a target
("Available meta labels" in the same document); ``*`` stands for a label or annotation name."""


def prometheus_label(key: str) -> str:
    """How Prometheus discovery names a Kubernetes label (strutil.SanitizeLabelName)."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", key)


def kube_state_metrics_label(key: str) -> str:
    """How kube-state-metrics names a Kubernetes label on its *_labels metrics
    (internal/store/utils.go: SanitizeLabelName, then snake case, prefixed ``label_``)."""
    snake = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", prometheus_label(key))
    return f"label_{snake.lower()}"


def prometheus_config() -> dict[str, Any]:
    return yaml.safe_load((MONITORING / "prometheus.yaml").read_text())


def scrape_jobs() -> dict[str, dict[str, Any]]:
    return {job["job_name"]: job for job in prometheus_config()["scrape_configs"]}


def dashboard() -> dict[str, Any]:
    return json.loads((MONITORING / DASHBOARD).read_text())


def queries() -> dict[str, list[str]]:
    """Every PromQL expression of the cluster alerts and the cluster dashboard, by file."""
    return {
        RULES: [rule["expr"] for rule in alert_rules(RULES)],
        DASHBOARD: list(dashboard_expressions(dashboard())),
    }


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: its identifiers, less strings, label
    matchers, ranges, the label lists of by/on/group_left, function names and keywords."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = re.findall(r"(?<![\w.$])[a-zA-Z_:][\w:]*\b(?!\s*\()", text)
    return {name for name in names if name.lower() not in PROMQL_WORDS}


def discover(job_name: str, targets: list[dict[str, str]], tmp_path: Path) -> dict[str, Any]:
    """What Prometheus makes of ``targets`` (address and meta labels, as Kubernetes discovery
    would give them) in the job ``job_name``: `promtool check service-discovery` runs the job's
    own relabelling on them, a file of targets standing in for Kubernetes discovery. By the
    discovered address: the target's labels after relabelling, empty when it is dropped."""
    [job] = [job for job in prometheus_config()["scrape_configs"] if job["job_name"] == job_name]
    found = tmp_path / f"{job_name}.json"
    # promtool 2.42 reports discoveredLabels as relabelled: a label of our own names the target.
    groups = [
        {"targets": [t["__address__"]], "labels": t | {ORIGIN: t["__address__"]}} for t in targets
    ]
    found.write_text(json.dumps(groups))
    job = {key: value for key, value in job.items() if key != "kubernetes_sd_configs"}
    config = tmp_path / f"{job_name}.yaml"
    job_config = {**job, "file_sd_configs": [{"files": [str(found)]}]}
    config.write_text(yaml.safe_dump({"scrape_configs": [job_config]}))
    output = run(
        tool(PROMTOOL), "check", "service-discovery", "--timeout=1s", str(config), job_name
    )
    results, _ = json.JSONDecoder().raw_decode(output[output.index("[") :])
    by_address = {r["discoveredLabels"][ORIGIN]: r["labels"] for r in results}
    assert by_address.keys() == {t["__address__"] for t in targets}, output
    return by_address


def public(labels: dict[str, str]) -> dict[str, str]:
    """The labels a target's series carry (those not starting with ``__``)."""
    return {name: value for name, value in labels.items() if not name.startswith("__")}


def url(labels: dict[str, str]) -> str:
    return f"{labels['__scheme__']}://{labels['__address__']}{labels['__metrics_path__']}"


def node_meta(name: str, node_labels: dict[str, str]) -> dict[str, str]:
    meta = {"__meta_kubernetes_node_name": name}
    for key, value in node_labels.items():
        meta[f"__meta_kubernetes_node_label_{prometheus_label(key)}"] = value
        meta[f"__meta_kubernetes_node_labelpresent_{prometheus_label(key)}"] = "true"
    return meta


def pod_target(address: str, pod_labels: dict[str, str], phase: str = "Running") -> dict[str, str]:
    """A pod role target (one container port) of a pod in gpu-operator on aks-gpu-1, with the
    node's metadata attached."""
    target = {
        "__address__": address,
        "__meta_kubernetes_namespace": "gpu-operator",
        "__meta_kubernetes_pod_name": f"exporter-{address}",
        "__meta_kubernetes_pod_node_name": "aks-gpu-1",
        "__meta_kubernetes_pod_phase": phase,
        "__meta_kubernetes_pod_container_port_number": address.rpartition(":")[2],
        **node_meta("aks-gpu-1", gpu_pool_labels()),
    }
    for key, value in pod_labels.items():
        target[f"__meta_kubernetes_pod_label_{prometheus_label(key)}"] = value
    return target


@functools.cache
def gpu_pool_labels() -> dict[str, str]:
    """The node labels terraform/ gives the GPU pool."""
    [labels] = [p["labels"] for p in terraform_node_pools().values() if p["taints"]]
    return labels


def test_prometheus_config_passes_promtool_and_the_cluster_rules_their_unit_tests(
    tmp_path: Path,
) -> None:
    promtool = tool(PROMTOOL)
    assert RULES in prometheus_config()["rule_files"]
    assert scrape_jobs().keys() >= CLUSTER_JOBS
    output = check_config(promtool, tmp_path)
    assert "SUCCESS: 5 rules found" in output, output
    assert yaml.safe_load((MONITORING / RULE_TESTS).read_text())["rule_files"] == [RULES]
    assert "SUCCESS" in run(promtool, "test", "rules", RULE_TESTS)


def test_kubernetes_discovery_uses_only_the_fields_and_meta_labels_prometheus_documents() -> None:
    """What `promtool check config` would reject, and what it cannot see: a meta label the role
    never sets leaves a relabel rule that silently keeps nothing."""
    for name in CLUSTER_JOBS:
        job = scrape_jobs()[name]
        [sd] = job["kubernetes_sd_configs"]
        assert sd.keys() <= KUBERNETES_SD_FIELDS and sd["role"] in META_LABELS, name
        assert sd.get("namespaces", {}).keys() <= {"own_namespace", "names"}, name
        attached = sd.get("attach_metadata", {})
        assert attached.keys() <= {"node"} and (sd["role"] != "node" or not attached), name
        known = META_LABELS[sd["role"]] | (NODE_META if attached.get("node") else set())
        patterns = [re.escape(label).replace(r"\*", "[a-zA-Z0-9_]+") for label in known]
        for rule in job["relabel_configs"]:
            for source in rule.get("source_labels", []):
                meta = source.removeprefix("__meta_kubernetes_")
                if meta != source:
                    assert any(re.fullmatch(p, meta) for p in patterns), (name, source)


def test_discovered_nodes_and_pods_become_the_scrapes_and_labels_the_queries_use(
    tmp_path: Path,
) -> None:
    """Each cluster job's relabelling, run by promtool on the targets Kubernetes discovery gives
    it: every node's cAdvisor through the API server, the DCGM exporter pods only, and
    kube-state-metrics' metrics port only, each with the node and pool labels the queries use."""
    jobs = scrape_jobs()
    nodes = {
        "127.0.0.2:10250": ("aks-gpu-1", gpu_pool_labels()),
        "127.0.0.3:10250": ("aks-system-1", {}),
    }
    cadvisor = discover(
        "kubernetes-cadvisor",
        [
            {"__address__": address, "instance": node, **node_meta(node, labels)}
            for address, (node, labels) in nodes.items()
        ],
        tmp_path,
    )
    proxy = "https://kubernetes.default.svc:443/api/v1/nodes/{}/proxy/metrics/cadvisor"
    assert {address: url(labels) for address, labels in cadvisor.items()} == {
        address: proxy.format(node) for address, (node, _) in nodes.items()
    }
    assert {address: public(labels) for address, labels in cadvisor.items()} == {
        "127.0.0.2:10250": {
            "job": "kubernetes-cadvisor",
            "instance": "aks-gpu-1",
            "node": "aks-gpu-1",
            POOL: "gpu",
        },
        "127.0.0.3:10250": {
            "job": "kubernetes-cadvisor",
            "instance": "aks-system-1",
            "node": "aks-system-1",
        },
    }
    assert jobs["kubernetes-cadvisor"]["authorization"]["credentials_file"].startswith(
        "/var/run/secrets/kubernetes.io/serviceaccount/"
    )

    assert jobs["dcgm-exporter"]["kubernetes_sd_configs"][0]["namespaces"]["names"] == [
        "gpu-operator"
    ]
    assert jobs["dcgm-exporter"]["honor_labels"]  # its namespace/pod: the pod holding the GPU
    operator_chart = {"app": "nvidia-dcgm-exporter"}  # the GPU Operator's DaemonSet
    nvidia_chart = {"app.kubernetes.io/name": "dcgm-exporter"}  # NVIDIA's dcgm-exporter chart
    dcgm = discover(
        "dcgm-exporter",
        [
            pod_target("127.0.0.2:9400", operator_chart),
            pod_target("127.0.0.3:9400", nvidia_chart),
            pod_target("127.0.0.4:9400", operator_chart, phase="Pending"),
            pod_target("127.0.0.5:5555", operator_chart),
            pod_target("127.0.0.6:9400", {"app": "nvidia-device-plugin-daemonset"}),
        ],
        tmp_path,
    )
    exporter = {"job": "dcgm-exporter", "node": "aks-gpu-1", POOL: "gpu"}
    assert {address: public(labels) for address, labels in dcgm.items()} == {
        "127.0.0.2:9400": {**exporter, "instance": "127.0.0.2:9400"},
        "127.0.0.3:9400": {**exporter, "instance": "127.0.0.3:9400"},
        "127.0.0.4:9400": {},
        "127.0.0.5:5555": {},
        "127.0.0.6:9400": {},
    }

    assert jobs["kube-state-metrics"]["honor_labels"]  # its namespace/pod/node: the objects'
    services = {
        "127.0.0.2:8080": ("kube-state-metrics", "kube-system"),
        "127.0.0.3:8080": ("prometheus-kube-state-metrics", "monitoring"),
        "127.0.0.4:8081": ("kube-state-metrics", "kube-system"),  # its own telemetry
        "127.0.0.5:8080": ("metrics-server", "kube-system"),
    }
    ksm = discover(
        "kube-state-metrics",
        [
            {
                "__address__": address,
                "__meta_kubernetes_namespace": namespace,
                "__meta_kubernetes_service_name": service,
                "__meta_kubernetes_endpointslice_port": address.rpartition(":")[2],
            }
            for address, (service, namespace) in services.items()
        ],
        tmp_path,
    )
    kept = {address for address, labels in ksm.items() if labels}
    assert kept == {"127.0.0.2:8080", "127.0.0.3:8080"}, ksm


def test_every_metric_in_the_cluster_alerts_and_dashboard_is_one_its_exporter_documents() -> None:
    used = {
        source: {n for e in exprs for n in metric_names(e)} for source, exprs in queries().items()
    }
    one_of_each = {"DCGM_FI_DEV_GPU_UTIL", "kube_pod_labels", "container_cpu_cfs_periods_total"}
    assert one_of_each <= used[RULES], used  # the names are found at all
    for source, names in used.items():
        assert names <= DOCUMENTED_METRICS.keys(), f"{source}: {names - DOCUMENTED_METRICS.keys()}"
    jobs = scrape_jobs()
    assert set(DOCUMENTED_METRICS.values()) == CLUSTER_JOBS
    for name, job in jobs.items():  # only cAdvisor's is filtered: one keep rule on the name
        assert name == "kubernetes-cadvisor" or "metric_relabel_configs" not in job, name
    [keep] = jobs["kubernetes-cadvisor"]["metric_relabel_configs"]
    assert keep["action"] == "keep" and keep["source_labels"] == ["__name__"]
    cadvisor = {
        n for n in set().union(*used.values()) if DOCUMENTED_METRICS[n] == "kubernetes-cadvisor"
    }
    kept = {
        n
        for n in cadvisor | {"container_network_receive_bytes_total"}
        if re.fullmatch(keep["regex"], n)
    }
    assert kept == cadvisor, "kubernetes-cadvisor must keep exactly the metrics used"


def test_label_names_in_the_queries_are_those_kube_state_metrics_makes_of_the_pool_and_step_labels(
    launcher: K8sRunLauncher,  # noqa: F811 (fixture)
) -> None:
    """A misspelt label name selects nothing: the alert never fires, the panel stays empty."""
    run_ = dg.DagsterRun(job_name="embeddings", run_id=str(uuid.uuid4()))
    tags = {k: v if isinstance(v, str) else json.dumps(v) for k, v in GPU_T4.op_tags().items()}
    manifest = dagster_jobs.step_job(run_, launcher, "chunk_embeddings", tags)
    pod_labels = manifest["spec"]["template"]["metadata"]["labels"]
    allowlist = re.search(
        r"--metric-labels-allowlist=(\S+)", (MONITORING / "prometheus.yaml").read_text()
    )
    assert allowlist, "prometheus.yaml must say how kube-state-metrics is started"
    allowed = {
        kind: keys.split(",") for kind, keys in re.findall(r"(\w+)=\[([^\]]*)\]", allowlist[1])
    }
    assert allowed["nodes"] == [POOL_LABEL]
    assert set(allowed["pods"]) <= pod_labels.keys(), pod_labels
    exported = {kube_state_metrics_label(key) for key in allowed["nodes"] + allowed["pods"]}

    rules = alert_rules(RULES)
    texts = [*(json.dumps(rule) for rule in rules), json.dumps(dashboard())]
    used = {name for text in texts for name in re.findall(r"\blabel_[a-z0-9_]+", text)}
    assert {POOL, PROFILE} <= used <= exported, f"not from kube-state-metrics: {used - exported}"
    assert (kube_state_metrics_label(POOL_LABEL), kube_state_metrics_label(PROFILE_TAG)) == (
        POOL,
        PROFILE,
    )

    matched = {(n, v) for r in rules for n, v in re.findall(r'(label_\w+)="([^"]*)"', r["expr"])}
    pools = {p["labels"][POOL_LABEL] for p in terraform_node_pools().values()}
    assert {v for n, v in matched if n == POOL} == {"gpu"} <= pools
    gpu_profiles = {name for name, profile in PROFILES.items() if profile.gpus}
    assert {v for n, v in matched if n == PROFILE} == gpu_profiles
    assert pod_labels[PROFILE_TAG] in gpu_profiles


def test_the_cluster_dashboard_parses_and_every_panel_queries_the_templated_datasource() -> None:
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels) >= 12
    for panel in panels:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"] and panel["description"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
            assert target["expr"].strip(), panel["title"]
    titles = " ".join(p["title"] for p in panels)
    for wanted in ("by pod", "by node pool", "by compute profile", "GPU memory", "pending"):
        assert wanted.lower() in titles.lower(), wanted


GIB = 1024**3


@dataclass(frozen=True)
class Pod:
    """A running pod of the synthetic cluster: what cAdvisor, kube-state-metrics and the DCGM
    exporter would report for its one container."""

    namespace: str
    node: str
    container: str
    cores: float
    memory: int
    limit: int = 0
    """Memory limit; 0 for none."""
    throttled: float = 0.0
    """Share of CPU periods throttled."""
    profile: str | None = None
    """Compute profile; None when not a Dagster step."""
    gpu_util: float | None = None


NODES = {"aks-cpu-1": ("cpu", 8, 32 * GIB), "aks-gpu-1": ("gpu", 8, 56 * GIB)}
"""Node: pool, CPU cores, memory. aks-system-1 (no aiplatform/pool label) comes on top."""
PODS = {
    "aiplatform-api-1": Pod("aiplatform", "aks-cpu-1", "api", 0.5, GIB, 2 * GIB, 0.5),
    "step-small": Pod(
        "aiplatform", "aks-cpu-1", "dagster", 0.25, GIB // 2, 4 * GIB, 0.25, "cpu-small"
    ),
    "step-large": Pod("aiplatform", "aks-cpu-1", "dagster", 3, 8 * GIB, 16 * GIB, 0.5, "cpu-large"),
    "step-gpu": Pod("aiplatform", "aks-gpu-1", "dagster", 1, 12 * GIB, 48 * GIB, 0, "gpu-t4", 60),
    "nvidia-dcgm-exporter-x1": Pod("gpu-operator", "aks-gpu-1", "exporter", 0.125, GIB // 4),
    "coredns-1": Pod("kube-system", "aks-system-1", "coredns", 0.125, GIB // 8),
}
PENDING = {"step-gpu-waiting": "gpu-t4", "step-large-waiting": "cpu-large"}
"""Step pods that wait for a node, by compute profile."""
GPU_MEMORY_MIB = (6144, 9216)
"""Used and free framebuffer memory of aks-gpu-1's T4."""


def series(name: str, values: str, **labels: str) -> dict[str, str]:
    matchers = ",".join(f'{key}="{value}"' for key, value in labels.items())
    return {"series": f"{name}{{{matchers}}}", "values": values}


def step_pod_labels(pod: str, profile: str | None) -> dict[str, str]:
    """kube_pod_labels' labels of a step pod (its op named after it); empty for other pods."""
    if profile is None:
        return {}
    return {
        "namespace": "aiplatform", "pod": pod, PROFILE: profile,
        "label_dagster_op": pod.replace("-", "_"), "label_dagster_run_id": "r1",
    }  # fmt: skip


def synthetic_cluster() -> list[dict[str, str]]:
    """The series the three jobs would scrape from the cluster above: one sample a minute for
    10 minutes, counters growing at the pods' rates."""
    cluster = [series("kube_node_labels", "1x10", node="aks-system-1")]
    capacities = {node: (cores, memory) for node, (_, cores, memory) in NODES.items()}
    for node, (cores, memory) in (capacities | {"aks-system-1": (4, 16 * GIB)}).items():
        for resource, unit, amount in (("cpu", "core", cores), ("memory", "byte", memory)):
            labels = {"node": node, "resource": resource, "unit": unit}
            cluster.append(series("kube_node_status_capacity", f"{amount}x10", **labels))
    for node, (pool, _, _) in NODES.items():
        cluster.append(series("kube_node_labels", "1x10", node=node, **{POOL: pool}))
    for name, pod in PODS.items():
        container = {"namespace": pod.namespace, "pod": name, "container": pod.container}
        on_node = {**container, "node": pod.node}  # cAdvisor's, with the job's node labels
        on_node |= {POOL: NODES[pod.node][0]} if pod.node in NODES else {}
        phase = {"namespace": pod.namespace, "pod": name}
        throttled = f"0+{600 * pod.throttled}x10"
        cluster += [
            series("container_cpu_usage_seconds_total", f"0+{pod.cores * 60}x10", **on_node),
            series("container_memory_working_set_bytes", f"{pod.memory}x10", **on_node),
            series("container_memory_working_set_bytes", "1x10", **on_node | {"container": ""}),
            series("container_cpu_cfs_periods_total", "0+600x10", **on_node),
            series("container_cpu_cfs_throttled_periods_total", throttled, **on_node),
            series("kube_pod_container_resource_limits", "4x10", **container, resource="cpu"),
            series("kube_pod_status_phase", "0x10", **phase, phase="Pending"),
            series("kube_pod_status_phase", "1x10", **phase, phase="Running"),
            series("kube_pod_labels", "1x10", **(step_pod_labels(name, pod.profile) or phase)),
        ]  # fmt: skip
        if pod.limit:
            limit = {**container, "resource": "memory", "unit": "byte"}
            cluster.append(series("kube_pod_container_resource_limits", f"{pod.limit}x10", **limit))
        if pod.gpu_util is not None:
            gpu = {**on_node, "gpu": "0", "modelName": "Tesla T4"}
            used, free = GPU_MEMORY_MIB
            cluster += [
                series("DCGM_FI_DEV_GPU_UTIL", f"{pod.gpu_util}x10", **gpu),
                series("DCGM_FI_DEV_FB_USED", f"{used}x10", **gpu),
                series("DCGM_FI_DEV_FB_FREE", f"{free}x10", **gpu),
            ]
    for name, profile in PENDING.items():
        phase = {"namespace": "aiplatform", "pod": name}
        cluster += [
            series("kube_pod_status_phase", "1x10", **phase, phase="Pending"),
            series("kube_pod_status_phase", "0x10", **phase, phase="Running"),
            series("kube_pod_labels", "1x10", **step_pod_labels(name, profile)),
        ]
    return cluster


def by(label: str, values: dict[str, float]) -> list[tuple[dict[str, str], float]]:
    return [({label: key}, value) for key, value in values.items()]


def total(
    pods: Iterable[Pod], key: Callable[[Pod], str], value: Callable[[Pod], float]
) -> dict[str, float]:
    sums: dict[str, float] = {}
    for pod in pods:
        sums[key(pod)] = sums.get(key(pod), 0) + value(pod)
    return sums


def expected_panels() -> dict[tuple[str, str], list[tuple[dict[str, str], float]]]:
    """What each dashboard query must show for the synthetic cluster, by (panel, refId)."""
    ours = {name: pod for name, pod in PODS.items() if pod.namespace == "aiplatform"}
    steps = {name: pod for name, pod in ours.items() if pod.profile}
    gpus = {name: pod.gpu_util for name, pod in ours.items() if pod.gpu_util is not None}
    [(gpu_pod, utilisation)] = gpus.items()
    gpu_node, gpu_profile = PODS[gpu_pod].node, PODS[gpu_pod].profile or ""
    on_pools = [pod for pod in PODS.values() if pod.node in NODES]
    capacity = {pool: (cores, memory) for pool, cores, memory in NODES.values()}
    used, free = GPU_MEMORY_MIB

    def pool(pod: Pod) -> str:
        return NODES[pod.node][0]

    def profile(pod: Pod) -> str:
        return pod.profile or ""

    def cores(pod: Pod) -> float:
        return pod.cores

    def memory(pod: Pod) -> float:
        return pod.memory

    pending = {profile(pod): 0.0 for pod in steps.values()}
    for waiting in PENDING.values():
        pending[waiting] += 1

    return {
        ("CPU by pod", "A"): by("pod", {name: pod.cores for name, pod in ours.items()}),
        ("Memory by pod", "A"): by("pod", {name: pod.memory for name, pod in ours.items()}),
        ("Memory of limit by pod", "A"): [
            ({"pod": name, "container": pod.container}, pod.memory / pod.limit)
            for name, pod in ours.items()
        ],
        ("CPU throttling of step pods", "A"): [
            (step_pod_labels(name, pod.profile) | {"container": pod.container}, pod.throttled)
            for name, pod in steps.items()
        ],
        ("GPU utilisation by pod", "A"): by("pod", gpus),
        ("GPU utilisation by GPU node", "A"): by("node", {gpu_node: utilisation}),
        ("GPU memory used by GPU node", "A"): by("node", {gpu_node: used}),
        ("GPU memory used, share of the GPU", "A"): by("node", {gpu_node: used / (used + free)}),
        ("CPU by node pool", "A"): by(POOL, total(on_pools, pool, cores)),
        ("CPU by node pool", "B"): by(POOL, {name: c for name, (c, _) in capacity.items()}),
        ("Memory by node pool", "A"): by(POOL, total(on_pools, pool, memory)),
        ("Memory by node pool", "B"): by(POOL, {name: m for name, (_, m) in capacity.items()}),
        ("Nodes by pool", "A"): by(POOL, dict.fromkeys(capacity, 1)),
        ("Pods pending by compute profile", "A"): by(PROFILE, pending),
        ("CPU by compute profile", "A"): by(PROFILE, total(steps.values(), profile, cores)),
        ("Memory by compute profile", "A"): by(PROFILE, total(steps.values(), profile, memory)),
        ("GPU utilisation by compute profile", "A"): by(PROFILE, {gpu_profile: utilisation}),
    }  # fmt: skip


def test_every_dashboard_query_shows_the_synthetic_cluster_as_it_is(tmp_path: Path) -> None:
    """promtool evaluates each panel's query (with a 5m rate interval) on the synthetic cluster:
    a wrong join, label or filter shows wrong numbers or none."""
    expected = expected_panels()
    targets = {
        (p["title"], t["refId"]): t["expr"] for p in dashboard()["panels"] for t in p["targets"]
    }
    assert targets.keys() == expected.keys(), "a panel without an expectation, or the reverse"
    tests = [
        {
            "expr": targets[key].replace("$__rate_interval", "5m"),
            "eval_time": "10m",
            "exp_samples": [
                {
                    "labels": "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}",
                    "value": value,
                }
                for labels, value in samples
            ],
        }
        for key, samples in expected.items()
    ]
    suite = tmp_path / "dashboard_test.yaml"
    suite.write_text(
        yaml.safe_dump(
            {
                "rule_files": [],
                "evaluation_interval": "1m",
                "tests": [
                    {
                        "interval": "1m",
                        "input_series": synthetic_cluster(),
                        "promql_expr_test": tests,
                    }
                ],
            }
        )
    )
    assert "SUCCESS" in run(tool(PROMTOOL), "test", "rules", str(suite))


def test_every_cluster_alert_has_a_severity_its_route_and_says_what_to_check() -> None:
    rules = alert_rules(RULES)
    names = [rule["alert"] for rule in rules]
    assert set(names) == {
        "AiplatformGpuNodeIdle", "AiplatformGpuNodeWithoutMetrics", "AiplatformPodNearMemoryLimit",
        "AiplatformStepCpuThrottled", "AiplatformGpuStepPending",
    }  # fmt: skip
    assert not set(names) & {rule["alert"] for rule in alert_rules()}  # unique across files
    tested = yaml.safe_load((MONITORING / RULE_TESTS).read_text())["tests"]
    for rule in rules:
        cases = [
            c for test in tested for c in test["alert_rule_test"] if c["alertname"] == rule["alert"]
        ]
        assert any(c["exp_alerts"] for c in cases) and any(not c["exp_alerts"] for c in cases)
        assert rule["labels"]["severity"] in RECEIVERS, rule["alert"]
        assert rule["annotations"].keys() == {"summary", "description"}, rule["alert"]
        assert len(rule["annotations"]["description"]) > 100, rule["alert"]
        run(
            tool(AMTOOL), "config", "routes", "test", "--config.file=alertmanager.yaml",
            f"--verify.receivers={RECEIVERS[rule['labels']['severity']]}",
            f"severity={rule['labels']['severity']}", f"alertname={rule['alert']}",
        )  # fmt: skip
