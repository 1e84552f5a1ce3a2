"""Manifests for drills, tests and the demo: the backend Deployment the testbed stands in for,
and the testbed as pods (backend, its Service, agents) for a cluster whose pods run.

Pure builders (dicts the API accepts as they are). :func:`backend_deployment`'s ``replicas``
defaults to 0: on a control plane without a kubelet the testbed backend plays the pods,
reading this Deployment. :func:`running_backend` is the testbed backend as the pods of a
Deployment, reading its configuration from its environment as the real backend does.
"""

from __future__ import annotations

from typing import Any

__all__ = ["backend_deployment", "literal_env", "secret_env", "running_backend",
           "backend_service", "agents", "wal_reader", "wal_token_volume", "wal_reader_policy",
           "RESTRICTED", "WAL_DIR", "WAL_PORT", "WAL_TOKEN_SECRET", "WAL_TOKEN_DIR",
           "AUDIT_POD_LABELS"]

# A container that passes the restricted Pod Security Standard with a read-only root.
RESTRICTED: dict[str, Any] = {
    "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
    "runAsUser": 65532, "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"}}


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


WAL_DIR = "/var/lib/flk/wal"
"""Where the backend pods keep their inbox WAL (``WAL_DIR``), an emptyDir volume ``wal``."""
WAL_PORT = 8079
WAL_TOKEN_SECRET = "sigops-wal-token"
"""The Secret holding the token sigops presents to the sidecar: the chart's
``<fullname>-wal-token``, created in each target's namespace (release ``sigops``)."""
WAL_TOKEN_DIR = "/etc/sigops/wal-token"


def wal_reader(image: str, wal_dir: str = WAL_DIR, volume: str = "wal",
               port: int = WAL_PORT) -> dict[str, Any]:
    """The ``sigops wal serve`` sidecar: the backend pod's WAL volume mounted read-only, its
    tail served on port ``flk-wal`` (what sigops' evidence looks for) to the holder of the
    token in volume ``wal-token`` (:func:`wal_token_volume`) only."""
    return {
        "name": "wal-reader", "image": image, "imagePullPolicy": "IfNotPresent",
        "args": ["wal", "serve", "--dir", wal_dir, "--listen", f"0.0.0.0:{port}",
                 "--token-file", f"{WAL_TOKEN_DIR}/token"],
        "ports": [{"name": "flk-wal", "containerPort": port}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "flk-wal"}},
        "resources": {"requests": {"cpu": "10m", "memory": "48Mi"},
                      "limits": {"memory": "128Mi"}},
        "volumeMounts": [{"name": volume, "mountPath": wal_dir, "readOnly": True},
                         {"name": "wal-token", "mountPath": WAL_TOKEN_DIR, "readOnly": True}],
        "securityContext": RESTRICTED,
    }


def wal_token_volume(secret: str = WAL_TOKEN_SECRET) -> dict[str, Any]:
    """The sidecar's token: key ``token`` of the chart's WAL token Secret."""
    return {"name": "wal-token", "secret": {"secretName": secret, "defaultMode": 0o440,
                                            "items": [{"key": "token", "path": "token"}]}}


AUDIT_POD_LABELS = {"app.kubernetes.io/managed-by": "sigops",
                    "app.kubernetes.io/component": "audit"}
"""Labels of every SignatureAudit Job's pods (``sigops.audit.job``)."""


def wal_reader_policy(backend_labels: dict[str, str], operator_namespace: str = "sigops-system",
                      release: str = "sigops", backend_port: int = 8080,
                      port: int = WAL_PORT) -> dict[str, Any]:
    """The NetworkPolicy of the backend's pods: the WAL reader port admits only sigops' pods
    (the chart's labels, in its namespace) and the pods of sigops' audit Jobs (their labels,
    in the backend's own namespace, where the Jobs run); the backend's own port stays open to
    all (a policy that selects a pod shuts every port it does not name)."""
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "fractal-lba-backend-wal-reader"},
        "spec": {
            "podSelector": {"matchLabels": backend_labels},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [{"namespaceSelector": {"matchLabels": {
                               "kubernetes.io/metadata.name": operator_namespace}},
                           "podSelector": {"matchLabels": {
                               "app.kubernetes.io/name": "sigops",
                               "app.kubernetes.io/instance": release}}},
                          # a podSelector alone: pods of this policy's namespace only
                          {"podSelector": {"matchLabels": AUDIT_POD_LABELS}}],
                 "ports": [{"protocol": "TCP", "port": port}]},
                {"ports": [{"protocol": "TCP", "port": backend_port}]},
            ],
        },
    }


def running_backend(env: list[dict[str, Any]], image: str, name: str = "fractal-lba-backend",
                    replicas: int = 2, args: tuple[str, ...] = (),
                    port: int = 8080, upstream: bool = False,
                    sidecar: bool = True, wal_claim: str | None = None) -> dict[str, Any]:
    """``sigops testbed backend`` as ``replicas`` pods of ``image``: port ``http``, ready when
    its config loaded (``/healthz``), rolling one extra pod at a time and never below
    ``replicas`` available, draining on SIGTERM.

    ``upstream``: leave only what the real FLK backend leaves -- no samples endpoint, an inbox
    WAL in ``WAL_DIR`` (an emptyDir) read by the :func:`wal_reader` sidecar (unless not
    ``sidecar``: then only ``pods/exec`` reaches it), the rejection lines in the pod log.
    ``wal_claim``: the WAL on that PersistentVolumeClaim instead of an emptyDir, each pod in
    a directory of its own name (``WAL_DIR/<pod>``): the WALs outlive the pods, as a fleet's
    archive does (what a SignatureAudit reads through the target's ``walClaim``)."""
    labels = {"app": name}
    wal_dir = f"{WAL_DIR}/$(POD_NAME)" if wal_claim else WAL_DIR
    pod_name = {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    if upstream:
        args = (*args, "--no-samples-endpoint")
        env = [*env, *([pod_name] if wal_claim else []), {"name": "WAL_DIR", "value": wal_dir}]
    container = {
        "name": "backend", "image": image, "imagePullPolicy": "IfNotPresent",
        "args": ["testbed", "backend", "--listen", f"0.0.0.0:{port}", *args], "env": env,
        "ports": [{"name": "http", "containerPort": port}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                           "periodSeconds": 1, "failureThreshold": 1},
        "securityContext": RESTRICTED,
    }
    pod: dict[str, Any] = {"containers": [container], "terminationGracePeriodSeconds": 15}
    if upstream:
        container["volumeMounts"] = [{"name": "wal", "mountPath": WAL_DIR}]
        pod["volumes"] = [{"name": "wal", "persistentVolumeClaim": {"claimName": wal_claim}}
                          if wal_claim else {"name": "wal", "emptyDir": {"sizeLimit": "256Mi"}}]
        if sidecar:
            reader = wal_reader(image)
            if wal_claim:
                reader["env"] = [pod_name]
                reader["args"][reader["args"].index("--dir") + 1] = wal_dir
            pod["containers"].append(reader)
            pod["volumes"].append(wal_token_volume())
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "strategy": {"rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                 "template": {"metadata": {"labels": labels}, "spec": pod}},
    }


def backend_service(name: str = "fractal-lba-backend", port: int = 8080) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": name},
                     "ports": [{"name": "http", "port": port, "targetPort": "http"}]}}


def agents(name: str, image: str, url: str, key_args: list[str],
           env: list[dict[str, Any]] | None = None, rate: float = 10, count: int = 3,
           read_secret: str | None = None) -> list[dict[str, Any]]:
    """``sigops testbed agents`` as a one-pod Deployment posting to ``url``. With
    ``read_secret`` the pod may read that Secret (``--secret NS/NAME/KEY`` follows a
    rotation), through a ServiceAccount and Role of its own."""
    labels = {"app": name}
    spec: dict[str, Any] = {
        "containers": [{
            "name": "agents", "image": image, "imagePullPolicy": "IfNotPresent",
            "args": ["testbed", "agents", "--url", url, "--rate", str(rate),
                     "--agents", str(count), "--agent-prefix", name, *key_args],
            "env": env or [], "securityContext": RESTRICTED}],
        "automountServiceAccountToken": read_secret is not None,
    }
    out: list[dict[str, Any]] = []
    if read_secret is not None:
        spec["serviceAccountName"] = name
        out += [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
             "metadata": {"name": name},
             "rules": [{"apiGroups": [""], "resources": ["secrets"],
                        "resourceNames": [read_secret], "verbs": ["get"]}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": {"name": name},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
             "subjects": [{"kind": "ServiceAccount", "name": name}]},
        ]
    out.append({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "labels": labels},
                "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                         "template": {"metadata": {"labels": labels}, "spec": spec}}})
    return out
