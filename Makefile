# Sluice: a Kubernetes operator for fault-tolerant ETL pipelines.
#
# The two commands a newcomer needs: `make demo` and `make test`. Everything they need is
# installed and started by the scripts under hack/, and cached outside the clone in $(CACHE).

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec
.DEFAULT_GOAL := help

CACHE ?= $(or $(SLUICE_CACHE),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/sluice)
RUN ?= $(CACHE)/run
export SLUICE_CACHE := $(CACHE)
export SLUICE_RUN := $(RUN)
export GOTOOLCHAIN := local

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
IMG ?= ghcr.io/sluice-dev/sluice:$(VERSION)

CONTROLLER_GEN_VERSION := v0.23.0
GOLANGCI_LINT_VERSION := v2.15.0
HELM_VERSION := v3.22.0
CONTROLLER_GEN := $(CACHE)/tools/controller-gen-$(CONTROLLER_GEN_VERSION)/controller-gen
GOLANGCI_LINT := $(CACHE)/tools/golangci-lint-$(GOLANGCI_LINT_VERSION)/golangci-lint
# helm is built by hack/helm.sh (make test-deps) into $(CACHE)/tools/helm-$(HELM_VERSION)/.
export HELM_VERSION

TEST_ENV = $(RUN)/test.env
GO_TEST_FLAGS ?= -count=1 -timeout 20m

##@ General

.PHONY: help
help: ## Show the targets.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} /^[a-zA-Z_-]+:.*?##/ { printf "  %-12s %s\n", $$1, $$2 } /^##@/ { printf "\n%s\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate the CRD and the manager's ClusterRole from the markers (and the Helm chart's copies).
	$(CONTROLLER_GEN) crd:allowDangerousTypes=true rbac:roleName=sluice-manager paths=./... \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	hack/helm.sh sync

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate the deepcopy methods.
	$(CONTROLLER_GEN) object paths=./api/...

.PHONY: fmt
fmt: ## Run gofmt on the code.
	gofmt -s -w $$(git ls-files -co --exclude-standard '*.go')

.PHONY: vet
vet: ## Run go vet.
	go vet ./...

.PHONY: lint
lint: $(GOLANGCI_LINT) ## Run golangci-lint with the linters listed in .golangci.yml.
	$(GOLANGCI_LINT) run ./...

.PHONY: verify
verify: ## Fail when code generation, gofmt or 'go mod tidy' would change the tree.
	hack/verify.sh

##@ Build

.PHONY: build
build: ## Build the sluice binary into bin/, with bin/kubectl-sluice (the kubectl plugin) beside it.
	go build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o bin/sluice .
	ln -sf sluice bin/kubectl-sluice
	ln -sf sluice bin/kubectl_complete-sluice

.PHONY: docker-build
docker-build: ## Build the image (needs a container engine).
	docker build -t $(IMG) .

##@ Test

.PHONY: test-deps
test-deps: ## Bring up the real components the tests use (kube-apiserver, PostgreSQL, Elasticsearch).
	hack/test-env.sh up >/dev/null

.PHONY: clean-deps
clean-deps: ## Stop the components that test-deps and demo started.
	hack/test-env.sh down

.PHONY: test
test: test-deps verify vet lint ## Bring up the components, then verify, vet, lint and run every test.
	source $(TEST_ENV) && go test $(GO_TEST_FLAGS) ./...

.PHONY: bench
bench: test-deps build ## Run the benchmarks; each figure is one 'bench:' line.
	source $(TEST_ENV) && go test -count=1 -timeout 60m -run '^$$' -bench . -benchtime 1x ./test/bench/... | tee $(RUN)/bench.log | grep -E '^(bench:|ok|FAIL|---)'

.PHONY: demo
demo: build test-deps ## Run the local demo.
	hack/demo.sh

##@ Tools (cached outside the clone)

$(CONTROLLER_GEN):
	GOBIN=$(dir $@) go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_GEN_VERSION)

$(GOLANGCI_LINT):
	GOBIN=$(dir $@) go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
