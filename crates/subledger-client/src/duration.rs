//! Durations as subledger's command lines write them: `10s`, `500ms`, `2m`, `1h`, or a bare
//! number of seconds. One parser for every flag that takes a duration (serve's --idle-timeout,
//! bench's --duration), and for a client's deadline read from configuration. It lives in the
//! client because the server, `subledger bench` and the client's users all depend on it.

use std::time::Duration;

/// A duration as `10s`, `500ms`, `2m` or `1h`; a bare number means seconds.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration: expected e.g. 10s, 500ms, 2m"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?}; use ms, s, m or h"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{text:?} is not a positive duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_and_a_bare_number_is_seconds() {
        assert_eq!(parse("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("1.5"), Ok(Duration::from_millis(1500)));
        let unknown = parse("10 parsecs").unwrap_err();
        assert!(unknown.contains("unknown unit"), "{unknown}");
        assert!(parse("fast").unwrap_err().contains("not a duration"));
        assert!(parse("0s").unwrap_err().contains("positive"));
        assert!(parse("").is_err());
    }
}
