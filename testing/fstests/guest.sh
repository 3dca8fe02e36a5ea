#!/bin/bash
# SPDX-License-Identifier: MIT OR Apache-2.0
#
# One run of `cargo xtask fstests`, inside the test-kernel VM: fstests on
# XFS over two loop devices in tmpfs, untraced or wrapped by nofail, with
# the kernel's own counts beside it. The host (xtask/src/fstests/) reads
# what this writes into $OUT and prints the table.
#
#   guest.sh untraced
#   guest.sh trace|inject NOFAIL_ARGS...   (the nofail command line, up to
#                                           and without its trailing `--`)
#
# Environment (set by xtask): FSTESTS (the built tree, read only), OUT (a
# writable directory), CHECK_ARGS (what ./check is given: tests, or -g
# GROUP), FALLBACK_MIN_ORDER (set: fail high-order page allocations under
# xfs_buf_alloc, the realistic mode).
#
# $OUT/summary gets `key value` lines; $OUT/check.out what ./check
# printed; $OUT/results/ its results; $OUT/dmesg the kernel log;
# $OUT/nofail.json nofail's report and $OUT/failed-slab the failed slab
# allocations per call site (traced runs).

set -u
mode=$1
shift

out=$OUT
summary=$out/summary
: >"$summary"
say() { echo "$1 $2" >>"$summary"; }
die() {
	echo "fstests guest: $*" >&2
	say error "$*"
	dmesg >"$out/dmesg" 2>/dev/null
	exit 70
}

# --- the devices: two 1 GiB files in a 3 GiB tmpfs, on loop0 and loop1 ---
base=/tmp/fstests
mkdir -p $base
mount -t tmpfs -o size=3g tmpfs $base || die "cannot mount a tmpfs on $base"
mkdir -p $base/test $base/scratch $base/etc
truncate -s 1G $base/test.img $base/scratch.img
losetup /dev/loop0 $base/test.img || die "losetup loop0 failed"
losetup /dev/loop1 $base/scratch.img || die "losetup loop1 failed"

# --- fstests' users and groups: /etc is the host's, read only, so copies
# with them added are bound over passwd, group and shadow (su needs the
# shadow entry) ---
for f in passwd group shadow; do
	cp /etc/$f $base/etc/$f || die "cannot copy /etc/$f"
done
uid=29000
for u in fsgqa fsgqa2 123456-fsgqa; do
	uid=$((uid + 1))
	grep -q "^$u:" $base/etc/passwd ||
		echo "$u:x:$uid:$uid:fstests:/tmp:/bin/bash" >>$base/etc/passwd
	grep -q "^$u:" $base/etc/group || echo "$u:x:$uid:" >>$base/etc/group
	grep -q "^$u:" $base/etc/shadow || echo "$u:*:19000:0:99999:7:::" >>$base/etc/shadow
done
for f in passwd group shadow; do
	mount --bind $base/etc/$f /etc/$f || die "cannot bind $base/etc/$f over /etc/$f"
done

# --- fstests' configuration ---
mkfs_options="-n size=65536"
cat >$base/local.config <<EOF
export FSTYP=xfs
export TEST_DEV=/dev/loop0
export TEST_DIR=$base/test
export SCRATCH_DEV=/dev/loop1
export SCRATCH_MNT=$base/scratch
export MKFS_OPTIONS="$mkfs_options"
export DM_DISABLE_UDEV=1
export RESULT_BASE=$out/results
EOF
export HOST_OPTIONS=$base/local.config
mkfs.xfs -f -q $mkfs_options /dev/loop0 || die "mkfs.xfs of the test device failed"

stats() { cat /sys/fs/xfs/stats/stats >"$out/xfs-stats.$1" || die "no /sys/fs/xfs/stats/stats"; }

# --- the realistic mode: the kernel's fail_page_alloc, limited by its
# stack filter to xfs_buf_alloc, fails every page allocation of order
# FALLBACK_MIN_ORDER or more made under it (its high-order folio, and
# vmalloc's own high-order attempts), as on a machine whose memory is too
# fragmented to give them: XFS falls back to vmalloc for every buffer
# larger than a page ---
fpa=/sys/kernel/debug/fail_page_alloc
arm_fallback() {
	local range
	# kallsyms is in address order: the next line starts the next
	# symbol. (Sorting it in a script takes ~46 s under TCG.)
	range=$(awk '$3 == "xfs_buf_alloc" { s = $1; getline; print s, $1; exit }' /proc/kallsyms)
	set -- $range
	[ $# -eq 2 ] || die "xfs_buf_alloc not found in /proc/kallsyms"
	[ -d $fpa ] || die "no $fpa: the kernel lacks CONFIG_FAIL_PAGE_ALLOC"
	echo 0 >$fpa/probability
	echo "0x$1" >$fpa/require-start
	echo "0x$2" >$fpa/require-end
	echo 32 >$fpa/stacktrace-depth
	echo "$FALLBACK_MIN_ORDER" >$fpa/min-order
	echo N >$fpa/ignore-gfp-wait
	echo N >$fpa/ignore-gfp-highmem
	echo N >$fpa/task-filter
	echo 0 >$fpa/verbose
	echo 0 >$fpa/space
	echo 1 >$fpa/interval
	echo -1 >$fpa/times
	echo 100 >$fpa/probability
	say fallback_range "0x$1-0x$2"
	say fallback_min_order "$FALLBACK_MIN_ORDER"
}
disarm_fallback() { [ -d $fpa ] && echo 0 >$fpa/probability; }

# --- the ground truth: a tracepoint counted in a trace instance of its
# own (every task), from the ring buffer's entry count; an overrun
# would make the count short and is reported ---
tracing=/sys/kernel/tracing
tp_start() { # name event
	local d=$tracing/instances/$1 was
	rmdir $d 2>/dev/null
	# record-cmd flips the sched_switch static key with every enable;
	# under TCG one such flip oopsed a CI run (see testing/vm-tests/src/
	# real.rs). Instances copy it when made.
	was=$(cat $tracing/options/record-cmd)
	echo 0 >$tracing/options/record-cmd
	mkdir $d || die "cannot make trace instance $1"
	echo "$was" >$tracing/options/record-cmd
	[ -d $d/events/$2 ] || die "no tracepoint $2"
	echo 16384 >$d/buffer_size_kb
	echo 1 >$d/events/$2/enable
}
# Failed slab allocations (kmem:kmem_cache_alloc and kmem:kmalloc fire
# with ptr 0 when one fails), per call site: where nofail's injected
# failures landed, as the kernel saw them.
slab_start() {
	local d=$tracing/instances/nofail_fst_slab was e
	rmdir $d 2>/dev/null
	was=$(cat $tracing/options/record-cmd)
	echo 0 >$tracing/options/record-cmd
	mkdir $d || die "cannot make trace instance nofail_fst_slab"
	echo "$was" >$tracing/options/record-cmd
	echo 16384 >$d/buffer_size_kb
	for e in kmem_cache_alloc kmalloc; do
		[ -d $d/events/kmem/$e ] || die "no tracepoint kmem/$e"
		echo 'ptr == 0' >$d/events/kmem/$e/filter || die "cannot filter kmem/$e"
		echo 1 >$d/events/kmem/$e/enable
	done
}
slab_stop() {
	local d=$tracing/instances/nofail_fst_slab lost=0 n f
	echo 0 >$d/tracing_on
	grep -o 'call_site=[^ ]*' $d/trace | sed 's/^call_site=//; s|/.*||' |
		sort | uniq -c | awk '{ print $2, $1 }' >"$out/failed-slab"
	for f in $d/per_cpu/cpu*/stats; do
		n=$(awk '$1 == "overrun:" { print $2 }' $f)
		lost=$((lost + n))
	done
	say slab_failed_lost $lost
	rmdir $d 2>/dev/null
}

tp_stop() { # name key
	local d=$tracing/instances/$1 entries=0 overrun=0 n f
	echo 0 >$d/tracing_on
	for f in $d/per_cpu/cpu*/stats; do
		n=$(awk '$1 == "entries:" { print $2 }' $f)
		entries=$((entries + n))
		n=$(awk '$1 == "overrun:" { print $2 }' $f)
		overrun=$((overrun + n))
		n=$(awk '$1 == "dropped" && $2 == "events:" { print $3 }' $f)
		overrun=$((overrun + ${n:-0}))
	done
	say "tp_$2" $entries
	say "tp_$2_lost" $overrun
	rmdir $d 2>/dev/null
}

# --- the tree: the built one, read only in the cache (over the host
# root's 9p mount, whose metadata the guest caches), under an overlay
# whose upper layer is in tmpfs: tests with more than one golden output
# link the one they use into the tree (_link_out_file; xfs/021 and
# generic/050 failed with "could not setup output file" on the read-only
# tree), and check writes a file or two at its top ---
tree=$base/xfstests
mkdir -p $tree $base/ovl/upper $base/ovl/work
mount -t overlay overlay -o "lowerdir=$FSTESTS,upperdir=$base/ovl/upper,workdir=$base/ovl/work" $tree ||
	die "cannot mount an overlay over $FSTESTS"
cd $tree || die "no fstests tree at $FSTESTS"
[ -n "${FALLBACK_MIN_ORDER:-}" ] && arm_fallback
traced=false
[ "$mode" != untraced ] && traced=true
if $traced; then
	tp_start nofail_fst_vmalloc xfs/xfs_buf_backing_vmalloc
	tp_start nofail_fst_fallback xfs/xfs_buf_backing_fallback
	slab_start
fi
stats before
say started "$(date +%s)"
# shellcheck disable=SC2086 # CHECK_ARGS is a word list made by xtask
if $traced; then
	# nofail starts check once every program counts, stops when it
	# exits, writes its report and exits with check's status.
	"$@" -- ./check $CHECK_ARGS 2>&1 | tee "$out/check.out"
	status=${PIPESTATUS[0]}
else
	./check $CHECK_ARGS 2>&1 | tee "$out/check.out"
	status=${PIPESTATUS[0]}
fi
say finished "$(date +%s)"
say status "$status"
stats after
if $traced; then
	slab_stop
	tp_stop nofail_fst_vmalloc vmalloc
	tp_stop nofail_fst_fallback fallback
fi
disarm_fallback
# Whatever check left mounted goes outside the counted window.
umount $base/test $base/scratch 2>/dev/null
cd /
umount $tree 2>/dev/null
dmesg >"$out/dmesg"
say done 1
exit 0
