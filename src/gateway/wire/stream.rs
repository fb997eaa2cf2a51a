//! A connection's socket to a provider, plain or TLS, read into the connection's buffer.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// How much room a read asks for.
const READ_ROOM: usize = 8 * 1024;

pub enum ProviderStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl ProviderStream {
    /// Reads what the socket holds into `buffer` (appended); `Ok(0)` at its end. A plain one
    /// as `poll_read_plain` reads.
    pub fn poll_read_into(
        &mut self,
        buffer: &mut BytesMut,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        match self {
            ProviderStream::Plain(stream) => poll_read_plain(stream, buffer, cx),
            ProviderStream::Tls(stream) => {
                reserve_room(buffer);
                // TLS is not the hot path: the room is zeroed rather than read into uninitialised.
                let filled = buffer.len();
                buffer.resize(buffer.capacity(), 0);
                let mut read_buf = ReadBuf::new(&mut buffer[filled..]);
                let polled = Pin::new(stream.as_mut()).poll_read(cx, &mut read_buf);
                let read = read_buf.filled().len();
                buffer.truncate(filled + read);
                ready!(polled)?;
                Poll::Ready(Ok(read))
            }
        }
    }

    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            ProviderStream::Plain(stream) => stream.write_all(bytes).await,
            ProviderStream::Tls(stream) => {
                stream.write_all(bytes).await?;
                stream.flush().await
            }
        }
    }

    /// Whether an idle connection may carry another request: the provider has neither closed
    /// it nor sent anything since its last answer. For a plain socket this is the readiness
    /// tokio already holds, so no system call is made unless the socket still counts as
    /// readable (its last read filled the room it had, or the provider wrote since): then one
    /// read tells. A TLS one is read once.
    pub fn idle_and_open(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut scratch = [0u8; 1];
        match self {
            ProviderStream::Plain(stream) => {
                stream.poll_read_ready(&mut cx).is_pending()
                    || matches!(stream.try_read(&mut scratch),
                        Err(error) if error.kind() == io::ErrorKind::WouldBlock)
            }
            ProviderStream::Tls(stream) => {
                let mut read_buf = ReadBuf::new(&mut scratch);
                Pin::new(stream.as_mut())
                    .poll_read(&mut cx, &mut read_buf)
                    .is_pending()
            }
        }
    }
}

/// Reads what a plain socket holds into `buffer` (appended); `Ok(0)` at its end.
///
/// A socket is read the way nginx reads one: a read that did not fill the room it was given
/// emptied the socket, so the socket counts as drained without the further read that would
/// only say so (`WouldBlock`). Tokio's edge-triggered readiness then waits for the next event,
/// which the kernel sends when more data (or the end) arrives; a message thus costs one read,
/// not two. The gateway reads providers' answers and clients' requests this way.
pub fn poll_read_plain(
    stream: &TcpStream,
    buffer: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    reserve_room(buffer);
    loop {
        ready!(stream.poll_read_ready(cx))?;
        let room = buffer.capacity() - buffer.len();
        match stream.try_read_buf(buffer) {
            Ok(read) => {
                if read > 0 && read < room {
                    mark_drained(stream);
                }
                return Poll::Ready(Ok(read));
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Poll::Ready(Err(error)),
        }
    }
}

fn reserve_room(buffer: &mut BytesMut) {
    if buffer.capacity() - buffer.len() < READ_ROOM / 2 {
        buffer.reserve(READ_ROOM);
    }
}

/// Clears the socket's read readiness without a system call (the closure stands for the read
/// that would have answered `WouldBlock`). Tokio keeps the end-of-stream mark (`READ_CLOSED`), so
/// a provider that closed is still seen.
fn mark_drained(stream: &TcpStream) {
    let _ = stream.try_io(Interest::READABLE, || {
        Err::<(), _>(io::ErrorKind::WouldBlock.into())
    });
}
