//! `kilat bench soak` options.

use std::path::PathBuf;

use clap::Args;

/// Options of the soak scenario.
#[derive(Debug, Clone, Args)]
pub(crate) struct SoakArgs {
    /// WebSocket URL of a running kilat server (its HTTP API is on the same address). Without
    /// it the soak starts `kilat serve --dev` itself on a free loopback port, with a token
    /// secret, and stops it at the end.
    #[arg(long, value_name = "URL")]
    pub(crate) url: Option<String>,
    /// PID of the server given with --url, to sample its memory (RSS) and open file
    /// descriptors from /proc. Without it only the server's /metrics gauges are sampled.
    #[arg(long, value_name = "PID")]
    pub(crate) pid: Option<u32>,
    /// Server API key for publishing through POST /api/publish (not needed against --dev).
    #[arg(long, env = "KILAT_API_KEY", hide_env_values = true)]
    pub(crate) api_key: Option<String>,
    /// HMAC secret the server verifies connection tokens with (server's --token-secret): half
    /// of the clients connect with a token and refresh it. Without it (and with --url) every
    /// client is anonymous and no refreshes are made.
    #[arg(long, value_name = "SECRET")]
    pub(crate) token_secret: Option<String>,
    /// Seconds of churn (then a settle phase of up to --settle seconds for the checks).
    #[arg(short = 'd', long, default_value_t = 120.0)]
    pub(crate) duration: f64,
    /// Seconds left out of the trend at the start (default: a quarter of --duration), while
    /// allocator pools and buffers reach their working size.
    #[arg(long, value_name = "SECONDS")]
    pub(crate) warmup: Option<f64>,
    /// Seconds between two samples of the server.
    #[arg(long, default_value_t = 5.0, value_name = "SECONDS")]
    pub(crate) sample: f64,
    /// Well-behaved clients connected at any time (each one leaves and a new one takes its
    /// place every --life seconds on average).
    #[arg(short = 'n', long, default_value_t = 200)]
    pub(crate) clients: usize,
    /// Mean seconds a client stays connected before it leaves (half with a close frame, half by
    /// dropping the TCP connection) and is replaced.
    #[arg(long, default_value_t = 20.0, value_name = "SECONDS")]
    pub(crate) life: f64,
    /// Mean seconds between two actions of one client: unsubscribe and subscribe another
    /// channel, a presence or presence_stats query, a history read, a token refresh.
    #[arg(long, default_value_t = 4.0, value_name = "SECONDS")]
    pub(crate) action_every: f64,
    /// Channels the publications go to.
    #[arg(short = 'c', long, default_value_t = 20)]
    pub(crate) channels: usize,
    /// Channels each client subscribes to.
    #[arg(long, default_value_t = 3)]
    pub(crate) subs: usize,
    /// Publications per second in total, through the HTTP API, round-robin over the channels.
    #[arg(short = 'r', long, default_value_t = 50.0)]
    pub(crate) rate: f64,
    /// Publications put on every channel before the run (through POST /api/broadcast), so
    /// history is at its full size (the server's history_size; 1000 in --dev) and its memory
    /// does not pass for growth. 0 skips it.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub(crate) prefill: u64,
    /// Payload bytes per publication.
    #[arg(long, default_value_t = 200)]
    pub(crate) size: usize,
    /// Abusive clients of each kind: a flooder (commands as fast as it can write), an
    /// oversized-frame sender (closed with 1009 each time) and a client that asks for large
    /// history pages and never reads (cut off by the server's queue limit). Each reconnects
    /// after it is thrown out. 0 turns them off.
    #[arg(long, default_value_t = 1)]
    pub(crate) abusive: usize,
    /// Fail (exit status 1) when a sampled quantity grows faster than PERCENT per hour of its
    /// mean after the warm-up (least-squares slope).
    #[arg(long, value_name = "PERCENT")]
    pub(crate) assert_flat: Option<f64>,
    /// Most seconds the settle phase waits for the last deliveries and for presence to agree.
    #[arg(long, default_value_t = 15.0, value_name = "SECONDS")]
    pub(crate) settle: f64,
    /// Write every sample as CSV to this file (for charts: bench/soak-chart.py).
    #[arg(long, value_name = "FILE")]
    pub(crate) samples: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

impl SoakArgs {
    pub(crate) fn warmup(&self) -> f64 {
        self.warmup.unwrap_or(self.duration / 4.0)
    }
}
