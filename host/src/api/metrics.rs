//! Request metrics in the Prometheus text format: a counter and a latency
//! histogram per method, route template and status. Route templates
//! (`/api/v1/users/{id}`) keep the label set small however many ids exist.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;

/// Histogram bucket upper bounds, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
struct Series {
    count: AtomicU64,
    sum_micros: AtomicU64,
    buckets: [AtomicU64; BUCKETS.len()],
}

type Labels = (String, String, u16);

/// The registry. Recording takes a read lock in the common case.
#[derive(Default)]
pub struct Metrics {
    series: RwLock<HashMap<Labels, Arc<Series>>>,
}

impl Metrics {
    /// Records one finished request.
    pub fn record(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let key = (method.to_string(), route.to_string(), status);
        let series = {
            let read = self.series.read();
            read.get(&key).cloned()
        };
        let series = match series {
            Some(s) => s,
            None => Arc::clone(self.series.write().entry(key).or_default()),
        };
        let secs = elapsed.as_secs_f64();
        series.count.fetch_add(1, Ordering::Relaxed);
        series
            .sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                series.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut rows: Vec<(Labels, Arc<Series>)> = self
            .series
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = String::new();
        out.push_str(
            "# HELP cohort_http_requests_total HTTP requests by method, route and status.\n",
        );
        out.push_str("# TYPE cohort_http_requests_total counter\n");
        for ((m, r, s), series) in &rows {
            let _ = writeln!(
                out,
                "cohort_http_requests_total{{method=\"{m}\",route=\"{}\",status=\"{s}\"}} {}",
                escape(r),
                series.count.load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP cohort_http_request_duration_seconds HTTP request latency by method, route and status.\n");
        out.push_str("# TYPE cohort_http_request_duration_seconds histogram\n");
        for ((m, r, s), series) in &rows {
            let labels = format!("method=\"{m}\",route=\"{}\",status=\"{s}\"", escape(r));
            for (i, le) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "cohort_http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {}",
                    series.buckets[i].load(Ordering::Relaxed)
                );
            }
            let count = series.count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "cohort_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "cohort_http_request_duration_seconds_sum{{{labels}}} {}",
                series.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "cohort_http_request_duration_seconds_count{{{labels}}} {count}"
            );
        }
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::default();
        m.record("GET", "/api/v1/users/{id}", 200, Duration::from_micros(300));
        m.record("GET", "/api/v1/users/{id}", 200, Duration::from_millis(3));
        let text = m.render();
        assert!(text.contains("cohort_http_requests_total{method=\"GET\",route=\"/api/v1/users/{id}\",status=\"200\"} 2"));
        assert!(text.contains("le=\"0.0005\"} 1"));
        assert!(text.contains("le=\"0.005\"} 2"));
        assert!(text.contains("le=\"+Inf\"} 2"));
    }
}
