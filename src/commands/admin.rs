//! `vigil admin`: principals, tokens and workstations. Every change is written to the audit
//! log first (actor `cli:$USER`); if it cannot be, nothing changes.

use anyhow::Context;
use vigil_access::workstation::write_private;
use vigil_access::{AccessStore, AuditEvent, Principal, Region, Role, Workstation, WorkstationCa};
use vigil_core::{Clock, ResourceId};

use super::{output, OperatorAudit};
use crate::cli::{AdminCommand, PrincipalCommand, TokenCommand, WorkstationCommand};
use crate::config::Config;

struct Admin {
    store: AccessStore,
    audit: OperatorAudit,
}

impl Admin {
    fn record(&self, action: &str, fill: impl FnOnce(&mut AuditEvent)) -> anyhow::Result<()> {
        self.audit.record(action, fill)
    }
}

pub fn admin(config: &Config, cmd: AdminCommand) -> anyhow::Result<()> {
    let clock = Clock::from_env()?;
    let admin = Admin {
        store: AccessStore::open(&config.access.dir)?,
        audit: OperatorAudit::open(config, clock)?,
    };
    match cmd {
        AdminCommand::Principal(PrincipalCommand::Add {
            name,
            role,
            region,
            resources,
        }) => {
            let role = Role::parse(&role).with_context(|| {
                format!("--role {role:?}: must be reviewer, manager, admin or customer")
            })?;
            let region = Region::parse(&region)
                .with_context(|| format!("--region {region:?}: must be eea or non-eea"))?;
            let resources = resources
                .into_iter()
                .map(|r| ResourceId::parse(r).context("--resource"))
                .collect::<anyhow::Result<Vec<_>>>()?;
            anyhow::ensure!(
                resources.is_empty() || role == Role::Customer,
                "--resource is for customers only"
            );
            let principal = Principal {
                name,
                role,
                region,
                resources,
            };
            Principal::check_name(&principal.name)?;
            admin.record("admin.principal_add", |e| {
                e.detail = Some(format!(
                    "principal: {}, role: {}, region: {}",
                    principal.name, principal.role, principal.region
                ))
            })?;
            admin.store.add_principal(&principal)?;
            output(serde_json::to_string(&principal)?)
        }
        AdminCommand::Principal(PrincipalCommand::List) => {
            for p in admin.store.principals()? {
                output(serde_json::to_string(&p)?)?;
            }
            Ok(())
        }
        AdminCommand::Principal(PrincipalCommand::Remove { name }) => {
            admin.record("admin.principal_remove", |e| {
                e.detail = Some(format!("principal: {name}"))
            })?;
            admin.store.remove_principal(&name)?;
            output(format!("removed {name} and revoked their tokens"))
        }
        AdminCommand::Token(TokenCommand::Issue { name }) => {
            admin.record("admin.token_issue", |e| {
                e.detail = Some(format!("principal: {name}"))
            })?;
            let token = admin.store.issue_token(&name)?;
            // The one time the token is shown.
            output(token.expose())
        }
        AdminCommand::Token(TokenCommand::Revoke { name }) => {
            admin.record("admin.token_revoke", |e| {
                e.detail = Some(format!("principal: {name}"))
            })?;
            let n = admin.store.revoke_tokens(&name)?;
            output(format!("revoked {n} token(s) of {name}"))
        }
        AdminCommand::Workstation(WorkstationCommand::Issue { name, out }) => {
            let ca = WorkstationCa::load_or_create(&config.access.ca_dir)?;
            let issued = ca.issue_workstation(&name)?;
            admin.record("admin.workstation_issue", |e| {
                e.workstation = Some(name.clone());
                e.detail = Some(format!("fingerprint: {}", issued.fingerprint));
            })?;
            admin.store.register_workstation(&Workstation {
                name: name.clone(),
                fingerprint: issued.fingerprint.clone(),
                issued_at: clock.now(),
                revoked_at: None,
            })?;
            std::fs::create_dir_all(&out).with_context(|| out.display().to_string())?;
            let (cert, key, ca_path) = (
                out.join(format!("{name}.pem")),
                out.join(format!("{name}.key")),
                out.join("ca.pem"),
            );
            for (path, text) in [(&cert, issued.cert_pem.as_str()), (&ca_path, ca.ca_pem())] {
                std::fs::write(path, text).with_context(|| path.display().to_string())?;
            }
            write_private(&key, &issued.key_pem)?;
            output(format!(
                "workstation {name} registered (fingerprint {}): certificate {}, key {}, CA {}",
                issued.fingerprint,
                cert.display(),
                key.display(),
                ca_path.display()
            ))
        }
        AdminCommand::Workstation(WorkstationCommand::List) => {
            for w in admin.store.workstations()? {
                output(serde_json::to_string(&w)?)?;
            }
            Ok(())
        }
        AdminCommand::Workstation(WorkstationCommand::Revoke { name }) => {
            admin.record("admin.workstation_revoke", |e| {
                e.workstation = Some(name.clone())
            })?;
            let w = admin.store.revoke_workstation(&name, clock.now())?;
            output(serde_json::to_string(&w)?)
        }
    }
}
