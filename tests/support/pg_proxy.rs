//! A proxy in front of PostgreSQL that can lose the answer to one COMMIT: it forwards the
//! COMMIT of a transaction that ran a chosen statement, lets PostgreSQL commit it, and closes
//! the client's connection before the answer reaches it. What a connection that dies at the
//! worst moment looks like to the service: its transaction committed, and it cannot know.
//!
//! It reads the frontend's messages (PostgreSQL's protocol 3) only to recognise the statement
//! (from `Parse`, and from `Bind` of a statement parsed earlier on the connection, since prepared
//! statements are cached) and the `COMMIT` (a simple `Query`); every byte is passed on as is.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use url::Url;

pub struct PgProxy {
    pub port: u16,
    armed: Arc<AtomicBool>,
    lost: Arc<AtomicU32>,
}

/// Where the proxy connects: the server of a `postgres://` URL, over TCP or, when its `host`
/// parameter names a directory, the Unix socket there.
#[derive(Clone)]
enum Server {
    Tcp(String),
    Unix(std::path::PathBuf),
}

impl PgProxy {
    /// A proxy to the server of `server_url`, watching for transactions that ran a statement
    /// containing `marker`.
    pub async fn start(server_url: &Url, marker: &'static str) -> PgProxy {
        let port = server_url.port().unwrap_or(5432);
        let socket_dir = server_url
            .query_pairs()
            .find(|(name, _)| name == "host")
            .map(|(_, value)| value.into_owned());
        let server = match socket_dir {
            Some(dir) if dir.starts_with('/') => {
                Server::Unix(std::path::Path::new(&dir).join(format!(".s.PGSQL.{port}")))
            }
            _ => Server::Tcp(format!(
                "{}:{port}",
                server_url.host_str().unwrap_or("127.0.0.1")
            )),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = PgProxy {
            port: listener.local_addr().unwrap().port(),
            armed: Arc::new(AtomicBool::new(false)),
            lost: Arc::new(AtomicU32::new(0)),
        };
        let (armed, lost) = (proxy.armed.clone(), proxy.lost.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let watch = Watch {
                    marker,
                    armed: armed.clone(),
                    lost: lost.clone(),
                };
                let server = server.clone();
                tokio::spawn(async move {
                    match server {
                        Server::Tcp(address) => {
                            if let Ok(server) = TcpStream::connect(address).await {
                                relay(client, server, watch).await;
                            }
                        }
                        Server::Unix(path) => {
                            if let Ok(server) = tokio::net::UnixStream::connect(path).await {
                                relay(client, server, watch).await;
                            }
                        }
                    }
                });
            }
        });
        proxy
    }

    /// The URL of `database` through the proxy (without TLS, so the messages can be read).
    pub fn url(&self, user: &str, database: &str) -> String {
        format!(
            "postgres://{user}@127.0.0.1:{}/{database}?sslmode=disable",
            self.port
        )
    }

    /// The next COMMIT of a transaction that ran the marked statement loses its answer.
    pub fn lose_next_commit(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// How many COMMITs went through and lost their answer.
    pub fn commits_lost(&self) -> u32 {
        self.lost.load(Ordering::SeqCst)
    }
}

struct Watch {
    marker: &'static str,
    armed: Arc<AtomicBool>,
    lost: Arc<AtomicU32>,
}

async fn relay(
    client: TcpStream,
    server: impl AsyncRead + AsyncWrite + Send + 'static,
    watch: Watch,
) {
    let (client_read, mut client_write) = client.into_split();
    let (mut server_read, server_write) = tokio::io::split(server);
    let cut = Arc::new(AtomicBool::new(false));
    let frontend = tokio::spawn(frontend(client_read, server_write, watch, cut.clone()));
    let mut buffer = vec![0u8; 16 * 1024];
    while let Ok(read) = server_read.read(&mut buffer).await {
        // Once the COMMIT went through, whatever PostgreSQL says is its answer: dropped.
        if read == 0 || cut.load(Ordering::SeqCst) {
            break;
        }
        if client_write.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
    let _ = client_write.shutdown().await;
    frontend.abort();
}

/// Passes the client's messages on, and cuts the connection after the marked COMMIT.
async fn frontend(
    mut client: impl AsyncRead + Unpin,
    mut server: impl AsyncWrite + Unpin,
    watch: Watch,
    cut: Arc<AtomicBool>,
) {
    // The first messages (SSL or GSS requests, then the startup message) have no type byte.
    loop {
        let Some(message) = untyped_message(&mut client).await else {
            return;
        };
        if server.write_all(&message).await.is_err() {
            return;
        }
        let code = u32::from_be_bytes(message[4..8].try_into().unwrap());
        if code != 80_877_103 && code != 80_877_104 {
            break;
        }
    }
    let mut statements: HashMap<Vec<u8>, bool> = HashMap::new();
    let mut marked = false;
    while let Some((kind, message)) = typed_message(&mut client).await {
        let body = &message[5..];
        match kind {
            b'P' => {
                let (name, rest) = cstring(body);
                let (query, _) = cstring(rest);
                let hit = contains(query, watch.marker.as_bytes());
                statements.insert(name.to_vec(), hit);
            }
            b'B' => {
                let (_portal, rest) = cstring(body);
                let (statement, _) = cstring(rest);
                marked |= statements.get(statement).copied().unwrap_or(false);
            }
            b'Q' => {
                let (query, _) = cstring(body);
                let query = String::from_utf8_lossy(query).trim().to_ascii_uppercase();
                if query == "COMMIT" && marked && watch.armed.swap(false, Ordering::SeqCst) {
                    cut.store(true, Ordering::SeqCst);
                    let _ = server.write_all(&message).await;
                    let _ = server.flush().await;
                    watch.lost.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                if query == "COMMIT" || query == "ROLLBACK" {
                    marked = false;
                }
            }
            _ => {}
        }
        if server.write_all(&message).await.is_err() {
            return;
        }
    }
}

async fn untyped_message(stream: &mut (impl AsyncRead + Unpin)) -> Option<Vec<u8>> {
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).await.ok()?;
    let length = u32::from_be_bytes(length) as usize;
    let mut message = length_prefixed(length)?;
    message[..4].copy_from_slice(&(length as u32).to_be_bytes());
    stream.read_exact(&mut message[4..]).await.ok()?;
    Some(message)
}

async fn typed_message(stream: &mut (impl AsyncRead + Unpin)) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    stream.read_exact(&mut head).await.ok()?;
    let length = u32::from_be_bytes(head[1..5].try_into().unwrap()) as usize;
    let mut message = length_prefixed(length + 1)?;
    message[..5].copy_from_slice(&head);
    stream.read_exact(&mut message[5..]).await.ok()?;
    Some((head[0], message))
}

/// A zeroed buffer for a message of `length` bytes, refusing a length below its own header.
fn length_prefixed(length: usize) -> Option<Vec<u8>> {
    (length >= 4).then(|| vec![0u8; length])
}

/// The NUL-terminated string at the start of `bytes`, and what follows it.
fn cstring(bytes: &[u8]) -> (&[u8], &[u8]) {
    match bytes.iter().position(|byte| *byte == 0) {
        Some(end) => (&bytes[..end], &bytes[end + 1..]),
        None => (bytes, &[]),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}
