//! `vigil cases [CASE]`: the review queue as recurring-abuse detection left it. Identifiers,
//! scores, categories and signals only: no content is read or decrypted.

use std::fmt::Write as _;

use anyhow::Context;
use vigil_core::{Case, FlagSubject, Geography};
use vigil_storage::Stores;

use super::{load_registry, output};
use crate::cli::{CasesArgs, Format};
use crate::config::Config;

pub fn cases(config: &Config, args: &CasesArgs) -> anyhow::Result<()> {
    let registry = load_registry(config)?;
    let stores = Stores::open(&config.storage, registry.base_dir())?;
    let geographies = match &args.geography {
        Some(name) => vec![Geography::parse(name.as_str()).context("--geography")?],
        None => stores.geographies_on_disk()?,
    };
    let mut cases = Vec::new();
    for geography in geographies {
        let geo = stores.geo(&geography)?;
        match &args.case_id {
            Some(id) => cases.extend(geo.case(id)?),
            None => cases.extend(geo.cases()?),
        }
    }
    if let Some(id) = &args.case_id {
        let case = cases.first().with_context(|| format!("no case {id}"))?;
        return match args.format {
            Format::Json => output(serde_json::to_string_pretty(case)?),
            Format::Text => output(describe(case)?),
        };
    }
    cases.sort_by(|a, b| (a.opened_at, &a.case_id).cmp(&(b.opened_at, &b.case_id)));
    match args.format {
        Format::Json => output(serde_json::to_string_pretty(&cases)?),
        Format::Text => output(table(&cases)?),
    }
}

fn subject(case: &Case) -> &str {
    match &case.subject {
        FlagSubject::EndUser { end_user } => end_user,
        FlagSubject::Resource => "(resource)",
    }
}

fn table(cases: &[Case]) -> anyhow::Result<String> {
    let mut out = String::new();
    if cases.is_empty() {
        out.push_str("no cases");
        return Ok(out);
    }
    writeln!(
        out,
        "{:<22} {:<20} {:<4} {:<24} {:<20} {:>5} {:>9}  categories",
        "case", "opened", "geo", "resource", "subject", "abuse", "harmful"
    )?;
    for case in cases {
        let categories: Vec<&str> = case.categories.iter().map(|c| c.name()).collect();
        writeln!(
            out,
            "{:<22} {:<20} {:<4} {:<24} {:<20} {:>5.2} {:>4}/{:<4}  {}",
            case.case_id,
            case.opened_at
                .format(&time::format_description::well_known::Rfc3339)?,
            case.geography.as_str(),
            case.resource_id.as_str(),
            subject(case),
            case.scores.abuse,
            case.signals.harmful,
            case.signals.records,
            categories.join(",")
        )?;
    }
    write!(out, "{} cases; `vigil cases CASE` shows one", cases.len())?;
    Ok(out)
}

fn describe(case: &Case) -> anyhow::Result<String> {
    let s = &case.signals;
    let mut out = String::new();
    writeln!(out, "case           {}", case.case_id)?;
    writeln!(
        out,
        "resource       {} ({})",
        case.resource_id, case.geography
    )?;
    writeln!(out, "subject        {}", subject(case))?;
    let rfc3339 = &time::format_description::well_known::Rfc3339;
    writeln!(
        out,
        "window         {} .. {}",
        case.window.start.format(rfc3339)?,
        case.window.end.format(rfc3339)?
    )?;
    writeln!(
        out,
        "abuse score    {:.3}  (policy {})",
        case.scores.abuse, case.policy_version
    )?;
    writeln!(
        out,
        "  frequency    {:.3}  ({} harmful of {} records; {} the window before)",
        s.frequency, s.harmful, s.records, s.previous_harmful
    )?;
    writeln!(out, "  severity     {:.3}", s.severity)?;
    writeln!(
        out,
        "  intent       {:.3}  ({} near-duplicates, {} template hits, {} escalations)",
        s.intent, s.near_duplicates, s.template_hits, s.escalations
    )?;
    writeln!(out, "  trend        {:.3}", s.trend)?;
    for (category, severity) in &case.scores.categories {
        writeln!(out, "category       {category:<12} {severity:.2}")?;
    }
    if !case.pattern_families.is_empty() {
        writeln!(out, "patterns       {}", case.pattern_families.join(", "))?;
    }
    let sample: Vec<&str> = case.sample.iter().map(|id| id.as_str()).collect();
    write!(out, "sampled        {}", sample.join(" "))?;
    Ok(out)
}
