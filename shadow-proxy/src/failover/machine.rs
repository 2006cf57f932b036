//! One service's failover state machine: pure decisions from what the
//! checks and the failure model say, with no system in them. The
//! orchestrator performs each [`Action`] and tells the machine the result.
//!
//! ```text
//!            level >= stage                 level >= cutover (staged, gate)
//!  Primary ───────────────► Staged ─────────────────────────────┐
//!     ▲   ◄─────────────── (level < stage for unstage_s)        │
//!     │                                                          ▼
//!     │   primary failed (fail_limit checks) ──────────────► OnShadow ──promote──► Promoted
//!     │                                                          │
//!     └──── rollback: primary healthy recover_checks (after a failure),
//!           no failure within false_positive_s (after a prediction),
//!           shadow failed shadow_fail_limit checks (primary healthy),
//!           or asked
//! ```

use std::time::Duration;

use shadow_api::{
    failover::{Cause, Phase},
    predict::Level,
};

/// When the machine moves.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// Consecutive failed checks that make the primary failed.
    pub fail_limit: u32,
    /// Consecutive healthy checks of a recovered primary before rollback.
    pub recover_checks: u32,
    /// Consecutive failed checks of the shadow, once it serves, before
    /// rolling back to a healthy primary (the analysis' failure limit).
    pub shadow_fail_limit: u32,
    /// A predicted failure that has not come after this long was a false
    /// positive: roll back.
    pub false_positive: Duration,
    /// Staging is undone once the level stays below `stage` this long.
    pub unstage_after: Duration,
    /// A shadow that stays healthy this long after a cutover is promoted
    /// (`None`: only when asked).
    pub promote_after: Option<Duration>,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            fail_limit: 3,
            recover_checks: 5,
            shadow_fail_limit: 3,
            false_positive: Duration::from_secs(300),
            unstage_after: Duration::from_secs(600),
            promote_after: None,
        }
    }
}

/// What one round of checks saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// Unix milliseconds.
    pub now_ms: u64,
    pub level: Level,
    pub primary_ok: bool,
    pub shadow_ok: bool,
}

/// What the orchestrator should do now.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Run the profile's sync and warm steps.
    Stage {
        reason: String,
    },
    Unstage {
        reason: String,
    },
    /// Gate, then move new connections to the shadow.
    Cutover {
        cause: Cause,
        reason: String,
    },
    /// Move new connections back to the primary.
    Rollback {
        reason: String,
    },
    Promote {
        reason: String,
    },
    /// Something needs doing and cannot be done (a shadow that fails its
    /// gate when the primary is down): shown, not acted on.
    Stuck {
        reason: String,
    },
}

/// One service's state.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Machine {
    pub phase: Phase,
    pub cause: Option<Cause>,
    /// Unix milliseconds the phase began.
    pub since_ms: u64,
    pub primary_failures: u32,
    pub primary_successes: u32,
    pub shadow_failures: u32,
    /// The primary failed at some point since the cutover.
    pub primary_failed_since_cutover: bool,
    /// Unix milliseconds the level was last at `stage` or above.
    pub last_stage_ms: u64,
    /// A stuck reason already reported (reported once).
    #[serde(skip)]
    pub stuck: Option<String>,
}

impl Machine {
    /// Takes one round of checks; returns what to do, if anything.
    pub fn observe(&mut self, o: &Observation, rules: &Rules) -> Option<Action> {
        if o.primary_ok {
            self.primary_successes += 1;
            self.primary_failures = 0;
        } else {
            self.primary_failures += 1;
            self.primary_successes = 0;
        }
        if o.shadow_ok {
            self.shadow_failures = 0;
        } else {
            self.shadow_failures += 1;
        }
        if o.level >= Level::Stage {
            self.last_stage_ms = o.now_ms;
        }
        let primary_failed = self.primary_failures >= rules.fail_limit;
        if primary_failed && matches!(self.phase, Phase::OnShadow) {
            self.primary_failed_since_cutover = true;
        }
        let action = match self.phase {
            Phase::Primary | Phase::Staged if primary_failed => {
                if o.shadow_ok {
                    Some(Action::Cutover {
                        cause: Cause::PrimaryFailed,
                        reason: format!(
                            "the primary failed {} consecutive checks",
                            self.primary_failures
                        ),
                    })
                } else {
                    Some(Action::Stuck {
                        reason: "the primary failed, and the shadow is not healthy either".into(),
                    })
                }
            }
            Phase::Staged if o.level >= Level::Cutover => {
                if o.shadow_ok {
                    Some(Action::Cutover {
                        cause: Cause::Predicted,
                        reason: "the failure probability reached cutover".into(),
                    })
                } else {
                    Some(Action::Stuck {
                        reason: "the failure probability reached cutover, but the shadow is not healthy: staying on the primary".into(),
                    })
                }
            }
            Phase::Primary if o.level >= Level::Stage => Some(Action::Stage {
                reason: format!("the failure probability reached {}", o.level.name()),
            }),
            Phase::Staged
                if o.now_ms.saturating_sub(self.last_stage_ms)
                    >= rules.unstage_after.as_millis() as u64 =>
            {
                Some(Action::Unstage {
                    reason: format!(
                        "the failure probability stayed below stage for {:?}",
                        rules.unstage_after
                    ),
                })
            }
            Phase::OnShadow => self.on_shadow(o, rules),
            _ => None,
        };
        match action {
            Some(Action::Stuck { reason }) => {
                // Reported once per stuck spell, not every check.
                if self.stuck.as_ref() == Some(&reason) {
                    None
                } else {
                    self.stuck = Some(reason.clone());
                    Some(Action::Stuck { reason })
                }
            }
            other => {
                self.stuck = None;
                other
            }
        }
    }

    fn on_shadow(&self, o: &Observation, rules: &Rules) -> Option<Action> {
        let on_for = Duration::from_millis(o.now_ms.saturating_sub(self.since_ms));
        if self.shadow_failures >= rules.shadow_fail_limit {
            return if o.primary_ok {
                Some(Action::Rollback {
                    reason: format!(
                        "the shadow failed {} consecutive checks after the cutover",
                        self.shadow_failures
                    ),
                })
            } else {
                Some(Action::Stuck {
                    reason: "the shadow regressed, but the primary is down: staying on the shadow"
                        .into(),
                })
            };
        }
        match self.cause {
            Some(Cause::PrimaryFailed) | Some(Cause::Predicted)
                if self.primary_failed_since_cutover
                    && self.primary_successes >= rules.recover_checks =>
            {
                Some(Action::Rollback {
                    reason: format!(
                        "the primary is healthy again ({} consecutive checks)",
                        self.primary_successes
                    ),
                })
            }
            Some(Cause::Predicted)
                if !self.primary_failed_since_cutover
                    && on_for >= rules.false_positive
                    && o.level < Level::Cutover =>
            {
                Some(Action::Rollback {
                    reason: format!(
                        "false positive: no failure within {:?} of the predicted cutover",
                        rules.false_positive
                    ),
                })
            }
            _ => match rules.promote_after {
                Some(after) if on_for >= after && self.cause == Some(Cause::Manual) => {
                    Some(Action::Promote {
                        reason: format!("the shadow stayed healthy for {after:?}"),
                    })
                }
                _ => None,
            },
        }
    }

    /// What the machine does next, and on what, in words: the answer to
    /// "what happens if this prediction holds" (`shadowctl failover
    /// predict`). `level` and `shadow_ok` are the last check's.
    pub fn next(&self, level: Level, shadow_ok: bool, rules: &Rules, now_ms: u64) -> String {
        let fails = format!(
            "the primary fails {} consecutive checks ({} so far)",
            rules.fail_limit, self.primary_failures
        );
        let on_for = Duration::from_millis(now_ms.saturating_sub(self.since_ms));
        match self.phase {
            Phase::Primary if level >= Level::Stage => {
                "stage now: run the profile's sync and warm steps on the shadow".into()
            }
            Phase::Primary => format!("stage when the level reaches stage; cut over if {fails}"),
            Phase::Staged if level >= Level::Cutover && shadow_ok => {
                "cut over now: the gate, then new connections to the shadow".into()
            }
            Phase::Staged if level >= Level::Cutover => {
                "nothing: the level is cutover, but the shadow is not healthy".into()
            }
            Phase::Staged => {
                let below = Duration::from_millis(now_ms.saturating_sub(self.last_stage_ms));
                format!(
                    "cut over when the level reaches cutover or {fails}; unstage after {}s more below stage",
                    rules.unstage_after.saturating_sub(below).as_secs()
                )
            }
            Phase::OnShadow => {
                let back = match self.cause {
                    _ if self.primary_failed_since_cutover => format!(
                        "roll back once the primary passes {} consecutive checks ({} so far)",
                        rules.recover_checks, self.primary_successes
                    ),
                    Some(Cause::Predicted) => format!(
                        "roll back as a false positive in {}s unless the primary fails",
                        rules.false_positive.saturating_sub(on_for).as_secs()
                    ),
                    _ => match rules.promote_after {
                        Some(after) => format!(
                            "promote in {}s if the shadow stays healthy",
                            after.saturating_sub(on_for).as_secs()
                        ),
                        None => "stay on the shadow until asked".into(),
                    },
                };
                format!(
                    "{back}; roll back sooner if the shadow fails {} consecutive checks ({} so far)",
                    rules.shadow_fail_limit, self.shadow_failures
                )
            }
            Phase::Promoted => "nothing: promoted, it stays on the shadow".into(),
        }
    }

    /// The orchestrator did `to` (stage, cutover, rollback, ...).
    pub fn enter(&mut self, to: Phase, cause: Option<Cause>, now_ms: u64) {
        self.phase = to;
        self.cause = cause;
        self.since_ms = now_ms;
        self.shadow_failures = 0;
        if to == Phase::OnShadow {
            // A cutover because the primary failed counts that failure.
            self.primary_failed_since_cutover = cause == Some(Cause::PrimaryFailed);
            self.primary_successes = 0;
        } else {
            self.primary_failed_since_cutover = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(now_s: u64, level: Level, primary_ok: bool, shadow_ok: bool) -> Observation {
        Observation {
            now_ms: now_s * 1000,
            level,
            primary_ok,
            shadow_ok,
        }
    }

    /// Runs `o` through the machine, doing what it says.
    fn step(m: &mut Machine, o: Observation, rules: &Rules) -> Option<Action> {
        let a = m.observe(&o, rules);
        match &a {
            Some(Action::Stage { .. }) => m.enter(Phase::Staged, None, o.now_ms),
            Some(Action::Unstage { .. }) | Some(Action::Rollback { .. }) => {
                m.enter(Phase::Primary, None, o.now_ms);
            }
            Some(Action::Cutover { cause, .. }) => m.enter(Phase::OnShadow, Some(*cause), o.now_ms),
            Some(Action::Promote { .. }) => m.enter(Phase::Promoted, m.cause, o.now_ms),
            _ => {}
        }
        a
    }

    #[test]
    fn next_says_what_each_phase_waits_for() {
        let rules = Rules::default();
        let mut m = Machine::default();
        assert!(m.next(Level::Ok, true, &rules, 0).starts_with("stage when"));
        assert!(
            m.next(Level::Stage, true, &rules, 0)
                .starts_with("stage now")
        );
        step(&mut m, obs(0, Level::Stage, true, true), &rules);
        let n = m.next(Level::Ok, true, &rules, 100_000);
        assert!(n.contains("unstage after 500s"), "{n}");
        assert!(
            m.next(Level::Cutover, true, &rules, 0)
                .starts_with("cut over now")
        );
        assert!(
            m.next(Level::Cutover, false, &rules, 0)
                .starts_with("nothing")
        );
        step(&mut m, obs(10, Level::Cutover, true, true), &rules);
        let n = m.next(Level::Ok, true, &rules, 70_000);
        assert!(n.contains("false positive in 240s"), "{n}");
        step(&mut m, obs(20, Level::Ok, false, true), &rules);
        step(&mut m, obs(21, Level::Ok, false, true), &rules);
        step(&mut m, obs(22, Level::Ok, false, true), &rules);
        step(&mut m, obs(23, Level::Ok, true, true), &rules);
        let n = m.next(Level::Ok, true, &rules, 23_000);
        assert!(n.contains("passes 5 consecutive checks (1 so far)"), "{n}");
    }

    #[test]
    fn a_prediction_stages_then_cuts_over_and_a_false_positive_rolls_back() {
        let rules = Rules::default();
        let mut m = Machine::default();
        assert!(matches!(
            step(&mut m, obs(0, Level::Stage, true, true), &rules),
            Some(Action::Stage { .. })
        ));
        assert!(matches!(
            step(&mut m, obs(10, Level::Cutover, true, true), &rules),
            Some(Action::Cutover {
                cause: Cause::Predicted,
                ..
            })
        ));
        // No failure comes; the probability falls.
        assert_eq!(step(&mut m, obs(100, Level::Ok, true, true), &rules), None);
        let a = step(&mut m, obs(311, Level::Ok, true, true), &rules);
        assert!(
            matches!(&a, Some(Action::Rollback { reason }) if reason.contains("false positive")),
            "{a:?}"
        );
        assert_eq!(m.phase, Phase::Primary);
    }

    #[test]
    fn a_failed_primary_cuts_over_and_rolls_back_once_healthy_again() {
        let rules = Rules::default();
        let mut m = Machine::default();
        for s in 0..2 {
            assert_eq!(step(&mut m, obs(s, Level::Ok, false, true), &rules), None);
        }
        assert!(matches!(
            step(&mut m, obs(2, Level::Ok, false, true), &rules),
            Some(Action::Cutover {
                cause: Cause::PrimaryFailed,
                ..
            })
        ));
        for s in 3..7 {
            assert_eq!(step(&mut m, obs(s, Level::Ok, true, true), &rules), None);
        }
        assert!(matches!(
            step(&mut m, obs(7, Level::Ok, true, true), &rules),
            Some(Action::Rollback { .. })
        ));
    }

    #[test]
    fn a_regressing_shadow_rolls_back_only_to_a_healthy_primary() {
        let rules = Rules::default();
        let mut m = Machine::default();
        m.enter(Phase::OnShadow, Some(Cause::Manual), 0);
        step(&mut m, obs(1, Level::Ok, true, false), &rules);
        step(&mut m, obs(2, Level::Ok, true, false), &rules);
        let a = step(&mut m, obs(3, Level::Ok, true, false), &rules);
        assert!(matches!(&a, Some(Action::Rollback { reason }) if reason.contains("shadow")));

        let mut m = Machine::default();
        m.enter(Phase::OnShadow, Some(Cause::PrimaryFailed), 0);
        for s in 1..3 {
            step(&mut m, obs(s, Level::Ok, false, false), &rules);
        }
        let a = step(&mut m, obs(3, Level::Ok, false, false), &rules);
        assert!(matches!(a, Some(Action::Stuck { .. })), "{a:?}");
        // Said once, not at every check.
        assert_eq!(step(&mut m, obs(4, Level::Ok, false, false), &rules), None);
        assert_eq!(m.phase, Phase::OnShadow);
    }

    #[test]
    fn an_unhealthy_shadow_is_never_cut_over_to_on_a_prediction() {
        let rules = Rules::default();
        let mut m = Machine::default();
        step(&mut m, obs(0, Level::Stage, true, true), &rules);
        let a = step(&mut m, obs(1, Level::Cutover, true, false), &rules);
        assert!(matches!(a, Some(Action::Stuck { .. })), "{a:?}");
        assert_eq!(m.phase, Phase::Staged);
        // Unstaged once the level stays low.
        let a = step(&mut m, obs(700, Level::Ok, true, true), &rules);
        assert!(matches!(a, Some(Action::Unstage { .. })), "{a:?}");
    }
}
