//! The JSON the frontend serves at `/api/products`, and the pure function
//! that assembles it from what each dependency answered.

use serde::{Deserialize, Serialize};

use crate::catalog::Product;
use crate::notifications::Notification;
use crate::proto::reviews::GetReviewsResponse;
use crate::ratings::Rating;

/// `GET /api/products`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProductsView {
    pub products: Vec<ProductView>,
    /// One entry per call the frontend made, in order, failures included.
    pub calls: Vec<CallReport>,
    /// Who called the frontend, as its sidecar vouched (`x-mycel-peer-id`):
    /// the ingress gateway's identity when the request came through it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub caller: Option<String>,
    /// The trace this request belongs to (from its `traceparent` or B3
    /// headers), so a user can find it in the tracing backend.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub trace_id: Option<String>,
    /// The latest notifications; a failure there is a note, not an error
    /// of the page (kept apart from `calls`, which are the products').
    #[serde(default)]
    pub notifications: Notifications,
}

/// What notifications answered.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Notifications {
    pub items: Vec<Notification>,
    /// The caller identity notifications saw.
    pub caller: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

/// Returned with HTTP 502 when the catalog itself could not be read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CatalogFailed {
    pub error: String,
    pub calls: Vec<CallReport>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProductView {
    pub id: String,
    pub name: String,
    pub price: f64,
    /// Units left, as the catalog said.
    #[serde(default)]
    pub stock: u32,
    pub reviews: Vec<ReviewView>,
    /// From ratings; `None` when that call failed.
    pub stars: Option<u32>,
    /// Which reviews version answered ("v1"/"v2"), when reviews answered.
    pub reviews_version: Option<String>,
    /// v2 only: the caller identity ratings saw when reviews asked it.
    pub reviews_ratings_caller: Option<String>,
    /// v2 only: why reviews could not get stars from ratings.
    pub reviews_ratings_error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReviewView {
    pub reviewer: String,
    pub text: String,
    pub stars: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallReport {
    /// "catalog", "reviews" or "ratings".
    pub service: String,
    /// The product the call was about (none for the catalog listing).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub product_id: Option<String>,
    /// The caller identity that service saw (its echo of `x-mycel-peer-id`).
    pub caller: Option<String>,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

impl CallReport {
    pub fn ok(service: &str, product_id: Option<&str>, caller: Option<String>) -> Self {
        CallReport {
            service: service.to_string(),
            product_id: product_id.map(str::to_string),
            caller,
            ok: true,
            error: None,
        }
    }

    pub fn failed(service: &str, product_id: Option<&str>, error: String) -> Self {
        CallReport {
            service: service.to_string(),
            product_id: product_id.map(str::to_string),
            caller: None,
            ok: false,
            error: Some(error),
        }
    }
}

/// One product's view and the two calls made for it (reviews, then ratings).
pub fn product_view(
    product: &Product,
    reviews: Result<GetReviewsResponse, String>,
    rating: Result<Rating, String>,
) -> (ProductView, [CallReport; 2]) {
    let id = product.id.as_str();
    let mut view = ProductView {
        id: product.id.clone(),
        name: product.name.clone(),
        price: product.price,
        stock: product.stock,
        reviews: Vec::new(),
        stars: None,
        reviews_version: None,
        reviews_ratings_caller: None,
        reviews_ratings_error: None,
    };
    let reviews_call = match reviews {
        Ok(reply) => {
            view.reviews = reply
                .reviews
                .into_iter()
                .map(|r| ReviewView {
                    reviewer: r.reviewer,
                    text: r.text,
                    stars: r.stars,
                })
                .collect();
            view.reviews_version = Some(reply.version);
            view.reviews_ratings_caller = reply.ratings_caller;
            view.reviews_ratings_error = reply.ratings_error;
            CallReport::ok("reviews", Some(id), non_empty(reply.caller))
        }
        Err(e) => CallReport::failed("reviews", Some(id), e),
    };
    let ratings_call = match rating {
        Ok(rating) => {
            view.stars = Some(rating.stars);
            CallReport::ok("ratings", Some(id), rating.caller)
        }
        Err(e) => CallReport::failed("ratings", Some(id), e),
    };
    (view, [reviews_call, ratings_call])
}

/// gRPC has no null string; an empty caller means the service saw none.
fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::reviews::Review;

    fn product() -> Product {
        crate::catalog::find("p1").unwrap()
    }

    #[test]
    fn all_ok() {
        let reviews = GetReviewsResponse {
            reviews: vec![Review {
                product_id: "p1".into(),
                reviewer: "ana".into(),
                text: "good".into(),
                stars: Some(4),
            }],
            version: "v2".into(),
            caller: "spiffe://f".into(),
            ratings_caller: Some("spiffe://r".into()),
            ratings_error: None,
        };
        let rating = Rating {
            product_id: "p1".into(),
            stars: 4,
            caller: Some("spiffe://f".into()),
        };
        let (view, calls) = product_view(&product(), Ok(reviews), Ok(rating));
        assert_eq!(view.stars, Some(4));
        assert_eq!(view.reviews.len(), 1);
        assert_eq!(view.reviews_version.as_deref(), Some("v2"));
        assert_eq!(view.reviews_ratings_caller.as_deref(), Some("spiffe://r"));
        assert!(calls
            .iter()
            .all(|c| c.ok && c.caller.as_deref() == Some("spiffe://f")));
        assert_eq!(calls[0].service, "reviews");
        assert_eq!(calls[1].service, "ratings");
    }

    #[test]
    fn failures_are_reported_not_hidden() {
        let (view, calls) = product_view(&product(), Err("boom".into()), Err("503".into()));
        assert!(view.reviews.is_empty());
        assert_eq!(view.stars, None);
        assert!(calls.iter().all(|c| !c.ok && c.error.is_some()));
    }

    #[test]
    fn json_shape() {
        let (view, calls) = product_view(&product(), Err("down".into()), Err("down".into()));
        let v = serde_json::to_value(ProductsView {
            products: vec![view],
            calls: calls.to_vec(),
            caller: None,
            trace_id: None,
            notifications: Notifications::default(),
        })
        .unwrap();
        let p = &v["products"][0];
        for key in ["id", "name", "price", "reviews", "stars"] {
            assert!(p.get(key).is_some(), "missing {key}");
        }
        let c = &v["calls"][0];
        assert_eq!(c["service"], "reviews");
        assert_eq!(c["ok"], false);
        assert_eq!(c["error"], "down");
        assert!(c.get("caller").is_some());
        // Successful calls carry no error key at all.
        let ok = serde_json::to_value(CallReport::ok("catalog", None, None)).unwrap();
        assert!(ok.get("error").is_none() && ok.get("product_id").is_none());
    }
}
