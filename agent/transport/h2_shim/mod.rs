//! A shim between each accepted connection and h2 (below tonic), which
//! exists because h2 refuses the `:authority` that stock clients send over
//! a Unix socket.
//!
//! h2 parses `:authority` as a URI authority and resets any stream whose
//! authority holds `/` or `%`, with no setting to relax that; grpcurl sends
//! the socket path and gRPC core clients (Python, C++, Ruby) the
//! %-encoded path. Upstream this is tracked as hyperium/h2 pull request
//! #487 ("Do not require authority for UNIX domain sockets"; the earlier
//! issue is hyperium/h2#442). So the agent reads every client header block
//! itself and rewrites such an authority to `localhost` before h2 sees it
//! ([`authority`]). The day h2 accepts those authorities, this module goes,
//! and the agent hands tonic the accepted `UnixStream`.
//!
//! Riding on the same byte path, because they read the same HTTP/2 frames
//! ([`frame`]): the handshake deadline and idle timeout ([`idle`]), the log
//! of h2's refusals ([`refusal`]), and writes that wait for writability
//! only when the socket is full. Its one entry point is [`Connection`].

mod authority;
mod connection;
mod frame;
mod idle;
mod refusal;

pub use connection::Connection;
