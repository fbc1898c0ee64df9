//! Deterministic discrete-event simulation of a gossiping cluster.
