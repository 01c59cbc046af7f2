#!/usr/bin/env bash
# Validates every file under deploy/ with the tool made for it, where that
# tool is here or can be fetched from a package registry:
#
#   YAML syntax (every *.yml / *.yaml)   python3 + PyYAML
#   YAML style                           yamllint            (PyPI)
#   compose.yaml                         check-jsonschema, compose-spec schema (PyPI)
#   kubernetes/*.yaml                    kubernetes-validate --strict (PyPI)
#   prometheus.yml, alerts.yml           promtool check config / rules / test rules
#   the dashboard's PromQL               promtool check rules (generated file)
#   systemd/luot.service                 systemd-analyze verify
#   nginx/luot.conf                      nginx -t (a copy with local upstreams)
#
# A validator that is missing and cannot be fetched is skipped, saying so —
# except under CI=true, where a missing validator fails the script (CI must
# check everything; tests/run.sh installs the validators); a validator that
# ran and reported an error fails the script. Tools fetched
# here live under target/deploy-tools (Debian packages are unpacked there
# with `apt-get download`, never installed, so no daemon starts).
#
# Run by tests/run.sh after the cargo tests; alone: bash tests/validate-deploy.sh
set -uo pipefail
cd "$(dirname "$0")/.."

TOOLS="$PWD/target/deploy-tools"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$TOOLS"

ran=0
skipped=()
failed=()

step() { echo "-- $*"; }
skip() {
    if [ "${CI:-}" = true ]; then
        echo "   FAILED (missing under CI=true): $*" >&2
        failed+=("missing: $*")
        return
    fi
    echo "   skipped: $*"
    skipped+=("$*")
}
# Runs a validator: "name" command...; records a failure when it fails.
check() {
    local name="$1"
    shift
    ran=$((ran + 1))
    if "$@"; then
        echo "   ok: $name"
    else
        echo "   FAILED: $name" >&2
        failed+=("$name")
    fi
}

# A binary from a Debian package: on PATH, or unpacked from the package
# (apt-get download + dpkg-deb -x) into target/deploy-tools/root.
deb_tool() {
    local pkg="$1" bin="$2"
    if command -v "$(basename "$bin")" >/dev/null 2>&1; then
        command -v "$(basename "$bin")"
        return 0
    fi
    if [ -x "$TOOLS/root$bin" ]; then
        echo "$TOOLS/root$bin"
        return 0
    fi
    command -v apt-get >/dev/null 2>&1 || return 1
    command -v dpkg-deb >/dev/null 2>&1 || return 1
    (
        mkdir -p "$TOOLS/debs" && cd "$TOOLS/debs" &&
            { apt-get download -qq "$pkg" >/dev/null 2>&1 ||
                { [ "$(id -u)" = 0 ] && apt-get update -qq >/dev/null 2>&1 &&
                    apt-get download -qq "$pkg" >/dev/null 2>&1; }; } &&
            dpkg-deb -x "$(ls -t "$pkg"_*.deb | head -n1)" "$TOOLS/root"
    ) || return 1
    [ -x "$TOOLS/root$bin" ] && echo "$TOOLS/root$bin"
}

# A Python virtual environment with the PyPI validators, made once.
VENV="$TOOLS/venv"
PY_TOOLS=(check-jsonschema kubernetes-validate yamllint)
py_tools() {
    if [ -x "$VENV/bin/check-jsonschema" ] && [ -x "$VENV/bin/kubernetes-validate" ] &&
        [ -x "$VENV/bin/yamllint" ]; then
        return 0
    fi
    command -v python3 >/dev/null 2>&1 || return 1
    if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
        # Debian's python3 makes venvs only with python3-venv (no daemon).
        rm -rf "$VENV"
        [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 || return 1
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null 2>&1 || return 1
        python3 -m venv "$VENV" >/dev/null 2>&1 || return 1
    fi
    "$VENV/bin/pip" install -q --disable-pip-version-check "${PY_TOOLS[@]}" >/dev/null 2>&1
}

mapfile -t YAML_FILES < <(find deploy -type f \( -name '*.yml' -o -name '*.yaml' \) | sort)
# deploy/openapi.yaml is the API description, kept by the HTTP code's owners
# (and tested by their own suite): parsed here, not style-linted.
mapfile -t OWN_YAML < <(printf '%s\n' "${YAML_FILES[@]}" | grep -v '^deploy/openapi.yaml$')

echo "== deploy/ validators"

step "YAML syntax (PyYAML)"
PY=""
if command -v python3 >/dev/null 2>&1 && python3 -c 'import yaml' 2>/dev/null; then
    PY=python3
elif py_tools && "$VENV/bin/python" -c 'import yaml' 2>/dev/null; then
    PY="$VENV/bin/python"
fi
if [ -n "$PY" ]; then
    check "YAML parses (${#YAML_FILES[@]} files)" "$PY" - "${YAML_FILES[@]}" <<'EOF'
import sys, yaml
bad = 0
for path in sys.argv[1:]:
    try:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
        if not docs:
            raise ValueError("no document")
    except Exception as e:
        print(f"   {path}: {e}", file=sys.stderr)
        bad += 1
sys.exit(1 if bad else 0)
EOF
else
    skip "YAML syntax: no python3 with PyYAML (apt-get install python3-yaml)"
fi

step "PyPI validators (check-jsonschema, kubernetes-validate, yamllint)"
if py_tools; then
    check "yamllint" "$VENV/bin/yamllint" --strict -c tests/yamllint.yml "${OWN_YAML[@]}"
    check "compose.yaml against the compose-spec schema" \
        "$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose.yaml
    check "Kubernetes manifests (strict)" \
        "$VENV/bin/kubernetes-validate" --strict --quiet deploy/kubernetes/*.yaml
else
    skip "yamllint, compose-spec and Kubernetes schemas: cannot make a venv with ${PY_TOOLS[*]} (python3 -m venv, pip)"
fi

step "Prometheus (promtool)"
if PROMTOOL="$(deb_tool prometheus /usr/bin/promtool)"; then
    check "promtool check config" "$PROMTOOL" check config deploy/prometheus/prometheus.yml
    check "promtool check rules" "$PROMTOOL" check rules deploy/prometheus/alerts.yml
    check "promtool test rules" "$PROMTOOL" test rules deploy/prometheus/alerts_test.yml
    # The dashboard's queries as recording rules, so promtool parses them.
    if [ -n "$PY" ]; then
        if "$PY" - deploy/grafana/luot.json "$WORK/dashboard_rules.yml" <<'EOF'; then
import json, sys, yaml
dash = json.load(open(sys.argv[1]))
exprs = []
def walk(panels):
    for p in panels:
        walk(p.get("panels", []))
        for t in p.get("targets", []):
            if t.get("expr"):
                exprs.append(t["expr"])
walk(dash["panels"])
for v in dash.get("templating", {}).get("list", []):
    q = v.get("query")
    if isinstance(q, dict):
        q = q.get("query", "")
    if isinstance(q, str) and q.startswith("label_values("):
        # label_values(METRIC, label): check the metric selector.
        exprs.append(q[len("label_values("):].rsplit(",", 1)[0])
def concrete(e):
    for k, v in {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h",
                 "$instance": ".*", "$site": ".*"}.items():
        e = e.replace(k, v)
    return e
rules = [{"record": f"dashboard:query{i}", "expr": concrete(e)} for i, e in enumerate(exprs)]
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(sys.argv[2], "w"))
print(f"   {len(rules)} dashboard queries")
EOF
            check "promtool check rules (dashboard queries)" "$PROMTOOL" check rules "$WORK/dashboard_rules.yml"
        else
            failed+=("extracting the dashboard's queries")
        fi
    fi
else
    skip "promtool: not installed and the Debian package prometheus cannot be fetched"
fi

step "systemd unit (systemd-analyze verify)"
if command -v systemd-analyze >/dev/null 2>&1; then
    # verify wants ExecStart's binary to exist: point it at the built one
    # (built here if it is not), never at a stand-in.
    LUOT_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/luot"
    [ -x "$LUOT_BIN" ] || cargo build --quiet --bin luot || true
    mkdir -p "$WORK/systemd"
    sed "s|/usr/local/bin/luot|$LUOT_BIN|g" deploy/systemd/luot.service >"$WORK/systemd/luot.service"
    verify_unit() {
        if [ ! -x "$LUOT_BIN" ]; then
            echo "   no luot binary at $LUOT_BIN (cargo build failed)" >&2
            return 1
        fi
        local out
        out="$(systemd-analyze verify "$WORK/systemd/luot.service" 2>&1)"
        local rc=$?
        # Unknown or invalid settings are only warnings to systemd: any line
        # about our unit fails the check.
        if [ $rc -ne 0 ] || grep -q 'luot.service' <<<"$out"; then
            echo "$out" >&2
            return 1
        fi
        [ -n "$out" ] && echo "$out" | sed 's/^/   (note) /'
        return 0
    }
    check "systemd-analyze verify luot.service" verify_unit
else
    skip "systemd-analyze: systemd is not installed (apt-get install systemd)"
fi

step "nginx (nginx -t)"
if NGINX="$(command -v nginx 2>/dev/null || ls /usr/sbin/nginx 2>/dev/null)"; then
    mkdir -p "$WORK/nginx"
    # The compose service names do not resolve here: local upstreams instead.
    sed 's/server luot-[0-9]*:8080/server 127.0.0.1:8080/' deploy/nginx/luot.conf >"$WORK/nginx/luot.conf"
    cat >"$WORK/nginx/nginx.conf" <<EOF
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events {}
http {
    access_log off;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    include $WORK/nginx/luot.conf;
}
EOF
    check "nginx -t" "$NGINX" -q -t -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf"
else
    skip "nginx -t: nginx is not installed (apt-get install nginx)"
fi

echo "== deploy/ validators: $ran ran, ${#failed[@]} failed, ${#skipped[@]} skipped"
if ((${#failed[@]})); then
    printf '   failed: %s\n' "${failed[@]}" >&2
    exit 1
fi
exit 0
