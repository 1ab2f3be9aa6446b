//! Topic names of the bridge: `{prefix}/dev/{id}/{up|down|ack|status}`. Builds them and
//! parses the ones the relay subscribes to. A device id is a [`Handle`]; anything else in the
//! id level (upper case, `_`, wildcard characters, empty) is bad input.

use crate::ids::Handle;

/// What a topic is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Device → people (QoS 1).
    Up,
    /// Device acknowledges down messages (QoS 1).
    Ack,
    /// Retained `online` / last will `offline`.
    Status,
}

/// Why a topic is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Not one of the relay's topics (the broker should not have sent it).
    #[error("not a device topic under the configured prefix")]
    Foreign,
    /// The id level is not a valid device id.
    #[error("bad device id {0:?} in the topic")]
    BadId(String),
}

/// The relay's subscriptions.
pub fn subscriptions(prefix: &str) -> [String; 3] {
    [
        format!("{prefix}/dev/+/up"),
        format!("{prefix}/dev/+/ack"),
        format!("{prefix}/dev/+/status"),
    ]
}

/// Where the relay publishes messages for `id`.
pub fn down(prefix: &str, id: &str) -> String {
    format!("{prefix}/dev/{id}/down")
}

/// Splits `{prefix}/dev/{id}/{kind}`.
pub fn parse(prefix: &str, topic: &str) -> Result<(Handle, Kind), TopicError> {
    let rest = topic
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix("/dev/"))
        .ok_or(TopicError::Foreign)?;
    let (id, kind) = rest.rsplit_once('/').ok_or(TopicError::Foreign)?;
    let kind = match kind {
        "up" => Kind::Up,
        "ack" => Kind::Ack,
        "status" => Kind::Status,
        _ => return Err(TopicError::Foreign),
    };
    let id = Handle::parse(id).map_err(|_| TopicError::BadId(id.chars().take(40).collect()))?;
    Ok((id, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_topics_parse_and_bad_ids_are_named() {
        let (id, k) = parse("relaybox", "relaybox/dev/fridge-3/up").unwrap();
        assert_eq!((id.as_str(), k), ("fridge-3", Kind::Up));
        assert_eq!(parse("a/b", "a/b/dev/x/status").unwrap().1, Kind::Status);
        for bad in ["Fridge", "a_b", "a+", "#", "", "a/b"] {
            let t = format!("relaybox/dev/{bad}/ack");
            assert!(
                matches!(parse("relaybox", &t), Err(TopicError::BadId(_))),
                "{t}"
            );
        }
        for foreign in ["other/dev/x/up", "relaybox/dev/x/down", "relaybox/x/up"] {
            assert_eq!(
                parse("relaybox", foreign),
                Err(TopicError::Foreign),
                "{foreign}"
            );
        }
    }
}
