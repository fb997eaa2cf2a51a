//! The chunked coding of an answer's body (RFC 9112, 7.1), decoded from the connection's
//! buffer as it fills: the data comes out as slices of the buffer; extensions and trailers are
//! read past and dropped (trailers are not forwarded).

use bytes::{Buf, Bytes, BytesMut};

/// The most a size line or the trailer section may hold.
const MAX_LINE: usize = 4 * 1024;
const MAX_TRAILERS: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunked {
    /// Before a size line.
    Size,
    /// Inside a chunk's data: how much of it is left.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// After the last chunk: how much of the trailer section was read.
    Trailers(usize),
    Done,
}

/// What the buffer gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Data(Bytes),
    /// The buffer holds no more of the body: read again.
    NeedMore,
    Done,
}

impl Chunked {
    /// Decodes from `buffer` until it has data to give, needs more, or the body ended.
    pub fn step(&mut self, buffer: &mut BytesMut) -> Result<Step, String> {
        if let Some(step) = self.read_framing(buffer)? {
            return Ok(step);
        }
        let Chunked::Data(left) = *self else {
            unreachable!("read_framing stops only inside a chunk's data");
        };
        let take = usize::try_from(left)
            .unwrap_or(usize::MAX)
            .min(buffer.len());
        let data = buffer.split_to(take).freeze();
        let left = left - take as u64;
        *self = if left == 0 {
            Chunked::DataEnd
        } else {
            Chunked::Data(left)
        };
        Ok(Step::Data(data))
    }

    /// Whether the buffer already holds the body's end (read past, if so): after the last
    /// data, so that a body whose end came with it is known to be whole at once.
    pub fn ended(&mut self, buffer: &mut BytesMut) -> Result<bool, String> {
        Ok(self.read_framing(buffer)? == Some(Step::Done))
    }

    /// Reads past sizes, CRLFs and trailers until the buffer is empty (`NeedMore`), the body
    /// ended (`Done`), or data is there to take (`None`).
    fn read_framing(&mut self, buffer: &mut BytesMut) -> Result<Option<Step>, String> {
        loop {
            match *self {
                Chunked::Size => match httparse::parse_chunk_size(buffer) {
                    Ok(httparse::Status::Complete((read, size))) => {
                        buffer.advance(read);
                        *self = if size == 0 {
                            Chunked::Trailers(0)
                        } else {
                            Chunked::Data(size)
                        };
                    }
                    Ok(httparse::Status::Partial) if buffer.len() < MAX_LINE => {
                        return Ok(Some(Step::NeedMore));
                    }
                    _ => return Err("an invalid chunk size".to_owned()),
                },
                Chunked::Data(_) if buffer.is_empty() => return Ok(Some(Step::NeedMore)),
                Chunked::Data(_) => return Ok(None),
                Chunked::DataEnd => match buffer.get(..2) {
                    Some(b"\r\n") => {
                        buffer.advance(2);
                        *self = Chunked::Size;
                    }
                    None if buffer.first().is_none_or(|byte| *byte == b'\r') => {
                        return Ok(Some(Step::NeedMore));
                    }
                    _ => return Err("a chunk longer than its size".to_owned()),
                },
                Chunked::Trailers(read) => {
                    let Some(end) = buffer.windows(2).position(|pair| pair == b"\r\n") else {
                        if read + buffer.len() > MAX_TRAILERS {
                            return Err("trailers too large".to_owned());
                        }
                        return Ok(Some(Step::NeedMore));
                    };
                    buffer.advance(end + 2);
                    *self = if end == 0 {
                        Chunked::Done
                    } else {
                        Chunked::Trailers(read + end + 2)
                    };
                }
                Chunked::Done => return Ok(Some(Step::Done)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `wire` fed `piece` bytes at a time; the data, or the first error.
    fn decode(wire: &[u8], piece: usize) -> Result<(Vec<u8>, usize), String> {
        let mut state = Chunked::Size;
        let mut buffer = BytesMut::new();
        let mut data = Vec::new();
        let mut fed = 0;
        loop {
            match state.step(&mut buffer)? {
                Step::Data(bytes) => data.extend_from_slice(&bytes),
                Step::Done => return Ok((data, buffer.len())),
                Step::NeedMore if fed == wire.len() => return Err("cut short".to_owned()),
                Step::NeedMore => {
                    let end = (fed + piece).min(wire.len());
                    buffer.extend_from_slice(&wire[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn chunks_extensions_and_trailers_decode_in_any_pieces() {
        let wire = b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        for piece in [1, 2, 3, 7, wire.len()] {
            let (data, left) = decode(wire, piece).unwrap();
            assert_eq!(data, b"hello world", "pieces of {piece}");
            if piece == wire.len() {
                assert_eq!(left, 4, "what follows the body stays");
            }
        }
        assert_eq!(decode(b"0\r\n\r\n", 1).unwrap().0, b"");
    }

    #[test]
    fn broken_or_cut_bodies_are_errors() {
        for wire in [
            &b"5\r\nhello!!\r\n0\r\n\r\n"[..],
            b"zz\r\nhello\r\n",
            b"5\r\nhel",
            b"5\r\nhello\r\n0\r\n",
        ] {
            for piece in [1, wire.len()] {
                assert!(
                    decode(wire, piece).is_err(),
                    "{:?}",
                    String::from_utf8_lossy(wire)
                );
            }
        }
    }
}
