//! kilat-server (being written).
