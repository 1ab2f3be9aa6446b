//! The native transport: Noise over TCP, frames of `u16` length + one Noise message.
//! Owns the listener, admission (connection caps, handshake rate) and the socket I/O; the
//! session logic is shared (`session`).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

use super::limits::Admission;
use super::session::{self, FrameIo, SessionError};
use super::RelayCtx;
use crate::shutdown::Shutdown;
use crate::wire::frame::{self, FrameDecoder};
use crate::wire::handshake::refusal;

/// Bytes read from the socket per readiness event, into the thread's [`READ_BUF`].
const READ_CHUNK_BYTES: usize = 16 * 1024;

thread_local! {
    /// What one read takes from a socket, until the decoder copies it: one buffer per
    /// thread, reused, so neither a connection nor a read owns one.
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A TCP connection as a [`FrameIo`].
pub struct TcpFrames {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    decoder: FrameDecoder,
}

impl TcpFrames {
    pub fn new(stream: TcpStream, max_frame_bytes: usize) -> Self {
        let (rd, wr) = stream.into_split();
        Self {
            rd,
            wr,
            decoder: FrameDecoder::new(max_frame_bytes),
        }
    }
}

impl TcpFrames {
    /// Reads until a whole frame is buffered (`Ok(true)`) or the peer closed cleanly.
    async fn fill(&mut self) -> Result<bool, SessionError> {
        loop {
            if self.decoder.has_frame()? {
                return Ok(true);
            }
            // Wait for readiness without holding a buffer, then read synchronously into the
            // thread's read buffer: an idle connection parks here with no read buffer, and
            // cancelling loses nothing.
            self.rd.readable().await?;
            let read = READ_BUF.with_borrow_mut(|buf| {
                buf.clear();
                buf.reserve(READ_CHUNK_BYTES);
                // Reads into the spare capacity, which is never zeroed first.
                let n = self.rd.try_read_buf(buf)?;
                self.decoder.extend(buf);
                Ok::<_, std::io::Error>(n)
            });
            match read {
                Ok(0) => {
                    return if self.decoder.buffered() == 0 {
                        Ok(false)
                    } else {
                        Err(SessionError::Closed)
                    };
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl FrameIo for TcpFrames {
    async fn read_frame(&mut self) -> Result<Option<Vec<u8>>, SessionError> {
        self.read_frame_with(<[u8]>::to_vec).await
    }

    async fn read_frame_with<R>(
        &mut self,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<Option<R>, SessionError> {
        if !self.fill().await? {
            return Ok(None);
        }
        Ok(self.decoder.take_frame(f)?)
    }

    async fn write_frame(&mut self, payload: &[u8]) -> Result<(), SessionError> {
        let bytes = frame::encode(payload)?;
        self.wr.write_all(&bytes).await?;
        Ok(())
    }

    async fn write_frames(&mut self, framed: Vec<u8>) -> Result<(), SessionError> {
        // Already framed as this stream carries them: one buffer, one write.
        self.wr.write_all(&framed).await?;
        Ok(())
    }

    fn set_max_frame(&mut self, bytes: usize) {
        self.decoder.set_limit(bytes);
    }
}

/// Accepts connections until shutdown; each runs a session on the current arbiter.
pub async fn serve(
    ctx: Arc<RelayCtx>,
    listener: TcpListener,
    admission: Arc<Admission>,
    shutdown: Shutdown,
) {
    let mut stop = shutdown.task();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.recv() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "Accepting a TCP connection failed.");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let permit = match admission.admit(peer.ip()) {
            Ok(p) => p,
            Err(refused) => {
                tracing::info!(%peer, reason = %refused.reason, "Connection refused.");
                actix_rt::spawn(refuse(stream, refusal(refused.code, &refused.reason)));
                continue;
            }
        };
        let ctx = ctx.clone();
        let task = shutdown.task();
        let max_frame = crate::config::to_usize(ctx.cfg.limits.max_frame_bytes);
        actix_rt::spawn(async move {
            let _permit = permit;
            let _counted = crate::telemetry::metrics::connection("tcp");
            session::run(ctx, TcpFrames::new(stream, max_frame), peer, task).await;
        });
    }
}

async fn refuse(mut stream: TcpStream, payload: Vec<u8>) {
    if let Ok(bytes) = frame::encode(&payload) {
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(2), stream.write_all(&bytes)).await;
    }
}

/// Pending connections the kernel queues for `accept`. The default (128) makes a burst of
/// reconnects after a relay restart stall on SYN retransmits; the kernel caps this at
/// `net.core.somaxconn` anyway.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds the listener (before anything else starts, so a busy port fails the start).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}
