//! Status conditions: `lastTransitionTime` moves only when the status really changes, so that
//! `kubectl describe` tells an operator since when something has been true.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// Builds a condition; `status` is "True", "False" or "Unknown".
pub fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if status { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: Time(Timestamp::UNIX_EPOCH),
    }
}

/// Inserts or updates `new` in `conditions`. The transition time is `now` when the condition is new or
/// its status flips, and is kept otherwise (reason and message may still change).
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition, now: Timestamp) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(existing) => {
            new.last_transition_time =
                if existing.status == new.status { existing.last_transition_time.clone() } else { Time(now) };
            *existing = new;
        }
        None => {
            new.last_transition_time = Time(now);
            conditions.push(new);
        }
    }
}

/// Whether the condition of that type is present and "True".
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions.iter().any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    #[test]
    fn a_new_condition_gets_the_current_time() {
        let mut conds = vec![];
        set_condition(&mut conds, condition("Ready", true, "Synced", "", None), at(100));
        assert_eq!(conds[0].last_transition_time, Time(at(100)));
    }

    #[test]
    fn the_same_status_keeps_its_transition_time_while_the_message_changes() {
        let mut conds = vec![];
        set_condition(&mut conds, condition("Ready", true, "Synced", "a", None), at(100));
        set_condition(&mut conds, condition("Ready", true, "Synced", "b", Some(2)), at(200));
        assert_eq!(conds.len(), 1);
        assert_eq!(conds[0].last_transition_time, Time(at(100)));
        assert_eq!(conds[0].message, "b");
        assert_eq!(conds[0].observed_generation, Some(2));
    }

    #[test]
    fn a_flipped_status_moves_the_transition_time() {
        let mut conds = vec![];
        set_condition(&mut conds, condition("Ready", true, "Synced", "", None), at(100));
        set_condition(&mut conds, condition("Ready", false, "CloudUnavailable", "", None), at(300));
        assert_eq!(conds[0].last_transition_time, Time(at(300)));
        assert!(!is_true(&conds, "Ready"));
    }
}
