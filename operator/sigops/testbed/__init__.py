"""The testbed: a reference FLK backend and an agent simulator, for staging drills and e2e tests.

- :mod:`.backend` — ``POST /v1/pcs/submit`` with the upstream status codes, multi-key verify,
  optional freshness, dedup, a token bucket, ``/metrics`` and a failed-sample endpoint; its
  configuration comes from env vars or, standing in for a pod, from its own Deployment.
- :mod:`.agents` — a load generator that signs upstream-shaped PCS and injects faults.
- :mod:`.rules` — the ``FLKSignatureFailuresSpike`` Prometheus rule, parameterized.
- :mod:`.cli` — ``sigops testbed backend|agents|rules``.

Nothing is imported here, so ``sigops testbed --help`` stays fast.
"""

__all__: list[str] = []
