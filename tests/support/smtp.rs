//! An SMTP server inside the tests: it speaks enough of RFC 5321 for lettre's client (EHLO,
//! MAIL, RCPT, DATA, RSET, NOOP, QUIT), keeps what it receives, and can be told to refuse mail
//! or to hang.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Accept,
    /// Answers `550` to `MAIL FROM`.
    Refuse,
    /// Greets, then never answers again.
    Hang,
}

#[derive(Clone, Debug)]
pub struct Mail {
    pub to: Vec<String>,
    /// The whole message as sent (headers and MIME body).
    pub data: String,
}

impl Mail {
    /// The message with quoted-printable parts decoded (soft line breaks joined, `=XX` bytes
    /// restored), which is how a mail client shows links and codes.
    pub fn decoded(&self) -> String {
        let joined = self.data.replace("=\n", "");
        let bytes = joined.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
                (b'=', Some(byte)) => {
                    out.push(byte);
                    i += 3;
                }
                (byte, _) => {
                    out.push(byte);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The `Subject` header, with RFC 2047 base64 words decoded.
    pub fn subject(&self) -> String {
        let line = self
            .data
            .lines()
            .find_map(|line| line.strip_prefix("Subject: "))
            .unwrap_or_default()
            .trim();
        match line
            .strip_prefix("=?utf-8?b?")
            .and_then(|rest| rest.strip_suffix("?="))
        {
            Some(encoded) => String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .unwrap_or_default(),
            )
            .unwrap_or_default(),
            None => line.to_owned(),
        }
    }
}

#[derive(Clone)]
pub struct SmtpSink {
    pub port: u16,
    mails: Arc<Mutex<Vec<Mail>>>,
    mode: Arc<Mutex<Mode>>,
}

impl SmtpSink {
    pub async fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sink = SmtpSink {
            port: listener.local_addr().unwrap().port(),
            mails: Arc::default(),
            mode: Arc::new(Mutex::new(Mode::Accept)),
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

    /// The `SMTP_URL` that points the service here, without TLS.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}?tls=none", self.port)
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
        let (reader, mut writer) = stream.into_split();
        let mut lines = BufReader::new(reader).lines();
        let reply = |text: &'static str| text.as_bytes();
        if writer
            .write_all(reply("220 sink ESMTP ready\r\n"))
            .await
            .is_err()
        {
            return;
        }
        let mut to = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            if *self.mode.lock().unwrap() == Mode::Hang {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
            let verb = line
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_ascii_uppercase();
            let answer: &[u8] = match verb.as_str() {
                "EHLO" => reply("250-sink greets you\r\n250 8BITMIME\r\n"),
                "HELO" | "RSET" | "NOOP" => reply("250 OK\r\n"),
                "MAIL" if *self.mode.lock().unwrap() == Mode::Refuse => {
                    reply("550 5.7.1 refused by the test\r\n")
                }
                "MAIL" => {
                    to.clear();
                    reply("250 OK\r\n")
                }
                "RCPT" => {
                    let address = line
                        .split_once('<')
                        .and_then(|(_, rest)| rest.split_once('>'))
                        .map(|(address, _)| address.to_owned())
                        .unwrap_or_default();
                    to.push(address);
                    reply("250 OK\r\n")
                }
                "DATA" => {
                    if writer.write_all(reply("354 end with .\r\n")).await.is_err() {
                        return;
                    }
                    let mut data = String::new();
                    while let Ok(Some(line)) = lines.next_line().await {
                        if line == "." {
                            break;
                        }
                        data.push_str(line.strip_prefix('.').unwrap_or(&line));
                        data.push('\n');
                    }
                    self.mails.lock().unwrap().push(Mail {
                        to: to.clone(),
                        data,
                    });
                    reply("250 queued\r\n")
                }
                "QUIT" => {
                    let _ = writer.write_all(reply("221 bye\r\n")).await;
                    return;
                }
                _ => reply("502 not implemented\r\n"),
            };
            if writer.write_all(answer).await.is_err() {
                return;
            }
        }
    }
}
