//! Maintenance windows: whether a NodeGroup's rebalance windows are open at an instant, and since when.
//!
//! The rebalancer only starts operations inside an open window, so users can keep node replacements
//! away from busy hours. The opening instant matters too: nodes a rebalance created since the window
//! opened are not replaced again in the same window, which stops one window from churning its own work.
//!
//! Pure: windows are weekly and written in local time, so each is evaluated in its own IANA zone, where
//! a window's length follows the clocks (a 01:00-05:00 window lasts three hours on a spring-forward day).

use jiff::{
    Timestamp,
    civil::{self, Date, Time},
    tz::TimeZone,
};

use crate::crd::nodegroup::{MaintenanceWindow, Weekday};

/// What [`opened_at`] returns when a group has no windows: rebalancing is always allowed, and the
/// opening lies before any node a rebalance could have created.
pub const OPEN_ALWAYS: Timestamp = Timestamp::UNIX_EPOCH;

/// Why a window cannot be evaluated (bad time zone name or time); the message says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error(
        "unknown time zone {zone:?}: use an IANA name such as \"Europe/Berlin\" (the time zone database \
         must be installed), or leave it empty for UTC"
    )]
    UnknownTimeZone { zone: String },
    #[error("bad time {value:?}: use HH:MM on a 24-hour clock, such as \"02:30\"")]
    BadTime { value: String },
}

/// When the window containing `now` opened, if any window of `windows` is open at `now`. No windows at
/// all means "always open" ([`OPEN_ALWAYS`]). With several open windows, the earliest opening, so that
/// overlapping windows act as one longer window.
pub fn opened_at(windows: &[MaintenanceWindow], now: Timestamp) -> Result<Option<Timestamp>, WindowError> {
    if windows.is_empty() {
        return Ok(Some(OPEN_ALWAYS));
    }
    let mut earliest = None;
    // Every window is parsed even once one is found open, so a bad spec fails the same way at any time.
    for window in windows {
        let opened = Parsed::new(window)?.opened_at(now);
        earliest = earliest.into_iter().chain(opened).min();
    }
    Ok(earliest)
}

/// Checks every window's zone and times, for reporting bad specs early.
pub fn validate(windows: &[MaintenanceWindow]) -> Result<(), WindowError> {
    windows.iter().try_for_each(|window| Parsed::new(window).map(drop))
}

struct Parsed<'a> {
    days: &'a [Weekday],
    start: Time,
    end: Time,
    tz: TimeZone,
}

impl<'a> Parsed<'a> {
    fn new(window: &'a MaintenanceWindow) -> Result<Self, WindowError> {
        let tz = match window.timezone.as_deref() {
            None | Some("") => TimeZone::UTC,
            Some(zone) => TimeZone::get(zone).map_err(|_| WindowError::UnknownTimeZone { zone: zone.to_owned() })?,
        };
        Ok(Parsed { days: &window.days, start: parse_time(&window.start)?, end: parse_time(&window.end)?, tz })
    }

    fn opened_at(&self, now: Timestamp) -> Option<Timestamp> {
        let today = self.tz.to_datetime(now).date();
        // Yesterday's window may still be open when it runs past midnight or lasts the whole day.
        [today.yesterday().ok(), Some(today)]
            .into_iter()
            .flatten()
            .filter(|day| self.days.is_empty() || self.days.iter().any(|&d| civil_weekday(d) == day.weekday()))
            .filter_map(|day| {
                let (opens, closes) = self.bounds(day)?;
                (opens <= now && now < closes).then_some(opens)
            })
            .min()
    }

    /// The instants the window opening on `day` opens and closes. Both ends are local clock times, so a
    /// whole-day window closes at the same clock time the next day (23 or 25 hours across a DST change)
    /// and daily whole-day windows neither overlap nor leave a gap. Clock times a DST change skips or
    /// repeats resolve the compatible way (a skipped time moves later, a repeated one takes the first).
    /// `None` only at the ends of the representable range, where no window can be open.
    fn bounds(&self, day: Date) -> Option<(Timestamp, Timestamp)> {
        let closing_day = if self.end > self.start { day } else { day.tomorrow().ok()? };
        let opens = self.tz.to_timestamp(day.to_datetime(self.start)).ok()?;
        let closes = self.tz.to_timestamp(closing_day.to_datetime(self.end)).ok()?;
        Some((opens, closes))
    }
}

/// `HH:MM`, exactly as the CRD schema's pattern allows, so the controller and the API server agree.
fn parse_time(value: &str) -> Result<Time, WindowError> {
    let bad = || WindowError::BadTime { value: value.to_owned() };
    let two_digits = |field: &str| match field.as_bytes() {
        [a, b] if a.is_ascii_digit() && b.is_ascii_digit() => Some(((a - b'0') * 10 + (b - b'0')) as i8),
        _ => None,
    };
    let (hour, minute) = value.split_once(':').ok_or_else(bad)?;
    let (hour, minute) = (two_digits(hour).ok_or_else(bad)?, two_digits(minute).ok_or_else(bad)?);
    Time::new(hour, minute, 0, 0).map_err(|_| bad())
}

fn civil_weekday(day: Weekday) -> civil::Weekday {
    match day {
        Weekday::Monday => civil::Weekday::Monday,
        Weekday::Tuesday => civil::Weekday::Tuesday,
        Weekday::Wednesday => civil::Weekday::Wednesday,
        Weekday::Thursday => civil::Weekday::Thursday,
        Weekday::Friday => civil::Weekday::Friday,
        Weekday::Saturday => civil::Weekday::Saturday,
        Weekday::Sunday => civil::Weekday::Sunday,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(days: &[Weekday], start: &str, end: &str, zone: Option<&str>) -> MaintenanceWindow {
        MaintenanceWindow {
            days: days.to_vec(),
            start: start.into(),
            end: end.into(),
            timezone: zone.map(String::from),
        }
    }

    fn at(instant: &str) -> Timestamp {
        instant.parse().expect("test timestamps are valid")
    }

    fn open(windows: &[MaintenanceWindow], now: &str) -> Option<Timestamp> {
        opened_at(windows, at(now)).expect("test windows are valid")
    }

    #[test]
    fn no_windows_means_always_open() {
        assert_eq!(open(&[], "2025-01-15T12:00:00Z"), Some(OPEN_ALWAYS));
    }

    #[test]
    fn a_utc_window_is_open_inside_with_its_exact_opening_and_closed_outside() {
        let w = [window(&[], "02:00", "04:00", None)];
        assert_eq!(open(&w, "2025-01-15T03:15:00Z"), Some(at("2025-01-15T02:00:00Z")));
        assert_eq!(open(&w, "2025-01-15T02:00:00Z"), Some(at("2025-01-15T02:00:00Z")));
        assert_eq!(open(&w, "2025-01-15T04:00:00Z"), None);
        assert_eq!(open(&w, "2025-01-15T01:59:00Z"), None);
    }

    #[test]
    fn a_window_for_monday_is_open_on_monday_and_closed_on_tuesday_at_the_same_hour() {
        let w = [window(&[Weekday::Monday], "10:00", "12:00", Some(""))];
        assert_eq!(open(&w, "2025-01-13T11:00:00Z"), Some(at("2025-01-13T10:00:00Z")));
        assert_eq!(open(&w, "2025-01-14T11:00:00Z"), None);
    }

    #[test]
    fn a_window_past_midnight_is_open_the_next_morning_and_opened_the_evening_before() {
        let w = [window(&[Weekday::Friday], "22:00", "02:00", None)];
        assert_eq!(open(&w, "2025-01-18T01:00:00Z"), Some(at("2025-01-17T22:00:00Z")));
        assert_eq!(open(&w, "2025-01-18T02:00:00Z"), None);
        // Saturday's own evening is not a Friday.
        assert_eq!(open(&w, "2025-01-18T23:00:00Z"), None);
    }

    #[test]
    fn a_whole_day_window_lasts_until_the_same_time_the_next_day() {
        let w = [window(&[Weekday::Monday], "06:00", "06:00", None)];
        assert_eq!(open(&w, "2025-01-14T05:59:00Z"), Some(at("2025-01-13T06:00:00Z")));
        assert_eq!(open(&w, "2025-01-14T06:00:00Z"), None);
    }

    #[test]
    fn overlapping_windows_report_the_earliest_opening() {
        let w = [window(&[], "03:00", "05:00", None), window(&[], "01:00", "04:00", None)];
        assert_eq!(open(&w, "2025-01-15T03:30:00Z"), Some(at("2025-01-15T01:00:00Z")));
    }

    #[test]
    fn a_new_york_window_follows_new_york_clocks_in_winter() {
        let w = [window(&[], "09:00", "17:00", Some("America/New_York"))];
        assert_eq!(open(&w, "2025-01-15T14:00:00Z"), Some(at("2025-01-15T14:00:00Z")));
        assert_eq!(open(&w, "2025-01-15T22:30:00Z"), None);
    }

    #[test]
    fn a_tokyo_window_uses_the_tokyo_weekday_not_the_utc_one() {
        let w = [window(&[Weekday::Monday], "08:00", "10:00", Some("Asia/Tokyo"))];
        // Sunday 23:30 UTC is Monday 08:30 in Tokyo.
        assert_eq!(open(&w, "2025-01-12T23:30:00Z"), Some(at("2025-01-12T23:00:00Z")));
        // Monday 23:30 UTC is already Tuesday in Tokyo.
        assert_eq!(open(&w, "2025-01-13T23:30:00Z"), None);
    }

    #[test]
    fn a_berlin_window_follows_the_clocks_across_the_spring_forward_night() {
        // 2025-03-30: Berlin skips from 02:00 CET to 03:00 CEST.
        let w = [window(&[], "01:00", "05:00", Some("Europe/Berlin"))];
        assert_eq!(open(&w, "2025-03-30T02:30:00Z"), Some(at("2025-03-30T00:00:00Z")));
        assert_eq!(open(&w, "2025-03-30T03:00:00Z"), None, "05:00 CEST is 03:00 UTC");
        // An opening the clocks skip moves later by the gap: 02:30 becomes 03:30 CEST.
        let skipped = [window(&[], "02:30", "04:00", Some("Europe/Berlin"))];
        assert_eq!(open(&skipped, "2025-03-30T01:15:00Z"), None);
        assert_eq!(open(&skipped, "2025-03-30T01:45:00Z"), Some(at("2025-03-30T01:30:00Z")));
    }

    #[test]
    fn a_berlin_window_opening_in_the_repeated_hour_opens_at_its_first_occurrence() {
        // 2025-10-26: Berlin repeats 02:00-03:00, first in CEST (+02), then in CET (+01).
        let w = [window(&[], "02:30", "03:30", Some("Europe/Berlin"))];
        assert_eq!(open(&w, "2025-10-26T00:30:00Z"), Some(at("2025-10-26T00:30:00Z")));
        assert_eq!(open(&w, "2025-10-26T02:15:00Z"), Some(at("2025-10-26T00:30:00Z")));
        assert_eq!(open(&w, "2025-10-26T02:30:00Z"), None, "03:30 CET is 02:30 UTC");
    }

    #[test]
    fn an_unknown_time_zone_is_reported_by_name() {
        let w = [window(&[], "01:00", "02:00", Some("Mars/Olympus_Mons"))];
        let unknown = WindowError::UnknownTimeZone { zone: "Mars/Olympus_Mons".into() };
        assert_eq!(opened_at(&w, at("2025-01-15T12:00:00Z")), Err(unknown.clone()));
        assert_eq!(validate(&w), Err(unknown));
    }

    #[test]
    fn times_outside_the_24_hour_clock_or_not_hh_mm_are_rejected() {
        for value in ["24:00", "12:60", "9:00", "09:00:00", "ab:cd", ""] {
            let w = [window(&[], value, "02:00", None)];
            assert_eq!(validate(&w), Err(WindowError::BadTime { value: value.into() }), "{value:?}");
        }
        assert_eq!(validate(&[window(&[], "00:00", "23:59", Some("Europe/Berlin"))]), Ok(()));
    }
}
