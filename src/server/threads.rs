//! Plain-HTTP SCIM connections served on threads of their own: one per core, each with a
//! single-threaded runtime and its own stack of idle upstream connections.
//!
//! On the work-stealing runtime a request and the upstream connection it borrowed could
//! run on different workers (a call then crosses threads to the connection's task and
//! back), and both workers wrote to the same run queues and pool. Here a connection, its
//! requests, the upstream connections they use and their timers all stay on one thread:
//! the pass-through floor served 7–17% more requests/s that way, and 5–13% fewer when the
//! threads shared one stack of upstream connections (BENCHMARKS.md, "Thread per core").
//!
//! The main runtime accepts and hands each connection to the next thread in turn; it
//! keeps everything else (TLS connections — a TLS stream cannot move to another
//! runtime —, the admin listener, reloads, signals).

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::sync::{mpsc, oneshot, watch};
use tower::{Service, ServiceExt};

/// The serving threads of one listener.
pub(super) struct Threads {
    inboxes: Vec<mpsc::UnboundedSender<std::net::TcpStream>>,
    next: usize,
    stop: watch::Sender<bool>,
    finished: Vec<oneshot::Receiver<()>>,
}

impl Threads {
    /// Starts `count` threads serving `app`.
    pub(super) fn start<S>(count: usize, app: S) -> std::io::Result<Threads>
    where
        S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
        S::Future: Send + 'static,
    {
        let (stop, _) = watch::channel(false);
        let mut threads = Threads {
            inboxes: Vec::with_capacity(count),
            next: 0,
            stop,
            finished: Vec::with_capacity(count),
        };
        for index in 0..count.max(1) {
            let (inbox, received) = mpsc::unbounded_channel();
            let (done, finished) = oneshot::channel();
            let stop = threads.stop.subscribe();
            let app = app.clone();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            std::thread::Builder::new()
                .name(format!("scimgate-serve-{index}"))
                .spawn(move || {
                    // Upstream connections made and reused on this thread stay on it.
                    crate::upstream::use_pool_shard(index + 1);
                    runtime.block_on(serve_connections(received, stop, app));
                    let _ = done.send(());
                })?;
            threads.inboxes.push(inbox);
            threads.finished.push(finished);
        }
        Ok(threads)
    }

    /// Hands an accepted connection to the next thread.
    pub(super) fn hand(&mut self, stream: tokio::net::TcpStream) {
        // As from nginx (`tcp_nodelay on`): with Nagle, the tail of an answer longer
        // than one segment waits for the client to acknowledge the rest.
        let _ = stream.set_nodelay(true);
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "could not hand over a connection");
                return;
            }
        };
        let index = self.next % self.inboxes.len();
        self.next = self.next.wrapping_add(1);
        // A thread that is gone has stopped serving; the connection is closed.
        let _ = self.inboxes[index].send(stream);
    }

    /// Stops taking connections, lets every thread finish its requests in flight (idle
    /// keep-alive connections are closed), and waits for them.
    pub(super) async fn drain(self) {
        let _ = self.stop.send(true);
        drop(self.inboxes);
        for finished in self.finished {
            let _ = finished.await;
        }
    }
}

/// One thread's loop: serves the connections it is handed until told to stop, then waits
/// for them to finish.
async fn serve_connections<S>(
    mut received: mpsc::UnboundedReceiver<std::net::TcpStream>,
    mut stop: watch::Receiver<bool>,
    app: S,
) where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    // Every connection holds a receiver; `closed` resolves when the last one is gone.
    let (all_closed, open) = watch::channel(());
    let told_to_stop = stop.clone();
    loop {
        tokio::select! {
            stream = received.recv() => {
                let Some(stream) = stream else { break };
                let stream = match tokio::net::TcpStream::from_std(stream) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not take over a connection");
                        continue;
                    }
                };
                let service = app
                    .clone()
                    .map_request(|request: hyper::Request<Incoming>| request.map(Body::new));
                tokio::spawn(serve_connection(
                    stream,
                    TowerToHyperService::new(service),
                    told_to_stop.clone(),
                    open.clone(),
                ));
            }
            _ = stop.wait_for(|stop| *stop) => break,
        }
    }
    drop(open);
    all_closed.closed().await;
}

async fn serve_connection<S>(
    stream: tokio::net::TcpStream,
    service: TowerToHyperService<S>,
    mut stop: watch::Receiver<bool>,
    _open: watch::Receiver<()>,
) where
    S: Service<hyper::Request<Incoming>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let connection =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let mut stopping = false;
    loop {
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(e) = served {
                    tracing::trace!(error = %e, "connection ended");
                }
                break;
            }
            _ = stop.wait_for(|stop| *stop), if !stopping => {
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}
