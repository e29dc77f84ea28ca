//! A second, independent gzip decoder: CPython's `zlib` (the C zlib), run as `python3` and fed
//! frame by frame as a streaming client would. `python3` must be on `PATH` (CI installs it); a
//! missing one fails the test, it is never skipped.

use std::io::Write;
use std::process::{Command, Stdio};

use bytes::Bytes;

/// Reads hex frames, one per line; prints per frame `out <hex of decoded bytes>`, then `eof` and
/// `unused` lines. `wbits=31` (`16 + zlib.MAX_WBITS`): a gzip wrapper, 32 KiB window.
const DECODER: &str = r#"
import sys, zlib
d = zlib.decompressobj(wbits=31)
for line in sys.stdin:
    print("out", d.decompress(bytes.fromhex(line.strip())).hex())
print("eof", d.eof)
print("unused", d.unused_data.hex())
"#;

/// Decodes `frames` with Python's zlib; returns the output after each frame and whether the gzip
/// member was complete. Panics if anything follows the member.
pub fn decode(frames: &[Bytes]) -> (Vec<Vec<u8>>, bool) {
    let mut child = Command::new("python3")
        .args(["-c", DECODER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs (CI installs it)");
    let input: String = frames.iter().map(|f| hex(f) + "\n").collect();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "python zlib failed: {output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    let mut decoded = Vec::new();
    let mut eof = false;
    for line in text.lines() {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        match key {
            "out" => decoded.push(unhex(value)),
            "eof" => eof = value == "True",
            "unused" => assert_eq!(value, "", "no bytes after the gzip member"),
            _ => panic!("unexpected line {line:?}"),
        }
    }
    assert_eq!(decoded.len(), frames.len());
    (decoded, eof)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}
