"""The daemon: per-policy reconcilers and the supervisor that owns every task."""
