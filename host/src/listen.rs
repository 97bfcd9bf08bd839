//! Binding listeners, for every server the binary runs: the gateway, its
//! agent API, the MCP server and the simulator.

use std::net::SocketAddr;

use tokio::net::TcpListener;

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
