#!/usr/bin/env bash
# Installs the outside components of tokenvisor's real-components suite (real/README.md):
#   - nginx, from Debian's packages (only the binary is used: the tests start their own
#     nginx with its own prefix, config and pid file on 127.0.0.1; the package's system
#     service is never started);
#   - oidc-provider and its dependencies, from the npm registry, exactly as pinned by
#     real/oidc/package-lock.json (`npm ci`);
#   - chromium and chromedriver, from Debian's packages (`chromium`, `chromium-driver`), for
#     the admin dashboard's browser test (headless; started by the test on 127.0.0.1);
#   - tinyproxy, from Debian's packages, the forward proxy of the proxy test (the tests start
#     their own on 127.0.0.1 with their own config; the package's service is never started).
# Idempotent: what is already there is left alone. Prints what it did.
# Needs root (or sudo) for apt-get, node >= 20.19 and npm.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

say() { printf 'real/install.sh: %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# --- nginx ---------------------------------------------------------------------------------
if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
    say "nginx already installed: $( (nginx -v || /usr/sbin/nginx -v) 2>&1 | head -1)"
else
    say "installing nginx (apt-get update; apt-get install nginx)"
    as_root apt-get update -qq
    # Keep the package's own service from starting (it would listen on port 80 of every
    # address): a policy-rc.d that denies service starts, for the install only.
    policy=/usr/sbin/policy-rc.d
    created_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
        as_root chmod 0755 "$policy"
        created_policy=1
    fi
    status=0
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        nginx >/dev/null || status=$?
    if [ "$created_policy" -eq 1 ]; then as_root rm -f "$policy"; fi
    if [ "$status" -ne 0 ]; then
        say "apt-get install nginx failed ($status)"
        exit "$status"
    fi
    say "installed: $(/usr/sbin/nginx -v 2>&1 | head -1) ($(dpkg-query -W -f='${Package} ${Version}' nginx 2>/dev/null || true))"
fi
# A system nginx must not be left running by the package (the suite never uses it).
if [ -f /run/nginx.pid ] && kill -0 "$(cat /run/nginx.pid)" 2>/dev/null; then
    say "note: a system nginx is running (pid $(cat /run/nginx.pid)); the suite does not use it"
fi

# --- chromium + chromedriver (the dashboard's browser test) ----------------------------------
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    say "chromium already installed: $(chromedriver --version 2>/dev/null | head -1)"
else
    say "installing chromium and chromium-driver (apt-get update; apt-get install)"
    as_root apt-get update -qq
    status=0
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        chromium chromium-driver >/dev/null || status=$?
    if [ "$status" -ne 0 ]; then
        say "apt-get install chromium chromium-driver failed ($status)"
        exit "$status"
    fi
    say "installed: $(dpkg-query -W -f='${Package} ${Version}' chromium 2>/dev/null || true), $(chromedriver --version 2>/dev/null | head -1)"
fi

# --- tinyproxy (the proxy test's forward proxy) -----------------------------------------------
if command -v tinyproxy >/dev/null 2>&1; then
    say "tinyproxy already installed: $(tinyproxy -v 2>&1 | head -1)"
else
    say "installing tinyproxy (apt-get update; apt-get install tinyproxy)"
    as_root apt-get update -qq
    status=0
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        tinyproxy >/dev/null || status=$?
    if [ "$status" -ne 0 ]; then
        say "apt-get install tinyproxy failed ($status)"
        exit "$status"
    fi
    say "installed: $(tinyproxy -v 2>&1 | head -1)"
fi

# --- etcd and protoc (cluster mode: the runtime's `cluster` feature builds the etcd client
# with protoc; the cluster tests start a 3-member etcd 3.4 of their own) ------------------
# (libprotobuf-dev: the well-known google/protobuf/*.proto the etcd protos import.)
if command -v etcd >/dev/null 2>&1 && command -v protoc >/dev/null 2>&1 &&
    [ -f /usr/include/google/protobuf/descriptor.proto ]; then
    say "etcd and protoc already installed: $(etcd --version 2>&1 | head -1); $(protoc --version)"
else
    say "installing etcd-server, protobuf-compiler and libprotobuf-dev (apt-get update; apt-get install)"
    as_root apt-get update -qq
    status=0
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        etcd-server protobuf-compiler libprotobuf-dev >/dev/null || status=$?
    if [ "$status" -ne 0 ]; then
        say "apt-get install etcd-server protobuf-compiler libprotobuf-dev failed ($status)"
        exit "$status"
    fi
    say "installed: $(etcd --version 2>&1 | head -1); $(protoc --version)"
fi

# --- oidc-provider -------------------------------------------------------------------------
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    say "node and npm are needed (node >= 20.19): install Node.js first"
    exit 1
fi
say "node $(node --version), npm $(npm --version)"
want="$(node -p "require('$here/oidc/package-lock.json').packages['node_modules/oidc-provider'].version")"
have="$(node -p "try { require('$here/oidc/node_modules/oidc-provider/package.json').version } catch { '' }" 2>/dev/null || true)"
if [ -n "$have" ] && [ "$have" = "$want" ] \
    && [ "$here/oidc/node_modules/.package-lock.json" -nt "$here/oidc/package-lock.json" ]; then
    say "oidc-provider $have already installed in real/oidc/node_modules"
else
    say "installing oidc-provider $want (npm ci in real/oidc)"
    (cd "$here/oidc" && npm ci --no-audit --no-fund --loglevel=error)
    say "installed: oidc-provider $(node -p "require('$here/oidc/node_modules/oidc-provider/package.json').version")"
fi
say "done"
