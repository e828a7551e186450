//! The few DER structures the workstation CA reads: PKCS#10 certificate signing requests
//! (RFC 2986), of which it takes only the public key, after checking the request's signature
//! with it; and the fields of certificates it issued itself (subject, key, extensions).
//!
//! A request's subject, attributes and requested extensions (subject alternative names, key
//! usages) are never read: the CA decides what a workstation certificate says.

use rcgen::{PublicKeyData, SignatureAlgorithm};
use ring::signature::{self, VerificationAlgorithm};
use yasna::models::ObjectIdentifier;
use yasna::{ASN1Result, BERReader, Tag};

/// Why a certificate signing request was refused.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    /// Not one PEM block of a certificate signing request.
    #[error("{0}")]
    Pem(String),
    /// The DER inside is not a PKCS#10 request.
    #[error("malformed PKCS#10 request: {0}")]
    Malformed(String),
    /// A key type the CA does not issue for.
    #[error("unsupported public key {0} (use ECDSA P-256 or P-384, Ed25519, or RSA of 2048 bits or more)")]
    UnsupportedKey(String),
    /// A signature algorithm that does not go with the key, or that the CA does not check.
    #[error("unsupported signature algorithm {0} for this key")]
    UnsupportedSignature(String),
    /// The request was not signed by the private key of the public key it carries.
    #[error("its signature does not verify with its own public key (altered, or not signed by the matching private key)")]
    BadSignature,
}

// Object identifiers (RFC 5480, RFC 8410, RFC 8017).
const EC_PUBLIC_KEY: &[u64] = &[1, 2, 840, 10045, 2, 1];
const P256: &[u64] = &[1, 2, 840, 10045, 3, 1, 7];
const P384: &[u64] = &[1, 3, 132, 0, 34];
const ED25519: &[u64] = &[1, 3, 101, 112];
const RSA_ENCRYPTION: &[u64] = &[1, 2, 840, 113549, 1, 1, 1];
const ECDSA_SHA256: &[u64] = &[1, 2, 840, 10045, 4, 3, 2];
const ECDSA_SHA384: &[u64] = &[1, 2, 840, 10045, 4, 3, 3];
const RSA_SHA256: &[u64] = &[1, 2, 840, 113549, 1, 1, 11];
const RSA_SHA384: &[u64] = &[1, 2, 840, 113549, 1, 1, 12];
const RSA_SHA512: &[u64] = &[1, 2, 840, 113549, 1, 1, 13];

/// The key types a workstation may bring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    P256,
    P384,
    Ed25519,
    Rsa,
}

impl KeyKind {
    /// rcgen's algorithm whose key identifier is this key type's (what rcgen writes into the
    /// certificate's subject public key info).
    fn rcgen(self) -> &'static SignatureAlgorithm {
        match self {
            Self::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Self::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Self::Ed25519 => &rcgen::PKCS_ED25519,
            Self::Rsa => &rcgen::PKCS_RSA_SHA256,
        }
    }

    /// How ring checks a signature of `algorithm` (an OID) by a key of this type.
    fn verifier(self, algorithm: &[u64]) -> Option<&'static dyn VerificationAlgorithm> {
        Some(match (self, algorithm) {
            (Self::P256, ECDSA_SHA256) => &signature::ECDSA_P256_SHA256_ASN1,
            (Self::P256, ECDSA_SHA384) => &signature::ECDSA_P256_SHA384_ASN1,
            (Self::P384, ECDSA_SHA256) => &signature::ECDSA_P384_SHA256_ASN1,
            (Self::P384, ECDSA_SHA384) => &signature::ECDSA_P384_SHA384_ASN1,
            (Self::Ed25519, ED25519) => &signature::ED25519,
            (Self::Rsa, RSA_SHA256) => &signature::RSA_PKCS1_2048_8192_SHA256,
            (Self::Rsa, RSA_SHA384) => &signature::RSA_PKCS1_2048_8192_SHA384,
            (Self::Rsa, RSA_SHA512) => &signature::RSA_PKCS1_2048_8192_SHA512,
            _ => return None,
        })
    }
}

/// The public key of a certificate signing request whose signature verified with it.
#[derive(Debug, Clone)]
pub struct CsrPublicKey {
    kind: KeyKind,
    /// The subject public key (the BIT STRING's bytes).
    raw: Vec<u8>,
    /// The whole SubjectPublicKeyInfo, DER, as the request carried it.
    spki: Vec<u8>,
}

impl CsrPublicKey {
    /// Reads a PEM `CERTIFICATE REQUEST` and checks its signature with the key it carries.
    pub fn from_pem(text: &str) -> Result<Self, CsrError> {
        let blocks = pem::parse_many(text).map_err(|e| CsrError::Pem(format!("not PEM: {e}")))?;
        match blocks.as_slice() {
            [one] if matches!(one.tag(), "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST") => {
                Self::from_der(one.contents())
            }
            [] => Err(CsrError::Pem(
                "no PEM block (expected -----BEGIN CERTIFICATE REQUEST-----)".into(),
            )),
            blocks => Err(CsrError::Pem(format!(
                "expected one CERTIFICATE REQUEST block, found {} (a private key never belongs here)",
                blocks
                    .iter()
                    .map(|b| b.tag())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Reads a DER PKCS#10 request and checks its signature with the key it carries.
    pub fn from_der(der: &[u8]) -> Result<Self, CsrError> {
        let malformed = |what: &str| {
            let what = what.to_owned();
            move |e: yasna::ASN1Error| CsrError::Malformed(format!("{what}: {e}"))
        };
        let (info, signature_algorithm, signature) = yasna::parse_der(der, |r| {
            r.read_sequence(|r| {
                let info = r.next().read_der()?;
                let (algorithm, _) = read_algorithm(r.next())?;
                let signature = read_bits(r.next())?;
                Ok((info, algorithm, signature))
            })
        })
        .map_err(malformed("CertificationRequest"))?;
        let spki = yasna::parse_der(&info, |r| {
            r.read_sequence(|r| {
                let version = r.next().read_u8()?;
                if version != 0 {
                    return Err(yasna::ASN1Error::new(yasna::ASN1ErrorKind::Invalid));
                }
                let _subject = r.next().read_der()?;
                let spki = r.next().read_der()?;
                let _attributes = r.read_optional(|r| r.read_der())?;
                Ok(spki)
            })
        })
        .map_err(malformed("certificationRequestInfo"))?;
        let (algorithm, parameters, raw) = yasna::parse_der(&spki, |r| {
            r.read_sequence(|r| {
                let (algorithm, parameters) = read_algorithm(r.next())?;
                Ok((algorithm, parameters, read_bits(r.next())?))
            })
        })
        .map_err(malformed("subjectPKInfo"))?;
        let kind = match algorithm.components().as_slice() {
            EC_PUBLIC_KEY => {
                let curve = parameters
                    .as_deref()
                    .and_then(|p| yasna::parse_der(p, |r| r.read_oid()).ok());
                match curve.as_ref().map(|c| c.components().as_slice()) {
                    Some(P256) => KeyKind::P256,
                    Some(P384) => KeyKind::P384,
                    _ => {
                        return Err(CsrError::UnsupportedKey(format!(
                            "EC on curve {}",
                            curve.map_or("(none)".into(), |c| c.to_string())
                        )))
                    }
                }
            }
            ED25519 => KeyKind::Ed25519,
            RSA_ENCRYPTION => KeyKind::Rsa,
            _ => return Err(CsrError::UnsupportedKey(algorithm.to_string())),
        };
        let verifier = kind
            .verifier(signature_algorithm.components())
            .ok_or_else(|| CsrError::UnsupportedSignature(signature_algorithm.to_string()))?;
        signature::UnparsedPublicKey::new(verifier, &raw)
            .verify(&info, &signature)
            .map_err(|_| CsrError::BadSignature)?;
        Ok(Self { kind, raw, spki })
    }

    /// The SubjectPublicKeyInfo, DER, as the request carried it.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }
}

impl PublicKeyData for CsrPublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }

    fn algorithm(&self) -> &SignatureAlgorithm {
        self.kind.rcgen()
    }
}

/// An AlgorithmIdentifier: the OID and its parameters (DER), if any.
fn read_algorithm(r: BERReader) -> ASN1Result<(ObjectIdentifier, Option<Vec<u8>>)> {
    r.read_sequence(|r| {
        let oid = r.next().read_oid()?;
        let parameters = r.read_optional(|r| r.read_der())?;
        Ok((oid, parameters))
    })
}

/// A BIT STRING of whole bytes (keys and signatures).
fn read_bits(r: BERReader) -> ASN1Result<Vec<u8>> {
    let (bytes, bits) = r.read_bitvec_bytes()?;
    if bits != bytes.len() * 8 {
        return Err(yasna::ASN1Error::new(yasna::ASN1ErrorKind::Invalid));
    }
    Ok(bytes)
}

/// One extension of a certificate.
#[derive(Debug, Clone)]
pub struct Extension {
    /// Its OID's components.
    pub oid: Vec<u64>,
    /// Whether it is marked critical.
    pub critical: bool,
    /// The extension's value (the OCTET STRING's contents), DER.
    pub value: Vec<u8>,
}

/// What the CA reads back from a certificate.
#[derive(Debug, Clone)]
pub struct CertificateFields {
    /// The subject name, DER.
    pub subject: Vec<u8>,
    /// The SubjectPublicKeyInfo, DER.
    pub spki: Vec<u8>,
    /// The extensions, in order.
    pub extensions: Vec<Extension>,
}

/// The NameConstraints extension's OID (RFC 5280, 4.2.1.10).
pub const NAME_CONSTRAINTS: &[u64] = &[2, 5, 29, 30];

impl CertificateFields {
    /// Reads an X.509 certificate (DER).
    pub fn from_der(der: &[u8]) -> Result<Self, String> {
        let fields = yasna::parse_der(der, |r| {
            r.read_sequence(|r| {
                let tbs = r.next().read_sequence(|r| {
                    let mut fields = Vec::new();
                    while let Some(field) = r.read_optional(|r| r.read_der())? {
                        fields.push(field);
                    }
                    Ok(fields)
                })?;
                let _signature_algorithm = r.next().read_der()?;
                let _signature = r.next().read_der()?;
                Ok(tbs)
            })
        })
        .map_err(|e| format!("malformed certificate: {e}"))?;
        // version [0] (optional), serial, signature, issuer, validity, subject, key, then
        // the optional unique IDs [1] [2] and extensions [3].
        let first = usize::from(fields.first().and_then(|f| f.first()) == Some(&0xa0));
        let (Some(subject), Some(spki)) = (fields.get(first + 4), fields.get(first + 5)) else {
            return Err("malformed certificate: too few fields".into());
        };
        let mut extensions = Vec::new();
        if let Some(block) = fields.iter().find(|f| f.first() == Some(&0xa3)) {
            yasna::parse_der(block, |r| {
                r.read_tagged(Tag::context(3), |r| {
                    r.read_sequence_of(|r| {
                        extensions.push(r.read_sequence(|r| {
                            let oid = r.next().read_oid()?.components().clone();
                            let critical = r.read_optional(|r| r.read_bool())?.unwrap_or(false);
                            let value = r.next().read_bytes()?;
                            Ok(Extension {
                                oid,
                                critical,
                                value,
                            })
                        })?);
                        Ok(())
                    })
                })
            })
            .map_err(|e| format!("malformed certificate extensions: {e}"))?;
        }
        Ok(Self {
            subject: subject.clone(),
            spki: spki.clone(),
            extensions,
        })
    }

    /// The extension with this OID, if present.
    pub fn extension(&self, oid: &[u64]) -> Option<&Extension> {
        self.extensions.iter().find(|e| e.oid == oid)
    }
}
