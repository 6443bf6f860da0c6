#!/usr/bin/env bash
# Scrapes the four `rocketraft dev` metrics endpoints (5557-5560) once a second, N times
# (default 600): the load of a Prometheus scraping every process, for bench/ab.sh runs.
n=${1:-600}
for _ in $(seq 1 "$n"); do
  for p in 5557 5558 5559 5560; do
    curl -s -m 2 -o /dev/null "http://127.0.0.1:$p/metrics" || true
  done
  sleep 1
done
