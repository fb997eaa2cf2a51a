//! An SMTP server inside the tests: it speaks enough of RFC 5321 for lettre's client (EHLO,
//! MAIL, RCPT, DATA, RSET, NOOP, QUIT), keeps what it receives, and can be told to refuse mail
//! or to hang. A secure sink also speaks TLS, by STARTTLS (RFC 3207) or from the first byte
//! (smtps), with a self-signed certificate for `localhost` made here, and AUTH PLAIN and LOGIN
//! (RFC 4954) once the connection is encrypted.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Accept,
    /// Answers `550` to `MAIL FROM`.
    Refuse,
    /// Greets, then never answers again.
    Hang,
}

/// How a sink's connections are secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    /// No TLS: `smtp://...?tls=none`.
    Plain,
    /// Plain until the client sends `STARTTLS`: `smtp://`.
    StartTls,
    /// TLS from the first byte: `smtps://`.
    ImplicitTls,
}

#[derive(Clone, Debug)]
pub struct Mail {
    pub to: Vec<String>,
    /// The whole message as sent (headers and MIME body).
    pub data: String,
    /// Whether the message came over TLS.
    pub tls: bool,
    /// The user the client authenticated as, if it did.
    pub user: Option<String>,
}

impl Mail {
    /// The message with quoted-printable parts decoded (soft line breaks joined, `=XX` bytes
    /// restored), which is how a mail client shows links and codes.
    pub fn decoded(&self) -> String {
        super::decode_quoted_printable(&self.data)
    }

    /// The `text/plain` part as a mail client shows it (lettre encodes it in base64 or
    /// quoted-printable, whichever is shorter).
    pub fn text(&self) -> String {
        let Some(start) = self.data.find("Content-Type: text/plain") else {
            return String::new();
        };
        let part = &self.data[start..];
        let headers_end = part
            .find("\r\n\r\n")
            .map(|i| i + 4)
            .or_else(|| part.find("\n\n").map(|i| i + 2));
        let Some(headers_end) = headers_end else {
            return String::new();
        };
        let (headers, rest) = part.split_at(headers_end);
        let body = rest.split("\n--").next().unwrap_or_default();
        if headers.contains("Content-Transfer-Encoding: base64") {
            let joined: String = body.split_whitespace().collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(joined)
                .unwrap_or_default();
            String::from_utf8(bytes).unwrap_or_default()
        } else {
            super::decode_quoted_printable(body)
        }
    }

    /// The `Subject` header, with RFC 2047 base64 words decoded.
    /// The Subject header as a mail client shows it: folded lines joined and RFC 2047 encoded
    /// words (`=?utf-8?b?...?=`, as lettre writes non-ASCII text) decoded; the space between
    /// two encoded words is not part of the text.
    pub fn subject(&self) -> String {
        let mut lines = self
            .data
            .lines()
            .skip_while(|line| !line.starts_with("Subject: "));
        let mut header = lines
            .next()
            .and_then(|line| line.strip_prefix("Subject: "))
            .unwrap_or_default()
            .to_owned();
        for folded in lines.take_while(|line| line.starts_with([' ', '\t'])) {
            header.push_str(folded);
        }
        let decode = |word: &str| {
            let encoded = word.strip_prefix("=?utf-8?b?")?.strip_suffix("?=")?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()?;
            String::from_utf8(bytes).ok()
        };
        let mut subject = String::new();
        let mut previous_encoded = false;
        for word in header.split_whitespace() {
            match decode(word) {
                Some(text) => {
                    if !previous_encoded && !subject.is_empty() {
                        subject.push(' ');
                    }
                    subject.push_str(&text);
                    previous_encoded = true;
                }
                None => {
                    if !subject.is_empty() {
                        subject.push(' ');
                    }
                    subject.push_str(word);
                    previous_encoded = false;
                }
            }
        }
        subject
    }
}

/// The server's TLS: an acceptor and the PEM of its self-signed certificate, which is its own
/// CA.
struct Tls {
    acceptor: TlsAcceptor,
    ca_pem: String,
}

impl Tls {
    /// A fresh self-signed certificate for `localhost` and 127.0.0.1, served with ring (the
    /// provider lettre's rustls uses, so no process-wide default is needed).
    fn self_signed() -> Tls {
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let certified = rcgen::generate_simple_self_signed(names).unwrap();
        let key = PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
        let provider = tokio_rustls::rustls::crypto::ring::default_provider();
        let config = ServerConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![certified.cert.der().clone()],
                PrivateKeyDer::Pkcs8(key),
            )
            .unwrap();
        Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            ca_pem: certified.cert.pem(),
        }
    }
}

/// One connection's stream, plain or TLS, so STARTTLS can swap one for the other.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type Stream = BufReader<Box<dyn Io>>;

/// What a connection has established so far; STARTTLS starts it over, as RFC 3207 asks.
#[derive(Default)]
struct Session {
    tls: bool,
    user: Option<String>,
    to: Vec<String>,
}

#[derive(Clone)]
pub struct SmtpSink {
    pub port: u16,
    mails: Arc<Mutex<Vec<Mail>>>,
    mode: Arc<Mutex<Mode>>,
    security: Security,
    /// When set, `MAIL` needs a successful `AUTH` with this user and password first.
    credentials: Option<(String, String)>,
    tls: Option<Arc<Tls>>,
}

impl SmtpSink {
    /// A plain sink that takes mail without authentication.
    pub async fn start() -> SmtpSink {
        SmtpSink::start_secure(Security::Plain, None).await
    }

    /// A sink with `security`; with `credentials`, only that user and password may send.
    pub async fn start_secure(security: Security, credentials: Option<(&str, &str)>) -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sink = SmtpSink {
            port: listener.local_addr().unwrap().port(),
            mails: Arc::default(),
            mode: Arc::new(Mutex::new(Mode::Accept)),
            security,
            credentials: credentials.map(|(user, pass)| (user.to_owned(), pass.to_owned())),
            tls: (security != Security::Plain).then(|| Arc::new(Tls::self_signed())),
        };
        let server = sink.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let server = server.clone();
                tokio::spawn(async move { server.serve(stream).await });
            }
        });
        sink
    }

    /// The `SMTP_URL` that points the service here: without TLS for a plain sink, else
    /// `smtp://` (STARTTLS) or `smtps://` to `localhost`, the name in the certificate, with the
    /// sink's credentials.
    pub fn url(&self) -> String {
        let userinfo = match &self.credentials {
            Some((user, pass)) => format!("{user}:{pass}@"),
            None => String::new(),
        };
        match self.security {
            Security::Plain => format!("smtp://127.0.0.1:{}?tls=none", self.port),
            Security::StartTls => format!("smtp://{userinfo}localhost:{}", self.port),
            Security::ImplicitTls => format!("smtps://{userinfo}localhost:{}", self.port),
        }
    }

    /// The PEM of the certificate a secure sink serves (self-signed, so it is its own CA).
    pub fn ca_pem(&self) -> &str {
        &self.tls.as_ref().expect("a secure sink").ca_pem
    }

    /// A temporary file with `ca_pem`, for `SMTP_CA_FILE`; it is removed when dropped.
    pub fn ca_file(&self) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(self.ca_pem().as_bytes()).unwrap();
        file
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }

    /// The mails sent to `address`, oldest first.
    pub fn mails_to(&self, address: &str) -> Vec<Mail> {
        self.mails()
            .into_iter()
            .filter(|mail| mail.to.iter().any(|to| to == address))
            .collect()
    }

    async fn serve(&self, stream: TcpStream) {
        let mut session = Session::default();
        let mut stream: Stream = match (self.security, &self.tls) {
            (Security::ImplicitTls, Some(tls)) => match tls.acceptor.accept(stream).await {
                Ok(stream) => {
                    session.tls = true;
                    BufReader::new(Box::new(stream))
                }
                Err(_) => return,
            },
            _ => BufReader::new(Box::new(stream)),
        };
        if !reply(&mut stream, "220 sink ESMTP ready").await {
            return;
        }
        while let Some(line) = read_line(&mut stream).await {
            if *self.mode.lock().unwrap() == Mode::Hang {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
            let verb = line
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_ascii_uppercase();
            let answer: String = match verb.as_str() {
                "EHLO" => self.ehlo(&session),
                "HELO" | "RSET" | "NOOP" => "250 OK".into(),
                "STARTTLS" if self.security == Security::StartTls && !session.tls => {
                    let tls = self.tls.as_ref().expect("a secure sink");
                    if !reply(&mut stream, "220 2.0.0 ready to start TLS").await {
                        return;
                    }
                    // Whatever the client sent before the handshake is dropped with the
                    // buffer, and the session starts over encrypted.
                    match tls.acceptor.accept(stream.into_inner()).await {
                        Ok(encrypted) => stream = BufReader::new(Box::new(encrypted)),
                        Err(_) => return,
                    }
                    session = Session {
                        tls: true,
                        ..Session::default()
                    };
                    continue;
                }
                "AUTH" if !session.tls => "538 5.7.11 encryption required".into(),
                "AUTH" => match self.auth(&mut stream, &line).await {
                    Some(Ok(user)) => {
                        session.user = Some(user);
                        "235 2.7.0 authenticated".into()
                    }
                    Some(Err(answer)) => answer.into(),
                    None => return,
                },
                "MAIL" if *self.mode.lock().unwrap() == Mode::Refuse => {
                    "550 5.7.1 refused by the test".into()
                }
                "MAIL" if self.credentials.is_some() && session.user.is_none() => {
                    "530 5.7.0 authentication required".into()
                }
                "MAIL" => {
                    session.to.clear();
                    "250 OK".into()
                }
                "RCPT" => {
                    let address = line
                        .split_once('<')
                        .and_then(|(_, rest)| rest.split_once('>'))
                        .map(|(address, _)| address.to_owned())
                        .unwrap_or_default();
                    session.to.push(address);
                    "250 OK".into()
                }
                "DATA" => {
                    if !reply(&mut stream, "354 end with .").await {
                        return;
                    }
                    let mut data = String::new();
                    while let Some(line) = read_line(&mut stream).await {
                        if line == "." {
                            break;
                        }
                        data.push_str(line.strip_prefix('.').unwrap_or(&line));
                        data.push('\n');
                    }
                    self.mails.lock().unwrap().push(Mail {
                        to: session.to.clone(),
                        data,
                        tls: session.tls,
                        user: session.user.clone(),
                    });
                    "250 queued".into()
                }
                "QUIT" => {
                    reply(&mut stream, "221 bye").await;
                    return;
                }
                _ => "502 not implemented".into(),
            };
            if !reply(&mut stream, &answer).await {
                return;
            }
        }
    }

    /// The EHLO answer: STARTTLS while it can still be used, AUTH only over TLS.
    fn ehlo(&self, session: &Session) -> String {
        let mut lines = vec!["sink greets you", "8BITMIME"];
        if self.security == Security::StartTls && !session.tls {
            lines.push("STARTTLS");
        }
        if session.tls {
            lines.push("AUTH PLAIN LOGIN");
        }
        let last = lines.len() - 1;
        let lines: Vec<String> = lines
            .iter()
            .enumerate()
            .map(|(i, line)| format!("250{}{line}", if i == last { ' ' } else { '-' }))
            .collect();
        lines.join("\r\n")
    }

    /// Runs `AUTH PLAIN` or `AUTH LOGIN` (with or without an initial response): the user when
    /// the credentials are the sink's (any, when it has none), else the error answer; `None`
    /// when the connection is gone.
    async fn auth(&self, stream: &mut Stream, line: &str) -> Option<Result<String, &'static str>> {
        let mut words = line.split_whitespace().skip(1);
        let mechanism = words.next().unwrap_or_default().to_ascii_uppercase();
        let initial = words.next().map(str::to_owned);
        let decode = |text: &str| {
            BASE64
                .decode(text.trim())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
        };
        let (user, pass) = match mechanism.as_str() {
            "PLAIN" => {
                let response = match initial {
                    Some(response) => response,
                    None => challenge(stream, "").await?,
                };
                // authorization identity NUL user NUL password
                let Some(decoded) = decode(&response) else {
                    return Some(Err("501 5.5.2 not base64"));
                };
                let mut parts = decoded.split('\0').skip(1);
                match (parts.next(), parts.next()) {
                    (Some(user), Some(pass)) => (user.to_owned(), pass.to_owned()),
                    _ => return Some(Err("501 5.5.2 malformed PLAIN response")),
                }
            }
            "LOGIN" => {
                let user = match initial {
                    Some(user) => user,
                    None => challenge(stream, &BASE64.encode("Username:")).await?,
                };
                let pass = challenge(stream, &BASE64.encode("Password:")).await?;
                match (decode(&user), decode(&pass)) {
                    (Some(user), Some(pass)) => (user, pass),
                    _ => return Some(Err("501 5.5.2 not base64")),
                }
            }
            _ => return Some(Err("504 5.5.4 unknown mechanism")),
        };
        let accepted = self
            .credentials
            .as_ref()
            .is_none_or(|(expected_user, expected_pass)| {
                *expected_user == user && *expected_pass == pass
            });
        Some(if accepted {
            Ok(user)
        } else {
            Err("535 5.7.8 authentication credentials invalid")
        })
    }
}

/// Writes one answer line; false when the client is gone.
async fn reply(stream: &mut Stream, text: &str) -> bool {
    stream
        .write_all(format!("{text}\r\n").as_bytes())
        .await
        .is_ok()
        && stream.flush().await.is_ok()
}

/// The next line without its line ending; `None` at the end of the connection.
async fn read_line(stream: &mut Stream) -> Option<String> {
    let mut line = String::new();
    match stream.read_line(&mut line).await {
        Ok(0) | Err(_) => None,
        Ok(_) => {
            let end = line.trim_end_matches(['\r', '\n']).len();
            line.truncate(end);
            Some(line)
        }
    }
}

/// Sends a `334` challenge and reads the client's answer to it.
async fn challenge(stream: &mut Stream, text: &str) -> Option<String> {
    if !reply(stream, &format!("334 {text}")).await {
        return None;
    }
    read_line(stream).await
}
