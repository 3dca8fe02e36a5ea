# SPDX-License-Identifier: MIT OR Apache-2.0
"""The profiled workload, inside the VM (guest.sh): THREADS idle threads
(kernel stacks, as on a host; one in six exits again), then MODE loaded
(none, sentinel: nofail's sentinel mode, sleep: a process tracing nothing),
then batches of vmalloc(SIZE)+vfree from the trigger, each after a purge
of lazily freed areas, between two sync() calls: the plugin's snapshots."""
import os
import random
import subprocess
import sys
import threading
import time

D = "/sys/kernel/debug/nofail_trigger"


def w(f, v):
    with open(f"{D}/{f}", "w") as fh:
        fh.write(v)


syms = {}
with open("/proc/kallsyms") as fh:
    for line in fh:
        a, t, n = line.split()[:3]
        if t in "tT" and n in ("__vmalloc_node_range_noprof", "__vmalloc_node_range",
                               "__get_vm_area_caller"):
            syms[n] = a
w("vmalloc_range", "0x" + syms.get("__vmalloc_node_range_noprof", syms.get("__vmalloc_node_range", "0")))
w("get_area", "0x" + syms["__get_vm_area_caller"])

threads = int(os.environ.get("THREADS", "0"))
events = []
for _ in range(threads):
    e = threading.Event()
    threading.Thread(target=e.wait, daemon=True).start()
    events.append(e)
for e in random.Random(7).sample(events, threads // 6):
    e.set()
time.sleep(1)
w("purge", "1")

mode = os.environ.get("MODE", "none")
child = None
if mode == "sentinel":
    child = subprocess.Popen([os.environ["NOFAIL"], "trace", "--mode", "sentinel", "--duration", "600s"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in child.stderr:
        sys.stdout.write(line)
        if "Ctrl-C" in line:
            break
    else:
        sys.exit(f"nofail exited before tracing: {child.wait()}")
elif mode == "sleep":
    child = subprocess.Popen(["sleep", "600"])

size, batch, nb = (int(os.environ.get(k, d)) for k, d in (("SIZE", "8192"), ("BATCH", "500"), ("NB", "8")))


def run(n):
    w("size", str(size))
    w("count", str(n))
    w("fail", "0")
    w("run", "vmalloc")


for _ in range(4):  # warm up
    w("purge", "1")
    run(batch)
time.sleep(0.5)
os.sync()
for _ in range(nb):
    w("purge", "1")
    run(batch)
os.sync()
areas = sum(1 for line in open("/proc/vmallocinfo") if "unpurged" not in line)
print(f"profiled {nb * batch} calls of {size} bytes, {areas} vmalloc areas", flush=True)
if child:
    child.kill()
