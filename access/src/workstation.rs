//! vigil's workstation CA: it issues the client certificates of secure access workstations
//! (and the API server's own certificate), and workstations are registered by certificate
//! fingerprint.
//!
//! A content request must arrive over TLS with a certificate this CA signed (rustls checks
//! that during the handshake) *and* whose SHA-256 fingerprint is registered and not revoked
//! (the API checks that per request, against the access store). A revoked workstation reads
//! nothing from the next request the store answers, without a CRL.
//!
//! Files in the CA directory: `ca.pem`, `ca.key` (mode 0600), `server.pem`, `server.key`.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use crate::AccessError;

const CA_NAME: &str = "vigil workstation CA";

/// A registered workstation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workstation {
    /// Its name, as the audit log records it.
    pub name: String,
    /// SHA-256 of its certificate (DER), hex.
    pub fingerprint: String,
    /// When its certificate was issued.
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    /// When it was revoked, if it was.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

/// A certificate and its private key, PEM.
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (keep it on the workstation only).
    pub key_pem: String,
    /// SHA-256 of the certificate's DER, hex.
    pub fingerprint: String,
}

/// The CA, loaded from (or created in) its directory.
pub struct WorkstationCa {
    dir: PathBuf,
    key: KeyPair,
    /// The CA certificate as issuers see it (re-made from the stored key; same name and key
    /// as `ca.pem`, so what it signs chains to `ca.pem`).
    issuer: Certificate,
    ca_pem: String,
}

/// The SHA-256 fingerprint of a DER certificate, hex.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(3650);
    params
}

/// Writes a private key (or anything secret) readable by its owner only, whether or not the
/// file existed.
pub fn write_private(path: &Path, text: &str) -> Result<(), AccessError> {
    use std::io::Write;
    let io = |source| AccessError::Io {
        path: path.to_owned(),
        source,
    };
    let mut f = std::os::unix::fs::OpenOptionsExt::mode(
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true),
        0o600,
    )
    .open(path)
    .map_err(io)?;
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)
}

fn read(path: &Path) -> Result<String, AccessError> {
    std::fs::read_to_string(path).map_err(|source| AccessError::Io {
        path: path.to_owned(),
        source,
    })
}

fn ca_err(e: rcgen::Error) -> AccessError {
    AccessError::Ca(e.to_string())
}

impl WorkstationCa {
    /// Loads the CA from `dir`, creating it (and the directory, mode 0700) on first use.
    pub fn load_or_create(dir: &Path) -> Result<Self, AccessError> {
        crate::create_private_dir(dir).map_err(|source| AccessError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let (key_path, cert_path) = (dir.join("ca.key"), dir.join("ca.pem"));
        let (key, ca_pem) = if key_path.exists() {
            let key = KeyPair::from_pem(&read(&key_path)?).map_err(ca_err)?;
            (key, read(&cert_path)?)
        } else {
            let key = KeyPair::generate().map_err(ca_err)?;
            let cert = ca_params().self_signed(&key).map_err(ca_err)?;
            write_private(&key_path, &key.serialize_pem())?;
            std::fs::write(&cert_path, cert.pem()).map_err(|source| AccessError::Io {
                path: cert_path.clone(),
                source,
            })?;
            (key, cert.pem())
        };
        let issuer = ca_params().self_signed(&key).map_err(ca_err)?;
        Ok(Self {
            dir: dir.to_owned(),
            key,
            issuer,
            ca_pem,
        })
    }

    /// The CA certificate, PEM (what clients trust and the server checks clients against).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA certificate's path.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn issue(
        &self,
        common_name: &str,
        alt_names: Vec<String>,
        usage: ExtendedKeyUsagePurpose,
        days: i64,
    ) -> Result<Issued, AccessError> {
        let mut params = CertificateParams::new(alt_names).map_err(ca_err)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(days);
        let key = KeyPair::generate().map_err(ca_err)?;
        let cert = params
            .signed_by(&key, &self.issuer, &self.key)
            .map_err(ca_err)?;
        Ok(Issued {
            fingerprint: fingerprint(cert.der()),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues a workstation's client certificate (valid a year).
    pub fn issue_workstation(&self, name: &str) -> Result<Issued, AccessError> {
        crate::Principal::check_name(name)?;
        self.issue(name, vec![], ExtendedKeyUsagePurpose::ClientAuth, 365)
    }

    /// The API server's certificate and key files for `hosts` (names or IP addresses), issued
    /// on first use and again when the hosts change.
    pub fn server_cert(&self, hosts: &[String]) -> Result<(PathBuf, PathBuf), AccessError> {
        let (cert_path, key_path, hosts_path) = (
            self.dir.join("server.pem"),
            self.dir.join("server.key"),
            self.dir.join("server.hosts"),
        );
        let wanted = hosts.join("\n");
        let current = std::fs::read_to_string(&hosts_path).ok();
        if current.as_deref() != Some(wanted.as_str()) || !cert_path.exists() {
            let issued = self.issue(
                "vigil API",
                hosts.to_vec(),
                ExtendedKeyUsagePurpose::ServerAuth,
                825,
            )?;
            write_private(&key_path, &issued.key_pem)?;
            for (path, text) in [(&cert_path, &issued.cert_pem), (&hosts_path, &wanted)] {
                std::fs::write(path, text).map_err(|source| AccessError::Io {
                    path: path.clone(),
                    source,
                })?;
            }
        }
        Ok((cert_path, key_path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_survives_a_reload_and_issues_distinct_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let ca = WorkstationCa::load_or_create(dir.path()).unwrap();
        let a = ca.issue_workstation("ws-1").unwrap();
        let again = WorkstationCa::load_or_create(dir.path()).unwrap();
        assert_eq!(again.ca_pem(), ca.ca_pem());
        let b = again.issue_workstation("ws-2").unwrap();
        assert_ne!(a.fingerprint, b.fingerprint);
        assert!(a.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let mode = std::fs::metadata(dir.path().join("ca.key")).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        assert!(ca.issue_workstation("../evil").is_err());
        let (cert, _) = ca.server_cert(&["localhost".into()]).unwrap();
        let first = std::fs::read(&cert).unwrap();
        ca.server_cert(&["localhost".into()]).unwrap();
        assert_eq!(std::fs::read(&cert).unwrap(), first);
        ca.server_cert(&["localhost".into(), "127.0.0.1".into()])
            .unwrap();
        assert_ne!(std::fs::read(&cert).unwrap(), first);
    }
}
