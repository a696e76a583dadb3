// Package smoke proves that each real component of the test bed works: the kube-apiserver
// started by envtest, the PostgreSQL cluster and the Elasticsearch node. Every other test
// stands on these; when one of them breaks, these tests say which.
package smoke
