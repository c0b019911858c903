//! Durations for people: "under 1 ms", "850 ms", "6.8 s", "42 s", "12 min 5 s",
//! "23 h 59 min", "2 d 3 h" — two units at most, never nanoseconds.
//! Shared by the library's messages and the CLI (which includes this file).

use std::time::Duration;

/// `d` in the largest sensible units, two at most.
pub(crate) fn human(d: Duration) -> String {
    let ms = d.as_millis();
    let s = d.as_secs();
    let (days, hours, minutes, seconds) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if ms == 0 && !d.is_zero() {
        "under 1 ms".to_owned()
    } else if ms < 1000 {
        format!("{ms} ms")
    } else if s < 10 && d.subsec_millis() >= 100 {
        // One decimal, rounded down: 9.96 s is "9.9 s", not "10.0 s".
        format!("{}.{} s", s, d.subsec_millis() / 100)
    } else if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        with_second_unit(minutes, "min", seconds, "s")
    } else if s < 86_400 {
        with_second_unit(hours, "h", minutes, "min")
    } else {
        with_second_unit(days, "d", hours, "h")
    }
}

fn with_second_unit(first: u64, unit: &str, second: u64, second_unit: &str) -> String {
    if second == 0 {
        format!("{first} {unit}")
    } else {
        format!("{first} {unit} {second} {second_unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        let cases = [
            (Duration::ZERO, "0 ms"),
            // A retry deadline of 500 µs is not "0 ms".
            (Duration::from_micros(500), "under 1 ms"),
            (Duration::from_nanos(1), "under 1 ms"),
            (Duration::from_millis(850), "850 ms"),
            (Duration::from_nanos(6_787_640_010), "6.7 s"),
            (Duration::from_millis(9_960), "9.9 s"),
            (Duration::from_millis(1_050), "1 s"),
            (Duration::from_secs(42), "42 s"),
            (Duration::from_secs(60), "1 min"),
            (Duration::from_secs(725), "12 min 5 s"),
            (Duration::from_secs(3600), "1 h"),
            (Duration::from_secs(86_340), "23 h 59 min"),
            (Duration::from_secs(86_400), "1 d"),
            (Duration::from_secs(2 * 86_400 + 3 * 3600 + 59), "2 d 3 h"),
            (Duration::MAX, "213503982334601 d 7 h"),
        ];
        for (d, text) in cases {
            assert_eq!(human(d), text, "{d:?}");
        }
    }
}
