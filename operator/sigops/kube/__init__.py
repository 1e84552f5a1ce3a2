"""The only door to the Kubernetes API: client construction, typed errors (NotFound, Conflict),
a request timeout on every call, Secrets, Deployments, Pods, custom resources, Events, and the
status-condition convention."""
