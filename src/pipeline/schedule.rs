//! The retraining schedule: a cron expression in a time zone. Pure.
use crate::api::TriggerSpec;
use croner::Cron;
use croner::parser::CronParser;
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

/// A parsed schedule.
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: Cron,
    tz: TimeZone,
    /// `<expression>` or `<expression> (<time zone>)`: what `nextScheduleTime` was computed for.
    pub key: String,
}

impl Schedule {
    /// The schedule of a spec, if it has one.
    pub fn from_spec(spec: &TriggerSpec) -> Result<Option<Self>, String> {
        let Some(expr) = spec.schedule.as_deref() else {
            return Ok(None);
        };
        let cron = CronParser::new().parse(expr).map_err(|e| {
            format!("spec.triggers.schedule {expr:?} is not a cron expression: {e}")
        })?;
        shortest_gap_allowed(expr, &cron)?;
        let (tz, key) = match spec.time_zone.as_deref() {
            Some(name) => (
                TimeZone::get(name).map_err(|e| {
                    format!("spec.triggers.timeZone {name:?} is not a known IANA time zone: {e}")
                })?,
                format!("{expr} ({name})"),
            ),
            None => (TimeZone::UTC, expr.to_string()),
        };
        Ok(Some(Self { cron, tz, key }))
    }

    /// The first time strictly after `after` that the schedule fires.
    pub fn next_after(&self, after: Timestamp) -> Result<Timestamp, String> {
        let zoned = Zoned::new(after, self.tz.clone());
        self.cron
            .find_next_occurrence(&zoned, false)
            .map(|z| z.timestamp())
            .map_err(|e| format!("schedule {:?} has no next occurrence: {e}", self.key))
    }
}

/// The shortest time between two runs a schedule may ask for, as for a CronJob: a run trains
/// a model, and each one writes status and events.
pub const MIN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Refuses an expression whose seconds field fires more than once a minute (five fields
/// cannot). Two firings less than a minute apart fall in one minute that the expression
/// matches, so the first few occurrences after any time show them.
fn shortest_gap_allowed(expr: &str, cron: &Cron) -> Result<(), String> {
    let mut at = Zoned::new(Timestamp::UNIX_EPOCH, TimeZone::UTC);
    let mut previous: Option<Timestamp> = None;
    for _ in 0..4 {
        let Ok(next) = cron.find_next_occurrence(&at, false) else {
            return Ok(());
        };
        if let Some(p) = previous {
            let gap = next.timestamp().duration_since(p);
            if gap < jiff::SignedDuration::try_from(MIN_INTERVAL).unwrap_or_default() {
                return Err(format!(
                    "spec.triggers.schedule {expr:?} fires every {}s; a pipeline runs at most once a minute",
                    gap.as_secs()
                ));
            }
        }
        previous = Some(next.timestamp());
        at = next;
    }
    Ok(())
}

/// What the schedule says now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tick {
    /// The occurrence that fired (at most one, however many were missed).
    pub fired: Option<Timestamp>,
    /// When it fires next.
    pub next: Option<Timestamp>,
    /// The schedule the times belong to.
    pub key: Option<String>,
}

/// Looks at the schedule: a new or changed schedule only computes its next time; a due one
/// fires once, even if the operator was down over several occurrences.
pub fn tick(
    schedule: Option<&Schedule>,
    observed_key: Option<&str>,
    next: Option<Timestamp>,
    now: Timestamp,
) -> Result<Tick, String> {
    let Some(schedule) = schedule else {
        return Ok(Tick::default());
    };
    let key = Some(schedule.key.clone());
    match next {
        Some(due) if observed_key == Some(schedule.key.as_str()) => {
            if now >= due {
                Ok(Tick {
                    fired: Some(due),
                    next: Some(schedule.next_after(now)?),
                    key,
                })
            } else {
                Ok(Tick {
                    fired: None,
                    next: Some(due),
                    key,
                })
            }
        }
        _ => Ok(Tick {
            fired: None,
            next: Some(schedule.next_after(now)?),
            key,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_fires_at_most_once_a_minute() {
        let spec = |expr: &str| TriggerSpec {
            schedule: Some(expr.into()),
            time_zone: None,
        };
        for (expr, every) in [
            ("* * * * * *", "every 1s"),
            ("*/30 * * * * *", "every 30s"),
            ("0,59 * * * * *", "every 1s"),
            ("15,45 0 3 * * 1", "every 30s"),
        ] {
            let err = Schedule::from_spec(&spec(expr)).unwrap_err();
            assert!(
                err.contains(every) && err.contains("at most once a minute"),
                "{expr}: {err}"
            );
        }
        for expr in [
            "* * * * *",
            "0 * * * * *",
            "30 0 3 * * 1",
            "0 3 * * 1",
            "*/5 * * * *",
        ] {
            assert!(Schedule::from_spec(&spec(expr)).is_ok(), "{expr}");
        }
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn sched(expr: &str, tz: Option<&str>) -> Schedule {
        let spec = TriggerSpec {
            schedule: Some(expr.into()),
            time_zone: tz.map(Into::into),
        };
        Schedule::from_spec(&spec).unwrap().unwrap()
    }

    #[test]
    fn no_schedule_means_no_times() {
        assert!(
            Schedule::from_spec(&TriggerSpec::default())
                .unwrap()
                .is_none()
        );
        assert_eq!(
            tick(
                None,
                Some("x"),
                Some(ts("2026-01-01T00:00:00Z")),
                ts("2027-01-01T00:00:00Z")
            )
            .unwrap(),
            Tick::default()
        );
    }

    #[test]
    fn next_occurrence_honours_the_time_zone() {
        // Mondays 03:00 in Paris (CET, UTC+1 in winter) is 02:00 UTC.
        let s = sched("0 3 * * 1", Some("Europe/Paris"));
        assert_eq!(
            s.next_after(ts("2026-11-25T12:00:00Z")).unwrap(),
            ts("2026-11-30T02:00:00Z")
        );
        let utc = sched("0 3 * * 1", None);
        assert_eq!(
            utc.next_after(ts("2026-11-25T12:00:00Z")).unwrap(),
            ts("2026-11-30T03:00:00Z")
        );
        assert_eq!(utc.key, "0 3 * * 1");
        assert_eq!(s.key, "0 3 * * 1 (Europe/Paris)");
    }

    #[test]
    fn six_fields_have_seconds() {
        let s = sched("10 */2 * * * *", None);
        assert_eq!(
            s.next_after(ts("2026-01-01T00:00:01Z")).unwrap(),
            ts("2026-01-01T00:00:10Z")
        );
        assert_eq!(
            s.next_after(ts("2026-01-01T00:00:10Z")).unwrap(),
            ts("2026-01-01T00:02:10Z"),
            "strictly after"
        );
    }

    #[test]
    fn a_new_or_changed_schedule_computes_without_firing() {
        let s = sched("0 * * * *", None);
        let now = ts("2026-01-01T10:30:00Z");
        let t = tick(Some(&s), None, None, now).unwrap();
        assert_eq!(
            t,
            Tick {
                fired: None,
                next: Some(ts("2026-01-01T11:00:00Z")),
                key: Some("0 * * * *".into())
            }
        );
        // A stale next time from another schedule is recomputed, not fired.
        let t = tick(
            Some(&s),
            Some("0 3 * * 1"),
            Some(ts("2026-01-01T00:00:00Z")),
            now,
        )
        .unwrap();
        assert_eq!((t.fired, t.next), (None, Some(ts("2026-01-01T11:00:00Z"))));
    }

    #[test]
    fn a_due_schedule_fires_once_and_moves_on() {
        let s = sched("0 * * * *", None);
        let key = Some("0 * * * *");
        let not_yet = tick(
            Some(&s),
            key,
            Some(ts("2026-01-01T11:00:00Z")),
            ts("2026-01-01T10:59:59Z"),
        )
        .unwrap();
        assert_eq!(not_yet.fired, None);
        // Down from 11:00 to 13:30: one run, the next at 14:00.
        let t = tick(
            Some(&s),
            key,
            Some(ts("2026-01-01T11:00:00Z")),
            ts("2026-01-01T13:30:00Z"),
        )
        .unwrap();
        assert_eq!(t.fired, Some(ts("2026-01-01T11:00:00Z")));
        assert_eq!(t.next, Some(ts("2026-01-01T14:00:00Z")));
    }

    #[test]
    fn bad_expressions_are_named() {
        let spec = TriggerSpec {
            schedule: Some("every day".into()),
            time_zone: None,
        };
        assert!(
            Schedule::from_spec(&spec)
                .unwrap_err()
                .contains("\"every day\"")
        );
        let spec = TriggerSpec {
            schedule: Some("0 3 * * *".into()),
            time_zone: Some("Mars/Base".into()),
        };
        assert!(
            Schedule::from_spec(&spec)
                .unwrap_err()
                .contains("Mars/Base")
        );
    }
}
