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

/// A workstation's files in the output directory: its certificate, the CA certificate, and
/// its key (written only when the key was generated here).
pub(super) struct IssuedFiles {
    pub(super) fingerprint: String,
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
    pub(super) ca: PathBuf,
}

impl IssuedFiles {
    /// Where `vigil admin workstation issue NAME --generate-key --out OUT` writes workstation
    /// `name`'s files.
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

    /// Issues a token for `name`, valid for `access.token_ttl_secs` (or `ttl_secs`).
    pub(super) fn issue_token(
        &self,
        config: &Config,
        name: &str,
        ttl_secs: Option<u64>,
    ) -> anyhow::Result<Token> {
        let access = vigil_access::AccessConfig {
            token_ttl_secs: ttl_secs.unwrap_or(config.access.token_ttl_secs),
            ..config.access.clone()
        };
        access.validate()?;
        let expires_at = access.token_expiry(self.clock.now());
        self.record("admin.token_issue", |e| {
            e.detail = Some(format!(
                "principal: {name}, expires_at: {}",
                expires_at
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default()
            ))
        })?;
        Ok(self.store.issue_token(name, expires_at)?)
    }

    /// Issues a one-time sign-in code for `name`, valid for an hour (`vigil demo`'s links).
    pub(super) fn issue_sign_in_code(&self, name: &str) -> anyhow::Result<Token> {
        self.record("admin.sign_in_code_issue", |e| {
            e.detail = Some(format!("principal: {name}"))
        })?;
        let expires_at = self.clock.now() + time::Duration::hours(1);
        Ok(self.store.issue_sign_in_code(name, expires_at)?)
    }

    pub(super) fn revoke_tokens(&self, name: &str) -> anyhow::Result<usize> {
        self.record("admin.token_revoke", |e| {
            e.detail = Some(format!("principal: {name}"))
        })?;
        Ok(self.store.revoke_tokens(name)?)
    }

    /// Issues and registers workstation `name`'s certificate for a key generated here, and
    /// writes it, its key (owner only) and the CA certificate into `out` (demos and tests).
    pub(super) fn issue_workstation(
        &self,
        config: &Config,
        name: &str,
        out: &Path,
    ) -> anyhow::Result<IssuedFiles> {
        let ca = load_ca(config)?;
        let issued = ca.issue_workstation(name)?;
        let files = IssuedFiles::at(out, name, issued.fingerprint);
        self.register_workstation(name, &files.fingerprint, "generated here")?;
        write_certificates(out, &files, &issued.cert_pem, &ca)?;
        write_private(&files.key, &issued.key_pem)?;
        Ok(files)
    }

    /// Issues and registers workstation `name`'s certificate for the key of the certificate
    /// signing request in `csr`, and writes it and the CA certificate into `out` (no key).
    /// Returns the fingerprint, the certificate's path and the CA certificate's path.
    fn issue_workstation_for_csr(
        &self,
        config: &Config,
        name: &str,
        csr: &Path,
        out: &Path,
    ) -> anyhow::Result<(String, PathBuf, PathBuf)> {
        let what = || format!("--csr {}", csr.display());
        let request = std::fs::read_to_string(csr).with_context(what)?;
        let ca = load_ca(config)?;
        let issued = ca
            .issue_workstation_for_csr(name, &request)
            .with_context(what)?;
        self.register_workstation(name, &issued.fingerprint, "from a CSR")?;
        let files = IssuedFiles::at(out, name, issued.fingerprint);
        write_certificates(out, &files, &issued.cert_pem, &ca)?;
        Ok((files.fingerprint, files.cert, files.ca))
    }

    /// Audits, then registers, workstation `name` by its certificate's fingerprint.
    fn register_workstation(&self, name: &str, fingerprint: &str, key: &str) -> anyhow::Result<()> {
        self.record("admin.workstation_issue", |e| {
            e.workstation = Some(name.to_owned());
            e.detail = Some(format!("fingerprint: {fingerprint}, key: {key}"));
        })?;
        self.store.register_workstation(&Workstation {
            name: name.to_owned(),
            fingerprint: fingerprint.to_owned(),
            issued_at: self.clock.now(),
            revoked_at: None,
        })?;
        Ok(())
    }
}

/// The workstation CA, constrained to the API's TLS hosts.
fn load_ca(config: &Config) -> anyhow::Result<WorkstationCa> {
    Ok(WorkstationCa::load_or_create(
        &config.access.ca_dir,
        &config.api.tls_hosts,
    )?)
}

/// Writes a workstation's certificate and the CA certificate to `files`' paths in `out`.
fn write_certificates(
    out: &Path,
    files: &IssuedFiles,
    cert_pem: &str,
    ca: &WorkstationCa,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| out.display().to_string())?;
    for (path, text) in [(&files.cert, cert_pem), (&files.ca, ca.ca_pem())] {
        std::fs::write(path, text).with_context(|| path.display().to_string())?;
    }
    Ok(())
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
        AdminCommand::Token(TokenCommand::Issue { name, ttl_secs }) => {
            // The one time the token is shown.
            output(admin.issue_token(config, &name, ttl_secs)?.expose())
        }
        AdminCommand::Token(TokenCommand::Revoke { name }) => {
            let n = admin.revoke_tokens(&name)?;
            output(format!("revoked {n} token(s) of {name}"))
        }
        AdminCommand::Workstation(WorkstationCommand::Issue {
            name,
            csr,
            generate_key,
            out,
        }) => match (csr, generate_key) {
            (Some(csr), _) => {
                let (fingerprint, cert, ca) =
                    admin.issue_workstation_for_csr(config, &name, &csr, &out)?;
                output(format!(
                    "workstation {name} registered (fingerprint {fingerprint}): certificate {} (client authentication only; install it beside the key the request came from), CA {} (trust it for this vigil host only)",
                    cert.display(),
                    ca.display()
                ))
            }
            (None, true) => {
                let files = admin.issue_workstation(config, &name, &out)?;
                output(format!(
                    "workstation {name} registered (fingerprint {}): certificate {}, key {} (made here: move it to the workstation and delete it), CA {}",
                    files.fingerprint,
                    files.cert.display(),
                    files.key.display(),
                    files.ca.display()
                ))
            }
            (None, false) => anyhow::bail!(
                "workstation issue {name}: give --csr FILE, a certificate signing request made on the workstation (its private key never leaves it), or --generate-key to make the key here (demos only)"
            ),
        },
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
