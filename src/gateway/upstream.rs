//! The client side of the metered call: the request to the provider, written by hand
//! (`wire`) and sent on a keep-alive connection of this worker's pool (`connections.rs`).
//!
//! The call arrives in hyper's own types (`call.rs`): its headers are copied once, from the
//! map the server parsed into the request's bytes, less those not forwarded.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use http::header;
use secrecy::ExposeSecret;

use super::call::Call;
use super::connections::{self, Address, Request, UpstreamBody};
use super::wire::{self, BodyFraming, is_hop_by_hop};

/// Appends `ip` as text: an IPv4 address digit by digit, which costs a fraction of the
/// formatting machinery that `Display` goes through on every call.
fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (index, octet) in v4.octets().into_iter().enumerate() {
                if index > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// Built at compile time: a `&str` name is parsed again on every look-up.
pub const X_FORWARDED_FOR: header::HeaderName = header::HeaderName::from_static("x-forwarded-for");

/// Built at compile time, like every header name a call looks up.
pub const X_API_KEY: header::HeaderName = header::HeaderName::from_static("x-api-key");

/// Whether a client's header goes on to the provider: not one that belongs to the connection,
/// nor the client's own credentials, nor those set anew (the length or coding, `Host`,
/// `X-Forwarded-For`), nor `Expect` (met by the gateway's own server, on its hop).
fn forwarded(name: &str) -> bool {
    !is_hop_by_hop(name.as_bytes())
        && !matches!(
            name,
            "x-api-key"
                | "authorization"
                | "cookie"
                | "content-length"
                | "host"
                | "x-forwarded-for"
                | "expect"
        )
}

/// The length a head declares (`Content-Length`), when it declares one that parses.
pub fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
}

/// Where a provider's calls go and what they carry of its own, prepared when the providers are
/// loaded: parsing the base URL, the credential's header and the `Host` on every call was a
/// measurable part of a call's work (`bench/HISTORY.md`).
#[derive(Clone, Debug)]
pub struct Target {
    /// Where the connections go, and the pool they are kept in.
    address: Address,
    /// The base URL's path without its trailing slashes; the call's tail follows a `/`.
    base_path: String,
    /// The `Host` hyper would derive from the URL (the port only when not the scheme's own).
    host: http::HeaderValue,
    /// The provider's credential, marked sensitive so that no debug print shows it.
    credential: Option<(http::HeaderName, http::HeaderValue)>,
    /// How long the provider may take to answer with its head.
    timeout: Duration,
}

impl Target {
    /// `None` when the URL has no host that a request can name. A credential whose name or
    /// value cannot be a header is left out, as it always was.
    pub fn of(
        base_url: &url::Url,
        auth_header: Option<&str>,
        auth_value: Option<&secrecy::SecretString>,
        timeout_ms: i32,
    ) -> Option<Target> {
        let scheme = http::uri::Scheme::try_from(base_url.scheme()).ok()?;
        let authority: http::uri::Authority = base_url
            [url::Position::BeforeHost..url::Position::AfterPort]
            .parse()
            .ok()?;
        let default_port = if scheme == http::uri::Scheme::HTTPS {
            443
        } else {
            80
        };
        let host = match authority.port_u16() {
            Some(port) if port != default_port => http::HeaderValue::from_str(authority.as_str()),
            _ => http::HeaderValue::from_str(authority.host()),
        }
        .ok()?;
        let credential = match (auth_header, auth_value) {
            (Some(name), Some(value)) => {
                let name = http::HeaderName::from_bytes(name.as_bytes()).ok();
                let value = http::HeaderValue::from_str(value.expose_secret()).ok();
                name.zip(value).map(|(name, mut value)| {
                    value.set_sensitive(true);
                    (name, value)
                })
            }
            _ => None,
        };
        let connect_to = match base_url.host()? {
            url::Host::Domain(domain) => domain.to_owned(),
            url::Host::Ipv4(ip) => ip.to_string(),
            url::Host::Ipv6(ip) => ip.to_string(),
        };
        Some(Target {
            address: Address {
                origin: format!("{scheme}://{authority}"),
                host: connect_to,
                port: authority.port_u16().unwrap_or(default_port),
                tls: scheme == http::uri::Scheme::HTTPS,
            },
            base_path: base_url.path().trim_end_matches('/').to_owned(),
            host,
            credential,
            timeout: Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(30_000)),
        })
    }
}

/// Sends `call` to a provider's `target` (its base URL, then `tail` and the query) with the
/// client's headers less its credentials and the hop-by-hop ones, the provider's own
/// credential, and `X-Forwarded-For`; answers the provider's head and its body (read from the
/// connection, which goes back to the pool once the body is read to its end), or why not. `now`
/// is when the call began.
pub async fn send(
    call: Call,
    target: &Target,
    tail: &str,
    now: tokio::time::Instant,
) -> Result<(http::response::Parts, UpstreamBody), String> {
    let Call { head, peer, body } = call;
    let headers = &head.headers;
    // A declared length of zero is sent as it was said, with no body to read.
    let framing = match content_length(headers) {
        Some(length) => BodyFraming::Length(length),
        None if headers.contains_key(header::TRANSFER_ENCODING) => BodyFraming::Chunked,
        None => BodyFraming::None,
    };
    let has_body = !matches!(framing, BodyFraming::None | BodyFraming::Length(0));
    let body = has_body.then(|| (body.into_request_body(), framing));
    let mut written = Vec::with_capacity(512);
    OutgoingHead {
        head: &head,
        tail,
        forwarded_for: &forwarded_for(headers, peer),
        dropped_by_connection: &named_in_connection(headers.get_all(header::CONNECTION)),
        framing,
    }
    .write(target, &mut written);
    let request = Request {
        head: written,
        retryable: body.is_none() && head.method.is_idempotent(),
        body,
        to_head: head.method == http::Method::HEAD,
    };
    let timeout = target.timeout;
    match tokio::time::timeout(timeout, connections::send(&target.address, request, now)).await {
        Ok(answer) => answer,
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

/// `X-Forwarded-For` as the provider gets it: what the client's proxies said, then the peer.
fn forwarded_for(headers: &http::HeaderMap, peer: Option<std::net::SocketAddr>) -> String {
    let mut forwarded_for = String::new();
    for previous in headers.get_all(X_FORWARDED_FOR) {
        let Ok(previous) = previous.to_str() else {
            continue;
        };
        if !previous.is_empty() {
            if !forwarded_for.is_empty() {
                forwarded_for.push_str(", ");
            }
            forwarded_for.push_str(previous);
        }
    }
    if let Some(peer) = peer {
        if !forwarded_for.is_empty() {
            forwarded_for.push_str(", ");
        }
        push_ip(&mut forwarded_for, peer.ip());
    }
    forwarded_for
}

/// What the provider's request head is written from.
struct OutgoingHead<'a> {
    head: &'a http::request::Parts,
    tail: &'a str,
    forwarded_for: &'a str,
    dropped_by_connection: &'a [String],
    framing: BodyFraming,
}

impl OutgoingHead<'_> {
    fn write(&self, target: &Target, out: &mut Vec<u8>) {
        let head = self.head;
        wire::write_request_line(
            out,
            &head.method,
            &target.base_path,
            self.tail,
            head.uri.query(),
        );
        wire::write_header(out, b"host", target.host.as_bytes());
        let credential = target.credential.as_ref().map(|(name, _)| name);
        for (name, value) in &head.headers {
            if forwarded(name.as_str())
                && credential != Some(name)
                && !self
                    .dropped_by_connection
                    .iter()
                    .any(|dropped| dropped == name.as_str())
            {
                wire::write_header(out, name.as_str().as_bytes(), value.as_bytes());
            }
        }
        if !self.forwarded_for.is_empty() {
            wire::write_header(out, b"x-forwarded-for", self.forwarded_for.as_bytes());
        }
        if let Some((name, value)) = &target.credential {
            wire::write_header(out, name.as_str().as_bytes(), value.as_bytes());
        }
        wire::end_head(out, self.framing);
    }
}

/// The headers a `Connection` header names: they are hop-by-hop too (RFC 9110, 7.6.1). The
/// names that are hop-by-hop anyway (`keep-alive`, most often the only one) are left out, so
/// that the usual request costs no allocation.
fn named_in_connection<'a, V: AsRef<[u8]> + 'a>(
    values: impl IntoIterator<Item = &'a V>,
) -> Vec<String> {
    let mut names = Vec::new();
    for value in values {
        let Ok(value) = std::str::from_utf8(value.as_ref()) else {
            continue;
        };
        for name in value.split(',').map(str::trim) {
            if !name.is_empty() && !is_hop_by_hop(name.as_bytes()) {
                names.push(name.to_ascii_lowercase());
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(base_url: &str) -> Target {
        Target::of(&url::Url::parse(base_url).unwrap(), None, None, 1000).unwrap()
    }

    /// The head written for `method uri` with `headers`, from `peer`, to `target`.
    fn written(target: &Target, method: &str, uri: &str, headers: &[(&str, &str)]) -> String {
        let mut request = http::Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let (head, ()) = request.body(()).unwrap().into_parts();
        let tail = uri
            .split('?')
            .next()
            .unwrap()
            .trim_start_matches("/api/v1/echo/");
        let peer = Some("127.0.0.1:5000".parse().unwrap());
        let mut out = Vec::new();
        OutgoingHead {
            head: &head,
            tail,
            forwarded_for: &forwarded_for(&head.headers, peer),
            dropped_by_connection: &named_in_connection(head.headers.get_all(header::CONNECTION)),
            framing: BodyFraming::None,
        }
        .write(target, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_targets_request_path_joins_the_base_path_the_tail_and_the_query() {
        let cases = [
            (
                "http://127.0.0.1:8081",
                "/api/v1/echo/v2/today",
                "GET /v2/today HTTP/1.1",
            ),
            (
                "http://example.com/base/",
                "/api/v1/echo/items?q=1&x",
                "GET /base/items?q=1&x HTTP/1.1",
            ),
            (
                "https://example.com/a/b",
                "/api/v1/echo/",
                "GET /a/b/ HTTP/1.1",
            ),
        ];
        for (base, uri, line) in cases {
            let head = written(&target(base), "GET", uri, &[]);
            assert_eq!(head.lines().next(), Some(line), "{base} {uri}");
        }
    }

    #[test]
    fn the_providers_head_carries_the_clients_headers_less_the_hop_by_hop_and_credentials() {
        let url = url::Url::parse("http://127.0.0.1:8081/base").unwrap();
        let secret = secrecy::SecretString::from("provider-secret");
        let target = Target::of(&url, Some("X-Upstream-Token"), Some(&secret), 1000).unwrap();
        let head = written(
            &target,
            "POST",
            "/api/v1/echo/items",
            &[
                ("connection", "keep-alive, X-Trace"),
                ("keep-alive", "timeout=5"),
                ("x-trace", "1"),
                ("te", "trailers"),
                ("content-length", "12"),
                ("x-api-key", "mk_secret"),
                ("authorization", "Bearer mk_secret"),
                ("cookie", "session=1"),
                ("host", "gateway.example"),
                ("expect", "100-continue"),
                ("x-upstream-token", "forged"),
                ("x-forwarded-for", "203.0.113.9"),
                ("x-kept", "a"),
                ("x-kept", "b"),
                ("accept", "*/*"),
            ],
        );
        assert_eq!(
            head,
            "POST /base/items HTTP/1.1\r\nhost: 127.0.0.1:8081\r\nx-kept: a\r\nx-kept: b\r\n\
             accept: */*\r\nx-forwarded-for: 203.0.113.9, 127.0.0.1\r\n\
             x-upstream-token: provider-secret\r\n\r\n"
        );
    }

    #[test]
    fn a_targets_host_names_the_port_only_when_it_is_not_the_schemes_own() {
        for (base, host) in [
            ("http://127.0.0.1:8081/", "127.0.0.1:8081"),
            ("http://example.com:80/", "example.com"),
            ("https://example.com/", "example.com"),
            ("https://example.com:8443/x", "example.com:8443"),
            ("http://[::1]:9000/", "[::1]:9000"),
        ] {
            assert_eq!(target(base).host, host, "{base}");
        }
    }

    #[test]
    fn a_targets_address_names_its_origin_and_where_to_connect() {
        for (base, origin, host, port, tls) in [
            (
                "http://127.0.0.1:8081/",
                "http://127.0.0.1:8081",
                "127.0.0.1",
                8081,
                false,
            ),
            (
                "https://example.com/a/b",
                "https://example.com",
                "example.com",
                443,
                true,
            ),
            (
                "http://[::1]:9000/x",
                "http://[::1]:9000",
                "::1",
                9000,
                false,
            ),
            (
                "http://example.com/",
                "http://example.com",
                "example.com",
                80,
                false,
            ),
        ] {
            let address = target(base).address;
            assert_eq!(
                (
                    address.origin.as_str(),
                    address.host.as_str(),
                    address.port,
                    address.tls
                ),
                (origin, host, port, tls),
                "{base}"
            );
        }
    }

    #[test]
    fn a_targets_credential_is_sensitive_and_never_printed() {
        let secret = secrecy::SecretString::from("provider-secret-value");
        let url = url::Url::parse("http://127.0.0.1:1/").unwrap();
        let target = Target::of(&url, Some("X-Secret"), Some(&secret), 1000).unwrap();
        let (name, value) = target.credential.as_ref().unwrap();
        assert_eq!(name.as_str(), "x-secret");
        assert!(value.is_sensitive());
        assert!(!format!("{target:?}").contains("provider-secret-value"));
    }

    #[test]
    fn a_connection_header_adds_only_the_names_not_dropped_anyway() {
        let values = [
            http::HeaderValue::from_static("keep-alive"),
            http::HeaderValue::from_static("Upgrade, X-Trace ,, close"),
        ];
        assert_eq!(named_in_connection(&values), ["x-trace", "close"]);
        let none: [http::HeaderValue; 0] = [];
        assert!(named_in_connection(&none).is_empty());
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "::1",
            "2001:db8::7",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut written = String::new();
            push_ip(&mut written, ip);
            assert_eq!(written, ip.to_string());
        }
    }
}
