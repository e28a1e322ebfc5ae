//! Status conditions that follow Kubernetes conventions: one entry per type,
//! `lastTransitionTime` changes only when the status changes.
use crate::api::Condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Condition status values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    True,
    False,
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }

    pub fn from_bool(b: bool) -> Self {
        if b { Status::True } else { Status::False }
    }
}

/// Sets a condition of `type_`, keeping its transition time when its status is unchanged.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: Status,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: jiff::Timestamp,
) {
    let message = message.into();
    if let Some(existing) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if existing.status != status.as_str() {
            existing.last_transition_time = Time(now);
        }
        existing.status = status.as_str().into();
        existing.reason = reason.into();
        existing.message = message;
        existing.observed_generation = generation;
    } else {
        conditions.push(Condition {
            type_: type_.into(),
            status: status.as_str().into(),
            reason: reason.into(),
            message,
            observed_generation: generation,
            last_transition_time: Time(now),
        });
    }
}

/// Removes a condition type.
pub fn remove(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

/// Whether a condition of `type_` is `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let mut c = Vec::new();
        set(
            &mut c,
            "Ready",
            Status::False,
            "Progressing",
            "a",
            Some(1),
            ts(10),
        );
        set(
            &mut c,
            "Ready",
            Status::False,
            "StillProgressing",
            "b",
            Some(2),
            ts(20),
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].last_transition_time.0, ts(10));
        assert_eq!(c[0].reason, "StillProgressing");
        assert_eq!(c[0].observed_generation, Some(2));
        set(
            &mut c,
            "Ready",
            Status::True,
            "Available",
            "c",
            Some(2),
            ts(30),
        );
        assert_eq!(c[0].last_transition_time.0, ts(30));
        assert!(is_true(&c, "Ready"));
    }
}
