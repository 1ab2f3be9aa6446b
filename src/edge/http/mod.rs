//! The public HTTP listener (WebSocket, chunked stream, blobs). Placeholder until the HTTP
//! edge lands: only the blob routes.

pub mod blobs;
