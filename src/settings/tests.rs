//! Settings tests: precedence, and every problem naming the file and line or the variable.

use super::*;
use crate::diagnostic::Problem;
use figment::Jail;

fn problems(jail: &Jail) -> Vec<Problem> {
    let path = jail.directory().join("backout.toml");
    Settings::load(&path).unwrap_err().problems().to_vec()
}

#[test]
fn defaults_then_file_then_environment() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "backout.toml",
            "dry_run = false\n[prometheus]\nurl = \"http://prom:9090\"\nrate_limit = 5\n",
        )?;
        jail.set_env("BACKOUT_DRY_RUN", "true");
        jail.set_env("BACKOUT_PROMETHEUS__HTTP_TIMEOUT", "30s");
        let s = Settings::load(&jail.directory().join("backout.toml")).unwrap();
        assert!(s.dry_run, "env beats file");
        assert_eq!(s.prometheus.url, "http://prom:9090");
        assert_eq!(s.prometheus.rate_limit, 5.0);
        assert_eq!(s.prometheus.http_timeout, Duration::from_secs(30));
        assert_eq!(
            s.prometheus.query_timeout,
            Duration::from_secs(5),
            "default kept"
        );
        assert_eq!(s.log.format, LogFormat::Json);
        Ok(())
    });
}

#[test]
fn file_mistakes_are_all_listed_with_lines() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "backout.toml",
            "dryrun = true\npoll_interval = \"often\"\n[log]\nformat = \"xml\"\n[admin]\nlisten = \"nowhere\"\n",
        )?;
        let p = problems(jail);
        let at = |k: &str| p.iter().find(|p| p.key == k).map(|p| p.line);
        assert_eq!(at("dryrun"), Some(Some(1)), "{p:?}");
        assert_eq!(at("poll_interval"), Some(Some(2)), "{p:?}");
        assert_eq!(at("log.format"), Some(Some(4)), "{p:?}");
        Ok(())
    });
}

#[test]
fn bad_socket_address_names_key_and_line() {
    Jail::expect_with(|jail| {
        jail.create_file("backout.toml", "[admin]\nlisten = \"nowhere\"\n")?;
        let p = problems(jail);
        assert_eq!(p[0].key, "admin.listen");
        assert_eq!(p[0].line, Some(2));
        Ok(())
    });
}

#[test]
fn semantic_problems_name_the_environment_variable() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "backout.toml",
            "[prometheus]\nbasic_auth_user = \"bob\"\nquery_timeout = \"20s\"\n",
        )?;
        jail.set_env("BACKOUT_PROMETHEUS__URL", "ftp://x");
        let p = problems(jail);
        let url = p
            .iter()
            .find(|p| p.key.starts_with("prometheus.url"))
            .unwrap();
        assert!(url.key.contains("BACKOUT_PROMETHEUS__URL"), "{url}");
        let user = p
            .iter()
            .find(|p| p.key == "prometheus.basic_auth_user")
            .unwrap();
        assert_eq!(user.line, Some(2));
        let qt = p
            .iter()
            .find(|p| p.key == "prometheus.query_timeout")
            .unwrap();
        assert_eq!(qt.line, Some(3));
        Ok(())
    });
}

#[test]
fn bad_environment_value_names_the_variable() {
    Jail::expect_with(|jail| {
        jail.create_file("backout.toml", "")?;
        // passes the per-variable check (a string) but is no socket address
        jail.set_env("BACKOUT_ADMIN__LISTEN", "nowhere");
        let p = problems(jail);
        assert_eq!(p[0].key, "admin.listen");
        assert!(p[0].hint.contains("BACKOUT_ADMIN__LISTEN"), "{}", p[0]);
        Ok(())
    });
}

#[test]
fn every_bad_environment_variable_is_listed() {
    let vars = [
        ("BACKOUT_NOPE", "1"),
        ("BACKOUT_PROMETHEUS__RATE_LIMIT", "lots"),
        ("BACKOUT_PROMETHEUS__HTTP_TIMEOUT", "soon"),
        ("BACKOUT_PROMETHEUS__BURST", "-1"),
        ("BACKOUT_PROMETHEUS__CONNECT_TIMEOUT", "2s"),
        ("BACKOUT_DRY_RUN", "yes"),
        ("BACKOUT_LOG__FORMAT", "xml"),
        ("BACKOUT_PROMETHEUS", "x"),
        ("BACKOUT_LOG__FORMAT__X", "x"),
        ("BACKOUT_POLICY_DIR", "p"),
        ("BACKOUT_PROMETHEUS__URL", "http://x"),
        ("OTHER", "ignored"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    let p = check_env(vars);
    let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "nope (from BACKOUT_NOPE)",
            "prometheus.rate_limit (from BACKOUT_PROMETHEUS__RATE_LIMIT)",
            "prometheus.http_timeout (from BACKOUT_PROMETHEUS__HTTP_TIMEOUT)",
            "prometheus.burst (from BACKOUT_PROMETHEUS__BURST)",
            "dry_run (from BACKOUT_DRY_RUN)",
            "log.format (from BACKOUT_LOG__FORMAT)",
            "prometheus (from BACKOUT_PROMETHEUS)",
            "log.format.x (from BACKOUT_LOG__FORMAT__X)",
        ]
    );
}

#[test]
fn connect_timeout_and_burst_are_settings_and_checked_with_lines() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "backout.toml",
            "[prometheus]\nconnect_timeout = \"2s\"\nburst = 3\n",
        )?;
        let s = Settings::load(&jail.directory().join("backout.toml")).unwrap();
        assert_eq!(s.prometheus.connect_timeout, Duration::from_secs(2));
        assert_eq!(s.prometheus.burst, Some(3));
        jail.create_file(
            "backout.toml",
            "[prometheus]\nconnect_timeout = \"0s\"\nburst = 0\n",
        )?;
        let p = problems(jail);
        let at = |k: &str| {
            p.iter()
                .find(|p| p.key == k)
                .map(|p| (p.line, p.hint.clone()))
        };
        let (line, hint) = at("prometheus.connect_timeout").unwrap();
        assert_eq!(line, Some(2), "{p:?}");
        assert!(hint.contains("duration"), "{hint}");
        let (line, hint) = at("prometheus.burst").unwrap();
        assert_eq!(line, Some(3), "{p:?}");
        assert!(hint.contains("remove it"), "{hint}");
        Ok(())
    });
}

#[test]
fn shipped_settings_files_load() {
    // The documented keys are the canonical ones: the example config and the deploy manifest's
    // embedded settings must keep loading.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The ConfigMap's settings (kustomize generates it from this file).
    let embedded = std::fs::read_to_string(root.join("deploy/base/backout.toml")).unwrap();
    Jail::expect_with(|jail| {
        jail.create_file("deploy.toml", &embedded)?;
        let deploy = Settings::load(&jail.directory().join("deploy.toml")).unwrap();
        assert_eq!(deploy.prometheus.http_timeout, Duration::from_secs(5));
        let example = Settings::load(&root.join("config/backout.toml")).unwrap();
        assert_eq!(
            example,
            Settings::default(),
            "config/backout.toml shows the defaults"
        );
        Ok(())
    });
}

#[test]
fn missing_file_is_reported() {
    Jail::expect_with(|jail| {
        let p = problems(jail);
        assert!(p[0].message.contains("cannot read"));
        Ok(())
    });
}

#[test]
fn kubernetes_limits_load_and_bad_ones_name_key_line_and_fix() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "backout.toml",
            "[kubernetes]\nrequest_timeout = \"3s\"\nqps = 20\nburst = 40\n",
        )?;
        let s = Settings::load(&jail.directory().join("backout.toml")).unwrap();
        assert_eq!(s.kubernetes.request_timeout, Duration::from_secs(3));
        assert_eq!((s.kubernetes.qps, s.kubernetes.burst), (20.0, 40));

        jail.create_file(
            "backout.toml",
            "[kubernetes]\nrequest_timeout = \"0s\"\nqps = 0\nburst = 0\n",
        )?;
        let p = problems(jail);
        let at = |k: &str| {
            p.iter()
                .find(|p| p.key == k)
                .map(|p| (p.line, p.hint.clone()))
        };
        let (line, hint) = at("kubernetes.request_timeout").expect("request_timeout");
        assert_eq!(line, Some(2));
        assert!(hint.contains("10s"), "{hint}");
        assert_eq!(at("kubernetes.qps").map(|a| a.0), Some(Some(3)), "{p:?}");
        assert_eq!(at("kubernetes.burst").map(|a| a.0), Some(Some(4)), "{p:?}");

        jail.create_file("backout.toml", "[kubernetes]\nrequest_timeout = \"soon\"\n")?;
        assert_eq!(problems(jail)[0].key, "kubernetes.request_timeout");
        Ok(())
    });
}

#[test]
fn kubernetes_qps_from_the_environment_names_the_variable() {
    Jail::expect_with(|jail| {
        jail.create_file("backout.toml", "")?;
        jail.set_env("BACKOUT_KUBERNETES__QPS", "-5");
        let p = problems(jail);
        assert!(p[0].key.contains("BACKOUT_KUBERNETES__QPS"), "{}", p[0]);
        Ok(())
    });
}
