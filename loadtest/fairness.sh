#!/bin/bash
# Fairness (docs/BENCHMARKS.md, "Fairness"): one client publishing flat out beside the
# witness, by the node's per-client rate limit (0: none; 100000: the default), interleaved,
# three rounds; reports in docs/bench/fairness-r<limit>-<round>.json. Run from the
# repository root after `cargo build --release`; about 5 minutes.
set -u
for round in 1 2 3; do
  for r in 0 100000 50000 10000; do
    timeout 120 ./target/release/macula-loadtest flood --spawn --kind publish --concurrency 1 --settle-secs 1 --newcomer-ms 0 --rate-client-msgs $r --json docs/bench/fairness-r$r-$round.json 2> /tmp/fairness-r$r-$round.log
  done
done

