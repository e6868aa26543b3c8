//! End-to-end tests over real HTTP, a real database and a headless browser live here as
//! integration tests (`tests/tests/*.rs`) once the server exists. The engine's own
//! end-to-end tests on the real bundled models are in `inference/tests/`.
