//! Quantities as people read them, shared by the command line and the app (native and web).

/// A duration rounded to the second, as `humantime` writes it (`45s`, `3m 20s`, `1h 2m 5s`).
pub fn duration(secs: f64) -> String {
    let s = if secs.is_finite() {
        secs.max(0.0).round() as u64
    } else {
        0
    };
    humantime::format_duration(std::time::Duration::from_secs(s)).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(super::duration(45.4), "45s");
        assert_eq!(super::duration(200.4), "3m 20s");
        assert_eq!(super::duration(3725.0), "1h 2m 5s");
        assert_eq!(super::duration(-3.0), "0s");
        assert_eq!(super::duration(f64::NAN), "0s");
    }
}
