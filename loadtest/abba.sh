#!/bin/bash
# Old build against new, interleaved (old, new, new, old per round) so that the machine's
# drift cancels: `loadtest/abba.sh OLD_MACULA NEW_MACULA ROUNDS MODE...`, MODE one of
# same-cluster, same-node, hop (one bridge hop). Prints one line per run:
# `mode build round msg/s lost duplicated`. Figures in docs/BENCHMARKS.md.
set -euo pipefail
old=$1 new=$2 rounds=$3
shift 3
lt=${LOADTEST_BIN:-./target/release/macula-loadtest}
for round in $(seq 1 "$rounds"); do
  for who in old new new old; do
    bin=$old
    [ "$who" = new ] && bin=$new
    for mode in "$@"; do
      flag=()
      [ "$mode" != hop ] && flag=("--$mode")
      out=$(LOADTEST_MACULA_BIN=$bin timeout 180 "$lt" pubsub --spawn "${flag[@]}" \
        --rate 0 --duration 8 --payload 128 --qos 1 2>/dev/null)
      echo "$mode $who $round $(echo "$out" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(round(r["throughput_msgs_per_s"]), r["lost"], r["duplicated"])')"
    done
  done
done
