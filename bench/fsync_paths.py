#!/usr/bin/env python3
"""How long does a 1 KiB append + sync take, by write path? (docs/PERFORMANCE.md)

Usage: bench/fsync_paths.py [DIR] [N]   (DIR: on the disk to measure, default .; N: 3000)

For each path it appends N records of 1 KiB to a fresh file in DIR and syncs after each,
then prints p50/p99 of one append + sync:
  - pwrite into pre-written zeros, then fdatasync      (rocketraft, warmMapedFileEnable=true)
  - pwrite into fallocate'd blocks, then fdatasync      (rocketraft, warmMapedFileEnable=false)
  - store through a shared mmap of pre-written zeros, then msync (rocketraft before 2026-11-21)
  - pwrite appending to an empty file, then fdatasync   (blocks allocated as it grows)
The file is removed at the end. Bounded: N appends per path, nothing else.
"""
import mmap
import os
import sys
import time

DIR = sys.argv[1] if len(sys.argv) > 1 else "."
N = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
REC = b"x" * 1024
SIZE = N * 1024 + 8192
PATH = os.path.join(DIR, f"fsync_paths.{os.getpid()}.dat")


def measure(name, setup, step):
    fd = os.open(PATH, os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o600)
    try:
        ctx = setup(fd)
        times = []
        for i in range(N):
            t = time.perf_counter()
            step(fd, ctx, i)
            times.append(time.perf_counter() - t)
        if ctx is not None:
            ctx.close()
    finally:
        os.close(fd)
        os.unlink(PATH)
    times.sort()
    p50 = times[N // 2] * 1e6
    p99 = times[int(N * 0.99)] * 1e6
    print(f"{name:<48} p50 {p50:6.0f} us   p99 {p99:6.0f} us")


def zeros(fd):
    os.write(fd, b"\0" * SIZE)
    os.fsync(fd)


def reserved(fd):
    os.posix_fallocate(fd, 0, SIZE)
    os.fsync(fd)


def pwrite_sync(fd, _ctx, i):
    os.pwrite(fd, REC, i * 1024)
    os.fdatasync(fd)


def mapped(fd):
    zeros(fd)
    return mmap.mmap(fd, SIZE)


def store_msync(_fd, m, i):
    m[i * 1024:(i + 1) * 1024] = REC
    page = (i * 1024) // mmap.PAGESIZE * mmap.PAGESIZE
    m.flush(page, mmap.PAGESIZE)


def append_sync(fd, _ctx, _i):
    os.write(fd, REC)
    os.fdatasync(fd)


measure("pwrite into written zeros + fdatasync", zeros, pwrite_sync)
measure("pwrite into fallocate'd blocks + fdatasync", reserved, pwrite_sync)
measure("store through mmap of written zeros + msync", mapped, store_msync)
measure("append to a growing file + fdatasync", lambda fd: None, append_sync)
