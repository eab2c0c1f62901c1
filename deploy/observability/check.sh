#!/usr/bin/env bash
# Checks the alerting rules with Prometheus's promtool: that alerts.yaml
# loads (promtool check rules), and that each alert fires, with the right
# labels and text, on the series of alerts_test.yaml (promtool test rules).
#
# promtool: $PROMTOOL, else the one on PATH, else Debian's prometheus
# package, downloaded (apt-get download, no root needed once the package
# lists exist) and unpacked into a temporary directory, not installed.
set -euo pipefail
cd "$(dirname "$0")"
promtool=${PROMTOOL:-$(command -v promtool || true)}
if [ -z "$promtool" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (
    cd "$tmp"
    apt-get download prometheus >/dev/null 2>&1 || { apt-get update -qq && apt-get download prometheus >/dev/null; }
  )
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/root"
  promtool="$tmp/root/usr/bin/promtool"
fi
"$promtool" --version | head -1
"$promtool" check rules alerts.yaml
"$promtool" test rules alerts_test.yaml
