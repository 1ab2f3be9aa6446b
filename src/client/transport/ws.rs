//! WebSocket at `<http>/v1/ws`: one Noise message per binary message.

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

use super::{connect_http, http::status_error, BaseUrl, Io};
use crate::client::connection::ClientError;
use crate::wire::frame::MAX_FRAME_BYTES;

pub(crate) struct WsLink {
    ws: WebSocketStream<Box<dyn Io>>,
}

impl WsLink {
    pub(crate) async fn open(
        base: &BaseUrl,
        ca: Option<&std::path::Path>,
    ) -> Result<Self, ClientError> {
        let io = connect_http(base, ca).await?;
        let scheme = if base.tls { "wss" } else { "ws" };
        let url = format!("{scheme}://{}{}", base.authority(), base.path("/v1/ws"));
        let mut config = tungstenite::protocol::WebSocketConfig::default();
        config.max_message_size = Some(MAX_FRAME_BYTES);
        config.max_frame_size = Some(MAX_FRAME_BYTES);
        let (ws, _) = tokio_tungstenite::client_async_with_config(url.as_str(), io, Some(config))
            .await
            .map_err(|e| match e {
                tungstenite::Error::Http(res) => {
                    let body = res.body().clone().unwrap_or_default();
                    status_error(res.status().as_u16(), &body)
                }
                other => ClientError::WebSocket(format!("{url}: {other}")),
            })?;
        Ok(Self { ws })
    }

    pub(crate) async fn write(&mut self, payload: &[u8]) -> Result<(), ClientError> {
        self.ws
            .send(Message::Binary(payload.to_vec().into()))
            .await
            .map_err(ws_error)
    }

    pub(crate) async fn read(&mut self) -> Result<Vec<u8>, ClientError> {
        loop {
            match self.ws.next().await {
                None => return Err(ClientError::Closed(None)),
                Some(Err(e)) => return Err(ws_error(e)),
                Some(Ok(Message::Binary(b))) => return Ok(b.to_vec()),
                Some(Ok(Message::Close(frame))) => {
                    return Err(match frame {
                        Some(f)
                            if f.code
                                != tungstenite::protocol::frame::coding::CloseCode::Normal =>
                        {
                            ClientError::WebSocket(format!(
                                "the relay closed the WebSocket: {} {}",
                                u16::from(f.code),
                                f.reason
                            ))
                        }
                        _ => ClientError::Closed(None),
                    });
                }
                // Pings are answered by tungstenite; the relay sends no text.
                Some(Ok(_)) => {}
            }
        }
    }
}

fn ws_error(e: tungstenite::Error) -> ClientError {
    match e {
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            ClientError::Closed(None)
        }
        tungstenite::Error::Io(e) => ClientError::Io(e),
        other => ClientError::WebSocket(other.to_string()),
    }
}
