#!/usr/bin/env python3
"""What the CommitLog's page-cache choices cost on this machine (docs/PERFORMANCE.md).

Three measurements, each printed with the CPU time it took:

1. Filling a new segment with zeros: through the page cache (buffered writes, then fsync)
   against O_DIRECT from one page-aligned buffer.
2. Appending 1000-byte records to a file pre-written with O_DIRECT (so none of its pages is
   cached): plain writes, which make the kernel read each page before merging a partial
   write, against writes padded with zeros to the end of their last page.
3. Writing 256 MiB into the page cache: after 15 s with nothing freed (long enough for a VM
   that reports free memory to its host to have handed it back), and again into the memory
   just freed (the first file deleted a moment before).

Usage: bench/page_costs.py [DIR]   (default: $TMPDIR or /tmp; must not be tmpfs)
"""

import mmap
import os
import resource
import sys
import time

DIR = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("TMPDIR", "/tmp")
PATH = os.path.join(DIR, "rocketraft-page-costs.dat")
MIB = 1 << 20


def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(fn):
    c, t = cpu(), time.time()
    fn()
    return cpu() - c, time.time() - t


def remove():
    if os.path.exists(PATH):
        os.unlink(PATH)


def zero_fill(size, direct):
    remove()
    flags = os.O_CREAT | os.O_WRONLY | (os.O_DIRECT if direct else 0)
    fd = os.open(PATH, flags, 0o644)
    buf = mmap.mmap(-1, MIB)  # page-aligned zeros, as O_DIRECT needs
    for off in range(0, size, MIB):
        os.pwritev(fd, [buf], off)
    os.fsync(fd)
    os.close(fd)


def appends(size, pad):
    fd = os.open(PATH, os.O_WRONLY)
    data, zeros = b"x" * 1000, b"\0" * 4096
    off = 0
    while off + 1000 < size:
        end = off + 1000
        os.pwritev(fd, [data, zeros[: (-end) % 4096 if pad else 0]], off)
        off = end
    os.close(fd)


def buffered_write(size):
    fd = os.open(PATH, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    buf = b"\0" * MIB
    for _ in range(size // MIB):
        os.write(fd, buf)
    os.close(fd)


def main():
    print(f"in {DIR}")
    size = 512 * MIB
    for direct in (False, True, False, True):
        c, w = timed(lambda: zero_fill(size, direct))
        how = "O_DIRECT" if direct else "buffered"
        print(f"zero-fill {size // MIB} MiB, {how:8}: cpu {c:.2f} s, wall {w:.2f} s")

    size = 64 * MIB
    for pad in (False, True, False, True):
        zero_fill(size, True)
        fd = os.open(PATH, os.O_RDONLY)
        os.posix_fadvise(fd, 0, size, os.POSIX_FADV_DONTNEED)
        os.close(fd)
        c, w = timed(lambda: appends(size, pad))
        how = "padded to page end" if pad else "unpadded"
        print(f"1000-byte appends over {size // MIB} MiB, {how:18}: cpu {c:.2f} s, wall {w:.2f} s")

    size = 256 * MIB
    remove()
    for label, wait in (("memory idle for 15 s", 15), ("memory just freed", 0)):
        time.sleep(wait)
        c, w = timed(lambda: buffered_write(size))
        remove()
        print(f"write {size // MIB} MiB into {label:21}: cpu {c:.2f} s, wall {w:.2f} s")
    remove()


if __name__ == "__main__":
    main()
