// Helper module: builds kube-apiserver, kube-controller-manager and kubectl for tests.
// scripts/tools.sh copies this file into the tool cache and appends the `replace` block it
// generates from k8s.io/kubernetes' own go.mod (one line per staging module).
module sigops.local/tools/k8s

go 1.25

require k8s.io/kubernetes v1.35.4
