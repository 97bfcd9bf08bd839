//! Time as the gateway keeps it (milliseconds since the Unix epoch) and as
//! WeChat writes it (`yyyyMMddHHmmss`, Beijing time, UTC+8, no zone).

use chrono::{DateTime, NaiveDateTime};

const BEIJING_OFFSET_MS: i64 = 8 * 3600 * 1000;
const WECHAT_FORMAT: &str = "%Y%m%d%H%M%S";

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `ms` as WeChat writes times: `yyyyMMddHHmmss` in Beijing time.
pub fn beijing_time(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms.saturating_add(BEIJING_OFFSET_MS))
        .unwrap_or_default()
        .naive_utc()
        .format(WECHAT_FORMAT)
        .to_string()
}

/// A WeChat `yyyyMMddHHmmss` Beijing time, in ms since the epoch.
pub fn parse_beijing_time(text: &str) -> Option<i64> {
    let naive = NaiveDateTime::parse_from_str(text, WECHAT_FORMAT).ok()?;
    naive
        .and_utc()
        .timestamp_millis()
        .checked_sub(BEIJING_OFFSET_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beijing_time_is_eight_hours_ahead_of_utc() {
        // 2024-01-01T00:00:00Z
        let ms = 1_704_067_200_000;
        assert_eq!(beijing_time(ms), "20240101080000");
        assert_eq!(parse_beijing_time("20240101080000"), Some(ms));
        assert_eq!(parse_beijing_time("2024-01-01"), None);
        assert_eq!(parse_beijing_time("20241301080000"), None);
    }
}
