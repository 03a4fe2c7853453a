//! The provisioning API's JSON body: parsing and validation never panic, and what validates is
//! within the documented limits.
#![no_main]
use edulink_domain::provisioning::{MAX_NAME_LEN, ProvisionProfile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = serde_json::from_slice::<ProvisionProfile>(data) {
        if p.validate().is_ok() {
            assert!(p.first_name.chars().count() <= MAX_NAME_LEN);
            assert!(!p.classes.is_empty() && p.classes.len() <= 50);
            assert!(p.lessons.iter().all(|l| l.ends_at > l.starts_at));
        }
    }
});
