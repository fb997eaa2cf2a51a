//! The `Date` header of an answer, formatted once a second per worker thread (as hyper does).

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

/// `Sun, 06 Nov 1994 08:49:37 GMT`
const LENGTH: usize = 29;

thread_local! {
    static NOW: RefCell<(u64, [u8; LENGTH])> = const { RefCell::new((u64::MAX, [0; LENGTH])) };
}

pub(super) fn write_header(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let second = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    NOW.with_borrow_mut(|(formatted_at, text)| {
        if *formatted_at != second {
            let date = httpdate::fmt_http_date(now);
            if date.len() == LENGTH {
                text.copy_from_slice(date.as_bytes());
                *formatted_at = second;
            }
        }
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(text);
        out.extend_from_slice(b"\r\n");
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_date_is_an_http_date_of_now() {
        let mut out = Vec::new();
        super::write_header(&mut out);
        let text = std::str::from_utf8(&out).unwrap();
        let date = text
            .strip_prefix("date: ")
            .and_then(|rest| rest.strip_suffix("\r\n"))
            .unwrap();
        let parsed = httpdate::parse_http_date(date).unwrap();
        let off = std::time::SystemTime::now()
            .duration_since(parsed)
            .unwrap_or_default();
        assert!(off.as_secs() <= 2, "{date}");
    }
}
