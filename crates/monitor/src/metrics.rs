//! `/metrics`: every pool's exposition from forkyard-perf, each sample
//! labelled with its pool, merged into one family per metric, plus the
//! monitor's own families (alerts, supervised children, the event log).
//!
//! Why the merge works on exposition text rather than in a
//! `prometheus_client::registry::Registry`: OpenMetrics wants each family
//! once, with all its samples together, and a pool label on every sample.
//! prometheus-client 0.24 can add a constant label to a sub-registry, but it
//! encodes each sub-registry's families separately (two pools would give the
//! `# TYPE` line of `forkyard_pool_tasks` twice), and a collector cannot add
//! a label around a metric that is itself a labelled family (its text encoder
//! does not nest families). So each pool's text is parsed back, line by line,
//! and merged; the tests below and `tests/it/metrics.rs` parse the result
//! with prometheus-parse.

use crate::alerts::AlertState;
use crate::state::{AlertStatus, ChildStateKind, Shared, lock};

/// One metric family: its `# HELP/TYPE/UNIT` lines and its samples.
#[derive(Default)]
struct Family {
    meta: Vec<String>,
    samples: Vec<String>,
}

/// Adds `label="value"` to a sample line (`name{a="b"} 1` or `name 1`).
fn with_label(line: &str, label: &str, value: &str) -> String {
    let brace = line.find('{');
    let space = line.find(' ');
    match (brace, space) {
        (Some(b), Some(s)) if b < s => {
            let (head, tail) = line.split_at(b + 1);
            let sep = if tail.starts_with('}') { "" } else { "," };
            format!("{head}{label}=\"{value}\"{sep}{tail}")
        }
        (_, Some(s)) => {
            let (head, tail) = line.split_at(s);
            format!("{head}{{{label}=\"{value}\"}}{tail}")
        }
        _ => line.to_owned(),
    }
}

/// Merges expositions (one per pool) into one text, families in first-seen order.
fn merge(parts: &[(String, String)], families: &mut Vec<(String, Family)>) {
    for (pool, text) in parts {
        let mut current: Option<usize> = None;
        for line in text.lines() {
            if line == "# EOF" || line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# ") {
                let mut words = rest.splitn(3, ' ');
                let (_, name) = (words.next(), words.next().unwrap_or_default());
                let idx = match families.iter().position(|(n, _)| n == name) {
                    Some(i) => i,
                    None => {
                        families.push((name.to_owned(), Family::default()));
                        families.len() - 1
                    }
                };
                let fam = &mut families[idx].1;
                if !fam.meta.iter().any(|m| m == line) {
                    fam.meta.push(line.to_owned());
                }
                current = Some(idx);
            } else if let Some(i) = current {
                families[i].1.samples.push(with_label(line, "pool", pool));
            }
        }
    }
}

fn family(families: &mut Vec<(String, Family)>, name: &str, kind: &str, help: &str) -> usize {
    families.push((
        name.to_owned(),
        Family {
            meta: vec![
                format!("# HELP {name} {help}"),
                format!("# TYPE {name} {kind}"),
            ],
            samples: Vec::new(),
        },
    ));
    families.len() - 1
}

pub(crate) fn render(shared: &Shared) -> String {
    let parts: Vec<(String, String)> = lock(&shared.pools)
        .iter()
        .map(|p| (p.name.clone(), p.perf.prometheus()))
        .collect();
    let mut families = Vec::new();
    merge(&parts, &mut families);

    let alerts = family(
        &mut families,
        "forkyard_monitor_alerts",
        "gauge",
        "Alerts by rule, subject and state (1 while pending or firing), as Prometheus's ALERTS",
    );
    {
        let a = shared.snapshot().alerts;
        for view in a.iter().filter(|v| v.status != AlertStatus::Resolved) {
            let state = match view.status {
                AlertStatus::Pending => AlertState::Pending,
                _ => AlertState::Firing,
            };
            let state = serde_json::to_value(state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            families[alerts]
                .1
                .samples
                .push(alert_sample(&view.rule, &view.subject, &state));
        }
    }
    let up = family(
        &mut families,
        "forkyard_supervisor_child_up",
        "gauge",
        "1 if the supervised child is running",
    );
    // A counter: OpenMetrics names the family without `_total` and its
    // sample with it.
    let restarts = family(
        &mut families,
        "forkyard_supervisor_child_restarts",
        "counter",
        "Restarts of the supervised child after its first start",
    );
    // The log only grows (its ring drops old entries, not the count), so
    // this is a counter.
    let events = family(
        &mut families,
        "forkyard_monitor_events",
        "counter",
        "Entries written to the monitor's event log since it started",
    );
    for s in lock(&shared.sups).iter() {
        for c in &s.view.children {
            let labels = format!(
                "supervisor=\"{}\",child=\"{}\"",
                escape(&s.name),
                escape(&c.name)
            );
            families[up].1.samples.push(format!(
                "forkyard_supervisor_child_up{{{labels}}} {}",
                u8::from(c.state == ChildStateKind::Running)
            ));
            families[restarts].1.samples.push(format!(
                "forkyard_supervisor_child_restarts_total{{{labels}}} {}",
                c.restarts
            ));
        }
    }
    let written = shared.events().last().map_or(0, |e| e.seq);
    families[events]
        .1
        .samples
        .push(format!("forkyard_monitor_events_total {written}"));

    let mut out = String::new();
    for (_, fam) in families {
        for m in fam.meta {
            out.push_str(&m);
            out.push('\n');
        }
        for s in fam.samples {
            out.push_str(&s);
            out.push('\n');
        }
    }
    out.push_str("# EOF\n");
    out
}

/// One `forkyard_monitor_alerts` sample, its label values escaped.
fn alert_sample(rule: &str, subject: &str, state: &str) -> String {
    format!(
        "forkyard_monitor_alerts{{alertname=\"{}\",subject=\"{}\",alertstate=\"{}\"}} 1",
        escape(rule),
        escape(subject),
        escape(state)
    )
}

/// A label value as the exposition format wants it: backslash, double
/// quote and newline escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_go_in_every_sample_and_families_merge() {
        let a = "# HELP x_total Things.\n# TYPE x_total counter\nx_total 3\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_count 2\n# EOF\n";
        let b = "# HELP x_total Things.\n# TYPE x_total counter\nx_total 5\n# EOF\n";
        let mut fams = Vec::new();
        merge(&[("a".into(), a.into()), ("b".into(), b.into())], &mut fams);
        let text: Vec<String> = fams
            .into_iter()
            .flat_map(|(_, f)| f.meta.into_iter().chain(f.samples))
            .collect();
        assert_eq!(
            text,
            [
                "# HELP x_total Things.",
                "# TYPE x_total counter",
                "x_total{pool=\"a\"} 3",
                "x_total{pool=\"b\"} 5",
                "# TYPE h histogram",
                "h_bucket{pool=\"a\",le=\"1\"} 2",
                "h_count{pool=\"a\"} 2",
            ]
        );
        assert_eq!(with_label("m{} 1", "p", "x"), "m{p=\"x\"} 1");
    }

    #[test]
    fn alert_label_values_are_escaped() {
        assert_eq!(escape("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        assert_eq!(
            alert_sample("High\"Rate", "pool \\ \"x\"\nnext", "firing"),
            r#"forkyard_monitor_alerts{alertname="High\"Rate",subject="pool \\ \"x\"\nnext",alertstate="firing"} 1"#
        );
        // A newline in a value does not split the sample.
        let text = format!(
            "# TYPE forkyard_monitor_alerts gauge\n{}\n",
            alert_sample("High\"Rate", "pool \\ \"x\"\nnext", "firing")
        );
        assert_eq!(
            text.lines().count(),
            2,
            "no raw newline in a sample: {text}"
        );
    }
}
