//! kilat-core (being written).
