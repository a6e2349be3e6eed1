//! `frontend`: reads the catalog, then for every product asks reviews (gRPC)
//! and ratings (REST), and serves the result as JSON (`/api/products`) and
//! as a page (`/`), with each product's stock and the latest notifications
//! (from `notifications`, reached like the others). A failing dependency
//! shows up in `calls` (notifications: a note of its own); a failing
//! catalog makes the answer a 502.

pub mod html;
pub mod view;

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tonic::transport::Channel;

use crate::catalog::ProductList;
use crate::faults::Faults;
use crate::http::{json, json_error, peer_id, text, Body, Handler};
use crate::notifications::NotificationList;
use crate::proto::reviews::reviews_client::ReviewsClient;
use crate::proto::reviews::GetReviewsRequest;
use crate::ratings::Rating;
use crate::reviews::GRPC_PORT;
use crate::trace::TraceHeaders;
use crate::upstream::{get_json, UpstreamError, Upstreams};
use view::{product_view, CallReport, CatalogFailed, Notifications, ProductsView};

pub struct Frontend {
    faults: Arc<Faults>,
    upstreams: Upstreams,
    timeout: Duration,
    reviews: ReviewsClient<Channel>,
}

impl Frontend {
    pub fn new(
        faults: Arc<Faults>,
        upstreams: Upstreams,
        timeout: Duration,
    ) -> Result<Self, UpstreamError> {
        let channel = upstreams.grpc_channel("reviews", GRPC_PORT, timeout)?;
        Ok(Frontend {
            faults,
            upstreams,
            timeout,
            reviews: ReviewsClient::new(channel),
        })
    }

    /// Everything `/api/products` shows; `Err` when the catalog failed.
    pub async fn products(&self, trace: &TraceHeaders) -> Result<ProductsView, CatalogFailed> {
        let list: ProductList =
            match get_json(&self.upstreams, "catalog", "/products", self.timeout, trace).await {
                Ok(list) => list,
                Err(e) => {
                    let error = e.to_string();
                    return Err(CatalogFailed {
                        calls: vec![CallReport::failed("catalog", None, error.clone())],
                        error,
                    });
                }
            };
        let mut out = ProductsView {
            products: Vec::with_capacity(list.products.len()),
            calls: vec![CallReport::ok("catalog", None, list.caller)],
            caller: None,
            trace_id: None,
            notifications: Notifications::default(),
        };
        // The catalog is a handful of items, so one concurrent pair of calls
        // per product stays small.
        let per_product = list.products.iter().map(|product| async move {
            let reviews = async {
                let mut client = self.reviews.clone();
                client
                    .get_reviews(trace.grpc_request(GetReviewsRequest {
                        product_id: product.id.clone(),
                    }))
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
            };
            let path = format!("/ratings/{}", product.id);
            let rating = async {
                get_json::<Rating>(&self.upstreams, "ratings", &path, self.timeout, trace)
                    .await
                    .map_err(|e| e.to_string())
            };
            let (reviews, rating) = futures::join!(reviews, rating);
            product_view(product, reviews, rating)
        });
        let notifications = self.notifications(trace);
        let (per_product, notifications) =
            futures::join!(futures::future::join_all(per_product), notifications);
        for (view, calls) in per_product {
            out.products.push(view);
            out.calls.extend(calls);
        }
        out.notifications = notifications;
        Ok(out)
    }

    /// The latest notifications, or why there are none to show.
    pub async fn notifications(&self, trace: &TraceHeaders) -> Notifications {
        let path = "/notifications";
        match get_json::<NotificationList>(
            &self.upstreams,
            "notifications",
            path,
            self.timeout,
            trace,
        )
        .await
        {
            Ok(list) => Notifications {
                items: list.notifications,
                caller: list.caller,
                error: None,
            },
            Err(e) => Notifications {
                error: Some(e.to_string()),
                ..Notifications::default()
            },
        }
    }
}

impl Handler for Frontend {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path();
        if path == "/healthz" {
            return text(StatusCode::OK, "ok\n");
        }
        let caller = peer_id(req.headers());
        if req.method() != Method::GET {
            return json_error(StatusCode::METHOD_NOT_ALLOWED, "only GET", caller);
        }
        let is_page = match path {
            "/" => true,
            "/api/products" => false,
            _ => return json_error(StatusCode::NOT_FOUND, &format!("no route {path}"), caller),
        };
        if let Err(fault) = self.faults.apply().await {
            return json_error(StatusCode::SERVICE_UNAVAILABLE, &fault.to_string(), caller);
        }
        // The page is rendered from the same aggregation the API serves.
        let trace = TraceHeaders::of(req.headers());
        let trace_id = crate::trace::trace_id(req.headers());
        let products = self.products(&trace).await.map(|view| ProductsView {
            caller: caller.clone(),
            trace_id: trace_id.clone(),
            ..view
        });
        match (products, is_page) {
            (Ok(view), false) => json(StatusCode::OK, &view),
            (Err(failed), false) => json(StatusCode::BAD_GATEWAY, &failed),
            (Ok(view), true) => crate::http::html(StatusCode::OK, html::page(&view, None)),
            (Err(failed), true) => {
                let view = ProductsView {
                    products: Vec::new(),
                    calls: failed.calls,
                    caller,
                    trace_id,
                    notifications: Notifications::default(),
                };
                crate::http::html(
                    StatusCode::BAD_GATEWAY,
                    html::page(&view, Some(&failed.error)),
                )
            }
        }
    }
}
