//! vigil's cluster CA: the nodes of one deployment authenticate each other with mutual TLS on
//! their peer listener, each presenting a certificate this CA issued, when they forward point
//! queries, case views and deletions to the node that holds the records.
//!
//! A node certificate's subject common name is the node's name ([`node_name`] reads it back),
//! its alternative names are the hosts its peers reach it at, and it is good for both server
//! and client authentication: a node is server and client of its peers.
//!
//! The operator runs the CA away from the nodes and keeps `ca.key` there: each node gets only
//! `ca.pem`, its own `NAME.pem` and `NAME.key`. Files in the CA directory: `ca.pem` and
//! `ca.key` (mode 0600; a key readable by group or others is refused).

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rcgen::{
    Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose,
    SanType,
};
use time::{Duration, OffsetDateTime};

use crate::workstation::{fingerprint, read_if_present, write_private, Issued};
use crate::x509::CertificateFields;
use crate::AccessError;

const CA_NAME: &str = "vigil cluster CA";

/// The OID of an X.520 common name.
const COMMON_NAME: &[u64] = &[2, 5, 4, 3];

/// The cluster CA, loaded from (or created in) its directory: `ca.pem`, `ca.key` (mode 0600).
pub struct ClusterCa {
    key: KeyPair,
    /// The CA certificate as issuers see it (re-made from the stored key; same name and key
    /// as `ca.pem`, so what it signs chains to `ca.pem`).
    issuer: Certificate,
    ca_pem: String,
}

/// Whether `name` can name a node: 1 to 64 characters, ASCII letters, digits, '.', '-', '_'.
pub fn valid_node_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// The node name a certificate (DER) was issued for: its subject's common name (OID 2.5.4.3).
/// `None` when the certificate is malformed, its subject has no common name or more than one,
/// or the name is neither a UTF8String nor a PrintableString.
pub fn node_name(der: &[u8]) -> Option<String> {
    let subject = CertificateFields::from_der(der).ok()?.subject;
    let mut names = Vec::new();
    yasna::parse_der(&subject, |r| {
        r.read_sequence_of(|r| {
            r.read_set_of(|r| {
                r.read_sequence(|r| {
                    let oid = r.next().read_oid()?;
                    let value = r.next().read_der()?;
                    if oid.components().as_slice() == COMMON_NAME {
                        names.push(value);
                    }
                    Ok(())
                })
            })
        })
    })
    .ok()?;
    let [value] = names.as_slice() else {
        return None;
    };
    yasna::parse_der(value, |r| r.read_utf8string())
        .or_else(|_| yasna::parse_der(value, |r| r.read_printable_string()))
        .ok()
}

fn ca_err(e: rcgen::Error) -> AccessError {
    AccessError::Ca(format!("cluster CA: {e}"))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> AccessError + '_ {
    move |source| AccessError::Io {
        path: path.to_owned(),
        source,
    }
}

fn ca_params() -> CertificateParams {
    crate::workstation::authority_params(CA_NAME)
}

/// The CA's key from `path`, refused when group or others may read it.
fn read_key(path: &Path) -> Result<KeyPair, AccessError> {
    let mode = std::fs::metadata(path)
        .map_err(io_err(path))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(AccessError::Invalid(format!(
            "{}: the cluster CA key is readable by others (mode {:o}); make it readable by its owner only (chmod 600)",
            path.display(),
            mode & 0o777
        )));
    }
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    KeyPair::from_pem(&text).map_err(|e| AccessError::Ca(format!("{}: {e}", path.display())))
}

impl ClusterCa {
    /// Loads the CA from `dir`, creating the directory (mode 0700) and a new CA (ECDSA P-256,
    /// valid 10 years) when `ca.pem` and `ca.key` are absent. A `ca.key` readable by group or
    /// others is refused, and so is a `ca.pem` without its `ca.key` (a node's copy of the CA
    /// certificate, not the CA); a `ca.key` without `ca.pem` gets its certificate re-made.
    pub fn load_or_create(dir: &Path) -> Result<Self, AccessError> {
        crate::create_private_dir(dir).map_err(io_err(dir))?;
        let (key_path, cert_path) = (dir.join("ca.key"), dir.join("ca.pem"));
        let stored_pem = read_if_present(&cert_path)?;
        let key = if key_path.exists() {
            read_key(&key_path)?
        } else if stored_pem.is_some() {
            return Err(AccessError::Invalid(format!(
                "{} has no ca.key beside ca.pem: that is a copy of the cluster CA certificate, not the CA (its key stays with the operator)",
                dir.display()
            )));
        } else {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(ca_err)?;
            write_private(&key_path, &key.serialize_pem())?;
            key
        };
        let issuer = ca_params().self_signed(&key).map_err(ca_err)?;
        let ca_pem = match stored_pem {
            Some(pem_text) => {
                let der = pem::parse(&pem_text)
                    .map_err(|e| {
                        AccessError::Ca(format!(
                            "{}: not a PEM certificate: {e}",
                            cert_path.display()
                        ))
                    })?
                    .into_contents();
                let fields = CertificateFields::from_der(&der)
                    .map_err(|e| AccessError::Ca(format!("{}: {e}", cert_path.display())))?;
                if fields.spki != key.public_key_der() {
                    return Err(AccessError::Ca(format!(
                        "{}: the certificate is not for the key in ca.key",
                        cert_path.display()
                    )));
                }
                pem_text
            }
            None => {
                let pem_text = issuer.pem();
                vigil_core::atomic_file::replace(&cert_path, pem_text.as_bytes(), 0o644)
                    .map_err(io_err(&cert_path))?;
                pem_text
            }
        };
        Ok(Self {
            key,
            issuer,
            ca_pem,
        })
    }

    /// The CA certificate, PEM (what every node trusts its peers against).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Issues a node certificate (valid a year) with a key generated here: subject common
    /// name `node`, alternative names `hosts` (each an IP address when it parses as one, else
    /// a DNS name), extended key usages server and client authentication, key usage digital
    /// signature. Refuses a name [`valid_node_name`] refuses and an empty `hosts`.
    pub fn issue_node(&self, node: &str, hosts: &[String]) -> Result<Issued, AccessError> {
        if !valid_node_name(node) {
            return Err(AccessError::Invalid(format!(
                "node name {node:?}: it must be 1-64 ASCII letters, digits, '.', '-' or '_'"
            )));
        }
        if hosts.is_empty() {
            return Err(AccessError::Invalid(format!(
                "node {node}: no hosts to issue its certificate for (the names or addresses its peers reach it at)"
            )));
        }
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, node);
        params.subject_alt_names = hosts
            .iter()
            .map(|host| match host.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) if host.is_empty() => {
                    Err(AccessError::Invalid(format!("node {node}: an empty host")))
                }
                Err(_) => rcgen::Ia5String::try_from(host.as_str())
                    .map(SanType::DnsName)
                    .map_err(|_| {
                        AccessError::Invalid(format!(
                            "node {node}: host {host:?} is neither an IP address nor a DNS name"
                        ))
                    }),
            })
            .collect::<Result<_, _>>()?;
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(365);
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(ca_err)?;
        let cert = params
            .signed_by(&key, &self.issuer, &self.key)
            .map_err(ca_err)?;
        Ok(Issued {
            fingerprint: fingerprint(cert.der()),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workstation::tests::{der, verify_client, verify_server};

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_cluster_ca_survives_a_reload_with_a_private_key() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("cluster");
        let ca = ClusterCa::load_or_create(&ca_dir).unwrap();
        assert!(ca.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let again = ClusterCa::load_or_create(&ca_dir).unwrap();
        assert_eq!(again.ca_pem(), ca.ca_pem());
        assert_eq!(mode(&ca_dir.join("ca.key")), 0o600);
        // What the reloaded CA issues chains to the stored certificate.
        let issued = again.issue_node("node-1", &["127.0.0.1".into()]).unwrap();
        verify_client(ca.ca_pem(), &issued.cert_pem).unwrap();
        assert_eq!(issued.fingerprint, fingerprint(&der(&issued.cert_pem)));
    }

    #[test]
    fn a_readable_key_or_a_certificate_without_its_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        ClusterCa::load_or_create(dir.path()).unwrap();
        let key = dir.path().join("ca.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = ClusterCa::load_or_create(dir.path()).err().unwrap();
        assert!(matches!(error, AccessError::Invalid(_)), "{error}");
        std::fs::remove_file(&key).unwrap();
        let error = ClusterCa::load_or_create(dir.path()).err().unwrap();
        assert!(matches!(error, AccessError::Invalid(_)), "{error}");
    }

    #[test]
    fn a_node_certificate_names_its_node_and_serves_and_authenticates() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::load_or_create(dir.path()).unwrap();
        let issued = ca
            .issue_node("node-1", &["127.0.0.1".into(), "node-1.internal".into()])
            .unwrap();
        assert_eq!(node_name(&der(&issued.cert_pem)).as_deref(), Some("node-1"));
        assert_eq!(node_name(&der(ca.ca_pem())).as_deref(), Some(CA_NAME));
        assert_eq!(node_name(b"not a certificate"), None);
        assert!(issued.key_pem.contains("PRIVATE KEY"));
        verify_client(ca.ca_pem(), &issued.cert_pem).unwrap();
        verify_server(ca.ca_pem(), &issued.cert_pem, "127.0.0.1").unwrap();
        verify_server(ca.ca_pem(), &issued.cert_pem, "node-1.internal").unwrap();
        let error = verify_server(ca.ca_pem(), &issued.cert_pem, "10.0.0.1").unwrap_err();
        assert!(
            format!("{error:?}").contains("NotValidForName"),
            "{error:?}"
        );
        verify_server(ca.ca_pem(), &issued.cert_pem, "other.internal").unwrap_err();
    }

    #[test]
    fn another_cluster_cas_node_is_refused() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let ours = ClusterCa::load_or_create(a.path()).unwrap();
        let theirs = ClusterCa::load_or_create(b.path()).unwrap();
        assert_ne!(ours.ca_pem(), theirs.ca_pem());
        let stranger = theirs.issue_node("node-1", &["127.0.0.1".into()]).unwrap();
        verify_client(ours.ca_pem(), &stranger.cert_pem).unwrap_err();
        verify_server(ours.ca_pem(), &stranger.cert_pem, "127.0.0.1").unwrap_err();
        verify_client(theirs.ca_pem(), &stranger.cert_pem).unwrap();
    }

    #[test]
    fn bad_node_names_and_hosts_are_refused() {
        assert!(valid_node_name("node-1"));
        assert!(valid_node_name("a.b_c"));
        assert!(valid_node_name(&"n".repeat(64)));
        assert!(!valid_node_name(""));
        assert!(!valid_node_name("a b"));
        assert!(!valid_node_name(&"n".repeat(65)));
        assert!(!valid_node_name("é"));
        assert!(!valid_node_name("a/b"));
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::load_or_create(dir.path()).unwrap();
        let localhost = ["127.0.0.1".to_owned()];
        for bad in ["", "a b", "../evil"] {
            let error = ca.issue_node(bad, &localhost).err().unwrap();
            assert!(matches!(error, AccessError::Invalid(_)), "{bad:?}: {error}");
        }
        let error = ca.issue_node("node-1", &[]).err().unwrap();
        assert!(matches!(error, AccessError::Invalid(_)), "{error}");
        let error = ca
            .issue_node("node-1", &["é.example".into()])
            .err()
            .unwrap();
        assert!(matches!(error, AccessError::Invalid(_)), "{error}");
    }
}
