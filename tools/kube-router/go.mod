// Helper module: builds kube-router for one node test (tests/node/test_network_policy.py), run
// with only its network policy controller (iptables + ipset) so the node enforces the chart's
// NetworkPolicy. Not part of `make tools`: `make tools-netpol` (scripts/tools.sh netpol).
module sigops.local/tools/kube-router

go 1.25

require github.com/cloudnativelabs/kube-router/v2 v2.1.0
