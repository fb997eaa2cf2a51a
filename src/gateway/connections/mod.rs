//! The gateway's keep-alive connections to providers: a pool per worker thread, used only by
//! that thread's calls. A call writes its request and reads the answer on the connection
//! itself (`wire`), with no task between it and the socket; the connection goes back to its
//! thread's pool once the answer's body has been read to its end, and an answer left unread
//! closes it.

mod answer_body;
mod exchange;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web::Bytes;
use http_body_util::combinators::BoxBody;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use super::wire::{BodyFraming, ProviderStream};
pub use answer_body::UpstreamBody;
use exchange::{Failure, ProviderConnection};

/// What the gateway sends a provider as a request body.
pub type RequestBody = BoxBody<Bytes, std::io::Error>;

/// How long an idle connection is kept for the next call.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// How long connecting to a provider may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

#[derive(Default)]
struct Pool {
    /// Made on the first call to an `https` provider.
    tls: Option<TlsConnector>,
    /// A slot per origin (`scheme://authority`), found by its name once per call.
    slots: HashMap<String, usize, foldhash::fast::RandomState>,
    /// Each slot's idle connections, the most recently used last.
    idle: Vec<Vec<Idle>>,
}

struct Idle {
    connection: ProviderConnection,
    since: Instant,
}

impl Pool {
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
    fn take(&mut self, slot: usize, now: Instant) -> Option<ProviderConnection> {
        let idle = &mut self.idle[slot];
        while let Some(mut idle) = idle.pop() {
            if now - idle.since < KEEP_ALIVE && idle.connection.stream.idle_and_open() {
                return Some(idle.connection);
            }
        }
        None
    }

    fn put(&mut self, connection: ProviderConnection) {
        let idle = &mut self.idle[connection.slot];
        let now = Instant::now();
        // The oldest first: one that outlived the keep-alive is dropped here, so a pool that
        // once served a crowd does not keep its sockets open forever.
        if idle
            .first()
            .is_some_and(|oldest| now - oldest.since >= KEEP_ALIVE)
        {
            idle.remove(0);
        }
        idle.push(Idle {
            connection,
            since: now,
        });
    }

    fn tls(&mut self) -> TlsConnector {
        self.tls.get_or_insert_with(tls_connector).clone()
    }
}

/// rustls with ring and Mozilla's roots, like the rest of the tree, speaking HTTP/1.1.
fn tls_connector() -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring's default protocol versions are valid")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// Where a provider's calls go: the origin that names its pool, and how to reach it.
#[derive(Clone, Debug)]
pub struct Address {
    /// `scheme://authority`.
    pub origin: String,
    /// The host to connect to (an IPv6 address without its brackets) and to name in TLS.
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

/// A request as the connection sends it.
pub struct Request {
    pub head: Vec<u8>,
    pub body: Option<(RequestBody, BodyFraming)>,
    /// The request is `HEAD`: its answer has no body.
    pub to_head: bool,
    /// May go again on a new connection when a reused one closed before it was answered: a
    /// request without a body whose method is idempotent.
    pub retryable: bool,
}

/// Sends `request` on an idle connection to `address`, or a new one, and reads the answer's
/// head. A request that an idle connection closed under before it was sent goes again on
/// another (as hyper-util's client did), and so does a retryable one that it closed under
/// unanswered; one that failed on a new connection is an error.
pub async fn send(
    address: &Address,
    mut request: Request,
    now: Instant,
) -> Result<(http::response::Parts, UpstreamBody), String> {
    let slot = POOL.with(|pool| pool.borrow_mut().slot(&address.origin));
    loop {
        let idle = POOL.with(|pool| pool.borrow_mut().take(slot, now));
        let reused = idle.is_some();
        let mut connection = match idle {
            Some(connection) => connection,
            None => connect(address, slot).await?,
        };
        let body = request
            .body
            .as_mut()
            .map(|(body, framing)| (body, *framing));
        match connection
            .exchange(&request.head, body, request.to_head)
            .await
        {
            Ok(answer) => {
                let body = UpstreamBody::new(connection, answer.framing, answer.reusable);
                return Ok((answer.parts, body));
            }
            Err(Failure::Unanswered(_)) if reused && request.retryable => {}
            Err(Failure::Unanswered(why) | Failure::Broken(why)) => return Err(why),
        }
    }
}

/// A new connection to `address`.
async fn connect(address: &Address, slot: usize) -> Result<ProviderConnection, String> {
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect((address.host.as_str(), address.port)),
    )
    .await
    .map_err(|_| format!("connect: no connection within {CONNECT_TIMEOUT:?}"))?
    .map_err(|error| format!("connect: {error}"))?;
    // Requests go out as soon as they are written.
    let _ = tcp.set_nodelay(true);
    let stream = if address.tls {
        let name = rustls::pki_types::ServerName::try_from(address.host.clone())
            .map_err(|error| format!("connect: {error}"))?;
        let connector = POOL.with(|pool| pool.borrow_mut().tls());
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|error| format!("connect: TLS: {error}"))?;
        ProviderStream::Tls(Box::new(tls))
    } else {
        ProviderStream::Plain(tcp)
    };
    Ok(ProviderConnection::new(stream, slot))
}
