"""A small Kubernetes-API-compatible sandbox cluster with simulated pods, on loopback only."""
