//! `vigil demo`: the shortest way from `vigil run` on the sample to a signed-in reviewer
//! console. Creates (once) an EEA reviewer and an EEA manager and a workstation certificate,
//! issues both fresh tokens (revoking their earlier ones), prints sign-in links, and serves.
//! A link carries a one-time sign-in code (never a token), which the console exchanges for a
//! session token once. Every change goes through the same audited operations as `vigil admin`.

use std::path::Path;

use vigil_access::{Principal, Region, Role};

use super::admin::{Admin, IssuedFiles};
use super::output;
use super::serve::serve_then;
use crate::cli::DemoArgs;
use crate::config::Config;

const REVIEWER: &str = "demo-reviewer";
const MANAGER: &str = "demo-manager";
const WORKSTATION: &str = "demo-workstation";

/// What the demo set up.
struct Setup {
    reviewer_token: String,
    manager_token: String,
    /// One-time sign-in codes: the manager's, and the reviewer's for each listener.
    manager_code: String,
    reviewer_code: String,
    reviewer_workstation_code: String,
    workstation: IssuedFiles,
    workstation_name: String,
}

pub fn demo(config: &Config, args: &DemoArgs) -> anyhow::Result<()> {
    // The admin handle holds the access store's and the audit log's locks: set up, then let
    // them go before serving.
    let setup = {
        let admin = Admin::open(config)?;
        set_up(config, &admin, &args.out)?
    };
    if args.no_serve {
        let scheme = if config.api.plain_http {
            "http"
        } else {
            "https"
        };
        return print_guide(
            &setup,
            scheme,
            &config.api.listen,
            &config.api.workstation_listen,
            false,
        );
    }
    serve_then(config, |server| {
        print_guide(
            &setup,
            server.http_scheme,
            &server.http_addr.to_string(),
            &server.workstation_addr.to_string(),
            true,
        )
    })
}

fn set_up(config: &Config, admin: &Admin, out: &Path) -> anyhow::Result<Setup> {
    for (name, role) in [(REVIEWER, Role::Reviewer), (MANAGER, Role::Manager)] {
        match admin.store.principal(name)? {
            Some(existing) => anyhow::ensure!(
                existing.role == role && existing.region == Region::Eea,
                "principal {name} exists as {} ({}), not as the demo's EEA {role}; remove it with `vigil admin principal remove {name}` or use another access.dir",
                existing.role,
                existing.region
            ),
            None => admin.add_principal(&Principal {
                name: name.to_owned(),
                role,
                region: Region::Eea,
                resources: Vec::new(),
            })?,
        }
    }
    // Tokens are shown once and stored hashed: each demo run issues fresh ones.
    let fresh_token = |name: &str| -> anyhow::Result<String> {
        admin.revoke_tokens(name)?;
        Ok(admin.issue_token(config, name, None)?.expose().to_owned())
    };
    let reviewer_token = fresh_token(REVIEWER)?;
    let manager_token = fresh_token(MANAGER)?;
    let code = |name: &str| -> anyhow::Result<String> {
        Ok(admin.issue_sign_in_code(name)?.expose().to_owned())
    };
    let (workstation_name, workstation) = workstation(config, admin, out)?;
    Ok(Setup {
        manager_code: code(MANAGER)?,
        reviewer_code: code(REVIEWER)?,
        reviewer_workstation_code: code(REVIEWER)?,
        reviewer_token,
        manager_token,
        workstation,
        workstation_name,
    })
}

/// The demo workstation: reused while it is registered, unrevoked and its files are on disk;
/// otherwise a new one (`demo-workstation-2`, ...), since names are never reused.
fn workstation(
    config: &Config,
    admin: &Admin,
    out: &Path,
) -> anyhow::Result<(String, IssuedFiles)> {
    let registered = admin.store.workstations()?;
    for n in 1.. {
        let name = if n == 1 {
            WORKSTATION.to_owned()
        } else {
            format!("{WORKSTATION}-{n}")
        };
        let Some(known) = registered.iter().find(|w| w.name == name) else {
            return Ok((name.clone(), admin.issue_workstation(config, &name, out)?));
        };
        let files = IssuedFiles::at(out, &name, known.fingerprint.clone());
        if known.revoked_at.is_none()
            && [&files.cert, &files.key, &files.ca]
                .iter()
                .all(|p| p.exists())
        {
            return Ok((name, files));
        }
    }
    unreachable!("the loop returns")
}

fn print_guide(
    setup: &Setup,
    scheme: &str,
    http: &str,
    https: &str,
    serving: bool,
) -> anyhow::Result<()> {
    let ws = &setup.workstation;
    let lines = [
        String::new(),
        "vigil demo: an EEA reviewer and an EEA manager, with fresh tokens for the terminal (earlier demo tokens are revoked; these expire after access.token_ttl_secs):".to_owned(),
        format!("  {REVIEWER}  {}", setup.reviewer_token),
        format!("  {MANAGER}   {}", setup.manager_token),
        String::new(),
        "Each link below signs in once (a one-time code, valid for an hour), then is spent.".to_owned(),
        "1. The manager, in one browser window (approvals need no workstation):".to_owned(),
        format!("     {scheme}://{http}/console#code={}", setup.manager_code),
        "2. The reviewer, in another (a private window keeps the two sessions apart): open a case, request access;".to_owned(),
        format!("     {scheme}://{http}/console#code={}", setup.reviewer_code),
        "   the manager approves it under Approvals. Content is readable only from a secure workstation:".to_owned(),
        format!(
            "3. Workstation {} (fingerprint {}): certificate {}, key {}, CA {}.",
            setup.workstation_name,
            ws.fingerprint,
            ws.cert.display(),
            ws.key.display(),
            ws.ca.display()
        ),
        format!(
            "   For a browser: openssl pkcs12 -export -in {} -inkey {} -certfile {} -out {}.p12 -passout pass:demo,",
            ws.cert.display(),
            ws.key.display(),
            ws.ca.display(),
            setup.workstation_name
        ),
        "   import the .p12 (the workstation's identity) under Settings > Privacy and security > Manage certificates and trust the CA for this host only (it vouches for no other), then read records at".to_owned(),
        format!("     https://{https}/console#code={}", setup.reviewer_workstation_code),
        format!(
            "   or from a terminal: curl --cacert {} --cert {} --key {} -H 'Authorization: Bearer {}' https://{https}/v1/me",
            ws.ca.display(),
            ws.cert.display(),
            ws.key.display(),
            setup.reviewer_token
        ),
        if serving {
            "Serving until Ctrl-C.".to_owned()
        } else {
            "Start the server with `vigil serve`.".to_owned()
        },
    ];
    output(lines.join("\n"))
}
