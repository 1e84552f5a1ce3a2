"""SignatureIncident: alert intake (Alertmanager webhook and Prometheus poll), evidence,
the decision table, the reconciler, and the runbook's scenarios A-E (``scenarios``)."""
