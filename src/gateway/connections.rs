//! The gateway's keep-alive connections to providers: a pool per worker thread, used only by
//! that thread's calls. A call writes its request and reads the answer on the connection
//! itself (`wire`), with no task between it and the socket; the connection goes back to its
//! thread's pool once the answer's body has been read to its end, and an answer left unread
//! closes it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::poll_fn;
use std::io;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use actix_web::web::Bytes;
use bytes::BytesMut;
use futures_util::FutureExt;
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use super::wire::{self, BodyFraming, Chunked, Framing, ProviderStream, ResponseHead, Step};

/// What the gateway sends a provider as a request body.
pub type RequestBody = BoxBody<Bytes, std::io::Error>;

/// How long an idle connection is kept for the next call.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// How long connecting to a provider may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The most an answer's head may hold.
const MAX_HEAD: usize = 64 * 1024;
/// Request body bytes gathered before they are written; a larger chunk is written as it is.
const WRITE_BATCH: usize = 64 * 1024;
const WRITE_DIRECT: usize = 16 * 1024;

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
    Ok(ProviderConnection {
        stream,
        buffer: BytesMut::new(),
        slot,
    })
}

/// Why an exchange failed: before any of the answer arrived (the request may go again), or
/// after.
enum Failure {
    Unanswered(String),
    Broken(String),
}

/// A connection to a provider, with what was read from it and not yet used.
pub struct ProviderConnection {
    stream: ProviderStream,
    buffer: BytesMut,
    slot: usize,
}

impl ProviderConnection {
    async fn exchange(
        &mut self,
        head: &[u8],
        body: Option<(&mut RequestBody, BodyFraming)>,
        to_head: bool,
    ) -> Result<ResponseHead, Failure> {
        match body {
            None => self
                .stream
                .write_all(head)
                .await
                .map_err(|error| Failure::Unanswered(format!("sending the request: {error}")))?,
            Some((body, framing)) => self.write_with_body(head, body, framing).await?,
        }
        loop {
            if !self.buffer.is_empty()
                && let Some(answer) =
                    wire::parse_response_head(&mut self.buffer, to_head).map_err(Failure::Broken)?
            {
                return Ok(answer);
            }
            if self.buffer.len() > MAX_HEAD {
                return Err(Failure::Broken(format!(
                    "an answer head larger than {MAX_HEAD} bytes"
                )));
            }
            let read = poll_fn(|cx| self.stream.poll_read_into(&mut self.buffer, cx)).await;
            match read {
                Ok(0) if self.buffer.is_empty() => {
                    return Err(Failure::Unanswered("closed without an answer".to_owned()));
                }
                Ok(0) => {
                    return Err(Failure::Broken(
                        "closed within the answer's head".to_owned(),
                    ));
                }
                Ok(_) => {}
                Err(error) if self.buffer.is_empty() => {
                    return Err(Failure::Unanswered(format!("reading the answer: {error}")));
                }
                Err(error) => return Err(Failure::Broken(format!("reading the answer: {error}"))),
            }
        }
    }

    /// Writes the head and the body as the client sends it: what is there at once goes out
    /// with the head in one write. A body that fails or ends short on the client's side ends
    /// the exchange unfinished, so the provider never takes a cut body for a whole one.
    async fn write_with_body(
        &mut self,
        head: &[u8],
        body: &mut RequestBody,
        framing: BodyFraming,
    ) -> Result<(), Failure> {
        let broken = |error: io::Error| Failure::Broken(format!("sending the request: {error}"));
        let mut out = Vec::with_capacity(head.len() + 1024);
        out.extend_from_slice(head);
        let mut sent = 0u64;
        let chunked = framing == BodyFraming::Chunked;
        loop {
            let frame = match body.frame().now_or_never() {
                Some(frame) => frame,
                None => {
                    if !out.is_empty() {
                        self.stream.write_all(&out).await.map_err(broken)?;
                        out.clear();
                    }
                    body.frame().await
                }
            };
            let data = match frame {
                None => break,
                Some(Err(error)) => {
                    return Err(Failure::Broken(format!(
                        "the client's body failed: {error}"
                    )));
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => data,
                    _ => continue,
                },
            };
            sent += data.len() as u64;
            if let BodyFraming::Length(length) = framing
                && sent > length
            {
                return Err(Failure::Broken(
                    "the client's body is longer than it said".into(),
                ));
            }
            if chunked {
                wire::write_chunk_size(&mut out, data.len());
            }
            if data.len() >= WRITE_DIRECT {
                self.stream.write_all(&out).await.map_err(broken)?;
                out.clear();
                self.stream.write_all(&data).await.map_err(broken)?;
            } else {
                out.extend_from_slice(&data);
            }
            if chunked {
                out.extend_from_slice(b"\r\n");
            }
            if out.len() >= WRITE_BATCH {
                self.stream.write_all(&out).await.map_err(broken)?;
                out.clear();
            }
        }
        if let BodyFraming::Length(length) = framing
            && sent != length
        {
            return Err(Failure::Broken("the client's body ended short".into()));
        }
        if chunked {
            out.extend_from_slice(b"0\r\n\r\n");
        }
        self.stream.write_all(&out).await.map_err(broken)
    }
}

/// The answer's body as it is read from its connection; read to its end, the connection goes
/// back to the pool (when the answer let it be reused), and dropped before, it closes.
pub struct UpstreamBody {
    /// None once the body ended (or failed).
    connection: Option<ProviderConnection>,
    state: BodyState,
    reusable: bool,
    declared: Option<u64>,
}

enum BodyState {
    Length(u64),
    Chunked(Chunked),
    UntilClose,
    Done,
}

impl UpstreamBody {
    fn new(connection: ProviderConnection, framing: Framing, reusable: bool) -> UpstreamBody {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => BodyState::Done,
            Framing::Length(length) => BodyState::Length(length),
            Framing::Chunked => BodyState::Chunked(Chunked::Size),
            Framing::UntilClose => BodyState::UntilClose,
        };
        let declared = match framing {
            Framing::Empty => Some(0),
            Framing::Length(length) => Some(length),
            Framing::Chunked | Framing::UntilClose => None,
        };
        let mut body = UpstreamBody {
            connection: Some(connection),
            state,
            reusable,
            declared,
        };
        if matches!(body.state, BodyState::Done) {
            body.finish();
        }
        body
    }

    /// The body's length, when the answer declared one (none for a chunked body, or one that
    /// runs to the close).
    pub fn declared(&self) -> Option<u64> {
        self.declared
    }

    /// Whether the whole body has been read (what is left is in hand).
    pub fn is_end(&self) -> bool {
        matches!(self.state, BodyState::Done)
    }

    /// The body ended: its connection goes back to the pool if nothing else came with it.
    fn finish(&mut self) {
        self.state = BodyState::Done;
        if let Some(connection) = self.connection.take()
            && self.reusable
            && connection.buffer.is_empty()
        {
            // Off a worker (never, but harmless): the connection is simply closed.
            let _ = POOL.try_with(|pool| pool.borrow_mut().put(connection));
        }
    }

    fn fail(&mut self, why: String) -> Poll<Option<io::Result<Bytes>>> {
        self.state = BodyState::Done;
        self.connection = None;
        Poll::Ready(Some(Err(io::Error::other(why))))
    }

    /// The next chunk of data; None at the end.
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        loop {
            let Some(connection) = self.connection.as_mut() else {
                return Poll::Ready(None);
            };
            let buffer = &mut connection.buffer;
            match &mut self.state {
                BodyState::Done => return Poll::Ready(None),
                BodyState::Length(left) if !buffer.is_empty() => {
                    let take = usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .min(buffer.len());
                    let data = buffer.split_to(take).freeze();
                    *left -= take as u64;
                    if *left == 0 {
                        self.finish();
                    }
                    return Poll::Ready(Some(Ok(data)));
                }
                BodyState::UntilClose if !buffer.is_empty() => {
                    return Poll::Ready(Some(Ok(buffer.split().freeze())));
                }
                BodyState::Chunked(decoder) => match decoder.step(buffer) {
                    Ok(Step::Data(data)) => {
                        match decoder.ended(buffer) {
                            Ok(true) => self.finish(),
                            Ok(false) => {}
                            Err(why) => return self.fail(why),
                        }
                        return Poll::Ready(Some(Ok(data)));
                    }
                    Ok(Step::Done) => {
                        self.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Step::NeedMore) => {}
                    Err(why) => return self.fail(why),
                },
                BodyState::Length(_) | BodyState::UntilClose => {}
            }
            // The buffer holds nothing more of the body: read.
            let connection = self.connection.as_mut().expect("checked above");
            match ready!(connection.stream.poll_read_into(&mut connection.buffer, cx)) {
                Ok(0) if matches!(self.state, BodyState::UntilClose) => {
                    self.reusable = false;
                    self.finish();
                    return Poll::Ready(None);
                }
                Ok(0) => return self.fail("closed before the body's end".to_owned()),
                Ok(_) => {}
                Err(error) => return self.fail(error.to_string()),
            }
        }
    }
}
