//! Snapshot of request metadata for `EchoResponse.metadata`.

use std::collections::HashMap;

use tonic::metadata::{KeyAndValueRef, MetadataMap};

/// Every ASCII (non `-bin`) header with a visible-ASCII value; repeated
/// headers are joined with `", "`. Pseudo-headers never reach the map.
pub(super) fn visible(metadata: &MetadataMap) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = HashMap::new();
    for entry in metadata.iter() {
        let KeyAndValueRef::Ascii(key, value) = entry else {
            continue;
        };
        let Ok(value) = value.to_str() else {
            continue;
        };
        out.entry(key.as_str().to_owned())
            .and_modify(|joined| {
                joined.push_str(", ");
                joined.push_str(value);
            })
            .or_insert_with(|| value.to_owned());
    }
    out
}
