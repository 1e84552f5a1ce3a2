"""Running the operator: ``sigops run`` flags, the kopf wiring and timers, and the HTTP
endpoints (alert receiver, metrics, health)."""
