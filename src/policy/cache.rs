//! What a reload may reuse from the load before it: a policy file whose bytes, templates and
//! load options are unchanged parses to the same policy, so it is not parsed again.
//!
//! A SIGHUP (or a ConfigMap update that rewrites the directory) reloads every file, while an SRE
//! usually changed one. Parsing and validating 10,000 files costs about a second of CPU (two
//! TOML passes, figment, validation per file), and on a daemon sharing its node that second
//! becomes several. With the cache a reload reads and hashes each file and parses only what
//! changed; the whole-set checks (duplicate services, notification routes) still run on every
//! reload. Reused policies are the same `Arc`s the daemon's runtimes hold, so the cache costs a
//! few dozen bytes per file, not a second copy of the policy model. A file that changed but
//! parses to the policy it had (a sync rewriting every file, a comment) keeps the running `Arc`
//! too: the fresh parse is dropped at once, so a reload of 10,000 rewritten files does not hold
//! two copies of the model at its peak.
//!
//! The fingerprint is the file's length and FNV-1a hash plus a context hash (the directory's
//! `templates.toml` bytes and the load options): editing `templates.toml` or the daemon's default
//! interval re-parses every policy, as it must. Files with problems are never cached: they are
//! re-read, and their problems reported, at every load.

use super::model::Policy;
use crate::hash::Fnv1a;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A file's identity for reuse: its bytes and everything else its parse depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fingerprint {
    len: u64,
    hash: u64,
    context: u64,
}

impl Fingerprint {
    /// The fingerprint of `path` read now under `context`, or `None` when it cannot be read (the
    /// parse then reports why).
    pub(super) fn of(path: &Path, context: u64) -> Option<Self> {
        let bytes = std::fs::read(path).ok()?;
        Some(Self {
            len: bytes.len() as u64,
            hash: Fnv1a::new().write(&bytes).finish(),
            context,
        })
    }
}

/// The context hash of a directory's files: its templates (absent hashes differently from
/// empty) and the load options' default interval.
pub(super) fn context(templates: Option<&Path>, default_interval_ms: u128) -> u64 {
    let mut h = Fnv1a::new();
    match templates.and_then(|t| std::fs::read(t).ok()) {
        Some(bytes) => h.write(b"templates:").write(&bytes),
        None => h.write(b"no templates"),
    };
    h.write(&default_interval_ms.to_le_bytes()).finish()
}

#[derive(Debug, Clone)]
struct Cached {
    fingerprint: Fingerprint,
    policy: Arc<Policy>,
}

/// Policies of the last load, by file. Keep one per policy source (the daemon keeps one across
/// reloads); an empty cache makes a load parse everything.
#[derive(Debug, Default)]
pub struct LoadCache {
    files: HashMap<PathBuf, Cached>,
}

impl LoadCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many files the cache can answer for.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The policy parsed from `path` when its fingerprint is unchanged.
    pub(super) fn get(&self, path: &Path, fingerprint: Fingerprint) -> Option<Arc<Policy>> {
        self.files
            .get(path)
            .filter(|c| c.fingerprint == fingerprint)
            .map(|c| c.policy.clone())
    }

    /// The policy `path` parsed to at the last load, whatever its fingerprint: a re-parsed file
    /// whose policy did not change keeps it.
    pub(super) fn previous(&self, path: &Path) -> Option<Arc<Policy>> {
        self.files.get(path).map(|c| c.policy.clone())
    }

    /// Records what one load parsed or reused. After a load without problems the cache holds
    /// exactly its files (a deleted file is forgotten); after a rejected load it keeps the
    /// earlier entries too, so fixing the one broken file is again a cheap reload.
    pub(super) fn record(&mut self, loaded: Vec<(PathBuf, Fingerprint, Arc<Policy>)>, clean: bool) {
        if clean {
            self.files.clear();
        }
        for (path, fingerprint, policy) in loaded {
            self.files.insert(
                path,
                Cached {
                    fingerprint,
                    policy,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{load_cached, LoadOptions, PolicyError};
    use std::time::Duration;

    fn policy(service: &str, critical: f64) -> String {
        format!(
            r#"service = "{service}"
namespace = "shop"

[deployments]
stable = "{service}"
canary = "{service}-canary"

[traffic]
virtual_service = "{service}"
route = "primary"
stable = {{ host = "{service}", subset = "stable" }}
canary = {{ host = "{service}", subset = "canary" }}

[[metric]]
name = "errors"
template = "errors"
critical = {{ above = {critical} }}
"#
        )
    }

    const TEMPLATES: &str =
        "[templates.errors]\nquery = \"sum(rate(errors{track=\\\"{{track}}\\\"}[1m]))\"\n";

    struct Dir {
        dir: tempfile::TempDir,
        cache: LoadCache,
        opts: LoadOptions,
    }

    impl Dir {
        fn new(services: &[&str]) -> Self {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("templates.toml"), TEMPLATES).unwrap();
            for s in services {
                std::fs::write(dir.path().join(format!("{s}.toml")), policy(s, 0.05)).unwrap();
            }
            Self {
                dir,
                cache: LoadCache::new(),
                opts: LoadOptions::default(),
            }
        }

        fn write(&self, name: &str, text: &str) {
            std::fs::write(self.dir.path().join(name), text).unwrap();
        }

        fn load(&mut self) -> Result<Vec<Arc<Policy>>, PolicyError> {
            load_cached(
                &[self.dir.path().to_path_buf()],
                &self.opts,
                &mut self.cache,
            )
        }
    }

    fn same(a: &[Arc<Policy>], b: &[Arc<Policy>]) -> Vec<bool> {
        a.iter().zip(b).map(|(x, y)| Arc::ptr_eq(x, y)).collect()
    }

    #[test]
    fn a_reload_reuses_unchanged_files_and_parses_the_edited_one() {
        let mut d = Dir::new(&["a", "b", "c"]);
        let first = d.load().unwrap();
        d.write("b.toml", &policy("b", 0.2));
        let second = d.load().unwrap();
        assert_eq!(same(&first, &second), [true, false, true]);
        assert_eq!(
            second[1].metrics[0].critical.as_ref().unwrap().above,
            Some(0.2)
        );
        assert_eq!(d.cache.len(), 3);
    }

    #[test]
    fn a_rewritten_file_whose_policy_did_not_change_keeps_the_running_policy() {
        // A sync that rewrites every file (a comment, reordered whitespace) re-parses them, but
        // the reload keeps the policies already running instead of a second, equal copy.
        let mut d = Dir::new(&["a", "b"]);
        let first = d.load().unwrap();
        d.write("a.toml", &format!("{}# synced\n", policy("a", 0.05)));
        let second = d.load().unwrap();
        assert_eq!(same(&first, &second), [true, true]);
        // The new fingerprint is recorded: the next load does not parse it again, and a real
        // change still makes a new policy.
        d.write("a.toml", &policy("a", 0.3));
        assert_eq!(same(&first, &d.load().unwrap()), [false, true]);
    }

    #[test]
    fn templates_or_options_that_change_reparse_every_file() {
        let mut d = Dir::new(&["a", "b"]);
        let first = d.load().unwrap();
        d.write("templates.toml", &TEMPLATES.replace("[1m]", "[5m]"));
        let second = d.load().unwrap();
        assert_eq!(same(&first, &second), [false, false]);
        assert!(second[0].metrics[0]
            .query
            .as_deref()
            .unwrap()
            .contains("[5m]"));
        d.opts.default_interval = Duration::from_secs(30);
        let third = d.load().unwrap();
        assert_eq!(same(&second, &third), [false, false]);
        assert_eq!(third[0].analysis.interval, Duration::from_secs(30));
    }

    #[test]
    fn a_broken_file_is_reported_at_every_load_and_the_others_stay_cached() {
        let mut d = Dir::new(&["a", "b"]);
        let first = d.load().unwrap();
        d.write("b.toml", "service = \n");
        for _ in 0..2 {
            let err = d.load().unwrap_err().to_string();
            assert!(err.contains("b.toml"), "{err}");
        }
        // Restored as it was: the entry from before the broken edit is still good.
        d.write("b.toml", &policy("b", 0.05));
        let fixed = d.load().unwrap();
        assert_eq!(same(&first, &fixed), [true, true]);
        d.write("b.toml", &policy("b", 0.1));
        assert_eq!(same(&first, &d.load().unwrap()), [true, false]);
        // A deleted file is forgotten once a load succeeds without it.
        std::fs::remove_file(d.dir.path().join("b.toml")).unwrap();
        assert_eq!(d.load().unwrap().len(), 1);
        assert_eq!(d.cache.len(), 1);
    }

    #[test]
    fn a_duplicate_service_in_an_unchanged_file_is_still_an_error() {
        // Whole-set checks run on every load, cached files included.
        let mut d = Dir::new(&["a"]);
        d.load().unwrap();
        d.write("z.toml", &policy("a", 0.05));
        let err = d.load().unwrap_err().to_string();
        assert!(err.contains("already has a policy"), "{err}");
    }
}
