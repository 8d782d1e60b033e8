//! `--workers K`: spread the clients of one run over K child processes (the same binary, re-run
//! with a hidden `--worker-index`), so one run can hold more sockets than one process may open.
//!
//! The parent and a worker talk in lines: the worker prints `READY` when its clients are
//! connected and `RESULT <json>` with its part of the measurement (HDR histograms travel in the
//! hdrhistogram V2 format, base64-encoded, and are merged by the parent); the parent writes `GO`
//! to a worker's stdin to start the measured phase and closes stdin to let it exit.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::{Context, Result, bail};
use clap::Args;

/// Worker options shared by the scenarios.
#[derive(Debug, Clone, Args)]
pub(crate) struct WorkerOpts {
    /// Spread the clients over this many child processes (each has its own open-files limit).
    #[arg(long, default_value_t = 1, value_name = "K")]
    pub(crate) workers: usize,
    /// Internal: run as worker number N of --workers (set by the parent process).
    #[arg(long, hide = true)]
    pub(crate) worker_index: Option<usize>,
}

impl WorkerOpts {
    /// This process's share: (index, count).
    pub(crate) fn share(&self) -> (usize, usize) {
        (self.worker_index.unwrap_or(0), self.workers.max(1))
    }

    /// Whether this process is a worker child.
    pub(crate) fn is_worker(&self) -> bool {
        self.worker_index.is_some()
    }

    /// Whether this process should spawn workers.
    pub(crate) fn is_parent(&self) -> bool {
        self.worker_index.is_none() && self.workers > 1
    }
}

/// The parent's handle on its worker processes.
#[derive(Debug)]
pub(crate) struct Workers {
    children: Vec<Child>,
    stdins: Vec<Option<ChildStdin>>,
    stdouts: Vec<Option<BufReader<ChildStdout>>>,
}

impl Workers {
    /// Re-runs this binary K times with the same arguments plus `--worker-index i`.
    pub(crate) fn spawn(k: usize) -> Result<Workers> {
        let exe = std::env::current_exe().context("locating the kilat binary")?;
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut w = Workers {
            children: Vec::new(),
            stdins: Vec::new(),
            stdouts: Vec::new(),
        };
        for i in 0..k {
            let mut child = Command::new(&exe)
                .args(&args)
                .arg("--worker-index")
                .arg(i.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .context("starting a bench worker")?;
            w.stdins.push(child.stdin.take());
            w.stdouts.push(child.stdout.take().map(BufReader::new));
            w.children.push(child);
        }
        Ok(w)
    }

    /// Waits until every worker printed a line starting with `tag`; returns the rest of each.
    pub(crate) async fn expect(&mut self, tag: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for (i, slot) in self.stdouts.iter_mut().enumerate() {
            let mut reader = slot.take().context("worker output already closed")?;
            let tag = tag.to_owned();
            let (reader, line) = tokio::task::spawn_blocking(move || -> Result<_> {
                let mut line = String::new();
                loop {
                    line.clear();
                    if reader.read_line(&mut line)? == 0 {
                        bail!("worker exited before saying {tag}");
                    }
                    if let Some(rest) = line.strip_prefix(tag.as_str()) {
                        let rest = rest.trim().to_owned();
                        return Ok((reader, rest));
                    }
                }
            })
            .await?
            .with_context(|| format!("worker {i}"))?;
            *slot = Some(reader);
            out.push(line);
        }
        Ok(out)
    }

    /// Writes `line` to every worker's stdin.
    pub(crate) fn tell(&mut self, line: &str) -> Result<()> {
        for stdin in self.stdins.iter_mut().flatten() {
            writeln!(stdin, "{line}").context("writing to a worker")?;
            stdin.flush()?;
        }
        Ok(())
    }

    /// Closes the workers' stdin (they exit) and waits for them.
    pub(crate) async fn finish(mut self) -> Result<()> {
        self.stdins.clear();
        let children = std::mem::take(&mut self.children);
        tokio::task::spawn_blocking(move || {
            for mut c in children {
                let _ = c.wait();
            }
        })
        .await?;
        Ok(())
    }
}

/// In a worker: prints `TAG rest` for the parent.
pub(crate) fn say(tag: &str, rest: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{tag} {rest}");
    let _ = out.flush();
}

/// In a worker: waits for one line from the parent (or EOF); returns it, empty at EOF.
pub(crate) async fn hear() -> String {
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        line.trim().to_owned()
    })
    .await
    .unwrap_or_default()
}
