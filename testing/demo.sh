#!/bin/sh
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
fi
for i in 1 2 3; do
    bpftool map create /sys/fs/bpf/demo$i type array key 4 value 4096 entries 4096 name demo$i
done
# Module loading and process creation vmalloc too.
for i in 1 2 3 4 5; do /bin/true; done

kill -INT "$pid"
wait "$pid"
echo "demo: JSON report in target/demo-report.json"
