//! `kilat demo feed monitor`: the monitoring demo's feed and alert evaluator (/demo/monitor).
//!
//! Every second it reads `GET /metrics` of a kilat (the same node in `kilat serve --dev`, any
//! node with `--url`), turns counters into rates, and
//! - publishes the figures to `monitor:<node>` while someone watches `monitor:*` (so an idle
//!   server publishes nothing);
//! - evaluates the alert rules of `alerts:ops` against them, and publishes each alert's changes
//!   (raised, resolved) to `alerts:ops`.
//!
//! `alerts:ops` is keyed by `id` (`conflate_key = "id"`, `latest = true`): the newest record of
//! every rule (`rule:<name>`) and every alert (`alert:<rule>:<ms>`) is kept, so a dashboard that
//! opens, or comes back after being offline, receives every rule and the current state of every
//! alert in its subscribe reply; one that reconnects in time recovers what it missed from
//! history. Dashboards add, change and delete rules and acknowledge alerts by publishing a
//! record under the same key; this evaluator reads the channel's history each second.
//!
//! Rules are validated here, where they take effect ([`parse_rule`]): a dashboard checks its
//! form first, but any client allowed to publish could send anything, so the evaluator is the
//! boundary. A malformed rule is not evaluated; its record is replaced by one with `error`
//! saying why, which every dashboard shows. A record without an `id` never gets this far: the
//! namespace's `conflate_key` makes the server refuse it with error 400.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::Api;

/// The channel of rules and alerts.
pub(crate) const ALERTS: &str = "alerts:ops";

/// Metrics a rule may watch: the figures' field names, as published.
pub(crate) const METRICS: &[&str] = &[
    "connections",
    "publications_per_s",
    "deliveries_per_s",
    "memory_mb",
    "cpu_percent",
    "load1",
    "host_memory_used_percent",
];

/// Longest `for_s` of a rule: an hour.
const MAX_FOR_S: f64 = 3600.0;

/// One alert rule: `metric op threshold` held for `for_s` seconds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rule {
    pub(crate) name: String,
    pub(crate) metric: String,
    pub(crate) above: bool,
    pub(crate) threshold: f64,
    pub(crate) for_s: f64,
}

/// A rule or node name: 1-40 letters, digits, `-` or `_`.
pub(crate) fn valid_node(name: &str) -> bool {
    valid_name(name)
}

fn valid_name(name: &str) -> bool {
    (1..=40).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A rule record's meaning: `Ok(None)` for a deletion, an error for the dashboards otherwise.
pub(crate) fn parse_rule(data: &Value) -> Result<Option<Rule>, String> {
    let id = data.get("id").and_then(Value::as_str).unwrap_or_default();
    let name = id
        .strip_prefix("rule:")
        .filter(|n| valid_name(n))
        .ok_or("id must be rule:<name>, the name 1-40 letters, digits, - or _")?;
    if data.get("deleted").and_then(Value::as_bool) == Some(true) {
        return Ok(None);
    }
    let metric = data
        .get("metric")
        .and_then(Value::as_str)
        .ok_or("metric is missing (one of: connections, publications_per_s, ...)")?;
    if !METRICS.contains(&metric) {
        return Err(format!(
            "unknown metric `{}`; use one of: {}",
            metric.chars().take(40).collect::<String>(),
            METRICS.join(", ")
        ));
    }
    let above = match data.get("op").and_then(Value::as_str) {
        Some(">") => true,
        Some("<") => false,
        _ => return Err("op must be \">\" or \"<\"".into()),
    };
    let threshold = data
        .get("threshold")
        .and_then(Value::as_f64)
        .filter(|t| t.is_finite())
        .ok_or("threshold must be a number")?;
    let for_s = data
        .get("for_s")
        .and_then(Value::as_f64)
        .filter(|s| (0.0..=MAX_FOR_S).contains(s))
        .ok_or("for_s (how long the condition must hold) must be 0 to 3600 seconds")?;
    Ok(Some(Rule {
        name: name.to_owned(),
        metric: metric.to_owned(),
        above,
        threshold,
        for_s,
    }))
}

/// The samples of a Prometheus text body that have no labels: name -> value.
pub(crate) fn parse_metrics(body: &str) -> HashMap<&str, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.contains('{'))
        .filter_map(|l| {
            let (name, value) = l.split_once(' ')?;
            Some((name, value.trim().parse().ok()?))
        })
        .collect()
}

/// One scrape, kept for the next one's rates.
struct Scrape {
    at: Instant,
    publications: f64,
    deliveries: f64,
    cpu: Option<f64>,
}

/// Turns two scrapes into the published figures (a JSON object of [`METRICS`] and a few more).
fn figures(node: &str, m: &HashMap<&str, f64>, prev: Option<&Scrape>, now: &Scrape) -> Value {
    let rate = |a: f64, b: f64, dt: f64| ((b - a) / dt).max(0.0);
    let (pubs, deliveries, cpu) = match prev {
        Some(p) => {
            let dt = now.at.duration_since(p.at).as_secs_f64().max(0.001);
            (
                Some(rate(p.publications, now.publications, dt)),
                Some(rate(p.deliveries, now.deliveries, dt)),
                p.cpu
                    .zip(now.cpu)
                    .map(|(a, b)| (rate(a, b, dt) * 100.0 * 10.0).round() / 10.0),
            )
        }
        None => (None, None, None),
    };
    let round1 = |v: f64| (v * 10.0).round() / 10.0;
    let used = m
        .get("kilat_host_memory_total_bytes")
        .zip(m.get("kilat_host_memory_available_bytes"))
        .filter(|(t, _)| **t > 0.0)
        .map(|(t, a)| round1((1.0 - a / t) * 100.0));
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    json!({
        "node": node,
        "t": t,
        "connections": m.get("kilat_connections"),
        "publications_per_s": pubs.map(round1),
        "deliveries_per_s": deliveries.map(round1),
        "memory_mb": m.get("process_resident_memory_bytes").map(|b| round1(b / 1_048_576.0)),
        "cpu_percent": cpu,
        "load1": m.get("kilat_host_load1"),
        "load5": m.get("kilat_host_load5"),
        "load15": m.get("kilat_host_load15"),
        "cpus": m.get("kilat_host_cpus"),
        "host_memory_used_percent": used,
        "host_memory_total_mb": m.get("kilat_host_memory_total_bytes").map(|b| (b / 1_048_576.0).round()),
    })
}

/// A rule being evaluated: since when its condition holds, and its open alert.
#[derive(Debug)]
struct Watch {
    rule: Rule,
    since: Option<Instant>,
    alert: Option<String>,
}

/// The evaluator's view of `alerts:ops`.
#[derive(Default)]
struct Alerts {
    rules: BTreeMap<String, Watch>,
    /// The newest record of each alert id (to keep `acked_by` when resolving).
    records: HashMap<String, Value>,
    position: Option<Value>,
    /// Open alerts of rules deleted or rejected: resolved at the next evaluation.
    closed: Vec<(String, String)>,
}

impl Alerts {
    /// Applies one record from the channel; returns a rejection to publish for a bad rule.
    fn apply(&mut self, data: &Value) -> Option<Value> {
        let id = data.get("id").and_then(Value::as_str)?;
        if id.starts_with("alert:") {
            if self.records.len() >= 1000 {
                // Bounded: forget resolved alerts first (their final record is in the channel).
                self.records
                    .retain(|_, r| r.get("state").and_then(Value::as_str) == Some("firing"));
            }
            let firing = data.get("state").and_then(Value::as_str) == Some("firing");
            if let Some(rule) = data.get("rule").and_then(Value::as_str)
                && let Some(watch) = self.rules.get_mut(rule)
            {
                if firing {
                    watch.alert = Some(id.to_owned());
                } else if watch.alert.as_deref() == Some(id) {
                    watch.alert = None;
                }
            }
            self.records.insert(id.to_owned(), data.clone());
            return None;
        }
        let name = id.strip_prefix("rule:")?;
        if data.get("error").is_some() {
            // A rejection (ours): the rule is not evaluated.
            self.close(name, "rule rejected");
            return None;
        }
        match parse_rule(data) {
            Ok(Some(rule)) => {
                let alert = self
                    .rules
                    .remove(&rule.name)
                    .and_then(|w| w.alert)
                    .or_else(|| self.firing_of(&rule.name));
                self.rules.insert(
                    rule.name.clone(),
                    Watch {
                        rule,
                        since: None,
                        alert,
                    },
                );
                None
            }
            Ok(None) => {
                self.close(name, "rule deleted");
                None
            }
            Err(error) => {
                self.close(name, "rule rejected");
                tracing::info!(rule = %id, %error, "alert rule rejected");
                Some(
                    json!({"id": id, "kind": "rule", "error": error, "by": data.get("by"), "rejected": data}),
                )
            }
        }
    }

    /// Stops evaluating rule `name`; its open alert is resolved at the next evaluation.
    fn close(&mut self, name: &str, why: &str) {
        if let Some(alert) = self.rules.remove(name).and_then(|w| w.alert) {
            self.closed.push((alert, why.to_owned()));
        }
    }

    fn firing_of(&self, rule: &str) -> Option<String> {
        self.records
            .iter()
            .filter(|(_, r)| {
                r.get("rule").and_then(Value::as_str) == Some(rule)
                    && r.get("state").and_then(Value::as_str) == Some("firing")
            })
            .map(|(id, _)| id.clone())
            .max()
    }

    /// Evaluates every rule against `figures`; returns the alert records to publish.
    fn evaluate(&mut self, figures: &Value, now: Instant) -> Vec<Value> {
        let ms = figures.get("t").and_then(Value::as_u64).unwrap_or(0);
        let mut out = Vec::new();
        for (id, why) in self.closed.drain(..) {
            let mut record = self
                .records
                .get(&id)
                .cloned()
                .unwrap_or_else(|| json!({"id": id, "kind": "alert"}));
            record["state"] = json!("resolved");
            record["resolved_at"] = json!(ms);
            record["resolved_why"] = json!(why);
            out.push(record);
        }
        for watch in self.rules.values_mut() {
            let rule = &watch.rule;
            let value = figures.get(&rule.metric).and_then(Value::as_f64);
            let holds = value.is_some_and(|v| {
                if rule.above {
                    v > rule.threshold
                } else {
                    v < rule.threshold
                }
            });
            if !holds {
                watch.since = None;
                if let Some(id) = watch.alert.take() {
                    let mut record =
                        self.records.get(&id).cloned().unwrap_or_else(
                            || json!({"id": id, "kind": "alert", "rule": rule.name}),
                        );
                    record["state"] = json!("resolved");
                    record["resolved_at"] = json!(ms);
                    record["resolved_value"] = json!(value);
                    out.push(record);
                }
                continue;
            }
            let since = *watch.since.get_or_insert(now);
            if watch.alert.is_none() && now.duration_since(since).as_secs_f64() >= rule.for_s {
                let id = format!("alert:{}:{ms}", rule.name);
                let op = if rule.above { ">" } else { "<" };
                out.push(json!({
                    "id": id, "kind": "alert", "state": "firing", "rule": rule.name,
                    "metric": rule.metric, "op": op, "threshold": rule.threshold,
                    "for_s": rule.for_s, "value": value, "raised_at": ms,
                    "node": figures.get("node"),
                }));
                watch.alert = Some(id);
            }
        }
        for record in &out {
            if let Some(id) = record.get("id").and_then(Value::as_str) {
                self.records.insert(id.to_owned(), record.clone());
            }
        }
        out
    }

    /// Reads what is new in `alerts:ops` (everything on the first call or after an epoch
    /// change) and applies it; returns the rejections to publish.
    async fn read(&mut self, api: &mut Api) -> Result<Vec<Value>> {
        let mut rejections: Vec<Value> = Vec::new();
        loop {
            let mut request = json!({"channel": ALERTS, "limit": 1000});
            if let Some(since) = &self.position {
                request["since"] = since.clone();
            }
            let reply = api.call("history", request).await?;
            if let Some(error) = reply.get("error") {
                if self.position.take().is_some()
                    && error.get("code").and_then(Value::as_u64) == Some(503)
                {
                    // Another epoch (history dropped): read it all again.
                    self.rules.clear();
                    self.records.clear();
                    continue;
                }
                bail!(
                    "history of {ALERTS}: {error} (hint: the namespace `alerts` needs history, \
                     conflate_key = \"id\" and latest = true; see docs/use-cases.md)"
                );
            }
            let result = reply.get("result").context("history answered no result")?;
            let publications = result
                .get("publications")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for publication in &publications {
                let Some(data) = publication.get("data") else {
                    continue;
                };
                let id = data.get("id").cloned();
                // A later record of the same key supersedes a pending rejection.
                rejections.retain(|r| r.get("id") != id.as_ref());
                if let Some(rejection) = self.apply(data) {
                    rejections.push(rejection);
                }
            }
            self.position =
                Some(json!({"offset": result.get("offset"), "epoch": result.get("epoch")}));
            if publications.len() < 1000 {
                return Ok(rejections);
            }
        }
    }
}

/// Runs the monitor feed until an error that is not a dropped connection.
pub(crate) async fn monitor(addr: String, key: Option<String>, node: String) -> Result<()> {
    let channel = format!("monitor:{node}");
    let mut api = Api {
        addr,
        key,
        sender: None,
    };
    let mut alerts = Alerts::default();
    let mut prev: Option<Scrape> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watched = false;
    let mut ticks = 0u64;
    loop {
        tick.tick().await;
        ticks += 1;
        let body = match api.get("/metrics").await {
            Ok(body) => body,
            Err(error) => {
                api.sender = None;
                if ticks == 1 {
                    return Err(error);
                }
                tracing::warn!(%error, "monitor feed: reading /metrics failed; retrying");
                continue;
            }
        };
        let m = parse_metrics(&body);
        let now = Scrape {
            at: Instant::now(),
            publications: m.get("kilat_publications_total").copied().unwrap_or(0.0),
            deliveries: m.get("kilat_deliveries_total").copied().unwrap_or(0.0),
            cpu: m.get("process_cpu_seconds_total").copied(),
        };
        let figures = figures(&node, &m, prev.as_ref(), &now);
        prev = Some(now);
        let mut out = match alerts.read(&mut api).await {
            Ok(rejections) => rejections,
            // At start a refusal (a wrong key, no such namespace) ends the feed with its reason.
            Err(error) if ticks == 1 => return Err(error),
            Err(error) => {
                tracing::warn!(%error, "monitor feed: reading {ALERTS} failed");
                api.sender = None;
                Vec::new()
            }
        };
        out.extend(alerts.evaluate(&figures, Instant::now()));
        for record in out {
            if let Some(state) = record.get("state").and_then(Value::as_str) {
                tracing::info!(alert = %record["id"], value = %record["value"], "alert {state}");
            }
            let reply = api
                .call("publish", json!({"channel": ALERTS, "data": record}))
                .await?;
            if let Some(error) = reply.get("error") {
                tracing::warn!(%error, "monitor feed: publishing to {ALERTS} refused");
            }
        }
        // Figures only while someone watches (checked every 5 s), so an idle server publishes
        // nothing. The first second has no rates yet.
        if ticks % 5 == 2 {
            watched = api.watched("monitor:*").await.unwrap_or(false);
        }
        if watched && ticks > 1 {
            let reply = api
                .call("publish", json!({"channel": channel, "data": figures}))
                .await?;
            if let Some(error) = reply.get("error") {
                tracing::warn!(%error, "monitor feed: publishing to {channel} refused");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_validated_with_a_reason() {
        let ok = json!({"id": "rule:busy", "kind": "rule", "metric": "connections", "op": ">", "threshold": 10, "for_s": 5});
        let rule = parse_rule(&ok).unwrap().unwrap();
        assert_eq!(
            (rule.name.as_str(), rule.above, rule.threshold, rule.for_s),
            ("busy", true, 10.0, 5.0)
        );
        assert_eq!(
            parse_rule(&json!({"id": "rule:busy", "deleted": true})),
            Ok(None)
        );
        let bad = |patch: Value| {
            let mut rule = ok.clone();
            for (k, v) in patch.as_object().unwrap() {
                rule[k] = v.clone();
            }
            parse_rule(&rule).unwrap_err()
        };
        assert!(bad(json!({"metric": "disk"})).contains("unknown metric `disk`"));
        assert!(bad(json!({"op": ">="})).contains("op must be"));
        assert!(bad(json!({"threshold": "ten"})).contains("threshold must be a number"));
        assert!(bad(json!({"for_s": -1})).contains("for_s"));
        assert!(bad(json!({"for_s": 86400})).contains("for_s"));
        assert!(bad(json!({"id": "rule:"})).contains("id must be"));
        assert!(bad(json!({"id": "rule:a b"})).contains("id must be"));
    }

    #[test]
    fn a_rule_fires_after_its_duration_and_resolves_keeping_the_ack() {
        let mut alerts = Alerts::default();
        assert!(alerts.apply(&json!({"id": "rule:busy", "kind": "rule", "metric": "connections", "op": ">", "threshold": 1, "for_s": 2})).is_none());
        let t0 = Instant::now();
        let fig = |c: f64, t: u64| json!({"connections": c, "t": t});
        assert!(alerts.evaluate(&fig(5.0, 1), t0).is_empty());
        assert!(
            alerts
                .evaluate(&fig(5.0, 2), t0 + Duration::from_secs(1))
                .is_empty()
        );
        let fired = alerts.evaluate(&fig(5.0, 3), t0 + Duration::from_secs(2));
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0]["state"], "firing");
        assert_eq!(fired[0]["id"], "alert:busy:3");
        // Still holding: no second alert.
        assert!(
            alerts
                .evaluate(&fig(6.0, 4), t0 + Duration::from_secs(3))
                .is_empty()
        );
        // A dashboard acknowledges (its record comes back through the channel).
        let mut acked = fired[0].clone();
        acked["acked_by"] = json!("alice");
        alerts.apply(&acked);
        let resolved = alerts.evaluate(&fig(0.0, 5), t0 + Duration::from_secs(4));
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0]["state"], "resolved");
        assert_eq!(resolved[0]["acked_by"], "alice");
        // Fires again; deleting the rule resolves the open alert.
        assert!(
            alerts
                .evaluate(&fig(5.0, 6), t0 + Duration::from_secs(5))
                .is_empty()
        );
        assert_eq!(
            alerts.evaluate(&fig(5.0, 7), t0 + Duration::from_secs(7))[0]["state"],
            "firing"
        );
        alerts.apply(&json!({"id": "rule:busy", "deleted": true}));
        let closed = alerts.evaluate(&fig(5.0, 8), t0 + Duration::from_secs(8));
        assert_eq!(closed.len(), 1);
        assert_eq!(
            (
                closed[0]["state"].as_str(),
                closed[0]["resolved_why"].as_str()
            ),
            (Some("resolved"), Some("rule deleted"))
        );
        alerts.apply(&json!({"id": "rule:busy", "kind": "rule", "metric": "connections", "op": ">", "threshold": 1, "for_s": 2}));
        // A malformed rule is rejected with its reason, and not evaluated.
        let rejection = alerts
            .apply(&json!({"id": "rule:busy", "kind": "rule", "metric": "connections", "op": "~", "threshold": 1, "for_s": 0}))
            .unwrap();
        assert!(rejection["error"].as_str().unwrap().contains("op must be"));
        assert!(
            alerts
                .evaluate(&fig(9.0, 6), t0 + Duration::from_secs(9))
                .is_empty()
        );
    }

    #[test]
    fn metrics_text_without_labels_is_read() {
        let m = parse_metrics(
            "# HELP x\nkilat_connections 3\nkilat_namespace_channels{namespace=\"a\"} 1\nprocess_cpu_seconds_total 1.5\n",
        );
        assert_eq!(m.get("kilat_connections"), Some(&3.0));
        assert_eq!(m.get("process_cpu_seconds_total"), Some(&1.5));
        assert_eq!(m.len(), 2);
    }
}
