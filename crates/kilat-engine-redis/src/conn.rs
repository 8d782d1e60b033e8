//! [`Conn`]: the command connection, to a single Redis or to a Redis Cluster.

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// Where commands and scripts go. Both variants reconnect on their own and are cheap to
/// clone (a handle to a multiplexed connection). In a cluster, scripts and commands are
/// routed by their first key; all keys of a channel share a slot (see `keys`).
#[derive(Clone)]
pub(crate) enum Conn {
    /// One Redis (or a proxy in front of several).
    Single(ConnectionManager),
    /// A Redis Cluster; the connection also carries the sharded pub/sub subscriptions.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}
