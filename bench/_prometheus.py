"""The Prometheus configuration both scrape benchmarks give the peer: HTTPS targets, TLS
verification off (the targets' certificates are self-signed), the given interval, and a
timeout of 80 % of it (as the daemon's default)."""

from __future__ import annotations

from pathlib import Path


def prometheus_config(path: Path, targets: list[str], interval: float) -> None:
    """Write a prometheus.yml scraping `targets` (`host:port`) every `interval` seconds."""
    listed = ", ".join(f'"{t}"' for t in targets)
    path.write_text(
        f"""global:
  scrape_interval: {round(interval * 1000)}ms
  scrape_timeout: {round(800 * interval)}ms
scrape_configs:
  - job_name: pods
    scheme: https
    tls_config: {{insecure_skip_verify: true}}
    static_configs:
      - targets: [{listed}]
"""
    )
