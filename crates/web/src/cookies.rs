//! Cookie reading and writing, with the attributes docs/architecture.md («Rules», web) asks for.

use axum::http::{HeaderMap, HeaderValue, header};

/// How cookies of one site are set.
#[derive(Debug, Clone)]
pub struct CookiePolicy {
    /// Cookie name prefix; `__Host-` when served over https (implies `Secure`, `Path=/`, no `Domain`).
    pub secure: bool,
}

impl CookiePolicy {
    /// The full cookie name for `base` under this policy.
    pub fn name(&self, base: &str) -> String {
        if self.secure { format!("__Host-{base}") } else { base.to_string() }
    }

    /// A `Set-Cookie` value: `HttpOnly`, `SameSite=Lax`, `Path=/`, `Secure` over https.
    pub fn set(&self, base: &str, value: &str, max_age_secs: Option<i64>) -> HeaderValue {
        let mut s = format!("{}={}; Path=/; HttpOnly; SameSite=Lax", self.name(base), value);
        if self.secure {
            s.push_str("; Secure");
        }
        if let Some(age) = max_age_secs {
            s.push_str(&format!("; Max-Age={age}"));
        }
        HeaderValue::from_str(&s).expect("cookie values are URL-safe base64")
    }

    /// A `Set-Cookie` that deletes the cookie.
    pub fn clear(&self, base: &str) -> HeaderValue {
        self.set(base, "", Some(0))
    }

    /// Reads the cookie `base` from request headers.
    pub fn get(&self, headers: &HeaderMap, base: &str) -> Option<String> {
        get_cookie(headers, &self.name(base))
    }
}

/// Reads cookie `name` from all `Cookie` headers; the first occurrence wins.
pub fn get_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_sets() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; sid=xyz; b=2"));
        let p = CookiePolicy { secure: false };
        assert_eq!(p.get(&h, "sid").as_deref(), Some("xyz"));
        assert_eq!(p.get(&h, "none"), None);
        let set = p.set("sid", "v", None);
        assert_eq!(set.to_str().unwrap(), "sid=v; Path=/; HttpOnly; SameSite=Lax");
        let s = CookiePolicy { secure: true }.set("sid", "v", Some(10));
        assert_eq!(s.to_str().unwrap(), "__Host-sid=v; Path=/; HttpOnly; SameSite=Lax; Secure; Max-Age=10");
    }
}
