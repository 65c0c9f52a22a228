"""autoscalerd: autoscale Kubernetes workloads from metrics scraped directly from their pods."""

__version__ = "0.1.0"
