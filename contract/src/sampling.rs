//! Head sampling's weight as OpenTelemetry writes it (docs/telemetry.md, "Sampling"): a sampled
//! trace's `tracestate` carries `ot=th:T`, the rejection threshold over the trace id's low 56
//! bits, and every span of the trace stands for `2^56 / (2^56 - T)` requests. The kit writes it;
//! the supervisor reads it to weigh `msctl top` and the dashboard.

/// The trace id's random part, and the threshold's range: 56 bits.
pub const RANDOM_BITS: u32 = 56;
const SPAN: u64 = 1 << RANDOM_BITS;
/// A threshold is at most 14 hex digits.
const DIGITS: usize = (RANDOM_BITS / 4) as usize;

/// The threshold that keeps a fraction `p` of traces: 0 keeps all, and `p` is clamped so that at
/// least one value in 2^56 is kept.
pub fn threshold(p: f64) -> u64 {
    if p.is_nan() || p >= 1.0 {
        return 0;
    }
    let reject = ((1.0 - p.max(0.0)) * SPAN as f64).round() as u64;
    reject.min(SPAN - 1)
}

/// The random part of a trace id: its low 56 bits.
pub fn randomness(trace_id: [u8; 16]) -> u64 {
    u64::from_be_bytes(trace_id[8..16].try_into().expect("8 bytes")) & (SPAN - 1)
}

/// Whether a trace with this id is kept at threshold `t`: the same answer wherever it is asked.
pub fn keeps(trace_id: [u8; 16], t: u64) -> bool {
    randomness(trace_id) >= t
}

/// `th`'s value: the threshold in 14 hex digits with trailing zeros dropped (`0` for none).
pub fn th_value(t: u64) -> String {
    let full = format!("{:0width$x}", t.min(SPAN - 1), width = DIGITS);
    let trimmed = full.trim_end_matches('0');
    if trimmed.is_empty() {
        "0".into()
    } else {
        trimmed.into()
    }
}

/// The threshold a `tracestate` header value carries in its `ot` member, if any.
pub fn parse_threshold(tracestate: &str) -> Option<u64> {
    let ot = tracestate
        .split(',')
        .filter_map(|member| member.trim().split_once('='))
        .find(|(key, _)| *key == "ot")?
        .1;
    let th = ot
        .split(';')
        .filter_map(|field| field.split_once(':'))
        .find(|(key, _)| *key == "th")?
        .1;
    if th.is_empty() || th.len() > DIGITS || !th.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    // Digits left out at the end are zeros.
    let padded = format!("{th:0<DIGITS$}");
    u64::from_str_radix(&padded, 16).ok()
}

/// How many requests one span of a trace with this `tracestate` stands for: 1 unless the trace
/// was kept by a threshold.
pub fn adjusted_count(tracestate: Option<&str>) -> f64 {
    match tracestate.and_then(parse_threshold) {
        Some(t) if t < SPAN => SPAN as f64 / (SPAN - t) as f64,
        _ => 1.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_round_trip_through_tracestate() {
        assert_eq!(threshold(1.0), 0);
        assert_eq!(th_value(0), "0");
        assert_eq!(threshold(0.5), 1 << 55);
        assert_eq!(th_value(threshold(0.5)), "8");
        assert_eq!(th_value(threshold(0.25)), "c");
        assert_eq!(parse_threshold("ot=th:8"), Some(1 << 55));
        assert_eq!(
            parse_threshold("congo=x,ot=rv:abc;th:c , b=1"),
            Some(3 << 54)
        );
        assert_eq!(parse_threshold("ot=th:0"), Some(0));
        for p in [0.9, 0.1, 0.013, 1e-6] {
            let t = threshold(p);
            let back = parse_threshold(&format!("ot=th:{}", th_value(t))).unwrap();
            assert_eq!(back, t);
            let count = adjusted_count(Some(&format!("ot=th:{}", th_value(t))));
            assert!((count * p - 1.0).abs() < 1e-6, "p {p}: count {count}");
        }
    }

    #[test]
    fn anything_else_counts_once() {
        for state in [
            "",
            "ot=",
            "ot=th:",
            "ot=th:xyz",
            "ot=th:123456789abcdef0",
            "ot=rv:12",
            "th:8",
            "other=th:8",
        ] {
            assert_eq!(adjusted_count(Some(state)), 1.0, "{state:?}");
        }
        assert_eq!(adjusted_count(None), 1.0);
        assert_eq!(threshold(0.0), SPAN - 1, "never below one in 2^56");
        assert_eq!(threshold(f64::NAN), 0);
    }

    #[test]
    fn the_decision_reads_the_low_56_bits() {
        let mut id = [0u8; 16];
        id[8] = 0xff; // above the 56 bits: ignored
        assert_eq!(randomness(id), 0);
        assert!(!keeps(id, 1));
        id[15] = 1;
        assert!(keeps(id, 1));
        assert!(keeps(id, 0), "threshold 0 keeps everything");
    }
}
