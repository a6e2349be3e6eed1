//! `mycel-proxy init` in a real network namespace: rules installed once
//! however often it runs, removed completely by `--cleanup`, refused
//! without privilege. Needs root and iptables; skips (or fails under
//! MYCEL_REQUIRE_ALL=1) elsewhere.

use mycel_tests::netns::{self, Node, Pod};

#[tokio::test]
async fn init_twice_is_one_rule_set_and_cleanup_leaves_none() {
    if !netns::can_run() {
        return;
    }
    let mut node = Node::new();
    let pod = Pod::new(&mut node, "init");
    assert!(pod.mycel_rules().is_empty());

    let r = pod.init(&["--exclude-outbound-cidrs", "10.0.0.0/8"]);
    assert!(r.ok, "{}{}", r.stdout, r.stderr);
    let once = pod.mycel_rules();
    // Two chains, their rules, and one jump from each built-in chain.
    assert!(
        once.iter().any(|l| l == "-A OUTPUT -p tcp -j MYCEL_OUTPUT"),
        "{once:#?}"
    );
    assert!(
        once.iter()
            .any(|l| l == "-A PREROUTING -p tcp -j MYCEL_INBOUND"),
        "{once:#?}"
    );
    assert!(
        once.iter()
            .any(|l| l.contains("--uid-owner 1337 -j RETURN")),
        "{once:#?}"
    );
    assert!(
        once.iter().any(|l| l.contains("--dport 15006 -j RETURN")),
        "mesh port excluded: {once:#?}"
    );

    let r = pod.init(&["--exclude-outbound-cidrs", "10.0.0.0/8"]);
    assert!(r.ok, "{}{}", r.stdout, r.stderr);
    assert_eq!(pod.mycel_rules(), once, "a second run changes nothing");

    let dry = pod.init(&["--dry-run"]);
    assert!(
        dry.ok
            && dry
                .stdout
                .contains("-A MYCEL_OUTPUT -p tcp -j REDIRECT --to-ports 15001"),
        "{}",
        dry.stdout
    );

    let r = pod.init(&["--cleanup"]);
    assert!(r.ok, "{}{}", r.stdout, r.stderr);
    assert_eq!(pod.mycel_rules(), Vec::<String>::new());
}

#[tokio::test]
async fn init_without_privilege_says_what_is_missing() {
    if !netns::can_run() {
        return;
    }
    let mut node = Node::new();
    let pod = Pod::new(&mut node, "noprv");
    let proxy = mycel_tests::bin("mycel-proxy").display().to_string();
    let r = pod.exec(
        "setpriv",
        &[
            "--reuid=1337",
            "--regid=1337",
            "--clear-groups",
            &proxy,
            "init",
        ],
    );
    assert!(!r.ok);
    assert!(r.stderr.contains("CAP_NET_ADMIN"), "{}", r.stderr);
    assert!(pod.mycel_rules().is_empty());
}
