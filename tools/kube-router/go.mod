// Helper module: builds kube-router for one node test (tests/node/test_pod_health_and_policy.py), run
// with only its network policy controller (iptables + ipset) so the node enforces the chart's
// NetworkPolicy. Built by `make tools-netpol` (scripts/tools.sh netpol), never by `make tools`,
// which only links one built before.
module sigops.local/tools/kube-router

go 1.25

require github.com/cloudnativelabs/kube-router/v2 v2.1.0
