"""Kubernetes access: client construction, Secrets, Deployments, Events, the signing key."""
