//! A fixed-size latency histogram with 1.6% precision, so 64 client threads can
//! each record millions of samples without allocating or sharing anything.

use std::time::Duration;

/// Values below this are kept exactly; above, with 7 significant bits (64 buckets per
/// power of two, so a bucket is at most 1/64 of its values wide).
const EXACT_BELOW: u64 = 128;
/// Buckets per power of two above `EXACT_BELOW`.
const PER_OCTAVE: u64 = 64;
/// Enough buckets for every `u64` nanosecond value.
const BUCKETS: usize = (EXACT_BELOW + 57 * PER_OCTAVE) as usize;

/// Latencies in nanoseconds, bucketed log-linearly.
#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u64; BUCKETS]>,
    total: u64,
    max_ns: u64,
    sum_ns: u128,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("total", &self.total)
            .field("max_ns", &self.max_ns)
            .finish()
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

fn bucket_of(ns: u64) -> usize {
    if ns < EXACT_BELOW {
        return ns as usize;
    }
    let bits = 64 - u64::from(ns.leading_zeros()); // at least 8
    let shift = bits - 7;
    let mantissa = ns >> shift; // 64..=127
    (EXACT_BELOW + (shift - 1) * PER_OCTAVE + (mantissa - PER_OCTAVE)) as usize
}

/// The smallest value that falls in bucket `b` (the inverse of `bucket_of`).
fn lowest_of(b: usize) -> u64 {
    let b = b as u64;
    if b < EXACT_BELOW {
        return b;
    }
    let b = b - EXACT_BELOW;
    let shift = b / PER_OCTAVE + 1;
    let mantissa = b % PER_OCTAVE + PER_OCTAVE;
    mantissa << shift
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self {
            counts: Box::new([0; BUCKETS]),
            total: 0,
            max_ns: 0,
            sum_ns: 0,
        }
    }

    /// Records one latency.
    pub fn record(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.counts[bucket_of(ns)] += 1;
        self.total += 1;
        self.max_ns = self.max_ns.max(ns);
        self.sum_ns += u128::from(ns);
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.total += other.total;
        self.max_ns = self.max_ns.max(other.max_ns);
        self.sum_ns += other.sum_ns;
    }

    /// Number of samples.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// Whether no sample was recorded.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The largest sample, exactly.
    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.max_ns)
    }

    /// The mean.
    pub fn mean(&self) -> Duration {
        if self.total == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos((self.sum_ns / u128::from(self.total)) as u64)
    }

    /// The value below which a fraction `q` (0..=1) of the samples fall: the lower
    /// edge of the bucket holding that rank (within 1.6% of the true value), never more
    /// than the maximum.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.total == 0 {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Duration::from_nanos(lowest_of(b).min(self.max_ns));
            }
        }
        self.max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_precise() {
        let check = |ns: u64| {
            let b = bucket_of(ns);
            let low = lowest_of(b);
            assert!(low <= ns, "{ns}: bucket {b} starts at {low}");
            assert!(
                (ns - low) as f64 <= ns as f64 / 64.0,
                "{ns}: bucket {b} starts at {low}, too coarse"
            );
            b
        };
        let mut last = 0;
        for ns in 0..100_000u64 {
            let b = check(ns);
            assert!(b == last || b == last + 1, "{ns}: bucket {b} after {last}");
            last = b;
        }
        for shift in 17..64 {
            let v = 1u64 << shift;
            for ns in [v - 1, v, v + 1, v + v / 3] {
                check(ns);
            }
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_of_a_uniform_run() {
        let mut h = Histogram::new();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let p50 = h.quantile(0.5).as_micros() as f64;
        assert!((490.0..=500.0).contains(&p50), "{p50}");
        let p99 = h.quantile(0.99).as_micros() as f64;
        assert!((975.0..=990.0).contains(&p99), "{p99}");
        assert_eq!(h.max(), Duration::from_micros(1000));
        assert_eq!(h.len(), 1000);
    }
}
