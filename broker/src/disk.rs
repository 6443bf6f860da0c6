//! How full the store's filesystem is, and whether sends are refused because of it.
//!
//! Owns [`DiskUsage`]: the used ratio of the filesystem holding `storePathRootDir`, read
//! with `statvfs` by a task once a second (never on the send path: a send reads a cached
//! figure), and the "disk full" flag derived from it. Promises: while the used ratio is
//! above `diskSpaceWarningLevelRatio`, sends are refused with SERVICE_NOT_AVAILABLE and a
//! remark saying the disk is full (RocketMQ 4.9.8's answer); the first refresh below the
//! ratio accepts them again, with no operator step. Nothing already acknowledged is ever
//! touched: only new appends from clients are refused (the log's own entries, offset
//! commits and deliveries of messages already stored go on).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tracing::{error, info, warn};

/// Where the used ratio comes from: the real filesystem, or a figure a test sets.
pub trait UsageSource: Send + Sync + 'static {
    /// The used share of the filesystem, in percent (0.0..=100.0).
    fn used_percent(&self) -> std::io::Result<f64>;
}

/// `statvfs` of a path, read as `df` prints Use%: used / (used + available to this
/// process), where used = blocks - free. Blocks reserved for root (or held back by the
/// filesystem) count neither way: RocketMQ's `getDiskPartitionSpaceUsedPercent` counts them
/// as free, so a broker could see 20% while `df` shows 60% and writes fail at 100% of
/// what is available; counting them as used instead made this machine's disk (161 GiB held
/// back of 252) read 85% with 38 GiB free.
pub struct StatVfs(PathBuf);

impl StatVfs {
    pub fn new(path: &Path) -> Self {
        StatVfs(path.to_path_buf())
    }
}

impl UsageSource for StatVfs {
    fn used_percent(&self) -> std::io::Result<f64> {
        let stat = statvfs(&self.0)?;
        let used = stat.f_blocks.saturating_sub(stat.f_bfree) as f64;
        let usable = used + stat.f_bavail as f64;
        if usable <= 0.0 {
            return Ok(0.0);
        }
        Ok((used / usable * 100.0).clamp(0.0, 100.0))
    }
}

/// Bytes of `path`'s filesystem available to this process (`statvfs`'s `f_bavail`).
pub fn available_bytes(path: &Path) -> std::io::Result<u64> {
    let stat = statvfs(path)?;
    Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// Total bytes of `path`'s filesystem and the bytes available to this process, as
/// RocketMQ's `commitLogDirCapacity` shows them (`File.getTotalSpace`, `getUsableSpace`).
pub fn capacity(path: &Path) -> std::io::Result<(u64, u64)> {
    let stat = statvfs(path)?;
    let block = stat.f_frsize as u64;
    Ok((stat.f_blocks as u64 * block, stat.f_bavail as u64 * block))
}

fn statvfs(path: &Path) -> std::io::Result<libc::statvfs> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `path` is a valid C string and `stat` a plain struct statvfs fills in.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stat)
}

/// The cached used ratio and the disk-full flag of one broker node.
pub struct DiskUsage {
    source: Box<dyn UsageSource>,
    /// The last figure read, as `f64` bits.
    used_bits: AtomicU64,
    full: AtomicBool,
    /// `diskSpaceWarningLevelRatio` (%).
    warning_ratio: f64,
}

impl DiskUsage {
    /// Reads `source` once at once, so the first send already sees a real figure.
    pub fn new(source: Box<dyn UsageSource>, warning_ratio: u32) -> Self {
        let usage = DiskUsage {
            source,
            used_bits: AtomicU64::new(0f64.to_bits()),
            full: AtomicBool::new(false),
            warning_ratio: f64::from(warning_ratio),
        };
        usage.refresh();
        usage
    }

    /// Reads the source again and updates the flag; returns the used ratio (%). A failed
    /// read keeps the previous figure.
    pub fn refresh(&self) -> f64 {
        let used = match self.source.used_percent() {
            Ok(used) => used,
            Err(e) => {
                warn!(error = %e, "cannot read the store's disk usage; keeping the last figure");
                return self.used_percent();
            }
        };
        self.used_bits.store(used.to_bits(), Ordering::Release);
        // RocketMQ marks the disk full strictly above the ratio.
        let full = used > self.warning_ratio;
        if self.full.swap(full, Ordering::AcqRel) != full {
            if full {
                error!(
                    used_percent = used,
                    warning_ratio = self.warning_ratio,
                    "disk nearly full: refusing sends until space is freed"
                );
            } else {
                info!(used_percent = used, "disk space OK again: accepting sends");
            }
        }
        used
    }

    /// The used ratio (%) as last read.
    pub fn used_percent(&self) -> f64 {
        f64::from_bits(self.used_bits.load(Ordering::Acquire))
    }

    /// Whether sends are refused now.
    pub fn is_full(&self) -> bool {
        self.full.load(Ordering::Acquire)
    }

    /// The remark a refused send gets: RocketMQ 4.9.8's SERVICE_NOT_AVAILABLE text, with
    /// the figures.
    pub fn full_remark(&self) -> String {
        format!(
            "service not available now. It may be caused by one of the following reasons: \
             the broker's disk is full [{:.1}% used, diskSpaceWarningLevelRatio {}%], messages \
             are put to the slave, message store has been shut down, etc.",
            self.used_percent(),
            self.warning_ratio
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Arc;

    /// A usage figure a test sets.
    #[derive(Clone, Default)]
    pub(crate) struct FakeUsage(pub Arc<AtomicU64>);

    impl FakeUsage {
        pub(crate) fn set(&self, percent: f64) {
            self.0.store(percent.to_bits(), Ordering::Release);
        }
    }

    impl UsageSource for FakeUsage {
        fn used_percent(&self) -> std::io::Result<f64> {
            Ok(f64::from_bits(self.0.load(Ordering::Acquire)))
        }
    }

    /// Above the warning ratio sends are refused, and accepted again by themselves at the
    /// first refresh below it; between refreshes the cached figure is what counts.
    #[test]
    fn full_above_the_warning_ratio_and_ok_again_below_it() {
        let fake = FakeUsage::default();
        fake.set(50.0);
        let usage = DiskUsage::new(Box::new(fake.clone()), 90);
        assert!(!usage.is_full());
        fake.set(90.0);
        usage.refresh();
        assert!(
            !usage.is_full(),
            "at exactly the ratio RocketMQ still writes"
        );
        fake.set(93.5);
        assert!(!usage.is_full(), "only a refresh reads the source");
        usage.refresh();
        assert!(usage.is_full());
        assert!(usage.full_remark().contains("disk is full [93.5% used"));
        fake.set(70.0);
        assert_eq!(usage.refresh(), 70.0);
        assert!(!usage.is_full());
    }

    #[test]
    fn statvfs_reads_a_real_path() {
        let dir = tempfile::tempdir().unwrap();
        let used = StatVfs::new(dir.path()).used_percent().unwrap();
        assert!((0.0..=100.0).contains(&used), "{used}");
        assert!(StatVfs::new(Path::new("/no/such/dir"))
            .used_percent()
            .is_err());
    }
}
