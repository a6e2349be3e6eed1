//! gRPC streams across two sidecars: messages, trailers and status intact,
//! and certificate renewal under a long-lived stream.

use std::time::{Duration, Instant};

use mycel_demo::proto::reviews::{ChatMessage, StreamReviewsRequest};
use mycel_tests::grpc::reviews_via;
use mycel_tests::mesh::{spiffe, Mesh, Sidecar, SidecarSpec};
use mycel_tests::shop::{mesh_yaml, workload, Workload};
use tokio_stream::StreamExt;

/// Reviews v1 and a client sidecar, both started with `sidecar_args`.
async fn reviews_and_client(sidecar_args: &[&str]) -> (Mesh, Workload, Sidecar) {
    let mesh = Mesh::start(&mesh_yaml("")).await;
    let with_args = |mut spec: SidecarSpec| {
        for a in sidecar_args {
            spec = spec.arg(a);
        }
        spec
    };
    let reviews = workload(
        &mesh,
        "reviews",
        "reviews",
        "grpc",
        &["--version", "v1"],
        with_args,
    )
    .await;
    let client = mesh
        .sidecar(with_args(SidecarSpec::new("client", "frontend")))
        .await;
    (mesh, reviews, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_streaming_and_bidi_keep_messages_trailers_and_status() {
    let (_mesh, _reviews, client) = reviews_and_client(&[]).await;
    let mut rc = reviews_via(client.outbound()).await;

    for (code, message) in [(0, ""), (9, "stream ended on purpose")] {
        let mut stream = rc
            .stream_reviews(StreamReviewsRequest {
                product_id: "1".into(),
                count: 5,
                final_status_code: code,
                final_message: message.into(),
            })
            .await
            .expect("start stream")
            .into_inner();
        let mut got = 0;
        let end = loop {
            match stream.next().await {
                Some(Ok(review)) => {
                    assert_eq!(review.product_id, "1");
                    got += 1;
                }
                Some(Err(status)) => break Some(status),
                None => break None,
            }
        };
        assert_eq!(got, 5, "all streamed messages arrive");
        match (code, end) {
            (0, None) => {}
            (0, Some(s)) => panic!("OK stream ended with {s:?}"),
            (_, Some(s)) => {
                assert_eq!(s.code() as i32, code, "{s:?}");
                assert_eq!(s.message(), message);
            }
            (_, None) => panic!("status {code} lost on the way: stream ended OK"),
        }
    }

    // Bidi: interleaved request and reply, each answered in turn.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut replies = rc
        .chat(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("start chat")
        .into_inner();
    for i in 1..=10u64 {
        tx.send(ChatMessage {
            sequence: 0,
            text: format!("hello {i}"),
            caller: String::new(),
        })
        .await
        .unwrap();
        let echo = tokio::time::timeout(Duration::from_secs(5), replies.next())
            .await
            .expect("echo in time")
            .expect("stream open")
            .expect("echo ok");
        assert_eq!(echo.sequence, i);
        assert_eq!(echo.text, format!("hello {i}"));
        assert_eq!(echo.caller, spiffe("shop", "frontend"));
    }
    drop(tx);
    let end = tokio::time::timeout(Duration::from_secs(5), replies.next())
        .await
        .expect("end in time");
    assert!(end.is_none(), "bidi stream must end cleanly: {end:?}");
}

async fn serial(sidecar: &Sidecar) -> String {
    let certs = sidecar.admin_json("/certs").await;
    certs["serial"].as_str().expect("serial").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_under_a_long_lived_stream_fails_no_message() {
    let (_mesh, reviews, client) = reviews_and_client(&["--cert-ttl", "6s"]).await;
    let mut rc = reviews_via(client.outbound()).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut replies = rc
        .chat(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("start chat")
        .into_inner();

    let mut client_serials = vec![serial(&client).await];
    let mut server_serials = vec![serial(&reviews.sidecar).await];
    let start = Instant::now();
    let mut i = 0u64;
    // ~14 s: at 6 s lifetimes each side renews at least twice.
    while start.elapsed() < Duration::from_secs(14) && i < 200 {
        i += 1;
        tx.send(ChatMessage {
            sequence: 0,
            text: format!("m{i}"),
            caller: String::new(),
        })
        .await
        .expect("stream still open");
        let echo = tokio::time::timeout(Duration::from_secs(5), replies.next())
            .await
            .expect("echo in time")
            .expect("stream open")
            .unwrap_or_else(|s| panic!("message {i} failed during renewal: {s:?}"));
        assert_eq!(echo.sequence, i);
        for (sc, seen) in [
            (&client, &mut client_serials),
            (&reviews.sidecar, &mut server_serials),
        ] {
            let s = serial(sc).await;
            if seen.last() != Some(&s) {
                seen.push(s);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        client_serials.len() >= 3,
        "client renewed too rarely: {client_serials:?}"
    );
    assert!(
        server_serials.len() >= 3,
        "server renewed too rarely: {server_serials:?}"
    );

    // New connections use the renewed certificates too.
    let mut fresh = reviews_via(client.outbound()).await;
    let r = fresh
        .get_reviews(mycel_demo::proto::reviews::GetReviewsRequest {
            product_id: "1".into(),
        })
        .await
        .expect("unary after renewal");
    assert_eq!(r.into_inner().caller, spiffe("shop", "frontend"));
}
