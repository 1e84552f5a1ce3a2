"""SignatureAudit: a fleet's inbox WALs re-verified by a Kubernetes Indexed Job (issue 27).

``partial`` signs and checks the partial result of one index; ``job`` builds the Job and its
least-privilege RBAC (pure manifests). The audit of one shard itself is
:mod:`sigops.core.audit`."""
