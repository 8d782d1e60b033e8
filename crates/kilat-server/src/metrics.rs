//! `/metrics` in the Prometheus text exposition format, written by hand: a handful of gauges and
//! counters read from the hub do not justify a metrics registry on the hot path.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::AppState;

/// Renders every metric as Prometheus text.
pub(crate) fn render(state: &AppState) -> String {
    let stats = state.node.stats();
    let open = state.max_connections - state.connections.available_permits();
    let mut out = String::with_capacity(1024);
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    metric(
        "kilat_connections",
        "gauge",
        "Open client connections (all transports).",
        open as u64,
    );
    metric(
        "kilat_connections_limit",
        "gauge",
        "Configured maximum of open connections.",
        state.max_connections as u64,
    );
    metric(
        "kilat_sessions",
        "gauge",
        "Sessions known to the hub.",
        stats.connections as u64,
    );
    metric(
        "kilat_subscriptions",
        "gauge",
        "Channel subscriptions held by local sessions.",
        stats.subscriptions as u64,
    );
    metric(
        "kilat_channels",
        "gauge",
        "Channels with at least one local subscriber.",
        stats.channels as u64,
    );
    metric(
        "kilat_publications_total",
        "counter",
        "Publications accepted by this node.",
        stats.publications,
    );
    metric(
        "kilat_deliveries_total",
        "counter",
        "Frames queued to subscribers by this node's fan-out.",
        stats.deliveries,
    );
    metric(
        "kilat_draining",
        "gauge",
        "1 while the server is shutting down.",
        u64::from(state.draining.load(Ordering::SeqCst)),
    );
    out
}
