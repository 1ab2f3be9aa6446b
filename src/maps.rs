//! Hash maps for the message path. Their keys are ids (devices, accounts, msg_ids), short
//! and looked up several times per message; foldhash hashes those several times faster than
//! std's SipHash, and is seeded at random per process like std's, so a peer cannot choose
//! colliding keys in advance.

/// A `HashMap` hashed with foldhash; make one with `FastMap::default()`.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A `HashSet` hashed with foldhash; make one with `FastSet::default()`.
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
