//! `reviews` (gRPC `shop.v1.Reviews`): v1 answers reviews without stars; v2
//! also asks `ratings` (REST, through the proxy) and includes the stars and
//! the caller identity ratings saw. `StreamReviews` and `Chat` exist for the
//! mesh tests: trailers, status codes and bidirectional streams.

// tonic's `Status` is large, and it is what every gRPC handler returns.
#![allow(clippy::result_large_err)]

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tonic::{Code, Request, Response, Status, Streaming};

use crate::config::Version;
use crate::faults::Faults;
use crate::proto::reviews::reviews_server::{self, ReviewsServer};
use crate::proto::reviews::{
    ChatMessage, GetReviewsRequest, GetReviewsResponse, Review, StreamReviewsRequest,
};
use crate::ratings::Rating;
use crate::upstream::{get_json, Upstreams};
use crate::PEER_ID_HEADER;

/// The gRPC port the `reviews` service is published on in the mesh.
pub const GRPC_PORT: u16 = 9090;
/// Upper bound of `StreamReviews.count`, so one request cannot pin a task forever.
pub const MAX_STREAM_COUNT: u32 = 10_000;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The reviews of a product: two fixed ones per known product, keyed on the
/// id so every replica and version agree.
pub fn reviews_for(product_id: &str) -> Vec<Review> {
    let known = crate::catalog::find(product_id).is_some();
    if !known {
        return Vec::new();
    }
    [
        ("ana", "Worked the first time. Would grow again."),
        ("bo", "Took longer than the box said, but tasty."),
    ]
    .into_iter()
    .map(|(reviewer, text)| Review {
        product_id: product_id.to_string(),
        reviewer: reviewer.to_string(),
        text: text.to_string(),
        stars: None,
    })
    .collect()
}

/// Product ids go into a URL path to ratings; keep them to a safe alphabet.
pub fn check_product_id(id: &str) -> Result<(), Status> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "product_id {id:?} must be 1-64 characters of [A-Za-z0-9_-]"
        )))
    }
}

pub struct ReviewsService {
    version: Version,
    faults: Arc<Faults>,
    upstreams: Upstreams,
    upstream_timeout: Duration,
}

impl ReviewsService {
    pub fn new(
        version: Version,
        faults: Arc<Faults>,
        upstreams: Upstreams,
        upstream_timeout: Duration,
    ) -> Self {
        ReviewsService {
            version,
            faults,
            upstreams,
            upstream_timeout,
        }
    }

    pub fn into_server(self) -> ReviewsServer<Self> {
        ReviewsServer::new(self)
    }

    async fn fault(&self) -> Result<(), Status> {
        self.faults
            .apply()
            .await
            .map_err(|f| Status::unavailable(f.to_string()))
    }
}

fn caller<T>(req: &Request<T>) -> String {
    req.metadata()
        .get(PEER_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[tonic::async_trait]
impl reviews_server::Reviews for ReviewsService {
    async fn get_reviews(
        &self,
        request: Request<GetReviewsRequest>,
    ) -> Result<Response<GetReviewsResponse>, Status> {
        let caller = caller(&request);
        let trace = crate::trace::TraceHeaders::of_grpc(&request);
        let product_id = request.into_inner().product_id;
        check_product_id(&product_id)?;
        self.fault().await?;
        let mut reply = GetReviewsResponse {
            reviews: reviews_for(&product_id),
            version: self.version.as_str().to_string(),
            caller,
            ratings_caller: None,
            ratings_error: None,
        };
        if self.version == Version::V2 {
            let path = format!("/ratings/{product_id}");
            match get_json::<Rating>(
                &self.upstreams,
                "ratings",
                &path,
                self.upstream_timeout,
                &trace,
            )
            .await
            {
                Ok(rating) => {
                    for review in &mut reply.reviews {
                        review.stars = Some(rating.stars);
                    }
                    reply.ratings_caller = Some(rating.caller.unwrap_or_default());
                }
                // Reviews still answer without stars, and say why.
                Err(e) => reply.ratings_error = Some(e.to_string()),
            }
        }
        Ok(Response::new(reply))
    }

    type StreamReviewsStream = BoxStream<Review>;

    async fn stream_reviews(
        &self,
        request: Request<StreamReviewsRequest>,
    ) -> Result<Response<Self::StreamReviewsStream>, Status> {
        let caller = caller(&request);
        let req = request.into_inner();
        if req.count > MAX_STREAM_COUNT {
            return Err(Status::invalid_argument(format!(
                "count {} is over the limit {MAX_STREAM_COUNT}",
                req.count
            )));
        }
        self.fault().await?;
        let product_id = req.product_id;
        let items = (0..req.count).map(move |i| {
            Ok(Review {
                product_id: product_id.clone(),
                reviewer: caller.clone(),
                text: format!("review {}", i + 1),
                stars: None,
            })
        });
        let end = match Code::from(req.final_status_code) {
            Code::Ok => None,
            code => Some(Err(Status::new(code, req.final_message))),
        };
        let stream = futures::stream::iter(items.chain(end));
        Ok(Response::new(Box::pin(stream)))
    }

    type ChatStream = BoxStream<ChatMessage>;

    async fn chat(
        &self,
        request: Request<Streaming<ChatMessage>>,
    ) -> Result<Response<Self::ChatStream>, Status> {
        let caller = caller(&request);
        self.fault().await?;
        let mut sequence = 0u64;
        let echoes = request.into_inner().map(move |message| {
            message.map(|m| {
                sequence += 1;
                ChatMessage {
                    sequence,
                    text: m.text,
                    caller: caller.clone(),
                }
            })
        });
        Ok(Response::new(Box::pin(echoes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_products_have_reviews_unknown_none() {
        let r = reviews_for("p1");
        assert_eq!(r.len(), 2);
        assert!(r.iter().all(|x| x.product_id == "p1" && x.stars.is_none()));
        assert!(reviews_for("zzz").is_empty());
    }

    #[test]
    fn product_id_table() {
        let cases = [
            ("p1", true),
            ("a-b_C9", true),
            ("", false),
            ("../etc", false),
            ("p 1", false),
            ("p1?x=1", false),
        ];
        for (id, ok) in cases {
            assert_eq!(check_product_id(id).is_ok(), ok, "{id:?}");
        }
        assert!(check_product_id(&"x".repeat(65)).is_err());
    }
}
