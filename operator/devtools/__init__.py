"""Development harness, not part of the operator nor of the installed package: the local
control plane, the Prometheus/Alertmanager launcher, the loopback stub server and the demo.
Used by the tests, ``make cluster``, ``make demo`` and the benchmarks (importable from a
checkout, where the editable install puts ``operator/`` on the path)."""
