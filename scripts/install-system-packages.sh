#!/usr/bin/env bash
# Debian packages the project needs beyond the base image: PostgreSQL (the
# change source for the end-to-end tests), Chromium (the Airflow UI test) and
# docker-compose (to validate docker-compose.yaml without a Docker engine).
# Installs only what is missing; needs root (CI and the dev machines run as root).
set -euo pipefail

packages=(postgresql chromium docker-compose)
missing=()
for package in "${packages[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "missing Debian packages: ${missing[*]} (run: sudo apt-get install -y ${missing[*]})" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# the packaged cluster is not used: tests start their own servers on free ports
if command -v pg_lsclusters >/dev/null && pg_lsclusters -h 2>/dev/null | grep -q online; then
  pg_ctlcluster --force "$(pg_lsclusters -h | awk '{print $1}' | head -1)" main stop || true
fi
