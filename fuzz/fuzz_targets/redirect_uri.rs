//! Redirect URI comparison is exact: a presented URI matches only when it is byte-for-byte one of
//! the registered ones, whatever its encoding tricks.
#![no_main]
use edulink_domain::oauth::redirect_uri_matches;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let registered = vec!["https://school.mos.ru/sferum/callback".to_string(), "ru.myschool.diary:/sferum/callback".to_string()];
    let matched = redirect_uri_matches(&registered, s);
    assert_eq!(matched, registered.iter().any(|r| r == s));
});
