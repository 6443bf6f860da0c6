//! CommitLog segment files: creation (blocks reserved, ahead of need) and their memory maps.
//!
//! Owns the files `<store>/commitlog/<20-digit start position>`, each exactly `segment_bytes`
//! long. Promises: a segment file appears under its final name only after its blocks are all
//! reserved, the file fsync'd and the directory fsync'd (created as `<name>.tmp`, then
//! renamed), so a crash never leaves a short segment and a full disk shows before anything is
//! written to it. A background thread creates the next segment before the writer needs it.
//!
//! Reserving means one of two things (`warmMapedFileEnable`, RocketMQ's name and spelling):
//! - warm (the default): the whole file is written with zeros, with `O_DIRECT` so that the
//!   zeros never pass through the page cache, so appends and fdatasyncs find blocks already
//!   written. That costs a full extra write of every byte on the disk, on a thread of its
//!   own, and little CPU. Appends are padded to the end of their last page (see
//!   [`Segment::write`]), so the kernel never reads a page of zeros back to merge into it.
//! - not warm: the blocks are reserved with `fallocate` and read as zeros until written; the
//!   writer pays for the first write to each block instead (extent conversion, page zeroing).
//!
//! On this machine (docs/PERFORMANCE.md) warm segments gave R3 ASYNC_FLUSH about 5% more
//! throughput and SYNC_FLUSH with one write in flight 0.73 against 0.89 ms p50, while reserved
//! ones gave SYNC_FLUSH under load about 18% more throughput (the zeros compete with the
//! fsyncs for the disk). Those figures predate the `O_DIRECT` fill and the page-cache window
//! (`pageCacheWindowCommitLog`), which changed what warm segments cost; not re-measured.
//!
//! Bytes are read through the map and written with `pwrite` (see [`Segment::write`] for why).
//! Memory safety: a [`Segment`] hands out slices of its map. The caller
//! ([`super::commit_log`]) guarantees that bytes are written only under its write lock and read
//! only under its read lock, so no byte is read while it is being written.

use std::fs::File;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::sync::Mutex;

use memmap2::MmapOptions;
use memmap2::MmapRaw;

use crate::error::DLedgerError;

/// The file name of the segment starting at `start`: 20 zero-padded digits, RocketMQ style.
pub(crate) fn segment_name(start: u64) -> String {
    format!("{start:020}")
}

/// Parses a segment file name back to its start position.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    if name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit()) {
        name.parse().ok()
    } else {
        None
    }
}

/// One segment file, mapped read-only (writes go through the file).
pub(crate) struct Segment {
    pub(crate) start: u64,
    pub(crate) path: PathBuf,
    map: MmapRaw,
    len: usize,
    file: File,
}

impl Segment {
    /// Maps an existing, complete segment file.
    pub(crate) fn open(path: &Path, start: u64, segment_bytes: u64) -> Result<Self, DLedgerError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| DLedgerError::io(path, e))?;
        let actual = file
            .metadata()
            .map_err(|e| DLedgerError::io(path, e))?
            .len();
        if actual != segment_bytes {
            return Err(DLedgerError::Corrupt {
                file: path.to_path_buf(),
                file_offset: 0,
                position: start,
                reason: format!("segment file is {actual} bytes, segment_bytes is {segment_bytes}"),
            });
        }
        let map = MmapOptions::new()
            .len(segment_bytes as usize)
            .map_raw_read_only(&file)
            .map_err(|e| DLedgerError::io(path, e))?;
        Ok(Segment {
            start,
            path: path.to_path_buf(),
            map,
            len: segment_bytes as usize,
            file,
        })
    }

    pub(crate) fn end(&self) -> u64 {
        self.start + self.len as u64
    }

    /// The bytes `[offset, offset + len)` of this segment.
    ///
    /// # Safety
    /// No other thread may write these bytes while the returned slice lives (the CommitLog
    /// read lock guarantees this).
    pub(crate) unsafe fn bytes(&self, offset: usize, len: usize) -> &[u8] {
        assert!(
            offset <= self.len && len <= self.len - offset,
            "read beyond segment"
        );
        // SAFETY: in bounds of a live map; the caller excludes concurrent writers.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(offset), len) }
    }

    /// Writes `data` into the segment at `offset` with `pwrite`, not through the map.
    ///
    /// Storing through the map would make every first store to a page since its last
    /// writeback a write fault (ext4's `page_mkwrite`), after which an msync or fdatasync
    /// measured 660-690 µs on this machine's disk against 140-150 µs after a `pwrite` of the
    /// same bytes (docs/PERFORMANCE.md); reads through the map see the bytes all the same, as
    /// both go through one page cache.
    ///
    /// # Safety
    /// No other thread may read these bytes concurrently (the CommitLog write lock
    /// guarantees this).
    pub(crate) unsafe fn write(&self, offset: usize, data: &[u8]) -> std::io::Result<()> {
        // SAFETY: as promised by the caller.
        unsafe { self.write_vectored(offset, &[data]) }
    }

    /// Writes the concatenation of `parts` at `offset`, with one `pwritev` where it fits
    /// (as [`Segment::write`]; the parts are never copied into one buffer first).
    ///
    /// # Safety
    /// As for [`Segment::write`].
    pub(crate) unsafe fn write_vectored(
        &self,
        offset: usize,
        parts: &[&[u8]],
    ) -> std::io::Result<()> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        assert!(
            offset <= self.len && len <= self.len - offset,
            "write beyond segment"
        );
        // Pad the write with zeros to the end of its last page (the segment holds zeros there
        // already), so the kernel never has to read a page of a pre-written segment from disk
        // to merge a partial write into it: the next write's first page is then in the page
        // cache whole.
        let end = offset + len;
        let pad = (end.next_multiple_of(PAGE) - end).min(self.len - end);
        write_all_vectored_at(&self.file, parts, &ZERO_PAGE[..pad], offset as u64)
    }

    /// Sets `[offset, offset + len)` to zero.
    ///
    /// # Safety
    /// As for [`Segment::write`].
    pub(crate) unsafe fn zero(&self, offset: usize, len: usize) -> std::io::Result<()> {
        assert!(
            offset <= self.len && len <= self.len - offset,
            "zero beyond segment"
        );
        write_zeros(&self.file, offset as u64, len as u64, 64 << 10)
    }

    /// Drops the page-cache pages of `[offset, offset + len)` (whole pages inside it), which must
    /// be flushed: this process's mappings of them first, then the kernel's cached copies.
    /// Only advice; the bytes read the same afterwards, from the disk.
    pub(crate) fn drop_cached(&self, offset: usize, len: usize) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let start = offset.next_multiple_of(PAGE);
        let end = (offset + len) / PAGE * PAGE;
        if end <= start {
            return Ok(());
        }
        // SAFETY: MADV_DONTNEED on a shared, read-only file mapping only unmaps the pages; the
        // next access maps them again from the file, so a reader holding a slice still reads
        // the same bytes.
        unsafe {
            self.map.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                start,
                end - start,
            )?
        };
        let at = |v: usize| libc::off_t::try_from(v).map_err(std::io::Error::other);
        // SAFETY: a valid, open file descriptor; no memory is passed.
        let rc = unsafe {
            libc::posix_fadvise(
                self.file.as_raw_fd(),
                at(start)?,
                at(end - start)?,
                libc::POSIX_FADV_DONTNEED,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::from_raw_os_error(rc))
        }
    }

    /// `msync(MS_SYNC)` of a byte range: returns once those bytes are on disk.
    pub(crate) fn flush(&self, offset: usize, len: usize) -> std::io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        self.map.flush_range(offset, len)
    }
}

/// Creates segment files with their blocks reserved, in the background ahead of need or on
/// demand.
pub(crate) struct SegmentAllocator {
    dir: PathBuf,
    segment_bytes: u64,
    /// Write zeros (true) or `fallocate` (false); see the module comment.
    warm: bool,
    /// Serializes creation so the writer never maps a file that is then replaced.
    create_lock: Mutex<()>,
    /// A snapshot install replaces every segment and starts a new generation (under the
    /// creation lock), so a pre-allocation asked for before it never creates a file in the
    /// new layout.
    generation: AtomicU64,
}

impl SegmentAllocator {
    pub(crate) fn new(dir: PathBuf, segment_bytes: u64, warm: bool) -> Arc<Self> {
        Arc::new(SegmentAllocator {
            dir,
            segment_bytes,
            warm,
            create_lock: Mutex::new(()),
            generation: AtomicU64::new(0),
        })
    }

    /// Makes sure the segment starting at `start` exists (creating it if needed) and returns its
    /// path.
    pub(crate) fn ensure(&self, start: u64) -> Result<PathBuf, DLedgerError> {
        let _guard = self.create_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.ensure_locked(start)
    }

    /// Creation is stopped, the current generation ended and a new one begun while the
    /// returned guard lives (see [`Self::ensure_locked`] to create segments meanwhile).
    pub(crate) fn new_generation(&self) -> std::sync::MutexGuard<'_, ()> {
        let guard = self.create_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        guard
    }

    /// [`Self::ensure`] for a caller that holds the creation lock.
    pub(crate) fn ensure_locked(&self, start: u64) -> Result<PathBuf, DLedgerError> {
        let path = self.dir.join(segment_name(start));
        if path.exists() {
            return Ok(path);
        }
        let tmp = self.dir.join(format!("{}.tmp", segment_name(start)));
        let io = |e| DLedgerError::io(&tmp, e);
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&tmp)
            .map_err(io)?;
        let reserved = !self.warm
            && reserve(&file, self.segment_bytes)
                .inspect_err(|e| {
                    tracing::debug!(error = %e, file = %tmp.display(), "fallocate refused; writing zeros instead")
                })
                .is_ok();
        if !reserved {
            write_zeros_direct(&tmp, self.segment_bytes)
                .inspect_err(|e| {
                    tracing::debug!(error = %e, file = %tmp.display(), "O_DIRECT refused; writing zeros through the page cache")
                })
                .or_else(|_| write_zeros(&file, 0, self.segment_bytes, 1 << 20))
                .map_err(io)?;
        }
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&tmp, &path).map_err(|e| DLedgerError::io(&path, e))?;
        sync_dir(&self.dir)?;
        tracing::debug!(file = %path.display(), segment_bytes = self.segment_bytes, "created segment");
        Ok(path)
    }

    /// The segment starting at `start`, mapped; created now if the background thread has not
    /// created it yet.
    pub(crate) fn segment(&self, start: u64) -> Result<Arc<Segment>, DLedgerError> {
        let path = self.ensure(start)?;
        Ok(Arc::new(Segment::open(&path, start, self.segment_bytes)?))
    }

    /// Starts the thread that creates requested segments ahead of the writer; it ends when
    /// the sender is dropped.
    pub(crate) fn spawn_preallocator(self: &Arc<Self>) -> mpsc::SyncSender<(u64, u64)> {
        let (tx, rx) = mpsc::sync_channel::<(u64, u64)>(2);
        let allocator = Arc::clone(self);
        std::thread::Builder::new()
            .name("dledger-prealloc".into())
            .spawn(move || {
                while let Ok((generation, start)) = rx.recv() {
                    let _guard = allocator.create_lock.lock().unwrap_or_else(|e| e.into_inner());
                    if allocator.generation() != generation {
                        continue;
                    }
                    if let Err(e) = allocator.ensure_locked(start) {
                        tracing::warn!(error = %e, start, "pre-allocating a segment failed; the writer will retry");
                    }
                }
            })
            .expect("spawn pre-allocation thread");
        tx
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current generation (what a pre-allocation request carries).
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// The page size assumed for alignment (`O_DIRECT` buffers and lengths, write padding).
pub(crate) const PAGE: usize = 4096;

static ZERO_PAGE: [u8; PAGE] = [0; PAGE];

/// The most iovecs one `pwritev` takes (Linux's `UIO_MAXIOV`).
const MAX_IOVECS: usize = 1024;

/// `pwritev` of `parts` and then `tail` at `offset`, repeated until every byte is written.
fn write_all_vectored_at(
    file: &File,
    parts: &[&[u8]],
    tail: &[u8],
    offset: u64,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let bufs = || parts.iter().copied().chain(std::iter::once(tail));
    let total: usize = bufs().map(|b| b.len()).sum();
    let mut iov = Vec::with_capacity((parts.len() + 1).min(MAX_IOVECS));
    let mut done = 0usize;
    while done < total {
        // The iovecs for the bytes not yet written.
        iov.clear();
        iov.extend(
            crate::parts::unwritten(bufs(), done)
                .take(MAX_IOVECS)
                .map(|buf| libc::iovec {
                    iov_base: buf.as_ptr() as *mut libc::c_void,
                    iov_len: buf.len(),
                }),
        );
        let at = libc::off_t::try_from(offset + done as u64).map_err(std::io::Error::other)?;
        // SAFETY: each iovec points into a live slice of `parts` or `tail` and is only read.
        let n =
            unsafe { libc::pwritev(file.as_raw_fd(), iov.as_ptr(), iov.len() as libc::c_int, at) };
        match n {
            n if n > 0 => done += n as usize,
            0 => return Err(std::io::ErrorKind::WriteZero.into()),
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

/// Writes zeros over `[offset, offset + len)` of `file`, `chunk` bytes per `pwrite`.
fn write_zeros(file: &File, offset: u64, len: u64, chunk: usize) -> std::io::Result<()> {
    let zeros = vec![0u8; (len as usize).min(chunk)];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], offset + done)?;
        done += n as u64;
    }
    Ok(())
}

/// Writes zeros over the first `len` bytes of the file at `path` with `O_DIRECT`, so the bytes
/// go from one page-aligned buffer to the disk without being copied into the page cache.
///
/// Through the page cache, filling a 1 GiB segment was half of a follower's CPU samples under
/// load (the kernel copying zeros into fresh pages); with `O_DIRECT` a 512 MiB fill measured
/// 0.03-0.04 s of CPU against 0.6-1.6 s (docs/PERFORMANCE.md). Fails (and the caller falls back
/// to [`write_zeros`]) where the file system refuses `O_DIRECT` or `len` is not a whole number
/// of pages.
fn write_zeros_direct(path: &Path, len: u64) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if len % PAGE as u64 != 0 {
        return Err(std::io::Error::other("not a whole number of pages"));
    }
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)?;
    // An anonymous map is page-aligned and reads as zeros, as O_DIRECT needs.
    let zeros = memmap2::MmapMut::map_anon((len as usize).min(1 << 20))?;
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], done)?;
        done += n as u64;
    }
    Ok(())
}

/// Reserves the blocks of a `len`-byte file without writing them (`fallocate`, mode 0): they
/// are taken from the disk now and read as zeros until written.
fn reserve(file: &File, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = libc::off_t::try_from(len).map_err(std::io::Error::other)?;
    // SAFETY: a valid, open file descriptor; no memory is passed.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// fsyncs a directory so that renames and deletions in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), DLedgerError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| DLedgerError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves segment names are 20 digits and parse back; other names are not segments.
    #[test]
    fn names() {
        assert_eq!(segment_name(0), "00000000000000000000");
        assert_eq!(segment_name(1 << 30), "00000000001073741824");
        assert_eq!(parse_segment_name("00000000001073741824"), Some(1 << 30));
        assert_eq!(parse_segment_name("00000000001073741824.tmp"), None);
        assert_eq!(parse_segment_name("abc"), None);
    }
}
