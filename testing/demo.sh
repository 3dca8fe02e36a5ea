#!/bin/sh
# SPDX-License-Identifier: MIT OR Apache-2.0
# Runs inside the VM (cargo xtask demo): traces real vmalloc traffic with
# nofail and prints its per-caller report.
#   demo.sh <nofail binary> [trigger module]
set -e
NOFAIL=$1
TRIGGER=$2
ERR=/tmp/nofail.err

"$NOFAIL" trace --duration 120s --json target/demo-report.json 2>"$ERR" &
pid=$!
until grep -q "tracing for" "$ERR"; do
    kill -0 "$pid" 2>/dev/null || { cat "$ERR"; exit 1; }
    sleep 0.2
done
cat "$ERR"

echo "demo: making vmalloc traffic"
if [ -n "$TRIGGER" ]; then
    insmod "$TRIGGER"
    T=/sys/kernel/debug/nofail_trigger
    echo 65536 > $T/size; echo 20 > $T/count; echo vmalloc_nofail > $T/run
    echo 8388608 > $T/size; echo 5 > $T/count; echo kvmalloc_nofail > $T/run
    echo 65536 > $T/size; echo 30 > $T/count; echo vmalloc > $T/run
    # Make the loops turn with the kernel's own fault injection, scoped to
    # the trigger's calls (task-filter + make_it_fail):
    # 5 failed vm_struct allocations inside one NOFAIL vmalloc ...
    F=/sys/kernel/debug/fail_function
    echo should_failslab > $F/inject; printf %#x -12 > $F/should_failslab/retval
    echo Y > $F/task-filter; echo 100 > $F/probability; echo 0 > $F/verbose; echo 5 > $F/times
    echo 1 > $T/count; echo 1 > $T/fail; echo vmalloc_nofail > $T/run
    echo '!should_failslab' > $F/inject
    # ... and 3 NULLs that a hand-made retry loop answers by calling again.
    S=/sys/kernel/debug/failslab
    echo Y > $S/task-filter; echo N > $S/ignore-gfp-wait; echo 100 > $S/probability
    echo 0 > $S/verbose; echo 3 > $S/times
    echo vmalloc_retry > $T/run
    echo 0 > $T/fail
fi
for i in 1 2 3; do
    bpftool map create /sys/fs/bpf/demo$i type array key 4 value 4096 entries 4096 name demo$i
done
# Module loading and process creation vmalloc too.
for i in 1 2 3 4 5; do /bin/true; done

kill -INT "$pid"
wait "$pid"
echo "demo: JSON report in target/demo-report.json"
