//! Placeholder until the DHT module lands (issue 3).
fn main() {}
