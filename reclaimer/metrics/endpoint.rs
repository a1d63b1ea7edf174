//! The `--metrics-addr` HTTP server: axum's router on hyper's HTTP/1
//! connections. `GET /metrics` (and `HEAD`, without a body) answers in
//! OpenMetrics or the Prometheus text format, as the `Accept` header asks;
//! any other path is 404, any other method 405.
//!
//! The accept loop is ours rather than `axum::serve`'s so that a failed
//! accept (e.g. EMFILE when the process is out of descriptors) is logged in
//! our words and survived, and so that each connection gets hyper's header
//! read timeout and an overall deadline: a client that connects and stalls
//! cannot hold a descriptor for long.

use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};

use crate::metrics::{Format, Metrics};

/// How long a client may take to send its request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one connection may last in all (one request: keep-alive is off).
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept: the usual cause (no descriptors left) clears
/// only when connections close, so retrying at once would spin.
const ACCEPT_RETRY: Duration = Duration::from_secs(1);

/// Error starting the metrics server: the address cannot be bound (in use,
/// not local, no permission).
#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {addr}: {source}")]
pub struct ServeError {
    /// `--metrics-addr`.
    pub addr: SocketAddr,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// A bound metrics listener, not yet serving.
pub struct MetricsServer {
    listener: TcpListener,
    app: Router,
    timeouts: Timeouts,
}

/// Per-connection limits.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    header_read: Duration,
    connection: Duration,
}

impl MetricsServer {
    /// Binds `addr` now, so that a bad address stops the reclaimer at start.
    pub async fn bind(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<Self, ServeError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError { addr, source })?;
        Ok(Self {
            listener,
            // `/metrics` only; axum answers 404 elsewhere, 405 (with `Allow`)
            // for other methods, and `HEAD` like `GET` without the body.
            app: Router::new()
                .route("/metrics", get(scrape))
                .with_state(metrics),
            timeouts: Timeouts {
                header_read: HEADER_READ_TIMEOUT,
                connection: CONNECTION_TIMEOUT,
            },
        })
    }

    /// Serves until the process ends. A failed accept is logged once per
    /// streak, retried after [`ACCEPT_RETRY`], and its end logged too.
    pub async fn run(self) {
        let addr = self.listener.local_addr().ok();
        tracing::info!(addr = ?addr, "serving metrics on /metrics");
        let mut failures = 0u64;
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    if failures > 0 {
                        tracing::info!(
                            failed_accepts = failures,
                            "metrics server: accepting connections again"
                        );
                        failures = 0;
                    }
                    tokio::spawn(serve_connection(stream, self.app.clone(), self.timeouts));
                }
                // The client gave up before we took it: nothing to wait for.
                Err(e)
                    if matches!(
                        e.kind(),
                        ConnectionAborted | ConnectionReset | ConnectionRefused
                    ) => {}
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(
                            "metrics server: cannot accept a connection ({e}); \
                             retrying every {ACCEPT_RETRY:?}"
                        );
                    }
                    tokio::time::sleep(ACCEPT_RETRY).await;
                }
            }
        }
    }
}

/// One connection, one request: keep-alive is off (a scrape every few
/// seconds gains nothing from it, and an idle connection would hold a
/// descriptor), and the whole exchange has a deadline.
async fn serve_connection(stream: TcpStream, app: Router, timeouts: Timeouts) {
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
    match tokio::time::timeout(timeouts.connection, conn).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!("metrics connection: {e}"),
        Err(_) => tracing::debug!(
            "metrics connection timed out after {:?}",
            timeouts.connection
        ),
    }
}

async fn scrape(
    State(metrics): State<Arc<Metrics>>,
    headers: HeaderMap,
) -> ([(header::HeaderName, &'static str); 1], String) {
    let format = Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    (
        [(header::CONTENT_TYPE, format.content_type())],
        metrics.encode(format),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn exchange(addr: SocketAddr, request: &str) -> String {
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        conn.read_to_string(&mut out).await.unwrap();
        out
    }

    /// A server on a free loopback port with `timeouts`, running.
    async fn server_with(timeouts: Timeouts) -> SocketAddr {
        let metrics = Arc::new(Metrics::new());
        let mut server = MetricsServer::bind("127.0.0.1:0".parse().unwrap(), metrics)
            .await
            .unwrap();
        server.timeouts = timeouts;
        let addr = server.listener.local_addr().unwrap();
        tokio::spawn(server.run());
        addr
    }

    async fn server() -> SocketAddr {
        server_with(Timeouts {
            header_read: HEADER_READ_TIMEOUT,
            connection: CONNECTION_TIMEOUT,
        })
        .await
    }

    #[tokio::test]
    async fn routes_methods_and_formats() {
        let addr = server().await;
        let get = exchange(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(get.starts_with("HTTP/1.1 200 OK\r\n"), "{get}");
        assert!(
            get.contains("content-type: text/plain; version=0.0.4"),
            "{get}"
        );
        assert!(get.contains("\nexecwatch_reclaimer_up 1\n"), "{get}");

        let open = exchange(
            addr,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text; version=1.0.0\r\n\r\n",
        )
        .await;
        assert!(
            open.contains("content-type: application/openmetrics-text; version=1.0.0"),
            "{open}"
        );
        assert!(open.ends_with("# EOF\n"), "{open}");

        let head = exchange(addr, "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "no body: {head}");

        let other = exchange(addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(other.starts_with("HTTP/1.1 404 Not Found\r\n"), "{other}");
        let post = exchange(
            addr,
            "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
        assert!(
            post.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{post}"
        );
        assert!(
            post.to_ascii_lowercase().contains("allow: get,head"),
            "{post}"
        );
    }

    /// A client that stalls mid-request, or sends nothing, is cut off.
    #[tokio::test]
    async fn a_stalled_client_is_cut_off() {
        let short = Duration::from_millis(300);
        for (timeouts, sends) in [
            (
                Timeouts {
                    header_read: short,
                    connection: CONNECTION_TIMEOUT,
                },
                "GET /metr",
            ),
            (
                Timeouts {
                    header_read: HEADER_READ_TIMEOUT,
                    connection: short,
                },
                "",
            ),
        ] {
            let addr = server_with(timeouts).await;
            let mut conn = TcpStream::connect(addr).await.unwrap();
            conn.write_all(sends.as_bytes()).await.unwrap();
            let mut buf = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(3), conn.read_to_end(&mut buf));
            assert!(read.await.is_ok(), "{timeouts:?}: still open after 3s");
        }
    }

    #[tokio::test]
    async fn a_bound_address_is_refused_at_bind() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = MetricsServer::bind(addr, Arc::new(Metrics::new()))
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }
}
