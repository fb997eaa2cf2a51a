//! The gateway's keep-alive connections to providers: a pool per worker thread, used only by
//! that thread's calls, over hyper's HTTP/1 client connections. It replaces hyper-util's pooled
//! client, which on every call cloned the pool key and the URI, hashed the key with SipHash
//! under the pool's mutex, and spawned a task that waited for the connection to be idle again
//! before it went back (`bench/HISTORY.md`). Here a connection goes back to its thread's pool
//! when the call's answer has been read to its end, without a task; an answer left unread
//! closes it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use actix_web::web::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tower_service::Service;

/// What the gateway sends a provider as a request body.
pub type RequestBody = BoxBody<Bytes, std::io::Error>;
type Sender = http1::SendRequest<RequestBody>;

/// How long an idle connection is kept for the next call.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// How long connecting to a provider may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::new());
}

struct Pool {
    connector: HttpsConnector<HttpConnector>,
    /// A slot per origin (`scheme://authority`), found by its name once per call.
    slots: HashMap<String, usize, foldhash::fast::RandomState>,
    /// Each slot's idle connections, the most recently used last.
    idle: Vec<Vec<Idle>>,
}

struct Idle {
    sender: Sender,
    since: Instant,
}

impl Pool {
    fn new() -> Pool {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .expect("ring's default protocol versions are valid")
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Pool {
            connector,
            slots: HashMap::default(),
            idle: Vec::new(),
        }
    }

    fn slot(&mut self, origin: &str) -> usize {
        if let Some(slot) = self.slots.get(origin) {
            return *slot;
        }
        self.idle.push(Vec::new());
        self.slots.insert(origin.to_owned(), self.idle.len() - 1);
        self.idle.len() - 1
    }

    /// The most recently used idle connection of `slot` that is still open and fresh; the
    /// stale ones found on the way are closed.
    fn take(&mut self, slot: usize, now: Instant) -> Option<Sender> {
        let idle = &mut self.idle[slot];
        while let Some(connection) = idle.pop() {
            if !connection.sender.is_closed() && now - connection.since < KEEP_ALIVE {
                return Some(connection.sender);
            }
        }
        None
    }

    fn put(&mut self, slot: usize, sender: Sender) {
        let idle = &mut self.idle[slot];
        let now = Instant::now();
        // The oldest first: one that outlived the keep-alive is dropped here, so a pool that
        // once served a crowd does not keep its sockets open forever.
        if idle
            .first()
            .is_some_and(|oldest| now - oldest.since >= KEEP_ALIVE)
        {
            idle.remove(0);
        }
        idle.push(Idle { sender, since: now });
    }
}

/// A connection busy with one call. `release` it once the answer's body has been read to its
/// end; dropped otherwise, it closes.
pub struct Connection {
    slot: usize,
    sender: Sender,
}

impl Connection {
    pub fn release(self) {
        // Off a worker (never, but harmless): the connection is simply closed.
        let _ = POOL.try_with(|pool| pool.borrow_mut().put(self.slot, self.sender));
    }
}

/// Where a request goes: the origin that names its pool, and the URI to connect to.
pub struct Origin<'a> {
    pub name: &'a str,
    pub uri: &'a http::Uri,
}

/// Sends `request` (in origin form) on an idle connection to `origin`, or a new one. A request
/// that an idle connection closed under before it was sent goes again on another, as
/// hyper-util did; one that failed on a new connection is an error.
pub async fn send(
    origin: Origin<'_>,
    mut request: http::Request<RequestBody>,
    now: Instant,
) -> Result<(http::Response<Incoming>, Connection), String> {
    let slot = POOL.with(|pool| pool.borrow_mut().slot(origin.name));
    loop {
        let idle = POOL.with(|pool| pool.borrow_mut().take(slot, now));
        let reused = idle.is_some();
        let mut sender = match idle {
            Some(sender) => sender,
            None => connect(origin.uri).await?,
        };
        if let Err(error) = sender.ready().await {
            if reused {
                continue;
            }
            return Err(chain(&error));
        }
        match sender.try_send_request(request).await {
            Ok(response) => return Ok((response, Connection { slot, sender })),
            Err(mut error) => match error.take_message() {
                Some(unsent) if reused => request = unsent,
                _ => return Err(chain(error.error())),
            },
        }
    }
}

/// A new connection to `uri`'s origin, driven by a task on this worker.
async fn connect(uri: &http::Uri) -> Result<Sender, String> {
    let mut connector = POOL.with(|pool| pool.borrow().connector.clone());
    std::future::poll_fn(|cx| connector.poll_ready(cx))
        .await
        .map_err(|error| format!("connect: {}", chain(&*error)))?;
    let stream: MaybeHttpsStream<TokioIo<tokio::net::TcpStream>> = connector
        .call(uri.clone())
        .await
        .map_err(|error| format!("connect: {}", chain(&*error)))?;
    let (sender, connection) = http1::handshake(stream)
        .await
        .map_err(|error| chain(&error))?;
    actix_web::rt::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(error = %chain(&error), "an upstream connection ended");
        }
    });
    Ok(sender)
}

/// An error with its causes (hyper's own text often says only what kind of error it was).
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}
