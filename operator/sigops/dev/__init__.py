"""Development harness, not part of the operator: the local control plane (and node), the
Prometheus/Alertmanager launcher, the loopback stub server and the demo. Used by the tests,
``make cluster``, ``make demo`` and the benchmarks."""
