#!/usr/bin/env bash
# Fails when code generation (controller-gen), gofmt or 'go mod tidy' would change the tree.
# It compares the tree before and after regenerating, so it works in a clean clone (CI) and in
# a working tree with edits alike.
set -euo pipefail
cd "$(dirname "$0")/.."

snapshot() {
  { git ls-files -co --exclude-standard -- api config go.mod go.sum '*.go' | sort | xargs -r sha256sum; } 2>/dev/null
}

before=$(snapshot)
make -s generate manifests >/dev/null
go mod tidy
unformatted=$(git ls-files -co --exclude-standard '*.go' | xargs -r gofmt -s -l)
after=$(snapshot)

status=0
if [ "$before" != "$after" ]; then
  echo "verify: code generation or 'go mod tidy' changed these files; run 'make generate manifests' and 'go mod tidy', then commit:" >&2
  diff <(echo "$before") <(echo "$after") | sed -n 's/^> [0-9a-f]*  /  /p' >&2
  status=1
fi
if [ -n "$unformatted" ]; then
  echo "verify: gofmt -s would change: $unformatted (run 'make fmt')" >&2
  status=1
fi
[ $status -eq 0 ] && echo "verify: generated files, go.mod and formatting are up to date"
exit $status
