//! `vigil audit verify`: checks the audit log's hash chain; `vigil audit acknowledge` records a
//! gap against the log's head, so that vigil writes to the log again.

use vigil_access::audit;
use vigil_core::Clock;

use super::{operator_event, output};
use crate::cli::{AuditCommand, Format};
use crate::config::Config;

pub fn audit(config: &Config, cmd: AuditCommand) -> anyhow::Result<()> {
    let path = &config.access.audit_log;
    let format = match cmd {
        AuditCommand::Verify { format } => format,
        AuditCommand::Acknowledge => {
            let clock = Clock::from_env()?;
            return output(
                match vigil_access::AuditLog::acknowledge_gap(
                    path,
                    clock,
                    operator_event("audit.acknowledge_gap"),
                )? {
                    Some(gap) => format!(
                        "audit log {}: gap recorded in the log ({gap}); vigil writes to it again",
                        path.display()
                    ),
                    None => format!(
                        "audit log {}: no gap against its head; nothing written",
                        path.display()
                    ),
                },
            );
        }
    };
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
