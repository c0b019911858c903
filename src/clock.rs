//! Wall clocks. Expiry is always judged by the wall clock, never by a
//! monotonic timer alone: plant PCs sleep, and a monotonic timer does not
//! count the time asleep.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time.
///
/// The default, [`SystemClock`], reads the system's real-time clock: on
/// Linux and Android the coarse one (a few nanoseconds, millisecond
/// resolution), elsewhere `SystemTime::now()`. Tests inject another one
/// with [`AimClientBuilder::clock`](crate::AimClientBuilder::clock), e.g.
/// [`TokioClock`] to make the wall clock follow tokio's paused time and to
/// jump it forward like a PC waking from sleep.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;
}

/// The system's real-time clock (see [`Clock`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[inline]
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(system_now_ms())
    }
}

/// A wall clock that follows tokio's clock, so that with
/// `#[tokio::test(start_paused = true)]` a day of wall-clock time passes in
/// milliseconds; [`jump`](TokioClock::jump) moves it forward without moving
/// tokio's timers, as a PC that slept does.
///
/// ```
/// use aim_token::{Clock, TokioClock};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let clock = TokioClock::new();
/// let t0 = clock.now();
/// tokio::time::sleep(Duration::from_secs(3600)).await; // instant when paused
/// clock.jump(Duration::from_secs(60));
/// assert_eq!(clock.now().duration_since(t0).unwrap(), Duration::from_secs(3660));
/// # }
/// ```
pub struct TokioClock {
    wall_at_start: SystemTime,
    start: tokio::time::Instant,
    jumped_ms: AtomicU64,
}

impl TokioClock {
    /// A clock that reads the system time now and then follows tokio's clock.
    /// Call it inside a tokio runtime.
    pub fn new() -> Self {
        TokioClock {
            wall_at_start: SystemTime::now(),
            start: tokio::time::Instant::now(),
            jumped_ms: AtomicU64::new(0),
        }
    }

    /// Moves the wall clock forward by `by` (millisecond resolution) without
    /// firing any tokio timer.
    pub fn jump(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.jumped_ms.fetch_add(ms, Ordering::Relaxed);
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for TokioClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokioClock")
            .field("now", &self.now())
            .finish()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> SystemTime {
        self.wall_at_start
            + self.start.elapsed()
            + Duration::from_millis(self.jumped_ms.load(Ordering::Relaxed))
    }
}

/// `CLOCK_REALTIME_COARSE`: the wall clock, as of the last timer tick (a few
/// milliseconds of resolution), read from the vDSO without a syscall.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[inline]
pub(crate) fn system_now_ms() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    let millis = u64::try_from(t.tv_nsec).unwrap_or(0) / 1_000_000;
    secs.saturating_mul(1000).saturating_add(millis)
}

/// Elsewhere the standard clock. On Windows std reads it with
/// `GetSystemTimePreciseAsFileTime` (sub-microsecond, dearer than a plain
/// memory read), not the coarse `GetSystemTimeAsFileTime`; that one is only
/// reachable through `unsafe` FFI, which this crate forbids, and the cached
/// `token()` stays cheap without it (BENCHMARKS.md, "Windows").
#[cfg(not(any(target_os = "linux", target_os = "android")))]
#[inline]
pub(crate) fn system_now_ms() -> u64 {
    unix_millis(std::time::SystemTime::now())
}

/// Milliseconds since the Unix epoch, saturating; the cache compares these.
pub(crate) fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_is_close_to_std() {
        let coarse = unix_millis(SystemClock.now());
        let std = unix_millis(SystemTime::now());
        assert!(coarse.abs_diff(std) < 1000, "coarse {coarse} std {std}");
    }
}
