"""Deterministic, realistic metrics pages for the scrape tests and benchmarks.

`python bench/_scrape_pages.py` rewrites the golden fixtures in tests/unit/scrape/data/. The
shapes follow real exporters: vLLM (prometheus_client, model labels, histograms), a Kubernetes
component such as metrics-server (Go runtime, apiserver and workqueue families) and
node_exporter (many label combinations, escaped label values), plus an OpenMetrics variant.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent.parent / "tests" / "unit" / "scrape" / "data"

_LE = (
    "0.001",
    "0.005",
    "0.01",
    "0.02",
    "0.04",
    "0.06",
    "0.08",
    "0.1",
    "0.25",
    "0.5",
    "0.75",
    "1.0",
    "2.5",
    "5.0",
    "7.5",
    "10.0",
    "+Inf",
)


def _histogram(
    out: list[str], name: str, labels: str, rng: random.Random, om: bool = False
) -> None:
    count = 0
    for le in _LE:
        count += rng.randint(0, 50)
        sep = "," if labels else ""
        ex = (
            f' # {{trace_id="{rng.randrange(16**8):08x}"}} 0.0{rng.randint(1, 9)}'
            if om and rng.random() < 0.2
            else ""
        )
        out.append(f'{name}_bucket{{{labels}{sep}le="{le}"}} {count}.0{ex}')
    lab = f"{{{labels}}}" if labels else ""
    out.append(f"{name}_count{lab} {count}.0")
    out.append(f"{name}_sum{lab} {rng.uniform(0, 500):.6f}")


def _python_process(out: list[str], rng: random.Random) -> None:
    out += [
        "# HELP python_gc_objects_collected_total Objects collected during gc",
        "# TYPE python_gc_objects_collected_total counter",
    ]
    for gen in range(3):
        out.append(
            f'python_gc_objects_collected_total{{generation="{gen}"}} {rng.randint(0, 9999)}.0'
        )
    out += [
        "# HELP python_info Python platform information",
        "# TYPE python_info gauge",
        'python_info{implementation="CPython",major="3",minor="12",patchlevel="3",'
        'version="3.12.3"} 1.0',
        "# HELP process_resident_memory_bytes Resident memory size in bytes.",
        "# TYPE process_resident_memory_bytes gauge",
        f"process_resident_memory_bytes {rng.randint(10**8, 10**10)}.0",
        "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.",
        "# TYPE process_start_time_seconds gauge",
        "process_start_time_seconds 1.72304563795e+09",
    ]


def vllm_page(target_bytes: int = 89 * 1024, seed: int = 1) -> str:
    """A vLLM /metrics page of about `target_bytes` (several models, engines and histograms)."""
    rng = random.Random(seed)
    out: list[str] = []
    _python_process(out, rng)
    gauges = (
        "num_requests_running",
        "num_requests_waiting",
        "num_requests_swapped",
        "gpu_cache_usage_perc",
        "cpu_cache_usage_perc",
        "gpu_prefix_cache_hit_rate",
    )
    hists = (
        "time_to_first_token_seconds",
        "time_per_output_token_seconds",
        "e2e_request_latency_seconds",
        "request_queue_time_seconds",
    )
    models = [f"model-{k}" for k in range(1, 40)]
    m = 0
    while sum(len(x) + 1 for x in out) < target_bytes and m < len(models):
        model = models[m] if m else "llama"
        lab = f'engine="0",model_name="{model}"'
        for g in gauges:
            out.append(f"# HELP vllm:{g} vLLM gauge {g}.")
            out.append(f"# TYPE vllm:{g} gauge")
            out.append(f"vllm:{g}{{{lab}}} {rng.randint(0, 40)}.0")
        for h in hists:
            out.append(f"# HELP vllm:{h} Histogram of {h}.")
            out.append(f"# TYPE vllm:{h} histogram")
            _histogram(out, f"vllm:{h}", lab, rng)
        out.append("# HELP vllm:prompt_tokens_total Number of prefill tokens processed.")
        out.append("# TYPE vllm:prompt_tokens_total counter")
        out.append(f"vllm:prompt_tokens_total{{{lab}}} {rng.randint(0, 10**7)}.0")
        m += 1
    text = "\n".join(out) + "\n"
    return text[: text.rfind("\n", 0, target_bytes) + 1] if len(text) > target_bytes else text


def go_runtime(out: list[str], rng: random.Random) -> None:
    out += [
        "# HELP go_gc_duration_seconds A summary of the pause duration of GC cycles.",
        "# TYPE go_gc_duration_seconds summary",
    ]
    for q in ("0", "0.25", "0.5", "0.75", "1"):
        out.append(f'go_gc_duration_seconds{{quantile="{q}"}} {rng.uniform(0, 0.001):.7g}')
    out += [
        f"go_gc_duration_seconds_sum {rng.uniform(0, 3):.6f}",
        f"go_gc_duration_seconds_count {rng.randint(100, 9000)}",
        "# HELP go_goroutines Number of goroutines that currently exist.",
        "# TYPE go_goroutines gauge",
        f"go_goroutines {rng.randint(50, 200)}",
        "# HELP go_info Information about the Go environment.",
        "# TYPE go_info gauge",
        'go_info{version="go1.22.5"} 1',
        "# HELP go_threads Number of OS threads created.",
        "# TYPE go_threads gauge",
        "go_threads 20",
        "# HELP go_threads_total Not a Go metric: a longer name that must not match go_threads.",
        "# TYPE go_threads_total counter",
        "go_threads_total 999",
    ]
    for name in (
        "alloc_bytes",
        "alloc_bytes_total",
        "buck_hash_sys_bytes",
        "frees_total",
        "gc_sys_bytes",
        "heap_alloc_bytes",
        "heap_idle_bytes",
        "heap_inuse_bytes",
        "heap_objects",
        "heap_released_bytes",
        "heap_sys_bytes",
        "last_gc_time_seconds",
        "lookups_total",
        "mallocs_total",
        "mcache_inuse_bytes",
        "mcache_sys_bytes",
        "mspan_inuse_bytes",
        "mspan_sys_bytes",
        "next_gc_bytes",
        "other_sys_bytes",
        "stack_inuse_bytes",
        "stack_sys_bytes",
        "sys_bytes",
    ):
        kind = "counter" if name.endswith("_total") else "gauge"
        out.append(f"# HELP go_memstats_{name} Go memstats {name}.")
        out.append(f"# TYPE go_memstats_{name} {kind}")
        out.append(f"go_memstats_{name} {rng.randint(0, 10**9):.6e}")


def metrics_server_page(target_bytes: int = 20 * 1024, seed: int = 2) -> str:
    """A metrics-server /metrics page (Go runtime, apiserver, workqueue, rest client)."""
    rng = random.Random(seed)
    out: list[str] = []
    go_runtime(out, rng)
    out += [
        "# HELP metric_server_storage_points Number of metrics points stored.",
        "# TYPE metric_server_storage_points gauge",
    ]
    for t in ("container", "node"):
        out.append(f'metric_server_storage_points{{type="{t}"}} {rng.randint(1, 500)}')
    out += [
        "# HELP metrics_server_kubelet_request_duration_seconds Duration of requests to kubelet.",
        "# TYPE metrics_server_kubelet_request_duration_seconds histogram",
    ]
    for node in range(3):
        _histogram(
            out, "metrics_server_kubelet_request_duration_seconds", f'node="node-{node}"', rng
        )
    out += [
        "# HELP apiserver_request_total [STABLE] Counter of apiserver requests.",
        "# TYPE apiserver_request_total counter",
    ]
    k = 0
    while sum(len(x) + 1 for x in out) < target_bytes:
        for code in ("200", "201", "403", "404"):
            out.append(
                f'apiserver_request_total{{code="{code}",component="apiserver",dry_run="",'
                f'group="metrics.k8s.io",resource="pods",scope="namespace",subresource="",'
                f'verb="LIST",version="v1beta{k}"}} {rng.randint(0, 10**5)}'
            )
        out.append(f'workqueue_adds_total{{name="queue-{k}"}} {rng.randint(0, 10**4)}')
        k += 1
    return "\n".join(out) + "\n"


def node_exporter_page(seed: int = 3) -> str:
    """A node_exporter-like page: per-CPU/mode counters, filesystems with escaped label values."""
    rng = random.Random(seed)
    out: list[str] = []
    go_runtime(out, rng)
    out += [
        "# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.",
        "# TYPE node_cpu_seconds_total counter",
    ]
    for cpu in range(8):
        for mode in ("idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user"):
            out.append(
                f'node_cpu_seconds_total{{cpu="{cpu}",mode="{mode}"}} {rng.uniform(0, 1e6):.2f}'
            )
    out += [
        "# HELP node_filesystem_avail_bytes Filesystem space available.",
        "# TYPE node_filesystem_avail_bytes gauge",
    ]
    mounts = [
        "/",
        "/boot",
        "/var/lib/kubelet",
        "C:\\\\data",
        '/mnt/with \\"quote\\"',
        "/mnt/new\\nline",
    ]
    for mp in mounts:
        out.append(
            f'node_filesystem_avail_bytes{{device="/dev/sda1",fstype="ext4",mountpoint="{mp}"}} '
            f"{rng.randint(0, 10**12)}"
        )
    out += [
        "# HELP node_load1 1m load average.",
        "# TYPE node_load1 gauge",
        f"node_load1 {rng.uniform(0, 8):.2f}",
        "# HELP node_load15 15m load average.",
        "# TYPE node_load15 gauge",
        f"node_load15 {rng.uniform(0, 8):.2f}",
        "# HELP node_network_receive_bytes_total Network device statistic receive_bytes.",
        "# TYPE node_network_receive_bytes_total counter",
    ]
    for dev in ("eth0", "lo", "cni0", "flannel.1"):
        out.append(
            f'node_network_receive_bytes_total{{device="{dev}"}} '
            f"{rng.randint(0, 10**12)} 1723045637950"
        )
    out += [
        "# HELP node_scrape_collector_duration_seconds Duration of a collector scrape.",
        "# TYPE node_scrape_collector_duration_seconds gauge",
    ]
    for c in ("cpu", "diskstats", "filesystem", "loadavg", "meminfo", "netdev"):
        out.append(
            f'node_scrape_collector_duration_seconds{{collector="{c}"}} {rng.uniform(0, 0.01):.6e}'
        )
    return "\n".join(out) + "\n"


def openmetrics_page(seed: int = 4) -> str:
    """An OpenMetrics 1.0 page: counters with _total/_created, exemplars, units, `# EOF`."""
    rng = random.Random(seed)
    out = [
        "# TYPE http_requests counter",
        "# HELP http_requests Requests served.",
    ]
    for path in ("/", "/api", "/metrics"):
        out.append(f'http_requests_total{{path="{path}"}} {rng.randint(0, 9999)}.0')
        out.append(f'http_requests_created{{path="{path}"}} 1.7230456e+09')
    out += [
        "# TYPE request_latency_seconds histogram",
        "# UNIT request_latency_seconds seconds",
        "# HELP request_latency_seconds Latency.",
    ]
    _histogram(out, "request_latency_seconds", 'handler="chat"', rng, om=True)
    out += [
        "# TYPE queue_depth gauge",
        "# HELP queue_depth Pending items.",
        'queue_depth{queue="a"} 3.0 1723045637.950',
        'queue_depth{queue="b"} 4.0',
        "# TYPE build info",
        "# HELP build Build information.",
        'build_info{version="1.2"} 1',
        "# EOF",
    ]
    return "\n".join(out) + "\n"


PAGES = {
    "vllm.prom": vllm_page,
    "metrics_server.prom": metrics_server_page,
    "node_exporter.prom": node_exporter_page,
    "openmetrics.txt": openmetrics_page,
}


def main() -> int:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    for name, make in PAGES.items():
        text = make()
        (DATA_DIR / name).write_text(text)
        print(f"{name}: {len(text)} bytes, {text.count(chr(10))} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
