"""Prometheus text pages that look like metrics-server's: go_* and process_* series,
histograms, and the workload's own load metrics."""

from __future__ import annotations

import math
import re

_GO_HEAD = [
    ("go_gc_duration_seconds", "summary", "A summary of the pause duration of garbage collection cycles."),
    ("go_goroutines", "gauge", "Number of goroutines that currently exist."),
    ("go_info", "gauge", "Information about the Go environment."),
    ("go_memstats_alloc_bytes", "gauge", "Number of bytes allocated and still in use."),
    ("go_memstats_alloc_bytes_total", "counter", "Total number of bytes allocated, even if freed."),
    ("go_memstats_buck_hash_sys_bytes", "gauge", "Number of bytes used by the profiling bucket hash table."),
    ("go_memstats_frees_total", "counter", "Total number of frees."),
    ("go_memstats_gc_sys_bytes", "gauge", "Number of bytes used for garbage collection system metadata."),
    ("go_memstats_heap_alloc_bytes", "gauge", "Number of heap bytes allocated and still in use."),
    ("go_memstats_heap_idle_bytes", "gauge", "Number of heap bytes waiting to be used."),
    ("go_memstats_heap_inuse_bytes", "gauge", "Number of heap bytes that are in use."),
    ("go_memstats_heap_objects", "gauge", "Number of allocated objects."),
    ("go_memstats_heap_released_bytes", "gauge", "Number of heap bytes released to OS."),
    ("go_memstats_heap_sys_bytes", "gauge", "Number of heap bytes obtained from system."),
    ("go_memstats_last_gc_time_seconds", "gauge", "Number of seconds since 1970 of last garbage collection."),
    ("go_memstats_lookups_total", "counter", "Total number of pointer lookups."),
    ("go_memstats_mallocs_total", "counter", "Total number of mallocs."),
    ("go_memstats_mcache_inuse_bytes", "gauge", "Number of bytes in use by mcache structures."),
    ("go_memstats_mspan_inuse_bytes", "gauge", "Number of bytes in use by mspan structures."),
    ("go_memstats_next_gc_bytes", "gauge", "Number of heap bytes when next garbage collection will take place."),
    ("go_memstats_stack_inuse_bytes", "gauge", "Number of bytes in use by the stack allocator."),
    ("go_memstats_sys_bytes", "gauge", "Number of bytes obtained from system."),
    ("go_threads", "gauge", "Number of OS threads created."),
]  # fmt: skip

_PROCESS = [
    ("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", "12.34"),
    ("process_max_fds", "gauge", "Maximum number of open file descriptors.", "1.048576e+06"),
    ("process_open_fds", "gauge", "Number of open file descriptors.", "11"),
    ("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", "3.9993344e+07"),
    ("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.", "1.71e+09"),
    ("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", "1.336803328e+09"),
    ("process_virtual_memory_max_bytes", "gauge", "Maximum amount of virtual memory available in bytes.", "1.8446744073709552e+19"),
]  # fmt: skip

_BUCKETS = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"]


def family_name(metric: str) -> str:
    """``vllm:num_requests_running{model_name="x"}`` → ``vllm:num_requests_running``."""
    return metric.split("{", 1)[0].strip()


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _go_family(name: str, kind: str, help_text: str, index: int) -> str:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    if kind == "summary":
        for q in ("0", "0.25", "0.5", "0.75", "1"):
            lines.append(f'{name}{{quantile="{q}"}} {float(q) * 0.002 + 2.1e-05:.6g}')
        lines += [f"{name}_sum 0.1875", f"{name}_count 1542"]
    elif name == "go_info":
        lines.append('go_info{version="go1.22.5"} 1')
    else:
        lines.append(f"{name} {1.5e6 + index * 7919:.8g}")
    return "\n".join(lines) + "\n"


def build_filler(page_size_bytes: int, exclude: set[str]) -> tuple[str, str]:
    """The static parts of a page: (go_* block, process_* block plus histograms up to
    about ``page_size_bytes``). Families named in ``exclude`` are left out."""
    head = "".join(
        _go_family(n, k, h, i) for i, (n, k, h) in enumerate(_GO_HEAD) if n not in exclude
    )
    tail_parts = []
    for name, kind, help_text, value in _PROCESS:
        if name not in exclude:
            tail_parts.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n{name} {value}\n")
    tail = "".join(tail_parts)
    if page_size_bytes > len(head) + len(tail):
        hist = "apiserver_request_duration_seconds"
        parts = [
            f"# HELP {hist} [STABLE] Response latency distribution in seconds for each verb, "
            "dry run value, group, version, resource, subresource, scope and component.\n"
            f"# TYPE {hist} histogram\n"
        ]
        size = len(head) + len(tail) + len(parts[0])
        n = 0
        paths = ["/healthz", "/livez", "/readyz", "/metrics", "/apis", "/openapi/v2"]
        while size < page_size_bytes:
            labels = (
                f'component="",dry_run="",group="",resource="",scope="",'
                f'subresource="{paths[n % len(paths)]}",verb="GET",version="v{n // len(paths)}"'
            )
            count = 100 + n * 13
            block = [
                f'{hist}_bucket{{{labels},le="{le}"}} {min(count, (i + 1) * count // 6)}'
                for i, le in enumerate(_BUCKETS)
            ]
            block += [
                f"{hist}_sum{{{labels}}} {count * 0.0013:.6g}",
                f"{hist}_count{{{labels}}} {count}",
            ]
            text = "\n".join(block) + "\n"
            parts.append(text)
            size += len(text)
            n += 1
        tail += "".join(parts)
    return head, tail


_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


def render_series(values: dict[str, float], kind: str = "gauge") -> str:
    """Series for the load metrics, grouped by family with HELP/TYPE lines (`kind` counter:
    a `x_bucket` family is typed as the histogram `x`, and its counts are whole numbers, as a
    histogram's observation counts are in every client library)."""
    families: dict[str, list[str]] = {}
    for metric, value in values.items():
        fam = family_name(metric)
        if not _NAME_RE.match(fam):
            continue
        if kind == "counter" and fam.endswith("_bucket") and math.isfinite(value):
            value = math.floor(value)
        families.setdefault(fam, []).append(f"{metric.strip()} {format_value(value)}")
    out = []
    for fam, lines in families.items():
        typed, fam_kind = fam, kind
        if kind == "counter" and fam.endswith("_bucket"):
            typed, fam_kind = fam[: -len("_bucket")], "histogram"
        out.append(f"# HELP {typed} Simulated load metric.\n# TYPE {typed} {fam_kind}\n")
        out.append("\n".join(lines) + "\n")
    return "".join(out)
