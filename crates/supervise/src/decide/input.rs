//! Input handling: what each [`Input`] changes in the core's state, before
//! [`Core::step`] advances the ordered work.

use super::*;

impl Core {
    pub(super) fn handle(&mut self, input: Input) {
        match input {
            Input::Start => {
                if self.mode == Mode::Idle {
                    self.mode = Mode::Starting;
                    self.queue = (0..self.children.len()).map(Step::Start).collect();
                }
            }
            Input::Spawned {
                child,
                instance,
                pid,
            } => self.on_spawned(child, instance, pid),
            Input::SpawnFailed {
                child,
                instance,
                error,
            } => self.on_spawn_failed(child, instance, error),
            Input::Exited {
                child,
                instance,
                exit,
            } => self.on_exited(child, instance, exit),
            Input::Ready { child, instance } => {
                if self
                    .children
                    .get(child)
                    .is_some_and(|c| c.policy.notify_ready)
                    && let Some(inst) = self.instance_mut(child, instance)
                    && inst.ready_at.is_none()
                    && inst.stopping.is_none()
                {
                    self.become_ready(child, instance);
                }
            }
            Input::Probed {
                child,
                instance,
                role,
                result,
            } => self.on_probed(child, instance, role, result),
            Input::Timer { token } => self.on_timer(token),
            Input::StopChild(child) => self.on_stop_child(child),
            Input::StartChild(child) => self.on_start_child(child),
            Input::Roll(which) => self.on_roll(which),
            Input::Shutdown => self.stop_all(Outcome::Shutdown),
        }
    }

    pub(super) fn on_spawned(&mut self, child: usize, instance: u64, pid: u32) {
        let now = self.now;
        let Some(inst) = self.instance_mut(child, instance) else {
            return;
        };
        inst.pid = Some(pid);
        let stopping = inst.stopping;
        self.emit(child, EventKind::Spawned { pid });
        if let Some(reason) = stopping {
            // Asked to stop while it was being spawned: stop it now.
            self.out.push(Action::Stop {
                child,
                instance,
                reason,
            });
            self.emit(child, EventKind::Stopping { pid, reason });
            return;
        }
        let policy = &self.children[child].policy;
        let (readiness, notify) = (policy.readiness, policy.notify_ready);
        if readiness.is_none() && !notify {
            self.become_ready(child, instance);
            return;
        }
        if let Some(at) = policy.start_timeout.and_then(|t| now.checked_add(t)) {
            let deadline = self.set_timer(at, TimerPurpose::StartDeadline { child, instance });
            if let Some(inst) = self.instance_mut(child, instance) {
                inst.deadline = Some(deadline);
            }
        }
        if let Some(timing) = readiness {
            self.schedule_probe(
                child,
                instance,
                ProbeRole::Readiness,
                now + timing.initial_delay,
            );
        }
    }

    pub(super) fn on_spawn_failed(&mut self, child: usize, instance: u64, error: String) {
        if self.is_successor(child, instance) {
            let s = self.children[child].successor.take();
            self.emit(
                child,
                EventKind::SpawnFailed {
                    error: error.clone(),
                },
            );
            if s.is_some_and(|s| s.stopping.is_none()) {
                self.replace_failed(child, format!("spawn failed: {error}"));
            }
            return;
        }
        let Some(inst) = self.current(child, instance) else {
            return;
        };
        let stopping = inst.stopping;
        self.emit(
            child,
            EventKind::SpawnFailed {
                error: error.clone(),
            },
        );
        match stopping {
            Some(reason) => self.stopped(child, reason),
            None => self.failure(child, Cause::SpawnFailed(error)),
        }
    }

    pub(super) fn on_exited(&mut self, child: usize, instance: u64, exit: ExitReport) {
        let now = self.now;
        if self.is_successor(child, instance) {
            let Some(s) = self.children[child].successor.take() else {
                return;
            };
            self.emit(
                child,
                EventKind::Exited {
                    pid: s.pid(),
                    exit: exit.clone(),
                    uptime: now.saturating_duration_since(s.spawned_at),
                    expected: s.stopping.is_some(),
                },
            );
            self.cancel_instance_timers(&s);
            if s.stopping.is_none() || s.stopping == Some(StopReason::NotReady) {
                self.replace_failed(child, format!("replacement ended: {exit}"));
            }
            return;
        }
        let Some(inst) = self.current(child, instance).cloned() else {
            return;
        };
        self.cancel_instance_timers(&inst);
        let uptime = now.saturating_duration_since(inst.spawned_at);
        self.children[child].last_exit = Some(exit.clone());
        self.emit(
            child,
            EventKind::Exited {
                pid: inst.pid(),
                exit: exit.clone(),
                uptime,
                expected: inst.stopping.is_some(),
            },
        );
        match inst.stopping {
            Some(StopReason::Unhealthy) => self.failure(child, Cause::Unhealthy),
            Some(StopReason::NotReady) => self.failure(child, Cause::NotReady),
            Some(StopReason::Recycle) => self.adopt_successor(child, &inst),
            Some(reason) => self.stopped(child, reason),
            None => {
                // Already due to be stopped by a queued group restart: its exit changes
                // nothing about the plan, and must not start a second group restart.
                let queued_stop = self.queue.iter().find_map(|s| match s {
                    Step::Stop(c, reason) if *c == child => Some(*reason),
                    _ => None,
                });
                if let Some(reason) = queued_stop {
                    self.note(
                        child,
                        format!("exited: {exit} after {} up", fmt_duration(uptime)),
                        format!("already due to be stopped ({reason}): nothing more to do"),
                    );
                    self.stopped(child, reason);
                } else {
                    self.failure(child, Cause::Exit(exit));
                }
            }
        }
    }

    pub(super) fn on_probed(
        &mut self,
        child: usize,
        instance: u64,
        role: ProbeRole,
        result: Result<(), String>,
    ) {
        let now = self.now;
        let policy = &self.children[child].policy;
        let Some(timing) = (match role {
            ProbeRole::Readiness => policy.readiness,
            ProbeRole::Liveness => policy.liveness,
        }) else {
            return;
        };
        let Some(inst) = self.instance_mut(child, instance) else {
            return;
        };
        if inst.stopping.is_some() {
            return;
        }
        let pid = inst.pid();
        let counter = match role {
            ProbeRole::Readiness => &mut inst.readiness,
            ProbeRole::Liveness => &mut inst.liveness,
        };
        if !counter.in_flight {
            return;
        }
        counter.in_flight = false;
        let next_at = counter
            .started
            .map_or(now, |s| (s + timing.period).max(now));
        match result {
            Ok(()) => {
                counter.ok = counter.ok.saturating_add(1);
                counter.failed = 0;
                let ok = counter.ok;
                match role {
                    ProbeRole::Readiness if ok >= timing.success_threshold => {
                        self.become_ready(child, instance);
                    }
                    ProbeRole::Liveness => {
                        // Under a half-open breaker each passing liveness probe is a further
                        // successful trial (becoming ready was the first).
                        self.breaker_success(child);
                        self.schedule_probe(child, instance, role, next_at);
                    }
                    ProbeRole::Readiness => self.schedule_probe(child, instance, role, next_at),
                }
            }
            Err(detail) => {
                counter.ok = 0;
                counter.failed = counter.failed.saturating_add(1);
                let failed = counter.failed;
                let over = timing.failure_threshold.is_some_and(|t| failed >= t);
                match role {
                    ProbeRole::Readiness if over => {
                        self.emit(
                            child,
                            EventKind::NotReady {
                                pid,
                                detail: format!(
                                    "readiness probe failed {failed} times in a row: {detail}"
                                ),
                            },
                        );
                        self.stop_instance(child, instance, StopReason::NotReady);
                    }
                    ProbeRole::Readiness => self.schedule_probe(child, instance, role, next_at),
                    ProbeRole::Liveness => {
                        self.emit(
                            child,
                            EventKind::ProbeFailed {
                                role,
                                consecutive: failed,
                                detail: detail.clone(),
                            },
                        );
                        if over {
                            self.emit(
                                child,
                                EventKind::Unhealthy {
                                    pid,
                                    failures: failed,
                                    detail: detail.clone(),
                                },
                            );
                            self.note(
                                child,
                                format!("liveness probe failed {failed} times in a row: {detail}"),
                                "unhealthy: stop it and handle it as a failure".into(),
                            );
                            self.stop_instance(child, instance, StopReason::Unhealthy);
                        } else {
                            self.schedule_probe(child, instance, role, next_at);
                        }
                    }
                }
            }
        }
    }

    pub(super) fn on_timer(&mut self, token: u64) {
        let Some(purpose) = self.timers.remove(&token) else {
            return;
        };
        let now = self.now;
        match purpose {
            TimerPurpose::Restart(child) => {
                let Run::Backoff {
                    token: t, trial, ..
                } = self.children[child].run
                else {
                    return;
                };
                if t != token || !self.may_spawn() {
                    return;
                }
                if trial {
                    let c = &mut self.children[child];
                    if let Some(b) = c.breaker.as_mut()
                        && !b.admit(now)
                        && let BreakerState::Open { until } = b.state()
                    {
                        // Not time yet (cannot happen with our own timers; be safe).
                        let token = self.set_timer(until, TimerPurpose::Restart(child));
                        self.children[child].run = Run::Backoff {
                            until,
                            token,
                            trial: true,
                        };
                        return;
                    }
                    self.emit(child, EventKind::BreakerHalfOpen);
                    self.note(
                        child,
                        "breaker open time is up".into(),
                        "half-open: one trial start".into(),
                    );
                }
                self.children[child].run = Run::Idle;
                self.spawn(child);
            }
            TimerPurpose::StartDeadline { child, instance } => {
                let Some(inst) = self.instance_mut(child, instance) else {
                    return;
                };
                if inst.ready_at.is_some() || inst.stopping.is_some() {
                    return;
                }
                inst.deadline = None;
                let pid = inst.pid();
                let timeout = self.children[child]
                    .policy
                    .start_timeout
                    .unwrap_or_default();
                self.emit(
                    child,
                    EventKind::NotReady {
                        pid,
                        detail: format!("not ready within {}", fmt_duration(timeout)),
                    },
                );
                self.stop_instance(child, instance, StopReason::NotReady);
            }
            TimerPurpose::Probe {
                child,
                instance,
                role,
            } => {
                let Some(inst) = self.instance_mut(child, instance) else {
                    return;
                };
                let due = inst.stopping.is_none()
                    && match role {
                        ProbeRole::Readiness => inst.ready_at.is_none(),
                        ProbeRole::Liveness => inst.ready_at.is_some(),
                    };
                let counter = match role {
                    ProbeRole::Readiness => &mut inst.readiness,
                    ProbeRole::Liveness => &mut inst.liveness,
                };
                if counter.timer != Some(token) {
                    return;
                }
                counter.timer = None;
                if !due {
                    return;
                }
                counter.in_flight = true;
                counter.started = Some(now);
                self.out.push(Action::Probe {
                    child,
                    instance,
                    role,
                });
            }
            TimerPurpose::QueueWait => {
                if let Some(Step::Wait { token: t, .. }) = self.queue.front_mut()
                    && *t == Some(token)
                {
                    *t = None;
                }
            }
        }
    }

    pub(super) fn on_stop_child(&mut self, child: usize) {
        self.queue.retain(|s| match s {
            Step::Start(c) | Step::Roll { child: c, .. } => *c != child,
            _ => true,
        });
        match self.children[child].run.clone() {
            Run::Idle => {
                self.children[child].run = Run::Down(DownReason::Stopped);
                self.emit(
                    child,
                    EventKind::Down {
                        reason: "stopped on request".into(),
                    },
                );
            }
            Run::Backoff { token, .. } => {
                self.cancel_timer(token);
                self.children[child].run = Run::Down(DownReason::Stopped);
                self.note(
                    child,
                    "stop requested during backoff".into(),
                    "cancel the restart; stays down".into(),
                );
                self.emit(
                    child,
                    EventKind::Down {
                        reason: "stopped on request".into(),
                    },
                );
            }
            Run::Up(_) => {
                self.note(
                    child,
                    "stop requested".into(),
                    "stop it; a manual stop is never followed by a restart".into(),
                );
                self.stop_child_instances(child, StopReason::Manual);
            }
            Run::Down(_) => {}
        }
        // A replacement from a rolling restart goes too.
        self.stop_child_instances(child, StopReason::Manual);
    }

    pub(super) fn on_start_child(&mut self, child: usize) {
        if !self.may_spawn() {
            return;
        }
        let c = &mut self.children[child];
        match c.run.clone() {
            Run::Down(DownReason::Removed) => {}
            Run::Down(_) | Run::Idle => {
                c.backoff.reset();
                if let Some(b) = c.breaker.as_mut() {
                    b.reset();
                }
                c.trouble = None;
                c.run = Run::Idle;
                self.note(
                    child,
                    "start requested".into(),
                    "start it now; backoff and breaker forgotten".into(),
                );
                self.spawn(child);
            }
            Run::Backoff { token, .. } => {
                self.cancel_timer(token);
                let c = &mut self.children[child];
                c.backoff.reset();
                if let Some(b) = c.breaker.as_mut() {
                    b.reset();
                }
                c.trouble = None;
                c.run = Run::Idle;
                self.note(
                    child,
                    "start requested during backoff".into(),
                    "start it now; backoff and breaker forgotten".into(),
                );
                self.spawn(child);
            }
            Run::Up(_) => {}
        }
    }

    pub(super) fn on_roll(&mut self, which: Option<usize>) {
        if !self.may_spawn() {
            return;
        }
        let children: Vec<usize> = match which {
            Some(c) => vec![c],
            None => (0..self.children.len()).collect(),
        };
        for child in children {
            self.queue.push_back(Step::Roll {
                child,
                successor: None,
            });
        }
    }
}
