//! Who a Pod's proxy is, according to the API server: its projected
//! service-account token goes into a `TokenReview`, and the identity to
//! issue comes from the review's answer, never from the request.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::PostParams;
use kube::{Api, Client};
use mycel_api::spiffe::SpiffeId;

/// The audience the injector requests for the proxy's projected token; a
/// token for any other audience (e.g. the API server's own) is refused, so
/// a token lifted from an app container cannot buy a certificate.
pub const AUDIENCE: &str = "mycel";

/// A token the API server vouched for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reviewed {
    pub identity: SpiffeId,
    /// The Pod the token is bound to, when the token is a bound one.
    pub pod: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("the token was refused by the API server: {0}")]
    Unauthenticated(String),
    #[error("the token is not for audience {AUDIENCE:?} (it is for {0:?})")]
    Audience(Vec<String>),
    #[error("the token belongs to {0:?}, not to a service account")]
    NotServiceAccount(String),
    #[error("the service account {0:?} is not a valid mesh identity: {1}")]
    Identity(String, String),
    #[error("cannot ask the API server to review the token: {0}")]
    Api(#[source] kube::Error),
}

impl ReviewError {
    /// Whether the caller is at fault (its token), rather than the API
    /// server being unreachable.
    pub fn is_refusal(&self) -> bool {
        !matches!(self, Self::Api(_))
    }
}

/// Reviews tokens with the API server.
#[derive(Clone)]
pub struct TokenReviewer {
    client: Client,
    trust_domain: String,
}

impl TokenReviewer {
    pub fn new(client: Client, trust_domain: impl Into<String>) -> Self {
        Self {
            client,
            trust_domain: trust_domain.into(),
        }
    }

    pub async fn review(&self, token: &str) -> Result<Reviewed, ReviewError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(vec![AUDIENCE.to_string()]),
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(ReviewError::Api)?;
        judge(&self.trust_domain, answer.status.unwrap_or_default())
    }
}

/// The identity a review's status grants, or why it grants none.
pub fn judge(trust_domain: &str, status: TokenReviewStatus) -> Result<Reviewed, ReviewError> {
    if status.authenticated != Some(true) {
        return Err(ReviewError::Unauthenticated(
            status
                .error
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "not authenticated".into()),
        ));
    }
    let audiences = status.audiences.unwrap_or_default();
    if !audiences.iter().any(|a| a == AUDIENCE) {
        return Err(ReviewError::Audience(audiences));
    }
    let user = status.user.unwrap_or_default();
    let username = user.username.unwrap_or_default();
    let Some(rest) = username.strip_prefix("system:serviceaccount:") else {
        return Err(ReviewError::NotServiceAccount(username));
    };
    let Some((namespace, account)) = rest.split_once(':') else {
        return Err(ReviewError::NotServiceAccount(username));
    };
    let identity = SpiffeId::new(trust_domain, namespace, account)
        .map_err(|e| ReviewError::Identity(username.clone(), e.to_string()))?;
    let pod = user
        .extra
        .unwrap_or_default()
        .get("authentication.kubernetes.io/pod-name")
        .and_then(|v| v.first().cloned());
    Ok(Reviewed { identity, pod })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::authentication::v1::UserInfo;

    use super::*;

    fn status(authenticated: bool, audiences: &[&str], username: &str) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(authenticated),
            audiences: Some(audiences.iter().map(|a| a.to_string()).collect()),
            user: Some(UserInfo {
                username: Some(username.into()),
                extra: Some(BTreeMap::from([(
                    "authentication.kubernetes.io/pod-name".to_string(),
                    vec!["web-0".to_string()],
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn review_answers_become_identities_or_refusals() {
        let ok = judge(
            "cluster.local",
            status(true, &["mycel"], "system:serviceaccount:shop:web"),
        )
        .unwrap();
        assert_eq!(
            ok.identity.to_string(),
            "spiffe://cluster.local/ns/shop/sa/web"
        );
        assert_eq!(ok.pod.as_deref(), Some("web-0"));

        let cases = [
            (
                status(false, &["mycel"], "system:serviceaccount:shop:web"),
                "refused",
            ),
            (
                status(
                    true,
                    &["https://kubernetes.default.svc"],
                    "system:serviceaccount:shop:web",
                ),
                "audience",
            ),
            (
                status(true, &["mycel"], "alice"),
                "not to a service account",
            ),
            (
                status(true, &["mycel"], "system:serviceaccount:shop"),
                "not to a service account",
            ),
            (
                status(true, &["mycel"], "system:serviceaccount:Shop!:web"),
                "not a valid mesh identity",
            ),
        ];
        for (st, want) in cases {
            let err = judge("cluster.local", st).unwrap_err();
            assert!(err.to_string().contains(want), "{err} should say {want}");
            assert!(err.is_refusal());
        }
    }
}
