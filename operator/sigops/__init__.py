"""sigops: rotate PCS signing keys safely and answer signature-failure spikes.

The package is split by concern: :mod:`sigops.core` is the pure verification core (no
Kubernetes, kopf or network imports); the operator, its handlers and scenarios build on it.
"""

__version__ = "0.1.0"
