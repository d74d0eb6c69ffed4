//! Builders for policies in tests, examples and the demo (controller-rs style fixtures).
//!
//! They live in the library (not behind `cfg(test)`) so integration tests, benches and the demo can
//! build policies without writing TOML.

use super::kinds::{BurnRateSpec, MannWhitneySpec, SequentialSpec};
use super::model::*;
use std::path::PathBuf;
use std::time::Duration;

impl Policy {
    /// A minimal valid policy for service `web` in namespace `default`, with no metrics.
    pub fn test() -> Self {
        Policy {
            service: "web".into(),
            namespace: "default".into(),
            deployments: Deployments {
                stable: "web".into(),
                canary: "web-canary".into(),
            },
            traffic: Traffic {
                kind: None,
                virtual_service: "web".into(),
                route: "primary".into(),
                stable: Destination {
                    host: "web".into(),
                    subset: Some("stable".into()),
                    service: None,
                },
                canary: Destination {
                    host: "web".into(),
                    subset: Some("canary".into()),
                    service: None,
                },
                ..Traffic::default()
            },
            analysis: Analysis::default(),
            vars: Default::default(),
            metrics: Vec::new(),
            notify: None,
            action: Default::default(),
            rto: None,
            rollback_attempts: None,
            verify: Default::default(),
            escalation: Vec::new(),
            source: PathBuf::from("test.toml"),
        }
    }

    /// [`Policy::test`] routed by the Gateway API: HTTPRoute `web`, rule `split`, backendRefs
    /// `web` (stable) and `web-canary`.
    pub fn test_gateway() -> Self {
        let mut p = Self::test();
        p.traffic = Traffic {
            http_route: "web".into(),
            rule: Some("split".into()),
            stable: Destination {
                service: Some("web".into()),
                ..Destination::default()
            },
            canary: Destination {
                service: Some("web-canary".into()),
                ..Destination::default()
            },
            ..Traffic::default()
        };
        p
    }

    /// [`Policy::test`] without a router: traffic follows the ready replicas.
    pub fn test_replicas() -> Self {
        let mut p = Self::test();
        p.traffic = Traffic {
            kind: Some(crate::policy::TrafficKind::Replicas),
            ..Traffic::default()
        };
        p
    }

    pub fn with_service(mut self, service: &str, namespace: &str) -> Self {
        self.service = service.into();
        self.namespace = namespace.into();
        self
    }

    pub fn with_metric(mut self, metric: MetricSpec) -> Self {
        self.metrics.push(metric);
        self
    }

    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.analysis.interval = interval;
        self
    }

    pub fn with_warmup(mut self, warmup: Duration) -> Self {
        self.analysis.warmup = warmup;
        self
    }

    pub fn with_on_shared(mut self, on_shared: OnShared) -> Self {
        self.analysis.on_shared = on_shared;
        self
    }
}

impl MetricSpec {
    /// A metric with a query and nothing else set: every other field takes its default.
    pub fn test(name: &str) -> Self {
        MetricSpec {
            name: name.into(),
            template: None,
            query: Some(
                format!("{name}{{service=\"{{{{service}}}}\",track=\"{{{{track}}}}\"}}").into(),
            ),
            window: None,
            stat: None,
            stat_window: None,
            warning: None,
            critical: None,
            for_: None,
            clear_for: None,
            compare: None,
            unit: None,
            min_traffic: None,
            no_data: None,
            sequential: None,
            burn_rate: None,
            mann_whitney: None,
        }
    }

    pub fn warning(mut self, level: Level) -> Self {
        self.warning = Some(level);
        self
    }

    pub fn critical(mut self, level: Level) -> Self {
        self.critical = Some(level);
        self
    }

    pub fn unit(mut self, unit: super::model::Unit) -> Self {
        self.unit = Some(unit);
        self
    }

    pub fn for_(mut self, d: Duration) -> Self {
        self.for_ = Some(d);
        self
    }

    pub fn clear_for(mut self, d: Duration) -> Self {
        self.clear_for = Some(d);
        self
    }

    pub fn compare(mut self, c: Compare) -> Self {
        self.compare = Some(c);
        self
    }

    pub fn min_traffic(mut self, rps: f64) -> Self {
        self.min_traffic = Some(rps);
        self
    }

    pub fn no_data(mut self, n: NoData) -> Self {
        self.no_data = Some(n);
        self
    }

    pub fn stat(mut self, s: Stat, over: Duration) -> Self {
        self.stat = Some(s);
        self.stat_window = Some(over);
        self
    }

    pub fn query(mut self, q: &str) -> Self {
        self.query = Some(q.into());
        self
    }

    /// Makes this a sequential count test on `events` out of `total` (query dropped), e.g.
    /// `MetricSpec::test("errors").sequential("errors_total{..}", "requests_total{..}")`.
    pub fn sequential(mut self, events: &str, total: &str) -> Self {
        self.query = None;
        self.sequential = Some(SequentialSpec {
            events: events.into(),
            total: total.into(),
            alpha: None,
            margin: None,
            min_exposure: None,
            pass_ratio: None,
            warmup_alpha: None,
            horizon: None,
        });
        self
    }

    /// Makes this an SLO burn-rate rule with the default rules; `query` is the error ratio.
    pub fn burn_rate(mut self, objective: f64) -> Self {
        self.burn_rate = Some(BurnRateSpec {
            objective,
            rules: None,
        });
        self
    }

    /// Makes this a Mann-Whitney comparison of the values over `stat_window`.
    pub fn mann_whitney(mut self, over: Duration) -> Self {
        self.stat_window = Some(over);
        self.mann_whitney = Some(MannWhitneySpec::default());
        self
    }
}
