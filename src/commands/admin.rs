//! `vigil admin`: principals, tokens and workstations. Every change is written to the audit
//! log first (actor `cli:$USER`); if it cannot be, nothing changes.

use std::path::{Path, PathBuf};

use anyhow::Context;
use vigil_access::workstation::write_private;
use vigil_access::{
    AccessStore, AuditEvent, Principal, Region, Role, Token, Workstation, WorkstationCa,
};
use vigil_core::{Clock, ResourceId};

use super::{output, OperatorAudit};
use crate::cli::{AdminCommand, PrincipalCommand, TokenCommand, WorkstationCommand};
use crate::config::Config;

/// The access store with the operator's audit trail: each change is audited, then made.
/// Holds the store's and the audit log's locks until dropped.
pub(super) struct Admin {
    pub(super) store: AccessStore,
    audit: OperatorAudit,
    clock: Clock,
}

/// A workstation certificate written to disk.
pub(super) struct IssuedFiles {
    pub(super) fingerprint: String,
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
    pub(super) ca: PathBuf,
}

impl IssuedFiles {
    /// Where `vigil admin workstation issue NAME --out OUT` writes workstation `name`'s files.
    pub(super) fn at(out: &Path, name: &str, fingerprint: String) -> Self {
        Self {
            fingerprint,
            cert: out.join(format!("{name}.pem")),
            key: out.join(format!("{name}.key")),
            ca: out.join("ca.pem"),
        }
    }
}

impl Admin {
    pub(super) fn open(config: &Config) -> anyhow::Result<Self> {
        let clock = Clock::from_env()?;
        Ok(Self {
            store: AccessStore::open(&config.access.dir)?,
            audit: OperatorAudit::open(config, clock)?,
            clock,
        })
    }

    fn record(&self, action: &str, fill: impl FnOnce(&mut AuditEvent)) -> anyhow::Result<()> {
        self.audit.record(action, fill)
    }

    pub(super) fn add_principal(&self, principal: &Principal) -> anyhow::Result<()> {
        Principal::check_name(&principal.name)?;
        self.record("admin.principal_add", |e| {
            e.detail = Some(format!(
                "principal: {}, role: {}, region: {}",
                principal.name, principal.role, principal.region
            ))
        })?;
        Ok(self.store.add_principal(principal)?)
    }

    pub(super) fn issue_token(&self, name: &str) -> anyhow::Result<Token> {
        self.record("admin.token_issue", |e| {
            e.detail = Some(format!("principal: {name}"))
        })?;
        Ok(self.store.issue_token(name)?)
    }

    pub(super) fn revoke_tokens(&self, name: &str) -> anyhow::Result<usize> {
        self.record("admin.token_revoke", |e| {
            e.detail = Some(format!("principal: {name}"))
        })?;
        Ok(self.store.revoke_tokens(name)?)
    }

    /// Issues and registers workstation `name`'s certificate, and writes it, its key (owner
    /// only) and the CA certificate into `out`.
    pub(super) fn issue_workstation(
        &self,
        config: &Config,
        name: &str,
        out: &Path,
    ) -> anyhow::Result<IssuedFiles> {
        let ca = WorkstationCa::load_or_create(&config.access.ca_dir)?;
        let issued = ca.issue_workstation(name)?;
        self.record("admin.workstation_issue", |e| {
            e.workstation = Some(name.to_owned());
            e.detail = Some(format!("fingerprint: {}", issued.fingerprint));
        })?;
        self.store.register_workstation(&Workstation {
            name: name.to_owned(),
            fingerprint: issued.fingerprint.clone(),
            issued_at: self.clock.now(),
            revoked_at: None,
        })?;
        std::fs::create_dir_all(out).with_context(|| out.display().to_string())?;
        let files = IssuedFiles::at(out, name, issued.fingerprint);
        for (path, text) in [
            (&files.cert, issued.cert_pem.as_str()),
            (&files.ca, ca.ca_pem()),
        ] {
            std::fs::write(path, text).with_context(|| path.display().to_string())?;
        }
        write_private(&files.key, &issued.key_pem)?;
        Ok(files)
    }
}

pub fn admin(config: &Config, cmd: AdminCommand) -> anyhow::Result<()> {
    let admin = Admin::open(config)?;
    let clock = admin.clock;
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
            admin.add_principal(&principal)?;
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
            // The one time the token is shown.
            output(admin.issue_token(&name)?.expose())
        }
        AdminCommand::Token(TokenCommand::Revoke { name }) => {
            let n = admin.revoke_tokens(&name)?;
            output(format!("revoked {n} token(s) of {name}"))
        }
        AdminCommand::Workstation(WorkstationCommand::Issue { name, out }) => {
            let files = admin.issue_workstation(config, &name, &out)?;
            output(format!(
                "workstation {name} registered (fingerprint {}): certificate {}, key {}, CA {}",
                files.fingerprint,
                files.cert.display(),
                files.key.display(),
                files.ca.display()
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
