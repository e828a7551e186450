//! Serving a listener's connections with hyper, under the limits that keep a flood from the
//! network from holding the server: at most [`Limits::max_connections`] open connections per
//! listener (a listener at its limit stops accepting until one closes, so the kernel's backlog
//! takes the rest), [`Limits::header_read_timeout`] for a client to finish its TLS handshake
//! and send a request's headers (which also closes keep-alive connections left idle that
//! long), and [`Limits::request_timeout`] for the rest of a request, body included (a client
//! trickling a body is answered 408 and its connection closed).
//!
//! On shutdown, listening stops at once, idle connections close, and requests in flight get
//! [`DRAIN`] to finish before their connections are dropped.

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
    /// Time a request has, once its headers are in, to be read and answered.
    pub request_timeout: Duration,
}

/// How long requests in flight may take to finish once the server stops.
pub const DRAIN: Duration = Duration::from_secs(10);

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
                let answer = tower_service::Service::call(&mut app.clone(), request);
                async move {
                    match tokio::time::timeout(limits.request_timeout, answer).await {
                        Ok(answered) => answered,
                        Err(_) => Ok(timed_out()),
                    }
                }
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
    // No more connections: the socket closes (and the TLS accept loop ends) now.
    drop(listener);
    let drained = tokio::time::timeout(DRAIN, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "Requests still in flight after the drain time; their connections are dropped."
        );
        connections.shutdown().await;
    }
}

/// The answer to a request that took longer than [`Limits::request_timeout`] (counted here:
/// its operation's handler never finished).
fn timed_out() -> axum::response::Response {
    use axum::response::IntoResponse;
    metrics::counter!("vigil_api_requests_total", "operation" => "timed_out", "code" => "408")
        .increment(1);
    let body = axum::Json(serde_json::json!({"error": {"code": "request_timeout",
        "message": "the request was not read and answered in time"}}));
    let mut response = (axum::http::StatusCode::REQUEST_TIMEOUT, body).into_response();
    response.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    response
}
