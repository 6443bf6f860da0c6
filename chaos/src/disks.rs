//! Small disks for the `fill-disk` fault: each node's data directory on a tmpfs of its own
//! (mounted before the node first starts; needs root), which the fault fills with a file
//! and then frees. Every mount is undone (`umount -l`) when [`SmallDisks`] is dropped, after
//! the cluster (declare it first).

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
