//! Integration tests of the Redis engine, against real `redis-server` processes.
//!
//! Without `redis-server` on PATH (and no `KILAT_TEST_REDIS_URL`), every test skips with a loud
//! notice; under `CI=true` they fail instead.

/// A 3-master Redis Cluster: the conformance suites and sharded pub/sub between nodes.
mod cluster;
/// The kilat-core engine conformance suite, run against the Redis engine.
mod conformance;
/// Redis killed, restarted or paused under running engines.
mod failures;
/// Publications on their own connection, never queued behind recovery reads.
mod lanes;
/// Two engines ("nodes") sharing one Redis: fan-out, history, presence.
mod multi_node;
/// Whole kilat-core nodes on the Redis engine: a client on one node, publishes on another.
mod nodes;
/// Starting and controlling `redis-server`, engines for tests, a recording handler.
mod support;
