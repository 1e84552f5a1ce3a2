"""sigops: rotate PCS signing keys safely and answer signature-failure spikes.

One package per domain, layered (README.md, "Layout"): :mod:`sigops.core` is the pure
verification core (no Kubernetes, kopf or network imports); :mod:`sigops.kube` is the only door
to the API; :mod:`sigops.backend`, :mod:`sigops.rotation` and :mod:`sigops.incident` build on
them; :mod:`sigops.runtime` and :mod:`sigops.cli` sit on top.
"""

__version__ = "0.1.0"
