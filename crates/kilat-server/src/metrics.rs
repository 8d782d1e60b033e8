//! `/metrics` in the Prometheus text format, through `prometheus-client`.
//!
//! Why `prometheus-client` (the Prometheus project's own Rust client) over `metrics` +
//! `metrics-exporter-prometheus`: it has no global recorder (the registry lives in
//! [`Metrics`], so tests run servers side by side in one process), label sets are typed (a
//! label can only take the bounded values its type allows: transports, namespaces from the
//! configuration, methods, codes), and a [`Collector`] reads the hub's own counters at scrape
//! time, so the existing counters cost nothing more. The exporter of `metrics` keeps every
//! histogram sample in a lock-free bucket until the next scrape: memory that grows with the
//! delivery rate between scrapes. Its one drawback for us, a mutex inside each histogram, is
//! kept off the per-delivery path: histograms are observed per command, per publication or per
//! engine/proxy call; the publish-to-write latency is sampled (one socket write in
//! [`LATENCY_SAMPLE`] of those that carry a publication).
//!
//! Cardinality is bounded by construction: namespaces come from the configuration (channels of
//! any other namespace count under `default`), transports from a fixed list, codes from the
//! protocol's ranges ([`code_label`]). Channel names and users never become labels.
//!
//! `server.detailed_metrics = false` leaves only the scrape-time gauges and counters: no observer in the
//! hub, no engine or proxy wrappers (the build that `docs/benchmarks.md` compares against).

mod instrument;
mod process;

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kilat_core::{Node, Observer};
use kilat_protocol::Method;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tokio::sync::Semaphore;

pub(crate) use instrument::{InstrumentedBackend, InstrumentedBroker, InstrumentedPresence};

/// One socket write in this many (of those carrying a stamped publication) is timed for
/// `kilat_delivery_latency_seconds`, per worker thread: the histogram's mutex stays off the
/// per-delivery path.
pub(crate) const LATENCY_SAMPLE: u32 = 16;

/// Transports with their own series; anything else counts as `other`.
const TRANSPORTS: &[&str] = &["websocket", "sse", "http_stream", "other"];

/// The label of a client-facing code: protocol codes (WebSocket 1000-1015, kilat's 3000-3999)
/// as themselves, application codes (4000-4999, chosen by a backend) as `4xxx`, anything else
/// as `other`, so a backend cannot grow the series without bound.
pub(crate) fn code_label(code: u32) -> String {
    match code {
        1000..=1015 | 100..=999 | 3000..=3999 => code.to_string(),
        4000..=4999 => "4xxx".to_owned(),
        _ => "other".to_owned(),
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabel {
    transport: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NamespaceLabel {
    namespace: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodCodeLabel {
    method: &'static str,
    code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportCodeLabel {
    transport: &'static str,
    code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportReasonLabel {
    transport: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct EngineLabel {
    engine: &'static str,
    op: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HookLabel {
    hook: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The counters of one transport, resolved once so a write touches no family lock.
#[derive(Debug, Clone)]
struct TransportCounters {
    name: &'static str,
    open: Gauge,
    opened: Counter,
    bytes: Counter,
}

/// The counters of one namespace, resolved once.
#[derive(Debug, Clone)]
struct NamespaceCounters {
    publications: Counter,
    deliveries: Counter,
}

/// The detailed metrics: what the hub's [`Observer`] and the engine and proxy wrappers feed.
#[derive(Debug)]
pub(crate) struct Detail {
    transports: Vec<TransportCounters>,
    namespaces: HashMap<String, NamespaceCounters>,
    default_namespace: NamespaceCounters,
    commands: HistogramFamily<MethodLabel>,
    command_errors: Family<MethodCodeLabel, Counter>,
    disconnects: Family<TransportCodeLabel, Counter>,
    drops: Family<TransportReasonLabel, Counter>,
    slow_consumers: Family<TransportLabel, Counter>,
    fan_out: Histogram,
    delivery_latency: Histogram,
    recoveries: Family<OutcomeLabel, Counter>,
    pub(crate) engine_calls: HistogramFamily<EngineLabel>,
    pub(crate) engine_errors: Family<EngineLabel, Counter>,
    pub(crate) proxy_calls: HistogramFamily<HookLabel>,
    pub(crate) proxy_failures: Family<HookLabel, Counter>,
}

fn command_histogram() -> Histogram {
    // 100 µs .. 2.4 s
    Histogram::new(exponential_buckets(0.000_1, 2.5, 12))
}

fn io_histogram() -> Histogram {
    // 50 µs .. 1.2 s
    Histogram::new(exponential_buckets(0.000_05, 2.5, 12))
}

fn proxy_histogram() -> Histogram {
    // 1 ms .. 2 s
    Histogram::new(exponential_buckets(0.001, 2.0, 12))
}

impl Detail {
    fn new(namespaces: impl IntoIterator<Item = String>, registry: &mut Registry) -> Self {
        let open = Family::<TransportLabel, Gauge>::default();
        let opened = Family::<TransportLabel, Counter>::default();
        let bytes = Family::<TransportLabel, Counter>::default();
        let transports = TRANSPORTS
            .iter()
            .map(|&name| {
                let label = TransportLabel { transport: name };
                TransportCounters {
                    name,
                    open: open.get_or_create_owned(&label),
                    opened: opened.get_or_create_owned(&label),
                    bytes: bytes.get_or_create_owned(&label),
                }
            })
            .collect();
        let publications = Family::<NamespaceLabel, Counter>::default();
        let deliveries = Family::<NamespaceLabel, Counter>::default();
        let counters = |name: &str| {
            let label = NamespaceLabel {
                namespace: name.to_owned(),
            };
            NamespaceCounters {
                publications: publications.get_or_create_owned(&label),
                deliveries: deliveries.get_or_create_owned(&label),
            }
        };
        let namespaces: HashMap<String, NamespaceCounters> = namespaces
            .into_iter()
            .map(|name| {
                let c = counters(&name);
                (name, c)
            })
            .collect();
        let default_namespace = counters("default");
        let detail = Detail {
            transports,
            namespaces,
            default_namespace,
            commands: Family::new_with_constructor(command_histogram),
            command_errors: Family::default(),
            disconnects: Family::default(),
            drops: Family::default(),
            slow_consumers: Family::default(),
            fan_out: Histogram::new(exponential_buckets(0.000_001, 4.0, 10)),
            delivery_latency: io_histogram(),
            recoveries: Family::default(),
            engine_calls: Family::new_with_constructor(io_histogram),
            engine_errors: Family::default(),
            proxy_calls: Family::new_with_constructor(proxy_histogram),
            proxy_failures: Family::default(),
        };
        registry.register(
            "kilat_transport_connections",
            "Open connections by transport",
            open,
        );
        registry.register(
            "kilat_transport_connections_opened",
            "Connections opened by transport since start",
            opened,
        );
        registry.register_with_unit(
            "kilat_transport_sent",
            "Bytes of frames written to clients (before WebSocket compression), by transport",
            Unit::Bytes,
            bytes,
        );
        registry.register(
            "kilat_namespace_publications",
            "Publications accepted through this node, by namespace",
            publications,
        );
        registry.register(
            "kilat_namespace_deliveries",
            "Publication frames queued to local subscribers, by namespace",
            deliveries,
        );
        registry.register_with_unit(
            "kilat_command_duration",
            "Time from a client command's arrival to its reply being queued, by method",
            Unit::Seconds,
            detail.commands.clone(),
        );
        registry.register(
            "kilat_command_errors",
            "Client commands answered with an error, by method and error code",
            detail.command_errors.clone(),
        );
        registry.register(
            "kilat_disconnects",
            "Connections closed with a code, by transport and disconnect code",
            detail.disconnects.clone(),
        );
        registry.register(
            "kilat_connection_drops",
            "Connections that ended without a close frame, by transport and reason: client_gone \
             (the client closed or reset the socket), write_timeout (it stopped reading), \
             write_failed, teardown_timeout",
            detail.drops.clone(),
        );
        registry.register(
            "kilat_slow_consumers",
            "Connections closed because their queue overflowed (disconnect 3001)",
            detail.slow_consumers.clone(),
        );
        registry.register_with_unit(
            "kilat_fanout_duration",
            "Time to encode one publication and queue it to every local subscriber",
            Unit::Seconds,
            detail.fan_out.clone(),
        );
        registry.register_with_unit(
            "kilat_delivery_latency",
            "Time from a publication reaching this node's hub to the socket write that carried \
             it (sampled: one write in 16 per worker thread)",
            Unit::Seconds,
            detail.delivery_latency.clone(),
        );
        registry.register(
            "kilat_recoveries",
            "Subscribes that asked to recover, by outcome (recovered or not_recovered)",
            detail.recoveries.clone(),
        );
        registry.register_with_unit(
            "kilat_engine_call_duration",
            "Duration of engine calls (broker and presence), by engine and operation",
            Unit::Seconds,
            detail.engine_calls.clone(),
        );
        registry.register(
            "kilat_engine_errors",
            "Engine calls that failed, by engine and operation",
            detail.engine_errors.clone(),
        );
        registry.register_with_unit(
            "kilat_proxy_duration",
            "Duration of calls to the application's backend hooks, by hook",
            Unit::Seconds,
            detail.proxy_calls.clone(),
        );
        registry.register(
            "kilat_proxy_failures",
            "Backend hook calls that failed (transport error, timeout, bad answer), by hook",
            detail.proxy_failures.clone(),
        );
        detail
    }

    /// The counters of transport `name`. Called per socket write: transports name themselves
    /// with the same string literals as [`TRANSPORTS`], so the address usually matches and no
    /// bytes are compared.
    #[inline]
    fn transport(&self, name: &str) -> &TransportCounters {
        self.transports
            .iter()
            .find(|t| std::ptr::eq(t.name, name))
            .or_else(|| self.transports.iter().find(|t| t.name == name))
            .unwrap_or_else(|| self.transports.last().expect("`other` is always present"))
    }

    fn namespace(&self, channel: &str) -> &NamespaceCounters {
        channel
            .split_once(':')
            .and_then(|(ns, _)| self.namespaces.get(ns))
            .unwrap_or(&self.default_namespace)
    }

    fn transport_name(&self, name: &str) -> &'static str {
        self.transport(name).name
    }
}

thread_local! {
    /// Stamped writes seen by this worker thread, for sampling the latency histogram.
    static STAMPED_WRITES: Cell<u32> = const { Cell::new(0) };
}

impl Observer for Detail {
    fn session_opened(&self, transport: &'static str) {
        let t = self.transport(transport);
        t.open.inc();
        t.opened.inc();
    }

    fn session_closed(&self, transport: &'static str) {
        self.transport(transport).open.dec();
    }

    fn disconnected(&self, transport: &'static str, code: u32) {
        let transport = self.transport_name(transport);
        self.disconnects
            .get_or_create(&TransportCodeLabel {
                transport,
                code: code_label(code),
            })
            .inc();
        if code == u32::from(kilat_protocol::DisconnectCode::SLOW.0) {
            self.slow_consumers
                .get_or_create(&TransportLabel { transport })
                .inc();
        }
    }

    fn dropped(&self, transport: &'static str, reason: &'static str) {
        let transport = self.transport_name(transport);
        self.drops
            .get_or_create(&TransportReasonLabel { transport, reason })
            .inc();
    }

    fn command(&self, method: Method, elapsed: Duration, error: Option<u32>) {
        let method = method.as_str();
        self.commands
            .get_or_create(&MethodLabel { method })
            .observe(elapsed.as_secs_f64());
        if let Some(code) = error {
            self.command_errors
                .get_or_create(&MethodCodeLabel {
                    method,
                    code: code_label(code),
                })
                .inc();
        }
    }

    fn published(&self, channel: &str) {
        self.namespace(channel).publications.inc();
    }

    fn fanned_out(&self, channel: &str, delivered: u64, elapsed: Duration) {
        self.namespace(channel).deliveries.inc_by(delivered);
        self.fan_out.observe(elapsed.as_secs_f64());
    }

    fn recovery(&self, _channel: &str, recovered: bool) {
        let outcome = if recovered {
            "recovered"
        } else {
            "not_recovered"
        };
        self.recoveries
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    fn wrote(&self, transport: &'static str, bytes: usize, stamp: Option<Instant>) {
        self.transport(transport).bytes.inc_by(bytes as u64);
        if let Some(stamp) = stamp {
            let sampled = STAMPED_WRITES.with(|n| {
                let next = n.get().wrapping_add(1);
                n.set(next);
                next % LATENCY_SAMPLE == 1
            });
            if sampled {
                self.delivery_latency.observe(stamp.elapsed().as_secs_f64());
            }
        }
    }
}

/// Everything `/metrics` shows: the registry and, when detailed metrics are on, what feeds it.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    /// The observer given to the hub and the wrappers; `None` with `server.detailed_metrics = false`.
    pub(crate) detail: Option<Arc<Detail>>,
}

/// What the scrape-time collector reads: the hub's own counters and the server's gauges.
#[derive(Debug)]
struct NodeCollector {
    /// Configured namespaces: their own series in the per-namespace gauges.
    namespaces: Vec<String>,
    node: Node,
    connections: Arc<Semaphore>,
    max_connections: usize,
    draining: Arc<AtomicBool>,
    started: Instant,
    handshakes: Arc<crate::transport::handshakes::Handshakes>,
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> std::fmt::Result {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> std::fmt::Result {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn clamp(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Collector for NodeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let stats = self.node.stats();
        let open = self.max_connections - self.connections.available_permits();
        let e = &mut encoder;
        gauge(
            e,
            "kilat_connections",
            "Open client connections (all transports).",
            clamp(open),
        )?;
        gauge(
            e,
            "kilat_connections_limit",
            "Configured maximum of open connections.",
            clamp(self.max_connections),
        )?;
        gauge(
            e,
            "kilat_handshakes",
            "Connections admitted and not yet answered their connect (server.max_handshakes bounds them).",
            clamp(self.handshakes.in_progress()),
        )?;
        gauge(
            e,
            "kilat_handshakes_limit",
            "Configured maximum of concurrent handshakes (0: no bound).",
            clamp(self.handshakes.limit()),
        )?;
        counter(
            e,
            "kilat_handshakes_refused",
            "Connection attempts refused with 503 and Retry-After because server.max_handshakes handshakes were in progress.",
            self.handshakes.refused(),
        )?;
        gauge(
            e,
            "kilat_sessions",
            "Sessions known to the hub.",
            clamp(stats.connections),
        )?;
        gauge(
            e,
            "kilat_subscriptions",
            "Channel subscriptions held by local sessions.",
            clamp(stats.subscriptions),
        )?;
        gauge(
            e,
            "kilat_channels",
            "Channels with at least one local subscriber.",
            clamp(stats.channels),
        )?;
        counter(
            e,
            "kilat_publications",
            "Publications accepted by this node.",
            stats.publications,
        )?;
        counter(
            e,
            "kilat_deliveries",
            "Frames queued to subscribers by this node's fan-out.",
            stats.deliveries,
        )?;
        let (queued, largest) = self.node.queued_bytes();
        gauge(
            e,
            "kilat_queued_bytes",
            "Bytes waiting in connections' outbound queues, summed over this node.",
            i64::try_from(queued).unwrap_or(i64::MAX),
        )?;
        gauge(
            e,
            "kilat_queued_bytes_max",
            "Bytes waiting in the fullest outbound queue (compare node.client_queue_max_bytes).",
            i64::try_from(largest).unwrap_or(i64::MAX),
        )?;
        gauge(
            e,
            "kilat_draining",
            "1 while the server is shutting down.",
            i64::from(self.draining.load(Ordering::SeqCst)),
        )?;
        gauge(
            e,
            "kilat_background_tasks",
            "Background tasks the node tracks that are running (timer-started engine calls, gap repairs, conflation windows, hook calls).",
            clamp(stats.background_tasks),
        )?;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            gauge(
                e,
                "kilat_runtime_alive_tasks",
                "Tasks alive on the server's tokio runtime (connections, timers, background work); a leak shows as growth.",
                clamp(runtime.metrics().num_alive_tasks()),
            )?;
        }
        // Per namespace: one pass over the hub's shards.
        let by_namespace = self.node.channels_by(|channel| {
            channel
                .split_once(':')
                .map(|(ns, _)| ns)
                .filter(|ns| self.namespaces.iter().any(|n| n == ns))
                .unwrap_or("default")
                .to_owned()
        });
        let mut channels = e.encode_descriptor(
            "kilat_namespace_channels",
            "Channels with local subscribers, by namespace.",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (namespace, count, _) in &by_namespace {
            ConstGauge::new(clamp(*count))
                .encode(channels.encode_family(&[("namespace", namespace.as_str())])?)?;
        }
        let mut subscriptions = e.encode_descriptor(
            "kilat_namespace_subscriptions",
            "Subscriptions of local sessions, by namespace.",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (namespace, _, count) in &by_namespace {
            ConstGauge::new(clamp(*count))
                .encode(subscriptions.encode_family(&[("namespace", namespace.as_str())])?)?;
        }
        let uptime = ConstGauge::new(self.started.elapsed().as_secs_f64());
        uptime.encode(e.encode_descriptor(
            "kilat_uptime",
            "Seconds since this node started.",
            Some(&Unit::Seconds),
            uptime.metric_type(),
        )?)?;
        Ok(())
    }
}

/// What the scrape-time collector reads from the server ([`Metrics::watch`]).
#[derive(Debug)]
pub(crate) struct Sources {
    pub(crate) node: Node,
    pub(crate) connections: Arc<Semaphore>,
    pub(crate) max_connections: usize,
    pub(crate) draining: Arc<AtomicBool>,
    pub(crate) started: Instant,
    pub(crate) handshakes: Arc<crate::transport::handshakes::Handshakes>,
}

impl Metrics {
    /// An empty registry; with `detailed`, also the observer for the hub and the wrappers (the
    /// caller installs them) with a series per configured namespace in `namespaces`.
    pub(crate) fn new(detailed: bool, namespaces: impl IntoIterator<Item = String>) -> Self {
        let mut registry = Registry::default();
        let build = prometheus_client::metrics::info::Info::new(vec![(
            "version",
            env!("CARGO_PKG_VERSION"),
        )]);
        registry.register("kilat_build", "The running kilat version", build);
        // Process and host figures, read from /proc at scrape time (metrics/process.rs).
        registry.register_collector(Box::new(process::ProcessCollector));
        let detail = detailed.then(|| Arc::new(Detail::new(namespaces, &mut registry)));
        Metrics { registry, detail }
    }

    /// Adds the gauges and counters read at scrape time from the hub and the server.
    pub(crate) fn watch(&mut self, sources: Sources) {
        self.registry.register_collector(Box::new(NodeCollector {
            namespaces: sources.node.config().namespaces.keys().cloned().collect(),
            node: sources.node,
            connections: sources.connections,
            max_connections: sources.max_connections,
            draining: sources.draining,
            started: sources.started,
            handshakes: sources.handshakes,
        }));
    }

    /// Every metric as Prometheus text (format 0.0.4).
    pub(crate) fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        if let Err(error) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        {
            tracing::error!(%error, "encoding /metrics failed");
        }
        out
    }
}

/// The content type of [`Metrics::render`]'s output.
pub(crate) const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_outside_the_protocol_ranges_share_a_label() {
        assert_eq!(code_label(3001), "3001");
        assert_eq!(code_label(1009), "1009");
        assert_eq!(code_label(4001), "4xxx");
        assert_eq!(code_label(4999), "4xxx");
        assert_eq!(code_label(70_000), "other");
    }
}
