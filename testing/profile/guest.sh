#!/bin/sh
# SPDX-License-Identifier: MIT OR Apache-2.0
# Inside the profiling VM (run.sh): the trigger, the kernel's symbols for
# compare.py, then the workload.
set -eu
mount -t debugfs none /sys/kernel/debug 2>/dev/null || true
mount -t tracefs none /sys/kernel/tracing 2>/dev/null || true
insmod "$KO"
cat /proc/kallsyms > "$OUT/kallsyms.$TAG"
exec python3 "$(dirname "$0")/workload.py"
