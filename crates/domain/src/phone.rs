//! Mobile phone numbers, parsed with libphonenumber semantics.
//!
//! A [`Phone`] exists only for a valid mobile number of an allowed country; it is held in E.164 form
//! (`+79161234567`) and shown masked (`+7 916 ***-**-67`) everywhere after entry.

use phonenumber::{Mode, PhoneNumber, Type, country, metadata::DATABASE};
use std::str::FromStr;

/// The longest input we attempt to parse; anything longer is not a phone number.
const MAX_INPUT_LEN: usize = 32;

/// A valid mobile phone number of an allowed country, in E.164 form.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Phone {
    e164: String,
    masked: String,
}

/// Why an input is not an acceptable phone number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    /// Not a phone number at all (syntax, length, or an unassigned range).
    #[error("not a valid phone number")]
    Invalid,
    /// A valid number, but not a mobile one: SMS codes cannot be delivered.
    #[error("not a mobile phone number")]
    NotMobile,
    /// A valid mobile number of a country we do not send to.
    #[error("phone numbers of this country are not accepted")]
    CountryNotAllowed,
}

/// Whether `code` is an ISO 3166 alpha-2 region that libphonenumber has numbering metadata for
/// (`RU`, `by`), i.e. one [`Phone::parse`] can ever accept in `allowed`.
pub fn is_known_region(code: &str) -> bool {
    let upper = code.to_ascii_uppercase();
    upper.len() == 2
        && upper.bytes().all(|b| b.is_ascii_uppercase())
        && country::Id::from_str(&upper).is_ok()
        && DATABASE.by_id(upper.as_str()).is_some()
}

impl std::fmt::Debug for Phone {
    // Never print a full number, even in debug output that may reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Phone({})", self.masked)
    }
}

impl Phone {
    /// Parses what a person typed (`8 (916) 123-45-67`, `+7 916 123 45 67`, `89161234567`),
    /// with `default_region` for numbers without a country code, accepting only mobile numbers of
    /// `allowed` countries (ISO 3166 alpha-2 codes).
    pub fn parse(input: &str, default_region: &str, allowed: &[String]) -> Result<Self, PhoneError> {
        let input = input.trim();
        if input.is_empty()
            || input.len() > MAX_INPUT_LEN
            || !input.chars().all(|c| c.is_ascii_digit() || " +-().".contains(c))
        {
            return Err(PhoneError::Invalid);
        }
        let region = country::Id::from_str(default_region).map_err(|_| PhoneError::Invalid)?;
        let number = phonenumber::parse(Some(region), input).map_err(|_| PhoneError::Invalid)?;
        if !phonenumber::is_valid(&number) {
            return Err(PhoneError::Invalid);
        }
        match number.number_type(&DATABASE) {
            Type::Mobile | Type::FixedLineOrMobile => {}
            _ => return Err(PhoneError::NotMobile),
        }
        let id = number.country().id().ok_or(PhoneError::Invalid)?;
        let code = format!("{id:?}");
        if !allowed.iter().any(|a| a.eq_ignore_ascii_case(&code)) {
            return Err(PhoneError::CountryNotAllowed);
        }
        Ok(Self::from_number(&number))
    }

    /// Rebuilds a phone from its stored E.164 form (already validated when it was stored).
    /// Only the country calling code is looked up (they are prefix-free): no full parse, which
    /// runs the metadata's regular expressions and showed in the sign-in flow's profile.
    pub fn from_e164(e164: &str) -> Result<Self, PhoneError> {
        let digits = e164.strip_prefix('+').ok_or(PhoneError::Invalid)?;
        if !(8..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.starts_with('0') {
            return Err(PhoneError::Invalid);
        }
        let cc_len = (1..=3)
            .find(|&n| digits[..n].parse::<u16>().is_ok_and(|cc| DATABASE.region(&cc).is_some()))
            .ok_or(PhoneError::Invalid)?;
        let (cc, national) = digits.split_at(cc_len);
        Ok(Self { masked: mask(cc, national), e164: e164.to_string() })
    }

    fn from_number(number: &PhoneNumber) -> Self {
        let e164 = number.format().mode(Mode::E164).to_string();
        let cc = number.code().value().to_string();
        let national = &e164[1 + cc.len()..];
        Self { masked: mask(&cc, national), e164 }
    }

    /// The canonical E.164 form, for sending and for keyed hashing. Never log it.
    pub fn e164(&self) -> &str {
        &self.e164
    }

    /// The masked form shown to people and written to logs: `+7 916 ***-**-67`.
    pub fn masked(&self) -> &str {
        &self.masked
    }
}

fn mask(cc: &str, national: &str) -> String {
    let n = national.len();
    if n < 6 {
        return format!("+{cc} ***");
    }
    let head = &national[..3];
    let tail = &national[n - 2..];
    let hidden = n - 5;
    // Group the hidden digits like a Russian number: ***-**-67 for the usual 10-digit national number.
    let stars = if hidden == 5 { "***-**".to_string() } else { "*".repeat(hidden) };
    format!("+{cc} {head} {stars}-{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ru() -> Vec<String> {
        vec!["RU".into()]
    }

    /// Regions are ISO 3166-1 alpha-2 codes with libphonenumber metadata; `XX` (user-assigned in
    /// ISO 3166) and the non-geographic `001` are not.
    #[test]
    fn known_regions_are_iso_codes_with_numbering_metadata() {
        for ok in ["RU", "by", "KZ", "US"] {
            assert!(is_known_region(ok), "{ok}");
        }
        for bad in ["XX", "ZZ", "001", "RUS", "", "R"] {
            assert!(!is_known_region(bad), "{bad}");
        }
    }

    #[test]
    fn russian_national_forms_are_the_same_number() {
        for input in ["8 (916) 123-45-67", "+7 916 123 45 67", "89161234567", "+7(916)123-45-67", "9161234567"] {
            let p = Phone::parse(input, "RU", &ru()).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(p.e164(), "+79161234567", "{input}");
        }
    }

    #[test]
    fn masked_form_hides_the_middle() {
        let p = Phone::parse("+7 900 000-00-01", "RU", &ru()).unwrap();
        assert_eq!(p.e164(), "+79000000001");
        assert_eq!(p.masked(), "+7 900 ***-**-01");
        assert!(!format!("{p:?}").contains("79000000001"));
    }

    #[test]
    fn landlines_are_refused() {
        // A Moscow landline (495) is valid but cannot receive an SMS code.
        assert_eq!(Phone::parse("+7 495 123-45-67", "RU", &ru()), Err(PhoneError::NotMobile));
    }

    #[test]
    fn garbage_is_invalid() {
        for input in ["", "abc", "12", "+7 916 123 45 67 89 00", "8916123456<script>", "٩١٦١٢٣٤٥٦٧", &"9".repeat(40)]
        {
            assert_eq!(Phone::parse(input, "RU", &ru()), Err(PhoneError::Invalid), "{input}");
        }
    }

    #[test]
    fn foreign_mobiles_need_their_country_allowed() {
        // A UK mobile.
        assert_eq!(Phone::parse("+44 7400 123456", "RU", &ru()), Err(PhoneError::CountryNotAllowed));
        let p = Phone::parse("+44 7400 123456", "RU", &["RU".into(), "GB".into()]).unwrap();
        assert_eq!(p.e164(), "+447400123456");
        // Kazakhstan shares +7 with Russia but is another country.
        assert_eq!(Phone::parse("+7 701 123 45 67", "RU", &ru()), Err(PhoneError::CountryNotAllowed));
    }

    #[test]
    fn e164_round_trip() {
        let all = ["RU".to_string(), "GB".into(), "BY".into(), "UZ".into()];
        // Country calling codes of one, two and three digits.
        for input in ["8 916 123 45 67", "+44 7400 123456", "+375 29 123-45-67", "+998 90 123 45 67"] {
            let p = Phone::parse(input, "RU", &all).unwrap();
            assert_eq!(Phone::from_e164(p.e164()).unwrap(), p, "{input}");
        }
        for stored in ["", "79161234567", "+7916", "+0916123456", "+7916123456a", "+999123456789"] {
            assert_eq!(Phone::from_e164(stored), Err(PhoneError::Invalid), "{stored}");
        }
    }

    proptest! {
        /// A stored phone comes back as it was parsed, masked form included.
        #[test]
        fn stored_form_round_trips(rest in "9[0-9]{9}") {
            if let Ok(p) = Phone::parse(&rest, "RU", &ru()) {
                prop_assert_eq!(Phone::from_e164(p.e164()).unwrap(), p);
            }
        }

        /// Normalisation is idempotent: parsing the canonical form gives the same phone.
        #[test]
        fn normalisation_is_idempotent(rest in "9[0-9]{9}", prefix in prop_oneof![Just("8"), Just("+7"), Just("7"), Just("")]) {
            if let Ok(p) = Phone::parse(&format!("{prefix}{rest}"), "RU", &ru()) {
                let again = Phone::parse(p.e164(), "RU", &ru()).unwrap();
                prop_assert_eq!(again.e164(), p.e164());
                prop_assert_eq!(again.masked(), p.masked());
            }
        }

        /// Arbitrary input never panics.
        #[test]
        fn arbitrary_input_never_panics(s in "\\PC{0,40}") {
            let _ = Phone::parse(&s, "RU", &ru());
        }
    }
}
