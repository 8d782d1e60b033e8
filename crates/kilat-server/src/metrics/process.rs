//! Process and host figures on `/metrics`, read from Linux `/proc` at scrape time: this
//! process's resident memory, CPU seconds, open file descriptors and start time under the
//! Prometheus client conventions' `process_*` names, and the host's load averages and memory
//! as `kilat_host_*` (not `node_*`, so they never collide with a node_exporter on the same
//! Prometheus).
//!
//! Why `procfs` (default features off: it then needs only `rustix`, already in the tree,
//! `bitflags` and `hex`): it parses `/proc/self/stat`, `/proc/loadavg` and `/proc/meminfo`
//! with the kernel's units (pages, clock ticks, kB) turned into bytes and seconds, is well kept
//! and tested against many kernels. `sysinfo` refreshes whole process tables and spawns work
//! we do not need for five numbers. This runs once per scrape, far from the delivery path.
//!
//! On other systems, or when `/proc` is unreadable (a hardened container), the series are
//! left out rather than reported as zero: an absent series is honest, a zero is a false
//! reading that an alert would trust.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// One reading of the process and host figures. Each is `None` when it could not be read.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Figures {
    /// Resident set size of this process, in bytes.
    pub(crate) rss_bytes: Option<u64>,
    /// Virtual memory size of this process, in bytes.
    pub(crate) virtual_bytes: Option<u64>,
    /// User plus system CPU time of this process, in seconds.
    pub(crate) cpu_seconds: Option<f64>,
    /// Open file descriptors (sockets included) of this process.
    pub(crate) open_fds: Option<u64>,
    /// The process's start, in seconds since the Unix epoch.
    pub(crate) start_time_seconds: Option<f64>,
    /// The host's 1, 5 and 15 minute load averages.
    pub(crate) load: Option<[f64; 3]>,
    /// The host's memory: total and available (free plus reclaimable), in bytes.
    pub(crate) memory: Option<(u64, u64)>,
    /// CPUs online on the host (to read the load against).
    pub(crate) cpus: Option<u64>,
}

impl Figures {
    /// Reads the figures now.
    #[cfg(target_os = "linux")]
    pub(crate) fn read() -> Self {
        use procfs::Current;

        let mut figures = Figures::default();
        if let Ok(stat) = procfs::process::Process::myself().and_then(|p| {
            let fds = p.fd_count().ok();
            p.stat().map(|s| (s, fds))
        }) {
            let (stat, fds) = stat;
            let ticks = procfs::ticks_per_second().max(1) as f64;
            figures.rss_bytes = Some(stat.rss.saturating_mul(procfs::page_size()));
            figures.virtual_bytes = Some(stat.vsize);
            figures.cpu_seconds = Some((stat.utime + stat.stime) as f64 / ticks);
            figures.open_fds = fds.map(|n| n as u64);
            if let Ok(boot) = procfs::boot_time_secs() {
                figures.start_time_seconds = Some(boot as f64 + stat.starttime as f64 / ticks);
            }
        }
        if let Ok(load) = procfs::LoadAverage::current() {
            figures.load = Some([
                f64::from(load.one),
                f64::from(load.five),
                f64::from(load.fifteen),
            ]);
        }
        if let Ok(mem) = procfs::Meminfo::current() {
            // Kernels before 3.14 have no MemAvailable: free + buffers + cache is close.
            let available = mem
                .mem_available
                .unwrap_or(mem.mem_free + mem.buffers + mem.cached);
            figures.memory = Some((mem.mem_total, available));
        }
        figures.cpus = std::thread::available_parallelism()
            .ok()
            .map(|n| n.get() as u64);
        figures
    }

    /// Reads the figures now: nothing outside Linux.
    #[cfg(not(target_os = "linux"))]
    pub(crate) fn read() -> Self {
        Figures {
            cpus: std::thread::available_parallelism()
                .ok()
                .map(|n| n.get() as u64),
            ..Figures::default()
        }
    }
}

/// The scrape-time collector of [`Figures`].
#[derive(Debug, Default)]
pub(crate) struct ProcessCollector;

fn gauge<T>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: T,
) -> std::fmt::Result
where
    ConstGauge<T>: EncodeMetric,
{
    let metric = ConstGauge::new(value);
    metric.encode(e.encode_descriptor(name, help, unit, metric.metric_type())?)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let f = Figures::read();
        let e = &mut encoder;
        let bytes = Some(&Unit::Bytes);
        let seconds = Some(&Unit::Seconds);
        if let Some(rss) = f.rss_bytes {
            gauge(
                e,
                "process_resident_memory",
                "Resident memory of the kilat process.",
                bytes,
                clamp(rss),
            )?;
        }
        if let Some(v) = f.virtual_bytes {
            gauge(
                e,
                "process_virtual_memory",
                "Virtual memory of the kilat process.",
                bytes,
                clamp(v),
            )?;
        }
        if let Some(cpu) = f.cpu_seconds {
            let metric = ConstCounter::new(cpu);
            metric.encode(e.encode_descriptor(
                "process_cpu",
                "User and system CPU time of the kilat process.",
                seconds,
                metric.metric_type(),
            )?)?;
        }
        if let Some(fds) = f.open_fds {
            gauge(
                e,
                "process_open_fds",
                "Open file descriptors of the kilat process (sockets included).",
                None,
                clamp(fds),
            )?;
        }
        if let Some(start) = f.start_time_seconds {
            gauge(
                e,
                "process_start_time",
                "Start of the kilat process since the Unix epoch.",
                seconds,
                start,
            )?;
        }
        if let Some([one, five, fifteen]) = f.load {
            gauge(
                e,
                "kilat_host_load1",
                "The host's 1-minute load average.",
                None,
                one,
            )?;
            gauge(
                e,
                "kilat_host_load5",
                "The host's 5-minute load average.",
                None,
                five,
            )?;
            gauge(
                e,
                "kilat_host_load15",
                "The host's 15-minute load average.",
                None,
                fifteen,
            )?;
        }
        if let Some((total, available)) = f.memory {
            gauge(
                e,
                "kilat_host_memory_total",
                "The host's usable memory.",
                bytes,
                clamp(total),
            )?;
            gauge(
                e,
                "kilat_host_memory_available",
                "The host's memory available to new work without swapping (MemAvailable).",
                bytes,
                clamp(available),
            )?;
        }
        if let Some(cpus) = f.cpus {
            gauge(
                e,
                "kilat_host_cpus",
                "CPUs this process may run on (read the load averages against it).",
                None,
                clamp(cpus),
            )?;
        }
        Ok(())
    }
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_and_the_host() {
        let before = Figures::read();
        // Real work between two readings: CPU time must grow, memory must be held.
        let block = vec![1u8; 64 << 20];
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = x
                .wrapping_mul(31)
                .wrapping_add(i ^ u64::from(block[(i as usize) % block.len()]));
        }
        std::hint::black_box(x);
        let after = Figures::read();
        let rss = after.rss_bytes.expect("rss read from /proc/self/stat");
        assert!(rss >= 64 << 20, "64 MiB touched, rss {rss}");
        assert!(
            after.cpu_seconds.unwrap() > before.cpu_seconds.unwrap(),
            "{after:?} after {before:?}"
        );
        let (total, available) = after.memory.expect("meminfo");
        assert!(total > 0 && available <= total, "{total} {available}");
        let load = after.load.expect("loadavg");
        assert!(load.iter().all(|l| l.is_finite() && *l >= 0.0), "{load:?}");
        let start = after.start_time_seconds.expect("start time");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            start <= now + 1.0 && start > now - 86_400.0,
            "{start} vs {now}"
        );
        assert!(after.open_fds.unwrap() >= 3);
        drop(block);
    }
}
