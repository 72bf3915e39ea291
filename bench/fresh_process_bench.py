#!/usr/bin/python3
"""get_layer in a fresh /usr/bin/python3 process, cold and warm, against the device limit measured by
dd and fio on the same entry file in the same run (the way issue #15 judges the default path).

    sudo PYTHONPATH=build/python /usr/bin/python3 bench/fresh_process_bench.py [--reps 5]
         [--cache-dir /var/tmp/layercache-fresh-bench] [--modes auto,direct] [--keep]

Setup (outside every timed region): one 7B-class layer (Qwen2-7B shapes, bf16, 466.1 MB) cached
with default options. Then, interleaved so that every figure sees the same load, per repetition:
  - cold: `sync; echo 3 > /proc/sys/vm/drop_caches`, a new /usr/bin/python3 that imports torch and
    layercache and opens the cache before the clock, and times only cache.get_layer(...);
  - warm: the same after the entry file was read into the page cache (`cat ENTRY > /dev/null`);
  - memcpy of the layer's size on every core (ctypes.memmove on one thread per core, which releases
    the GIL; source and destination faulted in beforehand): the limit for warm loads;
  - `dd if=ENTRY of=/dev/null bs=16M iflag=direct` and
    `fio --ioengine=io_uring --iodepth=32 --direct=1 --bs=512k --rw=read` (and --bs=1m) of the entry,
    each after drop_caches.
Prints each run, the medians, the ratio cold / best device limit, and the load average. Needs root
(drop_caches); fio is optional (`apt-get install fio`): without it the limit is dd's alone.
"""
import argparse
import ctypes
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

CHILD = r"""
import sys, time, json
import torch, layercache
cache = layercache.LayerCache(cache_dir=sys.argv[1], **json.loads(sys.argv[2]))
t = time.perf_counter()
layer = cache.get_layer("bench", 0)
dt = time.perf_counter() - t
assert layer is not None
n = sum(v.numel() * v.element_size() for v in (layer.values() if hasattr(layer, "values") else layer.state_dict().values()))
print(json.dumps({"s": dt, "bytes": n}))
"""

SHAPES = {  # Qwen2-7B decoder layer, bf16 (466.1 MB)
    "self_attn.q_proj.weight": (3584, 3584), "self_attn.k_proj.weight": (512, 3584),
    "self_attn.v_proj.weight": (512, 3584), "self_attn.o_proj.weight": (3584, 3584),
    "mlp.gate_proj.weight": (18944, 3584), "mlp.up_proj.weight": (18944, 3584),
    "mlp.down_proj.weight": (3584, 18944),
}


def drop_caches():
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def run_child(cache_dir, opts):
    out = subprocess.run(["/usr/bin/python3", "-c", CHILD, cache_dir, json.dumps(opts)], check=True,
                         capture_output=True, text=True, env=os.environ).stdout
    r = json.loads(out.strip().splitlines()[-1])
    return r["bytes"] / r["s"] / 1e9


def memcpy_gbps(nbytes, bufs=[]):
    """memcpy of nbytes on every core, one slice per thread, into memory already faulted in."""
    import threading
    if not bufs:
        src, dst = bytearray(b"\1" * nbytes), bytearray(nbytes)
        dst[:] = src  # fault in
        bufs.extend([src, dst])
    src, dst = bufs
    cores = os.cpu_count() or 1
    slice_ = (nbytes + cores - 1) // cores
    a = ctypes.addressof((ctypes.c_char * nbytes).from_buffer(src))
    b = ctypes.addressof((ctypes.c_char * nbytes).from_buffer(dst))
    ts = [threading.Thread(target=ctypes.memmove, args=(b + i * slice_, a + i * slice_,
                                                         max(0, min(slice_, nbytes - i * slice_))))
          for i in range(cores)]
    t = time.perf_counter()
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    return nbytes / (time.perf_counter() - t) / 1e9


def dd_gbps(entry):
    drop_caches()
    p = subprocess.run(["dd", f"if={entry}", "of=/dev/null", "bs=16M", "iflag=direct"], check=True,
                       capture_output=True, text=True)
    size = os.path.getsize(entry)
    m = re.search(r"copied, ([0-9.]+) s", p.stderr)
    return size / float(m.group(1)) / 1e9


def fio_gbps(entry, bs):
    drop_caches()
    p = subprocess.run(["fio", "--name=limit", f"--filename={entry}", "--readonly", "--rw=read",
                        "--ioengine=io_uring", "--iodepth=32", "--direct=1", f"--bs={bs}",
                        "--output-format=json"], check=True, capture_output=True, text=True)
    job = json.loads(p.stdout)["jobs"][0]["read"]
    return job["bw_bytes"] / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--cache-dir", default="/var/tmp/layercache-fresh-bench")
    ap.add_argument("--modes", default="auto", help="disk_read_mode values to time (auto = default options)")
    ap.add_argument("--no-warm", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the cache directory (and reuse it next time)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: cold means after `echo 3 > /proc/sys/vm/drop_caches`")
    import torch
    import layercache
    if not os.path.isdir(a.cache_dir) or layercache.LayerCache(cache_dir=a.cache_dir).get_layer("bench", 0) is None:
        shutil.rmtree(a.cache_dir, ignore_errors=True)
        g = torch.Generator().manual_seed(0)
        tensors = {k: torch.randn(s, generator=g, dtype=torch.float32).to(torch.bfloat16) for k, s in SHAPES.items()}
        layercache.LayerCache(cache_dir=a.cache_dir).cache_layer("bench", 0, tensors)
        del tensors
    entry = max((os.path.join(r, f) for r, _, fs in os.walk(a.cache_dir) for f in fs), key=os.path.getsize)
    have_fio = shutil.which("fio") is not None
    modes = a.modes.split(",")
    res = {k: [] for k in ["memcpy", "dd", "fio512k", "fio1m"] + [f"cold:{m}" for m in modes] + [f"warm:{m}" for m in modes]}
    loads = []
    for rep in range(a.reps):
        loads.append(os.getloadavg()[0])
        res["memcpy"].append(memcpy_gbps(os.path.getsize(entry)))
        res["dd"].append(dd_gbps(entry))
        if have_fio:
            res["fio512k"].append(fio_gbps(entry, "512k"))
            res["fio1m"].append(fio_gbps(entry, "1m"))
        for m in modes:
            opts = {} if m == "auto" else {"disk_read_mode": m}
            drop_caches()
            res[f"cold:{m}"].append(run_child(a.cache_dir, opts))
            if not a.no_warm:
                subprocess.run(["cat", entry], stdout=subprocess.DEVNULL, check=True)
                res[f"warm:{m}"].append(run_child(a.cache_dir, opts))
        print(f"run {rep + 1}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in res.items() if v), flush=True)
    med = {k: statistics.median(v) for k, v in res.items() if v}
    device = max(med.get("dd", 0), med.get("fio512k", 0), med.get("fio1m", 0))
    print(f"\nentry {entry} ({os.path.getsize(entry) / 1e6:.1f} MB); medians of {a.reps}, GB/s; "
          f"load average (1 min) at each run: {', '.join(f'{l:.1f}' for l in loads)}")
    print(f"{f'memcpy, {os.cpu_count()} cores':40s} {med['memcpy']:6.2f}")
    print(f"{'dd iflag=direct bs=16M':40s} {med['dd']:6.2f}")
    if have_fio:
        print(f"{'fio io_uring QD32 direct bs=512k':40s} {med['fio512k']:6.2f}")
        print(f"{'fio io_uring QD32 direct bs=1m':40s} {med['fio1m']:6.2f}")
    else:
        print("fio not installed: the device limit is dd's alone")
    for m in modes:
        name = "default options" if m == "auto" else f"disk_read_mode={m}"
        print(f"{'cold get_layer, ' + name:40s} {med[f'cold:{m}']:6.2f}  {med[f'cold:{m}'] / device:.2f} of the device limit")
        if not a.no_warm:
            print(f"{'warm get_layer, ' + name:40s} {med[f'warm:{m}']:6.2f}  {med[f'warm:{m}'] / med['memcpy']:.2f} of memcpy")
    if not a.keep:
        shutil.rmtree(a.cache_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
