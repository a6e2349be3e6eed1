use std::os::unix::fs::PermissionsExt;

use super::*;
use tokio::time::Instant;

fn spec(ns: &str, sa: &str) -> TokenSpec {
    TokenSpec {
        namespace: ns.into(),
        service_account: sa.into(),
        ..TokenSpec::default()
    }
}

fn create(dir: &Path, ns: &str, sa: &str) -> String {
    create_token(dir, &spec(ns, sa)).unwrap().0
}

#[tokio::test(start_paused = true)]
async fn created_token_authenticates_to_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec("shop", "catalog");
    s.labels = parse_labels(&["app=catalog".into(), "version=v1".into()]).unwrap();
    s.addresses = vec!["10.0.0.0/24".parse().unwrap()];
    let (t, rec) = create_token(dir.path(), &s).unwrap();
    assert!(is_well_formed(&t), "{t}");
    assert_eq!(rec.id().len(), TOKEN_ID_LEN);
    let store = TokenStore::new(dir.path()).unwrap();
    let got = store.authenticate(&t).await.unwrap();
    assert_eq!(*got, rec);
    assert_eq!(got.labels["version"], "v1");
    assert_eq!(*store.by_id(rec.id()).await.unwrap(), rec);
}

#[test]
fn store_holds_hashes_only_with_private_mode() {
    let dir = tempfile::tempdir().unwrap();
    let t = create(dir.path(), "shop", "catalog");
    let path = tokens_path(dir.path());
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains(&t));
    assert!(!text.contains(t.trim_start_matches(TOKEN_PREFIX)));
    assert!(text.contains(&hash_token(&t)));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[tokio::test(start_paused = true)]
async fn token_created_after_start_is_found_by_reload() {
    let dir = tempfile::tempdir().unwrap();
    let store = TokenStore::new(dir.path()).unwrap();
    let t1 = create(dir.path(), "a", "one");
    assert_eq!(store.authenticate(&t1).await.unwrap().namespace, "a");
    // Created within the same second as the last look at the file: the
    // miss waits out the interval, then finds it.
    let t2 = create(dir.path(), "b", "two");
    assert_eq!(
        store.authenticate(&t2).await.unwrap().service_account,
        "two"
    );
}

#[tokio::test(start_paused = true)]
async fn unknown_token_flood_reads_the_file_at_most_once_per_second() {
    let dir = tempfile::tempdir().unwrap();
    create(dir.path(), "shop", "catalog");
    let store = TokenStore::new(dir.path()).unwrap();
    let unknown = format!("mycel.{}", "ab".repeat(32));
    let start = Instant::now();
    for _ in 0..1000 {
        assert_eq!(store.authenticate(&unknown).await, Err(AuthError::Unknown));
    }
    // An unchanged file is never read again, and misses do not wait.
    assert_eq!(store.reloads(), 1);
    assert_eq!(Instant::now(), start);
    // While the file keeps changing, it is read at most once a second.
    for i in 0..20 {
        create(dir.path(), "shop", &format!("sa{i}"));
        assert_eq!(store.authenticate(&unknown).await, Err(AuthError::Unknown));
    }
    let secs = (Instant::now() - start).as_secs();
    assert!(
        store.reloads() <= secs + 2,
        "{} reads in {secs}s",
        store.reloads()
    );
}

#[tokio::test(start_paused = true)]
async fn rejections() {
    let dir = tempfile::tempdir().unwrap();
    let (revoked, rec) = create_token(dir.path(), &spec("shop", "catalog")).unwrap();
    revoke_token(dir.path(), rec.id()).unwrap();
    let mut short = spec("shop", "catalog");
    short.ttl = Some(Duration::from_secs(1));
    let (expired, exp_rec) = create_token(dir.path(), &short).unwrap();
    let store = TokenStore::new(dir.path()).unwrap();
    // Expiry is wall-clock time, which paused tokio time does not move.
    std::thread::sleep(Duration::from_millis(2100));
    let unknown = format!("mycel.{}", "ab".repeat(32));
    let upper = format!("mycel.{}", "AB".repeat(32));
    let cases: Vec<(&str, AuthError)> = vec![
        ("", AuthError::Missing),
        ("nope", AuthError::Malformed),
        ("mycel.xyz", AuthError::Malformed),
        (&upper, AuthError::Malformed),
        (&unknown, AuthError::Unknown),
        (&revoked, AuthError::Revoked(rec.id().to_string())),
        (
            &expired,
            AuthError::Expired {
                id: exp_rec.id().to_string(),
                at: exp_rec.expires_unix.unwrap(),
            },
        ),
    ];
    for (token, want) in cases {
        assert_eq!(
            store.authenticate(token).await.unwrap_err(),
            want,
            "{token}"
        );
    }
    assert!(AuthError::Expired {
        id: "x".into(),
        at: 5
    }
    .to_string()
    .contains("expired"));
    // An expired token's certificates keep renewing; a revoked one's do not.
    assert!(store.by_id(exp_rec.id()).await.is_ok());
    assert_eq!(
        store.by_id(rec.id()).await.unwrap_err(),
        AuthError::Revoked(rec.id().to_string())
    );
    assert!(matches!(
        store.by_id("0123456789abcdef").await.unwrap_err(),
        AuthError::UnknownId(_)
    ));
}

#[test]
fn list_and_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec("shop", "catalog");
    s.ttl = Some(Duration::from_secs(3600));
    let (_, a) = create_token(dir.path(), &s).unwrap();
    let (_, b) = create_token(dir.path(), &spec("shop", "reviews")).unwrap();
    let all = list_tokens(dir.path()).unwrap();
    assert_eq!(all, vec![a.clone(), b.clone()]);
    assert_eq!(a.expires_unix, Some(a.created_unix + 3600));
    let r = revoke_token(dir.path(), b.id()).unwrap();
    let first = r.revoked_unix.unwrap();
    assert_eq!(
        revoke_token(dir.path(), b.id()).unwrap().revoked_unix,
        Some(first)
    );
    let e = revoke_token(dir.path(), "ffffffffffffffff").unwrap_err();
    assert_eq!(
        e.to_string(),
        "no token with id \"ffffffffffffffff\" (see `mycelctl token list`)"
    );
    assert_eq!(
        list_tokens(dir.path()).unwrap()[1].revoked_unix,
        Some(first)
    );
}

#[test]
fn concurrent_creates_lose_no_token() {
    let dir = tempfile::tempdir().unwrap();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let d = dir.path().to_path_buf();
            std::thread::spawn(move || {
                for j in 0..5 {
                    create_token(&d, &spec("shop", &format!("sa{i}-{j}"))).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(list_tokens(dir.path()).unwrap().len(), 40);
}

#[test]
fn invalid_specs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = create_token(dir.path(), &spec("Shop", "catalog")).unwrap_err();
    assert!(
        e.to_string().starts_with("invalid namespace \"Shop\""),
        "{e}"
    );
    let e = create_token(dir.path(), &spec("shop", "")).unwrap_err();
    assert!(
        e.to_string().starts_with("invalid service account \"\""),
        "{e}"
    );
    let mut zero = spec("shop", "catalog");
    zero.ttl = Some(Duration::ZERO);
    assert!(create_token(dir.path(), &zero).is_err());
    assert!(!tokens_path(dir.path()).exists());
    for (flags, want) in [
        (vec!["app"], "expected key=value"),
        (vec!["=x"], "keys are 1 to 253 bytes"),
        (vec!["a=1", "a=2"], "given twice"),
    ] {
        let flags: Vec<String> = flags.into_iter().map(String::from).collect();
        let e = parse_labels(&flags).unwrap_err().to_string();
        assert!(e.contains(want), "{e}");
    }
    let many: Vec<String> = (0..=limits::MAX_LABELS)
        .map(|i| format!("k{i}=v"))
        .collect();
    assert!(parse_labels(&many).is_err());
}

#[tokio::test]
async fn corrupt_store_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(tokens_path(dir.path()), "{not json").unwrap();
    let e = create_token(dir.path(), &spec("a", "b")).unwrap_err();
    assert!(
        e.to_string()
            .contains("tokens.json is not a valid token store"),
        "{e}"
    );
    assert!(TokenStore::new(dir.path()).is_err());
}

#[test]
fn old_store_without_new_fields_still_loads() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        tokens_path(dir.path()),
        r#"{"tokens":[{"sha256":"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff","namespace":"shop","service_account":"catalog","created_unix":1}]}"#,
    )
    .unwrap();
    let all = list_tokens(dir.path()).unwrap();
    assert_eq!(all[0].id(), "0011223344556677");
    assert!(all[0].labels.is_empty() && all[0].expires_unix.is_none());
}

#[test]
fn list_table_shows_every_column() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec("shop", "catalog");
    s.labels = parse_labels(&["app=catalog".into(), "version=v1".into()]).unwrap();
    s.ttl = Some(Duration::from_secs(60));
    let (_, a) = create_token(dir.path(), &s).unwrap();
    let (_, b) = create_token(dir.path(), &spec("shop", "reviews")).unwrap();
    revoke_token(dir.path(), b.id()).unwrap();
    let text = cli::table(&list_tokens(dir.path()).unwrap());
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("ID "), "{text}");
    for col in [
        "NAMESPACE",
        "SERVICE-ACCOUNT",
        "LABELS",
        "CREATED",
        "EXPIRES",
        "REVOKED",
    ] {
        assert!(lines[0].contains(col), "{col}: {text}");
    }
    assert!(
        lines[1].starts_with(a.id()) && lines[1].contains("app=catalog,version=v1"),
        "{text}"
    );
    assert!(lines[1].trim_end().ends_with('-'), "not revoked: {text}");
    assert!(
        lines[2].starts_with(b.id()) && lines[2].contains("never"),
        "{text}"
    );
    assert!(!lines[2].trim_end().ends_with('-'), "revoked: {text}");
}
