//! Reading policy files and directories: parse, check structure, extract with figment, apply
//! templates, validate, fill defaults. The only part of `policy` that does I/O.
//!
//! A directory holds one policy per `*.toml` plus an optional `templates.toml` of shared metric
//! templates (`[templates.<name>]`). A single file takes its templates from a `templates.toml`
//! beside it. Every problem in every file is collected before giving up.

use super::cache::{self, Fingerprint, LoadCache};
use super::error::PolicyError;
use super::model::{Analysis, Policy, Template};
use super::template::{apply, Templates};
use super::{defaults, schema, validate};
use crate::diagnostic::schema::{check, Field};
use crate::diagnostic::spans::{self, SpanMap};
use crate::diagnostic::{from_figment, Problem};
use figment::providers::{Format, Toml};
use figment::Figment;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Name of the shared-template file in a policy directory.
pub const TEMPLATES_FILE: &str = "templates.toml";

/// Daemon-wide choices that shape how policies load.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadOptions {
    /// `analysis.interval` for policies that do not set it (the daemon's `poll_interval`).
    pub default_interval: Duration,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            default_interval: Analysis::default().interval,
        }
    }
}

/// Loads every policy in `paths` (files or directories), or reports every problem in all of them.
pub fn load(paths: &[PathBuf]) -> Result<Vec<Policy>, PolicyError> {
    load_with(paths, &LoadOptions::default())
}

/// `load` with daemon-wide options.
pub fn load_with(paths: &[PathBuf], opts: &LoadOptions) -> Result<Vec<Policy>, PolicyError> {
    let policies = load_inner(paths, opts, None)?;
    Ok(policies.into_iter().map(Arc::unwrap_or_clone).collect())
}

/// `load_with` reusing what `cache` holds from the previous load of the same paths: files whose
/// bytes, templates and options are unchanged are not parsed again (`policy::cache`). The daemon
/// loads through one cache for its whole life, so a reload of 10,000 files parses the few that
/// changed.
pub fn load_cached(
    paths: &[PathBuf],
    opts: &LoadOptions,
    cache: &mut LoadCache,
) -> Result<Vec<Arc<Policy>>, PolicyError> {
    load_inner(paths, opts, Some(cache))
}

/// What one load found: the policies in file order, every problem, and (when caching) each
/// parsed file's fingerprint for the cache.
#[derive(Default)]
struct Loaded {
    policies: Vec<Arc<Policy>>,
    problems: Vec<Problem>,
    files: Vec<(PathBuf, Fingerprint, Arc<Policy>)>,
}

/// The cache a load reads (the previous load's entries) and the context hash of the files it
/// is parsing.
#[derive(Clone, Copy)]
struct Reuse<'a> {
    cache: &'a LoadCache,
    context: u64,
}

fn load_inner(
    paths: &[PathBuf],
    opts: &LoadOptions,
    cache: Option<&mut LoadCache>,
) -> Result<Vec<Arc<Policy>>, PolicyError> {
    let mut out = Loaded::default();
    for path in paths {
        load_into(path, opts, cache.as_deref(), &mut out);
    }
    duplicates(&out.policies, &mut out.problems);
    // Read top to bottom, file by file (stable: same-line problems keep rule order).
    out.problems
        .sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    if let Some(cache) = cache {
        cache.record(out.files, out.problems.is_empty());
    }
    if out.problems.is_empty() {
        Ok(out.policies)
    } else {
        Err(PolicyError::Invalid {
            problems: out.problems,
        })
    }
}

/// Loads one file or directory.
pub fn load_path(path: &Path) -> Result<Vec<Policy>, PolicyError> {
    load(&[path.to_path_buf()])
}

/// Loads a `templates.toml`.
pub fn load_templates(path: &Path) -> Result<Templates, PolicyError> {
    let mut problems = Vec::new();
    let t = templates_from(path, &mut problems);
    if problems.is_empty() {
        Ok(t)
    } else {
        Err(PolicyError::Invalid { problems })
    }
}

fn load_into(path: &Path, opts: &LoadOptions, cache: Option<&LoadCache>, out: &mut Loaded) {
    if path.is_dir() {
        let mut files = match std::fs::read_dir(path) {
            Ok(entries) => entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "toml"))
                .collect::<Vec<_>>(),
            Err(e) => {
                out.problems.push(unreadable(path, &e));
                return;
            }
        };
        files.sort();
        let templates_path = path.join(TEMPLATES_FILE);
        let has_templates = templates_path.is_file();
        let templates = if has_templates {
            templates_from(&templates_path, &mut out.problems)
        } else {
            Templates::new()
        };
        let files: Vec<PathBuf> = files
            .into_iter()
            .filter(|f| !is_templates_file(f))
            .collect();
        let reuse = cache.map(|cache| Reuse {
            cache,
            context: cache::context(
                has_templates.then_some(templates_path.as_path()),
                opts.default_interval.as_millis(),
            ),
        });
        for (found, mut wrong) in parse_files(&files, opts, &templates, has_templates, reuse) {
            keep(found, out);
            out.problems.append(&mut wrong);
        }
        if files.is_empty() {
            out.problems.push(
                Problem::new(path, "", "no policy files (*.toml) in this directory")
                    .hint("add one <service>.toml per service, or point at the right directory"),
            );
        }
    } else if is_templates_file(path) {
        templates_from(path, &mut out.problems);
    } else {
        let sibling = path
            .parent()
            .map(|d| d.join(TEMPLATES_FILE))
            .filter(|p| p.is_file());
        let templates = match &sibling {
            Some(t) => templates_from(t, &mut out.problems),
            None => Templates::new(),
        };
        let reuse = cache.map(|cache| Reuse {
            cache,
            context: cache::context(sibling.as_deref(), opts.default_interval.as_millis()),
        });
        let mut problems = Vec::new();
        let found = parse_one(
            path,
            opts,
            &templates,
            sibling.is_some(),
            reuse,
            &mut problems,
        );
        keep(found.into_iter().collect(), out);
        out.problems.append(&mut problems);
    }
}

/// A parsed (or reused) file: its policy and, when caching, its fingerprint.
type Parsed = (PathBuf, Option<Fingerprint>, Arc<Policy>);

fn keep(found: Vec<Parsed>, out: &mut Loaded) {
    for (path, fingerprint, policy) in found {
        if let Some(fp) = fingerprint {
            out.files.push((path, fp, policy.clone()));
        }
        out.policies.push(policy);
    }
}

/// One policy file: the cached policy when its fingerprint is unchanged, else parsed.
fn parse_one(
    path: &Path,
    opts: &LoadOptions,
    templates: &Templates,
    has_templates: bool,
    reuse: Option<Reuse<'_>>,
    problems: &mut Vec<Problem>,
) -> Option<Parsed> {
    let fingerprint = reuse.and_then(|r| Fingerprint::of(path, r.context));
    if let (Some(r), Some(fp)) = (reuse, fingerprint) {
        if let Some(policy) = r.cache.get(path, fp) {
            return Some((path.to_path_buf(), fingerprint, policy));
        }
    }
    let policy = policy_from(path, opts, templates, has_templates, problems)?;
    // Rewritten but unchanged: keep the running policy and drop this copy now (`policy::cache`).
    if let Some(old) = reuse.and_then(|r| r.cache.previous(path)) {
        if *old == policy {
            return Some((path.to_path_buf(), fingerprint, old));
        }
    }
    Some((path.to_path_buf(), fingerprint, Arc::new(policy)))
}

/// Parses `files` on every core, in contiguous chunks so that concatenating the chunks keeps
/// the files' order. A directory of 10,000 policies is parsed and validated in parallel: a
/// reload is that much shorter, and `backout validate` too.
fn parse_files(
    files: &[PathBuf],
    opts: &LoadOptions,
    templates: &Templates,
    has_templates: bool,
    reuse: Option<Reuse<'_>>,
) -> Vec<(Vec<Parsed>, Vec<Problem>)> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = files.len().div_ceil(threads).max(64);
    let parse = |chunk: &[PathBuf]| {
        let mut problems = Vec::new();
        let policies = chunk
            .iter()
            .filter_map(|f| parse_one(f, opts, templates, has_templates, reuse, &mut problems))
            .collect();
        (policies, problems)
    };
    if files.len() <= chunk {
        return vec![parse(files)];
    }
    std::thread::scope(|scope| {
        let workers: Vec<_> = files
            .chunks(chunk)
            .map(|c| scope.spawn(move || parse(c)))
            .collect();
        workers
            .into_iter()
            // A parser panic is re-raised here, as it would have been without threads.
            .map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

fn is_templates_file(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n == TEMPLATES_FILE)
}

fn unreadable(path: &Path, e: &std::io::Error) -> Problem {
    Problem::new(path, "", format!("cannot read: {e}"))
        .hint("check that the path exists and is readable")
}

/// Reads, parses and structurally checks a file; returns its key lines if it is well-formed.
fn checked(path: &Path, fields: &[Field], problems: &mut Vec<Problem>) -> Option<SpanMap> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            problems.push(unreadable(path, &e));
            return None;
        }
    };
    let doc = match spans::parse(&text) {
        Ok(doc) => doc,
        Err(e) => {
            problems.push(
                Problem::new(path, "", format!("TOML syntax error: {}", e.message))
                    .at(e.line)
                    .hint(
                        "fix the TOML syntax at this line (strings need quotes, tables [brackets])",
                    ),
            );
            return None;
        }
    };
    let structural = check(path, &text, &doc, fields);
    if structural.is_empty() {
        Some(doc.spans)
    } else {
        problems.extend(structural);
        None
    }
}

fn extract<T: for<'de> Deserialize<'de>>(
    path: &Path,
    spans: &SpanMap,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    match Figment::from(Toml::file_exact(path)).extract::<T>() {
        Ok(v) => Some(v),
        Err(e) => {
            problems.extend(from_figment(e, path, Some(spans), ""));
            None
        }
    }
}

#[derive(Deserialize)]
struct TemplatesFile {
    #[serde(default)]
    templates: BTreeMap<String, Template>,
}

fn templates_from(path: &Path, problems: &mut Vec<Problem>) -> Templates {
    let Some(spans) = checked(path, schema::TEMPLATES_FILE, problems) else {
        return Templates::new();
    };
    extract::<TemplatesFile>(path, &spans, problems)
        .map(|f| f.templates)
        .unwrap_or_default()
}

fn policy_from(
    path: &Path,
    opts: &LoadOptions,
    templates: &Templates,
    has_templates_file: bool,
    problems: &mut Vec<Problem>,
) -> Option<Policy> {
    let spans = checked(path, schema::POLICY, problems)?;
    let mut policy: Policy = extract(path, &spans, problems)?;
    policy.source = path.to_path_buf();
    if !spans.has("analysis.interval") {
        policy.analysis.interval = opts.default_interval;
    }
    let before = problems.len();
    for (i, metric) in policy.metrics.iter_mut().enumerate() {
        let Some(name) = metric.template.clone() else {
            continue;
        };
        match templates.get(&name) {
            Some(t) => apply(metric, t),
            None => {
                let key = format!("metric[{i}].template");
                let hint = if has_templates_file {
                    let known: Vec<&str> = templates.keys().map(String::as_str).collect();
                    format!(
                        "define [templates.{name}] in {TEMPLATES_FILE} (defined: {})",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    )
                } else {
                    format!("create {TEMPLATES_FILE} beside this file with [templates.{name}]")
                };
                problems.push(
                    Problem::new(path, &key, format!("undefined template `{name}`"))
                        .at(spans.line_of(&key))
                        .hint(hint),
                );
            }
        }
    }
    problems.extend(validate::validate(&policy, &spans));
    if problems.len() > before {
        return None;
    }
    defaults::fill(&mut policy);
    Some(policy)
}

/// Two files for the same service would fight over the same Deployments.
fn duplicates(policies: &[Arc<Policy>], problems: &mut Vec<Problem>) {
    let mut seen: BTreeMap<(&str, &str), &Path> = BTreeMap::new();
    for p in policies {
        let key = (p.namespace.as_str(), p.service.as_str());
        match seen.get(&key) {
            Some(first) => problems.push(
                Problem::new(
                    &p.source,
                    "service",
                    format!(
                        "service `{}` in namespace `{}` already has a policy in {}",
                        p.service,
                        p.namespace,
                        first.display()
                    ),
                )
                .hint("keep one policy per service; merge the metrics into one file"),
            ),
            None => {
                seen.insert(key, &p.source);
            }
        }
    }
}
