// Property tests (helper fills in).
