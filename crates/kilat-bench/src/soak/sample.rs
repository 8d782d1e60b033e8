//! Sampling the server (RSS and open files from /proc, gauges from /metrics) and the trend of
//! each sampled quantity after the warm-up.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::stats;

/// The sampled quantities, in column order: (name, Prometheus gauge it comes from, if any).
pub(super) const SERIES: &[(&str, Option<&str>)] = &[
    ("rss_kib", None),
    ("open_fds", None),
    ("connections", Some("kilat_connections")),
    ("sessions", Some("kilat_sessions")),
    ("subscriptions", Some("kilat_subscriptions")),
    ("channels", Some("kilat_channels")),
    ("presence_entries", None),
    ("runtime_tasks", Some("kilat_runtime_alive_tasks")),
    ("background_tasks", Some("kilat_background_tasks")),
    ("queued_bytes", Some("kilat_queued_bytes")),
];

/// One sample: seconds since the start and a value per [`SERIES`] entry (`None` when the
/// source is missing: no --pid, or an older server without the gauge).
#[derive(Debug, Clone, Serialize)]
pub(super) struct Sample {
    pub(super) t_s: f64,
    pub(super) values: Vec<Option<f64>>,
}

/// Open file descriptors of `pid`.
fn open_fds(pid: u32) -> Result<u64> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("reading /proc/{pid}/fd (is the server's PID right?)"))?;
    Ok(dir.count() as u64)
}

/// `GET path` over plain HTTP/1.1 (`Connection: close`), the body as text.
pub(super) async fn http_get(addr: &str, path: &str) -> Result<String> {
    let work = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        let text = String::from_utf8_lossy(&out).into_owned();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            bail!("no HTTP response from {addr}{path}");
        };
        if !head.starts_with("HTTP/1.1 200") {
            bail!("GET {path}: {}", head.lines().next().unwrap_or_default());
        }
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            return Ok(dechunk(body));
        }
        Ok(body.to_owned())
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .map_err(|_| anyhow::anyhow!("GET {path} took more than 10 s"))?
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The unlabelled gauges of a Prometheus text page.
pub(super) fn gauges(page: &str) -> BTreeMap<String, f64> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.contains('{'))
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_owned(), v.trim().parse().ok()?))
        })
        .collect()
}

/// Takes one sample; `presence` is the sum of presence_stats over the soak's channels.
pub(super) async fn take(
    t_s: f64,
    pid: Option<u32>,
    addr: &str,
    presence: Option<f64>,
) -> Result<Sample> {
    let page = http_get(addr, "/metrics").await?;
    let g = gauges(&page);
    let values = SERIES
        .iter()
        .map(|(name, gauge)| match (*name, gauge) {
            ("rss_kib", _) => pid.and_then(|p| stats::rss_kib(p).ok()).map(|v| v as f64),
            ("open_fds", _) => pid.and_then(|p| open_fds(p).ok()).map(|v| v as f64),
            ("presence_entries", _) => presence,
            (_, Some(gauge)) => g.get(*gauge).copied(),
            _ => None,
        })
        .collect();
    Ok(Sample { t_s, values })
}

/// The trend of one quantity over the warm samples.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Trend {
    pub(super) name: &'static str,
    pub(super) samples: usize,
    pub(super) first: f64,
    pub(super) last: f64,
    pub(super) mean: f64,
    pub(super) min: f64,
    pub(super) max: f64,
    /// Least-squares slope in units per hour.
    pub(super) slope_per_hour: f64,
    /// The slope as a percentage of the mean per hour (0 for a quantity that is always 0).
    pub(super) pct_per_hour: f64,
    /// The slope divided by its standard error: how clearly it differs from noise around a
    /// flat line (|t| below about 3 is not a trend).
    pub(super) t: f64,
}

impl Trend {
    /// Grows faster than `limit` % per hour, clearly above the noise.
    pub(super) fn grows(&self, limit: f64) -> bool {
        self.pct_per_hour > limit && self.t >= 3.0
    }
}

/// Slope, mean and the slope's t statistic (slope / standard error; infinite for a perfect
/// line, 0 for a flat one).
fn fit(points: &[(f64, f64)]) -> (f64, f64, f64) {
    let n = points.len() as f64;
    if points.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let mt = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mv = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mt).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mt) * (p.1 - mv)).sum();
    if sxx <= 0.0 {
        return (0.0, mv, 0.0);
    }
    let slope = sxy / sxx;
    if points.len() < 3 {
        return (slope, mv, 0.0);
    }
    let residual: f64 = points
        .iter()
        .map(|p| (p.1 - mv - slope * (p.0 - mt)).powi(2))
        .sum();
    let se = (residual / (n - 2.0) / sxx).sqrt();
    let t = if se > 0.0 {
        slope / se
    } else if slope != 0.0 {
        f64::INFINITY.copysign(slope)
    } else {
        0.0
    };
    (slope, mv, t)
}

/// The trend of every series that has values after `warmup` seconds.
pub(super) fn trends(samples: &[Sample], warmup: f64) -> Vec<Trend> {
    let warm: Vec<&Sample> = samples.iter().filter(|s| s.t_s >= warmup).collect();
    let mut out = Vec::new();
    for (k, (name, _)) in SERIES.iter().enumerate() {
        let points: Vec<(f64, f64)> = warm
            .iter()
            .filter_map(|s| s.values[k].map(|v| (s.t_s, v)))
            .collect();
        if points.len() < 2 {
            continue;
        }
        let (slope, mean, t) = fit(&points);
        let pct = if mean.abs() > f64::EPSILON {
            slope * 3600.0 / mean * 100.0
        } else if slope.abs() > f64::EPSILON {
            f64::INFINITY
        } else {
            0.0
        };
        out.push(Trend {
            name,
            samples: points.len(),
            first: points[0].1,
            last: points[points.len() - 1].1,
            mean,
            min: points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min),
            max: points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max),
            slope_per_hour: slope * 3600.0,
            pct_per_hour: pct,
            t,
        });
    }
    out
}

/// The samples as CSV (header: t_s and the series names; empty cells for missing values).
pub(super) fn csv(samples: &[Sample]) -> String {
    let mut out = String::from("t_s");
    for (name, _) in SERIES {
        out.push(',');
        out.push_str(name);
    }
    out.push('\n');
    for s in samples {
        out.push_str(&format!("{:.1}", s.t_s));
        for v in &s.values {
            out.push(',');
            if let Some(v) = v {
                out.push_str(&format!("{v}"));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line_and_of_a_flat_series() {
        let line: Vec<(f64, f64)> = (0..10)
            .map(|i| (i as f64, 100.0 + 2.0 * i as f64))
            .collect();
        let (slope, mean, _) = fit(&line);
        assert!((slope - 2.0).abs() < 1e-9);
        assert!((mean - 109.0).abs() < 1e-9);
        let flat: Vec<(f64, f64)> = (0..10)
            .map(|i| (i as f64, if i % 2 == 0 { 99.0 } else { 101.0 }))
            .collect();
        assert!(fit(&flat).0.abs() < 0.1);
    }

    #[test]
    fn trends_leave_out_the_warmup_and_scale_to_percent_per_hour() {
        // RSS grows fast during a 10 s warm-up, then by 1 KiB/s on a mean of 36,000 KiB:
        // 3,600 KiB per hour, 10 % per hour.
        let samples: Vec<Sample> = (0..=40)
            .map(|t| {
                let t = t as f64;
                let rss = if t < 10.0 {
                    t * 1000.0
                } else {
                    36_000.0 + (t - 25.0)
                };
                let mut values = vec![None; SERIES.len()];
                values[0] = Some(rss);
                values[2] = Some(0.0);
                Sample { t_s: t, values }
            })
            .collect();
        let t = trends(&samples, 10.0);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].name, "rss_kib");
        assert_eq!(t[0].samples, 31);
        assert!((t[0].pct_per_hour - 10.0).abs() < 1e-6, "{t:?}");
        assert!(t[0].grows(5.0) && !t[0].grows(20.0));
        assert_eq!(t[1].pct_per_hour, 0.0);
        assert!(!t[1].grows(0.0));
    }

    #[test]
    fn noise_around_a_flat_line_is_not_growth() {
        // Tasks jumping between 2 and 12 with no trend: a steep slope by chance over a short
        // window, but not distinguishable from the noise.
        let values = [2.0, 12.0, 5.0, 9.0, 3.0, 11.0, 4.0, 12.0, 6.0, 10.0];
        let samples: Vec<Sample> = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let mut values = vec![None; SERIES.len()];
                values[8] = Some(*v);
                Sample {
                    t_s: i as f64,
                    values,
                }
            })
            .collect();
        let t = &trends(&samples, 0.0)[0];
        assert!(t.pct_per_hour > 1000.0, "{t:?}");
        assert!(!t.grows(50.0), "{t:?}");
    }

    #[test]
    fn gauges_are_read_from_prometheus_text() {
        let page = "# HELP kilat_sessions x\nkilat_sessions 12\nkilat_x{a=\"b\"} 3\nkilat_uptime_seconds 4.5\n";
        let g = gauges(page);
        assert_eq!(g.get("kilat_sessions"), Some(&12.0));
        assert_eq!(g.get("kilat_uptime_seconds"), Some(&4.5));
        assert!(!g.contains_key("kilat_x"));
    }
}
