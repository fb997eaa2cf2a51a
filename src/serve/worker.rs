//! A worker: one thread, one current-thread runtime, one listener, and its connections as tasks
//! on the same thread, so that a request never crosses cores and nothing on its way takes a
//! lock another worker takes.

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::pin::pin;
use std::rc::Rc;
use std::task::Waker;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use slab::Slab;
use tokio::sync::watch;

use super::AppFactory;
use super::front::{Front, Gateway};
use super::lean;

/// How long a client may take to send a request's head, and how long an idle keep-alive
/// connection stays open (actix's defaults, which the service had before).
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// The most a request's head may hold (actix's limit, which the service had before): a larger
/// one is answered 431.
const MAX_HEAD: usize = 32 * 1024;
/// The most the read buffer holds.
const MAX_BUFFER: usize = 64 * 1024;
/// How often a stopping worker looks whether its connections have ended (and a full one
/// whether it may accept again).
const DRAIN_POLL: Duration = Duration::from_millis(10);
/// The most connections a worker serves at once (actix's default, which the service had
/// before): past it, new ones wait in the listener's backlog.
const MAX_CONNECTIONS: usize = 25_000;

pub(super) struct Worker {
    pub listener: TcpListener,
    pub app: AppFactory,
    pub gateway: Gateway,
    pub stop: watch::Receiver<Option<bool>>,
    pub grace: Duration,
}

impl Worker {
    /// Serves until told to stop; returns once its connections have ended (or were dropped).
    pub fn run(self) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                tracing::error!(error = %error, "an HTTP worker cannot start its runtime");
                return;
            }
        };
        let local = tokio::task::LocalSet::new();
        local.block_on(&runtime, self.serve());
    }

    async fn serve(mut self) {
        let app = match self.app.build().await {
            Ok(app) => app,
            Err(error) => {
                tracing::error!(error = %error, "an HTTP worker cannot build the application");
                return;
            }
        };
        let listener = match tokio::net::TcpListener::from_std(self.listener) {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(error = %error, "an HTTP worker cannot listen");
                return;
            }
        };
        let front = Rc::new(Front::new(app, self.gateway));
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(HEAD_TIMEOUT)
            .max_header_size(MAX_HEAD)
            .max_buf_size(MAX_BUFFER)
            // A client that hangs up does not cancel its call: once a metered call has reached its
            // provider, it is charged as the provider answered (as actix did too).
            .half_close(true);
        let http1 = Rc::new(http1);
        let connections = Rc::new(Connections::default());

        let graceful = loop {
            let full = connections.live() >= MAX_CONNECTIONS;
            tokio::select! {
                biased;
                changed = self.stop.changed() => match changed {
                    Ok(()) => match *self.stop.borrow_and_update() {
                        Some(graceful) => break graceful,
                        None => continue,
                    },
                    Err(_) => break false,
                },
                () = tokio::time::sleep(DRAIN_POLL), if full => {}
                accepted = listener.accept(), if !full => match accepted {
                    Ok((stream, peer)) => {
                        // Answers go out as soon as they are written, as actix's server did.
                        let _ = stream.set_nodelay(true);
                        tokio::task::spawn_local(serve_connection(
                            stream,
                            peer,
                            front.clone(),
                            http1.clone(),
                            connections.clone(),
                        ));
                    }
                    Err(error) => {
                        // Out of descriptors, most likely: wait rather than spin.
                        tracing::warn!(error = %error, "accepting a connection failed");
                        tokio::time::sleep(DRAIN_POLL).await;
                    }
                },
            }
        };
        drop(listener);
        if !graceful {
            return;
        }
        connections.stop();
        let deadline = tokio::time::Instant::now() + self.grace;
        while connections.live() > 0 && tokio::time::Instant::now() < deadline {
            tokio::select! {
                _ = self.stop.changed() => {
                    if *self.stop.borrow_and_update() == Some(false) {
                        return;
                    }
                }
                () = tokio::time::sleep(DRAIN_POLL) => {}
            }
        }
    }
}

/// Serves one connection's requests until it closes, or until its worker stops (then after
/// the request in flight, if any): metered calls on the server's own path as long as they
/// come (`lean`), then hyper's server for the rest of the connection.
async fn serve_connection(
    mut stream: tokio::net::TcpStream,
    peer: SocketAddr,
    front: Rc<Front>,
    http1: Rc<http1::Builder>,
    connections: Rc<Connections>,
) {
    let slot = connections.enter();
    let served = {
        let mut lean = pin!(lean::serve(
            &mut stream,
            peer,
            &front,
            &connections.stopping,
            HEAD_TIMEOUT,
            MAX_HEAD,
        ));
        std::future::poll_fn(|cx| {
            connections.remember(slot, cx.waker());
            lean.as_mut().poll(cx)
        })
        .await
    };
    match served {
        Ok(lean::Served::Ended) => {}
        Ok(lean::Served::Elsewhere(read)) => {
            let io = lean::Rewind::new(read, stream);
            serve_with_hyper(io, peer, front, &http1, &connections, slot).await;
        }
        Err(error) => tracing::debug!(error = %error, "a client connection ended with an error"),
    }
    connections.leave(slot);
}

async fn serve_with_hyper(
    io: lean::Rewind,
    peer: SocketAddr,
    front: Rc<Front>,
    http1: &http1::Builder,
    connections: &Connections,
    slot: usize,
) {
    let service = hyper::service::service_fn(move |request| {
        let front = front.clone();
        async move { Ok::<_, Infallible>(front.answer(request, peer).await) }
    });
    let mut connection = pin!(http1.serve_connection(TokioIo::new(io), service));
    let mut stopping = false;
    let ended = std::future::poll_fn(|cx| {
        if !stopping && connections.stopping.get() {
            stopping = true;
            connection.as_mut().graceful_shutdown();
        }
        connections.remember(slot, cx.waker());
        connection.as_mut().poll(cx)
    })
    .await;
    if let Err(error) = ended {
        tracing::debug!(error = %error, "a client connection ended with an error");
    }
}

/// A worker's live connections: the waker of each, to wake them all when the worker stops.
#[derive(Default)]
struct Connections {
    wakers: RefCell<Slab<Option<Waker>>>,
    stopping: Cell<bool>,
}

impl Connections {
    fn enter(&self) -> usize {
        self.wakers.borrow_mut().insert(None)
    }

    fn remember(&self, slot: usize, waker: &Waker) {
        let mut wakers = self.wakers.borrow_mut();
        if let Some(stored) = wakers.get_mut(slot)
            && !stored
                .as_ref()
                .is_some_and(|stored| stored.will_wake(waker))
        {
            *stored = Some(waker.clone());
        }
    }

    fn leave(&self, slot: usize) {
        self.wakers.borrow_mut().try_remove(slot);
    }

    fn live(&self) -> usize {
        self.wakers.borrow().len()
    }

    /// Each connection ends after the request it is serving.
    fn stop(&self) {
        self.stopping.set(true);
        let wakers: Vec<Waker> = self
            .wakers
            .borrow()
            .iter()
            .filter_map(|(_, waker)| waker.clone())
            .collect();
        for waker in wakers {
            waker.wake();
        }
    }
}
