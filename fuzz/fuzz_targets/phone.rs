//! The phone parser never panics; whatever it accepts is a canonical mobile number that parses
//! back to itself (idempotent) and whose masked form hides the middle digits.
#![no_main]
use edulink_domain::Phone;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let allowed = vec!["RU".to_string(), "KZ".to_string()];
    if let Ok(p) = Phone::parse(s, "RU", &allowed) {
        assert!(p.e164().starts_with('+'));
        let again = Phone::parse(p.e164(), "RU", &allowed).expect("canonical form parses");
        assert_eq!(again.e164(), p.e164());
        assert!(!p.masked().contains(&p.e164()[4..p.e164().len() - 2]));
    }
});
