//! Binding listeners, and the options of the connections they accept, for
//! every server the binary runs: the gateway, its agent API, the MCP server
//! and the simulator.

use std::net::SocketAddr;

use axum::serve::{ListenerExt as _, TapIo};
use tokio::net::{TcpListener, TcpStream};

use crate::error::Error;

/// Binds a listener and says where it is (the port, when 0 was asked for).
pub(crate) async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), Error> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Error::input(addr.to_string(), e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::input(addr.to_string(), e))?;
    Ok((listener, bound))
}

/// A listener whose accepted connections send at once (`TCP_NODELAY`).
pub(crate) type NoDelay = TapIo<TcpListener, fn(&mut TcpStream)>;

/// `listener`, with Nagle's algorithm off on every connection it accepts.
///
/// Every answer these servers give is small and someone is waiting on it.
/// With Nagle's algorithm on, an answer that leaves in more than one
/// segment can wait for the peer's delayed acknowledgement (up to 40 ms on
/// Linux) before its last part is sent.
pub(crate) fn no_delay(listener: TcpListener) -> NoDelay {
    listener.tap_io(send_at_once as fn(&mut TcpStream))
}

/// Turns Nagle's algorithm off on `stream`; a failure only costs latency.
pub(crate) fn send_at_once(stream: &mut TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY on an accepted connection");
    }
}

#[cfg(test)]
mod tests {
    use axum::serve::Listener as _;

    use super::{bind, no_delay};

    #[tokio::test]
    async fn accepted_connections_send_at_once() {
        let (listener, addr) = bind(([127, 0, 0, 1], 0).into()).await.expect("bind");
        let mut listener = no_delay(listener);
        let client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (accepted, _) = listener.accept().await;
        assert!(accepted.nodelay().expect("read TCP_NODELAY"));
        drop(client);
    }
}
