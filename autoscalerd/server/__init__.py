"""The HTTP endpoints: /healthz, /readyz, /metrics, /status."""
