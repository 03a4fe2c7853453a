//! Pushed authorization requests (RFC 9126) for the diary's apps: the authorization request built
//! by [`RelyingParty::start`] is posted to MAX's PAR endpoint, and the app is sent to MAX with
//! only `client_id` and the `request_uri` (§4). The app's DPoP key thumbprint goes along as
//! `dpop_jkt` (RFC 9449 §10), and MAX's `DPoP-Nonce` comes back for the app's token proof.

use super::{RelyingParty, RpError};
use std::time::Duration;

/// A pushed request: where to send the app, and what its DPoP proof needs.
#[derive(Debug)]
pub struct Pushed {
    /// `authorization_endpoint?client_id=…&request_uri=…`.
    pub url: String,
    /// MAX's token endpoint (the proof's `htu`).
    pub token_endpoint: String,
    /// MAX's DPoP nonce, if it gave one.
    pub dpop_nonce: Option<String>,
}

impl RelyingParty {
    /// Pushes the authorization request `url` of public client `client_id`, bound to `dpop_jkt`.
    pub async fn push(&self, url: &str, client_id: &str, dpop_jkt: Option<&str>) -> Result<Pushed, RpError> {
        let unavailable = |e: reqwest::Error| RpError::Unavailable(e.without_url().to_string());
        // The PAR endpoint is not in `openidconnect`'s metadata type: read the document itself.
        let doc: serde_json::Value = self
            .http
            .get(format!("{}/.well-known/openid-configuration", self.issuer))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(unavailable)?
            .json()
            .await
            .map_err(unavailable)?;
        let endpoint = |k: &str| {
            doc[k].as_str().map(str::to_owned).ok_or_else(|| RpError::Invalid(format!("no {k} in MAX's metadata")))
        };
        let (par, token_endpoint) = (endpoint("pushed_authorization_request_endpoint")?, endpoint("token_endpoint")?);
        let mut front = url::Url::parse(url).map_err(|e| RpError::Invalid(e.to_string()))?;
        let mut params: Vec<(String, String)> = front.query_pairs().into_owned().collect();
        if let Some(j) = dpop_jkt {
            params.push(("dpop_jkt".into(), j.into()));
        }
        let resp = self.http.post(par).form(&params).send().await.map_err(unavailable)?;
        let status = resp.status();
        let dpop_nonce = resp.headers().get("dpop-nonce").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body: serde_json::Value = resp.json().await.map_err(unavailable)?;
        if status.is_client_error() {
            // MAX refused this request (e.g. an app without its DPoP key): not an outage.
            return Err(RpError::Refused(format!("PAR: {status} {}", body["error_description"])));
        }
        if status != reqwest::StatusCode::CREATED {
            return Err(RpError::Unavailable(format!("PAR: {status}")));
        }
        let request_uri =
            body["request_uri"].as_str().ok_or_else(|| RpError::Invalid("no request_uri".into()))?.to_string();
        front.set_query(None);
        front.query_pairs_mut().append_pair("client_id", client_id).append_pair("request_uri", &request_uri);
        Ok(Pushed { url: front.to_string(), token_endpoint, dpop_nonce })
    }
}
