// Package e2e drives the local cluster of hack/cluster.sh with the real kubectl, as a user
// would: the real etcd, kube-apiserver and kube-controller-manager (the real Job controller),
// and the node agent of hack/nodeagent that runs pods of the Sluice image as local processes
// of a freshly built sluice binary.
//
// The suite brings up a cluster of its own (a private state directory and free ports, so a
// `make demo` cluster left running is never touched) and stops it at the end. It is skipped
// locally, and fails in CI, when the Kubernetes binaries are missing (KUBEBUILDER_ASSETS, set
// by `make test-deps`). The state directory (component logs, pod directories and logs) is kept
// when something failed, or always with SLUICE_E2E_KEEP=true; SLUICE_E2E_CLUSTER_PORT fixes
// the API server's port (default: a free one; the three ports after it are used too).
package e2e
