//! The queue of ordered work ([`Step`]s): starts in order, stops in reverse order, rolling
//! restarts, one at a time.

use super::*;

impl Core {
    pub(super) fn advance(&mut self) {
        let now = self.now;
        loop {
            let Some(step) = self.queue.front().cloned() else {
                match self.mode.clone() {
                    Mode::Starting => {
                        self.mode = Mode::Running;
                        self.emit_group(EventKind::Running);
                    }
                    Mode::Stopping(outcome) if self.all_down() => {
                        self.mode = Mode::Done;
                        for t in std::mem::take(&mut self.timers).into_keys() {
                            self.out.push(Action::CancelTimer { token: t });
                        }
                        self.emit_group(EventKind::Stopped);
                        self.out.push(Action::Done(outcome));
                    }
                    _ => {}
                }
                return;
            };
            let done = match step {
                Step::Start(child) => match &self.children[child].run {
                    Run::Idle => {
                        if self.may_spawn() {
                            self.spawn(child);
                        }
                        false
                    }
                    Run::Up(inst) => inst.ready_at.is_some() && inst.stopping.is_none(),
                    // A broken optional child does not hold up the rest.
                    Run::Backoff { trial: true, .. } => self.children[child].policy.optional,
                    Run::Backoff { .. } => false,
                    Run::Down(_) => true,
                },
                Step::Stop(child, reason) => {
                    if let Run::Backoff { token, .. } = self.children[child].run {
                        self.cancel_timer(token);
                        self.children[child].run = match reason {
                            StopReason::Sibling => Run::Idle,
                            _ => Run::Down(DownReason::Ended),
                        };
                    }
                    self.stop_child_instances(child, reason);
                    !matches!(self.children[child].run, Run::Up(_))
                        && self.children[child].successor.is_none()
                }
                Step::Wait { until, token } => {
                    if now >= until {
                        true
                    } else {
                        if token.is_none() {
                            let t = self.set_timer(until, TimerPurpose::QueueWait);
                            if let Some(Step::Wait { token, .. }) = self.queue.front_mut() {
                                *token = Some(t);
                            }
                        }
                        false
                    }
                }
                Step::Roll { child, successor } => self.advance_roll(child, successor),
            };
            if !done {
                return;
            }
            self.queue.pop_front();
        }
    }

    /// One rolling-restart step; true when it is finished (or has nothing to do).
    pub(super) fn advance_roll(&mut self, child: usize, successor: Option<u64>) -> bool {
        let c = &self.children[child];
        match successor {
            None => match &c.run {
                Run::Up(inst) if inst.stopping.is_none() && c.successor.is_none() => {
                    if inst.ready_at.is_none() {
                        return false; // let it finish starting first
                    }
                    if !self.may_spawn() {
                        return true;
                    }
                    let id = self.new_instance();
                    let now = self.now;
                    let c = &mut self.children[child];
                    c.successor = Some(Instance::new(id, now));
                    c.spawns += 1;
                    c.roll_failure = None;
                    self.note(
                        child,
                        "rolling restart".into(),
                        "start a replacement; stop the old instance once it is ready".into(),
                    );
                    self.out.push(Action::Spawn {
                        child,
                        instance: id,
                    });
                    if let Some(Step::Roll { successor, .. }) = self.queue.front_mut() {
                        *successor = Some(id);
                    }
                    false
                }
                Run::Up(_) => false,
                _ => true,
            },
            Some(id) => {
                if let Some(s) = &c.successor
                    && s.id == id
                {
                    if s.ready_at.is_some()
                        && let Run::Up(old) = &c.run
                        && old.stopping.is_none()
                    {
                        let old = old.id;
                        self.stop_instance(child, old, StopReason::Recycle);
                    }
                    return false;
                }
                // Either adopted (done) or the replacement failed (done, old kept).
                true
            }
        }
    }
}
