#!/usr/bin/env bash
# A soak on demand: scripts/soak.sh SECONDS [BUILD_DIR]
#
# Runs, in a loop until SECONDS have passed, the reliability tests that
# check every byte they read:
#   - the versioned stress (4 processes x 4 threads; memory tier off, on in one
#     process, on in four, and with a Redis tier), LAYERCACHE_STRESS_SECONDS
#     (default 15) per configuration;
#   - faults (ENOSPC, EIO, short writes, a failing index) and crashes (kill -9
#     at hundreds of points), tests/fault_test;
#   - power loss at hundreds of points, tests/power_loss_test;
#   - Redis: a Redis Cluster master killed (SIGKILL) under load and its replica
#     promoted (failover), a master killed without replicas while four nodes load,
#     a Redis frozen or killed, a lease holder dying (tests/remote_test).
# Every minute it prints one summary line of what was checked so far; at the
# end, the totals. Exits 1 at the first failing run (its output is kept in
# the work folder it names). Needs a build with the tests (default: build).
set -uo pipefail
cd "$(dirname "$0")/.."
seconds=${1:?usage: scripts/soak.sh SECONDS [BUILD_DIR]}
build=${2:-build}
for t in versioned_stress_test fault_test power_loss_test remote_test; do
  [ -x "$build/tests/$t" ] || { echo "soak: $build/tests/$t is missing (cmake --build $build)" >&2; exit 2; }
done
work=$(mktemp -d "${TMPDIR:-/tmp}/layercache-soak-XXXXXX")
totals=$work/totals
echo "rounds=0 reads=0 hits=0 puts=0 invalidations=0 torn=0 stale=0 wrong_misses=0 crash_points=0 power_losses=0 redis_runs=0 failures=0" >"$totals"
start=$(date +%s)
export LAYERCACHE_STRESS_SECONDS=${LAYERCACHE_STRESS_SECONDS:-15}

add() {  # name value: adds to the running totals
  local old
  old=$(sed -n "s/.*\b$1=\([0-9]*\).*/\1/p" "$totals")
  sed -i "s/\b$1=[0-9]*/$1=$((old + ${2:-0}))/" "$totals"
}

ticker() {
  while sleep 60; do
    echo "soak $(( $(date +%s) - start ))s: $(cat "$totals")"
  done
}
ticker &
ticker_pid=$!
trap 'kill $ticker_pid 2>/dev/null' EXIT

run() {  # name, command...: runs one step, keeps its output, stops the soak on failure
  local name=$1
  shift
  local out=$work/$name.log
  if ! "$@" >"$out" 2>&1; then
    add failures 1
    echo "soak: $name FAILED after $(( $(date +%s) - start ))s; output in $out" >&2
    grep -E "Failure|FAILED|worker [0-9]+:|power loss at" "$out" | head -20 >&2
    echo "soak totals: $(cat "$totals")"
    exit 1
  fi
}

while [ $(( $(date +%s) - start )) -lt "$seconds" ]; do
  run versioned "$build/tests/versioned_stress_test"
  while read -r reads hits puts invs torn stale misses; do
    add reads "$reads"; add hits "$hits"; add puts "$puts"; add invalidations "$invs"
    add torn "$torn"; add stale "$stale"; add wrong_misses "$misses"
  done < <(sed -n 's/.*: \([0-9]*\) reads checked (\([0-9]*\) hits), \([0-9]*\) puts, \([0-9]*\) invalidations; torn \([0-9]*\), stale \([0-9]*\), wrong misses \([0-9]*\).*/\1 \2 \3 \4 \5 \6 \7/p' "$work/versioned.log")
  [ $(( $(date +%s) - start )) -lt "$seconds" ] || break
  run faults "$build/tests/fault_test"
  add crash_points "$(sed -n 's/^crash points exercised: \([0-9]*\).*/\1/p' "$work/faults.log" | head -1)"
  [ $(( $(date +%s) - start )) -lt "$seconds" ] || break
  run power "$build/tests/power_loss_test"
  add power_losses "$(sed -n 's/^power lost at \([0-9]*\) points.*/\1/p' "$work/power.log" | head -1)"
  [ $(( $(date +%s) - start )) -lt "$seconds" ] || break
  run redis "$build/tests/remote_test" \
    --gtest_filter='RedisClusterTier.AKilledMasterIsReplacedByItsReplicaAndNothingWrongIsServed:RedisClusterTier.KillingAMasterMidRunServesNoWrongBytes:RemoteTier.RedisFrozenOrDeadNeverBreaksTheCache:RemoteTier.WhenTheLeaseHolderDiesTheWaiterLoadsItself:RemoteTier.CorruptMissingOrGarbledEntriesAreNeverServed'
  add redis_runs 1
  add rounds 1
done
echo "soak done in $(( $(date +%s) - start ))s: $(cat "$totals")"
rm -rf "$work"
