//! Keep-alive HTTP/1.1 connections to the upstream's one origin.
//!
//! The gateway talks to a single origin, so the pool is a stack of idle connections (the
//! most recently used on top, the warmest) rather than hyper-util's general pool keyed by
//! scheme and authority. That pool hashed its key three times per call, spawned a task per
//! call to put the connection back, and added the `Host` header and origin-form target
//! per call; here the caller sends origin-form requests with a `Host` made once, and the
//! connection goes back on the stack as soon as its answer has been read (BENCHMARKS.md).
//!
//! Each connection's I/O runs in its own task (hyper's `Connection`), so a connection the
//! upstream closes while idle is noticed and skipped, and no request is sent on it.
//!
//! The idle connections are kept per serving thread ([`set_shard`]): a connection made on
//! one thread has its task on that thread's runtime, and a request on another thread
//! using it would cross threads twice per call.

use std::cell::Cell;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Uri;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;

thread_local! {
    /// Which of a pool's idle stacks this thread takes from and puts back on.
    static SHARD: Cell<usize> = const { Cell::new(0) };
}

/// Makes this thread use its own idle stack (`shard` > 0 for a serving thread; every
/// other thread shares stack 0).
pub(super) fn set_shard(shard: usize) {
    SHARD.with(|s| s.set(shard));
}

/// How a call failed before its answer began.
#[derive(Debug)]
pub(super) enum SendError {
    /// No connection could be made (refused, unresolvable, TLS failed, or the new
    /// connection closed before the request was written): nothing was sent.
    Connect(String),
    /// The connection broke after the request was handed to it: the upstream may have
    /// received it.
    Broken(hyper::Error),
}

/// An idle connection.
struct Idle {
    sender: SendRequest<Full<Bytes>>,
    since: Instant,
}

/// A connection in use; back on the stack with [`Pool::put`] once its answer is read.
pub(super) struct Conn {
    sender: SendRequest<Full<Bytes>>,
}

/// The connections to one origin.
pub(super) struct Pool {
    connector: HttpsConnector<HttpConnector>,
    /// The origin, what the connector is asked to connect to.
    origin: Uri,
    /// One stack per serving thread and one for the others ([`set_shard`]).
    idle: Box<[Mutex<Vec<Idle>>]>,
    /// At most this many idle connections per stack.
    max_idle: usize,
    idle_timeout: Duration,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("origin", &self.origin)
            .field("max_idle", &self.max_idle)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool connecting to `origin` with `connector`, keeping at most `max_idle` idle
    /// connections per serving thread, each for at most `idle_timeout`.
    pub(super) fn new(
        connector: HttpsConnector<HttpConnector>,
        origin: Uri,
        max_idle: usize,
        idle_timeout: Duration,
    ) -> Pool {
        Pool {
            connector,
            origin,
            idle: (0..=std::thread::available_parallelism().map_or(1, |n| n.get()))
                .map(|_| Mutex::new(Vec::new()))
                .collect(),
            max_idle,
            idle_timeout,
        }
    }

    /// The pool, shared; while it lives, a task (when made inside a runtime) closes the
    /// connections idle past the timeout every half timeout. `put` does the same on the
    /// way, but a gateway that goes quiet makes no `put`, and an upstream that never
    /// closes idle connections itself would keep them open for good.
    pub(super) fn shared(self) -> Arc<Pool> {
        let pool = Arc::new(self);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&pool);
            let period = (pool.idle_timeout / 2).max(Duration::from_millis(10));
            runtime.spawn(async move {
                let mut ticks =
                    tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    let Some(pool) = weak.upgrade() else { break };
                    for stack in &pool.idle {
                        let mut idle = stack.lock().unwrap_or_else(|e| e.into_inner());
                        close_expired(&mut idle, Instant::now(), pool.idle_timeout);
                    }
                }
            });
        }
        pool
    }

    /// The origin every connection goes to.
    pub(super) fn origin(&self) -> &Uri {
        &self.origin
    }

    /// Sends `request` (origin-form target, `Host` set) on an idle connection, or on a new
    /// one when none is idle or every idle one turns out closed. A request an idle
    /// connection could not take (it closed meanwhile) goes to the next one: it was not
    /// sent.
    pub(super) async fn send(
        &self,
        mut request: http::Request<Full<Bytes>>,
    ) -> Result<(Conn, http::Response<Incoming>), SendError> {
        while let Some(mut sender) = self.take_idle() {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((Conn { sender }, response)),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(SendError::Broken(e.into_error())),
                },
            }
        }
        let mut sender = self.connect().await?;
        match sender.try_send_request(request).await {
            Ok(response) => Ok((Conn { sender }, response)),
            Err(mut e) => match e.take_message() {
                Some(_) => Err(SendError::Connect(
                    "the new connection closed before the request was sent".into(),
                )),
                None => Err(SendError::Broken(e.into_error())),
            },
        }
    }

    /// Puts a connection whose answer has been read in full back on the stack, and closes
    /// those at the bottom that have been idle past the timeout: after a burst, steady
    /// lighter traffic only ever takes from the top, and the burst's extra connections
    /// would otherwise stay open until the upstream closed them.
    pub(super) fn put(&self, conn: Conn) {
        if conn.sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.stack().lock().unwrap_or_else(|e| e.into_inner());
        close_expired(&mut idle, now, self.idle_timeout);
        if idle.len() < self.max_idle {
            idle.push(Idle {
                sender: conn.sender,
                since: now,
            });
        }
    }

    /// The most recently used idle connection still open and within the idle timeout;
    /// those past it are closed (dropped) on the way.
    fn take_idle(&self) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.stack().lock().unwrap_or_else(|e| e.into_inner());
        while let Some(conn) = idle.pop() {
            if conn.sender.is_closed() {
                continue;
            }
            if conn.since.elapsed() > self.idle_timeout {
                // Everything below it has been idle longer still.
                idle.clear();
                return None;
            }
            return Some(conn.sender);
        }
        None
    }

    /// This thread's idle stack.
    fn stack(&self) -> &Mutex<Vec<Idle>> {
        &self.idle[SHARD.with(Cell::get) % self.idle.len()]
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, SendError> {
        let io = tower::ServiceExt::oneshot(self.connector.clone(), self.origin.clone())
            .await
            .map_err(|e| SendError::Connect(e.to_string()))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| SendError::Connect(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream connection closed");
            }
        });
        Ok(sender)
    }
}

/// Closes (drops) the connections idle longer than `timeout` at `now`.
fn close_expired(idle: &mut Vec<Idle>, now: Instant, timeout: Duration) {
    // Oldest first, so the expired ones are a prefix.
    let expired = idle
        .iter()
        .take_while(|c| now.duration_since(c.since) > timeout)
        .count();
    if expired > 0 {
        idle.drain(..expired);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::routing::get;
    use http_body_util::BodyExt;

    use super::*;

    async fn call(pool: &Pool, host: &str) -> Conn {
        let request = http::Request::builder()
            .uri("/")
            .header(http::header::HOST, host)
            .body(Full::new(Bytes::new()))
            .expect("a valid request");
        let (conn, response) = pool.send(request).await.expect("an answer");
        response.into_body().collect().await.expect("a body");
        conn
    }

    /// A loopback server answering `GET /`, and a pool to it (not yet shared).
    async fn serve_and_pool(idle_timeout: Duration) -> (String, Pool) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let host = listener.local_addr().expect("an address").to_string();
        let app = axum::Router::new().route("/", get(|| async { "ok" }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let connector = super::super::connector(Duration::from_secs(1)).expect("a connector");
        let origin: Uri = format!("http://{host}").parse().expect("a URI");
        (host, Pool::new(connector, origin, 8, idle_timeout))
    }

    fn idle_count(pool: &Pool) -> usize {
        pool.idle
            .iter()
            .map(|stack| stack.lock().map(|idle| idle.len()).unwrap_or_default())
            .sum()
    }

    /// A connection left at the bottom of the stack past the idle timeout is closed when
    /// another goes back, even though calls keep finding a fresh one on top.
    #[tokio::test]
    async fn connections_idle_past_the_timeout_are_closed_when_another_goes_back() {
        let (host, pool) = serve_and_pool(Duration::from_millis(300)).await;

        // Two calls at once: two connections, both idle afterwards.
        let (a, b) = tokio::join!(call(&pool, &host), call(&pool, &host));
        pool.put(a);
        pool.put(b);
        assert_eq!(idle_count(&pool), 2);

        // The top one keeps being used; the bottom one ages past the timeout.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let conn = call(&pool, &host).await;
            pool.put(conn);
        }
        assert_eq!(
            idle_count(&pool),
            1,
            "the connection idle for 450 ms is closed"
        );
    }

    /// With no calls at all after a burst, the idle connections are closed anyway once
    /// past the timeout.
    #[tokio::test]
    async fn a_quiet_pool_closes_its_idle_connections_past_the_timeout() {
        let (host, pool) = serve_and_pool(Duration::from_millis(400)).await;
        let pool = pool.shared();
        let (a, b) = tokio::join!(call(&pool, &host), call(&pool, &host));
        pool.put(a);
        pool.put(b);
        assert_eq!(idle_count(&pool), 2);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(idle_count(&pool), 2, "not yet past the timeout");
        // Past it by at least one period (200 ms) more.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(idle_count(&pool), 0, "closed without another call");
    }
}
