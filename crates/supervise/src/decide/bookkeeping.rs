//! Bookkeeping: spawning and stopping instances, timers and their tokens, instance lookup,
//! and the journal and events every decision leaves behind.

use super::*;

impl Core {
    /// No instance left, current or replacement.
    pub(super) fn all_down(&self) -> bool {
        self.children
            .iter()
            .all(|c| !matches!(c.run, Run::Up(_)) && c.successor.is_none())
    }

    pub(super) fn may_spawn(&self) -> bool {
        matches!(self.mode, Mode::Starting | Mode::Running)
    }

    pub(super) fn spawn(&mut self, child: usize) {
        let id = self.new_instance();
        let now = self.now;
        let c = &mut self.children[child];
        c.run = Run::Up(Instance::new(id, now));
        c.spawns += 1;
        self.out.push(Action::Spawn {
            child,
            instance: id,
        });
    }

    pub(super) fn stop_child_instances(&mut self, child: usize, reason: StopReason) {
        if let Run::Up(inst) = &self.children[child].run {
            let id = inst.id;
            self.stop_instance(child, id, reason);
        }
        if let Some(id) = self.children[child].successor.as_ref().map(|s| s.id) {
            self.stop_instance(child, id, reason);
        }
    }

    /// Ask an instance to stop (once; a later, stronger reason replaces the recorded one so
    /// that, for example, a manual stop during an unhealthy stop is never followed by a
    /// restart).
    pub(super) fn stop_instance(&mut self, child: usize, instance: u64, reason: StopReason) {
        let Some(inst) = self.instance_mut(child, instance) else {
            return;
        };
        match inst.stopping {
            Some(previous) => {
                let overrides = matches!(
                    reason,
                    StopReason::Manual | StopReason::Shutdown | StopReason::GiveUp
                ) && !matches!(previous, StopReason::Manual | StopReason::Shutdown);
                if overrides {
                    inst.stopping = Some(reason);
                }
            }
            None => {
                inst.stopping = Some(reason);
                if let Some(pid) = inst.pid {
                    self.out.push(Action::Stop {
                        child,
                        instance,
                        reason,
                    });
                    self.emit(child, EventKind::Stopping { pid, reason });
                }
            }
        }
    }

    pub(super) fn drop_successor(&mut self, child: usize) {
        if let Some(id) = self.children[child].successor.as_ref().map(|s| s.id) {
            self.stop_instance(child, id, StopReason::Shutdown);
        }
    }

    pub(super) fn schedule_probe(
        &mut self,
        child: usize,
        instance: u64,
        role: ProbeRole,
        at: Instant,
    ) {
        let token = self.set_timer(
            at,
            TimerPurpose::Probe {
                child,
                instance,
                role,
            },
        );
        if let Some(inst) = self.instance_mut(child, instance) {
            let counter = match role {
                ProbeRole::Readiness => &mut inst.readiness,
                ProbeRole::Liveness => &mut inst.liveness,
            };
            counter.timer = Some(token);
        }
    }

    pub(super) fn cancel_instance_timers(&mut self, inst: &Instance) {
        for t in [inst.deadline, inst.readiness.timer, inst.liveness.timer]
            .into_iter()
            .flatten()
        {
            self.cancel_timer(t);
        }
    }

    pub(super) fn set_timer(&mut self, at: Instant, purpose: TimerPurpose) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        self.timers.insert(token, purpose);
        self.out.push(Action::SetTimer { token, at });
        token
    }

    pub(super) fn cancel_timer(&mut self, token: u64) {
        if self.timers.remove(&token).is_some() {
            self.out.push(Action::CancelTimer { token });
        }
    }

    pub(super) fn new_instance(&mut self) -> u64 {
        let id = self.next_instance;
        self.next_instance += 1;
        id
    }

    pub(super) fn current(&self, child: usize, instance: u64) -> Option<&Instance> {
        match &self.children.get(child)?.run {
            Run::Up(inst) if inst.id == instance => Some(inst),
            _ => None,
        }
    }

    pub(super) fn is_successor(&self, child: usize, instance: u64) -> bool {
        self.children
            .get(child)
            .and_then(|c| c.successor.as_ref())
            .is_some_and(|s| s.id == instance)
    }

    pub(super) fn instance_mut(&mut self, child: usize, instance: u64) -> Option<&mut Instance> {
        let c = self.children.get_mut(child)?;
        if let Run::Up(inst) = &mut c.run
            && inst.id == instance
        {
            return Some(inst);
        }
        c.successor.as_mut().filter(|s| s.id == instance)
    }

    pub(super) fn note(&mut self, child: usize, event: String, decision: String) {
        let at = self.now.saturating_duration_since(self.epoch);
        tracing::debug!(supervisor = %self.name, child = %self.children[child].policy.name, %event, %decision, "decision");
        self.children[child].journal.record(at, event, decision);
    }

    pub(super) fn emit(&mut self, child: usize, kind: EventKind) {
        let event = Event {
            at: self.now.saturating_duration_since(self.epoch),
            supervisor: self.name.clone(),
            child: Some(self.children[child].policy.name.clone()),
            kind,
        };
        self.out.push(Action::Emit(event));
    }

    pub(super) fn emit_group(&mut self, kind: EventKind) {
        let event = Event {
            at: self.now.saturating_duration_since(self.epoch),
            supervisor: self.name.clone(),
            child: None,
            kind,
        };
        self.out.push(Action::Emit(event));
    }

    /// Announce a change in the set of optional children that are down.
    pub(super) fn update_degraded(&mut self) {
        let now: Vec<(String, String)> = self
            .children
            .iter()
            .filter(|c| c.policy.optional)
            .filter_map(|c| {
                let open = c
                    .breaker
                    .as_ref()
                    .is_some_and(|b| b.state() != BreakerState::Closed);
                let down = open && !matches!(c.run, Run::Down(_));
                down.then(|| {
                    (
                        c.policy.name.clone(),
                        c.trouble.clone().unwrap_or_else(|| "breaker open".into()),
                    )
                })
            })
            .collect();
        if now == self.degraded || self.mode == Mode::Done {
            return;
        }
        let kind = if now.is_empty() {
            EventKind::Recovered
        } else {
            EventKind::Degraded {
                which: now.iter().map(|(n, _)| n.clone()).collect(),
                why: join_why(&now),
            }
        };
        self.degraded = now;
        self.emit_group(kind);
    }
}

pub(super) fn join_why(list: &[(String, String)]) -> String {
    list.iter()
        .map(|(n, w)| format!("{n}: {w}"))
        .collect::<Vec<_>>()
        .join("; ")
}
