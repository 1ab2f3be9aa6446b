//! The wasm-bindgen surface the page calls. Thin: every method forwards to
//! [`crate::session::Companion`] and turns its errors into JavaScript `Error`s with the
//! session's message.

use wasm_bindgen::prelude::*;

use crate::session;

/// One browser device (see [`session::Companion`]).
#[wasm_bindgen]
pub struct Companion(session::Companion);

fn js(e: session::WebError) -> JsError {
    JsError::new(&e.0)
}

#[wasm_bindgen]
impl Companion {
    /// A new, unlinked device with fresh keys.
    #[wasm_bindgen(constructor)]
    pub fn new() -> Companion {
        Companion(session::Companion::new())
    }

    /// The device as `save` left it.
    pub fn restore(bytes: &[u8]) -> Result<Companion, JsError> {
        session::Companion::restore(bytes)
            .map(Companion)
            .map_err(js)
    }

    /// The state to keep (store it encrypted).
    pub fn save(&self) -> Vec<u8> {
        self.0.save()
    }

    /// The account once linked.
    pub fn account(&self) -> Option<String> {
        self.0.account().map(str::to_owned)
    }

    pub fn device(&self) -> u32 {
        self.0.device()
    }

    /// Messages typed and not yet stored by the relay.
    pub fn outbox_len(&self) -> u32 {
        u32::try_from(self.0.outbox_len()).unwrap_or(u32::MAX)
    }

    /// The pairing code (undefined once linked).
    pub fn pairing_code(&mut self) -> Option<String> {
        self.0.pairing_code()
    }

    /// Starts a handshake; returns the first WebSocket message.
    pub fn connect(&mut self) -> Result<Vec<u8>, JsError> {
        self.0.connect().map_err(js)
    }

    pub fn on_message(&mut self, bytes: &[u8]) {
        self.0.on_message(bytes)
    }

    pub fn on_close(&mut self) {
        self.0.on_close()
    }

    pub fn is_ready(&self) -> bool {
        self.0.is_ready()
    }

    /// The next WebSocket message to send, if any.
    pub fn take_outgoing(&mut self) -> Option<Vec<u8>> {
        self.0.take_outgoing()
    }

    /// The events since the last call, as a JSON array.
    pub fn take_events(&mut self) -> String {
        serde_json::to_string(&self.0.take_events()).unwrap_or_else(|_| "[]".into())
    }

    /// Queues a text; returns its msg_id (hex).
    pub fn send_text(
        &mut self,
        to: &str,
        text: &str,
        now_ms: f64,
        reply_to: Option<String>,
    ) -> Result<String, JsError> {
        // Date.now() is a whole number of milliseconds well inside u64.
        let now = if now_ms.is_finite() && now_ms >= 0.0 {
            now_ms as u64
        } else {
            0
        };
        self.0.send_text(to, text, now, reply_to).map_err(js)
    }

    /// Read receipts for `msg_ids` (JSON array of hex ids) to `to`.
    pub fn mark_read(&mut self, to: &str, msg_ids_json: &str) {
        let ids: Vec<String> = serde_json::from_str(msg_ids_json).unwrap_or_default();
        self.0.mark_read(to, &ids)
    }

    /// Asks for the download URL of a media message (a `media_url` event follows).
    pub fn request_media(&mut self, msg_id: &str) -> Result<(), JsError> {
        self.0.request_media(msg_id).map_err(js)
    }

    /// Decrypts segment `index` of a media message's blob.
    pub fn open_segment(
        &self,
        msg_id: &str,
        index: u32,
        sealed: &[u8],
    ) -> Result<Vec<u8>, JsError> {
        let index = usize::try_from(index).unwrap_or(usize::MAX);
        self.0.open_segment(msg_id, index, sealed).map_err(js)
    }

    /// Decrypts a history blob; returns its entries as a JSON array.
    pub fn open_history(&self, msg_id: &str, sealed: &[u8]) -> Result<String, JsError> {
        let entries = self.0.open_history(msg_id, sealed).map_err(js)?;
        serde_json::to_string(&entries).map_err(|e| JsError::new(&e.to_string()))
    }

    /// The media of `msg_id` is gone (410): asks its sender `from` to send it again.
    pub fn recall(&mut self, from: &str, msg_id: &str, now_ms: f64) -> Result<String, JsError> {
        let now = if now_ms.is_finite() && now_ms >= 0.0 {
            now_ms as u64
        } else {
            0
        };
        self.0.recall(from, msg_id, now).map_err(js)
    }

    /// Mutes (or unmutes) a thread; a `muted` event follows.
    pub fn mute(&mut self, thread: &str, mute: bool) {
        self.0.mute(thread, mute)
    }

    /// Unlinks this device (an `logged_out` event follows).
    pub fn log_out(&mut self) {
        self.0.log_out()
    }

    /// Asks for the safety number with `peer` (a `safety_number` event follows).
    pub fn verify_contact(&mut self, peer: &str) -> Result<(), JsError> {
        self.0.verify_contact(peer).map_err(js)
    }

    /// Accepts the new identity key of `account` and opens the messages held from it.
    pub fn accept_key(&mut self, account: &str) -> Result<(), JsError> {
        self.0.accept_key(account).map_err(js)
    }

    /// `composing`, `recording` or `paused`.
    pub fn chat_state(&mut self, to: &str, state: &str) {
        self.0.chat_state(to, state)
    }
}

impl Default for Companion {
    fn default() -> Self {
        Self::new()
    }
}

/// The pairing code as an SVG QR code.
#[wasm_bindgen]
pub fn qr_svg(text: &str) -> Result<String, JsError> {
    crate::qr_svg(text).map_err(js)
}

/// This build's version (the relay's, as the page checks it against `/web/version`).
#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}
