# SPDX-License-Identifier: MIT OR Apache-2.0
"""Instructions per call by kernel function, two profiles side by side:
    compare.py DIR TAG_A TAG_B [CALLS]
DIR holds tb.TAG.0 and tb.TAG.1 (the snapshots around the workload) and
kallsyms.TAG (from the guest) for each tag."""
import bisect
import collections
import signal
import sys


def symbols(path):
    s = sorted((int(p[0], 16), p[2]) for p in (line.split() for line in open(path))
               if len(p) >= 3 and p[1] in "tTwW")
    return [a for a, _ in s], [n for _, n in s]


def snapshot(path):
    d = collections.Counter()
    for line in open(path):
        a, n, c = line.split()
        d[int(a, 16)] += int(n) * int(c)
    return d


def by_function(d, tag):
    before, after = snapshot(f"{d}/tb.{tag}.0"), snapshot(f"{d}/tb.{tag}.1")
    addrs, names = symbols(f"{d}/kallsyms.{tag}")
    f = collections.Counter()
    for a, v in after.items():
        n = v - before.get(a, 0)
        if not n:
            continue
        if a < 1 << 63:
            f["<user>"] += n
            continue
        i = bisect.bisect_right(addrs, a) - 1
        f[names[i] if i >= 0 else hex(a)] += n
    return f


def main():
    d, a, b = sys.argv[1:4]
    calls = int(sys.argv[4]) if len(sys.argv) > 4 else 4000
    fa, fb = by_function(d, a), by_function(d, b)
    ta, tb = sum(fa.values()), sum(fb.values())
    print(f"{a}: {ta / calls:.1f}/call  {b}: {tb / calls:.1f}/call  difference {(tb - ta) / calls:+.2f}/call")
    print(f"{'DIFF':>9} {a[:10]:>10} {b[:10]:>10}  FUNCTION")
    for k in sorted(set(fa) | set(fb), key=lambda k: -abs(fb[k] - fa[k]))[:25]:
        print(f"{(fb[k] - fa[k]) / calls:+9.2f} {fa[k] / calls:10.2f} {fb[k] / calls:10.2f}  {k}")


signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # piped into head
main()
