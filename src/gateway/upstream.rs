//! The client side of the metered call: the request to the provider, sent on a keep-alive
//! connection of this worker's pool (`connections.rs`, hyper's HTTP/1 client connections).
//! hyper over awc because a bare forwarder under the same actix server measured faster with it
//! here (`../shared/research/proxy-stacks.md`), and because hyper, hyper-util and hyper-rustls
//! were already built for Stripe's client.
//!
//! The call arrives in hyper's own types (`call.rs`): its headers are handed on as they are.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use http::header;
use hyper::body::Incoming;
use secrecy::ExposeSecret;

use super::call::{Call, CallBody};
use super::connections::{self, Connection, Origin};

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

/// Headers that belong to one connection, never forwarded either way.
static HOP_BY_HOP: [header::HeaderName; 9] = [
    header::CONNECTION,
    header::HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::HeaderName::from_static("proxy-connection"),
];

/// The client's own credentials, and the length that the body sets again. `Host`,
/// `X-Forwarded-For` and the provider's credential are not among them: each is set anew, which
/// replaces what the client sent.
const NOT_FORWARDED: [header::HeaderName; 4] = [
    X_API_KEY,
    header::AUTHORIZATION,
    header::COOKIE,
    header::CONTENT_LENGTH,
];

/// Where `name` is in `HOP_BY_HOP`, if it is there: a `match` on the text, which compiles to a
/// test of its length and at most a comparison or two, where comparing each header name with
/// each of the list's cost a hundred instructions a header.
fn hop_by_hop_index(name: &str) -> Option<usize> {
    Some(match name {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-authenticate" => 2,
        "proxy-authorization" => 3,
        "te" => 4,
        "trailer" => 5,
        "transfer-encoding" => 6,
        "upgrade" => 7,
        "proxy-connection" => 8,
        _ => return None,
    })
}

/// Removes, in place, the hop-by-hop headers, those the `Connection` header names, and `also`
/// (at most 23 names). Found in one pass over the names and removed after (a map cannot change
/// while it is read): a removal costs a look-up, so only the names present are removed, by
/// names built at compile time, and nothing is allocated unless `Connection` names a header
/// that is not hop-by-hop anyway.
pub fn remove_hop_by_hop(headers: &mut header::HeaderMap, also: &[header::HeaderName]) {
    debug_assert!(HOP_BY_HOP.len() + also.len() <= 32);
    let dropped_by_connection = named_in_connection(headers.get_all(header::CONNECTION));
    let mut present = 0u32;
    for name in headers.keys() {
        let index = hop_by_hop_index(name.as_str()).or_else(|| {
            let position = also.iter().position(|candidate| candidate == name)?;
            Some(HOP_BY_HOP.len() + position)
        });
        if let Some(index) = index {
            present |= 1 << index;
        }
    }
    for (index, candidate) in HOP_BY_HOP.iter().chain(also).enumerate() {
        if present & (1 << index) != 0 {
            headers.remove(candidate);
        }
    }
    for name in &dropped_by_connection {
        headers.remove(name.as_str());
    }
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
    /// `scheme://authority`: names the pool of connections to the provider.
    origin: String,
    /// The same as a URI, to connect to.
    origin_uri: http::Uri,
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
        let origin = format!("{scheme}://{authority}");
        Some(Target {
            origin_uri: origin.parse().ok()?,
            origin,
            base_path: base_url.path().trim_end_matches('/').to_owned(),
            host,
            credential,
            timeout: Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(30_000)),
        })
    }

    /// The request target (origin form: the path and query, as HTTP/1 sends it to a server)
    /// for `tail` and the client's `query`.
    fn uri(&self, tail: &str, query: Option<&str>) -> Result<http::Uri, http::Error> {
        let query_len = query.map_or(0, |query| query.len() + 1);
        let mut path = String::with_capacity(self.base_path.len() + 1 + tail.len() + query_len);
        path.push_str(&self.base_path);
        path.push('/');
        path.push_str(tail);
        if let Some(query) = query {
            path.push('?');
            path.push_str(query);
        }
        http::Uri::builder().path_and_query(path).build()
    }
}

/// Sends `call` to a provider's `target` (its base URL, then `tail` and the query) with the
/// client's headers less its credentials and the hop-by-hop ones, the provider's own
/// credential, and `X-Forwarded-For`; answers the provider's head and body (and the connection
/// it is read from, to release once it is read to its end), or why not. `now` is when the call
/// began.
pub async fn send(
    call: Call,
    target: &Target,
    tail: &str,
    now: tokio::time::Instant,
) -> Result<(hyper::Response<Incoming>, Connection), String> {
    let Call { head, peer, body } = call;
    let uri = target
        .uri(tail, head.uri.query())
        .map_err(|error| error.to_string())?;
    // The client's header map is the provider's, less what is not forwarded: changed in place,
    // where a new map cost an allocation and a copy of every header.
    let mut upstream = http::Request::new(());
    *upstream.method_mut() = head.method;
    *upstream.uri_mut() = uri;
    *upstream.headers_mut() = head.headers;
    let forwarded = upstream.headers_mut();

    let length = content_length(forwarded);
    let chunked = forwarded.contains_key(header::TRANSFER_ENCODING);
    let previous = forwarded
        .get(&X_FORWARDED_FOR)
        .and_then(|value| value.to_str().ok())
        .filter(|previous| !previous.is_empty());
    let mut forwarded_for = String::with_capacity(previous.map_or(0, str::len) + 2 + 39);
    if let Some(previous) = previous {
        forwarded_for.push_str(previous);
        forwarded_for.push_str(", ");
    }
    if let Some(peer) = peer {
        push_ip(&mut forwarded_for, peer.ip());
    }
    remove_hop_by_hop(forwarded, &NOT_FORWARDED);
    forwarded.insert(header::HOST, target.host.clone());
    match http::HeaderValue::try_from(forwarded_for) {
        Ok(value) => forwarded.insert(X_FORWARDED_FOR, value),
        Err(_) => forwarded.remove(&X_FORWARDED_FOR),
    };
    if let Some((name, value)) = &target.credential {
        forwarded.insert(name.clone(), value.clone());
    }

    let body = match (length, chunked) {
        (Some(length), _) if length > 0 => {
            // hyper sends the declared length and fails the call if the body differs from it.
            forwarded.insert(header::CONTENT_LENGTH, http::HeaderValue::from(length));
            body.into_request_body()
        }
        (_, true) => body.into_request_body(),
        _ => CallBody::empty(),
    };
    let request = upstream.map(|()| body);
    let timeout = target.timeout;
    let origin = Origin {
        name: &target.origin,
        uri: &target.origin_uri,
    };
    match tokio::time::timeout(timeout, connections::send(origin, request, now)).await {
        Ok(answer) => answer,
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

/// The headers a `Connection` header names: they are hop-by-hop too (RFC 9110, 7.6.1). The
/// names that are hop-by-hop anyway (`keep-alive`, most often the only one) are left out, so
/// that the usual answer costs no allocation.
fn named_in_connection<'a, V: AsRef<[u8]> + 'a>(
    values: impl IntoIterator<Item = &'a V>,
) -> Vec<String> {
    let mut names = Vec::new();
    for value in values {
        let Ok(value) = std::str::from_utf8(value.as_ref()) else {
            continue;
        };
        for name in value.split(',').map(str::trim) {
            let already_dropped = HOP_BY_HOP
                .iter()
                .any(|hop| hop.as_str().eq_ignore_ascii_case(name));
            if !name.is_empty() && !already_dropped {
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

    #[test]
    fn a_targets_request_path_joins_the_base_path_the_tail_and_the_query() {
        let cases = [
            ("http://127.0.0.1:8081", "v2/today", None, "/v2/today"),
            (
                "http://example.com/base/",
                "items",
                Some("q=1&x"),
                "/base/items?q=1&x",
            ),
            ("https://example.com/a/b", "", None, "/a/b/"),
        ];
        for (base, tail, query, expected) in cases {
            assert_eq!(target(base).uri(tail, query).unwrap().to_string(), expected);
        }
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
    fn a_targets_origin_names_its_scheme_and_authority() {
        for (base, origin) in [
            ("http://127.0.0.1:8081/", "http://127.0.0.1:8081"),
            ("https://example.com/a/b", "https://example.com"),
            ("http://[::1]:9000/x", "http://[::1]:9000"),
        ] {
            let target = target(base);
            assert_eq!(target.origin, origin, "{base}");
            assert_eq!(
                target.origin_uri.to_string(),
                format!("{origin}/"),
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
    fn the_hop_by_hop_match_agrees_with_the_list() {
        for (index, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name.as_str()), Some(index), "{name}");
        }
        for other in [
            "host",
            "x-api-key",
            "content-length",
            "tee",
            "upgrade-insecure-requests",
        ] {
            assert_eq!(hop_by_hop_index(other), None, "{other}");
        }
    }

    #[test]
    fn hop_by_hop_headers_those_connection_names_and_the_others_asked_for_are_removed() {
        let mut headers = header::HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, X-Trace"),
            ("keep-alive", "timeout=5"),
            ("x-trace", "1"),
            ("x-trace", "2"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("content-length", "12"),
            ("x-api-key", "mk_secret"),
            ("x-kept", "a"),
            ("x-kept", "b"),
            ("accept", "*/*"),
        ] {
            headers.append(
                header::HeaderName::from_static(name),
                http::HeaderValue::from_static(value),
            );
        }
        remove_hop_by_hop(&mut headers, &[X_API_KEY, header::CONTENT_LENGTH]);
        let mut left: Vec<(&str, &str)> = headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.to_str().unwrap()))
            .collect();
        left.sort();
        assert_eq!(left, [("accept", "*/*"), ("x-kept", "a"), ("x-kept", "b")]);
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
