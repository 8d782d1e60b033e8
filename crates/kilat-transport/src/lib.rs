//! kilat-transport (being written).
