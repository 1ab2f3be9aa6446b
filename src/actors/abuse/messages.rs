//! Messages the abuse monitor accepts.

use actix::Message;

/// Evaluates every account active in the window, or (`watched_only`) the watch list.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Evaluate {
    pub watched_only: bool,
}
