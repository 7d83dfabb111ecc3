#!/usr/bin/env python3
"""Workspaces: an overlay mount against a copy, with and without many live
mounts beside (issue #38). Root only. Each workspace is made and removed
the way the runtime does it: an overlayfs mount over a two-file lower
layer and its lazy unmount, or a copy of the same two files and its
removal. Usage: sudo python3 workspace_mounts.py [N] [LIVE...]
"""
import ctypes, os, shutil, sys, tempfile, time

libc = ctypes.CDLL(None, use_errno=True)
base = tempfile.mkdtemp(prefix="ws-bench-")
os.makedirs(f"{base}/lower")
for name, text in (("Agentfile", "FROM process\nCOMMAND sh a.sh\n"), ("a.sh", "echo hi\n")):
    with open(f"{base}/lower/{name}", "w") as f:
        f.write(text)


def overlay(i):
    d = f"{base}/r{i}"
    for sub in ("up", "wk", "m"):
        os.makedirs(f"{d}/{sub}")
    opts = f"lowerdir={base}/lower,upperdir={d}/up,workdir={d}/wk".encode()
    if libc.mount(b"overlay", f"{d}/m".encode(), b"overlay", 0, opts) != 0:
        sys.exit(f"mount: {os.strerror(ctypes.get_errno())} (run as root)")


def overlay_down(i):
    d = f"{base}/r{i}"
    libc.umount2(f"{d}/m".encode(), 2)  # MNT_DETACH, as the runtime
    shutil.rmtree(d)


def copy(i):
    d = f"{base}/c{i}/m"
    os.makedirs(d)
    for name in ("Agentfile", "a.sh"):
        shutil.copyfile(f"{base}/lower/{name}", f"{d}/{name}")


def copy_down(i):
    shutil.rmtree(f"{base}/c{i}")


n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
lives = [int(a) for a in sys.argv[2:]] or [0, 2000]
print("| live mounts beside | overlay: make + remove | copy: make + remove | overlay ÷ copy |")
print("|---|---|---|---|")
try:
    for live in lives:
        for i in range(live):
            overlay(1_000_000 + i)
        took = {}
        for name, up, down in (("overlay", overlay, overlay_down), ("copy", copy, copy_down)):
            t = time.perf_counter()
            for i in range(n):
                up(i)
            for i in range(n):
                down(i)
            took[name] = (time.perf_counter() - t) / n * 1e6
        for i in range(live):
            overlay_down(1_000_000 + i)
        print(f"| {live} | {took['overlay']:.0f} µs | {took['copy']:.0f} µs | {took['overlay'] / took['copy']:.1f}× |")
finally:
    shutil.rmtree(base, ignore_errors=True)
