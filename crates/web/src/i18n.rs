//! Locales: Russian by default, English second. Strings live in `locales/{ru,en}/main.ftl`.

use axum::http::{HeaderMap, header};
use fluent_templates::fluent_bundle::FluentValue;
use fluent_templates::{LanguageIdentifier, Loader, langid};
use std::borrow::Cow;
use std::collections::HashMap;

fluent_templates::static_loader! {
    static LOCALES = {
        locales: "./locales",
        fallback_language: "ru",
        // No Unicode isolation marks around arguments: they would end up inside HTML attributes.
        customise: |bundle| bundle.set_use_isolating(false),
    };
}

/// A user-interface language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    /// Russian (default).
    #[default]
    Ru,
    /// English.
    En,
}

impl Lang {
    /// The language a request asks for: the `lang` cookie, else the first supported language of
    /// `Accept-Language`, else Russian.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        if let Some(v) = crate::cookies::get_cookie(headers, "lang") {
            return Self::parse(&v).unwrap_or_default();
        }
        let accept = headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()).unwrap_or("");
        for part in accept.split(',') {
            let tag = part.split(';').next().unwrap_or("").trim();
            if let Some(l) = Self::parse(tag.split('-').next().unwrap_or("")) {
                return l;
            }
        }
        Lang::Ru
    }

    /// The first supported language of a space-separated list of BCP 47 tags, most preferred first
    /// (OIDC Core §3.1.2.1 `ui_locales`, e.g. `fr-CA en-GB ru`): matched on the primary subtag.
    pub fn first_supported(tags: &str) -> Option<Self> {
        tags.split(' ').find_map(|t| Self::parse(t.split('-').next().unwrap_or("")))
    }

    /// Parses `ru` or `en`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "ru" => Some(Lang::Ru),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// The BCP 47 tag.
    pub fn tag(self) -> &'static str {
        match self {
            Lang::Ru => "ru",
            Lang::En => "en",
        }
    }

    fn id(self) -> LanguageIdentifier {
        match self {
            Lang::Ru => langid!("ru"),
            Lang::En => langid!("en"),
        }
    }
}

/// A translator for one request, handed to templates as `tr`.
#[derive(Debug, Clone)]
pub struct Tr {
    /// The language.
    pub lang: Lang,
    id: LanguageIdentifier,
}

impl Tr {
    /// A translator for `lang`.
    pub fn new(lang: Lang) -> Self {
        Self { lang, id: lang.id() }
    }

    /// The message `key`.
    pub fn t(&self, key: &str) -> String {
        LOCALES.lookup(&self.id, key)
    }

    /// The message `key` with one named argument.
    pub fn t1(&self, key: &str, name: &'static str, value: impl std::fmt::Display) -> String {
        let mut args: HashMap<Cow<'static, str>, FluentValue> = HashMap::new();
        args.insert(Cow::Borrowed(name), FluentValue::from(value.to_string()));
        LOCALES.lookup_with_args(&self.id, key, &args)
    }

    /// The message `key` with two named arguments.
    pub fn t2(
        &self,
        key: &str,
        (n1, v1): (&'static str, &dyn std::fmt::Display),
        (n2, v2): (&'static str, &dyn std::fmt::Display),
    ) -> String {
        let mut args: HashMap<Cow<'static, str>, FluentValue> = HashMap::new();
        args.insert(Cow::Borrowed(n1), FluentValue::from(v1.to_string()));
        args.insert(Cow::Borrowed(n2), FluentValue::from(v2.to_string()));
        LOCALES.lookup_with_args(&self.id, key, &args)
    }

    /// The language tag, for `<html lang>`.
    pub fn tag(&self) -> &'static str {
        self.lang.tag()
    }

    /// The other language, for the language switch.
    pub fn other(&self) -> &'static str {
        match self.lang {
            Lang::Ru => "en",
            Lang::En => "ru",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    /// OIDC Core §3.1.2.1 `ui_locales`: preference order, primary subtag, unsupported tags skipped.
    #[test]
    fn the_first_supported_ui_locale_wins() {
        assert_eq!(Lang::first_supported("fr-CA en-GB ru"), Some(Lang::En));
        assert_eq!(Lang::first_supported("ru-RU en"), Some(Lang::Ru));
        assert_eq!(Lang::first_supported("de fr"), None);
        assert_eq!(Lang::first_supported(""), None);
    }

    #[test]
    fn russian_by_default_english_on_request() {
        let mut h = HeaderMap::new();
        assert_eq!(Lang::from_headers(&h), Lang::Ru);
        h.insert(header::ACCEPT_LANGUAGE, HeaderValue::from_static("en-US,en;q=0.9"));
        assert_eq!(Lang::from_headers(&h), Lang::En);
        h.insert(header::COOKIE, HeaderValue::from_static("lang=ru"));
        assert_eq!(Lang::from_headers(&h), Lang::Ru);
    }

    #[test]
    fn every_key_exists_in_both_locales() {
        let ru = include_str!("../locales/ru/main.ftl");
        let en = include_str!("../locales/en/main.ftl");
        let keys = |s: &str| -> std::collections::BTreeSet<String> {
            s.lines()
                .filter(|l| !l.starts_with(' ') && !l.starts_with('#') && l.contains(" ="))
                .map(|l| l.split(" =").next().unwrap().trim().to_string())
                .collect()
        };
        assert_eq!(keys(ru), keys(en));
        assert_eq!(Tr::new(Lang::Ru).t("sferum-go"), "Перейти в Сферум");
        assert_eq!(Tr::new(Lang::En).t("sferum-go"), "Go to Sferum");
    }
}
