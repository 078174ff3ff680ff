#!/usr/bin/env bash
# Build (or reuse) the docker sandbox image. Idempotent: CI calls it before the docker-marked tests.
# Installs docker.io + debootstrap if missing, starts dockerd if no engine answers, then builds.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null || ! command -v docker >/dev/null; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io debootstrap
fi

if ! docker info >/dev/null 2>&1; then
  log=/var/log/dockerd.log
  echo "starting dockerd (log: $log)"
  nohup dockerd >"$log" 2>&1 &
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { echo "dockerd did not come up in 60 s; see $log" >&2; tail -20 "$log" >&2; exit 1; }
fi

python -m sandboxes.image.build "$@"
