//! HTTP/1.1 as captured from both directions of a connection.

pub mod conversation;
