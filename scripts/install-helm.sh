#!/usr/bin/env bash
# Install the `helm` binary the chart tests use (tests/helm/) into <repo>/.tools/bin/helm.
# Idempotent: a helm of the wanted version already there is kept; a second run only checks.
#
# Built from source with the Go toolchain (`go install helm.sh/helm/v3/cmd/helm@VERSION`,
# modules from the Go module proxy): no prebuilt binary is downloaded. The link flags set
# what official release builds set (helm's Makefile): the version `helm version` prints and
# the default Kubernetes version of `helm template`/`helm lint` without a cluster (the
# Kubernetes modules helm is built with), so a chart's kubeVersion constraint is checked
# against a recent version rather than helm's fallback of 1.20.
#
# Needs Go (`go` on PATH or /usr/local/go/bin/go; helm 3.22 needs Go >= 1.24). The first
# build takes about two minutes on two cores; Go's module and build caches make a rebuild
# after a version bump much faster.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HELM_VERSION="v3.22.0"
KUBE_MAJOR="1"
KUBE_MINOR="37"  # k8s.io/client-go v0.37 is what helm v3.22.0 is built with
BIN_DIR="$ROOT/.tools/bin"
HELM="$BIN_DIR/helm"

log() { printf 'install-helm: %s\n' "$*"; }

installed_version() {
  [ -x "$HELM" ] && "$HELM" version --template '{{.Version}}' 2>/dev/null || true
}

if [ "$(installed_version)" = "$HELM_VERSION" ]; then
  log "ok: $HELM $HELM_VERSION"
  exit 0
fi

# Serialize concurrent runs on one tree (two test runs installing at once).
mkdir -p "$BIN_DIR"
exec 9>"$BIN_DIR/.install-helm.lock"
flock 9
if [ "$(installed_version)" = "$HELM_VERSION" ]; then
  log "ok: $HELM $HELM_VERSION"
  exit 0
fi

GO="$(command -v go || true)"
if [ -z "$GO" ] && [ -x /usr/local/go/bin/go ]; then GO=/usr/local/go/bin/go; fi
if [ -z "$GO" ]; then
  echo "install-helm: Go is needed to build helm $HELM_VERSION (go on PATH or /usr/local/go)" >&2
  exit 1
fi

# Go keeps its module and build caches under $HOME; without one, keep them in .tools.
if [ -z "${HOME:-}" ]; then
  export GOPATH="$ROOT/.tools/go" GOCACHE="$ROOT/.tools/go-build" GOFLAGS="-modcacherw"
fi

log "go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION -> $BIN_DIR ($("$GO" version))"
LDFLAGS="-s -w"
LDFLAGS+=" -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
LDFLAGS+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in pkg/chartutil pkg/lint/rules; do
  LDFLAGS+=" -X helm.sh/helm/v3/$pkg.k8sVersionMajor=$KUBE_MAJOR"
  LDFLAGS+=" -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$KUBE_MINOR"
done
# Built beside the target and moved into place whole: a reader never sees half a binary.
TMP_BIN="$(mktemp -d "$BIN_DIR/.build.XXXXXX")"
trap 'rm -rf "$TMP_BIN"' EXIT
CGO_ENABLED=0 GOBIN="$TMP_BIN" "$GO" install -trimpath -ldflags "$LDFLAGS" \
  "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
mv -f "$TMP_BIN/helm" "$HELM"

got="$(installed_version)"
if [ "$got" != "$HELM_VERSION" ]; then
  echo "install-helm: built $HELM but it reports version '$got', not $HELM_VERSION" >&2
  exit 1
fi
log "ok: $HELM $HELM_VERSION"
