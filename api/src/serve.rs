//! Serving a listener's connections with hyper, under the limits that keep a flood from the
//! network from holding the server: at most [`Limits::max_connections`] open connections per
//! listener (a listener at its limit stops accepting until one closes, so the kernel's backlog
//! takes the rest), and [`Limits::header_read_timeout`] for a client to send a request's
//! headers, which also closes keep-alive connections left idle that long.
//!
//! On shutdown, listening stops, idle connections close, and requests in flight finish.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::tls::Peer;

/// How much of the server one listener's clients may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections at most.
    pub max_connections: usize,
    /// Time a client has to finish its TLS handshake, and to send a request's headers (and a
    /// keep-alive connection may idle).
    pub header_read_timeout: Duration,
}

/// A source of connections, each with its peer and the permit it holds while open.
pub trait Accept: Send + 'static {
    /// The connection.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// The next connection, once `permits` has room for it.
    fn accept(
        &mut self,
        permits: &Arc<Semaphore>,
    ) -> impl Future<Output = (Self::Io, Peer, OwnedSemaphorePermit)> + Send;
}

/// Serves `listener`'s connections with `app` until `stopped` says to stop, then waits for
/// requests in flight.
pub async fn serve<A: Accept>(
    mut listener: A,
    app: axum::Router,
    limits: Limits,
    mut stopped: watch::Receiver<()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = tokio::task::JoinSet::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    loop {
        let (io, peer, permit) = tokio::select! {
            conn = listener.accept(&permits) => conn,
            _ = stopped.changed() => break,
        };
        let service = hyper::service::service_fn({
            let app = app.clone();
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer.clone()));
                tower_service::Service::call(&mut app.clone(), request)
            }
        });
        let connection = builder
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        let mut stopped = stopped.clone();
        while connections.try_join_next().is_some() {}
        connections.spawn(async move {
            let _permit = permit;
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                _ = stopped.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, "A connection ended with an error.");
            }
        });
    }
    while connections.join_next().await.is_some() {}
}
