//! The reconnect logic, kept free of threads and clocks so it can be tested
//! on its own: where to resume a stream, which replayed events to drop, and
//! how long to wait before the next attempt.

use std::time::Duration;

use crate::event::EventKey;
use crate::query::Timestamp;

/// Remembers the last event delivered on one endpoint, so that a new
/// connection resumes exactly after it.
///
/// Docker's `since` is inclusive: resuming at the last event's `timeNano`
/// replays every event of that nanosecond. Those already delivered are
/// recognised by their type, action and actor and dropped; a different event
/// with the same timestamp still goes through.
#[derive(Debug, Default)]
pub(crate) struct Resume {
    /// The newest timestamp delivered, in nanoseconds.
    last: Option<i64>,
    /// The type, action and actor of each event delivered at `last`, as
    /// ranges of `seen_text`. Both keep their room from one timestamp to the
    /// next, so remembering an event allocates nothing.
    seen: Vec<[Option<(usize, usize)>; 3]>,
    seen_text: String,
}

impl Resume {
    /// The `since` to ask for on the next connection: just the last delivered
    /// event's time, or `initial` before any event.
    pub(crate) fn since(&self, initial: Option<Timestamp>) -> Option<Timestamp> {
        self.last.map(Timestamp::from_unix_nanos).or(initial)
    }

    /// The newest timestamp delivered.
    pub(crate) fn last(&self) -> Option<Timestamp> {
        self.last.map(Timestamp::from_unix_nanos)
    }

    /// Whether the event with this key is new, recording it if so.
    ///
    /// An event without a time cannot be placed and is always new. So is an
    /// event older than the last: a replay never holds one (it starts at the
    /// last time), but the daemon can publish two events out of timestamp
    /// order, and the second must not be lost.
    pub(crate) fn admit(&mut self, key: &EventKey<'_>) -> bool {
        let Some(time) = key.time_nanos else {
            return true;
        };
        match self.last {
            Some(last) if time < last => true,
            Some(last) if time == last => {
                if self.has_seen(key) {
                    false
                } else {
                    self.remember(key);
                    true
                }
            }
            _ => {
                self.last = Some(time);
                self.seen.clear();
                self.seen_text.clear();
                self.remember(key);
                true
            }
        }
    }

    fn remember(&mut self, key: &EventKey<'_>) {
        let mut ranges = [None; 3];
        for (range, part) in ranges.iter_mut().zip(key.parts()) {
            *range = part.map(|text| {
                let start = self.seen_text.len();
                self.seen_text.push_str(text);
                (start, self.seen_text.len())
            });
        }
        self.seen.push(ranges);
    }

    fn has_seen(&self, key: &EventKey<'_>) -> bool {
        self.seen.iter().any(|ranges| {
            ranges
                .iter()
                .zip(key.parts())
                .all(|(range, part)| range.map(|(from, to)| &self.seen_text[from..to]) == part)
        })
    }
}

/// The longest wait between attempts, unless the reconnect interval is longer.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The shortest wait between attempts, whatever the interval: a zero
/// interval must not turn a failing endpoint into a busy loop.
pub(crate) const MIN_DELAY: Duration = Duration::from_millis(100);

/// How long to wait before the next attempt: the reconnect interval after the
/// first failure, then doubling up to [`MAX_BACKOFF`], with up to a quarter
/// more of random jitter from the second failure on so that many readers do
/// not retry in step. Never shorter than the interval, nor than [`MIN_DELAY`].
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    failures: u32,
}

impl Backoff {
    /// The wait before the next attempt; `jitter` is a number in `0.0..1.0`.
    pub(crate) fn next_delay(&mut self, interval: Duration, jitter: f64) -> Duration {
        let interval = interval.max(MIN_DELAY);
        let doubled = interval.saturating_mul(1u32 << self.failures.min(16));
        let base = doubled.min(MAX_BACKOFF.max(interval));
        let extra = if self.failures == 0 {
            Duration::ZERO
        } else {
            base.mul_f64(jitter.clamp(0.0, 1.0) / 4.0)
        };
        self.failures = self.failures.saturating_add(1);
        base + extra
    }

    /// Starts again from the interval, once a connection has proved healthy.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }

    /// How many attempts have failed in a row.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::DockerEvent;

    fn event(nanos: i64, action: &str, actor: &str) -> DockerEvent {
        DockerEvent::from_json(
            format!(
                r#"{{"Type":"container","Action":"{action}","Actor":{{"ID":"{actor}"}},"timeNano":{nanos}}}"#
            )
            .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn replay_at_the_boundary_is_dropped_but_new_events_there_pass() {
        let mut resume = Resume::default();
        assert!(resume.admit(&event(100, "create", "a").key()));
        assert!(resume.admit(&event(100, "start", "a").key()));
        assert_eq!(resume.since(None), Some(Timestamp::from_unix_nanos(100)));

        // The daemon replays the nanosecond inclusively after a reconnect.
        assert!(!resume.admit(&event(100, "create", "a").key()));
        assert!(!resume.admit(&event(100, "start", "a").key()));
        // Same instant, different event: delivered.
        assert!(resume.admit(&event(100, "create", "b").key()));
        assert!(resume.admit(&event(101, "die", "a").key()));
        assert!(
            resume.admit(&event(99, "create", "c").key()),
            "published out of order"
        );
        assert_eq!(resume.last(), Some(Timestamp::from_unix_nanos(101)));
    }

    #[test]
    fn an_absent_actor_differs_from_an_empty_one() {
        let mut resume = Resume::default();
        let bare =
            DockerEvent::from_json(br#"{"Type":"volume","Action":"prune","timeNano":7}"#).unwrap();
        let empty = DockerEvent::from_json(
            br#"{"Type":"volume","Action":"prune","Actor":{"ID":""},"timeNano":7}"#,
        )
        .unwrap();
        assert!(resume.admit(&bare.key()));
        assert!(resume.admit(&empty.key()));
        assert!(!resume.admit(&bare.key()) && !resume.admit(&empty.key()));
    }

    #[test]
    fn events_in_one_second_are_kept_apart_by_nanoseconds() {
        let second = 1_700_000_000_000_000_000;
        let mut resume = Resume::default();
        assert!(resume.admit(&event(second + 123, "start", "a").key()));
        // Reconnect: since = second + 123, replay includes the first event.
        assert_eq!(
            resume.since(None).unwrap().to_string(),
            "1700000000.000000123"
        );
        assert!(!resume.admit(&event(second + 123, "start", "a").key()));
        assert!(resume.admit(&event(second + 500_000, "start", "b").key()));
        assert!(resume.admit(&event(second + 200_000_000, "start", "c").key()));
    }

    #[test]
    fn events_without_time_nano_use_whole_seconds() {
        let mut resume = Resume::default();
        let old = DockerEvent::from_json(br#"{"status":"start","id":"x","time":7}"#).unwrap();
        assert!(resume.admit(&old.key()));
        assert_eq!(resume.last(), Some(Timestamp::from_unix_secs(7)));
        assert!(!resume.admit(&old.key()));
        let untimed = DockerEvent::default();
        assert!(resume.admit(&untimed.key()) && resume.admit(&untimed.key()));
    }

    #[test]
    fn backoff_starts_at_the_interval_doubles_and_caps() {
        let interval = Duration::from_secs(5);
        let mut backoff = Backoff::default();
        assert_eq!(backoff.next_delay(interval, 0.99), interval);
        assert_eq!(backoff.next_delay(interval, 0.0), Duration::from_secs(10));
        let third = backoff.next_delay(interval, 1.0);
        assert_eq!(third, Duration::from_secs(25), "20 s plus a quarter");
        for _ in 0..40 {
            let delay = backoff.next_delay(interval, 0.5);
            assert!(delay >= interval && delay <= MAX_BACKOFF.mul_f64(1.25));
        }
        backoff.reset();
        assert_eq!(backoff.next_delay(interval, 0.7), interval);
    }

    #[test]
    fn a_zero_interval_still_waits_and_grows() {
        let mut backoff = Backoff::default();
        assert_eq!(backoff.next_delay(Duration::ZERO, 0.0), MIN_DELAY);
        assert_eq!(backoff.next_delay(Duration::ZERO, 0.0), MIN_DELAY * 2);
    }

    #[test]
    fn an_interval_above_the_cap_is_still_respected() {
        let mut backoff = Backoff::default();
        let long = Duration::from_secs(120);
        backoff.next_delay(long, 0.0);
        assert_eq!(backoff.next_delay(long, 0.0), long);
    }
}
