//! W3C Trace Context (docs/spans.md): parsing and formatting `traceparent`, and combining
//! `tracestate`, by the letter of the spec. New ids come from the caller, so this needs no
//! random number generator.

/// A parsed `traceparent`: which trace, which span is the parent, and the flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub flags: u8,
}

/// Flag bit 0: the caller recorded this trace.
pub const FLAG_SAMPLED: u8 = 0x01;

impl TraceParent {
    /// A context from its parts; ids of all zeroes are invalid and give `None`.
    pub fn new(trace_id: [u8; 16], span_id: [u8; 8], flags: u8) -> Option<Self> {
        (trace_id != [0; 16] && span_id != [0; 8]).then_some(Self {
            trace_id,
            span_id,
            flags,
        })
    }

    /// The same trace and flags with another span id: the context for a child span.
    pub fn with_span(&self, span_id: [u8; 8]) -> Self {
        Self { span_id, ..*self }
    }

    /// Parses a header value. `None` means invalid, and the caller starts a new trace.
    pub fn parse(value: &str) -> Option<Self> {
        let bytes = value.as_bytes();
        // version "-" trace-id "-" parent-id "-" flags = 2+1+32+1+16+1+2
        if bytes.len() < 55 {
            return None;
        }
        let version = decode_hex::<1>(&value[0..2])?[0];
        if version == 0xff {
            return None;
        }
        // Version 00 has exactly this length; a later version may append fields after a dash.
        if version == 0 && bytes.len() != 55 {
            return None;
        }
        if bytes.len() > 55 && bytes[55] != b'-' {
            return None;
        }
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return None;
        }
        let trace_id = decode_hex::<16>(&value[3..35])?;
        let span_id = decode_hex::<8>(&value[36..52])?;
        let flags = decode_hex::<1>(&value[53..55])?[0];
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            flags,
        })
    }

    /// Parses the values of every `traceparent` header of a request: more than one is invalid.
    pub fn from_values<'a>(mut values: impl Iterator<Item = &'a str>) -> Option<Self> {
        let first = values.next()?;
        if values.next().is_some() {
            return None;
        }
        Self::parse(first)
    }

    /// Always writes version 00, whatever version was received, as the spec asks. Version 00
    /// defines only the sampled flag, so every other bit goes out as zero.
    pub fn header_value(&self) -> String {
        // Only ASCII digits, letters and dashes are written.
        String::from_utf8(self.header_bytes().to_vec()).unwrap_or_default()
    }

    /// The header's 55 bytes, written in place: every answer carries one, and formatting it
    /// with `format!` cost a service more than a percent of its time.
    pub fn header_bytes(&self) -> [u8; 55] {
        let mut out = [b'-'; 55];
        out[..2].copy_from_slice(b"00");
        hex_to(&mut out[3..35], &self.trace_id);
        hex_to(&mut out[36..52], &self.span_id);
        hex_to(&mut out[53..55], &[self.flags & FLAG_SAMPLED]);
        out
    }

    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    pub fn span_id_hex(&self) -> String {
        hex(&self.span_id)
    }
}

/// `traceparent` values the spec makes invalid, each of a different kind: every reader of trace
/// context (this parser, and the kit's carrier around the OpenTelemetry propagator) is tested on
/// them.
pub const INVALID_TRACEPARENTS: &[&str] = &[
    "",
    "00",
    // uppercase hex
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
    // all-zero trace id and span id
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
    // version ff
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    // version 00 with trailing data
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
    // wrong lengths and separators
    "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
    "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
    // non-hex
    "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
    "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
];

/// Combines the values of several `tracestate` headers into one list, as RFC 9110 combines
/// repeated fields: joined by commas, in order, with empty members dropped.
pub fn combine_tracestate<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let members: Vec<&str> = values
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .collect();
    (!members.is_empty()).then(|| members.join(","))
}

/// Lowercase hex. Every span's ids pass through here, so it uses a table, not the formatter
/// (which cost the receiver a seventh of its time).
pub fn hex(bytes: &[u8]) -> String {
    let mut out = vec![0; bytes.len() * 2];
    hex_to(&mut out, bytes);
    // Only ASCII digits and letters were written.
    String::from_utf8(out).unwrap_or_default()
}

/// Writes `bytes` as lowercase hex into `out`, which holds exactly twice as many.
fn hex_to(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
    }
}

/// Decodes exactly `N` bytes of lowercase hex; uppercase is invalid in traceparent.
fn decode_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.as_bytes();
    if s.len() != N * 2 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_spec_example_and_round_trips() {
        let tp = TraceParent::parse(VALID).unwrap();
        assert_eq!(tp.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.span_id_hex(), "00f067aa0ba902b7");
        assert_eq!(tp.flags, 1);
        assert_eq!(tp.header_value(), VALID);
    }

    #[test]
    fn flags_are_kept_and_unknown_bits_are_sent_as_zero() {
        let tp =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert_eq!(tp.flags, 0);
        assert!(tp.with_span([7; 8]).header_value().ends_with("-00"));
        // Only the sampled bit means something in version 00; the rest go on as zero.
        let tp =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff").unwrap();
        assert!(tp.header_value().ends_with("-01"), "{}", tp.header_value());
        let tp =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-fe").unwrap();
        assert!(tp.header_value().ends_with("-00"), "{}", tp.header_value());
    }

    #[test]
    fn hex_is_lowercase_and_two_digits_a_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(hex(&[]), "");
    }

    #[test]
    fn tracestate_headers_combine_into_one_list() {
        assert_eq!(
            combine_tracestate(["congo=t61rcWkgMzE", "rojo=00f067aa0ba902b7,  ", "a=1 , b=2"]),
            Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7,a=1,b=2".into())
        );
        assert_eq!(combine_tracestate([" ", ""]), None);
        assert_eq!(combine_tracestate([]), None);
    }

    #[test]
    fn invalid_headers_are_rejected() {
        let cases = INVALID_TRACEPARENTS;
        for case in cases {
            assert_eq!(TraceParent::parse(case), None, "{case:?} should be invalid");
        }
    }

    #[test]
    fn a_higher_version_is_read_by_its_first_four_fields() {
        let tp = TraceParent::parse(
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds",
        )
        .unwrap();
        assert_eq!(tp.span_id_hex(), "00f067aa0ba902b7");
        assert_eq!(tp.header_value(), VALID);
        // ... but only when the extra part is set off by a dash
        assert_eq!(
            TraceParent::parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x"),
            None
        );
        assert!(
            TraceParent::parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_some()
        );
    }

    #[test]
    fn two_headers_are_invalid() {
        assert!(TraceParent::from_values([VALID].into_iter()).is_some());
        assert_eq!(TraceParent::from_values([VALID, VALID].into_iter()), None);
        assert_eq!(TraceParent::new([0; 16], [1; 8], 1), None);
    }
}
