"""The HTTP endpoints: /healthz, /readyz, /metrics, /status, and /ui with its /history."""
