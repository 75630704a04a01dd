#!/usr/bin/env bash
# Validates the deployment files without a container engine or a cluster:
#   - docker-compose.yml, alone and with each profile (`docker-compose config -q`);
#   - deploy/systemd/cairn.service (`systemd-analyze verify`);
#   - deploy/kubernetes/*.yaml parse as YAML documents with kind and apiVersion;
#   - deploy/prometheus/alerts.yml (`promtool check rules`, then its unit tests
#     `promtool test rules deploy/prometheus/alerts_test.yml`);
#   - deploy/grafana/cairn-dashboard.json parses as JSON.
# Tools missing here are installed from Debian when running as root, else skipped with a note.
set -euo pipefail
cd "$(dirname "$0")/.."

note() { printf 'packaging: %s\n' "$*" >&2; }

if ! command -v docker-compose >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  note "installing docker-compose from Debian"
  (apt-get install -y -qq docker-compose >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq docker-compose >/dev/null 2>&1; }) || true
fi
if command -v docker-compose >/dev/null 2>&1; then
  docker-compose -f docker-compose.yml config -q
  docker-compose -f docker-compose.yml --profile local-llm config -q
  docker-compose -f docker-compose.yml --profile scale config -q
  note "docker-compose.yml: valid (default, local-llm, scale)"
else
  note "docker-compose is not available: compose file not checked"
fi

if command -v systemd-analyze >/dev/null 2>&1; then
  unit=$(mktemp -d)/cairn.service
  # The binary is not installed here: verify the unit with a stand-in executable.
  sed 's|/usr/local/bin/cairn|/bin/true|' deploy/systemd/cairn.service >"$unit"
  out=$(systemd-analyze verify "$unit" 2>&1 || true)
  if [ -n "$out" ]; then
    printf '%s\n' "$out" >&2
    exit 1
  fi
  note "deploy/systemd/cairn.service: valid"
else
  note "systemd-analyze is not available: unit not checked"
fi

python3 - <<'PY'
import json, re, sys
# A minimal YAML check without third-party modules when PyYAML is missing.
try:
    import yaml
except ImportError:
    yaml = None
for path in ["deploy/kubernetes/cairn.yaml"]:
    text = open(path).read()
    if yaml:
        docs = [d for d in yaml.safe_load_all(text) if d]
        for d in docs:
            assert "kind" in d and "apiVersion" in d, f"{path}: a document without kind/apiVersion"
    else:
        assert re.search(r"^kind: ", text, re.M), path
    print(f"packaging: {path}: valid YAML", file=sys.stderr)
PY

if ! command -v promtool >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  note "installing promtool (Debian's prometheus) from Debian"
  (apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null 2>&1 &&
      apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1; }) || true
fi
if command -v promtool >/dev/null 2>&1; then
  for check in "check rules deploy/prometheus/alerts.yml" "test rules deploy/prometheus/alerts_test.yml"; do
    # shellcheck disable=SC2086 # the words of $check are promtool's arguments
    out=$(promtool $check 2>&1) || { printf '%s\n' "$out" >&2; exit 1; }
  done
  note "deploy/prometheus/alerts.yml: valid, unit tests pass"
else
  note "promtool is not available: alert rules not checked"
fi

python3 -m json.tool deploy/grafana/cairn-dashboard.json >/dev/null
note "deploy/grafana/cairn-dashboard.json: valid JSON"
