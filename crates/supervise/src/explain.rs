//! The decision journal behind [`Supervisor::explain`](crate::Supervisor::explain).

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use crate::event::fmt_duration;

/// How many decisions are kept per child (older ones are forgotten first).
pub(crate) const JOURNAL_LEN: usize = 64;

/// One decision the supervisor took about a child, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Decision {
    /// When, since the root supervisor started.
    pub at: Duration,
    /// What happened.
    pub event: String,
    /// What the supervisor did about it, with the rule that decided it.
    pub decision: String,
}

/// The recent decisions about one child, oldest first.
///
/// Its `Display` prints one line per decision:
///
/// ```text
/// worker: backing off (restart in 400ms), 3 restarts
///   1.200s  exited: exit code 1 after 310ms up
///           -> restart in 400ms: permanent restarts after any exit; backoff attempt 3; intensity 3/5 within 10s
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Explanation {
    /// The child's name.
    pub child: String,
    /// Where it stands now, in words.
    pub state: String,
    /// The recent decisions, oldest first (at most 64).
    pub decisions: Vec<Decision>,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: {}", self.child, self.state)?;
        if self.decisions.is_empty() {
            return writeln!(f, "  (no decisions yet)");
        }
        for d in &self.decisions {
            writeln!(f, "  {:>8}  {}", fmt_at(d.at), d.event)?;
            writeln!(f, "  {:>8}  -> {}", "", d.decision)?;
        }
        Ok(())
    }
}

fn fmt_at(d: Duration) -> String {
    if d < Duration::from_secs(60) {
        format!("{}.{:03}s", d.as_secs(), d.subsec_millis())
    } else {
        fmt_duration(d)
    }
}

/// A bounded record of decisions.
#[derive(Debug, Clone, Default)]
pub(crate) struct Journal {
    entries: VecDeque<Decision>,
}

impl Journal {
    pub(crate) fn record(&mut self, at: Duration, event: String, decision: String) {
        if self.entries.len() == JOURNAL_LEN {
            self.entries.pop_front();
        }
        self.entries.push_back(Decision {
            at,
            event,
            decision,
        });
    }

    pub(crate) fn entries(&self) -> Vec<Decision> {
        self.entries.iter().cloned().collect()
    }
}
