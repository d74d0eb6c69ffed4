//! The architecture of docs/architecture.md, checked on the source.
//!
//! backout is a functional core with an imperative shell, and data flows one way:
//! `sources -> windows -> rules -> verdict -> order -> action plan -> actuator -> audit`.
//! Reviews forget; this test does not. It parses every library file reachable from `src/lib.rs`
//! (skipping `#[cfg(test)]` items and test modules: tests may use tokio) and fails, naming file
//! and line, when
//!
//! - a pure module ([`PURE`]) imports an I/O crate or std module ([`IO`]) or a module of the shell;
//! - an import runs against the flow ([`FLOW`]): an upstream stage imports a downstream one;
//! - a module reserved for the top of the program ([`RESERVED`]: the daemon, the demo, the
//!   harness) is imported from below, or a sink imports what it measures ([`DENY`]);
//! - a function on the engine or actuator path is longer than [`LONG_FN_LINES`] lines.
//!
//! Imports are resolved as the compiler would for what matters here: `crate::`, `super::`,
//! `self::`, child modules, `pub use` re-exports (so `crate::policy::load_path` counts as an import
//! of `policy::load`), in `use` items and in paths in code (`tokio::spawn(..)`, `crate::x::f()`).
//! Macro bodies are token streams and are not looked into.
//!
//! A rule that the code breaks today for a known reason is listed in [`KNOWN`], with the reason;
//! an entry that no longer matches anything fails the test, so the list only shrinks.

use proc_macro2::Span;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use syn::visit::{self, Visit};

// ------------------------------------------------------------------------------------------------
// The rules
// ------------------------------------------------------------------------------------------------

/// Modules that do no I/O: they may import only each other and crates without I/O. The engine
/// (`decision`, `stats`), the release state (`lifecycle`), the data model (`sample`), the policy
/// model (everything under `policy` except its loader) and the located problems it reports
/// (`diagnostic`). The longest prefix wins, so [`SHELL_IN_PURE`] carves the loader out.
const PURE: &[&str] = &[
    "hash",
    "sample",
    "stats",
    "decision",
    "lifecycle",
    "policy",
    "diagnostic",
    "import",
];

/// Parts of a pure module's tree that do I/O, with what they do.
const SHELL_IN_PURE: &[(&str, &str)] = &[
    ("policy::load", "reads policy files"),
    ("policy::cache", "reads policy files to tell which changed"),
];

/// Crates and std modules a pure module must not name, with why (path prefixes).
const IO: &[(&str, &str)] = &[
    ("tokio", "async runtime, timers, sockets"),
    ("tokio_util", "async runtime"),
    ("tokio_stream", "async runtime"),
    ("futures", "async plumbing"),
    ("kube", "Kubernetes client"),
    ("kube_client", "Kubernetes client"),
    ("kube_runtime", "Kubernetes watches"),
    ("reqwest", "HTTP client"),
    ("hyper", "HTTP"),
    ("hyper_util", "HTTP"),
    ("axum", "HTTP server"),
    ("tower", "network services"),
    ("tonic", "gRPC"),
    ("prometheus_http_query", "Prometheus client"),
    ("governor", "rate limiting on the clock"),
    ("notify", "file watching (the crate, not crate::notify)"),
    ("tempfile", "files"),
    ("opentelemetry", "trace export"),
    ("opentelemetry_sdk", "trace export"),
    ("opentelemetry_otlp", "trace export"),
    ("tracing_subscriber", "log output"),
    ("std::fs", "files"),
    ("std::net", "sockets"),
    ("std::process", "processes"),
    ("std::env", "the environment"),
    (
        "std::time::Instant",
        "the clock (the engine takes `now: Millis`)",
    ),
    (
        "std::time::SystemTime",
        "the clock (the engine takes `now: Millis`)",
    ),
];

/// The flow of docs/architecture.md, upstream first: a module may import its own stage and
/// upstream stages, never a downstream one. The foundation (data model, policy, statistics,
/// clock) is upstream of everything; `lifecycle` opens each cycle
/// (`lifecycle -> sampler -> engine -> order`); the order and the outcome are values of the
/// `daemon`, which wires the stages together and is [`RESERVED`] for the top.
const FLOW: &[(&str, &[&str])] = &[
    (
        "foundation",
        &["hash", "sample", "stats", "policy", "diagnostic", "clock"],
    ),
    ("lifecycle", &["lifecycle"]),
    ("sources", &["source"]),
    ("windows, rules, verdict", &["decision"]),
    ("action plan, actuator", &["actuator", "kubeclient"]),
    ("audit, notices", &["audit", "notify"]),
];

/// Modules only the top of the program may import: `(module, who may, why)`. The binary's `cli`
/// is another crate and imports the library through `backout::`, so it needs no entry here.
const RESERVED: &[(&str, &[&str], &str)] = &[
    (
        "daemon",
        &["demo"],
        "the daemon runs the cycle and is driven from the top (cli, demo)",
    ),
    (
        "ha",
        &["daemon"],
        "the daemon decides who acts; the actuator sees only its `Fence` trait",
    ),
    ("backtest", &[], "the backtest is a command of the cli"),
    ("demo", &[], "the demo is a command of the cli"),
    ("import", &[], "`backout import` is a command of the cli"),
    (
        "quality",
        &[],
        "the decision-quality benchmark has its own binary",
    ),
    ("settings", &["daemon"], "the daemon's own settings"),
    (
        "sim",
        &["demo"],
        "the Kubernetes simulator is test and demo harness",
    ),
    (
        "promserver",
        &["demo"],
        "a Prometheus child process for the demo and tests",
    ),
    ("actuator::fixtures", &[], "test fixtures"),
];

/// Single imports that are wrong though no stage is skipped: `(importer, target, why)`.
const DENY: &[(&str, &str, &str)] = &[
    (
        "telemetry",
        "source",
        "telemetry is imported by the adapters it measures, never the other way",
    ),
    (
        "telemetry",
        "kubeclient",
        "telemetry is imported by the adapters it measures, never the other way",
    ),
    (
        "telemetry",
        "actuator",
        "telemetry is imported by the adapters it measures, never the other way",
    ),
];

/// Violations known today: `(file, imported module, reason)`. Each must still occur (or the entry
/// goes); the fix is tracked in issue 11.
const KNOWN: &[(&str, &str, &str)] = &[(
    "src/telemetry/metrics.rs",
    "kubeclient",
    "issue 11: the request label sets live in kubeclient, which imports telemetry::Metrics",
)];

/// Modules on the engine and actuator paths whose functions must stay short.
const LONG_FN_MODULES: &[&str] = &["decision", "stats", "lifecycle", "actuator"];

/// A soft guard: functions there are kept under ~80 lines; past this one the test fails.
const LONG_FN_LINES: usize = 100;

// ------------------------------------------------------------------------------------------------
// The checks
// ------------------------------------------------------------------------------------------------

#[test]
fn library_follows_the_architecture() {
    let krate = Crate::load(&root().join("src/lib.rs"));
    assert!(
        krate.files.len() > 100 && krate.file("src/decision/engine.rs").is_some(),
        "the walk from src/lib.rs found only {} files",
        krate.files.len()
    );
    let found = check(&krate);
    let mut unexpected = Vec::new();
    let mut used = BTreeSet::new();
    for v in &found {
        match KNOWN
            .iter()
            .position(|(file, target, _)| v.file == *file && under(&v.target, target))
        {
            Some(i) => {
                used.insert(i);
            }
            None => unexpected.push(v.to_string()),
        }
    }
    for (i, (file, target, why)) in KNOWN.iter().enumerate() {
        if !used.contains(&i) {
            unexpected.push(format!(
                "{file}: the known violation ({target}: {why}) is gone; remove it from KNOWN"
            ));
        }
    }
    assert!(
        unexpected.is_empty(),
        "architecture rules broken (docs/architecture.md, tests/architecture.rs):\n{}",
        unexpected.join("\n")
    );
}

#[test]
fn engine_and_actuator_functions_stay_short() {
    let krate = Crate::load(&root().join("src/lib.rs"));
    let long: Vec<String> = long_functions(&krate)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        long.is_empty(),
        "functions over {LONG_FN_LINES} lines on the engine and actuator paths (split them into \
         named steps):\n{}",
        long.join("\n")
    );
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One broken rule, at a file and line.
#[derive(Debug, Clone, PartialEq)]
struct Violation {
    file: String,
    line: usize,
    /// The imported module (`crate` paths, `::`-joined) or the named crate path.
    target: String,
    message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// Every rule broken in `krate`, in file and line order.
fn check(krate: &Crate) -> Vec<Violation> {
    let mut out = Vec::new();
    for file in &krate.files {
        for import in &file.imports {
            let from = import.module.join("::");
            let at = |target: String, message: String| Violation {
                file: file.label.clone(),
                line: import.line,
                target,
                message,
            };
            match krate.resolve(&import.module, &import.path, import.in_use) {
                Target::External(path) => {
                    if is_pure(&from) {
                        if let Some((_, why)) = IO.iter().find(|(p, _)| under(&path, p)) {
                            out.push(at(
                                path.clone(),
                                format!("pure module `{from}` names `{path}` ({why})"),
                            ));
                        }
                    }
                }
                // Items of `lib.rs` itself (none today) belong to no module with rules.
                Target::Module(to) if to.is_empty() => {}
                Target::Module(to) => {
                    if import.reexport && under(&to, &from) {
                        // A module re-exporting its own children is their facade.
                        continue;
                    }
                    for message in module_rules(&from, &to) {
                        out.push(at(to.clone(), message));
                    }
                }
            }
        }
    }
    out.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    out.dedup();
    out
}

/// The rules broken by module `from` importing module `to` (both `::`-joined crate paths).
fn module_rules(from: &str, to: &str) -> Vec<String> {
    let mut broken = Vec::new();
    if is_pure(from) && !is_pure(to) {
        let what = SHELL_IN_PURE
            .iter()
            .find(|(m, _)| under(to, m))
            .map_or("a shell module", |(_, why)| why);
        broken.push(format!(
            "pure module `{from}` imports `{to}` ({what}); the pure core does no I/O"
        ));
    }
    if let (Some(a), Some(b)) = (stage(from), stage(to)) {
        if b > a {
            broken.push(format!(
                "`{from}` ({}) imports `{to}` ({}): against the flow, sources -> windows -> \
                 rules -> verdict -> order -> action plan -> actuator -> audit",
                FLOW[a].0, FLOW[b].0
            ));
        }
    }
    for (module, allowed, why) in RESERVED {
        if under(to, module) && !under(from, module) && !allowed.iter().any(|a| under(from, a)) {
            broken.push(format!(
                "`{from}` imports `{to}`, which only {} may import: {why}",
                if allowed.is_empty() {
                    "the top of the program".to_string()
                } else {
                    allowed.join(", ")
                }
            ));
        }
    }
    for (importer, target, why) in DENY {
        if under(from, importer) && under(to, target) {
            broken.push(format!("`{from}` imports `{to}`: {why}"));
        }
    }
    broken
}

/// Whether `module` is in the pure core.
fn is_pure(module: &str) -> bool {
    let pure = PURE
        .iter()
        .filter(|p| under(module, p))
        .map(|p| p.len())
        .max();
    let shell = SHELL_IN_PURE
        .iter()
        .filter(|(p, _)| under(module, p))
        .map(|(p, _)| p.len())
        .max();
    match (pure, shell) {
        (Some(p), Some(s)) => p > s,
        (Some(_), None) => true,
        _ => false,
    }
}

/// The flow stage of `module` (index in [`FLOW`]), by longest prefix.
fn stage(module: &str) -> Option<usize> {
    FLOW.iter()
        .enumerate()
        .flat_map(|(i, (_, ms))| ms.iter().map(move |m| (i, m)))
        .filter(|(_, m)| under(module, m))
        .max_by_key(|(_, m)| m.len())
        .map(|(i, _)| i)
}

/// Whether `path` is `prefix` or inside it (`a::b` is under `a`, `ab` is not).
fn under(path: &str, prefix: &str) -> bool {
    path == prefix
        || (path.starts_with(prefix) && path[prefix.len()..].starts_with("::"))
        || prefix.is_empty()
}

/// A function longer than [`LONG_FN_LINES`].
struct LongFn {
    file: String,
    line: usize,
    name: String,
    lines: usize,
}

impl fmt::Display for LongFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: fn {} is {} lines",
            self.file, self.line, self.name, self.lines
        )
    }
}

fn long_functions(krate: &Crate) -> Vec<LongFn> {
    let mut out = Vec::new();
    for file in &krate.files {
        let module = file.module.join("::");
        if !LONG_FN_MODULES.iter().any(|m| under(&module, m)) {
            continue;
        }
        for f in &file.functions {
            let lines = f.end - f.start + 1;
            if lines > LONG_FN_LINES {
                out.push(LongFn {
                    file: file.label.clone(),
                    line: f.start,
                    name: f.name.clone(),
                    lines,
                });
            }
        }
    }
    out
}

// ------------------------------------------------------------------------------------------------
// The crate as the checks see it
// ------------------------------------------------------------------------------------------------

/// The library's files with their module paths, and what resolution needs: every module, the
/// items each defines and its `pub use` re-exports.
#[derive(Default)]
struct Crate {
    files: Vec<File>,
    modules: BTreeSet<Vec<String>>,
    items: BTreeMap<Vec<String>, BTreeSet<String>>,
    /// `(module, name) -> absolute path` of `pub use module::...::name`.
    reexports: BTreeMap<(Vec<String>, String), Vec<String>>,
    /// Modules glob re-exported by a module (`pub use model::*`).
    globs: BTreeMap<Vec<String>, Vec<Vec<String>>>,
}

/// One source file of the library.
struct File {
    /// Path relative to the crate root, as in messages (`src/decision/engine.rs`).
    label: String,
    module: Vec<String>,
    imports: Vec<Import>,
    functions: Vec<Function>,
}

/// A path the file names: a `use` leaf or a path in code.
#[derive(Debug)]
struct Import {
    path: Vec<String>,
    line: usize,
    /// From a `use` item (where a first segment may be a child module) rather than code.
    in_use: bool,
    /// From a `pub use`.
    reexport: bool,
    /// Module the import is written in (an inline `mod` may nest deeper than the file).
    module: Vec<String>,
}

struct Function {
    name: String,
    start: usize,
    end: usize,
}

/// What an import names.
#[derive(Debug, PartialEq)]
enum Target {
    /// A module of this crate (`::`-joined, without `crate`).
    Module(String),
    /// A path into another crate (`tokio::time`, `std::fs::read`).
    External(String),
}

impl Crate {
    /// Walks the module tree from `lib` (following `mod x;` and `#[path]`, skipping
    /// `#[cfg(test)]` modules).
    fn load(lib: &Path) -> Crate {
        let base = lib.parent().and_then(Path::parent).expect("src/lib.rs");
        let mut krate = Crate::default();
        let mut pending = vec![(lib.to_path_buf(), Vec::<String>::new())];
        while let Some((path, module)) = pending.pop() {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            let label = path
                .strip_prefix(base)
                .unwrap_or(&path)
                .display()
                .to_string();
            let children = krate.add(&label, module.clone(), &text);
            let dir = child_dir(&path);
            for (name, attr_path) in children {
                let file = match attr_path {
                    Some(p) => path.parent().expect("dir").join(p),
                    None if dir.join(format!("{name}.rs")).exists() => {
                        dir.join(format!("{name}.rs"))
                    }
                    None => dir.join(&name).join("mod.rs"),
                };
                let mut m = module.clone();
                m.push(name);
                pending.push((file, m));
            }
        }
        krate.files.sort_by(|a, b| a.label.cmp(&b.label));
        krate
    }

    /// Parses one file of module `module`; returns its out-of-line child modules
    /// (`(name, #[path])`).
    fn add(
        &mut self,
        label: &str,
        module: Vec<String>,
        text: &str,
    ) -> Vec<(String, Option<String>)> {
        let ast = syn::parse_file(text).unwrap_or_else(|e| panic!("parsing {label}: {e}"));
        let mut c = Collector {
            module: module.clone(),
            ..Collector::default()
        };
        c.modules.insert(module.clone());
        c.visit_file(&ast);
        self.modules.extend(c.modules);
        for (m, names) in c.items {
            self.items.entry(m).or_default().extend(names);
        }
        for (m, name, target) in c.reexports {
            let child = |name: &str| c.children_of.get(&m).is_some_and(|c| c.contains(name));
            let first = target[0].as_str();
            if !(matches!(first, "crate" | "super" | "self") || child(first)) {
                continue; // re-exports another crate's item
            }
            let target = absolute(&m, &target, child);
            if name == "*" {
                self.globs.entry(m).or_default().push(target);
            } else {
                self.reexports.insert((m, name), target);
            }
        }
        self.files.push(File {
            label: label.to_string(),
            module,
            imports: c.imports,
            functions: c.functions,
        });
        c.out_of_line
    }

    fn file(&self, label: &str) -> Option<&File> {
        self.files.iter().find(|f| f.label == label)
    }

    /// What `path`, written in module `module`, names.
    fn resolve(&self, module: &[String], path: &[String], in_use: bool) -> Target {
        let first = path[0].as_str();
        let child = |name: &str| {
            let mut m = module.to_vec();
            m.push(name.to_string());
            self.modules.contains(&m)
        };
        let local = matches!(first, "crate" | "super" | "self") || (in_use && child(first));
        if !local {
            return Target::External(path.join("::"));
        }
        let abs = absolute(module, path, |name| child(name));
        Target::Module(self.module_of(&self.canonical(abs)).join("::"))
    }

    /// Follows `pub use` re-exports and globs until `path` names where the item is defined.
    fn canonical(&self, mut path: Vec<String>) -> Vec<String> {
        'follow: for _ in 0..8 {
            let k = self.module_of(&path).len();
            if k == path.len() {
                return path;
            }
            let (m, name) = (path[..k].to_vec(), path[k].clone());
            if let Some(t) = self.reexports.get(&(m.clone(), name.clone())) {
                path = t.iter().chain(&path[k + 1..]).cloned().collect();
                continue;
            }
            if self.items.get(&m).is_some_and(|i| i.contains(&name)) {
                return path;
            }
            for g in self.globs.get(&m).into_iter().flatten() {
                let defines = self.items.get(g).is_some_and(|i| i.contains(&name));
                if defines || self.reexports.contains_key(&(g.clone(), name.clone())) {
                    path = g.iter().chain(&path[k..]).cloned().collect();
                    continue 'follow;
                }
            }
            return path;
        }
        path
    }

    /// The longest prefix of `path` that is a module.
    fn module_of(&self, path: &[String]) -> Vec<String> {
        (0..=path.len())
            .rev()
            .map(|i| path[..i].to_vec())
            .find(|p| self.modules.contains(p))
            .unwrap_or_default()
    }
}

/// `path` (written in `module`) as an absolute crate path without `crate`: resolves `crate`,
/// `super`, `self` and a first segment that `is_child` of `module`.
fn absolute(module: &[String], path: &[String], is_child: impl Fn(&str) -> bool) -> Vec<String> {
    let mut base = module.to_vec();
    let mut rest = path;
    match rest.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            rest = &rest[1..];
        }
        Some("self") => rest = &rest[1..],
        Some("super") => {
            while rest.first().map(String::as_str) == Some("super") {
                base.pop();
                rest = &rest[1..];
            }
        }
        Some(first) if is_child(first) => {}
        _ => base.clear(),
    }
    base.extend(rest.iter().cloned());
    base
}

/// Directory holding the out-of-line children of the module in `file`.
fn child_dir(file: &Path) -> PathBuf {
    let dir = file.parent().expect("dir").to_path_buf();
    let name = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    if matches!(name, "lib" | "main" | "mod") {
        dir
    } else {
        dir.join(name)
    }
}

/// Gathers a file's imports, functions, items, modules and re-exports.
#[derive(Default)]
struct Collector {
    module: Vec<String>,
    imports: Vec<Import>,
    functions: Vec<Function>,
    modules: BTreeSet<Vec<String>>,
    children_of: BTreeMap<Vec<String>, BTreeSet<String>>,
    items: BTreeMap<Vec<String>, BTreeSet<String>>,
    /// `(module, name or "*", path as written)`.
    reexports: Vec<(Vec<String>, String, Vec<String>)>,
    out_of_line: Vec<(String, Option<String>)>,
    in_pub_use: bool,
}

impl Collector {
    fn item(&mut self, name: &syn::Ident) {
        self.items
            .entry(self.module.clone())
            .or_default()
            .insert(name.to_string());
    }

    fn import(&mut self, path: Vec<String>, span: Span, in_use: bool) {
        self.imports.push(Import {
            path,
            line: span.start().line,
            in_use,
            reexport: self.in_pub_use,
            module: self.module.clone(),
        });
    }

    fn use_tree(&mut self, tree: &syn::UseTree, prefix: &mut Vec<String>) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(&p.tree, prefix);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                let mut path = prefix.clone();
                if n.ident != "self" || path.is_empty() {
                    path.push(n.ident.to_string());
                }
                let name = path.last().cloned().unwrap_or_default();
                self.leaf(path, name, n.ident.span());
            }
            syn::UseTree::Rename(r) => {
                let mut path = prefix.clone();
                path.push(r.ident.to_string());
                self.leaf(path, r.rename.to_string(), r.ident.span());
            }
            syn::UseTree::Glob(g) => {
                self.leaf(prefix.clone(), "*".into(), g.star_token.span);
            }
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(t, prefix);
                }
            }
        }
    }

    fn leaf(&mut self, path: Vec<String>, name: String, span: Span) {
        if path.is_empty() {
            return;
        }
        if self.in_pub_use {
            self.reexports
                .push((self.module.clone(), name.clone(), path.clone()));
        }
        self.import(path, span, true);
    }

    fn function(&mut self, sig: &syn::Signature, block: &syn::Block) {
        self.functions.push(Function {
            name: sig.ident.to_string(),
            start: sig.fn_token.span.start().line,
            end: block.brace_token.span.close().end().line,
        });
    }
}

impl<'ast> Visit<'ast> for Collector {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        if cfg_test(item_attrs(item)) {
            return;
        }
        match item {
            syn::Item::Mod(m) => {
                let name = m.ident.to_string();
                let mut child = self.module.clone();
                child.push(name.clone());
                self.modules.insert(child.clone());
                self.children_of
                    .entry(self.module.clone())
                    .or_default()
                    .insert(name.clone());
                self.item(&m.ident);
                match &m.content {
                    None => self.out_of_line.push((name, path_attr(&m.attrs))),
                    Some((_, items)) => {
                        let outer = std::mem::replace(&mut self.module, child);
                        for i in items {
                            self.visit_item(i);
                        }
                        self.module = outer;
                    }
                }
            }
            syn::Item::Use(u) => {
                self.in_pub_use = !matches!(u.vis, syn::Visibility::Inherited);
                self.use_tree(&u.tree, &mut Vec::new());
                self.in_pub_use = false;
            }
            _ => {
                if let Some(name) = item_name(item) {
                    self.item(name);
                }
                visit::visit_item(self, item);
            }
        }
    }

    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        self.function(&f.sig, &f.block);
        visit::visit_item_fn(self, f);
    }

    fn visit_impl_item(&mut self, item: &'ast syn::ImplItem) {
        if let syn::ImplItem::Fn(f) = item {
            if cfg_test(&f.attrs) {
                return;
            }
            self.function(&f.sig, &f.block);
        }
        visit::visit_impl_item(self, item);
    }

    fn visit_trait_item_fn(&mut self, f: &'ast syn::TraitItemFn) {
        if let Some(block) = &f.default {
            self.function(&f.sig, block);
        }
        visit::visit_trait_item_fn(self, f);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        if path.segments.len() >= 2 {
            let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
            self.import(segments, path.segments[0].ident.span(), false);
        }
        visit::visit_path(self, path);
    }
}

fn item_attrs(item: &syn::Item) -> &[syn::Attribute] {
    use syn::Item::*;
    match item {
        Const(i) => &i.attrs,
        Enum(i) => &i.attrs,
        ExternCrate(i) => &i.attrs,
        Fn(i) => &i.attrs,
        ForeignMod(i) => &i.attrs,
        Impl(i) => &i.attrs,
        Macro(i) => &i.attrs,
        Mod(i) => &i.attrs,
        Static(i) => &i.attrs,
        Struct(i) => &i.attrs,
        Trait(i) => &i.attrs,
        TraitAlias(i) => &i.attrs,
        Type(i) => &i.attrs,
        Union(i) => &i.attrs,
        Use(i) => &i.attrs,
        _ => &[],
    }
}

fn item_name(item: &syn::Item) -> Option<&syn::Ident> {
    use syn::Item::*;
    match item {
        Const(i) => Some(&i.ident),
        Enum(i) => Some(&i.ident),
        Fn(i) => Some(&i.sig.ident),
        Macro(i) => i.ident.as_ref(),
        Static(i) => Some(&i.ident),
        Struct(i) => Some(&i.ident),
        Trait(i) => Some(&i.ident),
        Type(i) => Some(&i.ident),
        Union(i) => Some(&i.ident),
        _ => None,
    }
}

/// Whether `attrs` compile the item only for tests: `#[cfg(test)]`, `#[cfg(all(test, ..))]`.
fn cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        if !a.path().is_ident("cfg") {
            return false;
        }
        match a.parse_args::<syn::Meta>() {
            Ok(syn::Meta::Path(p)) => p.is_ident("test"),
            Ok(syn::Meta::List(l)) if l.path.is_ident("all") => l
                .parse_args_with(
                    syn::punctuated::Punctuated::<syn::Meta, syn::Token![,]>::parse_terminated,
                )
                .is_ok_and(|ms| ms.iter().any(|m| m.path().is_ident("test"))),
            _ => false,
        }
    })
}

/// The `#[path = "..."]` of a module declaration.
fn path_attr(attrs: &[syn::Attribute]) -> Option<String> {
    attrs.iter().find_map(|a| match &a.meta {
        syn::Meta::NameValue(nv) if nv.path.is_ident("path") => match &nv.value {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => Some(s.value()),
            _ => None,
        },
        _ => None,
    })
}

// ------------------------------------------------------------------------------------------------
// The checker checked: small crates written inline
// ------------------------------------------------------------------------------------------------

/// A crate of inline files: `(label, module path, source)`; modules are declared by the files.
fn inline(files: &[(&str, &str, &str)]) -> Crate {
    let mut krate = Crate::default();
    krate.modules.insert(Vec::new());
    for top in [
        "actuator",
        "audit",
        "backtest",
        "clock",
        "daemon",
        "decision",
        "demo",
        "diagnostic",
        "kubeclient",
        "lifecycle",
        "notify",
        "policy",
        "promserver",
        "quality",
        "sample",
        "settings",
        "sim",
        "source",
        "stats",
        "telemetry",
    ] {
        krate.modules.insert(vec![top.to_string()]);
    }
    for (label, module, text) in files {
        let module: Vec<String> = module
            .split("::")
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        for i in 1..=module.len() {
            krate.modules.insert(module[..i].to_vec());
        }
        krate.add(label, module, text);
    }
    krate
}

fn messages(krate: &Crate) -> Vec<String> {
    check(krate).iter().map(ToString::to_string).collect()
}

#[test]
fn a_pure_module_importing_tokio_is_reported_with_file_and_line() {
    let krate = inline(&[(
        "src/decision/engine.rs",
        "decision::engine",
        "use crate::sample::Millis;\n\nuse tokio::time::sleep;\n",
    )]);
    let found = messages(&krate);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with(
            "src/decision/engine.rs:3: pure module `decision::engine` names `tokio::time::sleep`"
        ),
        "{found:?}"
    );
}

#[test]
fn io_named_in_code_and_macros_is_reported() {
    let krate = inline(&[(
        "src/stats/x.rs",
        "stats::x",
        "fn f() {\n    let _ = std::fs::read(\"p\");\n    tokio::select! {}\n}\n\
         struct S(std::net::SocketAddr);\n",
    )]);
    let found = messages(&krate);
    let lines: Vec<usize> = check(&krate).iter().map(|v| v.line).collect();
    assert_eq!(lines, vec![2, 3, 5], "{found:?}");
}

#[test]
fn a_pure_module_importing_the_shell_is_reported() {
    let krate = inline(&[
        ("src/daemon/mod.rs", "daemon", "pub struct Daemon;\n"),
        (
            "src/policy/load.rs",
            "policy::load",
            "pub fn load_path() {}\n",
        ),
        (
            "src/policy/mod.rs",
            "policy",
            "pub mod load;\npub use load::load_path;\n",
        ),
        (
            "src/lifecycle/mod.rs",
            "lifecycle",
            "use crate::{daemon::Daemon, sample::Millis};\n\
             fn f() { crate::policy::load_path(); }\n",
        ),
    ]);
    let found = messages(&krate);
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(
        found[0].starts_with("src/lifecycle/mod.rs:1: pure module `lifecycle` imports `daemon`")
    );
    assert!(found[1]
        .starts_with("src/lifecycle/mod.rs:1: `lifecycle` imports `daemon`, which only demo"));
    assert!(found[2].starts_with(
        "src/lifecycle/mod.rs:2: pure module `lifecycle` imports `policy::load` (reads policy files)"
    ));
}

#[test]
fn imports_against_the_flow_are_reported() {
    let krate = inline(&[
        ("src/decision/mod.rs", "decision", "pub struct Verdict;\n"),
        ("src/audit.rs", "audit", "pub struct Trail;\n"),
        (
            "src/source/plan.rs",
            "source::plan",
            "use super::super::decision::Verdict;\n",
        ),
        (
            "src/actuator/mod.rs",
            "actuator",
            "use crate::audit::Trail;\nuse crate::source::plan;\nuse crate::daemon;\n",
        ),
    ]);
    let found = messages(&krate);
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(found[0].starts_with("src/actuator/mod.rs:1: `actuator` (action plan, actuator) imports `audit` (audit, notices): against the flow"));
    assert!(found[1].starts_with(
        "src/actuator/mod.rs:3: `actuator` imports `daemon`, which only demo may import"
    ));
    assert!(found[2].starts_with("src/source/plan.rs:1: `source::plan` (sources) imports `decision` (windows, rules, verdict)"));
}

#[test]
fn allowed_imports_and_test_code_are_not_reported() {
    let krate = inline(&[
        ("src/sample.rs", "sample", "pub struct Millis;\n"),
        (
            "src/policy/model.rs",
            "policy::model",
            "pub struct Policy;\n",
        ),
        (
            "src/policy/mod.rs",
            "policy",
            "pub mod model;\npub use model::*;\n",
        ),
        (
            "src/decision/engine.rs",
            "decision::engine",
            "use super::window::Window;\nuse crate::policy::Policy;\nuse std::time::Duration;\n\
             use serde::Serialize;\n\
             #[cfg(test)]\nmod tests {\n    use tokio::time;\n    use crate::daemon::Daemon;\n}\n\
             #[cfg(test)]\nmod more;\n",
        ),
        (
            "src/daemon/mod.rs",
            "daemon",
            "use crate::decision::Verdict;\nuse crate::actuator::Plan;\nuse tokio::spawn;\n",
        ),
        (
            "src/source/mod.rs",
            "source",
            "use crate::sample::Millis;\nuse crate::policy::Policy;\nuse crate::clock::Clock;\n",
        ),
    ]);
    assert_eq!(messages(&krate), Vec::<String>::new());
    let engine = krate.file("src/decision/engine.rs").expect("engine");
    assert_eq!(
        krate.resolve(
            &engine.module,
            &["crate".into(), "policy".into(), "Policy".into()],
            true
        ),
        Target::Module("policy::model".into())
    );
}

#[test]
fn long_functions_are_reported() {
    let body = "    let x = 1;\n".repeat(LONG_FN_LINES);
    let krate = inline(&[
        (
            "src/actuator/steps.rs",
            "actuator::steps",
            &format!(
                "struct S;\nimpl S {{\n    fn check(&self) {{\n{body}    }}\n}}\nfn short() {{}}\n"
            ),
        ),
        (
            "src/daemon/mod.rs",
            "daemon",
            &format!("fn long() {{\n{body}}}\n"),
        ),
    ]);
    let long: Vec<String> = long_functions(&krate)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        long,
        vec![format!(
            "src/actuator/steps.rs:3: fn check is {} lines",
            LONG_FN_LINES + 2
        )]
    );
}

#[test]
fn prefixes_match_whole_segments() {
    assert!(under("policy::load", "policy"));
    assert!(!under("policyx", "policy"));
    assert!(is_pure("policy::model") && !is_pure("policy::load") && !is_pure("daemon"));
    assert_eq!(stage("actuator::plan"), stage("actuator"));
    assert!(stage("daemon").is_none());
}
