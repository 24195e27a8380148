//! The decisions: what happens when a child fails (restart, with backoff and within the
//! restart budget, or give up; group strategies), becomes ready, or is stopped.

use super::*;

impl Core {
    /// A child failed (exited on its own, was unhealthy, never became ready, could not be
    /// spawned). Decide: restart (alone or with siblings, after a backoff), leave it down,
    /// open its breaker, or give up.
    pub(super) fn failure(&mut self, child: usize, cause: Cause) {
        let now = self.now;
        let what = cause.describe();
        // The instance is gone; every branch below decides what the child does next.
        let uptime_note = match std::mem::replace(&mut self.children[child].run, Run::Idle) {
            Run::Up(inst) => format!(
                " after {} up",
                fmt_duration(now.saturating_duration_since(inst.spawned_at))
            ),
            _ => String::new(),
        };
        let event = match &cause {
            Cause::Exit(_) => format!("exited: {what}{uptime_note}"),
            _ => format!("failed: {what}{uptime_note}"),
        };

        if matches!(self.mode, Mode::Stopping(_) | Mode::Done) {
            self.children[child].run = Run::Down(DownReason::Ended);
            self.note(
                child,
                event,
                "the supervisor is stopping: stays down".into(),
            );
            return;
        }

        let c = &self.children[child];
        let abnormal = match &cause {
            Cause::Exit(exit) => !c.policy.clean.is_clean(&exit.ending),
            Cause::SpawnFailed(_) | Cause::Unhealthy | Cause::NotReady => true,
        };
        let restart = c.policy.restart;
        let wanted = match restart {
            Restart::Permanent => true,
            Restart::Transient => abnormal,
            Restart::Temporary => false,
        };
        if !wanted {
            let (down, why) = match restart {
                Restart::Temporary => (
                    DownReason::Removed,
                    "temporary children are never restarted",
                ),
                _ => (
                    DownReason::Finished,
                    "transient children are restarted only after an abnormal exit, and this one was clean",
                ),
            };
            self.children[child].run = Run::Down(down);
            self.note(child, event, format!("stays down: {why}"));
            self.emit(
                child,
                EventKind::Down {
                    reason: format!("{what}; {why}"),
                },
            );
            if let Some(s) = self.children[child].successor.as_ref().map(|s| s.id) {
                self.stop_instance(child, s, StopReason::Shutdown);
            }
            return;
        }
        let rule = match restart {
            Restart::Permanent => "permanent restarts after any exit".to_string(),
            _ => format!("transient restarts after an abnormal exit ({what})"),
        };

        // The breaker sees every failure first.
        let optional = self.children[child].policy.optional;
        if let Some(b) = self.children[child].breaker.as_mut() {
            b.record_failure(now);
            if let BreakerState::Open { until } = b.state() {
                let failures = b.recent_failures();
                let window = b.config().window();
                let retry_after = until.saturating_duration_since(now);
                self.emit(
                    child,
                    EventKind::BreakerOpened {
                        failures,
                        retry_after,
                    },
                );
                let why = format!(
                    "breaker open after {failures} failures within {} (last: {what})",
                    fmt_duration(window)
                );
                if optional {
                    self.note(
                        child,
                        event,
                        format!(
                            "{why}: optional, so it stays down and the group is degraded; trial start in {}",
                            fmt_duration(retry_after)
                        ),
                    );
                    self.children[child].trouble = Some(why);
                    self.drop_successor(child);
                    let token = self.set_timer(until, TimerPurpose::Restart(child));
                    self.children[child].run = Run::Backoff {
                        until,
                        token,
                        trial: true,
                    };
                } else {
                    let name = self.children[child].policy.name.clone();
                    let reason = format!("critical child {name}: {why}");
                    self.note(child, event, format!("give up and escalate: {reason}"));
                    self.give_up(reason);
                }
                return;
            }
        }

        // Critical children spend the group's restart budget; optional ones are governed by
        // their breaker alone, so a flapping cache cannot take the group down.
        let mut budget_note = String::new();
        if !optional {
            match self.budget.record(now) {
                Ok(used) => {
                    budget_note = format!(
                        "; intensity {used}/{} within {}",
                        self.budget.intensity(),
                        fmt_duration(self.budget.period())
                    );
                }
                Err(exceeded) => {
                    let name = self.children[child].policy.name.clone();
                    let reason = format!(
                        "restart intensity exceeded: {} restarts within {} (at most {} allowed); last: {name} {what}",
                        exceeded.restarts,
                        fmt_duration(self.budget.period()),
                        self.budget.intensity(),
                    );
                    self.note(child, event, format!("give up and escalate: {reason}"));
                    self.give_up(reason);
                    return;
                }
            }
        }

        let delay = self.children[child].backoff.failed(now);
        let attempt = self.children[child].backoff.attempt();
        let group = !optional && self.strategy != Strategy::OneForOne;
        if group {
            self.drop_successor(child);
        }

        // A rolling restart was bringing up a replacement: it becomes the instance.
        if !group
            && let Some(s) = self.children[child].successor.take()
            && s.stopping.is_none()
        {
            self.note(
                child,
                event,
                format!("{rule}{budget_note}: its replacement from the rolling restart takes over"),
            );
            let ready = s.ready_at.is_some();
            let id = s.id;
            self.children[child].run = Run::Up(s);
            if ready {
                self.start_liveness(child, id);
            }
            return;
        }

        if !group {
            let until = now + delay;
            let token = self.set_timer(until, TimerPurpose::Restart(child));
            self.children[child].run = Run::Backoff {
                until,
                token,
                trial: false,
            };
            self.note(
                child,
                event,
                format!(
                    "restart in {}: {rule}; backoff attempt {attempt}{budget_note}",
                    fmt_duration(delay)
                ),
            );
            self.emit(
                child,
                EventKind::Restarting {
                    after: delay,
                    attempt,
                    reason: what,
                },
            );
        } else {
            self.group_restart(child, delay, attempt, event, rule, budget_note, what);
        }
    }

    /// one_for_all / rest_for_one: stop the siblings in scope in reverse order, wait out the
    /// backoff, start them all again in order.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn group_restart(
        &mut self,
        origin: usize,
        delay: Duration,
        attempt: u32,
        event: String,
        rule: String,
        budget_note: String,
        what: String,
    ) {
        let now = self.now;
        let scope: Vec<usize> = match self.strategy {
            Strategy::RestForOne => (origin..self.children.len()).collect(),
            _ => (0..self.children.len()).collect(),
        };
        self.children[origin].run = Run::Idle;
        let mut queue: VecDeque<Step> = scope
            .iter()
            .rev()
            .filter(|&&j| j != origin)
            .map(|&j| Step::Stop(j, StopReason::Sibling))
            .collect();
        queue.push_back(Step::Wait {
            until: now + delay,
            token: None,
        });
        queue.extend(scope.iter().map(|&j| Step::Start(j)));
        // Keep what was still to be started outside the scope (an initial start in progress).
        for step in std::mem::take(&mut self.queue) {
            match step {
                Step::Start(j) | Step::Roll { child: j, .. } if !scope.contains(&j) => {
                    queue.push_back(step)
                }
                _ => {}
            }
        }
        self.queue = queue;
        let names: Vec<&str> = scope
            .iter()
            .map(|&j| self.children[j].policy.name.as_str())
            .collect();
        let names = names.join(", ");
        self.note(
            origin,
            event,
            format!(
                "{} restart in {}: {rule}; stop [{names}] in reverse order, start again in order; backoff attempt {attempt}{budget_note}",
                self.strategy,
                fmt_duration(delay)
            ),
        );
        self.emit(
            origin,
            EventKind::Restarting {
                after: delay,
                attempt,
                reason: format!("{what}; {} restarts {names}", self.strategy),
            },
        );
    }

    /// An instance that was asked to stop has exited (or never spawned).
    pub(super) fn stopped(&mut self, child: usize, reason: StopReason) {
        let c = &mut self.children[child];
        let (down, note) = match reason {
            StopReason::Manual => (Run::Down(DownReason::Stopped), "stopped on request"),
            StopReason::Sibling if c.policy.restart == Restart::Temporary => (
                Run::Down(DownReason::Removed),
                "temporary: removed instead of restarted with its siblings",
            ),
            StopReason::Sibling => (Run::Idle, "stopped for a group restart"),
            _ => (Run::Down(DownReason::Ended), "stopped with the supervisor"),
        };
        c.run = down;
        if let Run::Down(_) = c.run {
            self.emit(
                child,
                EventKind::Down {
                    reason: note.into(),
                },
            );
        }
    }

    pub(super) fn give_up(&mut self, reason: String) {
        self.emit_group(EventKind::GaveUp {
            reason: reason.clone(),
        });
        self.stop_all(Outcome::GaveUp(reason));
    }

    /// Stop everything in reverse start order, then end with `outcome`.
    pub(super) fn stop_all(&mut self, outcome: Outcome) {
        if matches!(self.mode, Mode::Stopping(_) | Mode::Done) {
            return;
        }
        let reason = match outcome {
            Outcome::Shutdown => StopReason::Shutdown,
            Outcome::GaveUp(_) => StopReason::GiveUp,
        };
        self.outcome = Some(outcome.clone());
        self.mode = Mode::Stopping(outcome);
        for step in std::mem::take(&mut self.queue) {
            if let Step::Wait { token: Some(t), .. } = step {
                self.cancel_timer(t);
            }
        }
        for child in 0..self.children.len() {
            match self.children[child].run.clone() {
                Run::Backoff { token, .. } => {
                    self.cancel_timer(token);
                    self.children[child].run = Run::Down(DownReason::Ended);
                }
                Run::Idle => self.children[child].run = Run::Down(DownReason::Ended),
                _ => {}
            }
        }
        self.queue = (0..self.children.len())
            .rev()
            .map(|c| Step::Stop(c, reason))
            .collect();
    }

    /// A rolling restart's old instance has exited: the new one takes its place.
    pub(super) fn adopt_successor(&mut self, child: usize, old: &Instance) {
        match self.children[child].successor.take() {
            Some(s) if s.stopping.is_none() => {
                let id = s.id;
                let new_pid = s.pid();
                let ready = s.ready_at.is_some();
                self.children[child].run = Run::Up(s);
                self.note(
                    child,
                    "rolling restart: old instance exited".into(),
                    format!("the ready replacement (pid {new_pid}) takes over"),
                );
                self.emit(
                    child,
                    EventKind::Replaced {
                        old_pid: old.pid(),
                        new_pid,
                    },
                );
                if ready {
                    self.start_liveness(child, id);
                }
            }
            _ => {
                // The replacement vanished while the old one was stopping: start afresh.
                self.children[child].run = Run::Idle;
                if self.may_spawn() {
                    self.spawn(child);
                }
            }
        }
    }

    pub(super) fn replace_failed(&mut self, child: usize, detail: String) {
        self.children[child].roll_failure = Some(detail.clone());
        self.note(
            child,
            format!("rolling restart failed: {detail}"),
            "keep the old instance running".into(),
        );
        self.emit(child, EventKind::ReplaceFailed { detail });
    }

    pub(super) fn become_ready(&mut self, child: usize, instance: u64) {
        let now = self.now;
        let is_successor = self.is_successor(child, instance);
        let Some(inst) = self.instance_mut(child, instance) else {
            return;
        };
        inst.ready_at = Some(now);
        let deadline = inst.deadline.take();
        if let Some(t) = inst.readiness.timer.take() {
            self.cancel_timer(t);
        }
        let Some(inst) = self.instance_mut(child, instance) else {
            return;
        };
        let pid = inst.pid();
        let after = now.saturating_duration_since(inst.spawned_at);
        if let Some(t) = deadline {
            self.cancel_timer(t);
        }
        self.emit(child, EventKind::Ready { pid, after });
        if is_successor {
            return;
        }
        self.children[child].backoff.up(now);
        self.breaker_success(child);
        self.start_liveness(child, instance);
    }

    pub(super) fn breaker_success(&mut self, child: usize) {
        let now = self.now;
        let c = &mut self.children[child];
        let Some(b) = c.breaker.as_mut() else {
            return;
        };
        let before = b.state();
        b.record_success(now);
        if !matches!(before, BreakerState::Closed) && b.state() == BreakerState::Closed {
            c.trouble = None;
            self.note(
                child,
                "trial start succeeded".into(),
                "breaker closed".into(),
            );
            self.emit(child, EventKind::BreakerClosed);
        }
    }

    pub(super) fn start_liveness(&mut self, child: usize, instance: u64) {
        if let Some(timing) = self.children[child].policy.liveness {
            let at = self.now + timing.initial_delay;
            self.schedule_probe(child, instance, ProbeRole::Liveness, at);
        }
    }
}
