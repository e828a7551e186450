//! Time as vigil's storage sees it: a [`Clock`] that can be pinned for tests, and the UTC
//! [`Day`]s that retention counts in.
//!
//! Everything that decides *when* data was stored or has expired reads one `Clock`, so a test
//! can store records "forty days ago" and purge "today" without waiting. Production uses the
//! system clock; `Clock::starting_at` shifts it so that time still flows from a chosen instant.

use std::fmt;

use time::{Date, Duration, OffsetDateTime};

/// Seconds in a UTC day.
const DAY_SECS: i64 = 86_400;

/// A source of the current time: the system clock, optionally shifted by a fixed offset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Clock {
    offset: Duration,
}

/// A clock setting that cannot be read.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct ClockError {
    variable: &'static str,
    problem: String,
}

impl Clock {
    /// The environment variable that pins the clock (RFC 3339), for tests and drills only.
    pub const ENV: &'static str = "VIGIL_NOW";

    /// The system clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock that reads `now` at this moment and advances in real time from there.
    pub fn starting_at(now: OffsetDateTime) -> Self {
        Self {
            offset: now - OffsetDateTime::now_utc(),
        }
    }

    /// The system clock, or, when [`Clock::ENV`] is set, a clock starting at the instant it
    /// names.
    pub fn from_env() -> Result<Self, ClockError> {
        match std::env::var(Self::ENV) {
            Err(_) => Ok(Self::system()),
            Ok(value) => {
                let now = OffsetDateTime::parse(
                    value.trim(),
                    &time::format_description::well_known::Rfc3339,
                )
                .map_err(|e| ClockError {
                    variable: Self::ENV,
                    problem: format!("not an RFC 3339 time ({e})"),
                })?;
                Ok(Self::starting_at(now))
            }
        }
    }

    /// Whether this clock is shifted from the system's.
    pub fn is_shifted(&self) -> bool {
        self.offset != Duration::ZERO
    }

    /// The current time.
    pub fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc() + self.offset
    }

    /// Today, in UTC.
    pub fn today(&self) -> Day {
        Day::of(self.now())
    }
}

/// A UTC calendar day, counted from the Unix epoch: the unit retention is counted in, and the
/// bucket data keys and export partitions are cut by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(u32);

impl Day {
    /// The day an instant falls on (instants before 1970 fall on day 0).
    pub fn of(at: OffsetDateTime) -> Self {
        Self(u32::try_from(at.unix_timestamp().div_euclid(DAY_SECS)).unwrap_or(0))
    }

    /// The day with this number.
    pub const fn from_number(n: u32) -> Self {
        Self(n)
    }

    /// Days since 1970-01-01.
    pub const fn number(self) -> u32 {
        self.0
    }

    /// The big-endian bytes of the number: days sort in key order.
    pub const fn to_be_bytes(self) -> [u8; 4] {
        self.0.to_be_bytes()
    }

    /// The day whose big-endian bytes these are.
    pub fn from_be_bytes(bytes: &[u8]) -> Option<Self> {
        Some(Self(u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?)))
    }

    /// `n` days earlier (day 0 at the earliest).
    pub fn minus(self, n: u32) -> Self {
        Self(self.0.saturating_sub(n))
    }

    /// The next day.
    pub fn next(self) -> Self {
        Self(self.0 + 1)
    }

    /// `n` days later.
    pub fn plus(self, n: u32) -> Self {
        Self(self.0.saturating_add(n))
    }

    /// Midnight UTC at the start of the day.
    pub fn start(self) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + Duration::days(i64::from(self.0))
    }

    /// The calendar date.
    pub fn date(self) -> Date {
        self.start().date()
    }

    /// The day of a calendar date.
    pub fn of_date(date: Date) -> Self {
        Self::of(date.midnight().assume_utc())
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.date();
        write!(
            f,
            "{:04}-{:02}-{:02}",
            d.year(),
            u8::from(d.month()),
            d.day()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn days_are_utc_calendar_days() {
        let day = Day::of(datetime!(2026-11-23 23:59:59 UTC));
        assert_eq!(day, Day::of(datetime!(2026-11-23 00:00 UTC)));
        assert_eq!(day.next(), Day::of(datetime!(2026-11-24 00:00 UTC)));
        assert_eq!(Day::of(datetime!(2026-11-24 00:30 +01:00)), day);
        assert_eq!(day.to_string(), "2026-11-23");
        assert_eq!(Day::from_be_bytes(&day.to_be_bytes()), Some(day));
        assert_eq!(Day::of_date(day.date()), day);
        assert_eq!(day.start(), datetime!(2026-11-23 00:00 UTC));
        assert!(day.minus(30) < day);
    }

    #[test]
    fn a_shifted_clock_still_advances() {
        let clock = Clock::starting_at(datetime!(2020-01-01 00:00 UTC));
        assert!(clock.is_shifted());
        let first = clock.now();
        assert!(first >= datetime!(2020-01-01 00:00 UTC));
        assert!(first < datetime!(2020-01-01 00:01 UTC));
        assert!(clock.now() >= first);
        assert_eq!(clock.today().to_string(), "2020-01-01");
    }
}
