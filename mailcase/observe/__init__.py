"""Observability of `mailcase serve` (issue 15): readiness of each part, the HTTP endpoint (/healthz,
/readyz, /metrics) and alerts; it watches the daemon and never changes what the daemon does."""
