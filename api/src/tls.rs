//! The workstation listener: TLS that requires a client certificate signed by vigil's
//! workstation CA, and hands each connection's certificate fingerprint to the handlers.
//!
//! Handshakes run on tasks of their own (bounded by a timeout and, like every connection, by
//! the listener's connection limit), so a slow or silent client never holds up the others;
//! finished connections are handed to the server through a channel.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::serve::Accept;

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// SHA-256 of the client certificate it presented (workstation and peer listeners).
    pub certificate: Option<String>,
    /// The node name its certificate was issued for (peer listener: the certificate's common
    /// name, checked against the cluster CA during the handshake).
    pub node: Option<String>,
}

/// The plain listener: TCP with `TCP_NODELAY` (small responses go out at once; Nagle's
/// algorithm against delayed ACKs costs ~40 ms a response otherwise).
pub struct PlainListener(pub TcpListener);

impl Accept for PlainListener {
    type Io = TcpStream;

    async fn accept(
        &mut self,
        permits: &Arc<Semaphore>,
    ) -> (TcpStream, Peer, OwnedSemaphorePermit) {
        let permit = permit(permits).await;
        loop {
            match self.0.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let peer = Peer {
                        addr,
                        certificate: None,
                        node: None,
                    };
                    return (stream, peer, permit);
                }
                Err(e) => accept_failed(e).await,
            }
        }
    }
}

/// A connection's place under its listener's limit.
async fn permit(permits: &Arc<Semaphore>) -> OwnedSemaphorePermit {
    permits
        .clone()
        .acquire_owned()
        .await
        .expect("a listener's semaphore is never closed")
}

/// Waits a moment after a failed accept (such as too many open files), so that the loop does
/// not spin.
async fn accept_failed(e: std::io::Error) {
    tracing::warn!(error = %e, "Accepting a connection failed.");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Whether a listener asks its clients for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Required, and checked against the CA given (the workstation CA on the workstation
    /// listener, the cluster CA on the peer listener).
    Required,
    /// None asked for: the server authenticates itself only (the metadata listener).
    None,
}

/// The TLS server configuration: the server's certificate and, per `client_auth`, client
/// certificates required and checked against `ca_pem`.
pub fn server_config(
    ca_pem: &str,
    cert: &Path,
    key: &Path,
    client_auth: ClientAuth,
) -> Result<Arc<ServerConfig>, anyhow::Error> {
    use anyhow::Context;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(ca.context("CA certificate")?)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .context("client certificate verifier")?;
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("{}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("{}", key.display()))?;
    let builder =
        ServerConfig::builder_with_provider(provider).with_safe_default_protocol_versions()?;
    let builder = match client_auth {
        ClientAuth::Required => builder.with_client_cert_verifier(verifier),
        ClientAuth::None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .context("server certificate")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A listener whose connections are TLS with a verified client certificate.
pub struct TlsListener {
    tcp: Option<(TcpListener, TlsAcceptor)>,
    /// How long a client may take to finish its handshake.
    handshake_timeout: Duration,
    ready: mpsc::Receiver<Shaken>,
    done: mpsc::Sender<Shaken>,
    /// The accept loop, which ends with the listener.
    accepting: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        if let Some(task) = &self.accepting {
            task.abort();
        }
    }
}

/// A connection whose handshake finished.
type Shaken = (TlsStream<TcpStream>, Peer, OwnedSemaphorePermit);

impl TlsListener {
    /// A listener on `tcp` with `config`, whose clients have `handshake_timeout` to finish
    /// their handshake.
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>, handshake_timeout: Duration) -> Self {
        let (done, ready) = mpsc::channel(16);
        Self {
            tcp: Some((tcp, TlsAcceptor::from(config))),
            handshake_timeout,
            ready,
            done,
            accepting: None,
        }
    }
}

impl Accept for TlsListener {
    type Io = TlsStream<TcpStream>;

    /// The first call starts the accept loop, which runs each handshake on a task of its
    /// own under a permit: a connection holds its permit from TCP accept to close.
    async fn accept(&mut self, permits: &Arc<Semaphore>) -> Shaken {
        if let Some((tcp, acceptor)) = self.tcp.take() {
            let (permits, done) = (permits.clone(), self.done.clone());
            let timeout = self.handshake_timeout;
            self.accepting = Some(tokio::spawn(async move {
                loop {
                    let permit = permit(&permits).await;
                    let (stream, addr) = match tcp.accept().await {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            accept_failed(e).await;
                            continue;
                        }
                    };
                    // As on the plain listener: no Nagle delay on small responses.
                    let _ = stream.set_nodelay(true);
                    let (acceptor, done) = (acceptor.clone(), done.clone());
                    tokio::spawn(async move {
                        let shaken = tokio::time::timeout(timeout, acceptor.accept(stream)).await;
                        let tls = match shaken {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(e)) => {
                                // Anyone can cause one: not worth more than a debug line.
                                tracing::debug!(%addr, error = %e, "A TLS handshake was refused.");
                                return;
                            }
                            Err(_) => return,
                        };
                        let first = tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|chain| chain.first());
                        let peer = Peer {
                            addr,
                            certificate: first
                                .map(|der| vigil_access::workstation::fingerprint(der)),
                            node: first
                                .and_then(|der| vigil_access::cluster::node_name(der))
                                .filter(|name| vigil_access::cluster::valid_node_name(name)),
                        };
                        let _ = done.send((tls, peer, permit)).await;
                    });
                }
            }));
        }
        match self.ready.recv().await {
            Some(conn) => conn,
            // The listener holds a sender, so the channel never closes.
            None => std::future::pending().await,
        }
    }
}
