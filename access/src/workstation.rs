//! vigil's workstation CA: it issues the client certificates of secure access workstations
//! (and the API server's own certificate), and workstations are registered by certificate
//! fingerprint.
//!
//! A content request must arrive over TLS with a certificate this CA signed (rustls checks
//! that during the handshake) *and* whose SHA-256 fingerprint is registered and not revoked
//! (the API checks that per request, against the access store). A revoked workstation reads
//! nothing from the next request the store answers, without a CRL.
//!
//! A workstation's certificate is issued for a key made on the workstation: it sends a PKCS#10
//! certificate signing request ([`WorkstationCa::issue_workstation_for_csr`]), whose signature
//! is checked and of which only the public key is used; the certificate's subject is the
//! workstation's name and it is good for client authentication only. Issuing with a key made
//! here ([`WorkstationCa::issue_workstation`]) is for demos, tests and benchmarks.
//!
//! The CA certificate carries critical name constraints: it can vouch for the API's configured
//! hosts (`api.tls_hosts`) and no other server name or address, so a client that trusts it
//! for this host trusts it for nothing else. When the hosts change, the CA certificate is
//! re-made from the same key (issued workstation certificates stay valid). A CA certificate
//! without name constraints (made before vigil set them) is replaced by a new CA with a new
//! key, with a warning: every workstation must then be issued a new certificate.
//!
//! Files in the CA directory: `ca.pem`, `ca.key` (mode 0600), `ca.hosts` (the hosts the CA
//! certificate is constrained to), `server.pem`, `server.key`, `server.hosts`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CidrSubnet, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, KeyPair, KeyUsagePurpose, NameConstraints,
    PublicKeyData,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use crate::x509::{CertificateFields, CsrPublicKey, NAME_CONSTRAINTS};
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

/// A certificate and the private key generated for it here, PEM.
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (keep it on the workstation only).
    pub key_pem: String,
    /// SHA-256 of the certificate's DER, hex.
    pub fingerprint: String,
}

/// A certificate issued for a key that never left the workstation, PEM.
pub struct IssuedCertificate {
    /// The certificate.
    pub cert_pem: String,
    /// SHA-256 of the certificate's DER, hex.
    pub fingerprint: String,
}

/// The CA, loaded from (or created in) its directory.
pub struct WorkstationCa {
    dir: PathBuf,
    key: KeyPair,
    /// The CA certificate as issuers see it (re-made from the stored key; same name, key and
    /// constraints as `ca.pem`, so what it signs chains to `ca.pem`).
    issuer: Certificate,
    ca_pem: String,
    /// The hosts the CA certificate is constrained to.
    hosts: Vec<String>,
}

/// The SHA-256 fingerprint of a DER certificate, hex.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The CA's name constraints for the API's TLS hosts (names or IP addresses): each host is
/// permitted and nothing else. A name permits its subdomains too in X.509, so those are
/// excluded unless another host (or a wildcard `*.name`) is one; an address form (IPv4, IPv6)
/// or DNS names at all, when no host is one, are excluded whole.
fn name_constraints(hosts: &[String]) -> Result<NameConstraints, AccessError> {
    if hosts.is_empty() {
        return Err(AccessError::Invalid(
            "api.tls_hosts is empty: the workstation CA vouches only for the hosts listed there"
                .into(),
        ));
    }
    let mut ips = Vec::new();
    let mut names = Vec::new();
    for host in hosts {
        match host.parse::<IpAddr>() {
            Ok(ip) => ips.push(ip),
            Err(_) => names.push(dns_host(host)?),
        }
    }
    let mut permitted = Vec::new();
    let mut excluded = Vec::new();
    for ip in &ips {
        let prefix = if ip.is_ipv4() { 32 } else { 128 };
        permitted.push(GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(
            *ip, prefix,
        )));
    }
    for (any, all) in [
        (ips.iter().any(IpAddr::is_ipv4), "0.0.0.0"),
        (ips.iter().any(IpAddr::is_ipv6), "::"),
    ] {
        if !any {
            let all: IpAddr = all.parse().expect("a literal address");
            excluded.push(GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(
                all, 0,
            )));
        }
    }
    for name in &names {
        match name.strip_prefix("*.") {
            Some(parent) => permitted.push(GeneralSubtree::DnsName(format!(".{parent}"))),
            None => {
                permitted.push(GeneralSubtree::DnsName(name.clone()));
                let below = format!(".{name}");
                if !names.iter().any(|other| other.ends_with(&below)) {
                    excluded.push(GeneralSubtree::DnsName(below));
                }
            }
        }
    }
    if names.is_empty() {
        // The empty name is every DNS name.
        excluded.push(GeneralSubtree::DnsName(String::new()));
    }
    Ok(NameConstraints {
        permitted_subtrees: permitted,
        excluded_subtrees: excluded,
    })
}

/// A TLS host that is not an IP address, lower-cased, if it is a DNS name (or a wildcard
/// `*.name`).
fn dns_host(host: &str) -> Result<String, AccessError> {
    let name = host.to_ascii_lowercase();
    let labels = name.strip_prefix("*.").unwrap_or(&name);
    let ok = labels.len() <= 253
        && labels.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        });
    if ok {
        Ok(name)
    } else {
        Err(AccessError::Invalid(format!(
            "api.tls_hosts: {host:?} is neither an IP address nor a DNS name"
        )))
    }
}

fn ca_params(hosts: &[String]) -> Result<CertificateParams, AccessError> {
    let mut params = authority_params(CA_NAME);
    // rcgen marks the extension critical.
    params.name_constraints = Some(name_constraints(hosts)?);
    Ok(params)
}

/// A certificate authority named `name` that signs end certificates only (path length 0),
/// good for ten years from yesterday (also the cluster CA's).
pub(crate) fn authority_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
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
    vigil_core::atomic_file::replace(path, text.as_bytes(), 0o600).map_err(|source| {
        AccessError::Io {
            path: path.to_owned(),
            source,
        }
    })
}

fn read(path: &Path) -> Result<String, AccessError> {
    std::fs::read_to_string(path).map_err(|source| AccessError::Io {
        path: path.to_owned(),
        source,
    })
}

/// A file's text, or `None` when there is no such file.
pub(crate) fn read_if_present(path: &Path) -> Result<Option<String>, AccessError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AccessError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

fn write(path: &Path, text: &str) -> Result<(), AccessError> {
    vigil_core::atomic_file::replace(path, text.as_bytes(), 0o644).map_err(|source| {
        AccessError::Io {
            path: path.to_owned(),
            source,
        }
    })
}

fn ca_err(e: rcgen::Error) -> AccessError {
    AccessError::Ca(e.to_string())
}

/// The DER of a PEM certificate file's first block.
fn pem_der(path: &Path, text: &str) -> Result<Vec<u8>, AccessError> {
    pem::parse(text)
        .map(|p| p.into_contents())
        .map_err(|e| AccessError::Ca(format!("{}: not a PEM certificate: {e}", path.display())))
}

/// Whether a CA certificate (PEM) carries name constraints.
fn constrained(path: &Path, text: &str) -> Result<bool, AccessError> {
    let fields = CertificateFields::from_der(&pem_der(path, text)?)
        .map_err(|e| AccessError::Ca(format!("{}: {e}", path.display())))?;
    Ok(fields.extension(NAME_CONSTRAINTS).is_some())
}

impl WorkstationCa {
    /// Loads the CA from `dir`, creating it (and the directory, mode 0700) on first use, with
    /// its certificate constrained to `hosts` (the API's `api.tls_hosts`). A certificate
    /// constrained to other hosts is re-made from the same key; one without constraints is
    /// replaced by a new CA (new key), with a warning.
    pub fn load_or_create(dir: &Path, hosts: &[String]) -> Result<Self, AccessError> {
        let params = ca_params(hosts)?;
        crate::create_private_dir(dir).map_err(|source| AccessError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let (key_path, cert_path, hosts_path) =
            (dir.join("ca.key"), dir.join("ca.pem"), dir.join("ca.hosts"));
        let wanted = hosts.join("\n");
        let stored = if key_path.exists() {
            Some((
                KeyPair::from_pem(&read(&key_path)?).map_err(ca_err)?,
                read_if_present(&cert_path)?,
            ))
        } else {
            None
        };
        let (key, current) = match stored {
            Some((key, Some(pem))) if constrained(&cert_path, &pem)? => {
                let same = read_if_present(&hosts_path)?.as_deref() == Some(wanted.as_str());
                if !same {
                    tracing::warn!(dir = %dir.display(), hosts = %hosts.join(", "),
                        "The workstation CA certificate was re-made for the configured TLS hosts (same key: issued workstation certificates stay valid); give clients that pin ca.pem the new one.");
                }
                (key, same.then_some(pem))
            }
            Some((_, Some(_))) => {
                tracing::warn!(dir = %dir.display(), hosts = %hosts.join(", "),
                    "The workstation CA had no name constraints (it was made before vigil limited it to api.tls_hosts), so anyone trusting it for websites trusted its key for every site: it was replaced by a new CA (new key) that can vouch only for these hosts. Certificates the old CA issued no longer verify: issue each workstation a new one from a CSR made on it (`vigil admin workstation issue NEW-NAME --csr FILE`), revoke the old registrations, and remove the old CA certificate from every trust store it was imported into.");
                (KeyPair::generate().map_err(ca_err)?, None)
            }
            // The key without its certificate (a crash between the two writes): same key.
            Some((key, None)) => (key, None),
            None => (KeyPair::generate().map_err(ca_err)?, None),
        };
        let issuer = params.self_signed(&key).map_err(ca_err)?;
        let ca_pem = match current {
            Some(pem) => pem,
            None => {
                write_private(&key_path, &key.serialize_pem())?;
                write(&cert_path, &issuer.pem())?;
                write(&hosts_path, &wanted)?;
                issuer.pem()
            }
        };
        Ok(Self {
            dir: dir.to_owned(),
            key,
            issuer,
            ca_pem,
            hosts: hosts.to_vec(),
        })
    }

    /// The CA certificate, PEM (what clients trust for this host only, and the server checks
    /// clients against).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA certificate's path.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Signs a certificate for `key`: subject `common_name`, the given alternative names, one
    /// extended key usage, valid `days`.
    fn sign(
        &self,
        common_name: &str,
        alt_names: Vec<String>,
        usage: ExtendedKeyUsagePurpose,
        days: i64,
        key: &impl PublicKeyData,
    ) -> Result<Certificate, AccessError> {
        let mut params = CertificateParams::new(alt_names).map_err(ca_err)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(days);
        params
            .signed_by(key, &self.issuer, &self.key)
            .map_err(ca_err)
    }

    /// Issues a certificate for a key generated here.
    fn issue(
        &self,
        common_name: &str,
        alt_names: Vec<String>,
        usage: ExtendedKeyUsagePurpose,
        days: i64,
    ) -> Result<Issued, AccessError> {
        let key = KeyPair::generate().map_err(ca_err)?;
        let cert = self.sign(common_name, alt_names, usage, days, &key)?;
        Ok(Issued {
            fingerprint: fingerprint(cert.der()),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues a workstation's client certificate (valid a year) for a key generated here, for
    /// demos, tests and benchmarks: the private key exists outside the workstation. Real
    /// workstations use [`Self::issue_workstation_for_csr`].
    pub fn issue_workstation(&self, name: &str) -> Result<Issued, AccessError> {
        crate::Principal::check_name(name)?;
        self.issue(name, vec![], ExtendedKeyUsagePurpose::ClientAuth, 365)
    }

    /// Issues a workstation's client certificate (valid a year) for the public key of a PEM
    /// PKCS#10 request made on the workstation, once its signature verifies with that key.
    /// The certificate's subject is `name` and its only extended key usage client
    /// authentication, whatever the request asks for; no private key is involved here.
    pub fn issue_workstation_for_csr(
        &self,
        name: &str,
        csr_pem: &str,
    ) -> Result<IssuedCertificate, AccessError> {
        crate::Principal::check_name(name)?;
        let key = CsrPublicKey::from_pem(csr_pem)?;
        let cert = self.sign(name, vec![], ExtendedKeyUsagePurpose::ClientAuth, 365, &key)?;
        let fields = CertificateFields::from_der(cert.der()).map_err(AccessError::Ca)?;
        if fields.spki != key.spki_der() {
            return Err(AccessError::Ca(
                "the certificate's public key differs from the request's".into(),
            ));
        }
        Ok(IssuedCertificate {
            fingerprint: fingerprint(cert.der()),
            cert_pem: cert.pem(),
        })
    }

    /// The API server's certificate and key files for `hosts` (names or IP addresses, the
    /// hosts the CA was loaded for), issued on first use and again when the hosts or the CA
    /// certificate change.
    pub fn server_cert(&self, hosts: &[String]) -> Result<(PathBuf, PathBuf), AccessError> {
        if hosts != self.hosts.as_slice() {
            return Err(AccessError::Invalid(format!(
                "api.tls_hosts {hosts:?}: the workstation CA was loaded for {:?} and vouches for no other host",
                self.hosts
            )));
        }
        let (cert_path, key_path, hosts_path) = (
            self.dir.join("server.pem"),
            self.dir.join("server.key"),
            self.dir.join("server.hosts"),
        );
        let ca = fingerprint(&pem_der(&self.ca_path(), &self.ca_pem)?);
        let wanted = format!("ca {ca}\n{}", hosts.join("\n"));
        let current = read_if_present(&hosts_path)?;
        if current.as_deref() != Some(wanted.as_str()) || !cert_path.exists() {
            let issued = self.issue(
                "vigil API",
                hosts.to_vec(),
                ExtendedKeyUsagePurpose::ServerAuth,
                825,
            )?;
            write_private(&key_path, &issued.key_pem)?;
            write(&cert_path, &issued.cert_pem)?;
            write(&hosts_path, &wanted)?;
        }
        Ok((cert_path, key_path))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use yasna::Tag;

    use super::*;
    use crate::x509::CsrError;

    fn hosts(list: &[&str]) -> Vec<String> {
        list.iter().map(|h| h.to_string()).collect()
    }

    /// A certificate's DER, from PEM (also the cluster CA's tests).
    pub(crate) fn der(pem_text: &str) -> Vec<u8> {
        pem::parse(pem_text).unwrap().into_contents()
    }

    /// A root store trusting only `ca_pem`.
    pub(crate) fn roots(ca_pem: &str) -> Arc<rustls::RootCertStore> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(der(ca_pem))).unwrap();
        Arc::new(roots)
    }

    /// The crypto provider the API's listeners use.
    pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// What a TLS client trusting only `ca_pem` says of a server presenting `cert_pem` as
    /// `name`.
    /// A server certificate for `name` that the CA's key signs all the same fails
    /// verification on the CA's name constraints.
    fn assert_forgery_refused(ca: &WorkstationCa, name: &str) {
        let forged = ca
            .issue(
                "forged",
                hosts(&[name]),
                ExtendedKeyUsagePurpose::ServerAuth,
                1,
            )
            .unwrap();
        let error = verify_server(ca.ca_pem(), &forged.cert_pem, name).unwrap_err();
        assert!(
            format!("{error:?}").contains("NameConstraintViolation"),
            "{name}: {error:?}"
        );
    }

    /// What a TLS client trusting only `ca_pem` says of a server presenting `cert_pem` as
    /// `name` (also the cluster CA's tests).
    pub(crate) fn verify_server(
        ca_pem: &str,
        cert_pem: &str,
        name: &str,
    ) -> Result<(), rustls::Error> {
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots(ca_pem), provider())
                .build()
                .unwrap();
        verifier
            .verify_server_cert(
                &CertificateDer::from(der(cert_pem)),
                &[],
                &ServerName::try_from(name.to_owned()).unwrap(),
                &[],
                UnixTime::now(),
            )
            .map(|_| ())
    }

    /// What the workstation listener (rustls, clients checked against `ca_pem`) says of a
    /// client presenting `cert_pem`.
    pub(crate) fn verify_client(ca_pem: &str, cert_pem: &str) -> Result<(), rustls::Error> {
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots(ca_pem), provider())
                .build()
                .unwrap();
        verifier
            .verify_client_cert(&CertificateDer::from(der(cert_pem)), &[], UnixTime::now())
            .map(|_| ())
    }

    fn fields(cert_pem: &str) -> CertificateFields {
        CertificateFields::from_der(&der(cert_pem)).unwrap()
    }

    /// The common name in a subject (DER).
    fn common_name(subject: &[u8]) -> String {
        let mut names = Vec::new();
        yasna::parse_der(subject, |r| {
            r.read_sequence_of(|r| {
                r.read_set_of(|r| {
                    r.read_sequence(|r| {
                        let oid = r.next().read_oid()?;
                        let value = r.next().read_utf8string()?;
                        if oid.components().as_slice() == [2, 5, 4, 3] {
                            names.push(value);
                        }
                        Ok(())
                    })
                })
            })
        })
        .unwrap();
        assert_eq!(names.len(), 1, "{names:?}");
        names.remove(0)
    }

    /// The extended key usages' OIDs.
    fn extended_key_usages(cert: &CertificateFields) -> Vec<Vec<u64>> {
        let eku = cert.extension(&[2, 5, 29, 37]).expect("an EKU extension");
        let mut oids = Vec::new();
        yasna::parse_der(&eku.value, |r| {
            r.read_sequence_of(|r| {
                oids.push(r.read_oid()?.components().clone());
                Ok(())
            })
        })
        .unwrap();
        oids
    }

    /// The name constraints' permitted and excluded subtrees, as `dns:NAME` and
    /// `ip:ADDRESS/MASK`.
    fn subtrees(cert: &CertificateFields) -> (Vec<String>, Vec<String>) {
        let ext = cert.extension(NAME_CONSTRAINTS).expect("name constraints");
        assert!(ext.critical, "name constraints must be critical");
        let read = |r: &mut yasna::BERReaderSeq, tag| {
            r.read_optional(|r| {
                r.read_tagged_implicit(Tag::context(tag), |r| {
                    let mut out = Vec::new();
                    r.read_sequence_of(|r| {
                        let base = r.read_sequence(|r| r.next().read_der())?;
                        let content = base[2..].to_vec();
                        out.push(match base[0] {
                            0x82 => format!("dns:{}", String::from_utf8(content).unwrap()),
                            0x87 => {
                                let half = content.len() / 2;
                                let ip = |b: &[u8]| match b.len() {
                                    4 => IpAddr::from(<[u8; 4]>::try_from(b).unwrap()),
                                    _ => IpAddr::from(<[u8; 16]>::try_from(b).unwrap()),
                                };
                                format!("ip:{}/{}", ip(&content[..half]), ip(&content[half..]))
                            }
                            other => panic!("unexpected name form {other:#x}"),
                        });
                        Ok(())
                    })?;
                    Ok(out)
                })
            })
            .map(Option::unwrap_or_default)
        };
        yasna::parse_der(&ext.value, |r| {
            r.read_sequence(|r| Ok((read(r, 0)?, read(r, 1)?)))
        })
        .unwrap()
    }

    /// A request made "on the workstation": its key, and a CSR asking for far more than a
    /// workstation gets (another name, a server name, server authentication).
    fn workstation_request(alg: &'static rcgen::SignatureAlgorithm) -> (KeyPair, String) {
        let key = KeyPair::generate_for(alg).unwrap();
        let mut params = CertificateParams::new(vec!["evil.example.com".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "someone-else");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        (key, csr)
    }

    #[test]
    fn the_ca_survives_a_reload_and_issues_distinct_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let localhost = hosts(&["localhost"]);
        let ca = WorkstationCa::load_or_create(dir.path(), &localhost).unwrap();
        let a = ca.issue_workstation("ws-1").unwrap();
        let again = WorkstationCa::load_or_create(dir.path(), &localhost).unwrap();
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
        let (cert, _) = ca.server_cert(&localhost).unwrap();
        let first = std::fs::read(&cert).unwrap();
        ca.server_cert(&localhost).unwrap();
        assert_eq!(std::fs::read(&cert).unwrap(), first);
        // Hosts the CA was not loaded for are refused; loaded for them, the server
        // certificate is issued again.
        let both = hosts(&["localhost", "127.0.0.1"]);
        let error = ca.server_cert(&both).unwrap_err().to_string();
        assert!(error.contains("api.tls_hosts"), "{error}");
        let ca = WorkstationCa::load_or_create(dir.path(), &both).unwrap();
        ca.server_cert(&both).unwrap();
        assert_ne!(std::fs::read(&cert).unwrap(), first);
    }

    #[test]
    fn a_workstation_certificate_from_a_csr_carries_its_key_its_name_and_client_auth_only() {
        let dir = tempfile::tempdir().unwrap();
        let configured = hosts(&["localhost", "127.0.0.1"]);
        let ca = WorkstationCa::load_or_create(dir.path(), &configured).unwrap();
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ED25519,
        ] {
            let (key, csr) = workstation_request(alg);
            let issued = ca.issue_workstation_for_csr("ws-1", &csr).unwrap();
            assert_eq!(issued.fingerprint, fingerprint(&der(&issued.cert_pem)));
            let cert = fields(&issued.cert_pem);
            assert_eq!(
                cert.spki,
                key.public_key_der(),
                "{alg:?}: the request's key"
            );
            assert_eq!(common_name(&cert.subject), "ws-1", "{alg:?}");
            assert_eq!(
                extended_key_usages(&cert),
                vec![vec![1, 3, 6, 1, 5, 5, 7, 3, 2]],
                "{alg:?}: client authentication only"
            );
            let key_usage = cert.extension(&[2, 5, 29, 15]).expect("key usage");
            // A BIT STRING (rcgen writes two bytes): digitalSignature, the first bit, only.
            let bits = &key_usage.value[3..];
            assert!(
                key_usage.value[0] == 0x03 && bits[0] == 0x80 && bits[1..].iter().all(|b| *b == 0),
                "digitalSignature only: {:?}",
                key_usage.value
            );
            assert!(
                cert.extension(&[2, 5, 29, 17]).is_none(),
                "{alg:?}: the request's alternative names are not copied"
            );
            verify_client(ca.ca_pem(), &issued.cert_pem).unwrap();
            let error = verify_server(ca.ca_pem(), &issued.cert_pem, "localhost").unwrap_err();
            assert!(format!("{error:?}").contains("Purpose"), "{error:?}");
        }
    }

    /// Requests made by `openssl req -new -newkey {rsa:2048 | ec -pkeyopt
    /// ec_paramgen_curve:P-256 | ed25519} -nodes -subj /CN=ws`, and the public key
    /// `openssl req -pubkey` read from each.
    const OPENSSL_REQUESTS: &[(&str, &str)] = &[
        (
            r"-----BEGIN CERTIFICATE REQUEST-----
MIICUjCCAToCAQAwDTELMAkGA1UEAwwCd3MwggEiMA0GCSqGSIb3DQEBAQUAA4IB
DwAwggEKAoIBAQCiXR2ji4eGx9njdrxgIj9/yz7R4LIy1krG4+cZ/JWz/8YHUFwn
kUBum0tW80e0gW4+iQ1eyO4OGJEqOWIMwAYvdAYvlA6ajd5Du+Z2dwd9NYm1WL2t
BAzqj81agCm2/y7yCvweg0jQQ71JiyAXZbiNmqPxUJA5ycaSXE/Ta4NIgTSGDWHx
81uoPFh3OZashtBk2oK/UQRUGhm1kgseVGL15q0nIIiDKSaiBZDuF+rNKXn3ViBi
vCTL/aJYcErxzJ4vqQnDmgsEfZZNZz17vSx59dPZFLumiq6Nod5QBQBo4aECvYWc
Dpagar8/k65iteG4BIUlX/UaxylodUQ0WgLBAgMBAAGgADANBgkqhkiG9w0BAQsF
AAOCAQEAfZwD5TvWDuqW2Iuw75YWVQ337AhCSLhBjf6FgMA55z/Vj0tL3nFqyIKs
bxpcz6MbP9Wh9knq+BovcFxPxcWnwoi8bdvMAXPiiMdZf2hXSKmdClPXF3ur/4Cu
ewD5CVqU7wF9S3XcEl8fgns15QdNOScsm3FiYXwz2KHfCVpW2cDWRVwf0b3SQjjA
SpB7wXaPu1ofqFrtJdj9wNoBwnIXmuF3Eau8sJ4yotor0AaA5j5/pYTf81GBSOUL
eVsBKpaP1Lhs/RtwkNB9NMYuA4bqA64V1RNIhnPRJfPsIsvNn1T9ear5ST8R1Au/
ohyZmAXOtCo2Adqk2zK1QzVC3dO+2A==
-----END CERTIFICATE REQUEST-----",
            r"-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAol0do4uHhsfZ43a8YCI/
f8s+0eCyMtZKxuPnGfyVs//GB1BcJ5FAbptLVvNHtIFuPokNXsjuDhiRKjliDMAG
L3QGL5QOmo3eQ7vmdncHfTWJtVi9rQQM6o/NWoAptv8u8gr8HoNI0EO9SYsgF2W4
jZqj8VCQOcnGklxP02uDSIE0hg1h8fNbqDxYdzmWrIbQZNqCv1EEVBoZtZILHlRi
9eatJyCIgykmogWQ7hfqzSl591YgYrwky/2iWHBK8cyeL6kJw5oLBH2WTWc9e70s
efXT2RS7poqujaHeUAUAaOGhAr2FnA6WoGq/P5OuYrXhuASFJV/1GscpaHVENFoC
wQIDAQAB
-----END PUBLIC KEY-----",
        ),
        (
            r"-----BEGIN CERTIFICATE REQUEST-----
MIHGMG8CAQAwDTELMAkGA1UEAwwCd3MwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNC
AASYqd/39ik4LkSEFa4oBb2LuGEBa6hHNLmyWORzIimgsf1Rz+RfuSNo3j3fv2a7
atIMgOTI/Hxx0qWhmedDV8haoAAwCgYIKoZIzj0EAwIDRwAwRAIgAR71gY4YM3R5
dxXyZEL+dJ+tx8eoRvBj1LmqS9DKwloCICVAhhU/QZqHCs8j7EvFKzAt8JKeF/sn
cFcvnzPn9cr2
-----END CERTIFICATE REQUEST-----",
            r"-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEmKnf9/YpOC5EhBWuKAW9i7hhAWuo
RzS5sljkcyIpoLH9Uc/kX7kjaN49379mu2rSDIDkyPx8cdKloZnnQ1fIWg==
-----END PUBLIC KEY-----",
        ),
        (
            r"-----BEGIN CERTIFICATE REQUEST-----
MIGMMEACAQAwDTELMAkGA1UEAwwCd3MwKjAFBgMrZXADIQBus5T6+eji8AS+EqKo
ZRnXwRfuvpPFXcaojWk6wa53CqAAMAUGAytlcANBALaHbTJQnRfYnOF5ZwmKWttF
dlLpkHzLDs4/EjdIZXO93FvCQqpwJf/63a0U/NsFGUw51i9DHS8zrXpat/ffcQI=
-----END CERTIFICATE REQUEST-----",
            r"-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAbrOU+vno4vAEvhKiqGUZ18EX7r6TxV3GqI1pOsGudwo=
-----END PUBLIC KEY-----",
        ),
    ];

    #[test]
    fn requests_made_by_openssl_are_certified_for_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let ca = WorkstationCa::load_or_create(dir.path(), &hosts(&["localhost"])).unwrap();
        for (csr, public_key) in OPENSSL_REQUESTS {
            let issued = ca.issue_workstation_for_csr("ws-1", csr).unwrap();
            assert_eq!(fields(&issued.cert_pem).spki, der(public_key));
            verify_client(ca.ca_pem(), &issued.cert_pem).unwrap();
        }
    }

    #[test]
    fn a_csr_that_does_not_verify_or_is_not_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = WorkstationCa::load_or_create(dir.path(), &hosts(&["localhost"])).unwrap();
        let (key, csr) = workstation_request(&rcgen::PKCS_ECDSA_P256_SHA256);
        let as_pem = |der: Vec<u8>| pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
        let bad_signature = {
            let mut der = der(&csr);
            *der.last_mut().unwrap() ^= 1;
            as_pem(der)
        };
        // Another key in the request than the one that signed it.
        let other_key = {
            let other = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let mut der = der(&csr);
            let at = der
                .windows(key.public_key_raw().len())
                .position(|w| w == key.public_key_raw())
                .unwrap();
            der[at..at + other.public_key_raw().len()].copy_from_slice(other.public_key_raw());
            as_pem(der)
        };
        for tampered in [bad_signature, other_key] {
            assert!(matches!(
                ca.issue_workstation_for_csr("ws-1", &tampered),
                Err(AccessError::Csr(CsrError::BadSignature))
            ));
        }
        let error = ca
            .issue_workstation_for_csr("ws-1", &format!("{}{csr}", key.serialize_pem()))
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("PRIVATE KEY"), "{error}");
        for garbage in ["", "not a request", &key.serialize_pem()] {
            let error = ca.issue_workstation_for_csr("ws-1", garbage).err().unwrap();
            assert!(matches!(error, AccessError::Csr(_)), "{error}");
        }
        assert!(ca.issue_workstation_for_csr("../ws", &csr).is_err());
    }

    #[test]
    fn the_ca_vouches_for_the_configured_hosts_and_no_other_server() {
        let dir = tempfile::tempdir().unwrap();
        let configured = hosts(&["localhost", "127.0.0.1"]);
        let ca = WorkstationCa::load_or_create(dir.path(), &configured).unwrap();
        let (permitted, excluded) = subtrees(&fields(ca.ca_pem()));
        assert_eq!(
            permitted,
            ["ip:127.0.0.1/255.255.255.255", "dns:localhost"],
            "only the configured hosts"
        );
        assert_eq!(excluded, ["ip:::/::", "dns:.localhost"]);

        let (cert, _) = ca.server_cert(&configured).unwrap();
        let server = std::fs::read_to_string(cert).unwrap();
        for name in ["localhost", "127.0.0.1"] {
            verify_server(ca.ca_pem(), &server, name).unwrap();
        }
        // The CA's key signing a server certificate for anything else: refused.
        for other in ["example.com", "evil.localhost", "10.0.0.1", "::1"] {
            assert_forgery_refused(&ca, other);
        }

        // One name only (no address), a wildcard, and addresses only.
        for (configured, good, bad) in [
            (
                &["vigil.example.com"][..],
                &["vigil.example.com"][..],
                &["www.vigil.example.com", "example.com", "127.0.0.1"][..],
            ),
            (
                &["vigil.example.com", "*.vigil.example.com"],
                &["vigil.example.com", "www.vigil.example.com"],
                &["example.com", "www.example.com"],
            ),
            (
                &["10.1.2.3", "::1"],
                &["10.1.2.3", "::1"],
                &["localhost", "10.1.2.4"],
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let ca = WorkstationCa::load_or_create(dir.path(), &hosts(configured)).unwrap();
            let (cert, _) = ca.server_cert(&hosts(configured)).unwrap();
            let server = std::fs::read_to_string(cert).unwrap();
            for name in good {
                let wildcard = name.starts_with("www.") && configured.len() > 1;
                let cert = if wildcard {
                    server.clone()
                } else {
                    ca.issue("s", hosts(&[name]), ExtendedKeyUsagePurpose::ServerAuth, 1)
                        .unwrap()
                        .cert_pem
                };
                verify_server(ca.ca_pem(), &cert, name)
                    .unwrap_or_else(|e| panic!("{configured:?} {name}: {e:?}"));
            }
            for name in bad {
                assert_forgery_refused(&ca, name);
            }
        }
        for wrong in [&[][..], &["not a host"], &["-x.example.com"]] {
            let dir = tempfile::tempdir().unwrap();
            let error = WorkstationCa::load_or_create(dir.path(), &hosts(wrong))
                .err()
                .unwrap()
                .to_string();
            assert!(error.contains("api.tls_hosts"), "{error}");
        }
    }

    #[test]
    fn a_ca_without_name_constraints_is_replaced_and_one_for_other_hosts_is_remade() {
        // A CA as vigil made it before name constraints, with a workstation it issued.
        let dir = tempfile::tempdir().unwrap();
        let old_key = KeyPair::generate().unwrap();
        let mut old = ca_params(&hosts(&["localhost"])).unwrap();
        old.name_constraints = None;
        let old = old.self_signed(&old_key).unwrap();
        write_private(&dir.path().join("ca.key"), &old_key.serialize_pem()).unwrap();
        std::fs::write(dir.path().join("ca.pem"), old.pem()).unwrap();
        let old_ws = {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name.push(DnType::CommonName, "ws-old");
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            let key = KeyPair::generate().unwrap();
            params.signed_by(&key, &old, &old_key).unwrap().pem()
        };
        verify_client(&old.pem(), &old_ws).unwrap();
        // What the finding is about: its key vouched for any website.
        let forged = {
            let mut params = CertificateParams::new(vec!["example.com".to_owned()]).unwrap();
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            let key = KeyPair::generate().unwrap();
            params.signed_by(&key, &old, &old_key).unwrap().pem()
        };
        verify_server(&old.pem(), &forged, "example.com").unwrap();

        let configured = hosts(&["localhost", "127.0.0.1"]);
        let ca = WorkstationCa::load_or_create(dir.path(), &configured).unwrap();
        let key = std::fs::read_to_string(dir.path().join("ca.key")).unwrap();
        assert_ne!(key, old_key.serialize_pem(), "a new key");
        assert_eq!(std::fs::read_to_string(ca.ca_path()).unwrap(), ca.ca_pem());
        assert!(fields(ca.ca_pem()).extension(NAME_CONSTRAINTS).is_some());
        assert!(verify_client(ca.ca_pem(), &old_ws).is_err());

        // Other hosts: the same key, a certificate constrained to them, and the
        // workstations issued before still verify.
        let ws = ca.issue_workstation("ws-1").unwrap();
        let moved = hosts(&["vigil.example.com"]);
        let remade = WorkstationCa::load_or_create(dir.path(), &moved).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("ca.key")).unwrap(),
            key
        );
        assert_ne!(remade.ca_pem(), ca.ca_pem());
        assert_eq!(
            subtrees(&fields(remade.ca_pem())).0,
            ["dns:vigil.example.com"]
        );
        verify_client(remade.ca_pem(), &ws.cert_pem).unwrap();
        let (cert, _) = remade.server_cert(&moved).unwrap();
        let server = std::fs::read_to_string(cert).unwrap();
        verify_server(remade.ca_pem(), &server, "vigil.example.com").unwrap();
    }
}
