//! The HTTP server: hyper's HTTP/1 server on a current-thread runtime per worker, each worker
//! with its own `SO_REUSEPORT` listener on the one address (the kernel spreads the connections),
//! and nothing shared between workers on a request's way. A connection is read by the server's
//! own path for metered calls first (`lean`), which answers the common metered call straight
//! from the socket; at the first request it does not take, hyper's server takes the connection
//! over. A metered call (`/api/v1/...`) is answered in hyper's own types, end to end
//! (`front.rs`); every other request goes to the actix-web application, which each worker
//! builds and calls in process (`actix_app.rs`).
//!
//! Stopping (SIGINT, SIGTERM or a `ServerHandle`): the listeners close, each connection ends
//! after the request it is serving (`graceful`), and the workers end once their connections
//! have, or after `grace` whatever is left.

mod actix_app;
mod affinity;
mod front;
mod lean;
mod worker;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::watch;

pub use actix_app::AppFactory;
pub use front::Gateway;

/// How many connections may wait to be accepted on each listener.
const BACKLOG: i32 = 1024;

/// The listeners of `address`, one per worker: the first binds it (port 0: a free port), the
/// others the same port, all with `SO_REUSEPORT`.
pub fn bind(address: SocketAddr, workers: usize) -> anyhow::Result<Vec<TcpListener>> {
    let mut listeners: Vec<TcpListener> = Vec::with_capacity(workers);
    for _ in 0..workers.max(1) {
        let address = listeners
            .first()
            .map_or(Ok(address), TcpListener::local_addr)?;
        let socket = Socket::new(
            Domain::for_address(address),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket
            .bind(&address.into())
            .with_context(|| format!("cannot bind {address}"))?;
        socket.listen(BACKLOG)?;
        listeners.push(socket.into());
    }
    Ok(listeners)
}

/// What the workers and the handles share: the order to stop, and how many workers ended.
struct Control {
    /// None while serving; `Some(graceful)` once told to stop.
    stop: watch::Sender<Option<bool>>,
    ended: watch::Sender<usize>,
    workers: usize,
}

impl Control {
    fn stop(&self, graceful: bool) {
        // A second order may make a graceful stop immediate, never the other way round.
        self.stop.send_if_modified(|order| match order {
            Some(false) => false,
            Some(true) if graceful => false,
            _ => {
                *order = Some(graceful);
                true
            }
        });
    }

    async fn stopped(&self) {
        let mut ended = self.ended.subscribe();
        let _ = ended.wait_for(|ended| *ended >= self.workers).await;
    }
}

/// The running server: its workers run on threads of their own; awaiting `run` waits for a
/// stop signal or a handle's order, then for the workers to end.
pub struct Server {
    control: Arc<Control>,
}

/// Stops the server from elsewhere (tests, an embedding program).
#[derive(Clone)]
pub struct ServerHandle {
    control: Arc<Control>,
}

impl ServerHandle {
    /// Orders the stop at once; the future waits until every worker has ended.
    pub fn stop(&self, graceful: bool) -> impl Future<Output = ()> + use<> {
        self.control.stop(graceful);
        let control = self.control.clone();
        async move { control.stopped().await }
    }
}

impl Server {
    /// Starts a worker per listener; each builds its own copy of the application. With
    /// `pin_workers`, several workers run on a core each (`affinity.rs`).
    pub fn start(
        listeners: Vec<TcpListener>,
        app: AppFactory,
        gateway: Gateway,
        grace: Duration,
        pin_workers: bool,
    ) -> anyhow::Result<Server> {
        let cores = if pin_workers {
            affinity::plan(listeners.len(), &affinity::allowed_cores())
        } else {
            Vec::new()
        };
        if !cores.is_empty() {
            tracing::info!(cores = ?cores, "HTTP workers pinned to a core each");
        }
        let control = Arc::new(Control {
            stop: watch::Sender::new(None),
            ended: watch::Sender::new(0),
            workers: listeners.len(),
        });
        for (index, listener) in listeners.into_iter().enumerate() {
            let worker = worker::Worker {
                listener,
                app: app.clone(),
                gateway: gateway.clone(),
                stop: control.stop.subscribe(),
                grace,
            };
            let control = control.clone();
            let core = cores.get(index).copied();
            std::thread::Builder::new()
                .name(format!("http-worker-{index}"))
                .spawn(move || {
                    if let Some(core) = core {
                        affinity::pin_current_thread(core);
                    }
                    worker.run();
                    control.ended.send_modify(|ended| *ended += 1);
                })
                .context("cannot start an HTTP worker thread")?;
        }
        Ok(Server { control })
    }

    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            control: self.control.clone(),
        }
    }

    /// Serves until SIGINT or SIGTERM (a graceful stop) or a handle's order, and until the
    /// workers have ended.
    pub async fn run(self) -> anyhow::Result<()> {
        tokio::select! {
            signal = stop_signal() => {
                signal?;
                tracing::info!("stop signal received: finishing the requests in flight");
                self.control.stop(true);
            }
            () = self.control.stopped() => {}
        }
        self.control.stopped().await;
        Ok(())
    }
}

async fn stop_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        interrupt = tokio::signal::ctrl_c() => interrupt?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
