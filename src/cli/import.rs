//! `backout import flagger|argo FILE`: write the backout policy equivalent to a Flagger Canary or
//! an Argo Rollouts AnalysisTemplate, checked with `backout validate`'s loader before it is
//! written (see `backout::import`).

use anyhow::Context;
use backout::import::{self, ImportOptions};
use backout::policy;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Peer {
    /// A Flagger Canary (with the MetricTemplates it references).
    Flagger,
    /// An Argo Rollouts AnalysisTemplate (prometheus provider).
    Argo,
}

#[derive(clap::Args)]
pub struct Args {
    pub from: Peer,
    /// The peer's YAML (several documents allowed: a Canary and its MetricTemplates).
    pub file: PathBuf,
    /// More YAML files holding the MetricTemplates a Canary references.
    #[arg(long)]
    pub templates: Vec<PathBuf>,
    /// Write the policy here (default: stdout).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Service name (default: the Canary's service, or the AnalysisTemplate's name).
    #[arg(long)]
    pub service: Option<String>,
    /// Namespace (default: the document's, else `default`).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Flagger's mesh provider when the Canary names none (`istio`, `linkerd`, `gatewayapi:v1`,
    /// ...): what Flagger was installed with.
    #[arg(long)]
    pub provider: Option<String>,
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let file = args.file.display().to_string();
    let mut docs = import::documents(&read(&args.file)?, &file)?;
    for t in &args.templates {
        docs.extend(import::documents(&read(t)?, &t.display().to_string())?);
    }
    let opts = ImportOptions {
        service: args.service.clone(),
        namespace: args.namespace.clone(),
        provider: args.provider.clone(),
    };
    let imported = match args.from {
        Peer::Flagger => import::flagger::import(&docs, &file, &opts)?,
        Peer::Argo => import::argo::import(&docs, &file, &opts)?,
    };
    // The same loader as `backout validate`, on the text about to be written.
    let check = std::env::temp_dir().join(format!("backout-import-{}.toml", std::process::id()));
    std::fs::write(&check, &imported.policy)
        .with_context(|| format!("writing {} to validate it", check.display()))?;
    let loaded = policy::load_path(&check);
    let _ = std::fs::remove_file(&check);
    if let Err(e) = loaded {
        for p in e.problems() {
            eprintln!("error: {p}");
        }
        anyhow::bail!("the imported policy does not validate (a bug in `backout import`; the problems are above)");
    }
    match &args.output {
        Some(out) => {
            std::fs::write(out, &imported.policy)
                .with_context(|| format!("writing {}", out.display()))?;
            eprintln!("wrote {} (it passes `backout validate`)", out.display());
        }
        None => print!("{}", imported.policy),
    }
    for n in &imported.notes {
        eprintln!("note: {n}");
    }
    eprintln!("check the lines marked CHECK, then `backout validate` and `backout explain` it");
    Ok(ExitCode::SUCCESS)
}
