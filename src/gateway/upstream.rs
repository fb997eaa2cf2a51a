//! The client side of the metered call: the request to the provider, sent through hyper's pooled
//! keep-alive client (one per worker thread). Chosen over awc because a bare forwarder under
//! the same actix server measured faster with it here (`../shared/research/proxy-stacks.md`),
//! and because hyper, hyper-util and hyper-rustls were already built for Stripe's client.
//!
//! actix-web speaks `http` 0.2 and hyper `http` 1.x: names, values and the method are carried
//! across as bytes. actix's request body is bound to its worker thread, while hyper's client
//! wants a `Send` body, so a body is piped through a channel by a task on the same worker.

use std::time::Duration;

use actix_web::HttpRequest;
use actix_web::http::header;
use actix_web::web::{self, Bytes};
use futures_util::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use secrecy::ExposeSecret;

use super::providers::Provider;

type RequestBody = BoxBody<Bytes, std::io::Error>;
type PooledClient = Client<HttpsConnector<HttpConnector>, RequestBody>;

/// How long an idle upstream connection is kept for the next call.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// How long connecting to a provider may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How many chunks of a request body wait in the pipe before the reader waits.
const BODY_PIPE_CHUNKS: usize = 8;

thread_local! {
    /// One pooled keep-alive client per worker thread: its connections live on that thread's
    /// runtime, and no pool lock is shared across cores.
    static CLIENT: PooledClient = new_client();
}

fn new_client() -> PooledClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
        .expect("ring's default protocol versions are valid")
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(KEEP_ALIVE)
        .build(https)
}

/// Headers that belong to one connection, never forwarded either way.
pub const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-connection",
];

/// The client's own credentials and what the forwarder sets itself.
const NOT_FORWARDED: [&str; 5] = [
    "host",
    "x-api-key",
    "authorization",
    "content-length",
    "cookie",
];

/// Sends the call to `provider` (its base URL, then `tail` and the query) with the client's
/// headers less its credentials and the hop-by-hop ones, the provider's own credential, and
/// `X-Forwarded-For`; answers the provider's head and body, or why not.
pub async fn send(
    req: &HttpRequest,
    payload: web::Payload,
    provider: &Provider,
    tail: &str,
) -> Result<hyper::Response<Incoming>, String> {
    let mut url = provider.base_url.as_str().trim_end_matches('/').to_owned();
    url.push('/');
    url.push_str(tail);
    if let Some(query) = req.uri().query() {
        url.push('?');
        url.push_str(query);
    }
    let method = http::Method::from_bytes(req.method().as_str().as_bytes())
        .map_err(|error| error.to_string())?;
    let mut upstream = http::Request::builder().method(method).uri(url);
    let forwarded = upstream
        .headers_mut()
        .expect("a request builder without an error yet");

    let headers = req.headers();
    let dropped_by_connection = named_in_connection(headers.get_all(header::CONNECTION));
    let own_header = provider.auth_header.as_deref().map(str::to_ascii_lowercase);
    for (name, value) in headers {
        let lower = name.as_str();
        if HOP_BY_HOP.contains(&lower)
            || NOT_FORWARDED.contains(&lower)
            || lower == "x-forwarded-for"
            || own_header.as_deref() == Some(lower)
            || dropped_by_connection.iter().any(|dropped| dropped == lower)
        {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(lower.as_bytes()),
            http::HeaderValue::from_bytes(value.as_bytes()),
        ) {
            forwarded.append(name, value);
        }
    }
    let peer = req
        .peer_addr()
        .map(|addr| addr.ip().to_string())
        .unwrap_or_default();
    let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(previous) if !previous.is_empty() => format!("{previous}, {peer}"),
        _ => peer,
    };
    if let Ok(value) = http::HeaderValue::from_str(&forwarded_for) {
        forwarded.insert("x-forwarded-for", value);
    }
    if let (Some(name), Some(value)) = (&provider.auth_header, &provider.auth_value)
        && let (Ok(name), Ok(mut value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value.expose_secret()),
        )
    {
        // Shown as "Sensitive" by any debug print of the request.
        value.set_sensitive(true);
        forwarded.insert(name, value);
    }

    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let chunked = headers.contains_key(header::TRANSFER_ENCODING);
    let body = match (length, chunked) {
        (Some(length), _) if length > 0 => {
            // hyper sends the declared length and fails the call if the body differs from it.
            forwarded.insert(
                http::header::CONTENT_LENGTH,
                http::HeaderValue::from(length),
            );
            piped(payload)
        }
        (_, true) => piped(payload),
        _ => Empty::new().map_err(|never| match never {}).boxed(),
    };
    let request = upstream.body(body).map_err(|error| error.to_string())?;
    let timeout = Duration::from_millis(u64::try_from(provider.timeout_ms).unwrap_or(30_000));
    let response = CLIENT.with(|client| client.request(request));
    match tokio::time::timeout(timeout, response).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(error)) => Err(describe(&error)),
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

/// The client's request body, read on this worker and handed to hyper through a channel. A
/// body that fails on the client's side ends the upstream's with an error, so the provider
/// never takes a cut body for a whole one.
fn piped(mut payload: web::Payload) -> RequestBody {
    let (sender, receiver) =
        tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(BODY_PIPE_CHUNKS);
    actix_web::rt::spawn(async move {
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|error| std::io::Error::other(error.to_string()));
            let failed = chunk.is_err();
            if sender.send(chunk).await.is_err() || failed {
                break;
            }
        }
    });
    let chunks = futures_util::stream::unfold(receiver, |mut receiver| async move {
        let chunk = receiver.recv().await?;
        Some((chunk.map(Frame::data), receiver))
    });
    BodyExt::boxed(StreamBody::new(chunks))
}

/// hyper-util's error with its cause (its own text says only "client error (Connect)").
fn describe(error: &hyper_util::client::legacy::Error) -> String {
    match std::error::Error::source(error) {
        Some(cause) => format!("{error}: {cause}"),
        None => error.to_string(),
    }
}

/// The headers a `Connection` header names: they are hop-by-hop too (RFC 9110, 7.6.1).
pub fn named_in_connection<'a, V: AsRef<[u8]> + 'a>(
    values: impl IntoIterator<Item = &'a V>,
) -> Vec<String> {
    values
        .into_iter()
        .filter_map(|value| std::str::from_utf8(value.as_ref()).ok())
        .flat_map(|value| {
            value
                .split(',')
                .map(|name| name.trim().to_ascii_lowercase())
        })
        .collect()
}
