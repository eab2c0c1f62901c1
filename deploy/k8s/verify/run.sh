#!/usr/bin/env bash
# Verifies deploy/k8s against a real Kubernetes API server:
#   1. builds kube-apiserver and etcd from the Go module proxy (./tools), once:
#      they are kept in $PANDABRIDGE_K8S_BIN (default ~/.cache/pandabridge-k8s/bin)
#      and rebuilt only when tools/ or the Go version changes;
#   2. runs this module's test, which starts them on 127.0.0.1, installs the KEDA
#      and prometheus-operator CRDs and server-side dry-runs every variant.
# Installs nothing but what `go` fetches. Safe to run again and again.
set -euo pipefail
trap 'echo "verify: FAILED at line $LINENO" >&2' ERR
here=$(cd "$(dirname "$0")" && pwd)
bin=${PANDABRIDGE_K8S_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/pandabridge-k8s/bin}
mkdir -p "$bin"

now() { date +%s; }
t0=$(now)

# Kubernetes' version, from tools/go.mod; stamped into the binary so that
# clients can parse /version.
k8s_version=$(awk '$1 == "k8s.io/kubernetes" { print $2 }' "$here/tools/go.mod")
minor=${k8s_version#v1.}; minor=${minor%%.*}

# What the binaries are built from: rebuild when any of it changes.
stamp=$( (cat "$here/tools/go.mod" "$here/tools/go.sum" "$here/tools/etcd/main.go"; go version) | sha256sum | cut -d' ' -f1)
if [[ -x $bin/kube-apiserver && -x $bin/etcd && -f $bin/stamp && $(cat "$bin/stamp") == "$stamp" ]]; then
  echo "== kube-apiserver $k8s_version and etcd: cached in $bin"
else
  echo "== building kube-apiserver $k8s_version and etcd into $bin (about 10 min and 2.5 GB of RAM on 2 cores when cold)"
  rm -f "$bin/stamp"
  (
    cd "$here/tools"
    go build -trimpath -o "$bin/.new/" \
      -ldflags "-X k8s.io/component-base/version.gitVersion=$k8s_version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor" \
      k8s.io/kubernetes/cmd/kube-apiserver ./etcd
  )
  mv -f "$bin/.new/kube-apiserver" "$bin/.new/etcd" "$bin/"
  rmdir "$bin/.new"
  echo "$stamp" > "$bin/stamp"
  echo "   built in $(( $(now) - t0 ))s"
fi
"$bin/kube-apiserver" --version
"$bin/etcd" --version | sed -n 1p

t1=$(now)
echo "== server-side dry run of every variant (go test in deploy/k8s/verify)"
cd "$here"
PANDABRIDGE_K8S_BIN=$bin go test -count=1 -v -timeout 10m ./... 2>&1 |
  grep -v '^=== \(RUN\|PAUSE\|CONT\)'  # pipefail: go test's status decides
echo "   test took $(( $(now) - t1 ))s; run.sh took $(( $(now) - t0 ))s in all"
