// Helper module: builds helm for chart lint/template tests.
module sigops.local/tools/helm

go 1.25

require helm.sh/helm/v3 v3.19.5
