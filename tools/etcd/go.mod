// Helper module: builds etcd (server) for the local control plane used by tests.
module sigops.local/tools/etcd

go 1.25

require go.etcd.io/etcd/server/v3 v3.5.35
