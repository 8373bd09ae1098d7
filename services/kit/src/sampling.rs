//! Head sampling: a service starts at most so many traces a second; past that it keeps a share
//! of new traces, consistently with their ids, and writes the share into `tracestate` (`ot=th`)
//! so that `msctl top` can count every request. A request with a caller's `traceparent` follows
//! the caller's decision, so a trace is whole or absent, never cut.

use msctl_contract::sampling;
use opentelemetry::trace::{Link, SpanId, SpanKind, TraceContextExt, TraceId, TraceState};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, SamplingDecision, SamplingResult, ShouldSample,
};
use std::cell::RefCell;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// New traces a second an instance records in full when `MSCTL_TRACES_PER_SECOND` is unset.
pub const DEFAULT_PER_SECOND: f64 = 100.0;
/// How often the share kept is set again from the rate just seen.
const WINDOW: Duration = Duration::from_secs(1);

/// The kit's sampler: parent-based, and rate-limited at the root.
#[derive(Debug, Clone)]
pub struct RateSampler {
    per_second: f64,
    window: Arc<Mutex<Window>>,
}

#[derive(Debug)]
struct Window {
    start: Instant,
    seen: u64,
    /// The share of new traces kept in this window, set from the rate of the last.
    share: f64,
    /// The traces this window is expected to have kept so far: the sum of its shares.
    kept: f64,
}

impl RateSampler {
    pub fn new(per_second: f64) -> Self {
        Self {
            per_second,
            window: Arc::new(Mutex::new(Window {
                start: Instant::now(),
                seen: 0,
                share: 1.0,
                kept: 0.0,
            })),
        }
    }

    /// `MSCTL_TRACES_PER_SECOND` as given: a positive number, or the default with a warning.
    pub fn from_setting(value: Option<&str>) -> Self {
        let per_second = match value.map(str::trim).filter(|v| !v.is_empty()) {
            None => DEFAULT_PER_SECOND,
            Some(v) => match v.parse::<f64>() {
                Ok(n) if n.is_finite() && n > 0.0 => n,
                _ => {
                    eprintln!(
                        "warning: {}={v:?} is not a positive number of traces a second; using {DEFAULT_PER_SECOND}",
                        msctl_contract::env::TRACES_PER_SECOND
                    );
                    DEFAULT_PER_SECOND
                }
            },
        };
        Self::new(per_second)
    }

    /// The threshold for one more new trace seen at `now`. A window lasts a second, or less
    /// once it has kept its `per_second` traces; the next keeps the share its rate allows. So a
    /// sudden load is sampled within a fraction of a second, and a load after a quiet spell
    /// starts whole, since the quiet window's rate says nothing about it.
    fn threshold_at(&self, now: Instant) -> u64 {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(w.start);
        let spent = w.kept >= self.per_second;
        if elapsed >= WINDOW || spent {
            let rate = w.seen as f64 / elapsed.as_secs_f64().max(1e-3);
            w.share = if elapsed >= 2 * WINDOW || rate <= self.per_second {
                1.0
            } else {
                self.per_second / rate
            };
            w.start = now;
            w.seen = 0;
            w.kept = 0.0;
        }
        w.seen += 1;
        w.kept += w.share;
        sampling::threshold(w.share)
    }

    /// The decision for a new trace with this id, seen at `now`.
    pub fn decide_root(&self, trace_id: TraceId, now: Instant) -> SamplingResult {
        let t = self.threshold_at(now);
        let keep = sampling::keeps(trace_id.to_bytes(), t);
        let trace_state = if keep && t > 0 {
            TraceState::from_key_value([("ot", format!("th:{}", sampling::th_value(t)))])
                .unwrap_or_default()
        } else {
            TraceState::default()
        };
        SamplingResult {
            decision: if keep {
                SamplingDecision::RecordAndSample
            } else {
                SamplingDecision::Drop
            },
            attributes: Vec::new(),
            trace_state,
        }
    }
}

/// The kit's sampler when it is the one in use (`OTEL_TRACES_SAMPLER` unset), so that a server
/// decides a new trace before anything is built for it.
static ROOTS: OnceLock<RateSampler> = OnceLock::new();

thread_local! {
    /// A new trace the server has just decided to keep, while its span is built on this
    /// thread: the id generator hands out its id, and the sampler its decision.
    static CHOSEN: RefCell<Option<(TraceId, SamplingResult)>> = const { RefCell::new(None) };
}

/// Makes `sampler` the one servers ask about new traces.
pub(crate) fn install(sampler: RateSampler) {
    let _ = ROOTS.set(sampler);
}

/// A new trace, decided before its server span is built.
#[derive(Debug)]
pub(crate) struct NewTrace {
    pub id: TraceId,
    decision: SamplingResult,
}

impl NewTrace {
    /// A fresh id and its decision, when the kit's sampler is in use.
    pub fn decide() -> Option<Self> {
        let sampler = ROOTS.get()?;
        let id = std::iter::repeat_with(|| RandomIdGenerator::default().new_trace_id())
            .find(|id| *id != TraceId::INVALID)
            .expect("a valid id");
        Some(Self {
            id,
            decision: sampler.decide_root(id, Instant::now()),
        })
    }

    pub fn kept(&self) -> bool {
        self.decision.decision == SamplingDecision::RecordAndSample
    }

    /// While the guard lives, a root span built on this thread gets this id and decision.
    pub fn choose(self) -> impl Drop {
        CHOSEN.with(|c| *c.borrow_mut() = Some((self.id, self.decision)));
        Chosen
    }
}

struct Chosen;

impl Drop for Chosen {
    fn drop(&mut self) {
        CHOSEN.with(|c| c.borrow_mut().take());
    }
}

/// Random ids, except for a root span the server has already chosen an id for.
#[derive(Debug, Default)]
pub struct KitIds(RandomIdGenerator);

impl IdGenerator for KitIds {
    fn new_trace_id(&self) -> TraceId {
        CHOSEN
            .with(|c| c.borrow().as_ref().map(|(id, _)| *id))
            .unwrap_or_else(|| self.0.new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        self.0.new_span_id()
    }
}

impl ShouldSample for RateSampler {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        _name: &str,
        _span_kind: &SpanKind,
        _attributes: &[KeyValue],
        _links: &[Link],
    ) -> SamplingResult {
        if let Some(cx) = parent_context {
            let span = cx.span();
            let sc = span.span_context();
            // The caller decided, and its `tracestate` (the weight with it) goes on.
            if sc.is_valid() {
                return SamplingResult {
                    decision: if sc.is_sampled() {
                        SamplingDecision::RecordAndSample
                    } else {
                        SamplingDecision::Drop
                    },
                    attributes: Vec::new(),
                    trace_state: sc.trace_state().clone(),
                };
            }
        }
        CHOSEN
            .with(|c| {
                c.borrow()
                    .as_ref()
                    .filter(|(id, _)| *id == trace_id)
                    .map(|(_, decided)| decided.clone())
            })
            .unwrap_or_else(|| self.decide_root(trace_id, Instant::now()))
    }
}

/// Whether the current context is a trace that was not sampled: no span is made in it, and
/// its log records stay on stdout.
pub fn in_unsampled_trace() -> bool {
    Context::map_current(|cx| {
        let span = cx.span();
        let sc = span.span_context();
        sc.is_valid() && !sc.is_sampled()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags};

    fn id(n: u128) -> TraceId {
        TraceId::from(n)
    }

    fn kept(r: &SamplingResult) -> bool {
        r.decision == SamplingDecision::RecordAndSample
    }

    #[test]
    fn under_the_rate_every_trace_is_kept_with_no_weight() {
        let s = RateSampler::new(10.0);
        let t0 = Instant::now();
        for i in 0..30u64 {
            // 10 a second for 3 s
            let at = t0 + Duration::from_millis(i * 100);
            let r = s.decide_root(id(u128::from(i) + 1), at);
            assert!(kept(&r), "trace {i}");
            assert_eq!(r.trace_state.header(), "");
        }
    }

    #[test]
    fn past_the_rate_a_share_is_kept_and_weighed() {
        let s = RateSampler::new(10.0);
        let t0 = Instant::now();
        let (mut kept_n, mut weight) = (0, 0.0);
        // 1,000 a second for 3 s: the first 10 are kept whole, then about 1 in 100.
        let mut first_window = 0;
        for i in 0..3000u64 {
            let at = t0 + Duration::from_millis(i);
            let trace = id(u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835));
            let r = s.decide_root(trace, at);
            if i < 1000 && kept(&r) {
                first_window += 1;
            }
            if i >= 1000 && kept(&r) {
                kept_n += 1;
                let state = r.trace_state.header();
                assert!(state.starts_with("ot=th:"), "{state}");
                weight += sampling::adjusted_count(Some(&state));
                assert!(
                    sampling::keeps(trace.to_bytes(), sampling::parse_threshold(&state).unwrap()),
                    "the decision agrees with the id"
                );
            }
        }
        assert!((5..=60).contains(&kept_n), "kept {kept_n} of 2,000");
        assert!(
            (10..=40).contains(&first_window),
            "a sudden load is sampled within the first second: kept {first_window} of 1,000"
        );
        assert!(
            (1000.0..4000.0).contains(&weight),
            "kept traces stand for {weight}, of 2,000"
        );
    }

    #[test]
    fn a_load_after_a_quiet_spell_is_sampled_to_the_rate_at_once() {
        let s = RateSampler::new(10.0);
        let t0 = Instant::now();
        let trace =
            |i: u64| id(u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835));
        // 1,000 a second for a second, then nothing for 10 s, then 1,000 a second for 2 s.
        for i in 0..1000u64 {
            s.decide_root(trace(i), t0 + Duration::from_millis(i));
        }
        let resumed = t0 + Duration::from_secs(11);
        let kept_after = (0..2000u64)
            .filter(|i| kept(&s.decide_root(trace(1000 + i), resumed + Duration::from_millis(*i))))
            .count();
        // 10 a second for 2 s, give or take the randomness of ids: the quiet spell's low
        // average rate must not let the first second after it keep a tenth of everything.
        assert!((8..=45).contains(&kept_after), "kept {kept_after} of 2,000");
    }

    #[test]
    fn a_callers_decision_is_followed_with_its_tracestate() {
        let s = RateSampler::new(1.0);
        let state = TraceState::from_key_value([("ot", "th:c")]).unwrap();
        for flags in [TraceFlags::SAMPLED, TraceFlags::default()] {
            let parent = SpanContext::new(id(7), SpanId::from(9u64), flags, true, state.clone());
            let cx = Context::new().with_remote_span_context(parent);
            for _ in 0..5 {
                let r = s.should_sample(Some(&cx), id(7), "x", &SpanKind::Server, &[], &[]);
                assert_eq!(kept(&r), flags.is_sampled());
                assert_eq!(r.trace_state.header(), "ot=th:c");
            }
        }
    }

    #[test]
    fn a_bad_setting_falls_back_to_the_default() {
        for bad in ["0", "-3", "many", "inf"] {
            assert_eq!(
                RateSampler::from_setting(Some(bad)).per_second,
                DEFAULT_PER_SECOND
            );
        }
        assert_eq!(RateSampler::from_setting(Some(" 25 ")).per_second, 25.0);
        assert_eq!(
            RateSampler::from_setting(None).per_second,
            DEFAULT_PER_SECOND
        );
    }

    #[test]
    fn a_root_decided_by_the_server_is_built_with_its_id_and_weight() {
        use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
        let sampler = RateSampler::new(1.0);
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_sampler(sampler.clone())
            .with_id_generator(KitIds::default())
            .build();
        let tracer = provider.tracer("test");
        // Past the rate, so that the decision carries a threshold; the id is one it keeps.
        let t0 = Instant::now();
        for i in 0..50 {
            sampler.decide_root(id(i + 1), t0);
        }
        let kept = (1u128..)
            .map(|n| id(n.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)))
            .map(|id| NewTrace {
                id,
                decision: sampler.decide_root(id, t0),
            })
            .find(NewTrace::kept)
            .unwrap();
        let (want_id, want_state) = (kept.id, kept.decision.trace_state.header());
        assert!(want_state.starts_with("ot=th:"), "{want_state}");
        let span = {
            let _chosen = kept.choose();
            tracer.start("root")
        };
        let sc = span.span_context();
        assert_eq!(sc.trace_id(), want_id);
        assert!(sc.is_sampled());
        assert_eq!(sc.trace_state().header(), want_state);
        // Once the guard is gone, roots get ids and decisions of their own again.
        let other = tracer.start("next");
        assert_ne!(other.span_context().trace_id(), want_id);
    }
}
