// Package helm tests the Helm chart in config/helm/sluice against the kustomize bases it must
// not drift from: `helm template` and `kubectl kustomize` are rendered with the real binaries
// (make test-deps builds both), decoded and compared object by object. The chart is also
// linted strictly, its values schema is checked to reject every misspelt key and to cover the
// operator configuration, and what it renders is applied in a server-side dry run to a real
// kube-apiserver.
package helm
