//! The browser bundle as the server sends it (`ssr` only): named by a hash of its content,
//! so a browser keeps it for a year and asks again only when it changes, and compressed
//! once with brotli and gzip. The compressed copies are kept next to the files
//! (`studio-ui-<hash>_bg.wasm.br`), so only the first start after a build compresses.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use sha2::{Digest, Sha256};

/// One file of the bundle: the name it is served under and its bytes, raw and compressed.
#[derive(Debug)]
pub struct Asset {
    /// The hashed file name under `/pkg/` (`studio-ui-3f2a…_bg.wasm`).
    pub name: String,
    pub content_type: &'static str,
    pub raw: Vec<u8>,
    /// Brotli and gzip, set once compressed (until then the raw bytes are sent).
    pub br: OnceLock<Vec<u8>>,
    pub gzip: OnceLock<Vec<u8>>,
}

/// The bundle wasm-bindgen wrote (`<output>.js`, `<output>_bg.wasm`), under hashed names.
#[derive(Debug)]
pub struct Bundle {
    /// `<output>-<hash>`: the output name the page's scripts use.
    pub output_name: String,
    pub assets: Vec<Arc<Asset>>,
}

/// The first 16 hex digits of the SHA-256 of the parts.
pub fn content_hash(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

impl Bundle {
    /// Reads the bundle in `pkg`; None when it was not built.
    pub fn open(pkg: &Path, output: &str) -> Option<Bundle> {
        let js = std::fs::read(pkg.join(format!("{output}.js"))).ok()?;
        let wasm = std::fs::read(pkg.join(format!("{output}_bg.wasm"))).ok()?;
        let output_name = format!("{output}-{}", content_hash(&[&js, &wasm]));
        let asset = |name: String, content_type, raw| {
            Arc::new(Asset { name, content_type, raw, br: OnceLock::new(), gzip: OnceLock::new() })
        };
        let assets = vec![
            asset(format!("{output_name}.js"), "text/javascript; charset=utf-8", js),
            asset(format!("{output_name}_bg.wasm"), "application/wasm", wasm),
        ];
        Some(Bundle { output_name, assets })
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Asset>> {
        self.assets.iter().find(|a| a.name == name)
    }

    /// Fills in the compressed copies: read from `pkg` when an earlier start left them
    /// there, else compressed now (brotli at its best quality takes seconds for the wasm,
    /// so call this off the request path) and written there for the next start (a
    /// read-only site directory only means compressing again next time).
    pub fn compress(&self, pkg: &Path) {
        for a in &self.assets {
            let kept = |ext: &str| -> (PathBuf, Option<Vec<u8>>) {
                let path = pkg.join(format!("{}.{ext}", a.name));
                let bytes = std::fs::read(&path).ok().filter(|b| !b.is_empty());
                (path, bytes)
            };
            let (path, bytes) = kept("gz");
            let gz = bytes.unwrap_or_else(|| {
                let b = gzip(&a.raw);
                let _ = std::fs::write(&path, &b);
                b
            });
            let _ = a.gzip.set(gz);
            let (path, bytes) = kept("br");
            let br = bytes.unwrap_or_else(|| {
                let b = brotli_best(&a.raw);
                let _ = std::fs::write(&path, &b);
                b
            });
            let _ = a.br.set(br);
        }
    }
}

/// Gzip at the best level.
pub fn gzip(raw: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    // Writing to a Vec cannot fail.
    let _ = e.write_all(raw);
    e.finish().unwrap_or_default()
}

/// Brotli at quality 11 with a 4 MiB window.
pub fn brotli_best(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let params = brotli::enc::BrotliEncoderParams { quality: 11, lgwin: 22, ..Default::default() };
    let mut input = raw;
    if brotli::BrotliCompress(&mut input, &mut out, &params).is_err() {
        out.clear();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_content_and_copies_decompress_to_it() {
        let dir = std::env::temp_dir().join(format!("studio-bundle-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let wasm: Vec<u8> = (0..50_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        std::fs::write(dir.join("ui.js"), "export function hydrate() {}\n".repeat(200)).unwrap();
        std::fs::write(dir.join("ui_bg.wasm"), &wasm).unwrap();
        let b = Bundle::open(&dir, "ui").unwrap();
        assert!(b.output_name.starts_with("ui-") && b.output_name.len() == 3 + 16, "{}", b.output_name);
        let w = b.get(&format!("{}_bg.wasm", b.output_name)).unwrap();
        assert!(w.br.get().is_none());
        b.compress(&dir);
        let (br, gz) = (w.br.get().unwrap(), w.gzip.get().unwrap());
        assert!(br.len() < wasm.len() / 4 && gz.len() < wasm.len() / 2, "br {} gz {}", br.len(), gz.len());
        let mut back = Vec::new();
        brotli::BrotliDecompress(&mut br.as_slice(), &mut back).unwrap();
        assert_eq!(back, wasm);
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gz.as_slice()), &mut back).unwrap();
        assert_eq!(back, wasm);
        assert!(dir.join(format!("{}.br", w.name)).is_file(), "the copies are kept for the next start");
        // A changed file gets a new name.
        std::fs::write(dir.join("ui_bg.wasm"), b"other").unwrap();
        assert_ne!(Bundle::open(&dir, "ui").unwrap().output_name, b.output_name);
        assert!(Bundle::open(&dir, "missing").is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
