"""Manifests for drills, tests and the demo: the backend Deployment the testbed stands in for.

Pure builders (dicts the API accepts as they are). ``replicas`` defaults to 0: on a control
plane without a kubelet the testbed backend plays the pods, reading this Deployment.
"""

from __future__ import annotations

from typing import Any

__all__ = ["backend_deployment", "literal_env", "secret_env"]


def literal_env(**values: str) -> list[dict[str, Any]]:
    """``[{"name": k, "value": v}, ...]`` in the order given."""
    return [{"name": k, "value": v} for k, v in values.items()]


def secret_env(name: str, secret: str, key: str | None = None) -> dict[str, Any]:
    """An env var read from a Secret key (``key`` defaults to the variable's name)."""
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key or name}}}


def backend_deployment(env: list[dict[str, Any]], name: str = "fractal-lba-backend",
                       replicas: int = 0, image: str = "fractal-lba/backend:test",
                       container: str = "backend") -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": container, "image": image,
                                                       "env": env}]}}},
    }
