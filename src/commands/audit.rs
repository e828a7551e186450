//! `vigil audit verify`: checks the audit log's hash chain.

use vigil_access::audit;

use super::output;
use crate::cli::{AuditCommand, Format};
use crate::config::Config;

pub fn audit(config: &Config, cmd: AuditCommand) -> anyhow::Result<()> {
    let AuditCommand::Verify { format } = cmd;
    let path = &config.access.audit_log;
    let report = audit::verify(path)?;
    match format {
        Format::Json => output(serde_json::to_string_pretty(&report)?)?,
        Format::Text => match &report.first_broken {
            None => output(format!(
                "audit log {}: {} entries, chain intact",
                path.display(),
                report.verified
            ))?,
            Some(b) => output(format!(
                "audit log {}: BROKEN at line {}{}: {} ({} entries before it verify)",
                path.display(),
                b.line,
                b.seq.map(|s| format!(" (seq {s})")).unwrap_or_default(),
                b.problem,
                report.verified
            ))?,
        },
    }
    match report.first_broken {
        None => Ok(()),
        Some(b) => anyhow::bail!("the audit log's chain is broken at line {}", b.line),
    }
}
