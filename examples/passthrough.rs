//! The floor under scimgate's GET benchmark: the same stack (connections accepted on one
//! runtime and handed in turn to one thread per core, each with a current-thread tokio
//! runtime serving them with hyper's HTTP/1 server and its own keep-alive
//! `hyper::client::conn::http1` connections to the upstream, `TCP_NODELAY`, the answer's
//! body read whole before it is answered) doing no SCIM work at all.
//! Every request is forwarded as it came (method, path and query, `Authorization`), and the
//! upstream's status, `Content-Type` and body are sent back.
//!
//! It is not part of the gateway; `bench/run.sh` measures it beside the nginx hop (unless
//! `--no-floor`), so the GET ratio can be read against what the stack itself costs
//! (BENCHMARKS.md).
//!
//! ```text
//! cargo run --release --example passthrough -- 127.0.0.1:8090 127.0.0.1:8081
//! ```

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

// The gateway's allocator (src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Idle connections to the one upstream, the most recent on top.
struct Forward {
    upstream: SocketAddr,
    host: HeaderValue,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

impl Forward {
    async fn connection(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        loop {
            let idle = self.idle.lock().map_err(|e| e.to_string())?.pop();
            match idle {
                Some(sender) if !sender.is_closed() => return Ok(sender),
                Some(_) => continue,
                None => break,
            }
        }
        let tcp = tokio::net::TcpStream::connect(self.upstream)
            .await
            .map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        Ok(sender)
    }

    async fn forward(&self, request: Request) -> Result<Response, String> {
        let (parts, body) = request.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        let mut upstream = hyper::Request::builder()
            .method(parts.method)
            .uri(parts.uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(header::HOST, self.host.clone());
        if let Some(auth) = parts.headers.get(header::AUTHORIZATION) {
            upstream = upstream.header(header::AUTHORIZATION, auth);
        }
        let upstream = upstream.body(Full::new(body)).map_err(|e| e.to_string())?;
        let mut sender = self.connection().await?;
        sender.ready().await.map_err(|e| e.to_string())?;
        let answer = sender
            .send_request(upstream)
            .await
            .map_err(|e| e.to_string())?;
        let (parts, body) = answer.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(sender);
        }
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = parts.status;
        if let Some(ctype) = parts.headers.get(header::CONTENT_TYPE) {
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, ctype.clone());
        }
        Ok(response)
    }
}

async fn handle(State(forward): State<Arc<Forward>>, request: Request) -> Response {
    match forward.forward(request).await {
        Ok(response) => response,
        Err(why) => (StatusCode::BAD_GATEWAY, why).into_response(),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        return Err("usage: passthrough LISTEN_ADDR UPSTREAM_ADDR".into());
    };
    let listen: SocketAddr = listen.parse()?;
    let upstream: SocketAddr = upstream.parse()?;
    // The gateway's serving threads (src/server/threads.rs): one per core, each with its
    // own upstream connections.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut inboxes = Vec::with_capacity(threads);
    for _ in 0..threads {
        let forward = Arc::new(Forward {
            upstream,
            host: HeaderValue::from_str(&upstream.to_string())?,
            idle: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new().fallback(handle).with_state(forward);
        let (inbox, mut received) = tokio::sync::mpsc::unbounded_channel::<std::net::TcpStream>();
        inboxes.push(inbox);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::spawn(move || {
            runtime.block_on(async move {
                while let Some(stream) = received.recv().await {
                    let Ok(stream) = tokio::net::TcpStream::from_std(stream) else {
                        continue;
                    };
                    let service = tower::ServiceExt::map_request(
                        app.clone(),
                        |request: hyper::Request<hyper::body::Incoming>| request.map(Body::new),
                    );
                    let service = hyper_util::service::TowerToHyperService::new(service);
                    tokio::spawn(
                        hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service),
                    );
                }
            });
        });
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = tokio::net::TcpListener::bind(listen).await?;
            for next in 0.. {
                let (stream, _) = listener.accept().await?;
                let _ = stream.set_nodelay(true);
                let _ = inboxes[next % threads].send(stream.into_std()?);
            }
            Ok::<(), std::io::Error>(())
        })?;
    Ok(())
}
