//! Small disks for the `fill-disk` fault: each node's data directory on a tmpfs of its own
//! (mounted before the node first starts; needs root), which the fault fills with a file
//! and then frees. Every mount is undone (`umount -l`) when [`SmallDisks`] is dropped, after
//! the cluster (declare it first).
//!
//! Also what an OS crash leaves of a stopped node's CommitLog: a fixed tail lost
//! ([`lose_commit_log_tail`]) or exactly the writes no msync covered
//! ([`drop_unsynced_commit_log`]).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// Size of each node's tmpfs.
pub const DISK_BYTES: u64 = 512 << 20;

/// The file a fill writes into a node's data directory.
pub const FILLER: &str = "chaos-filler";

/// The tmpfs mounts of one run.
pub struct SmallDisks {
    mounts: Vec<PathBuf>,
}

impl SmallDisks {
    /// Mounts a tmpfs of [`DISK_BYTES`] at each of `paths` (created if missing). On the first
    /// failure, the ones already mounted are undone and the error says why.
    pub fn mount(paths: &[PathBuf]) -> anyhow::Result<SmallDisks> {
        let mut disks = SmallDisks { mounts: Vec::new() };
        for path in paths {
            std::fs::create_dir_all(path).with_context(|| format!("create {}", path.display()))?;
            let out = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={DISK_BYTES}"), "tmpfs"])
                .arg(path)
                .output()
                .context("run mount")?;
            if !out.status.success() {
                bail!(
                    "mount a tmpfs at {}: {}",
                    path.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            disks.mounts.push(path.clone());
        }
        Ok(disks)
    }

    /// Whether `path` is one of the mounted disks.
    pub fn holds(&self, path: &Path) -> bool {
        self.mounts.iter().any(|m| m == path)
    }

    /// Takes every free byte of the disk at `path` with one written file; returns it. (The
    /// node's preallocated CommitLog segment and RocksDB log still take writes: it runs
    /// out of space at its next new page of a ConsumeQueue, index or RocksDB file.)
    pub fn fill(&self, path: &Path) -> anyhow::Result<PathBuf> {
        use std::os::unix::fs::FileExt;
        let filler = path.join(FILLER);
        let len = available_bytes(path)?;
        let file = std::fs::File::create(&filler)
            .with_context(|| format!("create {}", filler.display()))?;
        let chunk = vec![0xA5u8; 1 << 20];
        let mut done = 0u64;
        while done < len {
            let n = chunk.len().min((len - done) as usize);
            // The node may take space meanwhile: a short fill is still a full disk.
            // (ENOSPC ends the fill.)
            if file.write_all_at(&chunk[..n], done).is_err() {
                break;
            }
            done += n as u64;
        }
        Ok(filler)
    }
}

/// Bytes available on `path`'s filesystem.
pub fn available_bytes(path: &Path) -> anyhow::Result<u64> {
    broker::disk::available_bytes(path).with_context(|| format!("statvfs {}", path.display()))
}

impl Drop for SmallDisks {
    fn drop(&mut self) {
        for path in &self.mounts {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(path)
                .status();
        }
    }
}

/// Zeroes the last `bytes` written of the newest CommitLog segment holding data under
/// `store` (a node's `storePathRootDir`), as an OS crash that lost those unsynced pages
/// leaves it; the node must be stopped. Returns the segment and its written end before, or
/// `None` when no segment holds data. Blocks: a caller on a runtime runs it on a blocking
/// thread.
pub fn lose_commit_log_tail(store: &Path, bytes: u64) -> anyhow::Result<Option<(PathBuf, u64)>> {
    use std::os::unix::fs::FileExt;
    let dir = store.join("commitlog");
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.len() == 20))
        .collect();
    segments.sort();
    // The next segment may be preallocated, all zeros.
    for path in segments.iter().rev() {
        let Some(end) = written_end(path)? else {
            continue;
        };
        let from = end.saturating_sub(bytes);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .with_context(|| format!("open {}", path.display()))?;
        file.write_all_at(&vec![0u8; (end - from) as usize], from)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("zero the tail of {}", path.display()))?;
        return Ok(Some((path.clone(), end)));
    }
    Ok(None)
}

/// End of the data in a CommitLog segment (entries from its start, zeros after them): the
/// end of the last non-zero byte before the first all-zero 64 KiB chunk. Entries hold no
/// zero run that long (page padding is under 4 KiB; the workload's bodies are short).
fn written_end(path: &Path) -> anyhow::Result<Option<u64>> {
    use std::os::unix::fs::FileExt;
    const CHUNK: usize = 64 << 10;
    let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut buf = vec![0u8; CHUNK];
    let mut at = 0u64;
    let mut end = None;
    loop {
        let n = file
            .read_at(&mut buf, at)
            .with_context(|| format!("read {}", path.display()))?;
        match buf[..n].iter().rposition(|b| *b != 0) {
            Some(last) if n > 0 => end = Some(at + last as u64 + 1),
            _ => return Ok(end),
        }
        at += n as u64;
    }
}

/// The file a node started with `testRecordFlushedPosition=true` keeps in its CommitLog
/// directory: the position below which every byte has been msync'd.
pub const FLUSHED_RECORD: &str = ".test-flushed";

/// Drops exactly the CommitLog writes of the (stopped) node at `store` that no msync
/// covered, as an OS crash that lost every unsynced page would: reads the position its
/// `.test-flushed` record names (the node must have run with `testRecordFlushedPosition=true`)
/// and zeroes every byte from there on ([`zero_commit_log_from`]). Returns (that position,
/// bytes of data dropped). Blocks: a caller on a runtime runs it on a blocking thread.
///
/// The record never runs ahead of msync (it is replaced after an msync returns and before
/// its result is reported), so this drops at least what a real crash could.
pub fn drop_unsynced_commit_log(store: &Path) -> anyhow::Result<(u64, u64)> {
    let record = store.join("commitlog").join(FLUSHED_RECORD);
    let text = std::fs::read_to_string(&record).with_context(|| {
        format!(
            "read {} (was the node started with testRecordFlushedPosition=true?)",
            record.display()
        )
    })?;
    let position: u64 = text
        .trim()
        .parse()
        .with_context(|| format!("{}: {text:?} is not a position", record.display()))?;
    Ok((position, zero_commit_log_from(store, position)?))
}

/// Zeroes every CommitLog byte at or past `position` under `store` (the node must be
/// stopped): the segment holding `position` from there to its end (writing only up to its
/// last non-zero byte: the rest is zero already), and deletes every later segment file.
/// Returns how many bytes of data (up to the last non-zero byte) were dropped.
///
/// Why zeroes: an OS crash leaves an unsynced page as the disk last had it, and the disk
/// only ever had zeros where the CommitLog writes after its last msync. A segment file is
/// created full of zeros (or its blocks reserved with `fallocate`, which read as zeros),
/// fsync'd and its directory entry synced before any entry goes into it, and each byte is
/// written once after that; a truncation zeroes and msyncs the bytes it removes before
/// they can be written again. A later segment's file itself survives such a crash, all
/// zeros: deleting it leaves the node what recovery makes of a trailing all-zero segment
/// (nothing), and the node creates it again when it gets there.
pub fn zero_commit_log_from(store: &Path, position: u64) -> anyhow::Result<u64> {
    use std::os::unix::fs::FileExt;
    let dir = store.join("commitlog");
    let mut dropped = 0;
    for (start, path) in commit_log_segments(&dir)? {
        let len = std::fs::metadata(&path)
            .with_context(|| format!("stat {}", path.display()))?
            .len();
        if start + len <= position {
            continue;
        }
        let from = position.saturating_sub(start);
        let data_end = last_non_zero_end(&path, from)?;
        dropped += data_end.saturating_sub(from);
        if start <= position {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .with_context(|| format!("open {}", path.display()))?;
            let zeros = vec![0u8; 1 << 20];
            let mut at = from;
            while at < data_end {
                let n = (zeros.len() as u64).min(data_end - at) as usize;
                file.write_all_at(&zeros[..n], at)
                    .with_context(|| format!("zero {} at {at}", path.display()))?;
                at += n as u64;
            }
            file.sync_all()
                .with_context(|| format!("fsync {}", path.display()))?;
        } else {
            std::fs::remove_file(&path).with_context(|| format!("delete {}", path.display()))?;
        }
    }
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("fsync {}", dir.display()))?;
    Ok(dropped)
}

/// (start position, path) of every CommitLog segment file in `dir`, ascending.
fn commit_log_segments(dir: &Path) -> anyhow::Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    for item in std::fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))? {
        let path = item
            .with_context(|| format!("list {}", dir.display()))?
            .path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit()) {
            segments.push((name.parse()?, path));
        }
    }
    segments.sort();
    Ok(segments)
}

/// The offset just past the last non-zero byte of the file at or after `from` (`from` if
/// there is none): the whole rest of the file is read, no zero run is taken for its end.
fn last_non_zero_end(path: &Path, from: u64) -> anyhow::Result<u64> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = from;
    let mut end = from;
    loop {
        let n = file
            .read_at(&mut buf, at)
            .with_context(|| format!("read {}", path.display()))?;
        if n == 0 {
            return Ok(end);
        }
        if let Some(last) = buf[..n].iter().rposition(|b| *b != 0) {
            end = at + last as u64 + 1;
        }
        at += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the unsynced drop zeroes from the recorded position to the end of its segment,
    // deletes later segments, keeps every byte below, and counts the data it dropped.
    #[test]
    fn drops_every_byte_at_or_past_the_recorded_position() {
        let store = tempfile::tempdir().unwrap();
        let dir = store.path().join("commitlog");
        std::fs::create_dir_all(&dir).unwrap();
        let segment = |start: u64| dir.join(format!("{start:020}"));
        let mut first = vec![7u8; 40_000];
        first.resize(65_536, 0);
        std::fs::write(segment(0), &first).unwrap();
        let mut second = vec![9u8; 1_000];
        second.resize(65_536, 0);
        std::fs::write(segment(65_536), &second).unwrap();
        std::fs::write(dir.join(FLUSHED_RECORD), "30000\n").unwrap();

        let (from, dropped) = drop_unsynced_commit_log(store.path()).unwrap();
        assert_eq!((from, dropped), (30_000, 10_000 + 1_000));
        let kept = std::fs::read(segment(0)).unwrap();
        assert_eq!(kept.len(), 65_536);
        assert!(kept[..30_000].iter().all(|b| *b == 7));
        assert!(kept[30_000..].iter().all(|b| *b == 0));
        assert!(!segment(65_536).exists());
    }
}
