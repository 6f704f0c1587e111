#!/usr/bin/env bash
# Generates the Go package rlringsv1 from protos/ with the standard plugins (protoc-gen-go and
# protoc-gen-go-grpc, installed by `make tools`) through grpcio-tools' protoc.
#   clients/go/generate.sh [OUT]   OUT: the module root to write into (default clients/go)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="${1:-$root/clients/go}"
bin="${RLRINGS_TOOLS:-$HOME/.cache/rlrings}/bin"
module=github.com/rlrings/rlrings/clients/go
mappings=()
for proto in "$root"/protos/rlrings/v1/*.proto; do
  name="${proto#"$root"/protos/}"
  mappings+=("--go_opt=M$name=$module/rlringsv1" "--go-grpc_opt=M$name=$module/rlringsv1")
done
mkdir -p "$out"
"$root/.venv/bin/python" -m grpc_tools.protoc -I"$root/protos" \
  --plugin=protoc-gen-go="$bin/protoc-gen-go" --plugin=protoc-gen-go-grpc="$bin/protoc-gen-go-grpc" \
  --go_out="$out" --go_opt=module=$module --go-grpc_out="$out" --go-grpc_opt=module=$module \
  "${mappings[@]}" "$root"/protos/rlrings/v1/*.proto
