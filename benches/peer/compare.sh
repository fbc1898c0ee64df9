#!/usr/bin/env bash
# Macula against its peers in one run, interleaved, medians of ROUNDS (issue 13):
#
#   benches/peer/compare.sh [OUT_DIR]
#
# Systems (SYSTEMS, space-separated; default all):
#   nats-tcp          nats-server over plain TCP (Debian: apt-get install nats-server)
#   nats-tls          nats-server over TLS
#   macula-q0         one macula node relaying between two of its clients, QoS 0
#   macula-q1         the same, QoS 1
#   macula-q0-nostall macula-q0 with limits.qos0_stall_ms = 0: full queues drop QoS 0 at once
#                     (the behaviour before back-pressure; not in the default set)
#   macula-bridge-q0  client -> node -> bridge -> node -> client, QoS 0
#   quic-copy         a quinn relay that only copies stream chunks (the ceiling)
#   base-q0, base-q1, base-bridge-q0
#                     macula-q0/q1/bridge-q0 with the processes built from BASELINE_MACULA (a
#                     path to an older `macula` binary), for before/after in the same run; the
#                     clients are the current load generator's unless BASELINE_LOADTEST names an
#                     older `macula-loadtest` too (then client-side changes are compared as well)
# Scenarios (SCENARIOS): 1-1, 1-1000 (fan-out), 10-10 (publishers-subscribers; each subscriber
# receives every publisher). Payloads (PAYLOADS): 16 128 1024 16384 bytes. ROUNDS (5) rounds of
# DURATION (3) seconds each, flat out (RATE=0) unless RATE is set. Every run starts its own
# processes on loopback; the order of systems alternates between rounds. Reports go to
# OUT_DIR/<system>__<scenario>__<payload>__<round>.json and the Markdown tables of medians to
# OUT_DIR/table.md (and stdout).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$root/target/peer-compare-$(date +%Y%m%d-%H%M%S)}
rounds=${ROUNDS:-5}
duration=${DURATION:-3}
rate=${RATE:-0}
scenarios=${SCENARIOS:-"1-1 1-1000 10-10"}
payloads=${PAYLOADS:-"16 128 1024 16384"}
systems=${SYSTEMS:-"nats-tcp nats-tls macula-q0 macula-q1 macula-bridge-q0 quic-copy"}
# With BASELINE_MACULA and no SYSTEMS, the base-* systems join the default set; with SYSTEMS,
# list the base-* systems wanted there.
if [ -n "${BASELINE_MACULA:-}" ] && [ -z "${SYSTEMS:-}" ]; then
  systems="$systems base-q0 base-q1 base-bridge-q0"
fi
mkdir -p "$out"

if [ -z "${NO_BUILD:-}" ]; then
  cargo build --release --manifest-path "$root/Cargo.toml" --bins
  cargo build --release --manifest-path "$root/benches/peer/Cargo.toml"
fi
loadtest=$root/target/release/macula-loadtest
base_loadtest=${BASELINE_LOADTEST:-$loadtest}
peer=$root/benches/peer/target/release/macula-peer
command -v nats-server >/dev/null || echo "nats-server not found: apt-get install nats-server" >&2

run() { # system scenario payload round
  local system=$1 scenario=$2 payload=$3 round=$4
  local pubs=${scenario%-*} subs=${scenario#*-}
  local file="$out/${system}__${scenario}__${payload}__${round}.json"
  local load=(--rate "$rate" --duration "$duration" --payload "$payload"
    --publishers "$pubs" --subscribers "$subs" --json "$file")
  local cmd
  case $system in
    nats-tcp) cmd=("$peer" nats "${load[@]}") ;;
    nats-tls) cmd=("$peer" nats --tls "${load[@]}") ;;
    quic-copy) cmd=("$peer" quic "${load[@]}") ;;
    macula-q0) cmd=("$loadtest" pubsub --spawn --same-node --qos 0 "${load[@]}") ;;
    macula-q1) cmd=("$loadtest" pubsub --spawn --same-node --qos 1 "${load[@]}") ;;
    macula-q0-nostall) cmd=(env MACULA_LIMITS__QOS0_STALL_MS=0 "$loadtest" pubsub --spawn --same-node --qos 0 "${load[@]}") ;;
    macula-bridge-q0) cmd=("$loadtest" pubsub --spawn --qos 0 "${load[@]}") ;;
    base-q0) cmd=(env LOADTEST_MACULA_BIN="$BASELINE_MACULA" "$base_loadtest" pubsub --spawn --same-node --qos 0 "${load[@]}") ;;
    base-q1) cmd=(env LOADTEST_MACULA_BIN="$BASELINE_MACULA" "$base_loadtest" pubsub --spawn --same-node --qos 1 "${load[@]}") ;;
    base-bridge-q0) cmd=(env LOADTEST_MACULA_BIN="$BASELINE_MACULA" "$base_loadtest" pubsub --spawn --qos 0 "${load[@]}") ;;
    *) echo "unknown system $system" >&2; return 1 ;;
  esac
  if timeout 300 "${cmd[@]}" >/dev/null 2>"$out/${system}__${scenario}__${payload}__${round}.log"; then
    python3 - "$file" "$system" "$scenario" "$payload" "$round" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]:>17} {sys.argv[3]:>7} {sys.argv[4]:>6} B round {sys.argv[5]}: "
      f"{r['throughput_msgs_per_s']:>12,.0f} deliveries/s  p99 {r['latency_us']['p99']:>9,} us  lost {r['lost']}")
EOF
    rm -f "$out/${system}__${scenario}__${payload}__${round}.log"
  else
    echo "$system $scenario $payload round $round: FAILED (see $out/${system}__${scenario}__${payload}__${round}.log)" >&2
    rm -f "$file"
  fi
}

for round in $(seq 1 "$rounds"); do
  order=$systems
  if [ $((round % 2)) -eq 0 ]; then
    order=$(echo "$systems" | tr ' ' '\n' | tac | tr '\n' ' ')
  fi
  for scenario in $scenarios; do
    for payload in $payloads; do
      for system in $order; do
        run "$system" "$scenario" "$payload" "$round"
      done
    done
  done
done
"$peer" table "$out" | tee "$out/table.md"
echo "reports in $out" >&2
