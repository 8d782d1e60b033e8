//! `kilat bench`: load generation against kilat (and, through raw mode, other WebSocket servers).
//!
//! Scenarios so far:
//! - `idle`: hold N connections open and report the server's resident memory per connection.

mod idle;
mod wsclient;

use clap::{Args, Subcommand};

pub(crate) use idle::IdleArgs;

/// Load scenarios.
#[derive(Debug, Subcommand)]
pub(crate) enum Scenario {
    /// Hold N idle connections and report server RSS per connection (needs --server-pid).
    ///
    /// Opens connections at --rate per second with at most --concurrency handshakes in flight,
    /// sends the kilat `connect` command on each (unless --raw), waits --settle seconds, then
    /// reads the server's VmRSS from /proc and divides the growth by the number of connections.
    /// Compare servers by running it against each in the same session.
    Idle(IdleArgs),
}

/// `kilat bench` arguments.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    scenario: Scenario,
}

/// Runs the chosen scenario.
pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.scenario {
        Scenario::Idle(a) => idle::run(a).await,
    }
}
