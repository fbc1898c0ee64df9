// Tests (below).
