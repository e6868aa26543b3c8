//! End-to-end tests over real HTTP, a real database and a real headless browser
//! (`tests/tests/*.rs`; the browser steps in `e2e/`). The engine's own end-to-end tests
//! on the bundled models are in `inference/tests/`, the server's in `app/tests/`.
