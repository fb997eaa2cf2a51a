//! An upstream provider on loopback: it answers every request with a JSON echo of what it
//! received, counts its hits, and can be told to fail, to stall, or to cut a body short.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    Echo,
    /// Answers this status with a small body.
    Status(u16),
    /// Waits this long before answering.
    Stall(Duration),
    /// Answers `size` bytes of `body_bytes(size)`: with a `Content-Length`, or when `chunked`
    /// as a stream of 64 KiB chunks without one (`Transfer-Encoding: chunked`).
    Body {
        size: usize,
        chunked: bool,
    },
    /// Sends its head at once, then `chunks` chunks of 1 KiB without a length: the first after
    /// `first_after`, each next one `every` later.
    Trickle {
        first_after: Duration,
        every: Duration,
        chunks: usize,
    },
}

/// The bytes of a `Behaviour::Body` answer: a pattern that shows a lost or moved chunk.
pub fn body_bytes(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8).collect()
}

#[derive(Clone)]
pub struct Upstream {
    pub base_url: String,
    hits: Arc<AtomicUsize>,
    behaviour: Arc<Mutex<Behaviour>>,
    last: Arc<Mutex<Option<Value>>>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        Upstream::start_at("/base").await
    }

    /// An upstream whose provider `base_url` has the path `base`.
    pub async fn start_at(base: &str) -> Upstream {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let upstream = Upstream {
            base_url: format!("http://127.0.0.1:{port}{base}"),
            hits: Arc::default(),
            behaviour: Arc::new(Mutex::new(Behaviour::Echo)),
            last: Arc::default(),
        };
        let shared = web::Data::new(upstream.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(shared.clone())
                .default_service(web::to(answer))
        })
        .workers(2)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        tokio::spawn(server);
        upstream
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    /// What the last request looked like: method, path, query, headers, body.
    pub fn last_request(&self) -> Value {
        self.last.lock().unwrap().clone().unwrap_or(Value::Null)
    }
}

async fn answer(upstream: web::Data<Upstream>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    upstream.hits.fetch_add(1, Ordering::SeqCst);
    let headers: serde_json::Map<String, Value> = req
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                json!(value.to_str().unwrap_or("?")),
            )
        })
        .collect();
    let seen = json!({
        "method": req.method().as_str(),
        "path": req.path(),
        "query": req.query_string(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    *upstream.last.lock().unwrap() = Some(seen.clone());
    let behaviour = *upstream.behaviour.lock().unwrap();
    match behaviour {
        Behaviour::Echo => HttpResponse::Ok()
            .insert_header(("x-upstream", "yes"))
            .insert_header(("connection", "keep-alive"))
            .json(seen),
        Behaviour::Status(code) => {
            HttpResponse::build(actix_web::http::StatusCode::from_u16(code).unwrap())
                .json(json!({"upstream_status": code}))
        }
        Behaviour::Stall(wait) => {
            tokio::time::sleep(wait).await;
            HttpResponse::Ok().json(json!({"stalled": true}))
        }
        Behaviour::Body { size, chunked } => {
            let body = body_bytes(size);
            if !chunked {
                return HttpResponse::Ok().body(body);
            }
            let chunks: Vec<Result<web::Bytes, std::io::Error>> = body
                .chunks(64 * 1024)
                .map(|chunk| Ok(web::Bytes::copy_from_slice(chunk)))
                .collect();
            HttpResponse::Ok().streaming(futures_util::stream::iter(chunks))
        }
        Behaviour::Trickle {
            first_after,
            every,
            chunks,
        } => {
            let body = futures_util::stream::unfold(0, move |sent| async move {
                if sent == chunks {
                    return None;
                }
                tokio::time::sleep(if sent == 0 { first_after } else { every }).await;
                let chunk = web::Bytes::from(vec![b'x'; 1024]);
                Some((Ok::<_, std::io::Error>(chunk), sent + 1))
            });
            HttpResponse::Ok().streaming(body)
        }
    }
}

/// A provider written at the socket level, to see the gateway's connections: it counts the
/// connections it accepted, answers each request on a connection with a small JSON body and
/// keeps the connection open, and closes a connection left idle for `idle_close`, as servers
/// with a keep-alive timeout do (without saying so in the answer).
pub struct SocketUpstream {
    pub base_url: String,
    accepted: Arc<AtomicUsize>,
    closed_idle: Arc<AtomicUsize>,
}

impl SocketUpstream {
    pub async fn start(idle_close: Duration) -> SocketUpstream {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let upstream = SocketUpstream {
            base_url: format!("http://127.0.0.1:{port}"),
            accepted: Arc::default(),
            closed_idle: Arc::default(),
        };
        let (accepted, closed_idle) = (upstream.accepted.clone(), upstream.closed_idle.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let closed_idle = closed_idle.clone();
                tokio::spawn(async move {
                    let mut pending = Vec::new();
                    let mut buffer = [0u8; 4096];
                    loop {
                        // A request without a body ends with its blank line.
                        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            pending.drain(..end + 4);
                            let body = br#"{"ok":true}"#;
                            let head = format!(
                                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                                body.len()
                            );
                            let answer = [head.as_bytes(), body].concat();
                            if stream.write_all(&answer).await.is_err() {
                                return;
                            }
                        }
                        match tokio::time::timeout(idle_close, stream.read(&mut buffer)).await {
                            Ok(Ok(0)) | Ok(Err(_)) => return,
                            Ok(Ok(read)) => pending.extend_from_slice(&buffer[..read]),
                            Err(_) => {
                                closed_idle.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                        }
                    }
                });
            }
        });
        upstream
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Connections it closed because they were left idle.
    pub fn closed_idle(&self) -> usize {
        self.closed_idle.load(Ordering::SeqCst)
    }
}

/// A provider that answers every request with a script of raw bytes, written in the pieces the
/// test gives with a pause between them (to cut heads, sizes and CRLFs across reads), and then
/// closes the connection or keeps it for the next request, as the script says. It keeps each
/// request as it arrived on the wire (head and body), and counts its connections.
pub struct ScriptedUpstream {
    pub base_url: String,
    script: Arc<Mutex<Script>>,
    requests: Arc<Mutex<Vec<String>>>,
    accepted: Arc<AtomicUsize>,
}

#[derive(Clone, Default)]
pub struct Script {
    pub pieces: Vec<Vec<u8>>,
    pub close_after: bool,
}

impl Script {
    /// `answer` in pieces cut at each `|` (a `|` cannot be part of an answer here).
    pub fn cut(answer: &str, close_after: bool) -> Script {
        Script {
            pieces: answer
                .split('|')
                .map(|piece| piece.as_bytes().to_vec())
                .collect(),
            close_after,
        }
    }
}

impl ScriptedUpstream {
    pub async fn start() -> ScriptedUpstream {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let upstream = ScriptedUpstream {
            base_url: format!("http://127.0.0.1:{port}"),
            script: Arc::default(),
            requests: Arc::default(),
            accepted: Arc::default(),
        };
        let (script, requests, accepted) = (
            upstream.script.clone(),
            upstream.requests.clone(),
            upstream.accepted.clone(),
        );
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let (script, requests) = (script.clone(), requests.clone());
                tokio::spawn(async move {
                    let mut pending = Vec::new();
                    while let Some(request) = read_request(&mut stream, &mut pending).await {
                        requests.lock().unwrap().push(request);
                        let script = script.lock().unwrap().clone();
                        for (index, piece) in script.pieces.iter().enumerate() {
                            if index > 0 {
                                tokio::time::sleep(Duration::from_millis(15)).await;
                            }
                            if stream.write_all(piece).await.is_err() {
                                return;
                            }
                        }
                        if script.close_after {
                            return;
                        }
                    }
                });
            }
        });
        upstream
    }

    pub fn answer(&self, script: Script) {
        *self.script.lock().unwrap() = script;
    }

    /// The requests received so far, as they arrived.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// One request off `stream`: its head, then its body by `Content-Length` or to the last chunk.
/// None once the connection closed.
async fn read_request(stream: &mut tokio::net::TcpStream, pending: &mut Vec<u8>) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut buffer = [0u8; 4096];
    let mut fill = async |pending: &mut Vec<u8>| match stream.read(&mut buffer).await {
        Ok(0) | Err(_) => false,
        Ok(read) => {
            pending.extend_from_slice(&buffer[..read]);
            true
        }
    };
    let head_end = loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if !fill(pending).await {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&pending[..head_end]).to_lowercase();
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .and_then(|length| length.trim().parse::<usize>().ok());
    let end = if head.contains("transfer-encoding: chunked") {
        loop {
            if let Some(end) = pending[head_end..]
                .windows(5)
                .position(|w| w == b"0\r\n\r\n")
            {
                break head_end + end + 5;
            }
            if !fill(pending).await {
                return None;
            }
        }
    } else {
        let end = head_end + length.unwrap_or(0);
        while pending.len() < end {
            if !fill(pending).await {
                return None;
            }
        }
        end
    };
    let request = String::from_utf8_lossy(&pending[..end]).into_owned();
    pending.drain(..end);
    Some(request)
}
