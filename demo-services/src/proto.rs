//! Generated gRPC code of `proto/shop/v1/reviews.proto`.

/// `shop.v1`: `reviews_client::ReviewsClient`, `reviews_server::{Reviews, ReviewsServer}`
/// and the messages.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod reviews {
    tonic::include_proto!("shop.v1");
}
