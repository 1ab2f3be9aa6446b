//! Noise over TCP: frames of `u16` length + one Noise message.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::connect_tcp;
use crate::client::connection::ClientError;
use crate::wire::frame::{self, FrameDecoder, MAX_FRAME_BYTES};

/// A TCP stream with framing.
pub(crate) struct TcpLink {
    stream: TcpStream,
    decoder: FrameDecoder,
}

impl TcpLink {
    pub(crate) async fn open(
        addr: &str,
        local: Option<std::net::IpAddr>,
    ) -> Result<Self, ClientError> {
        Ok(Self {
            stream: connect_tcp(addr, local).await?,
            decoder: FrameDecoder::new(MAX_FRAME_BYTES),
        })
    }

    pub(crate) async fn write(&mut self, payload: &[u8]) -> Result<(), ClientError> {
        self.stream.write_all(&frame::encode(payload)?).await?;
        Ok(())
    }

    pub(crate) async fn read(&mut self) -> Result<Vec<u8>, ClientError> {
        loop {
            if let Some(f) = self.decoder.next_frame()? {
                return Ok(f);
            }
            let mut buf = [0u8; 16 * 1024];
            let n = self.stream.read(&mut buf).await?;
            if n == 0 {
                return Err(ClientError::Closed(None));
            }
            self.decoder.extend(&buf[..n]);
        }
    }
}
