#!/bin/sh
# SPDX-License-Identifier: MIT OR Apache-2.0
# Instruction profile of vmalloc calls in the test kernel, with or without
# a tracer loaded: one icount boot under the tbprof plugin.
#   testing/profile/run.sh TAG MODE THREADS   (MODE: none, sentinel, sleep)
# Then: python3 testing/profile/compare.py target/profile TAG_A TAG_B [CALLS]
# (CALLS: NB x BATCH, 4000 by default).
# Env: SIZE (bytes per call, 8192), BATCH (calls per batch, 500), NB (8).
set -eu
cd "$(dirname "$0")/../.."
tag=$1 mode=$2 threads=$3
out=$PWD/target/profile
mkdir -p "$out"
gcc -O2 -Wall -shared -fPIC -o "$out/libtbprof.so" testing/profile/tbprof.c
kernel=$(cargo xtask kernel --kernel test | awk '$1 == "test" {print $3}')
[ -n "$kernel" ] || { echo "run.sh: no test kernel (cargo xtask kernel --kernel test)" >&2; exit 1; }
tree=${kernel%/arch/x86/boot/bzImage}
# The newest trigger built for this kernel (cargo xtask vm-test --kernel
# test builds it, and target/release/nofail).
ko=$(ls -t "$(dirname "$tree")"/trigger-*/nofail_trigger.ko 2>/dev/null | head -1)
[ -n "$ko" ] || { echo "run.sh: no trigger module: run cargo xtask vm-test --kernel test once" >&2; exit 1; }
[ "$mode" != sentinel ] || [ -x target/release/nofail ] || { echo "run.sh: no target/release/nofail" >&2; exit 1; }
sync_addr=$(awk '$3 == "ksys_sync" {print $1}' "$tree/System.map")
[ -n "$sync_addr" ] || { echo "run.sh: no ksys_sync in $tree/System.map" >&2; exit 1; }
NOFAIL_KERNEL_APPEND=nokaslr \
NOFAIL_QEMU_EXTRA="-plugin $out/libtbprof.so,toggle=$sync_addr,out=$out/tb.$tag" \
cargo xtask vm --kernel test --icount --cpus 1 \
    --env KO="$ko" --env MODE="$mode" --env THREADS="$threads" --env TAG="$tag" \
    --env OUT="$out" --env NOFAIL="$PWD/target/release/nofail" \
    --env SIZE="${SIZE:-8192}" --env BATCH="${BATCH:-500}" --env NB="${NB:-8}" \
    -- testing/profile/guest.sh
