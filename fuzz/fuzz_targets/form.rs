//! The strict form/query parser never panics, and never lets a repeated or array-style key through
//! (however it is percent-encoded: `a=1&%61=2` is two `a`s).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct CodeForm {
    csrf: String,
    code: String,
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(map) = edulink_web::forms::parse_strict::<HashMap<String, String>>(s) {
        assert!(map.keys().all(|k| !k.contains('[')));
        let pairs = url::form_urlencoded::parse(s.as_bytes()).count();
        assert_eq!(pairs, map.len(), "a repeated key was accepted");
    }
    let _ = edulink_web::forms::parse_strict::<CodeForm>(s);
});
