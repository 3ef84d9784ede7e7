//! Replays the checked-in fuzz corpus (`sip/fuzz/corpus/sdp_parse/`) through the fuzz target's
//! checks, so CI covers it without cargo-fuzz or nightly.

#[path = "common/sdp_check.rs"]
mod sdp_check;

use std::path::Path;

#[test]
fn corpus_replays_cleanly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/sdp_parse");
    let mut count = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("corpus directory")
        .map(|e| e.expect("corpus entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let data = std::fs::read(&path).expect("corpus file");
        eprintln!("replaying {}", path.display());
        sdp_check::check(&data);
        count += 1;
    }
    assert!(
        count >= 10,
        "expected at least 10 corpus files, found {count}"
    );
}
