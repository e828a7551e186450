//! `vigil cases [CASE]`: the cases recurring-abuse detection opened, with the LLM reviewer's
//! verdicts on their samples. Identifiers, scores, categories, signals and verdicts only: no
//! content is read or decrypted, and no rationale (sealed like content, readable only through
//! the store's keys) is shown.

use std::fmt::Write as _;

use anyhow::Context;
use serde::Serialize;
use vigil_core::{Case, FlagSubject, Geography, Route, Verdict};

use super::{load_registry, open_stores, output};
use crate::cli::{CasesArgs, Format};
use crate::config::Config;

/// A case with the verdicts on its sampled records.
#[derive(Serialize)]
struct Reviewed {
    #[serde(flatten)]
    case: Case,
    verdicts: Vec<Verdict>,
}

pub fn cases(config: &Config, args: &CasesArgs) -> anyhow::Result<()> {
    let registry = load_registry(config)?;
    let stores = open_stores(config, &registry)?;
    let geographies = match &args.geography {
        Some(name) => vec![Geography::parse(name.as_str()).context("--geography")?],
        None => stores.geographies_on_disk()?,
    };
    let mut cases = Vec::new();
    for geography in geographies {
        let geo = stores.geo(&geography)?;
        let found = match &args.case_id {
            Some(id) => geo.case(id)?.into_iter().collect(),
            None => geo.cases()?,
        };
        for case in found {
            let verdicts = geo.verdicts(Some(&case.case_id))?;
            cases.push(Reviewed { case, verdicts });
        }
    }
    if let Some(id) = &args.case_id {
        let case = cases.first().with_context(|| format!("no case {id}"))?;
        return match args.format {
            Format::Json => output(serde_json::to_string_pretty(case)?),
            Format::Text => output(describe(case)?),
        };
    }
    cases.sort_by(|a, b| {
        (a.case.opened_at, &a.case.case_id).cmp(&(b.case.opened_at, &b.case.case_id))
    });
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

/// `closed/escalated` counts of a case's verdicts, or `-` before any.
fn review_column(verdicts: &[Verdict]) -> String {
    if verdicts.is_empty() {
        return "-".into();
    }
    let closed = verdicts.iter().filter(|v| v.route == Route::Closed).count();
    format!("{closed}/{}", verdicts.len() - closed)
}

fn table(cases: &[Reviewed]) -> anyhow::Result<String> {
    let mut out = String::new();
    if cases.is_empty() {
        out.push_str("no cases");
        return Ok(out);
    }
    writeln!(
        out,
        "{:<37} {:<20} {:<4} {:<24} {:<20} {:>5} {:>9} {:>9}  categories",
        "case", "opened", "geo", "resource", "subject", "abuse", "harmful", "llm c/esc"
    )?;
    for Reviewed { case, verdicts } in cases {
        let categories: Vec<&str> = case.categories.iter().map(|c| c.name()).collect();
        writeln!(
            out,
            "{:<37} {:<20} {:<4} {:<24} {:<20} {:>5.2} {:>4}/{:<4} {:>9}  {}",
            case.case_id,
            case.opened_at
                .format(&time::format_description::well_known::Rfc3339)?,
            case.geography.as_str(),
            case.resource_id.as_str(),
            subject(case),
            case.scores.abuse,
            case.signals.harmful,
            case.signals.records,
            review_column(verdicts),
            categories.join(",")
        )?;
    }
    write!(out, "{} cases; `vigil cases CASE` shows one", cases.len())?;
    Ok(out)
}

fn describe(Reviewed { case, verdicts }: &Reviewed) -> anyhow::Result<String> {
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
    if verdicts.is_empty() {
        write!(out, "\nLLM review     none yet (queued, or review is off)")?;
    }
    for v in verdicts {
        let route = match v.route {
            Route::Closed => "closed",
            Route::Escalated => "escalated",
        };
        write!(
            out,
            "\nLLM review     {} {route} ({})",
            v.request_id,
            v.reason.name()
        )?;
        if let Some(a) = &v.assessment {
            let categories: Vec<&str> = a.categories.iter().map(|c| c.name()).collect();
            write!(
                out,
                "\n  verdict      violation={} severity={} confidence={:.2} categories=[{}]",
                a.violation,
                a.severity.name(),
                a.confidence,
                categories.join(",")
            )?;
        }
        write!(
            out,
            "\n  by           {} · policy {} · {} attempt(s){}",
            v.model,
            v.policy_version,
            v.attempts,
            if v.in_flight { " · in flight" } else { "" }
        )?;
    }
    Ok(out)
}
